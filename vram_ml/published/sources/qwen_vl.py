"""QwenLM/Qwen-VL README.md "Profiling of Memory and Speed" (fine-tuning) table.

Rows: LoRA (Base) / LoRA (Chat) / Q-LoRA (older version: LoRA / Q-LoRA); columns: sequence
length 384-2048; cells "37.1G / 2.3s/it".  One image per sample, single A100-SXM4-80G.
"""
from __future__ import annotations

import re

from vram_ml.published.document_text import cite_text, html_span, html_tables
from vram_ml.published.parsed_row import CARD_BASIS, make_row, mem_value, new_run, new_stack
from vram_ml.published.requirement_pins import versions_from_files
from vram_ml.published.sources.qwen_context import (
    QWEN_MODULES_TO_SAVE,
    _ds_facts,
    _script_facts,
)
from vram_ml.published.units import card_bytes

SOURCE = "qwen-vl"
REPOSITORY = "QwenLM/Qwen-VL"
TARGETS = [{
    "doc": "README.md", "paths": ["README.md"], "commit": "aa00ed04091eea5fcdd32985e7915f1c53e7d599"
}]
HEADING = "### Profiling of Memory and Speed"
CELL_RE = re.compile(r"^(?P<mem>(?P<num>\d+(?:\.\d+)?)(?P<u>G)?)\s*/\s*(?P<speed>\S+)\s*$")


def build_context(repo, commit, path, first_published=None):
    ctx = {"commit": commit, "ev": {}}
    ft = repo.read(commit, "finetune.py") or ""
    ev = ctx["ev"]
    ctx["chat_switch"] = ('"chat" in model_args.model_name_or_path.lower()' in ft
                          or "is_chat_model" in ft)
    ev["chat_switch"] = repo.cite(commit, "finetune.py",
                                  'if lora_args.q_lora or "chat" in model_args')
    ev["modules_to_save"] = repo.cite(commit, "finetune.py", 'modules_to_save = ["wte", "lm_head"]')
    ev["fix_vit"] = repo.cite(commit, "finetune.py",
                              "model.transformer.visual.requires_grad_(False)")
    ev["fix_vit_default"] = repo.cite(commit, "finetune.py", "fix_vit: bool =")
    ev["gptq"] = repo.cite(commit, "finetune.py", "quantization_config=GPTQConfig(")
    ev["trainer"] = repo.cite(commit, "finetune.py", "trainer = Trainer(")
    ev["pad"] = repo.cite(commit, "finetune.py",
                          "input_id += [tokenizer.pad_token_id] * (max_len - len(input_id))")
    ev["optim"] = repo.cite(commit, "finetune.py", "optim: str = field(default=")
    for k, pat in (("lora_r", r"lora_r: int = (\d+)"), ("lora_alpha", r"lora_alpha: int = (\d+)")):
        m = re.search(pat, ft)
        ctx[k] = int(m.group(1)) if m else None
    m = re.search(r"lora_dropout: float = ([\d.]+)", ft)
    ctx["lora_dropout"] = float(m.group(1)) if m else None
    m = re.search(r"default_factory=lambda: (\[[^\]]*\])", ft)
    ctx["lora_targets"] = m.group(1) if m else None
    m = re.search(r'optim: str = field\(default="([^"]+)"\)', ft)
    ctx["optim"] = m.group(1) if m else None
    ctx["scripts"] = {}
    for s in ["finetune/finetune_lora_single_gpu.sh", "finetune/finetune_qlora_single_gpu.sh"]:
        f = _script_facts(repo, commit, s)
        if f:
            txt = "\n".join(text_line for text_line in f.pop("text").splitlines()
                            if not text_line.lstrip().startswith("#"))
            f["ds"] = _ds_facts(repo, commit, f["deepspeed"])
            f["fix_vit"] = bool(re.search(r"--fix_vit True", txt))
            m = re.search(r"--gradient_accumulation_steps (\d+)", txt)
            f["ga"] = m.group(1) if m else None
            f["ev_gc"] = repo.cite(commit, s, r"^\s*--gradient_checkpointing", regex=True)
            f["ev_prec"] = repo.cite(commit, s, r"^\s*--(bf16|fp16) True", regex=True)
            f["ev_ds"] = repo.cite(commit, s, r"^\s*--deepspeed\s+[^\s)]", regex=True)
            f["ev_model"] = repo.cite(commit, s, 'MODEL="')
            ctx["scripts"][s] = f
    readme = repo.read(commit, "README.md") or ""
    ctx["res_ev"] = repo.cite(commit, "README.md", "the 448\\*448 resolution")
    ctx["tok_ev"] = repo.cite(commit, "README.md", "(which takes 258 tokens)")
    ctx["has_448"] = "448\\*448 resolution" in readme
    ctx["has_258"] = "(which takes 258 tokens)" in readme
    ctx["versions"], ctx["versions_evidence"] = versions_from_files(repo, commit,
                                                                    ["requirements.txt"])
    return ctx


