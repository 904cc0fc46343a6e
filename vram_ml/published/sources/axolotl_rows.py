"""axolotl: one row from a statement and its YAML (`_fill`); code-block comments and prose
statements."""

from __future__ import annotations

import posixpath
import re

from vram_ml.published.parsed_row import CARD_BASIS, mem_value, new_run, new_stack
from vram_ml.published.sources.axolotl_context import (
    DOC_OF,
    GPU_RX,
    MEM_RX,
    VISION_HINT,
    _base_row,
    _gpu_from_spec,
    _norm,
    _yaml,
)
from vram_ml.published.units import card_bytes, value_bytes


def _fill(row, ctx, *, yaml_path, doc_dir, quote, locator, key, val_m, outcome="ok", gpu=None,
          card=None, ngpu=None, per_gpu=None, stat=None, stat_ev=None, variant=None,
          extra_caveats=(), extra_assump=(), unit_override=None):
    row["row_key"] = key
    row["locator"] = locator
    row["quote"] = quote
    row["outcome"] = outcome
    a, cav = list(extra_assump), list(extra_caveats)
    if val_m is not None:
        unit = unit_override or val_m.group("unit")
        raw = val_m.group("val").strip()
        if unit == "GiB":
            mem_value(row, raw, val_m.group("num"), "GiB", "GiB", "written 'GiB'")
        else:
            mem_value(
                row, raw, val_m.group("num"), "GB", "GB",
                "written 'GB' -> 10^9 bytes (brief rule); note axolotl's "
                "own memory logs are in GiB (bench.py /1024**3)")
            alt = value_bytes(val_m.group("num"), "GiB")
            cav.append(
                f"if this 'GB' figure was read from axolotl's GiB logs, value_bytes would be {alt}")
        if raw.startswith("~") or "about" in quote:
            cav.append("approximate figure ('~' / 'about') as published")
    row["gpu_model"] = gpu
    row["card_memory_bytes"] = card_bytes(card) if card else None
    row["card_memory_basis"] = CARD_BASIS if card else None
    row["gpu_count"] = ngpu
    row["per_gpu"] = per_gpu
    if per_gpu:
        per_gpu_text = "/GPU" in quote or "/gpu" in quote or "per GPU" in quote
        row["per_gpu_evidence"] = "'/GPU' in the statement" if per_gpu_text \
            else ("single GPU" if ngpu == 1 else None)
    if stat:
        row["statistic"], row["statistic_confidence"], row[
            "statistic_evidence"] = stat, "stated", stat_ev
    else:
        row["statistic"], row["statistic_confidence"] = "unknown", "none"
        row["statistic_evidence"] = (
            "not stated for this figure. For context, axolotl's trainer logs "
            "'memory/device_reserved (GiB)' = torch.cuda.max_memory_reserved since the last log "
            f"({ctx.get('ev_logger')}; {ctx.get('ev_bench')}) -- the README does not say this "
            "figure came from it")
    yf, ynote = _yaml(ctx, yaml_path, doc_dir) if yaml_path else (None, None)
    if ynote:
        cav.append(ynote)
    s = (yf or {}).get("settings", {})
    adapter = s.get("adapter")
    method = {"qlora": "qlora", "lora": "lora"
              }.get(adapter) if adapter else ("freeze" if s.get("unfrozen_parameters") else
                                              ("full" if yf else None))
    qb = 4 if s.get("load_in_4bit") else (8 if s.get("load_in_8bit") else None)
    if s.get("model_quantization_config"):
        cav.append(f"model_quantization_config: {s.get('model_quantization_config')} "
                   f"{s.get('model_quantization_config_kwargs')}")
    dist, zero, off = "none", None, None
    if s.get("deepspeed"):
        dist = "deepspeed"
        ds = (yf or {}).get("ds") or {}
        zero, off = ds.get("stage"), ds.get("offload")
    elif s.get("fsdp") or s.get("fsdp_config") or s.get("fsdp_version"):
        dist = "fsdp"
        fc = s.get("fsdp_config") or {}
        if fc.get("offload_params") or fc.get("fsdp_offload_params"):
            off = ["params:cpu"]
    elif ngpu and ngpu > 1:
        dist = "ddp"
        a.append(
            "distributed=ddp: multi-GPU without deepspeed/fsdp keys in the YAML (axolotl launches "
            "DDP)")
    att = s.get("attn_implementation")
    if not att:
        for k, v in (("flash_attention", "flash_attention_2"), ("flex_attention", "flex_attention"),
                     ("sdp_attention", "sdpa"), ("xformers_attention", "xformers")):
            if s.get(k):
                att = v
    if s.get("gemma4_hybrid_attn_impl"):
        att = f"{att} + gemma4_hybrid_attn_impl"
    prec = "bf16" if s.get("bf16") in (True, "auto",
                                       "true") else ("fp16" if s.get("fp16") else None)
    row["stack"] = new_stack(
        trainer="axolotl", distributed=dist, zero_stage=zero, offload=off, evidence=[
            f"{(yf or {}).get('path')}@{ctx['commit']}: " +
            (", ".join(f"{k}: {s.get(k)}" for k in ("deepspeed", "fsdp_version", "fsdp_config")
                       if k in s) or "no deepspeed / fsdp keys") if yf else "no YAML mapped"
        ], fsdp_version=s.get("fsdp_version"))
    audio = "audio" in (yaml_path or "").lower() or "voxtral" in str(s.get("processor_type",
                                                                           "")).lower()
    vl = (bool(s.get("processor_type")) and not audio) or bool(VISION_HINT.search(yaml_path or ""))
    row["vision_language"] = vl
    if audio:
        cav.append("audio-language config (processor_type {}); not a vision-language row".format(
            s.get("processor_type")))
    if vl:
        cav.append("vision-language config: images per sample / resolution depend on the dataset "
                   f"({s.get('datasets')}); not stated")
    run = new_run(
        model=s.get("base_model"), model_label=variant, method=method, quant_bits=qb,
        quant_method=("bitsandbytes 4-bit" if qb == 4 else
                      ("bitsandbytes 8-bit" if qb == 8 else None)), lora_rank=s.get("lora_r"),
        lora_alpha=s.get("lora_alpha"), lora_target=s.get("lora_target_modules") or
        ("all-linear" if s.get("lora_target_linear") else None),
        per_device_batch_size=s.get("micro_batch_size"),
        gradient_accumulation_steps=s.get("gradient_accumulation_steps"),
        seq_len=s.get("sequence_len"),
        seq_len_semantics=("sequence_len with sample_packing (packed to sequence_len)"
                           if s.get("sample_packing") else "sequence_len (max length)")
        if yf else None, packing=s.get("sample_packing"),
        gradient_checkpointing=s.get("gradient_checkpointing"), precision=prec, attention=att,
        optimizer=s.get("optimizer"), num_gpus=ngpu, num_nodes=1 if ngpu else None,
        images_per_sample=None,
        config_path=f"{(yf or {}).get('path')}@{ctx['commit']}" if yf else None,
        config_settings=s or None)
    if s.get("lora_target_parameters"):
        run["lora_target"] = {
            "modules": run["lora_target"], "parameters": s.get("lora_target_parameters")
        }
    row["run"] = run
    if yf:
        a.append(
            f"run settings from {(yf or {}).get('path')}@{ctx['commit']} (the config the README "
            "statement is attached to)")
        if ctx["measured_at"] != ctx["commit"]:
            cav.append("config read at the pinned commit; the number was first published at "
                       f"{ctx['measured_at']} and the "
                       f"YAML may have changed since")
    elif yaml_path is None:
        cav.append("no committed YAML could be tied to this statement")
    row["assumptions"], row["caveats"] = a, cav
    row["versions"] = dict(ctx.get("versions") or {})
    row["versions_evidence"] = ctx.get("versions_evidence")
    return row


