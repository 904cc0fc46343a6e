"""THUDM/GLM-4 fine-tuning README memory tables.

The brief's path finetune_demo/README.md exists until b5683f2 (Jul 2024); from 9c0e421 (Apr 2025)
the document
is finetune/README.md (present at the pinned commit 3f79b54).  Both paths are read, with history.
Cells: '21531MiB', '80935MiB<br/>(Each GPU，需要使用8张GPU)', '22G', '22G (Each GPU, Need 1 GPU)',
'本代码不支持'.
"""
from __future__ import annotations

import re

from vram_ml.published.document_text import load_yaml, md_tables
from vram_ml.published.parsed_row import CARD_BASIS, make_row, mem_value, new_run, new_stack
from vram_ml.published.requirement_pins import versions_from_files
from vram_ml.published.units import card_bytes, value_bytes

SOURCE = "glm-4"
REPOSITORY = "THUDM/GLM-4"
PIN = "3f79b543647b792aa167c712cd327475ec423f7b"
TARGETS = [{"doc": "finetune/README.md", "paths": ["finetune/README.md"], "commit": PIN},
           {"doc": "finetune_demo/README.md", "paths": ["finetune_demo/README.md"], "commit": PIN}]

MODEL_IDS = {
    "GLM-4-9B-Chat": "THUDM/glm-4-9b-chat", "GLM-4V-9B": "THUDM/glm-4v-9b",
    "GLM-4-9B-0414": "THUDM/GLM-4-9B-0414", "GLM-4-32B-0414": "THUDM/GLM-4-32B-0414"
}
CELL_RX = re.compile(
    r"^(?P<val>(?P<num>\d+(?:\.\d+)?)(?P<unit>MiB|G))(?:<br/>)?\s*(?:\((?P<paren>[^)]*)\))?\s*$")


def build_context(repo, commit, path, first_published=None):
    cc = first_published or commit
    d = path.rsplit("/", 1)[0]
    ctx = {"commit": commit, "cfg_commit": cc, "dir": d, "cfg": {}}
    for k in ("lora", "sft", "ptuning_v2"):
        p = f"{d}/configs/{k}.yaml"
        t = repo.read(cc, p)
        y = load_yaml(t) if t else None
        zero = None
        if isinstance(y, dict):
            dsn = (y.get("training_args") or {}).get("deepspeed")
            if dsn:
                m = re.search(r"zero_(\d)", dsn)
                zero = int(m.group(1)) if m else None
        ctx["cfg"][k] = {"path": p, "yaml": y if isinstance(y, dict) else None, "zero": zero}
    ft = repo.read(cc, f"{d}/finetune.py") or ""
    ctx["bf16_load"] = "torch_dtype=torch.bfloat16" in ft
    ctx["gc_in_code"] = "model.gradient_checkpointing_enable()" in ft
    ctx["ev"] = {
        "load": repo.cite(cc, f"{d}/finetune.py", "torch_dtype=torch.bfloat16"),
        "gc": repo.cite(cc, f"{d}/finetune.py", "model.gradient_checkpointing_enable()"),
        "trainer": repo.cite(cc, f"{d}/finetune.py", "trainer = Seq2SeqTrainer("),
        "pad": repo.cite(cc, f"{d}/finetune.py", 'padding="longest"') or
        repo.cite(cc, f"{d}/finetune.py", "padding='longest'"),
        "vision": repo.cite(cc, f"{d}/finetune_vision.py", "param.requires_grad = False")
    }
    files = [
        f for f in (f"{d}/requirements.txt", "inference/requirements.txt",
                    "basic_demo/requirements.txt") if repo.exists(commit, f)
    ]
    ctx["versions"], ctx["versions_evidence"] = versions_from_files(repo, commit, files)
    return ctx


