"""fsdp_qlora benchmarks_03_2024.md: the "Peak Memory (GiB)" tables and the sentences around
them."""

from __future__ import annotations

import re
import shlex

from vram_ml.published.document_text import cite_text, md_tables
from vram_ml.published.parsed_row import CARD_BASIS, make_row, mem_value, new_run, new_stack
from vram_ml.published.sources.fsdp_qlora_context import GPUS, MODELS, SOURCE, _truthy, _versions
from vram_ml.published.units import card_bytes


# ---------------------------------------------------------------------------
def _parse_doc(text, repository, path, commit, commit_date, ctx):
    rows = []
    lines = text.splitlines()
    tabs = md_tables(text)
    d = ctx["defaults"]
    # template command
    tm = re.search(r"python train\.py ([^\n`]+)", text)
    tmpl = {}
    if tm:
        toks = shlex.split(tm.group(1))
        for k in range(0, len(toks) - 1):
            if toks[k].startswith("--"):
                tmpl[toks[k][2:]] = toks[k + 1]
    tmpl_ev = cite_text(path, commit, text, tm.group(0)) if tm else None
    nb = re.search(r"NB: While the reported peak reserved memory[^\n]*", text)
    nb_ev = cite_text(path, commit, text, nb.group(0)) if nb else None
    stat_ev = " ; ".join([x for x in [nb_ev] + ctx.get("ev_peak", []) if x])
    versions, vev = _versions(ctx)

    def heading_before(ln, level):
        for i in range(ln - 1, -1, -1):
            if re.match("^" + "#" * level + " ", lines[i]):
                return lines[i].lstrip("#").strip()
        return None

    for ti, t in enumerate(tabs):
        hdr = t["header"]
        start = t["start_line"]
        case = heading_before(start, 2) or ""
        sub = heading_before(start, 3) or ""
        end_line = t["rows"][-1]["line_no"] if t["rows"] else start + 1
        cap = None
        for k in range(end_line, min(end_line + 3, len(lines))):
            if re.match(r"^\*[^*].*\*$", lines[k].strip()):
                cap = lines[k].strip().strip("*")
                break
        if "Peak Memory (GiB)" in hdr:
            kind = "peak"
        elif "Accelerator" in hdr:
            kind = "hw"
        else:
            continue
        gkey = "3090" if "3090" in case else ("4090" if "4090" in case else None)
        cap_model = None
        for lab in MODELS:
            if cap and cap.startswith(lab):
                cap_model = lab
        cap_ctx = re.search(r"Context Length of ([\d,]+)", cap or "")
        cap_bs_one = bool(re.search(r"batch size of one", cap or ""))
        for r in t["rows"]:
            c = dict(zip(hdr, r["cells"]))
            row = make_row(source=SOURCE, repository=repository, path=path, commit=commit,
                           commit_date=commit_date)
            a, cav = [], []
            if kind == "peak":
                tt = c.get("Train Type")
                ctxl = c.get("Context Length") or (cap_ctx.group(1)
                                                   if cap_ctx else tmpl.get("context_length"))
                bs = c.get("Batch Size") or ("1" if cap_bs_one else tmpl.get("batch_size"))
                ddp = c.get("DDP")
                off = c.get("CPU Offload")
                gname, nom, ng = GPUS[gkey]
                row["row_key"] = (
                    f"fsdp_qlora|doc|{case}|{sub}|{cap}|{tt}|ctx={ctxl}|bs={bs}|ddp={ddp}|off={off}"
                )
                row["locator"] = (
                    f"table {ti + 1} in '{case}' / '{sub}' (caption '{cap}', {path} line {start}) "
                    "row "
                    f"'{r['line'].strip()}' column 'Peak Memory (GiB)'")
                val = c.get("Peak Memory (GiB)")
                row["outcome"] = "ok"
                mem_value(row, val, val, "GiB", "GiB",
                          "column header 'Peak Memory (GiB)'; train.py divides by 2**30")
                row["secondary_values"] = {"time_s": c.get("Time (s)")}
                row["statistic"] = "reserved"
                row["statistic_confidence"] = "stated"
                row["statistic_evidence"] = stat_ev
                if nb_ev:
                    a.append(
                        "statistic=reserved: the doc calls the table numbers 'the reported peak "
                        "reserved "
                        "memory' and contrasts them with 'peak allocated memory'")
            else:  # hardware recommendation table -> fit labels
                acc = c.get("Accelerator")
                gname, nom, _ = GPUS.get(acc, (acc, None, None))
                ng = int(c.get("GPUs"))
                bs = c.get("Batch Size")
                ctxl = cap_ctx.group(1) if cap_ctx else None
                off = c.get("CPU+Activation Offload")
                ddp = None
                tt = "QLoRA" if "QLoRA" in (cap or "") else None
                row["row_key"] = f"fsdp_qlora|doc|hw|{acc}|gpus={ng}|off={off}|bs={bs}"
                row["locator"] = (
                    f"table {ti + 1} in '{case}' (caption '{cap}', {path} line {start}) row "
                    f"'{r['line'].strip()}' (fit label; no memory column)")
                row["outcome"] = "ok"
                row["statistic"] = "unknown"
                row["statistic_confidence"] = "none"
                row["statistic_evidence"] = ("label only: the setting trained (no memory value "
                                             "published)")
                row["secondary_values"] = {
                    "time_s": c.get("Time (s)"), "ballpark_cost": c.get("Ballpark Cost")
                }
                cap_model = "Llama-2 70B"
                a.append(
                    "outcome=ok: 'the fastest possible combination of settings capable of training "
                    "on context "
                    "length 2048 with an effective batch size of 32' -> this batch size fitted")
            row["quote"] = r["line"]
            row["header_quote"] = t["header_line"]
            row["gpu_model"] = gname
            row["card_memory_bytes"] = card_bytes(nom)
            row["card_memory_basis"] = CARD_BASIS
            row["gpu_count"] = ng
            row["per_gpu"] = True
            row["per_gpu_evidence"] = (
                "train.py reads max_memory_*(local_rank) and logs rank 0 only "
                f"({ctx.get('ev_logger')}); the doc speaks of 'peak memory per GPU'")
            mid, mev = MODELS.get(cap_model, (None, "model not identified"))
            if kind == "peak" and cap_model is None:
                mid, mev = MODELS["Llama-2 7B"]
            a.append(f"model={mid}: {mev}")
            method = (tt or "").lower() or None
            sharding = "NO_SHARD ('ddp' sharding strategy)" if (
                ddp and _truthy(ddp)) else "FULL_SHARD (default)"
            offload = None
            if off is not None and _truthy(off):
                offload = ["params:cpu"] + (["activations:cpu"] if kind == "hw" else [])
            elif off is None and kind == "peak":
                if _truthy(tmpl.get("use_cpu_offload", "False")):
                    offload = ["params:cpu"]
                a.append(
                    f"cpu offload={tmpl.get('use_cpu_offload')}: table has no CPU Offload column; "
                    "template "
                    f"command ({tmpl_ev})")
            if ddp is None and kind == "peak":
                a.append("sharding=FULL_SHARD: no DDP column; train.py default sharding_strategy "
                         f"{d.get('sharding_strategy')!r} "
                         f"({ctx['defaults_ev'].get('sharding_strategy')})")
            row["stack"] = new_stack(
                trainer="custom_loop", distributed="fsdp", zero_stage=None, offload=offload,
                evidence=[
                    x for x in [
                        f"train.py wraps the model in FSDP; sharding {sharding}",
                        "doc footnote: 'This is still using FSDP, but in distributed data "
                        "parallel mode. Not DistributedDataParallel.'"
                        if ddp and _truthy(ddp) else ""
                    ] if x
                ], sharding_strategy=sharding)
            gc = tmpl.get("use_gradient_checkpointing")
            run = new_run(
                model=mid, model_label=cap_model, method=method,
                quant_bits=4 if method == "qlora" else None,
                quant_method="bitsandbytes Linear4bit NF4" if method == "qlora" else None,
                lora_rank=int(d["lora_rank"])
                if d.get("lora_rank", "").isdigit() else d.get("lora_rank"), lora_alpha=int(
                    d["lora_alpha"]) if d.get("lora_alpha", "").isdigit() else d.get("lora_alpha"),
                lora_target=d.get("lora_target_modules"),
                per_device_batch_size=int(bs) if bs else None, gradient_accumulation_steps=1,
                seq_len=int(ctxl.replace(",", "")) if ctxl else None, seq_len_semantics=(
                    "context_length; dataset 'dummy' samples are longer than the context "
                    "and truncated to it (every sample full length)")
                if kind == "peak" else "context_length", packing=False,
                gradient_checkpointing=_truthy(gc) if gc else None, precision=d.get("precision"),
                attention="sdpa (PyTorch, transformers default) -- assumed",
                optimizer=d.get("optimizer"), num_gpus=ng, num_nodes=1, config_settings={
                    "template_command": tm.group(0) if tm else None,
                    "reentrant_checkpointing": tmpl.get("reentrant_checkpointing"),
                    "dataset": tmpl.get("dataset") if kind == "peak" else None
                }, fit_semantics=("fastest setting found that trains (batch size chosen to fit)"
                                  if kind == "hw" else None))
            row["run"] = run
            a.append(f"precision={d.get('precision')}, lora_rank/alpha/target, optimizer: train.py "
                     f"defaults at {commit} "
                     f"(the doc's command does not set them)")
            cav.append(
                "benchmarks were run in Feb-Mar 2024; train.py defaults at the pinned commit may "
                "differ from the "
                "code actually used")
            if kind == "peak" and gkey == "4090":
                cav.append(
                    "4090 peak-memory values are identical to the 3090 case study's for the same "
                    "settings "
                    "(only times differ); possibly re-used rather than re-measured")
            if kind == "hw":
                cav.append("gradient checkpointing / precision for this table are not stated")
            row["versions"], row["versions_evidence"] = versions, vev
            row["assumptions"], row["caveats"] = a, cav
            rows.append(row)
    # Mistral 7B v0.2: full 32K context does not fit on the 24GB cards (label)
    m = re.search(
        r"Mistral 7B v0\.2 Base expanded the context window of the base 7B parameter model to "
        r"(?P<ctx>\d+)K tokens\. "
        r"(?P<card>\d+)GB of memory per GPU isn't quite enough to finetune at the full context "
        r"length even using "
        r"QLoRA[^\n]*", text)
    if m:
        row = make_row(source=SOURCE, repository=repository, path=path, commit=commit,
                       commit_date=commit_date)
        row["row_key"] = "fsdp_qlora|doc|mistral-full-context|oom"
        row["locator"] = (f"sentence in 'Bonus: Mistral 7B' ({path} line "
                          f"{cite_text(path, commit, text, m.group(0)).split(':')[1]})")
        row["quote"] = m.group(0)
        row["outcome"] = "oom"
        row["statistic"], row["statistic_confidence"] = "unknown", "none"
        row["statistic_evidence"] = "label only: does not fit at the model's full context length"
        gname, nom, ng = GPUS["4090"]
        row.update(gpu_model=gname, card_memory_bytes=card_bytes(nom), card_memory_basis=CARD_BASIS,
                   gpu_count=ng, per_gpu=True, per_gpu_evidence="'24GB of memory per GPU'")
        row["stack"] = new_stack(
            trainer="custom_loop", distributed="fsdp", offload=["params:cpu"],
            evidence=["assumed same settings as the Mistral table (CPU Offload True)"],
            sharding_strategy="FULL_SHARD (default)")
        row["run"] = new_run(
            model=None, model_label="Mistral 7B v0.2 Base", method="qlora", quant_bits=4,
            quant_method="bitsandbytes Linear4bit NF4", per_device_batch_size=1,
            seq_len=int(m.group("ctx")) * 1024,
            seq_len_semantics="'full context length' = 32K tokens "
            "(32 x 1024 assumed)", gradient_checkpointing=True, precision=d.get("precision"),
            num_gpus=ng, num_nodes=1, fit_semantics="did not fit")
        row["assumptions"] = [
            "batch size 1 and CPU offload as in the 24,576-token row of the table below",
            "32K = 32768"
        ]
        row["caveats"] = ["the sentence states the limit without the exact attempted settings"]
        row["versions"], row["versions_evidence"] = versions, vev
        rows.append(row)
    # 'peak allocated' sentence
    m = re.search(
        r"the peak allocated memory is (?P<a>\d+(?:\.\d+)?) GiB vs (?P<b>\d+(?:\.\d+)?) GiB, "
        r"respectively", text)
    if m:
        sent_line = nb.group(0) if nb else m.group(0)
        lora_tab = next(
            (t for t in tabs
             if "Peak Memory (GiB)" in t["header"] and any(r["cells"][0].strip() == "LoRA"
                                                           for r in t["rows"])), None)
        for grp, ctxlen in (("a", "512"), ("b", "2048")):
            row = make_row(source=SOURCE, repository=repository, path=path, commit=commit,
                           commit_date=commit_date)
            row["row_key"] = f"fsdp_qlora|doc|allocated|LoRA|ctx={ctxlen}"
            row["locator"] = (
                f"sentence after the LoRA context-length table ({path} line "
                f"{cite_text(path, commit, text, m.group(0)).split(':')[1]}), value for context "
                f"{ctxlen}")
            row["quote"] = sent_line
            row["header_quote"] = lora_tab["header_line"] if lora_tab else None
            row["outcome"] = "ok"
            mem_value(row, m.group(grp) + " GiB", m.group(grp), "GiB", "GiB", "written 'GiB'")
            row["statistic"] = "allocated"
            row["statistic_confidence"] = "stated"
            cited = cite_text(path, commit, text, m.group(0)) or ""
            row["statistic_evidence"] = (cited + " ; "
                                         + (ctx.get("ev_peak") or [None, None, None])[2])
            gname, nom, ng = GPUS["3090"]
            row.update(gpu_model=gname, card_memory_bytes=card_bytes(nom),
                       card_memory_basis=CARD_BASIS, gpu_count=ng, per_gpu=True,
                       per_gpu_evidence="rank-0 max_memory_allocated(local_rank)")
            row["stack"] = new_stack(
                trainer="custom_loop", distributed="fsdp", offload=None,
                evidence=["same runs as the LoRA rows of the table above (FULL_SHARD)"],
                sharding_strategy="FULL_SHARD (default)")
            mid, mev = MODELS["Llama-2 7B"]
            row["run"] = new_run(model=mid, model_label="Llama-2 7B", method="lora", lora_rank=64,
                                 lora_alpha=16, lora_target=d.get("lora_target_modules"),
                                 per_device_batch_size=1, gradient_accumulation_steps=1,
                                 seq_len=int(ctxlen),
                                 seq_len_semantics="context_length (dummy dataset, full length)",
                                 packing=False, gradient_checkpointing=True,
                                 precision=d.get("precision"), optimizer=d.get("optimizer"),
                                 num_gpus=2, num_nodes=1)
            row["assumptions"] = [
                f"model={mid}: {mev}", "same settings as the LoRA 512/2048 table rows (template "
                "command with --train_type lora)"
            ]
            row["caveats"] = ["benchmarks were run in Feb-Mar 2024 with the code of that time"]
            row["versions"], row["versions_evidence"] = versions, vev
            rows.append(row)
    return rows