# ---------------------------------------------------------------------------
def _codeblock_rows(text, ctx, repository, path, commit, commit_date, stat_note):
    rows = []
    lines = text.splitlines()
    doc_dir = posixpath.dirname(path)
    cmd_rx = re.compile(r"^\s*axolotl train (?P<y>\S+\.ya?ml)(?:\s*#\s*(?P<inline>.*))?\s*$")
    for i, text_line in enumerate(lines):
        m = cmd_rx.match(text_line)
        if not m or "<" in m.group("y"):
            continue
        ypath = m.group("y")
        comments = []
        k = i - 1
        while k >= 0 and lines[k].strip().startswith("#"):
            t = lines[k].strip().lstrip("#").strip()
            if re.match(r"(wget|run:|uv |pip )", t):
                k -= 1
                continue
            comments.insert(0, (k, lines[k]))
            k -= 1
        if m.group("inline"):
            comments.append((i, text_line))
        header = None
        gpu_carry = None
        for (ln, cl) in comments:
            seg = m.group("inline") if ln == i else cl.strip().lstrip("#").strip()
            g_all = list(GPU_RX.finditer(seg))
            mems = [
                mm for mm in MEM_RX.finditer(seg)
                if not any(g.start() <= mm.start() < g.end() for g in g_all)
            ]
            mems = [mm for mm in mems if "Projected" not in seg[:mm.start()][-25:]]
            if not mems and not re.search(r"@ OOM|\(\d+x\d+GB\)$", seg):
                if not g_all:
                    header = seg
                else:
                    gpu_carry = g_all[-1]
                    # label-only: '(1x80GB)' = runs on one 80GB GPU
                    if re.search(r"\(\d+x\d+GB\)\s*$", seg):
                        pass
                continue
            label = (header + " / " if header and not seg.startswith(header) else "") + seg
            if g_all:
                gpu_carry = g_all[-1]
            if re.search(r"@ OOM", seg):
                gm = g_all[-1] if g_all else gpu_carry
                gname, card, n = _gpu_from_spec(gm)
                row = _base_row(ctx, repository, path, commit, commit_date)
                rows.append(
                    _fill(
                        row, ctx, yaml_path=ypath, doc_dir=doc_dir,
                        quote=cl if ln != i else text_line,
                        locator=f"{path} line {ln + 1} (comment for 'axolotl train {ypath}')", key=
                        f"axolotl|{DOC_OF.get(path, path)}|{posixpath.basename(ypath)}|"
                        f"{_norm(label)}|oom",
                        val_m=None, outcome="oom", gpu=gname, card=card, ngpu=n, per_gpu=True,
                        variant=label, extra_caveats=[
                            "OOM label; the 'Projected' figure next to it is an estimate and is "
                            "not extracted"
                        ]))
                continue
            for vi, mm in enumerate(mems):
                # GPU spec nearest before this value in the same segment, else carried
                prev = [g for g in g_all if g.end() <= mm.start()]
                gm = prev[-1] if prev else gpu_carry
                gname, card, n = _gpu_from_spec(gm)
                per = True if (mm.group("pg") or n == 1) else None
                row = _base_row(ctx, repository, path, commit, commit_date)
                extra = []
                if len(mems) > 1:
                    extra.append(
                        f"one of {len(mems)} figures in this comment (#{vi + 1}); the variant is "
                        "described "
                        f"in the quote, the YAML as committed is one of them")
                lo = mems[vi - 1].end() if vi > 0 else 0
                hi = mems[vi + 1].start() if vi + 1 < len(mems) else len(seg)
                if len(mems) > 1:
                    qual = seg[mm.start():hi] if seg[mm.end():].lstrip().startswith(
                        "(") else seg[lo:mm.end()]
                    qual = qual.strip(" ,.")
                else:
                    qual = label
                if re.search(r"experts", qual, flags=re.I):
                    yf0, _ = _yaml(ctx, ypath, doc_dir)
                    ss = (yf0 or {}).get("settings", {})
                    extra.append(
                        f"figure for the variant '{qual.strip()}': check against the committed "
                        "YAML "
                        f"(lora_target_parameters={ss.get('lora_target_parameters')!r}, "
                        f"lora_target_modules={ss.get('lora_target_modules')!r}); targeting "
                        "experts needs a "
                        f"config edit the README describes but does not commit")
                rows.append(
                    _fill(
                        row, ctx, yaml_path=ypath, doc_dir=doc_dir,
                        quote=cl if ln != i else text_line,
                        locator=f"{path} line {ln + 1} (comment for 'axolotl train {ypath}'), "
                        "figure "
                        f"#{vi + 1} '{mm.group('val').strip()}'", key=
                        f"axolotl|{DOC_OF.get(path, path)}|{posixpath.basename(ypath)}|"
                        f"{_norm(label)}|{vi}",
                        val_m=mm, gpu=gname, card=card, ngpu=n, per_gpu=per,
                        stat=stat_note[0] if stat_note else None,
                        stat_ev=stat_note[1] if stat_note else None, variant=label,
                        extra_caveats=extra))
        # label-only "(1x80GB)" lines directly above a command, with no figure
        for (ln, cl) in comments:
            seg = cl.strip().lstrip("#").strip()
            mlab = re.search(r"\((?P<n>\d+)x(?P<card>\d+)GB\)\s*$", seg)
            if mlab and not MEM_RX.search(seg.replace(mlab.group(0), "")):
                row = _base_row(ctx, repository, path, commit, commit_date)
                rows.append(
                    _fill(
                        row, ctx, yaml_path=ypath, doc_dir=doc_dir, quote=cl, locator=
                        f"{path} line {ln + 1} (comment for 'axolotl train {ypath}'; no figure)",
                        key=
                        f"axolotl|{DOC_OF.get(path, path)}|{posixpath.basename(ypath)}|"
                        f"{_norm(seg)}|label",
                        val_m=None, outcome="ok", gpu=None, card=int(mlab.group("card")),
                        ngpu=int(mlab.group("n")), per_gpu=True, variant=seg, extra_caveats=[
                            "label only: the comment names the GPU the config runs on "
                            "but gives no memory figure"
                        ]))
    return rows


