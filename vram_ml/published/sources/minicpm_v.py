"""OpenBMB/MiniCPM-V finetune/readme.md "Model Fine-tuning Memory Usage Statistics".

Two published versions: DeepSpeed ZeRO-2 (f592fedb..8d9c86a) and ZeRO-3 + CPU offload of optimizer
and
parameters (74278de0..).  Columns = number of A100 (80GiB) GPUs; cells "14.4 GiB" or "Out of
memory".
The model is not named in the table: it is taken from finetune/finetune_ds.sh / finetune_lora.sh at
the
commit that first published the numbers (the table was never re-measured for later models).
"""
from __future__ import annotations

import re

from vram_ml.published.document_text import cite_text, md_tables
from vram_ml.published.parsed_row import CARD_BASIS, make_row, mem_value, new_run, new_stack
from vram_ml.published.requirement_pins import versions_from_files
from vram_ml.published.units import card_bytes

SOURCE = "minicpm-v"
REPOSITORY = "OpenBMB/MiniCPM-V"
TARGETS = [{
    "doc": "finetune/readme.md", "paths": ["finetune/readme.md"],
    "commit": "0dbb566de090067266abb76e702fb289f09934c5",
    "prefer": ["f592fedb2ec02fff905bd122dee6e34e647bf03e"]
}]
HEADING = "### Model Fine-tuning Memory Usage Statistics"


def _script(repo, commit, path):
    txt = repo.read(commit, path)
    if txt is None:
        return None
    body = "\n".join(text_line for text_line in txt.splitlines()
                     if not text_line.strip().startswith("#"))
    f = {"path": path, "commit": commit}

    def arg(name):
        m = re.search(r"--" + name + r"\s+(\S+)", body)
        return m.group(1).strip('"') if m else None

    for k in [
            "bf16", "fp16", "tune_vision", "tune_llm", "use_lora", "lora_target_modules",
            "model_max_length", "max_slice_nums", "scale_resolution", "per_device_train_batch_size",
            "gradient_accumulation_steps", "gradient_checkpointing", "deepspeed", "q_lora"
    ]:
        f[k] = arg(k)
    m = re.search(r'^MODEL="([^"]+)"', txt, flags=re.M)
    f["model"] = m.group(1) if m else None
    f["ev_model"] = repo.cite(commit, path, 'MODEL="')
    f["ev_tune_vision"] = repo.cite(commit, path, "--tune_vision")
    f["ev_tune_llm"] = repo.cite(commit, path, "--tune_llm")
    f["ev_ds"] = repo.cite(commit, path, "--deepspeed")
    f["ev_prec"] = repo.cite(commit, path, "--fp16 true") or repo.cite(commit, path, "--bf16 true")
    f["ev_lora_t"] = repo.cite(commit, path, "--lora_target_modules")
    return f


def build_context(repo, commit, path, first_published=None):
    ctx = {"commit": commit, "measured_at": first_published or commit}
    mc = ctx["measured_at"]
    ctx["scripts_measured"] = {
        s: _script(repo, mc, f"finetune/{s}")
        for s in ("finetune_ds.sh", "finetune_lora.sh")
    }
    ctx["scripts_now"] = {
        s: _script(repo, commit, f"finetune/{s}")
        for s in ("finetune_ds.sh", "finetune_lora.sh")
    }
    ft = repo.read(mc, "finetune/finetune.py") or ""
    m = re.search(r"lora_r: int = (\d+)", ft)
    ctx["lora_r"] = int(m.group(1)) if m else None
    m = re.search(r"lora_alpha: int = (\d+)", ft)
    ctx["lora_alpha"] = int(m.group(1)) if m else None
    ctx["ev"] = {
        "trainer": repo.cite(mc, "finetune/trainer.py", "class CPMTrainer(Trainer)"),
        "lora_r": repo.cite(mc, "finetune/finetune.py", "lora_r: int ="),
        "collator": repo.cite(mc, "finetune/dataset.py", "def data_collator("),
        "emb": repo.cite(mc, "finetune/finetune.py", "embed_tokens.weight.requires_grad_(True)"),
        "optim": repo.cite(mc, "finetune/finetune.py", 'optim: str = field(default='),
    }
    m = re.search(r'optim: str = field\(default="([^"]+)"\)', ft)
    ctx["optim"] = m.group(1) if m else None
    ctx["versions"], ctx["versions_evidence"] = versions_from_files(
        repo, mc, ["finetune/requirements.txt", "requirements.txt"])
    return ctx


