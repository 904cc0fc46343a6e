"""peft docs: sections, launch commands and accelerate configs of a docs page (the run of a
number)."""

from __future__ import annotations

import re


def _sections(lines):
    """Split into top-level '# ' sections, ignoring headings inside code fences.
    Returns list of dict(title, start, end, blocks=[(lang, start, end, text)])."""
    secs, fence, cur = [], None, None
    for i, line in enumerate(lines, start=1):
        s = line.strip()
        if s.startswith("```"):
            if fence is None:
                fence = (s[3:].strip(), i)
            else:
                if cur is not None:
                    cur["blocks"].append((fence[0], fence[1], i, "\n".join(lines[fence[1]:i - 1])))
                fence = None
            continue
        if fence is None and re.match(r"^# \S", line):
            if cur:
                cur["end"] = i - 1
            cur = {"title": line[2:].strip(), "start": i, "end": len(lines), "blocks": []}
            secs.append(cur)
    return secs


def _parse_cmd(cmd):
    """Parse `--flag value` pairs of a launch command (values kept as strings, quotes stripped)."""
    toks = re.findall(r'"[^"]*"|\S+', cmd.replace("\\\n", " "))
    out, i = {}, 0
    while i < len(toks):
        t = toks[i]
        if t.startswith("--"):
            k = t[2:]
            if i + 1 < len(toks) and not toks[i + 1].startswith("--"):
                out[k] = toks[i + 1].strip('"')
                i += 2
                continue
            out[k] = True
        i += 1
    return out


def _parse_yml(txt):
    out = {}
    for line in txt.splitlines():
        m = re.match(r"^\s*([A-Za-z0-9_]+):\s*(.*?)\s*$", line)
        if m and m.group(2) != "":
            out[m.group(1)] = m.group(2).strip("'\"")
    return out


def _run_from_section(sec, path, commit):
    cmd_blk = next((b for b in sec["blocks"] if "accelerate launch" in b[3] and "train.py" in b[3]),
                   None)
    cfg_blk = next(
        (b for b in sec["blocks"] if b[0] in ("yml", "yaml") and "distributed_type" in b[3]), None)
    if not cmd_blk:
        return None, None, None, []
    a = _parse_cmd(cmd_blk[3])
    c = _parse_yml(cfg_blk[3]) if cfg_blk else {}
    q4 = str(a.get("use_4bit_quantization", "False")).lower() == "true"
    dist = c.get("distributed_type", "").lower()
    stack = {
        "trainer": "trl_sft",
        "distributed": {"deepspeed": "deepspeed", "fsdp": "fsdp"}.get(dist, dist or None),
        "evidence": f"{path}@{commit}: section '{sec['title']}' says the script uses "
        f"trl.SFTTrainer; accelerate config lines {cfg_blk[1]}-{cfg_blk[2]}" if cfg_blk else None,
    }
    for k in ("zero_stage", "offload_optimizer_device", "offload_param_device", "zero3_init_flag",
              "fsdp_sharding_strategy", "fsdp_offload_params", "fsdp_use_orig_params",
              "fsdp_cpu_ram_efficient_loading", "fsdp_auto_wrap_policy", "fsdp_backward_prefetch",
              "fsdp_state_dict_type", "mixed_precision", "num_processes"):
        if k in c:
            stack[k] = c[k]
    run = {
        "model": a.get("model_name_or_path"),
        "method": "qlora" if q4 else
        ("lora" if str(a.get("use_peft_lora")).lower() == "true" else None),
        "peft_method": "lora" if str(a.get("use_peft_lora")).lower() == "true" else None,
        "quant": (
            "bnb_4bit" +
            (" (nested/double quant)" if str(a.get("use_nested_quant")).lower() == "true" else ""))
        if q4 else "none",
        "bnb_4bit_compute_dtype": a.get("bnb_4bit_compute_dtype"),
        "bnb_4bit_quant_storage_dtype": a.get("bnb_4bit_quant_storage_dtype"),
        "lora_rank": a.get("lora_r"),
        "lora_alpha": a.get("lora_alpha"),
        "lora_dropout": a.get("lora_dropout"),
        "lora_target": a.get("lora_target_modules"),
        "per_device_batch_size": a.get("per_device_train_batch_size"),
        "gradient_accumulation_steps": a.get("gradient_accumulation_steps"),
        "seq_len": a.get("max_seq_len"),
        "packing": a.get("packing"),
        "gradient_checkpointing": a.get("gradient_checkpointing"),
        "use_reentrant": a.get("use_reentrant"),
        "torch_dtype": None,
        "bf16": a.get("bf16"),
        "attention": "flash_attention_2"
        if str(a.get("use_flash_attn")).lower() == "true" else None,
        "optimizer": None,
        "num_gpus": c.get("num_processes"),
        "dataset": a.get("dataset_name"),
        "launch_command_lines": f"{cmd_blk[1]}-{cmd_blk[2]}",
        "accelerate_config_lines": f"{cfg_blk[1]}-{cfg_blk[2]}" if cfg_blk else None,
    }
    assumptions = [
        f"run settings: parsed from the launch command ({path}@{commit} lines "
        f"{cmd_blk[1]}-{cmd_blk[2]})" +
        (f" and accelerate config (lines {cfg_blk[1]}-{cfg_blk[2]})" if cfg_blk else "") +
        " in the same doc section",
        "optimizer=null: not stated in the doc section",
    ]
    return run, stack, {"cmd": cmd_blk, "cfg": cfg_blk}, assumptions


def _row(base, **kw):
    r = dict(base)
    r.update(kw)
    return r
