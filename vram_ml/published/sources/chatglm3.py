"""THUDM/ChatGLM3 finetune_demo/README.md memory statements.

Newest form (since 9484f82, Jan 2024), under '测试硬件标准':
    + SFT 全量微调: 4张显卡平均分配，每张显卡占用 `48346MiB` 显存。
    + P-TuningV2 微调: 1张显卡，占用 `18426MiB` 显存。
    + LORA 微调: 1张显卡，占用 `14082MiB` 显存。
  "本仓库中的**默认配置文件**中，我们记录了显存的占用情况" -> the default configs/*.yaml.
Older form (Nov 2023, '参考显存用量' = reference memory usage) gives settings inline (PRE_SEQ_LEN,
...).
"""
from __future__ import annotations

import json
import re

from vram_ml.published.document_text import load_yaml
from vram_ml.published.parsed_row import CARD_BASIS, make_row, mem_value, new_run, new_stack
from vram_ml.published.requirement_pins import versions_from_files
from vram_ml.published.units import card_bytes

SOURCE = "chatglm3"
REPOSITORY = "THUDM/ChatGLM3"
TARGETS = [{
    "doc": "finetune_demo/README.md", "paths": ["finetune_demo/README.md"],
    "commit": "732294f42e2625509000daa87a9c3748d0bbb957"
}]
MODEL = "THUDM/chatglm3-6b"

NEW_RX = re.compile(r"^\+ (?P<label>SFT 全量微调|P-TuningV2 微调|LORA 微调): "
                    r"(?P<n>\d+)张显卡(?P<mid>[^`]*)`(?P<val>(?P<num>\d+)(?P<unit>MiB))` 显存")
CFG_OF = {"SFT 全量微调": "sft.yaml", "P-TuningV2 微调": "ptuning_v2.yaml",
          "LORA 微调": "lora.yaml"}


def build_context(repo, commit, path, first_published=None):
    # configs are read at the commit that first published the figure (they changed later while the
    # figures
    # stayed); the difference to the pinned commit is reported as a caveat
    cc = first_published or commit
    ctx = {"commit": commit, "cfg_commit": cc, "_repo": repo, "cfg": {}}
    for lab, f in CFG_OF.items():
        p = f"finetune_demo/configs/{f}"
        txt = repo.read(cc, p)
        y = load_yaml(txt) if txt else None
        ds = None
        if isinstance(y, dict):
            dsn = ((y.get("training_args") or {}).get("deepspeed"))
            if dsn:
                dt = repo.read(cc, f"finetune_demo/configs/{dsn}")
                try:
                    ds = json.loads(dt).get("zero_optimization", {}).get("stage") if dt else None
                except Exception:
                    ds = None
        changed = None
        if cc != commit:
            t0 = repo.read(commit, p)
            y0 = load_yaml(t0) if t0 else None

            def mem_keys(yy):
                yy = yy if isinstance(yy, dict) else {}
                ta = yy.get("training_args") or {}
                pc = yy.get("peft_config") or {}
                return {
                    "max_input_length": yy.get("max_input_length"),
                    "max_output_length": yy.get("max_output_length"),
                    "per_device_train_batch_size": ta.get("per_device_train_batch_size"),
                    "gradient_accumulation_steps": ta.get("gradient_accumulation_steps"),
                    "deepspeed": ta.get("deepspeed"), "bf16": ta.get("bf16"),
                    "fp16": ta.get("fp16"), "peft_type": pc.get("peft_type"), "r": pc.get("r"),
                    "num_virtual_tokens": pc.get("num_virtual_tokens"),
                    "target_modules": pc.get("target_modules")
                }

            k0, k1 = mem_keys(y0), mem_keys(y)
            d = {kk: [k1[kk], k0[kk]] for kk in k0 if k0[kk] != k1[kk]}
            if t0 is None:
                changed = f"{p} absent at the pinned commit {commit}"
            elif d:
                changed = (
                    f"memory-relevant keys of {p} differ between {cc} (first publication, used "
                    "here) and the "
                    f"pinned {commit}: " + json.dumps(d, ensure_ascii=False, default=str) +
                    " ([then, now])")
        ctx["cfg"][lab] = {"path": p, "yaml": y, "zero": ds, "changed": changed}
    ctx["ev"] = {
        "trainer": repo.cite(cc, "finetune_demo/finetune_hf.py", "trainer = Seq2SeqTrainer("),
        "gc": repo.cite(cc, "finetune_demo/finetune_hf.py",
                        "model.gradient_checkpointing_enable()"),
        "pad": repo.cite(cc, "finetune_demo/finetune_hf.py", "padding='longest'"),
        "load": repo.cite(cc, "finetune_demo/finetune_hf.py", "empty_init=False,"),
        "old_half": repo.cite(commit, "finetune_demo/finetune.py", "model = model.half()"),
        "old_quant": repo.cite(commit, "finetune_demo/finetune.py",
                               "model = model.quantize(model_args.quantization_bit)"),
        "old_trainer": repo.cite(commit, "finetune_demo/trainer.py",
                                 "class PrefixTrainer(Trainer)"),
    }
    ft = repo.read(cc, "finetune_demo/finetune_hf.py") or ""
    ctx["no_dtype"] = ft != "" and "torch_dtype" not in ft
    ctx["gc_in_code"] = "model.gradient_checkpointing_enable()" in ft
    files = [
        f for f in ("finetune_demo/requirements.txt", "requirements.txt") if repo.exists(commit, f)
    ]
    ctx["versions"], ctx["versions_evidence"] = versions_from_files(repo, commit, files)
    return ctx


