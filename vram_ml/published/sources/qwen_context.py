"""Qwen: facts from finetune.py, the launch scripts and the DeepSpeed configs at a commit, and what
each table label (LoRA, LoRA (emb), Q-LoRA, full, ZeRO-3) means for the run."""

from __future__ import annotations

import re

from vram_ml.published.document_text import cite_text
from vram_ml.published.parsed_row import new_stack
from vram_ml.published.requirement_pins import versions_from_files

SOURCE = "qwen"
REPOSITORY = "QwenLM/Qwen"
TARGETS = [{
    "doc": "README.md",
    "paths": ["README.md"],
    "commit": "2df8e8ac450fa185c421a08b0090ef81826caa6e",
    # brief: older table without flash attention cited at 6e98723 (same numbers since 0b55158)
    "prefer": ["6e987235d84157996aab7469f57ff18e258703f6"]
}]
HEADING = "### Profiling of Memory and Speed"

SIZE_ID = {"1.8B": "1_8B", "7B": "7B", "14B": "14B", "72B": "72B"}

# finetune.py's `modules_to_save = ["wte", "lm_head"]` (cited per row as ev["modules_to_save"])
QWEN_MODULES_TO_SAVE = ["wte", "lm_head"]


# ---------------------------------------------------------------------------
def _script_facts(repo, commit, script):
    txt = repo.read(commit, script)
    if txt is None:
        return None
    f = {"path": script, "text": txt}
    txt = "\n".join(text_line for text_line in txt.splitlines()
                    if not text_line.lstrip().startswith("#"))  # drop commented-out options
    f["bf16"] = bool(re.search(r"--bf16 True", txt))
    f["fp16"] = bool(re.search(r"--fp16 True", txt))
    f["gradient_checkpointing"] = bool(re.search(r"--gradient_checkpointing", txt))
    vals = [v for v in re.findall(r"--deepspeed\s+(\S+)", txt)
            if v != ")"]  # skip the option parser's case label
    f["deepspeed"] = vals[-1] if vals else None
    m = re.search(r'DS_CONFIG_PATH="([^"]+)"', txt)
    if f["deepspeed"] == "${DS_CONFIG_PATH}" and m:
        f["deepspeed"] = m.group(1)
    m = re.search(r'^MODEL="([^"]+)"', txt, flags=re.M)
    f["model_default"] = m.group(1) if m else None
    m = re.search(r"--per_device_train_batch_size (\d+)", txt)
    f["script_batch"] = m.group(1) if m else None
    return f


def _ds_facts(repo, commit, cfg):
    import json
    txt = repo.read(commit, cfg) if cfg else None
    if not txt:
        return None
    try:
        j = json.loads(txt)
    except Exception:
        return None
    z = j.get("zero_optimization", {})
    off = []
    for k in ("offload_optimizer", "offload_param"):
        dev = (z.get(k) or {}).get("device")
        if dev and dev != "none":
            off.append(f"{k}:{dev}")
    return {
        "stage": z.get("stage"), "offload": off or None, "path": cfg,
        "optimizer": (j.get("optimizer") or {}).get("type")
    }


