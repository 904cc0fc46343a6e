"""OpenBMB/MiniCPM finetune/README.md '测试硬件标准' bullet list (MiniCPM-2B).

    + SFT 全量微调: 4张显卡平均分配，每张显卡占用 `30245MiB` 显存。
    + LORA 微调: 1张显卡，占用 `10619MiB` 显存。
    + qlora 微调+cpu+offload: 1张显卡，占用 `5500MiB` 显存。      (added 96af309)
"本仓库中的**默认配置文件**中，我们记录了显存的占用情况" -> the default launch scripts.  The
SFT/LoRA figures date from
a250c20 (Feb 2024) whose sft_finetune.sh runs on exactly 4 GPUs; the scripts were changed later, so
settings are read
at the commit that first published each figure.
"""
from __future__ import annotations

import json
import re

from vram_ml.published.parsed_row import make_row, mem_value, new_run, new_stack
from vram_ml.published.requirement_pins import versions_from_files

SOURCE = "minicpm"
REPOSITORY = "OpenBMB/MiniCPM"
TARGETS = [{
    "doc": "finetune/README.md", "paths": ["finetune/README.md"],
    "commit": "0fcc3d08330ee612d59d58e312a778ae78165d97"
}]
RX = re.compile(r"^\+ (?P<label>SFT 全量微调|LORA 微调|qlora 微调\+cpu\+offload): "
                r"(?P<n>\d+)张显卡(?P<mid>[^`]*)`(?P<val>(?P<num>\d+)(?P<unit>MiB))` 显存")
SCRIPT_OF = {
    "SFT 全量微调": "finetune/sft_finetune.sh", "LORA 微调": "finetune/lora_finetune.sh",
    "qlora 微调+cpu+offload": "finetune/lora_finetune.sh"
}


def _script(repo, commit, p):
    t = repo.read(commit, p)
    if t is None:
        return None
    body = " ".join(text_line for text_line in t.splitlines()
                    if not text_line.strip().startswith("#"))
    f = {"path": p}
    m = re.search(r"--include (\S+)", body)
    f["include"] = m.group(1) if m else None
    for k in ("model_name_or_path", "per_device_train_batch_size", "gradient_accumulation_steps",
              "model_max_length", "deepspeed"):
        m = re.search(r"--" + k + r"\s+(\S+)", body)
        f[k] = m.group(1) if m else None
    f["bf16"] = "--bf16" in body
    f["fp16"] = "--fp16" in body
    f["use_lora"] = "--use_lora" in body
    f["comment_lines_inside_command"] = bool(re.search(r"\\\n\s*#", t))
    return f


def build_context(repo, commit, path, first_published=None):
    cc = first_published or commit
    ctx = {"commit": commit, "cfg_commit": cc, "scripts": {}, "scripts_now": {}}
    for lab, p in SCRIPT_OF.items():
        ctx["scripts"][lab] = _script(repo, cc, p)
        ctx["scripts_now"][lab] = _script(repo, commit, p)
    ft = repo.read(cc, "finetune/finetune.py") or ""
    m = re.search(r"model_max_length: int = field\(\s*default=(\d+)", ft)
    ctx["max_len_default"] = int(m.group(1)) if m else None
    m = re.search(r"target_modules=\[([^\]]*)\],\s*r=(\d+),\s*lora_alpha=(\d+)", ft, flags=re.S)
    ctx["lora"] = (m.group(1), int(m.group(2)), int(m.group(3))) if m else None
    if ctx["lora"] is None:
        m2 = re.search(r"r=(\d+),\s*lora_alpha=(\d+)", ft)
        ctx["lora"] = ("['q_proj', 'v_proj'] (non-MiniCPM3)", int(m2.group(1)),
                       int(m2.group(2))) if m2 else None
    ctx["gc_in_code"] = "gradient_checkpointing" in ft
    ctx["qlora_code"] = "BitsAndBytesConfig(" in ft
    ctx["ev"] = {
        "pad": repo.cite(
            cc, "finetune/finetune.py",
            "label_ids += [self.ignore_index] * (self.model_max_length - len(label_ids))"),
        "maxlen": repo.cite(cc, "finetune/finetune.py", "model_max_length: int = field("),
        "trainer": repo.cite(cc, "finetune/finetune.py", "trainer = Trainer("),
        "qlora": repo.cite(cc, "finetune/finetune.py", 'bnb_4bit_quant_type="nf4"'),
        "lora_r": repo.cite(cc, "finetune/finetune.py", "r=")
    }
    ctx["ds"] = {}
    for lab, s in ctx["scripts"].items():
        if s and s.get("deepspeed"):
            t = repo.read(cc, "finetune/" + s["deepspeed"])
            try:
                z = json.loads(t).get("zero_optimization", {}) if t else {}
                ctx["ds"][lab] = {
                    "stage": z.get("stage"), "offload": [
                        f"{k}:{(z.get(k) or {}).get('device')}"
                        for k in ("offload_optimizer", "offload_param")
                        if (z.get(k) or {}).get("device") not in (None, "none")
                    ] or None
                }
            except Exception:
                ctx["ds"][lab] = None
    ctx["versions"], ctx["versions_evidence"] = versions_from_files(
        repo, commit, ["finetune/requirements.txt", "requirements.txt"])
    return ctx


