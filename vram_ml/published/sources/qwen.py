"""QwenLM/Qwen README.md "Profiling of Memory and Speed" table.

Cells look like "6.7G / 1.0s/it" (memory / speed); "-" marks lengths not reported
"due to the limitation of GPU memory".  The README prose states the unit ("We profile
the memory (GB)"); nothing in the repository shows how memory was read.
"""

from __future__ import annotations

import re

from vram_ml.published.document_text import cite_text, html_span, html_tables
from vram_ml.published.parsed_row import CARD_BASIS, make_row, mem_value, new_run, new_stack
from vram_ml.published.sources.qwen_context import (  # noqa: F401 (the parser's interface)
    CELL_RE,
    HEADING,
    QWEN_MODULES_TO_SAVE,
    REPOSITORY,
    SIZE_ID,
    SOURCE,
    TARGETS,
    _method_info,
    _section,
    _stated_versions,
    build_context,
)
from vram_ml.published.units import card_bytes


def parse(text, *, repository, path, commit, commit_date, context):
    rows = []
    start, sec = _section(text)
    if sec is None:
        return rows
    intro = sec[:sec.find("<table")]
    flash = "Flash attention 2 is applied" in intro
    unit_sentence = re.search(r"We profile the memory \(GB\)[^.]*\.", intro)
    tables = html_tables(sec)
    if not tables:
        return rows
    t = tables[0]
    grid, trs = t["grid"], t["rows"]
    header_quote = html_span(t, 0, 1)
    head = grid[1]
    has_nodes = "#Nodes" in head
    seq_cols = [i for i, h in enumerate(head) if re.fullmatch(r"\d+", h)]
    sec_line0 = text.count("\n", 0, start)  # lines before heading
    stated, st_ev = _stated_versions(text, path, commit)
    versions = dict(context.get("versions") or {})
    versions["stated_in_source"] = stated or None
    versions_ev = "; ".join([context.get("versions_evidence") or ""] + [e for e in st_ev if e])
    stat_ev = cite_text(path, commit, text, unit_sentence.group(0)) if unit_sentence else None
    stat_ev = (stat_ev or "") + (" -- the README gives the unit only; no memory-reading code "
                                 "(max_memory_*, nvidia-smi) exists in finetune.py or "
                                 "finetune/*.sh")
    two_gpu_full = bool(re.search(r"full-parameter finetuning with Qwen-7B on 2 A100 GPUs", intro))
    four_gpu_72 = re.search(r"Lora fintuning \+ DeepSpeed ZeRO 3 on 4 A100-SXM4-80G GPUs", intro)
    for gi in range(2, len(grid)):
        g = grid[gi]
        tr = trs[gi]
        size, method = g[0], g[1]
        if has_nodes:
            nodes, gpn = int(g[2]), int(g[3])
        else:
            nodes, gpn = 1, 1
            if method.lower().startswith("full") and size == "7B" and two_gpu_full:
                gpn = 2
            if "zero3" in method.lower().replace(" ", "") and four_gpu_72:
                gpn = 4
        gpus = nodes * gpn
        run_base, stack, a0, cav0 = _method_info(method, size, context, gpus)
        for ci in seq_cols:
            seq = head[ci]
            cell = g[ci]
            row = make_row(source=SOURCE, repository=repository, path=path, commit=commit,
                           commit_date=commit_date)
            row["row_key"] = f"qwen|profiling|{size}|{method}|seq={seq}"
            row["locator"] = (
                f"table 'Profiling of Memory and Speed' (HTML table under '{HEADING}', "
                f"{path} line {sec_line0 + t['start_line']}) row 'Model Size={size}, "
                f"Method={method}' "
                f"column 'Sequence Length {seq}'")
            row["quote"] = tr["tr_source"]
            row["header_quote"] = header_quote
            a = list(a0)
            cav = list(cav0)
            m = CELL_RE.match(cell)
            if cell.strip() == "-":
                row["outcome"] = "oom"
                cav.append(
                    "cell is '-' (no value); README: 'We only report the statistics of 256, 512, "
                    "and 1024 "
                    "tokens due to the limitation of GPU memory' -> recorded as did-not-fit (label "
                    "only)")
                row["value"] = None
            elif m:
                row["outcome"] = "ok"
                unit_written = "G" if m.group("u") else None
                mem_value(
                    row, m.group("mem"), m.group("num"), "GB", "GB",
                    "README prose: 'We profile the memory (GB)'; cell suffix 'G' read as GB = 10^9 "
                    "bytes "
                    "(no code shows GiB)")
                if not unit_written:
                    cav.append(
                        f"cell {cell!r} has no 'G' suffix (typo in the README); unit taken from "
                        "the "
                        f"table-wide '(GB)' statement")
                row["secondary_values"] = {"speed": m.group("speed")}
            else:
                continue
            row["statistic"] = "unknown"
            row["statistic_confidence"] = "none"
            row["statistic_evidence"] = stat_ev
            row["gpu_model"] = "NVIDIA A100-SXM4-80GB"
            row["card_memory_bytes"] = card_bytes(80)
            row["card_memory_basis"] = CARD_BASIS
            row["gpu_count"] = gpus
            if gpus == 1:
                row["per_gpu"] = True
                row["per_gpu_evidence"] = "single-GPU run ('in the setup of single-GPU training')"
            else:
                row["per_gpu"] = False
                row["per_gpu_evidence"] = (
                    "multi-GPU cells are totals: 7B full-parameter on 2 GPUs (139.2G-162.0G) "
                    "and 72B LoRA+ZeRO3 on 4 GPUs (215.4G-289.2G) exceed one 80G card, so "
                    "these cells cannot be per-GPU; the README does not say so explicitly")
                if row["value_bytes"] is not None and row["value_bytes"] <= card_bytes(80):
                    a.append(
                        "per_gpu=False: this multi-GPU value fits one card, treated as a total "
                        "like the "
                        "other multi-GPU rows (e.g. 7B multinode 74.7G vs single-GPU LoRA 20.1G)")
            row["stack"] = dict(stack)
            run = new_run(**run_base)
            run.update(
                model_label=f"Qwen-{size} / {method}", per_device_batch_size=1,
                gradient_accumulation_steps=8, seq_len=int(seq), seq_len_semantics=
                "input length; finetune.py pads/truncates every sample to model_max_length",
                packing=False, attention="flash_attention_2" if flash else None, num_gpus=gpus,
                num_nodes=nodes)
            a.append(
                "per_device_batch_size=1, gradient_accumulation_steps=8: README 'We uniformly use "
                "a batch size "
                "of 1 and gradient accumulation of 8'")
            if context.get("ev", {}).get("pad"):
                a.append(f"seq_len is the padded length: {context['ev']['pad']}")
            if flash:
                a.append("attention=flash_attention_2: README 'Flash attention 2 is applied.'")
            else:
                cav.append(
                    "this README version does not mention flash attention (later versions add "
                    "'Flash "
                    "attention 2 is applied.' together with new numbers); attention implementation "
                    "unknown")
            if run["method"] == "full" and gpus == 1:
                a.append(
                    "1.8B full-parameter on 1 GPU: launch script assumed finetune/finetune_ds.sh "
                    "(ZeRO-3) -- "
                    "README does not say")
            row["run"] = run
            row["versions"] = versions
            row["versions_evidence"] = versions_ev
            row["assumptions"] = a
            row["caveats"] = cav
            rows.append(row)
    # sentence OOM labels (72B)
    m = re.search(
        r"Note that OOM occurs on 4 A100-SXM4-80G GPUs both with LoRA \(emb\) fine-tuning and LoRA "
        r"fine-tuning without Deepspeed ZeRO 3[^.]*\.\)?", text)
    if m:
        sent = m.group(0)
        for lab, emb in (("LoRA (emb)", True), ("LoRA", False)):
            row = make_row(source=SOURCE, repository=repository, path=path, commit=commit,
                           commit_date=commit_date)
            row["row_key"] = f"qwen|sentence-oom|72B|{lab}|4gpu-no-zero3"
            row["locator"] = (f"sentence under '{HEADING}' ({path} line "
                              f"{cite_text(path, commit, text, sent).split(':')[1]})"
                              f" -- 72B {lab} on 4 GPUs without ZeRO-3")
            row["quote"] = sent
            row["outcome"] = "oom"
            row["statistic"] = "unknown"
            row["statistic_confidence"] = "none"
            row["statistic_evidence"] = "label only (OOM statement)"
            row["gpu_model"] = "NVIDIA A100-SXM4-80GB"
            row["card_memory_bytes"] = card_bytes(80)
            row["card_memory_basis"] = CARD_BASIS
            row["gpu_count"] = 4
            row["per_gpu"] = True
            row["per_gpu_evidence"] = "an OOM on any rank; the card limit is per GPU"
            sid = SIZE_ID["72B"]
            model = f"Qwen/Qwen-{sid}" if emb else f"Qwen/Qwen-{sid}-Chat"
            s = context.get("scripts", {}).get("finetune/finetune_lora_ds.sh") or {}
            ds = s.get("ds") or {}
            row["stack"] = new_stack(
                trainer="hf_trainer", distributed="deepspeed", zero_stage=ds.get("stage"),
                offload=ds.get("offload"), evidence=[
                    s.get("ev_ds") or "finetune/finetune_lora_ds.sh",
                    "README: OOM 'without Deepspeed ZeRO 3' -> default "
                    "DS_CONFIG_PATH (ZeRO-2) of finetune/finetune_lora_ds.sh"
                ], launch_script="finetune/finetune_lora_ds.sh")
            row["run"] = new_run(
                model=model, model_label=f"Qwen-72B / {lab}", method="lora",
                trainable_embeddings=emb, modules_to_save=QWEN_MODULES_TO_SAVE if emb else None,
                lora_rank=context.get("lora_r"),
                lora_alpha=context.get("lora_alpha"), lora_dropout=context.get("lora_dropout"),
                lora_target=context.get("lora_targets"),
                per_device_batch_size=1, gradient_accumulation_steps=8, seq_len=None,
                seq_len_semantics="not stated for the OOM runs",
                precision="bf16" if s.get("bf16") else None,
                gradient_checkpointing=True if s.get("gradient_checkpointing") else None,
                attention="flash_attention_2" if flash else None, num_gpus=4, num_nodes=1)
            row["assumptions"] = [
                "zero_stage=2: 'without Deepspeed ZeRO 3' read as the script default "
                "ds_config_zero2.json", "batch 1 / GA 8 as in the profiling paragraph",
                f"model={model}: LoRA(emb) needs the base model, LoRA without emb uses the chat "
                "model (finetune.py)"
            ]
            row["caveats"] = [
                "sequence length of the OOM attempts is not stated (could be any of 256-8192)"
            ]
            row["versions"] = versions
            row["versions_evidence"] = versions_ev
            rows.append(row)
    return rows


RUN_DIFF_KEYS = [
    "model", "method", "trainable_embeddings", "per_device_batch_size", "seq_len", "attention",
    "num_gpus"
]