def build_context(repo, commit, path, first_published=None, repo_files=None):
    """Facts from finetune.py, finetune/*.sh and ds configs at `commit`."""
    ctx = {"commit": commit}
    ft = repo.read(commit, "finetune.py")
    ctx["finetune_py"] = ft is not None
    ev = {}
    if ft:
        # LoRA without trainable embeddings exists once finetune.py skips modules_to_save for chat
        # models
        ctx["chat_switch"] = ("is_chat_model"
                              in ft) or ("'chat' in model_args.model_name_or_path.lower()" in ft)
        ev["modules_to_save"] = repo.cite(commit, "finetune.py", 'modules_to_save = ["wte", '
                                                                 '"lm_head"]') or \
            repo.cite(commit, "finetune.py", 'modules_to_save=["wte", "lm_head"]')
        ev["chat_switch"] = (
            repo.cite(commit, "finetune.py", "if lora_args.q_lora or is_chat_model:") or
            repo.cite(commit, "finetune.py", "if lora_args.q_lora or 'chat' in model_args"))
        ev["gptq"] = repo.cite(commit, "finetune.py", "quantization_config=GPTQConfig(")
        ev["gptq_bits"] = repo.cite(commit, "finetune.py", "bits=4, disable_exllama=True")
        ev["lora_r"] = repo.cite(commit, "finetune.py", "lora_r: int =")
        ev["lora_alpha"] = repo.cite(commit, "finetune.py", "lora_alpha: int =")
        ev["lora_targets"] = repo.cite(commit, "finetune.py", "default_factory=lambda: [")
        ev["optim"] = repo.cite(commit, "finetune.py", 'optim: str = field(default=')
        ev["pad"] = repo.cite(commit, "finetune.py",
                              "input_id += [tokenizer.pad_token_id] * (max_len - len(input_id))")
        ev["trainer"] = repo.cite(commit, "finetune.py", "trainer = Trainer(")
        ev["zero3_base"] = repo.cite(
            commit, "finetune.py", "ZeRO3 is incompatible with LoRA when finetuning on base model")
        m = re.search(r"lora_r: int = (\d+)", ft)
        ctx["lora_r"] = int(m.group(1)) if m else None
        m = re.search(r"lora_alpha: int = (\d+)", ft)
        ctx["lora_alpha"] = int(m.group(1)) if m else None
        m = re.search(r"lora_dropout: float = ([\d.]+)", ft)
        ctx["lora_dropout"] = float(m.group(1)) if m else None
        m = re.search(r"default_factory=lambda: (\[[^\]]*\])", ft)
        ctx["lora_targets"] = m.group(1) if m else None
        m = re.search(r'optim: str = field\(default="([^"]+)"\)', ft)
        ctx["optim"] = m.group(1) if m else None
    ctx["ev"] = ev
    ctx["scripts"] = {}
    for s in [
            "finetune/finetune_lora_single_gpu.sh", "finetune/finetune_qlora_single_gpu.sh",
            "finetune/finetune_ds.sh", "finetune/finetune_lora_ds.sh",
            "finetune/finetune_qlora_ds.sh"
    ]:
        f = _script_facts(repo, commit, s)
        if f:
            f["ds"] = _ds_facts(repo, commit, f["deepspeed"])
            f["ev_gc"] = repo.cite(commit, s, r"^\s*--gradient_checkpointing", regex=True)
            f["ev_prec"] = repo.cite(commit, s, r"^\s*--(bf16|fp16) True", regex=True)
            f["ev_ds"] = repo.cite(commit, s, r"^\s*--deepspeed\s+[^\s)]", regex=True)
            f.pop("text")
            ctx["scripts"][s] = f
    ctx["ds_zero3"] = _ds_facts(repo, commit, "finetune/ds_config_zero3.json")
    ctx["versions"], ctx["versions_evidence"] = versions_from_files(repo, commit,
                                                                    ["requirements.txt"])
    return ctx


# ---------------------------------------------------------------------------
CELL_RE = re.compile(r"^(?P<mem>(?P<num>\d+(?:\.\d+)?)(?P<u>G)?)\s*/\s*(?P<speed>\S+)\s*$")


def _section(text):
    i = text.find(HEADING)
    if i < 0:
        return None, None
    j = text.find("</table>", i)
    if j < 0:
        return None, None
    return i, text[i:j + len("</table>")]