def parse(text, *, repository, path, commit, commit_date, context):
    rows = []
    lines = text.splitlines()
    gpu_line = next((text_line for text_line in lines if re.search(r"GPU: NVIDIA", text_line)), "")
    if "H100" in gpu_line:
        gpu, nom = "NVIDIA H100 80GB HBM3", 80
    elif "A100" in gpu_line:
        gpu, nom = "NVIDIA A100-SXM4-80GB", 80
    else:
        gpu, nom = None, None
    gpu_ln = next((i + 1 for i, text_line in enumerate(lines) if text_line == gpu_line), None)
    for t in md_tables(text):
        hdr = t["header"]
        ci = next((k for k, h in enumerate(hdr) if h in ("GPU memory usage", "显存占用")), None)
        if ci is None:
            continue
        # which table: '+ Fine-tuning based on ...' line above
        basis = "this repository"
        for k in range(t["start_line"] - 2, max(-1, t["start_line"] - 6), -1):
            if "based on Llama-Factory" in lines[k]:
                basis = "Llama-Factory"
                break
            if "based on this repository" in lines[k]:
                break
        cm = next((k for k, h in enumerate(hdr) if h in ("Fine-tuning Model", "微调模型")), None)
        cs = next((k for k, h in enumerate(hdr) if h in ("Fine-tuning solution", "微调方案")), None)
        for r in t["rows"]:
            c = r["cells"]
            if len(c) <= ci:
                continue
            cell = c[ci].strip()
            m = CELL_RX.match(cell)
            if not m:
                continue  # e.g. '本代码不支持' (not supported by this code) -- no measurement
            model_lab = c[cm].strip() if cm is not None else "GLM-4-9B-Chat"
            sol = c[cs].strip() if cs is not None else ""
            low = sol.lower()
            method = "lora" if low.startswith("lora") else ("ptuning_v2" if "p-tuning" in low else (
                "full" if low.startswith("sft") else None))
            paren = m.group("paren") or ""
            ng = re.search(r"(\d+)\s*(?:GPU|张GPU)", paren)
            ng = int(ng.group(1)) if ng else None
            row = make_row(source=SOURCE, repository=repository, path=path, commit=commit,
                           commit_date=commit_date)
            row["row_key"] = f"glm-4|{basis}|{model_lab}|{sol}"
            row["locator"] = (
                f"table '{'Fine-tuning based on ' + basis}' ({path} line {r['line_no']}) row "
                f"'{model_lab} / {sol}' column '{hdr[ci]}'")
            row["quote"] = r["line"]
            row["header_quote"] = t["header_line"]
            row["outcome"] = "ok"
            a, cav = [], []
            if m.group("unit") == "MiB":
                mem_value(row, m.group("val"), m.group("num"), "MiB", "MiB",
                          "written 'MiB' (2^20 bytes)")
            else:
                mem_value(
                    row, m.group("val"), m.group("num"), "G", "GB",
                    "written 'G' (no B); read as GB = 10^9 bytes (ambiguous; earlier versions of "
                    "the same "
                    "table gave MiB values, e.g. 21531MiB for LoRA, which is 22.58 GB or 21.03 GiB)"
                )
                cav.append("unit 'G' ambiguous; as GiB value_bytes would be "
                           f"{value_bytes(m.group('num'), 'GiB')}")
            row["statistic"] = "unknown"
            row["statistic_confidence"] = "none"
            row["statistic_evidence"] = (
                "not stated ('GPU memory usage' / '显存占用'); MiB figures look like nvidia-smi "
                "readings; no memory-reading code in the fine-tuning scripts")
            row["gpu_model"] = gpu
            row["card_memory_bytes"] = card_bytes(nom)
            row["card_memory_basis"] = CARD_BASIS + (f"; {path}:{gpu_ln}: {gpu_line.strip()}"
                                                     if gpu_ln else "")
            if ng is None:
                ng = 1 if method in ("lora", "ptuning_v2") else None
                if ng:
                    a.append("gpu_count=1: not stated in the cell; PEFT runs of this README are "
                             "single-GPU examples")
            row["gpu_count"] = ng
            row["per_gpu"] = True if ("Each GPU" in paren or ng == 1) else None
            row["per_gpu_evidence"] = "'Each GPU' in the cell" if "Each GPU" in paren else (
                "single GPU" if ng == 1 else None)
            mid = MODEL_IDS.get(model_lab)
            if mid is None:
                cav.append(
                    f"model label '{model_lab}' has no exact HF repo id (later versions write "
                    "GLM-4-9B-0414 / "
                    f"GLM-4-32B-0414)")
            vision = "4V" in model_lab
            row["vision_language"] = vision
            if basis == "Llama-Factory":
                row["stack"] = new_stack(
                    trainer="llamafactory", distributed="deepspeed" if "Zero3" in sol else None,
                    zero_stage=3 if "Zero3" in sol else None, evidence=[
                        "README: '+ Fine-tuning based on Llama-Factory'; no config committed"
                    ])
                row["run"] = new_run(model=mid, model_label=model_lab, method=method, num_gpus=ng,
                                     num_nodes=1)
                cav.append(
                    "trained with LLaMA-Factory; no config is committed in this repository, so "
                    "batch size / "
                    "sequence length / LoRA settings are unknown")
                if "SFT" in sol and "Zero3" not in sol:
                    cav.append("'SFT' without ZeRO-3 on 8 GPUs: distributed setup not stated")
            else:
                key = "lora" if method == "lora" else (
                    "ptuning_v2" if method == "ptuning_v2" else "sft")
                cf = context["cfg"].get(key) or {}
                y = cf.get("yaml") or {}
                ta = y.get("training_args") or {}
                pc = y.get("peft_config") or {}
                zero = cf.get("zero")
                row["stack"] = new_stack(
                    trainer="hf_trainer (Seq2SeqTrainer)", distributed="deepspeed" if zero else
                    ("ddp" if (ng or 1) > 1 else "none"), zero_stage=zero, offload=None, evidence=[
                        x for x in [
                            context["ev"].get("trainer"),
                            f"{cf.get('path')}@{context['cfg_commit']}: deepspeed: "
                            f"{ta.get('deepspeed')}"
                        ] if x
                    ])
                mi, mo = y.get("max_input_length"), y.get("max_output_length")
                run = new_run(
                    model=mid, model_label=model_lab, method=method,
                    lora_rank=pc.get("r") if method == "lora" else None,
                    lora_alpha=pc.get("lora_alpha") if method == "lora" else None,
                    lora_dropout=pc.get("lora_dropout") if method == "lora" else None,
                    lora_target=pc.get("target_modules") if method == "lora" else None,
                    trainable_vision=(False if vision and "Include EVA2CLIPModel" not in sol and
                                      "包含视觉模块" not in sol else (True if vision else None)),
                    per_device_batch_size=ta.get("per_device_train_batch_size"),
                    seq_len=(mi + mo) if isinstance(mi, int) and isinstance(mo, int) else None,
                    seq_len_semantics=
                    f"max_input_length {mi} + max_output_length {mo}; padding='longest'",
                    packing=False, gradient_checkpointing=bool(context.get("gc_in_code")),
                    precision="bf16 (torch_dtype=torch.bfloat16)"
                    if context.get("bf16_load") else None, num_gpus=ng, num_nodes=1,
                    config_path=f"{cf.get('path')}@{context['cfg_commit']}", config_settings={
                        "max_input_length": mi, "max_output_length": mo,
                        "freezeV": y.get("freezeV"), "training_args": ta, "peft_config": pc or None
                    })
                row["run"] = run
                a.append(
                    f"config {cf.get('path')}@{context['cfg_commit']} (default config of this "
                    "repository at the "
                    "commit that first published the figure); README does not name the config per "
                    "row")
                if context.get("gc_in_code"):
                    a.append(f"gradient checkpointing: {context['ev'].get('gc')}")
                if context.get("bf16_load"):
                    a.append(f"precision: {context['ev'].get('load')}")
                if vision:
                    cav.append(
                        "GLM-4V LoRA is run with finetune_vision.py; its config (lora.yaml + "
                        "freezeV) and image "
                        "size are not stated per row; images per sample unknown")
            if path.startswith("finetune_demo/"):
                cav.append("document later moved to finetune/README.md (9c0e421, Apr 2025)")
            if "H100" in (gpu or "") and basis == "this repository":
                cav.append(
                    "these 'this repository' values equal the earlier A100 table (b5683f2) while "
                    "the section now "
                    "says H100 -- possibly carried over rather than re-measured")
            row["versions"] = dict(context.get("versions") or {})
            row["versions_evidence"] = context.get("versions_evidence")
            row["assumptions"], row["caveats"] = a, cav
            rows.append(row)
    return rows


RUN_DIFF_KEYS = ["model", "method", "num_gpus"]