def parse(text, *, repository, path, commit, commit_date, context):
    rows = []
    i = text.find(HEADING)
    if i < 0:
        return rows
    j = text.find("</table>", i)
    sec = text[i:j + 8]
    intro = sec[:sec.find("<table")]
    tabs = html_tables(sec)
    if not tabs:
        return rows
    t = tabs[0]
    grid, trs = t["grid"], t["rows"]
    head = grid[1]
    seq_cols = [k for k, h in enumerate(head) if re.fullmatch(r"\d+", h)]
    header_quote = html_span(t, 0, 1)
    line0 = text.count("\n", 0, i)
    ev = context.get("ev", {})
    unit_sentence = re.search(r"We profile the memory \(GB\)[^.]*\.", intro)
    stat_ev = (cite_text(path, commit, text, unit_sentence.group(0)) if unit_sentence else "") + \
        " -- unit only; no memory-reading code in finetune.py / finetune/*.sh"
    st = {}
    m = re.search(r"we use CUDA (\d+(?:\.\d+)*) and Pytorch (\d+(?:\.\d+)*)", intro)
    if m:
        st = {"torch": m.group(2), "cuda": m.group(1)}
    versions = dict(context.get("versions") or {})
    versions["stated_in_source"] = st or None
    vev = (context.get("versions_evidence") or
           "") + ("; " + cite_text(path, commit, text, m.group(0)) if m else "")
    one_image = "Each sample contains an image." in intro
    for gi in range(2, len(grid)):
        g = grid[gi]
        label = g[0]
        low = label.lower()
        a, cav = [], []
        sc = context.get("scripts", {})
        if low.startswith("q-lora"):
            script = "finetune/finetune_qlora_single_gpu.sh"
            model, method, emb = "Qwen/Qwen-VL-Chat-Int4", "qlora", False
            a.append(f"model={model}: {sc.get(script, {}).get('ev_model')}")
        elif "(base)" in low:
            script = "finetune/finetune_lora_single_gpu.sh"
            model, method, emb = "Qwen/Qwen-VL", "lora", True
            a.append("model=Qwen/Qwen-VL, trainable_embeddings=True: README 'LoRA (Base) refers to "
                     "training the "
                     f"embedding and output layer'; {ev.get('modules_to_save')}")
        else:  # "LoRA (Chat)" or plain "LoRA" (older version)
            script = "finetune/finetune_lora_single_gpu.sh"
            model, method, emb = "Qwen/Qwen-VL-Chat", "lora", False
            if "(chat)" in low:
                a.append(
                    "model=Qwen/Qwen-VL-Chat, trainable_embeddings=False: README 'LoRA (Chat) has "
                    "no trainable "
                    f"embedding and output layer'; {ev.get('chat_switch')}")
            else:
                a.append(
                    "model=Qwen/Qwen-VL-Chat: plain 'LoRA' row; the script default model is the "
                    "chat model "
                    f"({sc.get(script, {}).get('ev_model')}) and finetune.py then trains no "
                    "embeddings "
                    f"({ev.get('chat_switch')}); later README versions publish the same numbers as "
                    "'LoRA (Chat)'")
                cav.append(
                    "older README version: the same numbers are published as 'LoRA (Chat)' later "
                    "-- one "
                    "measurement, do not count twice")
        s = sc.get(script) or {}
        ds = s.get("ds")
        prec = "bf16" if s.get("bf16") else ("fp16" if s.get("fp16") else None)
        if prec:
            a.append(f"precision={prec}: {s.get('ev_prec')}")
        if s.get("gradient_checkpointing"):
            a.append(f"gradient_checkpointing=True: {s.get('ev_gc')}")
        if s.get("fix_vit"):
            a.append(f"trainable_vision=False: --fix_vit True in {script}; {ev.get('fix_vit')}")
        if context.get("has_448"):
            a.append(f"image_resolution=448: {context.get('res_ev')}")
        if context.get("has_258"):
            a.append(
                f"image_tokens=258 per image (README, inference section): {context.get('tok_ev')}")
        a.append(
            "per_device_batch_size=1, gradient_accumulation_steps=8: README 'We uniformly use a "
            "batch size of 1 "
            "and gradient accumulation of 8'")
        a.append(f"stack from {script} (README does not name the script used for profiling)")
        if ev.get("pad"):
            a.append("seq_len is the padded length (image tokens included in the text sequence): "
                     f"{ev.get('pad')}")
        cav.append(
            "README does not mention flash attention for this profile; attention implementation "
            "unknown")
        dist = "deepspeed" if ds else "none"
        stack = new_stack(
            trainer="hf_trainer", distributed=dist, zero_stage=ds.get("stage") if ds else None,
            offload=ds.get("offload") if ds else None, evidence=[
                x for x in [ev.get("trainer"),
                            s.get("ev_ds") or f"{script}: no --deepspeed"] if x
            ], launch_script=script)
        for ci in seq_cols:
            seq, cell = head[ci], g[ci]
            mm = CELL_RE.match(cell)
            if not mm:
                continue
            row = make_row(source=SOURCE, repository=repository, path=path, commit=commit,
                           commit_date=commit_date, vision_language=True)
            row["row_key"] = f"qwen-vl|profiling|{label}|seq={seq}"
            row["locator"] = (
                f"table 'Profiling of Memory and Speed' (HTML table under '{HEADING}', {path} line "
                f"{line0 + t['start_line']}) row 'Method={label}' column 'Sequence Length {seq}'")
            row["quote"] = trs[gi]["tr_source"]
            row["header_quote"] = header_quote
            row["outcome"] = "ok"
            mem_value(
                row, mm.group("mem"), mm.group("num"), "GB", "GB",
                "README prose: 'We profile the memory (GB)'; suffix 'G' read as GB = 10^9 bytes")
            row["secondary_values"] = {"speed": mm.group("speed")}
            row["statistic"] = "unknown"
            row["statistic_confidence"] = "none"
            row["statistic_evidence"] = stat_ev
            row["gpu_model"] = "NVIDIA A100-SXM4-80GB"
            row["gpu_count"] = 1
            row["card_memory_bytes"] = card_bytes(80)
            row["card_memory_basis"] = CARD_BASIS
            row["per_gpu"] = True
            row["per_gpu_evidence"] = "single-GPU profile ('in the setup of single-GPU training')"
            row["stack"] = dict(stack)
            row["run"] = new_run(
                model=model, model_label=label, method=method,
                quant_bits=4 if method == "qlora" else None,
                quant_method="GPTQ int4 (GPTQConfig)" if method == "qlora" else None,
                lora_rank=context.get("lora_r"), lora_alpha=context.get("lora_alpha"),
                lora_dropout=context.get("lora_dropout"),
                lora_target=context.get("lora_targets"), trainable_embeddings=emb,
                modules_to_save=QWEN_MODULES_TO_SAVE if emb else None,
                trainable_vision=False if s.get("fix_vit") else None, per_device_batch_size=1,
                gradient_accumulation_steps=8, seq_len=int(seq),
                seq_len_semantics="model_max_length; samples right-padded to it (finetune.py)",
                packing=False,
                gradient_checkpointing=True if s.get("gradient_checkpointing") else None,
                precision=prec, attention=None,
                optimizer=(f"DeepSpeed {ds.get('optimizer')} (ds config)"
                           if ds else context.get("optim")), num_gpus=1, num_nodes=1,
                images_per_sample=1 if one_image else None,
                image_resolution=448 if context.get("has_448") else None,
                image_tokens=258 if context.get("has_258") else None)
            row["assumptions"] = list(a) + ([
                "images_per_sample=1: README 'Each sample contains an image.'"
            ] if one_image else [])
            row["caveats"] = list(cav) + [
                "image_tokens=258 is the README's count for one image, stated in the "
                "inference-speed section, not in the fine-tuning profile; the visual "
                "module (and its 448 input size / query count) lives in the HF model "
                "repo, not in this repository"
            ]
            row["versions"] = versions
            row["versions_evidence"] = vev
            rows.append(row)
    return rows


RUN_DIFF_KEYS = [
    "model", "method", "trainable_embeddings", "per_device_batch_size", "seq_len", "attention",
    "num_gpus", "image_resolution"
]