def _prose_rows(text, ctx, repository, path, commit, commit_date, stat_note):
    rows = []
    lines = text.splitlines()
    doc_dir = posixpath.dirname(path)
    rx = re.compile(
        r"(This config uses|This uses|These configs use) about (?P<expr>.+?) VRAM(?P<rest>[^.\n]*)")
    for i, text_line in enumerate(lines):
        m = rx.search(text_line)
        if not m:
            continue
        # commands in the nearest preceding code block
        cmds = []
        k = i - 1
        in_block = False
        while k >= 0:
            s = lines[k].strip()
            if s.startswith("```"):
                if in_block:
                    break
                in_block = True
            elif in_block:
                mm = re.match(r"^(?:python -m axolotl\.cli\.train|axolotl train) (\S+\.ya?ml)", s)
                if mm:
                    cmds.insert(0, mm.group(1))
            k -= 1
        mems = list(MEM_RX.finditer(m.group("expr")))
        for ypath in (cmds or [None]):
            for vi, mm in enumerate(mems):
                row = _base_row(ctx, repository, path, commit, commit_date)
                extra = []
                if len(cmds) > 1:
                    extra.append(f"one figure stated for {len(cmds)} configs ({', '.join(cmds)})")
                if len(mems) > 1:
                    extra.append(
                        f"one of {len(mems)} figures in the sentence (#{vi + 1}); variants "
                        "described in the quote")
                rows.append(
                    _fill(
                        row, ctx, yaml_path=ypath, doc_dir=doc_dir, quote=text_line.strip(), locator
                        =f"{path} line {i + 1} (sentence after the code block running {ypath}), "
                        f"figure #{vi + 1}", key=
                        f"axolotl|{DOC_OF.get(path, path)}|"
                        f"{posixpath.basename(ypath) if ypath else None}|prose|{vi}",
                        val_m=mm, gpu=None, card=None, ngpu=None, per_gpu=None,
                        stat=stat_note[0] if stat_note else None,
                        stat_ev=stat_note[1] if stat_note else None, variant=m.group(0).strip(),
                        extra_caveats=extra + ["GPU not stated"]))
    return rows