def _method_info(label, size, ctx, gpus):
    """-> dict(run fields), stack, assumptions"""
    sid = SIZE_ID.get(size, size)
    base, chat, int4 = f"Qwen/Qwen-{sid}", f"Qwen/Qwen-{sid}-Chat", f"Qwen/Qwen-{sid}-Chat-Int4"
    sc = ctx.get("scripts", {})
    ev = ctx.get("ev", {})
    a, cav = [], []
    run = {}
    lab = label.strip()
    low = lab.lower()
    if low.startswith("q-lora"):
        script = ("finetune/finetune_qlora_single_gpu.sh" if gpus == 1
                  else "finetune/finetune_qlora_ds.sh")
        run.update(method="qlora", quant_bits=4,
                   quant_method="GPTQ int4 (auto-gptq via transformers GPTQConfig)", model=int4)
        emb = not ctx.get("chat_switch", False)
        run["trainable_embeddings"] = emb
        run["modules_to_save"] = QWEN_MODULES_TO_SAVE if emb else None
        a.append(f"model={int4}: Q-LoRA uses the released Int4 (GPTQ) chat checkpoint; "
                 f"finetune.py loads it with GPTQConfig ({ev.get('gptq_bits') or ev.get('gptq')})")
        if emb:
            a.append(f"trainable_embeddings=True: at this commit finetune.py sets modules_to_save "
                     f"unconditionally ({ev.get('modules_to_save')})")
            cav.append(
                "old finetune.py made wte/lm_head trainable even for Q-LoRA on an Int4 model; "
                "memory may differ from later Q-LoRA rows")
        else:
            a.append(f"trainable_embeddings=False: {ev.get('chat_switch')}")
    elif low.startswith("full"):
        script = "finetune/finetune_ds.sh"
        run.update(method="full", model=base, trainable_embeddings=True)
        a.append(
            f"model={base}: README does not say base or chat; finetune/finetune_ds.sh default "
            f"MODEL is {sc.get(script, {}).get('model_default')!r} (same architecture either way)")
    else:  # LoRA variants
        script = ("finetune/finetune_lora_single_gpu.sh" if gpus == 1
                  else "finetune/finetune_lora_ds.sh")
        run.update(method="lora")
        if "(emb)" in low:
            emb = True
            a.append(
                f"model={base}, trainable_embeddings=True: README 'LoRA (emb) refers to training "
                "the "
                "embedding and output layer'; finetune.py makes wte/lm_head trainable for base "
                "(non-chat) "
                f"models ({ev.get('modules_to_save')})")
            model = base
        elif not ctx.get("chat_switch", False):
            emb = True
            model = base
            a.append(f"trainable_embeddings=True, model={base}: at this commit finetune.py sets "
                     "modules_to_save=['wte','lm_head'] for every LoRA run "
                     f"({ev.get('modules_to_save')}); "
                     f"later README versions relabel these same numbers 'LoRA (emb)'")
            cav.append(
                "this README version predates the LoRA / LoRA (emb) split: the same numbers are "
                "published as 'LoRA (emb)' from 0b55158 on -- one measurement, do not count twice")
        else:
            emb = False
            model = chat
            a.append(
                f"model={chat}, trainable_embeddings=False: README 'LoRA has no trainable "
                "embedding and "
                f"output layer'; finetune.py only skips modules_to_save for chat/Q-LoRA models "
                f"({ev.get('chat_switch')})")
        run.update(model=model, trainable_embeddings=emb,
                   modules_to_save=QWEN_MODULES_TO_SAVE if emb else None)
        if "zero3" in low.replace(" ", ""):
            script = "finetune/finetune_lora_ds.sh"
    s = sc.get(script) or {}
    ds = s.get("ds")
    stack_ev = []
    if s:
        stack_ev.append(s.get("ev_ds") or f"{script}: no --deepspeed argument")
    distributed, zero, off = "none", None, None
    if "zero3" in low.replace(" ", "").replace("deepspeed", ""):
        zds = ctx.get("ds_zero3") or {}
        distributed, zero, off = "deepspeed", zds.get("stage", 3), zds.get("offload")
        stack_ev.append("README: 'Lora fintuning + DeepSpeed ZeRO 3 on 4 A100-SXM4-80G GPUs' "
                        "(--deepspeed finetune/ds_config_zero3.json)")
    elif ds:
        distributed, zero, off = "deepspeed", ds.get("stage"), ds.get("offload")
    elif s and s.get("deepspeed") is None:
        distributed = "none" if gpus == 1 else "ddp"
    if s:
        a.append(
            f"stack from {script} at {ctx['commit']} (README does not name the script used for "
            "profiling)")
    prec = None
    if s.get("bf16"):
        prec = "bf16"
    elif s.get("fp16"):
        prec = "fp16"
    if prec:
        a.append(f"precision={prec}: {s.get('ev_prec')}")
    if s.get("gradient_checkpointing"):
        a.append(f"gradient_checkpointing=True: {s.get('ev_gc')}")
    run.update(precision=prec,
               gradient_checkpointing=True if s.get("gradient_checkpointing") else None)
    if s.get("script_batch") and s.get("script_batch") != "1":
        cav.append(
            f"{script} defaults to --per_device_train_batch_size {s.get('script_batch')}; README "
            "says the "
            f"profiling used batch size 1")
    if distributed == "deepspeed":
        opt = (f"DeepSpeed {ds.get('optimizer') if ds else 'AdamW'} (optimizer block of the "
               "DeepSpeed config)")
    else:
        opt = ctx.get("optim")
    run["optimizer"] = opt
    if run["method"] != "full":
        run["lora_rank"] = ctx.get("lora_r")
        run["lora_alpha"] = ctx.get("lora_alpha")
        run["lora_dropout"] = ctx.get("lora_dropout")
        run["lora_target"] = ctx.get("lora_targets")
    stack = new_stack(trainer="hf_trainer", distributed=distributed, zero_stage=zero, offload=off,
                      evidence=[x for x in [ctx.get("ev", {}).get("trainer")] + stack_ev if x],
                      launch_script=script if s else None)
    return run, stack, a, cav


def _stated_versions(text, path, commit):
    st = {}
    ev = []
    m = re.search(r"we use CUDA (\d+(?:\.\d+)*) and Pytorch (\d+(?:\.\d+)*)", text)
    if m:
        st["torch"] = m.group(2)
        st["cuda"] = m.group(1)
        ev.append(cite_text(path, commit, text, m.group(0)))
    m = re.search(r'pip install "peft([^"]*)" deepspeed', text)
    if m:
        st["peft"] = m.group(1)
        ev.append(cite_text(path, commit, text, m.group(0)))
    return st, ev