def _common(row, ctx, path, commit, text):
    row["statistic"] = "unknown"
    row["statistic_confidence"] = "none"
    row["statistic_evidence"] = (
        "not stated; the MiB figures look like nvidia-smi readings (format '48346MiB') but the "
        "README does not say how they were read; no memory-reading code in finetune_demo/")
    row["versions"] = dict(ctx.get("versions") or {})
    row["versions_evidence"] = ctx.get("versions_evidence")


def parse(text, *, repository, path, commit, commit_date, context):
    rows = []
    lines = text.splitlines()
    for i, text_line in enumerate(lines):
        m = NEW_RX.match(text_line)
        if m:
            lab = m.group("label")
            c = context["cfg"].get(lab) or {}
            y = c.get("yaml") or {}
            ta = y.get("training_args") or {}
            pc = y.get("peft_config") or {}
            n = int(m.group("n"))
            row = make_row(source=SOURCE, repository=repository, path=path, commit=commit,
                           commit_date=commit_date)
            row["row_key"] = f"chatglm3|new|{lab}"
            row["locator"] = (f"bullet list under '## 测试硬件标准' ({path} line {i + 1}), "
                              f"item '{lab}'")
            row["quote"] = text_line
            row["outcome"] = "ok"
            mem_value(row, m.group("val"), m.group("num"), "MiB", "MiB",
                      "written 'MiB' (2^20 bytes)")
            _common(row, context, path, commit, text)
            row["gpu_model"] = ("NVIDIA A100 or H100 (README: tested only on Hopper (H100) and "
                                "Ampere (A100))")
            row["card_memory_bytes"] = None
            row["gpu_count"] = n
            row["per_gpu"] = True
            row["per_gpu_evidence"] = ("'每张显卡占用' = 'each GPU uses'"
                                       if "每张显卡" in text_line else "single GPU")
            method = {"SFT 全量微调": "full", "P-TuningV2 微调": "ptuning_v2",
                      "LORA 微调": "lora"}[lab]
            zero = c.get("zero")
            row["stack"] = new_stack(
                trainer="hf_trainer (Seq2SeqTrainer)", distributed="deepspeed" if zero else
                ("ddp" if n > 1 else "none"), zero_stage=zero, offload=None, evidence=[
                    x for x in [
                        context["ev"].get("trainer"),
                        f"{c.get('path')}@{context['cfg_commit']}: deepspeed: {ta.get('deepspeed')}"
                    ] if x
                ])
            mi, mo = y.get("max_input_length"), y.get("max_output_length")
            run = new_run(
                model=MODEL, model_label="ChatGLM3-6B", method=method,
                lora_rank=pc.get("r") if method == "lora" else None,
                lora_alpha=pc.get("lora_alpha") if method == "lora" else None,
                lora_dropout=pc.get("lora_dropout") if method == "lora" else None,
                lora_target=pc.get("target_modules") if method == "lora" else None,
                per_device_batch_size=ta.get("per_device_train_batch_size"),
                seq_len=(mi + mo) if isinstance(mi, int) and isinstance(mo, int) else None,
                seq_len_semantics=(
                    f"max_input_length {mi} + max_output_length {mo}; batches padded to the "
                    f"longest sample (padding='longest')"), packing=False,
                gradient_checkpointing=bool(
                    context.get("gc_in_code") or ta.get("gradient_checkpointing")),
                precision=("fp32 weights (no torch_dtype when loading; no bf16/fp16 in the config)"
                           if context.get("no_dtype") and not ta.get("bf16") and not ta.get("fp16")
                           else None),
                optimizer="HF default (adamw_torch)" if not zero else "DeepSpeed AdamW (ds config)",
                num_gpus=n, num_nodes=1, config_path=f"{c.get('path')}@{context['cfg_commit']}",
                config_settings={
                    "max_input_length": mi, "max_output_length": mo, "training_args": ta,
                    "peft_config": pc or None
                })
            if method == "ptuning_v2":
                run["config_settings"]["num_virtual_tokens"] = pc.get("num_virtual_tokens")
            row["run"] = run
            row["assumptions"] = [
                f"config = {c.get('path')}@{context['cfg_commit']} (commit that first published "
                "the figure): README '本仓库中的**默认配置文件**中，我们记录了显存的占用情况' "
                f"(usage recorded with the default config files)",
                (f"gradient_checkpointing=True: {context['ev'].get('gc')}"
                 if context.get("gc_in_code") else
                 f"gradient_checkpointing={bool(ta.get('gradient_checkpointing'))}: finetune_hf.py "
                 "at "
                 f"{context['cfg_commit']} has no gradient_checkpointing_enable() call (added "
                 "later) and the config "
                 f"does not set it"),
            ]
            if run["precision"]:
                row["assumptions"].append(
                    f"precision: {context['ev'].get('load')} (no torch_dtype) and no bf16/fp16 in "
                    f"{c.get('path')}")
            row["caveats"] = [
                "GPU type not stated (A100 or H100)", "values are the README's 'reference' numbers "
                "('该结果仅供参考')"
            ]
            if n > 1:
                row["caveats"].append(
                    "README example command uses --nproc_per_node=8 while the SFT figure is for 4 "
                    "GPUs")
            if c.get("changed"):
                row["caveats"].append(
                    "config changed after the figure was first published (figure unchanged): " +
                    c["changed"])
            rows.append(row)
            continue
        # ---- old (Nov 2023) wording
        m = re.search(
            r"P-Tuning V2 `PRE_SEQ_LEN=(?P<p>\d+)`, `DEV_BATCH_SIZE=(?P<b>\d+)`, "
            r"`GRAD_ACCUMULARION_STEPS=(?P<g>\d+)`,"
            r"\s+`MAX_SEQ_LEN=(?P<s>\d+)` 配置下约需要 (?P<val>(?P<num>\d+)(?P<unit>GB)) 显存",
            text_line)
        if m:
            rows.append(
                _old_row(m, text_line, i, path, commit, commit_date, repository, context,
                         quant=None, key="chatglm3|old|ptuning_v2|fp16"))
        m = re.search(
            r"`PRE_SEQ_LEN=(?P<p>\d+)`, `DEV_BATCH_SIZE=(?P<b>\d+)`, "
            r"`GRAD_ACCUMULARION_STEPS=(?P<g>\d+)`, "
            r"`MAX_SEQ_LEN=(?P<s>\d+)` 配置下，`--quantization_bit 8` 约需 (?P<v8>\d+GB) "
            r"显存，`--quantization_bit 4` "
            r"约需 (?P<v4>[\d.]+GB) 显存", text_line)
        if m:
            for qb, grp in ((8, "v8"), (4, "v4")):
                mm = re.match(r"(?P<val>(?P<num>[\d.]+)(?P<unit>GB))", m.group(grp))
                rows.append(
                    _old_row(m, text_line, i, path, commit, commit_date, repository, context,
                             quant=qb, mm=mm, key=f"chatglm3|old|ptuning_v2|int{qb}"))
        m = re.search(
            r"全量微调时，`(?P<script>[^`]+)` 中的配置（`MAX_SEQ_LEN=(?P<s>\d+)`, "
            r"`DEV_BATCH_SIZE=(?P<b>\d+)`, "
            r"`GRAD_ACCUMULARION_STEPS=(?P<g>\d+)`）恰好用满 (?P<n>\d+) \* (?P<card>\d+)GB 显存",
            text_line)
        if m:
            row = make_row(source=SOURCE, repository=repository, path=path, commit=commit,
                           commit_date=commit_date)
            row["row_key"] = "chatglm3|old|full|label"
            row["locator"] = (f"item '2. 参考显存用量' ({path} line {i + 1}), full fine-tuning "
                              "sentence")
            row["quote"] = text_line.strip()
            row["outcome"] = "ok"
            _common(row, context, path, commit, text)
            row["statistic_evidence"] = ("label only: '恰好用满 4 * 80GB 显存' (exactly fills 4 x "
                                         "80GB)")
            row.update(gpu_model=None, gpu_count=int(m.group("n")), per_gpu=True,
                       per_gpu_evidence="'4 * 80GB' = four 80GB cards, each filled")
            row["card_memory_bytes"] = card_bytes(int(m.group("card")))
            row["card_memory_basis"] = CARD_BASIS
            row["stack"] = new_stack(
                trainer="hf_trainer", distributed="deepspeed", zero_stage=None, evidence=[
                    f"{m.group('script')} launches torchrun ... --deepspeed configs/deepspeed.json"
                ])
            row["run"] = new_run(
                model=MODEL, model_label="ChatGLM3-6B", method="full",
                per_device_batch_size=int(m.group("b")),
                gradient_accumulation_steps=int(m.group("g")), seq_len=int(m.group("s")),
                seq_len_semantics="MAX_SEQ_LEN (multi-turn format)",
                precision="fp16 (--fp16 in the script)", num_gpus=int(m.group("n")), num_nodes=1,
                config_path=f"finetune_demo/{m.group('script').lstrip('./')}@{commit}")
            row["caveats"] = [
                "near-capacity label, no figure: '恰好用满' = 'just fills' the 4 x 80GB",
                "DeepSpeed config finetune_demo/configs/deepspeed.json stage not parsed"
            ]
            rows.append(row)
    return rows


