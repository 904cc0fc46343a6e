"""The analytical estimator on the published multi-GPU rows (DDP, DeepSpeed, FSDP), per source and
statistic: median and p90 absolute percentage error of the per-GPU figure that statistic measures.

  device     nvidia-smi per GPU (fms-acceleration: the mean over GPUs of each GPU's peak)
             -> peak_vram_bytes
  allocated  torch max_memory_allocated (rank 0)            -> peak_allocated_bytes
  reserved   torch max_memory_reserved                      -> peak_reserved_bytes
  unknown    compared with peak_vram_bytes
Out-of-memory rows: how many the estimate puts above their card (it should: they did not fit).
These are held-in sources (/work/shared/PUBLISHED_SOURCES.md lists them).

    .venv/bin/python scripts/eval_published_multigpu.py [datasets/published/measurements.parquet]
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict

import numpy as np
import pandas as pd

from vram_ml.model.formulas.analytical import AnalyticalEstimator
from vram_ml.spec import build_spec

FIGURE = {"device": "peak_vram_bytes", "allocated": "peak_allocated_bytes",
          "reserved": "peak_reserved_bytes", "unknown": "peak_vram_bytes"}


def main(path: str) -> None:
    table = pd.read_parquet(path)
    gpus = pd.to_numeric(table.gpu_count, errors="coerce").fillna(1)
    rows = table[((gpus > 1) | table.distributed.isin(["deepspeed", "fsdp"]))
                 & (table.mapping == "mapped") & (table.is_peak.astype(str).str.lower() == "true")]
    estimator, errors, censored = AnalyticalEstimator(), defaultdict(list), defaultdict(list)
    for _, row in rows.iterrows():
        spec = build_spec(**json.loads(row["spec"]))
        estimate = estimator.estimate(spec)
        kind = spec.distributed if spec.distributed != "fsdp" else f"fsdp{spec.fsdp_version}"
        key = (row["source"], kind, row["statistic"])
        if row["outcome"] == "ok" and float(row["value_bytes"] or 0) > 0:
            measured = float(row["value_bytes"])
            errors[key].append(abs(getattr(estimate, FIGURE[row["statistic"]]) - measured)
                               / measured)
        elif row["outcome"] == "oom" and float(row["card_memory_bytes"] or 0) > 0:
            censored[(row["source"], kind)].append(
                estimate.peak_vram_bytes > float(row["card_memory_bytes"]))
    print("| source | distributed | statistic | rows | median APE | p90 APE |")
    print("|---|---|---|---|---|---|")
    for (source, kind, statistic), values in sorted(errors.items()):
        v = np.array(values) * 100
        print(f"| {source} | {kind} | {statistic} | {len(v)} | {np.median(v):.1f}% | "
              f"{np.percentile(v, 90):.1f}% |")
    print("\n| source | distributed | OOM rows | estimated above the card |")
    print("|---|---|---|---|")
    for (source, kind), flags in sorted(censored.items()):
        print(f"| {source} | {kind} | {len(flags)} | {sum(flags)} |")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "datasets/published/measurements.parquet")