def parse(text, *, repository, path, commit, commit_date, context):
    rows = []
    i = text.find(HEADING)
    if i < 0:
        return rows
    j = text.find("### Notes", i)
    sec = text[i:j if j > 0 else None]
    para = next((text_line
                 for text_line in sec.splitlines() if text_line.startswith("The following table")),
                "")
    tabs = md_tables(sec)
    if not tabs:
        return rows
    t = tabs[0]
    line0 = text.count("\n", 0, i)
    zero3 = "Zero-3" in para
    offload = "offloading optimizer as well as parameters memory to cpu" in para
    mem_note = re.search(r"- \*\*Memory Usage\*\*: Expressed in GiB[^\n]*", text)
    stat_ev = (cite_text(path, commit, text, para[:80]) if para else "") + \
        (" ; " + cite_text(path, commit, text, mem_note.group(0)) if mem_note else "") + \
        " -- 'memory usage' only; no measurement code in finetune/"
    gpu_cols = [(k, int(re.search(r"\d+", h).group(0))) for k, h in enumerate(t["header"])
                if re.search(r"GPUs: \d+", h)]
    for r in t["rows"]:
        label = r["cells"][0]
        is_lora = label.lower().startswith("lora")
        sname = "finetune_lora.sh" if is_lora else "finetune_ds.sh"
        sm = context["scripts_measured"].get(sname) or {}
        sn = context["scripts_now"].get(sname) or {}
        for k, ng in gpu_cols:
            cell = r["cells"][k]
            row = make_row(source=SOURCE, repository=repository, path=path, commit=commit,
                           commit_date=commit_date, vision_language=True)
            row["row_key"] = f"minicpm-v|{'zero3-offload' if zero3 else 'zero2'}|{label}|gpus={ng}"
            row["locator"] = (f"table 'Model Fine-tuning Memory Usage Statistics' ({path} line "
                              f"{line0 + r['line_no']}) row '{label}' column 'GPUs: {ng}'")
            row["quote"] = r["line"]
            row["header_quote"] = t["header_line"]
            a, cav = [], []
            m = re.fullmatch(r"(?P<num>\d+(?:\.\d+)?)\s*GiB", cell.strip())
            if m:
                row["outcome"] = "ok"
                mem_value(row, cell.strip(), m.group("num"), "GiB", "GiB",
                          "written 'GiB' (notes: 'Expressed in GiB')")
            elif cell.strip().lower() == "out of memory":
                row["outcome"] = "oom"
                row["value"] = None
            else:
                continue
            row["statistic"] = "unknown"
            row["statistic_confidence"] = "none"
            row["statistic_evidence"] = stat_ev
            row["gpu_model"] = "NVIDIA A100 80GB"
            row["card_memory_bytes"] = card_bytes(80)
            row["card_memory_basis"] = CARD_BASIS + "; README writes 'A100 (80GiB)'"
            row["gpu_count"] = ng
            row["per_gpu"] = True
            row["per_gpu_evidence"] = (
                "inferred: values shrink as GPUs are added (sharded ZeRO state) and the ZeRO-2 "
                "full-parameter run is 'Out of memory' on 2x80GiB, which only makes sense per "
                "GPU; the README does not say 'per GPU'")
            ds_stage = 3 if zero3 else 2
            off = ["optimizer:cpu", "params:cpu"] if offload else None
            row["stack"] = new_stack(
                trainer="hf_trainer", distributed="deepspeed", zero_stage=ds_stage, offload=off,
                evidence=[
                    cite_text(path, commit, text, para[:80]) or "", context["ev"].get("trainer") or
                    ""
                ], launch_script=f"finetune/{sname}")
            if zero3 and sm.get("deepspeed") and "zero3" not in (sm.get("deepspeed") or ""):
                cav.append(
                    f"README says ZeRO-3 + CPU offload but finetune/{sname} at "
                    f"{context['measured_at']} passes "
                    f"--deepspeed {sm.get('deepspeed')} and the committed ds_config_zero3.json has "
                    "offload "
                    f"device 'none': the config actually used is not committed")
            prec = "fp16" if (sm.get("fp16")
                              == "true") else ("bf16" if sm.get("bf16") == "true" else None)
            tv = sm.get("tune_vision") == "true" if sm.get("tune_vision") else None
            tl = sm.get("tune_llm") == "true" if sm.get("tune_llm") else None
            run = new_run(
                model=sm.get("model"), model_label="(not named in the table)",
                method="lora" if is_lora else "full",
                lora_rank=context.get("lora_r") if is_lora else None,
                lora_alpha=context.get("lora_alpha") if is_lora else None,
                lora_target=sm.get("lora_target_modules") if is_lora else None, trainable_vision=tv,
                trainable_embeddings=(True if (is_lora and tv) else (tl if not is_lora else False)),
                per_device_batch_size=1, seq_len=2048, seq_len_semantics=
                "max length (model_max_length); batches padded to the longest sample "
                "and truncated at max length", packing=False, gradient_checkpointing=True,
                precision=prec,
                optimizer=f"DeepSpeed/HF {context.get('optim')}" if context.get("optim") else None,
                num_gpus=ng, num_nodes=1, images_per_sample=None,
                image_resolution=(f"scale_resolution={sm.get('scale_resolution')}, max_slice_nums="
                                  f"{sm.get('max_slice_nums')}"
                                  if sm.get("scale_resolution") else None),
                config_path=f"finetune/{sname}@{context['measured_at']}", config_settings={
                    k: sm.get(k)
                    for k in ("bf16", "fp16", "tune_vision", "tune_llm", "use_lora",
                              "lora_target_modules", "model_max_length", "max_slice_nums",
                              "scale_resolution", "per_device_train_batch_size",
                              "gradient_accumulation_steps", "gradient_checkpointing", "deepspeed")
                })
            row["run"] = run
            a.append(
                f"model={sm.get('model')}: MODEL in finetune/{sname} at {context['measured_at']} "
                "(first commit "
                f"publishing these numbers): {sm.get('ev_model')}")
            a.append(
                "per_device_batch_size=1, seq_len=2048, gradient checkpointing: README paragraph")
            if prec:
                a.append(f"precision={prec}: {sm.get('ev_prec')}")
            if tv is not None:
                a.append(f"trainable_vision={tv}: {sm.get('ev_tune_vision')}")
            if is_lora and tv and context["ev"].get("emb"):
                a.append(
                    f"trainable_embeddings=True: LoRA with tune_vision also unfreezes embed_tokens "
                    f"({context['ev']['emb']})")
            if not is_lora and tl is not None:
                a.append(
                    f"full-parameter script tune_llm={sm.get('tune_llm')}: {sm.get('ev_tune_llm')}")
                if tl is False:
                    cav.append(
                        "finetune_ds.sh at the measuring commit sets --tune_llm false (and "
                        "tune_vision "
                        f"{sm.get('tune_vision')}): the 'Full Parameters' run may not have trained "
                        "the LLM; "
                        "the README does not show the exact command")
            if sm.get("per_device_train_batch_size") and sm.get(
                    "per_device_train_batch_size") != "1":
                cav.append(f"finetune/{sname} at {context['measured_at']} uses "
                           "--per_device_train_batch_size "
                           f"{sm.get('per_device_train_batch_size')}; README says batch size 1")
            if sn.get("model") and sn.get("model") != sm.get("model"):
                cav.append(
                    f"at {commit} the scripts point to {sn.get('model')} but the table was "
                    "published at "
                    f"{context['measured_at']} (model {sm.get('model')}) and never re-measured")
            cav.append(
                "images per sample not stated (the finetune data format allows one or more images; "
                "image slicing max_slice_nums={})".format(sm.get("max_slice_nums")))
            row["assumptions"] = a
            row["caveats"] = cav
            row["versions"] = dict(context.get("versions") or {})
            row["versions_evidence"] = context.get("versions_evidence")
            rows.append(row)
    return rows


# fields read from the README text itself (others come from scripts at the measuring commit)
RUN_DIFF_KEYS = ["method", "per_device_batch_size", "seq_len", "gradient_checkpointing", "num_gpus"]