def _old_row(m, text_line, i, path, commit, commit_date, repository, ctx, quant=None, mm=None,
             key=None):
    row = make_row(source=SOURCE, repository=repository, path=path, commit=commit,
                   commit_date=commit_date)
    mm = mm or m
    row["row_key"] = key
    row["locator"] = f"item '2. 参考显存用量' ({path} line {i + 1})" + (
        f", '--quantization_bit {quant}' figure" if quant else "")
    row["quote"] = text_line.strip()
    row["outcome"] = "ok"
    mem_value(row, mm.group("val"), mm.group("num"), "GB", "GB",
              "written 'GB' -> 10^9 bytes (no code shows GiB)")
    _common(row, ctx, path, commit, None)
    row.update(gpu_model=None, gpu_count=1, per_gpu=True,
               per_gpu_evidence="single GPU (P-Tuning v2 example)")
    row["stack"] = new_stack(trainer="hf_trainer (PrefixTrainer subclass)", distributed="none",
                             evidence=[x for x in [ctx["ev"].get("old_trainer")] if x])
    row["run"] = new_run(
        model=MODEL, model_label="ChatGLM3-6B", method="ptuning_v2", quant_bits=quant,
        quant_method=(f"ChatGLM model.quantize() (cpm_kernels int{quant})") if quant else None,
        per_device_batch_size=int(m.group("b")), gradient_accumulation_steps=int(m.group("g")),
        seq_len=int(m.group("s")), seq_len_semantics="MAX_SEQ_LEN as stated in the sentence",
        precision="fp16 (model.half(), prefix encoder fp32)"
        if not quant else f"int{quant} weights", num_gpus=1, num_nodes=1, config_settings={
            "PRE_SEQ_LEN": int(m.group("p")), "DEV_BATCH_SIZE": int(m.group("b")),
            "GRAD_ACCUMULARION_STEPS": int(m.group("g")), "MAX_SEQ_LEN": int(m.group("s")),
            "quantization_bit": quant
        })
    row["assumptions"] = [
        "settings are those written in the sentence itself (PRE_SEQ_LEN, DEV_BATCH_SIZE, ...)",
        f"precision from finetune.py at this commit: {ctx['ev'].get('old_half')}"
    ]
    row["caveats"] = [
        "phrased 'about ... needed' ('约需要/约需') under '参考显存用量' (reference memory usage); "
        "kept as an approximate observed usage", "GPU model not stated"
    ]
    return row


RUN_DIFF_KEYS = ["method", "per_device_batch_size", "seq_len", "num_gpus", "quant_bits"]
