"""AnswerDotAI/fsdp_qlora: benchmarks_03_2024.md ("Peak Memory (GiB)" tables, one 'peak allocated'
sentence,
the hardware-recommendation table as fit labels) and benchmarking/*_gpu_benchmarking.sh (max-batch
fit labels).

train.py measures torch.cuda.max_memory_reserved / max_memory_allocated(local_rank) over the first
epoch
after torch.cuda.reset_peak_memory_stats, and logs only rank 0; the doc's tables report the
reserved peak.
"""

from __future__ import annotations

import re
import shlex

from vram_ml.published.parsed_row import CARD_BASIS, make_row, new_run, new_stack
from vram_ml.published.sources.fsdp_qlora_context import (  # noqa: F401 (the parser's interface)
    REPOSITORY,
    SCRIPT_TRAIN_COMMIT,
    SOURCE,
    TARGETS,
    _truthy,
    _versions,
    build_context,
)
from vram_ml.published.sources.fsdp_qlora_doc import _parse_doc
from vram_ml.published.units import card_bytes


# ---------------------------------------------------------------------------
def _classify(comment):
    c = comment or ""
    if re.search(r"OOM on cpu|SIGKIL|CPU memory", c, flags=re.I):
        return None, "host (CPU RAM) failure, not a GPU label"
    if re.search(r"theoretically|Not possible|Ignore now", c, flags=re.I):
        return None, "placeholder / not run"
    if re.search(r"can't train", c):
        return "oom", "comment says the model loads but cannot train"
    if re.search(r"\bOOM\b", c):
        return "oom", "comment says OOM"
    return "ok", "listed as the batch size found for this setting (file header: find the max bs)"


def _parse_script(text, repository, path, commit, commit_date, ctx):
    rows = []
    lines = text.splitlines()
    sd = ctx["script_defaults"]
    header = lines[0] if lines else ""
    if "small" in path:
        gpu, nom, ng = "NVIDIA RTX A5000", 24, 2
    else:
        gpu, nom, ng = "NVIDIA RTX A6000", 48, 4
    hdr_ev = f"{path}@{commit}:1: {header.strip()}"
    for i, text_line in enumerate(lines):
        if text_line.startswith("# Try with 4xA5000"):
            gpu, nom, ng = "NVIDIA RTX A5000", 24, 4
            hdr_ev = f"{path}@{commit}:{i + 1}: {text_line.strip()}"
        if not text_line.startswith("python train.py"):
            continue
        cm = []
        k = i - 1
        while k >= 0 and lines[k].startswith("#") and not lines[k].startswith("# python"):
            cm.insert(0, lines[k])
            k -= 1
        comment = " ".join(x.lstrip("# ").strip() for x in cm)
        outcome, why = _classify(comment)
        if outcome is None:
            continue
        toks = shlex.split(text_line[len("python train.py"):])
        args = {}
        for j in range(0, len(toks) - 1, 2):
            args[toks[j].lstrip("-")] = toks[j + 1]
        if args.get("batch_size") == "128":
            continue  # a placeholder for settings not probed (see the commented-out 128 lines)

        def g(key, args=args):
            return args.get(key, sd.get(key))

        tt = g("train_type")
        row = make_row(source=SOURCE, repository=repository, path=path, commit=commit,
                       commit_date=commit_date)
        row["row_key"] = f"fsdp_qlora|{path}|{text_line.strip()}"
        row["locator"] = f"{path} line {i + 1} (command" + (f", comment above: '{comment}'"
                                                            if comment else "") + ")"
        row["quote"] = ("\n".join(cm) + "\n" if cm else "") + text_line
        row["outcome"] = outcome
        row["statistic"] = "unknown"
        row["statistic_confidence"] = "none"
        row["statistic_evidence"] = ("label only (fit label from a benchmarking script; no memory "
                                     "value)")
        row.update(gpu_model=gpu, card_memory_bytes=card_bytes(nom), card_memory_basis=CARD_BASIS,
                   gpu_count=ng, per_gpu=True, per_gpu_evidence="an OOM/fit is decided per GPU")
        ddp = _truthy(g("use_ddp") or "False")
        off = _truthy(g("use_cpu_offload") or "False")
        row["stack"] = new_stack(
            trainer="custom_loop", distributed="fsdp", offload=["params:cpu"] if off else None,
            evidence=[
                f"train.py@{SCRIPT_TRAIN_COMMIT}: use_ddp -> ShardingStrategy.NO_SHARD else "
                f"FULL_SHARD"
            ], sharding_strategy="NO_SHARD (use_ddp)" if ddp else "FULL_SHARD")
        method = {"lora": "lora", "qlora": "qlora", "custom_qlora": "qlora",
                  "full": "full"}.get(tt, tt)
        prec = g("precision")
        row["run"] = new_run(
            model=g("model_name"), model_label=g("model_name"), method=method,
            quant_bits=4 if method == "qlora" else None,
            quant_method=("bitsandbytes 4-bit" +
                          (" (custom_qlora module)" if tt == "custom_qlora" else ""))
            if method == "qlora" else None,
            lora_rank=int(sd["lora_rank"]) if sd.get("lora_rank", "").isdigit() else None,
            lora_alpha=int(sd["lora_alpha"]) if sd.get("lora_alpha", "").isdigit() else None,
            lora_target=sd.get("lora_target_modules"), per_device_batch_size=int(g("batch_size")),
            gradient_accumulation_steps=1, seq_len=int(g("context_length")), seq_len_semantics=
            f"context_length (dataset default {sd.get('dataset')!r}: samples padded "
            f"to the batch's longest, truncated at context_length)", packing=False,
            gradient_checkpointing=_truthy(g("use_gradient_checkpointing")), precision=prec,
            optimizer=sd.get("optimizer"), num_gpus=ng, num_nodes=1, config_settings={
                "command": text_line.strip(), "train_type": tt, "use_ddp": ddp,
                "use_cpu_offload": off
            }, fit_semantics=("largest batch size found to fit (1 fwd-bwd step test)"
                              if outcome == "ok" else "this batch size did not fit"))
        row["assumptions"] = [
            f"defaults for unspecified arguments from train.py@{SCRIPT_TRAIN_COMMIT} (the commit "
            "the "
            f"small-GPU script header links): " +
            ", ".join(f"{kk}={sd.get(kk)}"
                      for kk in ("train_type", "use_cpu_offload", "precision", "lora_rank",
                                 "lora_alpha", "lora_target_modules", "dataset")),
            f"GPUs: {hdr_ev}", f"outcome={outcome}: {why}"
        ]
        row["caveats"] = [
            "fit labels are 1-step probes; 'ok' does not say the next batch size fails",
            "the large-GPU script does not name its train.py commit; same defaults assumed"
        ]
        if comment:
            row["caveats"].append(f"comment above the command: '{comment}'")
        v, vev = _versions(ctx)
        row["versions"], row["versions_evidence"] = v, vev
        rows.append(row)
    return rows


def parse(text, *, repository, path, commit, commit_date, context):
    if path.endswith(".sh"):
        return _parse_script(text, repository, path, commit, commit_date, context)
    return _parse_doc(text, repository, path, commit, commit_date, context)
