"""huggingface/blog 4bit-transformers-bitsandbytes.md: the OOM / No OOM table (Llama 7B and 13B
LoRA / QLoRA on T4 16GB, batch 1, gradient accumulation 4, AdamW, TRL SFTTrainer).

Label-only rows: a "No OOM" cell says the run fitted (outcome ok, no number), "OOM" that it did
not (censored at the card). The blog repository is too large to clone, so without a clone the
import reads datasets/published/quoted/ (the table's own lines); the parser reads the table by
its header and its `|` rows only, and locates rows by their index, so a clone and the quoted
lines give the same rows.
"""

from __future__ import annotations

import re

from vram_ml.published.document_text import md_split_row
from vram_ml.published.parsed_row import CARD_BASIS, make_row, new_run, new_stack
from vram_ml.published.units import card_bytes

SOURCE = "hf-blog-4bit"
REPOSITORY = "huggingface/blog"
TARGETS = [{"doc": "4bit-transformers-bitsandbytes.md",
            "paths": ["4bit-transformers-bitsandbytes.md"],
            "commit": "b80f56d8e6d494f5ebdf5b72ef4a3a0f98623e33"}]
QUANT_COLUMN = ("quantization method (CD=compute dtype / GC=gradient checkpointing / "
                "NQ=nested quantization)")
SFT_SENTENCE = r"We have used the recent `SFTTrainer` from TRL library[^\n]*"
INTRO_SENTENCE = (r"We have also made some benchmarks on the impact of this quantization "
                  r"method[^\n]*")


def build_context(repo, commit, path, first_published=None):
    return {"commit": commit}


def table_lines(text: str) -> tuple[str | None, list[str]]:
    """The benchmark table's header line and its `|` lines (separator and blank rows included)."""
    lines = text.splitlines()
    for index, line in enumerate(lines):
        if line.startswith("|") and "Model name" in line and "Result" in line:
            body = []
            for following in lines[index + 1:]:
                if following.strip() and not following.startswith("|"):
                    break
                if following.startswith("|"):
                    body.append(following)
            return line, body
    return None, []


def parse(text, *, repository, path, commit, commit_date, context):
    sft = re.search(SFT_SENTENCE, text)
    intro = re.search(INTRO_SENTENCE, text)
    header_line, body = table_lines(text)
    if header_line is None:
        return []
    header = md_split_row(header_line)
    rows, data_row = [], 0
    for line in body:
        cells = dict(zip(header, md_split_row(line)))
        model, result = cells.get("Model name", ""), cells.get("Result", "").strip()
        if "/" not in model or not result:
            continue  # separator, blank and section rows
        data_row += 1
        label = result.replace("*", "").strip().lower()
        outcome = "ok" if label == "no oom" else ("oom" if label == "oom" else None)
        if outcome is None:
            continue
        row = make_row(source=SOURCE, repository=repository, path=path, commit=commit,
                       commit_date=commit_date)
        _fill(row, cells, model, outcome, sft, intro)
        row["row_key"] = (f"hf-blog-4bit|{model}|{cells.get('Hardware type / total VRAM')}|"
                          f"{cells.get(QUANT_COLUMN)}|seq={cells.get('seq_len')}")
        row["locator"] = (f"benchmark table (header '| Model name | ... | Result |') data row "
                          f"{data_row}: '{model} / {cells.get('Hardware type / total VRAM')} / "
                          f"{cells.get(QUANT_COLUMN)} / seq_len {cells.get('seq_len')}', "
                          "column 'Result'")
        row["column"] = "Result"
        row["quote"], row["header_quote"] = line, header_line
        rows.append(row)
    return rows


def _fill(row, cells, model, outcome, sft, intro):
    hardware = cells.get("Hardware type / total VRAM") or ""
    cards = re.match(r"(?P<n>\d+)xNVIDIA-T4 / (?P<total>\d+)GB", hardware)
    count = int(cards.group("n")) if cards else None
    quant = cells.get(QUANT_COLUMN, "")
    int8 = quant.startswith("LLM.int8")
    checkpointing = bool(re.search(r"\+ GC\b", quant)) and "no GC" not in quant
    compute = re.search(r"(bf16|fp16) CD", quant)
    sft_line = sft.group(0) if sft else ""
    row.update(outcome=outcome, statistic="unknown", statistic_confidence="none",
               statistic_evidence="label only (OOM / No OOM)", gpu_model="NVIDIA T4",
               card_memory_bytes=card_bytes(16),
               card_memory_basis=CARD_BASIS + "; table: '1xNVIDIA-T4 / 16GB'", gpu_count=count,
               per_gpu=True if count == 1 else None,
               per_gpu_evidence=("single GPU" if count == 1 else
                                 "2 GPUs; model split by device_map (assumed), per-GPU peak "
                                 "not known"))
    row["stack"] = new_stack(
        trainer="trl_sft", distributed="none", evidence=[sft_line],
        model_parallel="device_map split over 2 GPUs (assumed)" if count and count > 1 else None)
    quant_method = ("bitsandbytes LLM.int8" if int8 else
                    "bitsandbytes 4bit " + ("NF4" if "NF4" in quant else "FP4")
                    + (" + nested quantization" if "NQ" in quant else ""))
    precision = (f"compute dtype {compute.group(1)}" if compute else
                 ("int8 weights, fp16 compute (LLM.int8)" if int8 else None))
    row["run"] = new_run(
        model=model, model_label=model, method="lora" if int8 else "qlora",
        quant_bits=8 if int8 else 4, quant_method=quant_method,
        per_device_batch_size=int(cells.get("batch_size")),
        gradient_accumulation_steps=int(cells.get("gradient accumulation steps")),
        seq_len=int(cells.get("seq_len")),
        seq_len_semantics="seq_len column (packing/padding not stated)",
        gradient_checkpointing=checkpointing, precision=precision,
        optimizer=cells.get("optimizer"), num_gpus=count, num_nodes=1,
        config_settings={"quantization method": quant,
                         "half precision model size": cells.get(
                             "Half precision model size (in GB)")},
        fit_semantics="OOM / No OOM probe")
    row["assumptions"] = [
        "method: the post trains PEFT adapters on quantized models ('train adapters on top of "
        "them'); the exact LoRA settings are in an external gist, not in the post",
        "trainer=trl_sft: " + sft_line]
    row["caveats"] = ["decapoda-research/llama-* repos are no longer on the Hub",
                      "LoRA rank / target modules not stated",
                      "commit date not known (the repository was read without its history)"]
    if intro:
        row["caveats"].append("context sentence: " + intro.group(0).strip())
    row["versions"] = {"stated_in_source": {"bitsandbytes": "0.39.0"}}
    row["versions_evidence"] = (
        "blog 'Getting started': accelerate, transformers and peft installed from git main at the "
        "time, 'the latest version of bitsandbytes library (0.39.0)'; no requirements file")