def parse(text, *, repository, path, commit, commit_date, context):
    rows = []
    lines = text.splitlines()
    for i, text_line in enumerate(lines):
        m = RX.match(text_line)
        if not m:
            continue
        lab = m.group("label")
        n = int(m.group("n"))
        s = context["scripts"].get(lab) or {}
        sn = context["scripts_now"].get(lab) or {}
        ds = context["ds"].get(lab) or {}
        method = {"SFT 全量微调": "full", "LORA 微调": "lora",
                  "qlora 微调+cpu+offload": "qlora"}[lab]
        row = make_row(source=SOURCE, repository=repository, path=path, commit=commit,
                       commit_date=commit_date)
        row["row_key"] = f"minicpm|{lab}"
        row["locator"] = f"bullet list under '## 测试硬件标准' ({path} line {i + 1}), item '{lab}'"
        row["quote"] = text_line
        row["outcome"] = "ok"
        mem_value(row, m.group("val"), m.group("num"), "MiB", "MiB", "written 'MiB' (2^20 bytes)")
        row["statistic"] = "unknown"
        row["statistic_confidence"] = "none"
        row["statistic_evidence"] = (
            "not stated; MiB format suggests nvidia-smi but the README does not say; no "
            "memory-reading code in finetune/")
        row["gpu_model"] = None
        row["gpu_count"] = n
        row["per_gpu"] = True
        row["per_gpu_evidence"] = ("'每张显卡占用' = 'each GPU uses'" if "每张显卡" in text_line
                                   else "single GPU")
        row["stack"] = new_stack(
            trainer="hf_trainer", distributed="deepspeed" if s.get("deepspeed") else "none",
            zero_stage=ds.get("stage"), offload=ds.get("offload"), evidence=[
                x for x in [
                    context["ev"].get("trainer"),
                    f"{s.get('path')}@{context['cfg_commit']}: deepspeed {s.get('deepspeed')}, "
                    f"--include {s.get('include')}"
                ] if x
            ])
        lr = context.get("lora")
        prec = "bf16" if s.get("bf16") else ("fp16" if s.get("fp16") else None)
        ml = int(
            s["model_max_length"]) if s.get("model_max_length") else context.get("max_len_default")
        run = new_run(
            model="openbmb/MiniCPM-2B-sft-bf16", model_label="MiniCPM-2B", method=method,
            quant_bits=4 if method == "qlora" else None,
            quant_method="bitsandbytes nf4, double quant, compute fp16"
            if method == "qlora" else None, lora_rank=lr[1] if (lr and method != "full") else None,
            lora_alpha=lr[2] if (lr and method != "full") else None, lora_target=lr[0] if
            (lr and method != "full") else None, per_device_batch_size=int(
                s["per_device_train_batch_size"]) if s.get("per_device_train_batch_size") else None,
            gradient_accumulation_steps=int(s["gradient_accumulation_steps"])
            if s.get("gradient_accumulation_steps") else None, seq_len=ml,
            seq_len_semantics="model_max_length; finetune.py pads every sample to it",
            packing=False, gradient_checkpointing=None, precision=prec,
            optimizer="adamw_torch (finetune.py default optim)", num_gpus=n, num_nodes=1,
            config_path=f"{s.get('path')}@{context['cfg_commit']}",
            config_settings={k: v
                             for k, v in s.items() if k != "path"})
        row["run"] = run
        a = [
            f"settings from {s.get('path')}@{context['cfg_commit']} (commit that first published "
            "this figure): "
            f"README says the figures were recorded with the default configuration",
            "model=openbmb/MiniCPM-2B-sft-bf16: README 'MiniCPM-2B 模型的微调示例'; later scripts "
            "use the local path "
            "MiniCPM-2B-sft-bf16", f"seq_len={ml}: "
            + ("--model_max_length in the script" if s.get("model_max_length")
               else "finetune.py default (" + str(context["ev"].get("maxlen")) + ")") + "; "
            f"samples padded to it ({context['ev'].get('pad')})"
        ]
        cav = [
            "GPU model not stated", "gradient checkpointing not set in the scripts (HF default off)"
        ]
        if method == "qlora":
            a.append(
                f"qlora = lora_finetune.sh with --qlora (4-bit nf4, {context['ev'].get('qlora')}); "
                "'cpu+offload' "
                f"= the script's ZeRO-3 offload config")
            cav.append("no qlora launch script is committed; batch size / length taken from "
                       "lora_finetune.sh at the "
                       "publishing commit")
        if method == "full" and s.get("include"):
            a.append(
                f"4 GPUs: --include {s.get('include')} in {s.get('path')}@{context['cfg_commit']}")
        if sn and any(
                sn.get(k) != s.get(k) for k in ("include", "per_device_train_batch_size",
                                                "model_max_length", "deepspeed", "bf16", "fp16")):
            cav.append(f"the pinned {sn.get('path')} differs: " + json.dumps({
                k: [s.get(k), sn.get(k)]
                for k in ("include", "per_device_train_batch_size", "gradient_accumulation_steps",
                          "model_max_length", "deepspeed", "bf16", "fp16") if sn.get(k) != s.get(k)
            }) + " ([at publication, pinned])")
        if sn.get("comment_lines_inside_command"):
            cav.append(f"the pinned {sn.get('path')} interleaves '#' comment lines inside the "
                       "backslash-continued "
                       f"command, so as committed it would not pass the later arguments")
        row["assumptions"], row["caveats"] = a, cav
        row["versions"] = dict(context.get("versions") or {})
        row["versions_evidence"] = context.get("versions_evidence")
        rows.append(row)
    return rows


RUN_DIFF_KEYS = ["method", "num_gpus"]
