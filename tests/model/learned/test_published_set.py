"""The published table becomes training rows: each run trains the targets it measured, censored
runs keep their card, and what cannot train is left out and counted. The table written here is
a made-up miniature in the published columns (tmp_path only), not a measurement."""

from __future__ import annotations

import csv
import json

import numpy as np

from vram_ml.model.learned.training_set import load_training_set
from vram_ml.spec import build_spec

GIB = 1024**3
COLUMNS = ("row_id", "measurement_key", "source", "statistic", "is_peak", "outcome", "value_bytes",
           "card_memory_bytes", "spec", "spec_id", "mapping", "unmapped_reason")
SPEC = {"model": "Qwen/Qwen2.5-0.5B", "method": "lora", "batch_size": 2, "seq_len": 512,
        "precision": "bf16"}


def _row(key: str, statistic: str, value: float | None, outcome: str = "ok", peak: bool = True,
         mapping: str = "mapped", source: str = "bench-a") -> dict[str, str]:
    spec = build_spec(**SPEC)
    return {"row_id": f"{key}-{statistic}", "measurement_key": key, "source": source,
            "statistic": statistic, "is_peak": str(peak).lower(), "outcome": outcome,
            "value_bytes": "" if value is None else str(int(value)),
            "card_memory_bytes": str(80 * GIB), "spec": json.dumps(SPEC) if mapping == "mapped"
            else "", "spec_id": spec.spec_id if mapping == "mapped" else "", "mapping": mapping,
            "unmapped_reason": "" if mapping == "mapped" else "not in the Spec"}


def test_runs_train_the_targets_they_measured(tmp_path):
    rows = [
        _row("run1", "device", 12 * GIB), _row("run1", "allocated", 9 * GIB),
        _row("run1", "allocated", 8 * GIB, peak=False),  # memory at a stage end: not a peak
        _row("run2", "reserved", 10 * GIB, source="bench-b"),
        _row("run3", "unknown", 11 * GIB),
        _row("run4", "device", None, outcome="oom"),
        _row("run5", "device", 5 * GIB, mapping="unmapped"),
    ]
    path = tmp_path / "measurements.csv"
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS, lineterminator="\r\n")
        writer.writeheader()
        writer.writerows(rows)
    data, report = load_training_set([path])
    assert len(data) == 4 and set(data.backend) == {"published"}
    assert report.published == {"kept": 5, "unmapped": 1,
                                "not a peak (mean, percentile or end of stage)": 1}
    by_source = dict(zip(data.source, range(len(data)), strict=False))
    assert set(by_source) == {"bench-a", "bench-b"}
    assert data.measured("peak").sum() == 1 and data.measured("allocated").sum() == 1
    assert data.measured("reserved").sum() == 1
    assert np.isfinite(data.unknown_peak_bytes).sum() == 1  # evaluated, never trained on
    assert data.oom.sum() == 1 and data.device_total_bytes[data.oom][0] == 80 * GIB


def test_published_rows_are_left_out_when_only_cuda_is_allowed(tmp_path):
    path = tmp_path / "measurements.csv"
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerow(_row("run1", "device", 12 * GIB))
    data, report = load_training_set([path], allow_backends=("cuda",))
    assert len(data) == 0 and report.skipped_backend == {"published": 1}
