"""Parser for per-GPU memory numbers in huggingface/peft prose docs.

Files: docs/source/accelerate/deepspeed.md, docs/source/accelerate/fsdp.md, README.md

parse(text, *, repository, path, commit, commit_date, context) -> list[dict]

context:
  tracemalloc_script: {"path","commit","text"}  example script whose TorchTracemalloc log is quoted
  in deepspeed.md
"""

from __future__ import annotations

import json
import re

from vram_ml.published.document_text import find_line
from vram_ml.published.sources.peft_docs_sections import _row, _run_from_section, _sections
from vram_ml.published.units import GIB, is_exact_bytes, value_bytes

SOURCE = "peft-docs"
REPOSITORY = "huggingface/peft"


def parse(text: str, *, repository: str, path: str, commit: str, commit_date: str,
          context: dict) -> list[dict]:
    lines = text.splitlines()
    out = []
    base = {
        "source": SOURCE, "repository": repository, "path": path, "commit": commit,
        "commit_date": commit_date, "also_in_commits": [], "header_quote": None, "versions": {
            k: None
            for k in
            ["torch", "transformers", "peft", "trl", "bitsandbytes", "accelerate", "flash_attn"]
        }, "versions_evidence": None
    }

    if path.endswith("deepspeed.md") or path.endswith("fsdp.md"):
        secs = _sections(lines)
        for sec in secs:
            title = sec["title"]
            run, stack, blks, assum = _run_from_section(sec, path, commit)
            # GPU statement of the section (first matching sentence)
            gtxt = "\n".join(lines[sec["start"] - 1:sec["end"]])
            mg = re.search(r"on (\d+)[xX]\s*((?:NVIDIA )?[A-Z]\d+)?\s*(\d+)GB GPUs", gtxt)
            gpu_count = int(mg.group(1)) if mg else None
            gpu_label = (f"{mg.group(2)} {mg.group(3)}GB" if mg.group(2) else
                         f"{mg.group(3)}GB GPU (model not stated)") if mg else None
            card = int(mg.group(3)) * GIB if mg else None
            gline = None
            if mg:
                gline, _ = find_line(text, mg.group(0))
            for ln in range(sec["start"], sec["end"] + 1):
                line = lines[ln - 1]
                if "memory consumed per GPU is" not in line and "GPU memory usage is" not in line:
                    continue
                # all "<num> GB" occurrences that describe GPU memory
                for m in re.finditer(
                        r"(\*\*)?(\d+(?:\.\d+)?(?:-\d+(?:\.\d+)?)?)\s*GB(\*\*)?(\s*\(([\d\-]+%)\))?(\s*/\s*GPU)?",
                        line):
                    val = m.group(2)
                    after = line[m.end():m.end() + 20]
                    before = line[max(0, m.start() - 40):m.start()]
                    if "CPU RAM" in before or "CPU RAM" in after[:12]:
                        continue
                    if "X" in line[max(0, m.start() - 2):m.start()]:
                        continue  # "2X24GB GPUs" = card count x size
                    if line[m.end():].lstrip().startswith(
                            "GPUs") or line[m.end():].lstrip().startswith("GPU "):
                        continue  # "80GB GPUs" = a card size, not a measurement
                    pos_dis = line.find("disabling CPU offloading")
                    no_offload = pos_dis >= 0 and m.start() > pos_dis
                    cav = [(
                        "statistic not stated: number read off a GPU-memory screenshot (likely an "
                        "NVML/W&B system metric, i.e. device-level); not verifiable"
                        if "screenshot" in line else
                        "statistic not stated: prose number, measurement method not named"
                    ), "unit printed as 'GB', read as 10^9 bytes (SI); read as GiB (2^30) it would "
                           "be 7.4% higher",
                           "prose number from a docs page, single run, no versions stated"]
                    if "-" in val:
                        lo, hi = val.split("-")
                        vb, ex = value_bytes(hi, "GB"), is_exact_bytes(hi, "GB")
                        cav.append(
                            f"published as a range {val} GB; value_bytes uses the upper end ({hi} "
                            "GB) as the peak")
                    else:
                        vb, ex = value_bytes(val, "GB"), is_exact_bytes(val, "GB")
                    if not ex:
                        cav.append("value_bytes rounded to the nearest byte")
                    cardb = card
                    run2 = dict(run) if run else {}
                    st2 = dict(stack) if stack else {}
                    a2 = list(assum)
                    if no_offload:
                        cav.append(
                            "this number is for a variant with CPU offloading disabled, stated in "
                            "the same sentence")
                        st2["fsdp_offload_params"] = "false"
                        a2.append("fsdp_offload_params=false: sentence says 'When disabling CPU "
                                  "offloading'; rest of the config as in the section")
                        if card and vb and vb > card:
                            cav.append(
                                f"{val} GB exceeds the {gpu_label} named for the section: measured "
                                "on a larger, unnamed card")
                            cardb = None
                    if mg:
                        a2.append(f"gpu: '{mg.group(0)}' ({path}@{commit}:{gline})")
                    out.append(
                        _row(
                            base, locator=f"line {ln}", column=m.group(0).strip(), quote=line,
                            value=val.split("-")[-1], value_written=val, unit="GB", value_bytes=vb,
                            statistic="unknown", is_peak=True,
                            aggregation="per-GPU memory of the training run as stated in prose",
                            statistic_evidence=
                            f"{path}@{commit}:{ln}: prose 'memory consumed per GPU is ...'" +
                            (" referring to a screenshot" if "screenshot" in line else "") +
                            "; no measurement API named", outcome="ok", outcome_evidence=None,
                            card_memory_bytes=cardb, gpu_model=gpu_label,
                            gpu_model_evidence=(f"{path}@{commit}:{gline}" if gline else None),
                            gpu_count=gpu_count, stack=st2, run=run2, assumptions=a2, caveats=cav,
                            measurement_key=json.dumps(
                                {"src": SOURCE, "path": path, "quote": line, "value": val},
                                sort_keys=True), doc_section=title))
            # TorchTracemalloc log block (deepspeed.md, single-GPU ZeRO-3 offload example)
            for blk in sec["blocks"]:
                if "Total Peak Memory consumed during the" not in blk[3]:
                    continue
                scr = context.get("tracemalloc_script")
                ev = None
                if scr:
                    l1, _ = find_line(scr["text"],
                                      "self.peak = self.device_module.max_memory_allocated()")
                    l2, _ = find_line(scr["text"], "return int(x / 2**20)")
                    ev = (f"{scr['path']}@{scr['commit']}:{l1} TorchTracemalloc peak = "
                          "max_memory_allocated(); "
                          f":{l2} b2mb = int(x / 2**20) (MiB, truncated); printed total = peaked + "
                          "begin")
                mm = re.search(r"examples/conditional_generation/\S+?\.py", gtxt)
                for off, bl in enumerate(blk[3].splitlines(), start=blk[1] + 1):
                    m = re.match(
                        r"^GPU Total Peak Memory consumed during the (train|eval) \(max\): "
                        r"(\d+)\s*$", bl)
                    if not m:
                        continue
                    phase, val = m.group(1), m.group(2)
                    vb = value_bytes(val, "MiB")
                    out.append(
                        _row(
                            base, locator=f"line {off}", column=None, quote=bl, value=val,
                            unit="MiB", value_bytes=vb, statistic="allocated", is_peak=True,
                            aggregation=
                            f"torch max_memory_allocated() during the {phase} loop of one epoch "
                            "(TorchTracemalloc)", statistic_evidence=ev or
                            "TorchTracemalloc in the example script", outcome="ok",
                            outcome_evidence=None, card_memory_bytes=None, gpu_model=None,
                            gpu_model_evidence="not stated", gpu_count=1, stack={
                                "trainer": "custom_loop", "distributed": "deepspeed",
                                "zero_stage": "3", "offload_optimizer_device": "cpu",
                                "offload_param_device": "cpu",
                                "evidence": f"{path}@{commit}: section '{title}' accelerate config "
                                "(zero_stage 3, cpu offload, num_processes 1) and "
                                "accelerator.backward loop"
                            }, run={
                                "model": "facebook/bart-large"
                                if scr and "facebook/bart-large" in scr["text"] else None,
                                "method": "lora", "peft_method": "lora", "lora_rank": 8,
                                "lora_alpha": 32, "lora_dropout": 0.1, "quant": "none",
                                "per_device_batch_size": (8 if scr and re.search(
                                    r"^\s*batch_size = 8", scr["text"], re.M) else None),
                                "seq_len": None, "num_gpus": 1, "phase": phase,
                                "dataset": "ought/raft twitter_complaints",
                                "example_script": mm.group(0) if mm else None
                            }, assumptions=[
                                "model/batch size: read from the example script at "
                                f"{scr['path']}@{scr['commit']} (doc does not say which script "
                                "version produced the log)" if scr else "model not stated",
                                "lora_rank=8, lora_alpha=32, lora_dropout=0.1: LoraConfig shown in "
                                "the same doc section",
                                "num_gpus=1: accelerate config in the section has num_processes: 1"
                            ], caveats=[
                                "seq2seq model (BART), not a decoder LLM", "GPU not stated",
                                "ZeRO-3 with CPU offload of params and optimizer",
                                f"{phase} phase peak of a single example log",
                                "b2mb truncates to whole MiB"
                            ],
                            measurement_key=json.dumps({"src": SOURCE, "path": path, "quote": bl},
                                                       sort_keys=True), doc_section=title))
    elif path.endswith("README.md"):
        # markdown tables whose cells look like "47.14GB GPU / 2.96GB CPU" or "OOM GPU"
        i = 0
        while i < len(lines):
            if lines[i].lstrip().startswith("|") and i + 1 < len(lines) and re.match(
                    r"^\s*\|\s*-+", lines[i + 1]):
                hdr_ln = i + 1
                header = [c.strip() for c in lines[i].strip().strip("|").split("|")]
                j = i + 2
                ctx_txt = "\n".join(lines[max(0, i - 4):i])
                mg = re.search(r"with an? (A100 80GB) GPU", ctx_txt) or re.search(
                    r"on an? (A100 80GB) GPU", ctx_txt)
                gline = None
                if mg:
                    gline, _ = find_line(text, mg.group(0))
                while j < len(lines) and lines[j].lstrip().startswith("|"):
                    cells = [c.strip() for c in lines[j].strip().strip("|").split("|")]
                    model_cell = cells[0]
                    mid = re.match(r"^(\S+)", model_cell).group(1) if model_cell else None
                    for ci in range(1, min(len(cells), len(header))):
                        cell = cells[ci]
                        col = header[ci]
                        m = re.match(r"^(\d+(?:\.\d+)?)GB GPU\s*/\s*(\d+(?:\.\d+)?)GB CPU$", cell)
                        oom = re.match(r"^OOM GPU$", cell)
                        if not (m or oom):
                            continue
                        colname = col.lower()
                        method = "full" if "full" in colname else "lora"
                        dist = "deepspeed" if "deepspeed" in colname else "none"
                        run = {
                            "model": mid, "method": method,
                            "peft_method": None if method == "full" else "lora", "quant": "none",
                            "gradient_checkpointing": True if "gradient checkpointing" in colname
                            else None, "cpu_offload": True if "cpu offloading" in colname else None,
                            "num_gpus": 1, "table_column": col,
                            "dataset": "ought/raft twitter_complaints" if "twitter_complaints"
                            in ctx_txt else None, "per_device_batch_size": None, "seq_len": None,
                            "torch_dtype": None, "optimizer": None
                        }
                        stack = {
                            "trainer": "unknown", "distributed": dist,
                            "evidence": f"{path}@{commit}:{hdr_ln} table header column '{col}'"
                        }
                        if dist == "deepspeed":
                            stack["offload"] = "cpu"
                        cav = [
                            "statistic not stated in README; no batch size, sequence length or "
                            "precision given",
                            "unit printed as 'GB', read as 10^9 bytes (SI); read as GiB (2^30) it "
                            "would be 7.4% higher",
                            "README table, probably measured years before this commit; versions "
                            "unknown"
                        ]
                        if "stable-diffusion" in (mid or ""):
                            cav.append(
                                "diffusion model (Stable Diffusion UNet / DreamBooth), not an LLM")
                        if mid and any(x in mid for x in ("T0_3B", "mt0")):
                            cav.append("encoder-decoder (T5-family) model, not a decoder-only LLM")
                        ass = [
                            "gpu=A100 80GB, gpu_count=1: sentence above the table "
                            f"({path}@{commit}:{gline})" if gline else "gpu not stated",
                            f"method/distributed: from table column header '{col}'"
                        ]
                        if m:
                            val = m.group(1)
                            vb, ex = value_bytes(val, "GB"), is_exact_bytes(val, "GB")
                            if not ex:
                                cav = cav + ["value_bytes rounded to the nearest byte"]
                            out.append(
                                _row(
                                    base, locator=f"line {j + 1}, column '{col}'", column=col,
                                    quote=lines[j], value=val, unit="GB", value_bytes=vb,
                                    statistic="unknown", is_peak=True, aggregation=
                                    "GPU memory for a training run as tabulated (CPU memory in the "
                                    f"same cell: {m.group(2)} GB)", statistic_evidence=
                                    f"{path}@{commit}:{j + 1}: table cell '{cell}'; measurement "
                                    "method not stated", outcome="ok", outcome_evidence=None,
                                    card_memory_bytes=80 * GIB if mg else None,
                                    gpu_model=mg.group(1) if mg else None,
                                    gpu_model_evidence=f"{path}@{commit}:{gline}"
                                    if gline else None, gpu_count=1, stack=stack, run=run,
                                    assumptions=ass, caveats=cav, measurement_key=json.dumps(
                                        {"src": SOURCE, "path": path, "row": lines[j], "col": col},
                                        sort_keys=True), doc_section=None,
                                    table_header_quote=lines[i]))
                        else:
                            out.append(
                                _row(
                                    base, locator=f"line {j + 1}, column '{col}'", column=col,
                                    quote=lines[j], value=None, unit=None, value_bytes=None,
                                    statistic="unknown", is_peak=True, aggregation=None,
                                    statistic_evidence=
                                    f"{path}@{commit}:{j + 1}: table cell 'OOM GPU'", outcome="oom",
                                    outcome_evidence=
                                    f"table cell reads 'OOM GPU' ({path}@{commit}:{j + 1})",
                                    card_memory_bytes=80 * GIB if mg else None,
                                    gpu_model=mg.group(1) if mg else None,
                                    gpu_model_evidence=f"{path}@{commit}:{gline}" if gline else
                                    None, gpu_count=1, stack=stack, run=run, assumptions=ass,
                                    caveats=cav + ["censored: peak above the 80GB card, no value"],
                                    measurement_key=json.dumps(
                                        {"src": SOURCE, "path": path, "row": lines[j], "col": col},
                                        sort_keys=True), doc_section=None,
                                    table_header_quote=lines[i]))
                    j += 1
                i = j
            else:
                i += 1
    return out


TRACEMALLOC_SCRIPT = ("examples/conditional_generation/"
                      "peft_lora_seq2seq_accelerate_ds_zero3_offload.py")


def build_context(sources, version):
    """The example script whose TorchTracemalloc log deepspeed.md quotes, at the same commit."""
    repo = sources.repository(REPOSITORY)
    text = repo.read(version["commit"], TRACEMALLOC_SCRIPT)
    script = None if text is None else {
        "path": TRACEMALLOC_SCRIPT, "commit": version["commit"], "text": text
    }
    return {"tracemalloc_script": script}
