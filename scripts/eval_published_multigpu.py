"""The analytical estimator on the published multi-GPU rows (DDP, DeepSpeed, FSDP), per source and
statistic: median and p90 absolute percentage error (APE) of the per-GPU figure that statistic
measures, and the median signed error (estimate - measured: < 0 is an under-estimate).

  device     nvidia-smi per GPU (fms-acceleration: the mean over GPUs of each GPU's peak)
             -> peak_vram_bytes
  allocated  torch max_memory_allocated (rank 0)            -> peak_allocated_bytes
  reserved   torch max_memory_reserved                      -> peak_reserved_bytes
  unknown    compared with peak_vram_bytes
Labelled rows: out-of-memory ones should be estimated above their card, `fit` ones (fsdp_qlora's
largest batch that fits) at or below it; `peak at load` counts rows whose estimated peak is the
load-time moment (a QLoRA model held whole on each GPU before FSDP / ZeRO-3 shard it, as the HF /
LLaMA-Factory path loads it). fsdp_qlora's figures are read after
torch.cuda.reset_peak_memory_stats once the model is loaded (train.py:838, the rows' statistic
evidence), so they are compared with the training moments' peak (`analyse(training_only=True)`);
its fit labels with both (its own loader, low_memory, never holds the whole model on a GPU).
For context, the same sources' single-GPU rows (the estimator without its multi-GPU terms).
These are held-in sources (/work/shared/PUBLISHED_SOURCES.md lists them); nothing is tuned here.

    .venv/bin/python scripts/eval_published_multigpu.py [datasets/published/measurements.parquet]
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict

import numpy as np
import pandas as pd

from vram_ml.model.formulas.analytical import analyse
from vram_ml.spec import build_spec

TRAINING_LOOP_PEAK = {"fsdp_qlora"}  # sources whose peak is reset after loading the model
FIGURE = {"device": "peak_vram_bytes", "allocated": "peak_allocated_bytes",
          "reserved": "peak_reserved_bytes", "unknown": "peak_vram_bytes"}


def main(path: str) -> None:
    table = pd.read_parquet(path)
    table = table[(table.mapping == "mapped") & (table.is_peak.astype(str).str.lower() == "true")]
    specs = [build_spec(**json.loads(text)) for text in table.spec]
    multi = np.array([spec.num_gpus > 1 or spec.distributed != "none" for spec in specs])
    sources = set(table[multi].source)
    single = np.array([source in sources for source in table.source]) & ~multi
    errors, labels = _compare(table[multi], [s for s, m in zip(specs, multi, strict=True) if m])
    _errors_table("Multi-GPU rows", errors)
    print("\n| source | distributed | outcome | rows | estimated on the right side of the card "
          "| the same, training moments only | peak at load |")
    print("|---|---|---|---|---|---|---|")
    for (source, kind, outcome), flags in sorted(labels.items()):
        print(f"| {source} | {kind} | {outcome} | {len(flags)} | {sum(f[0] for f in flags)} | "
              f"{sum(f[1] for f in flags)} | {sum(f[2] for f in flags)} |")
    context, _ = _compare(table[single], [s for s, m in zip(specs, single, strict=True) if m])
    _errors_table("\nThe same sources' single-GPU rows (context)", context)


def _compare(rows: pd.DataFrame, specs: list) -> tuple[dict, dict]:
    errors, labels = defaultdict(list), defaultdict(list)
    for (_, row), spec in zip(rows.iterrows(), specs, strict=True):
        whole = analyse(spec)
        counted = analyse(spec, training_only=row["source"] in TRAINING_LOOP_PEAK)
        kind = spec.distributed if spec.distributed != "fsdp" else f"fsdp{spec.fsdp_version}"
        if spec.offload != "none":
            kind += " + offload"
        measured, card = float(row["value_bytes"] or 0), float(row["card_memory_bytes"] or 0)
        if row["outcome"] == "ok" and measured > 0:
            estimated = getattr(counted, FIGURE[row["statistic"]])
            errors[(row["source"], kind, row["statistic"])].append((estimated - measured)
                                                                   / measured)
        elif row["outcome"] in ("oom", "fit") and card > 0:
            right = [(a.peak_vram_bytes > card) == (row["outcome"] == "oom")
                     for a in (whole, counted)]
            labels[(row["source"], kind, row["outcome"])].append(
                (*right, whole.peak_moment == "load"))
    return errors, labels


def _errors_table(title: str, errors: dict) -> None:
    print(f"{title}\n\n| source | distributed | statistic | rows | median APE | p90 APE "
          "| median signed |")
    print("|---|---|---|---|---|---|---|")
    for (source, kind, statistic), values in sorted(errors.items()):
        signed = np.array(values) * 100
        ape = np.abs(signed)
        print(f"| {source} | {kind} | {statistic} | {len(ape)} | {np.median(ape):.1f}% | "
              f"{np.percentile(ape, 90):.1f}% | {np.median(signed):+.1f}% |")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "datasets/published/measurements.parquet")
