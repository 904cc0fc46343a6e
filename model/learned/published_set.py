"""The published table (datasets/published/measurements.parquet) as training and evaluation rows.

One table row is one published number; one `measurement_key` is one run, which may have
published several numbers (fms-acceleration: the nvidia-smi peak and torch's allocated peak of
the same run). A run becomes one TrainingSet row with each target it measured filled in
(targets.py): `device` -> peak, `allocated` -> allocated, `reserved` -> reserved; a number whose
statistic is `unknown` trains nothing and is kept for evaluation against `peak`. Out-of-memory
runs are censored rows (their peak exceeded `card_memory_bytes`); `fit` labels say a run fitted
its card, with no number.

Left out, and counted by reason: rows the import could not map to a Spec (`mapping: unmapped`),
numbers that are not a peak (`is_peak: false`: a mean, a percentile, memory at a stage end), runs
that failed for another reason than memory, and rows whose Spec no longer builds.
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

import numpy as np

from vram_ml.model.learned.targets import MEASURED_FIELD, STATISTIC_TARGET

# the columns that make a file a published table (vram_ml/published/schema.py has them all)
PUBLISHED_MARKERS = ("row_id", "measurement_key", "statistic", "is_peak", "mapping")


def is_published_table(rows: list[dict[str, Any] | str]) -> bool:
    first = next((row for row in rows if isinstance(row, dict)), None)
    return first is not None and all(column in first for column in PUBLISHED_MARKERS)


def published_training_set(rows: list[dict[str, Any] | str]) -> tuple[Any, Counter]:
    """The runs of a published table as a TrainingSet, and how many rows were kept or why not."""
    from vram_ml.model.learned.training_set import TrainingSet
    from vram_ml.spec import SpecError, build_spec, renamed_fields

    counts: Counter = Counter()
    runs: dict[str, dict[str, Any]] = {}
    for row in rows:
        reason = _left_out(row)
        if reason:
            counts[reason] += 1
            continue
        run = runs.setdefault(row["measurement_key"], {"rows": []})
        run["rows"].append(row)
    specs, records = [], []
    for key, run in runs.items():
        first = run["rows"][0]
        try:
            spec = build_spec(**renamed_fields(json.loads(first["spec"])))
        except (SpecError, ValueError, TypeError) as error:
            counts[f"spec no longer builds ({str(error)[:80]})"] += len(run["rows"])
            continue
        specs.append(spec)
        records.append(_record(run["rows"]))
        counts["kept"] += len(run["rows"])
    n = len(specs)

    def column(name: str) -> np.ndarray:
        return np.array([record.get(name, np.nan) for record in records], dtype=float)

    data = TrainingSet(
        specs=specs,
        status=np.array([record["status"] for record in records], dtype="<U3").reshape(n),
        peak_vram_bytes=column(MEASURED_FIELD["peak"]),
        peak_allocated_bytes=column(MEASURED_FIELD["allocated"]),
        peak_reserved_bytes=column(MEASURED_FIELD["reserved"]),
        device_total_bytes=column("device_total_bytes"),
        backend=np.full(n, "published", dtype=object),
        source=np.array([record["source"] for record in records], dtype=object).reshape(n),
        unknown_peak_bytes=column("unknown_peak_bytes"),
    )
    return data, counts


def _left_out(row: dict[str, Any] | str) -> str:
    if isinstance(row, str):
        return f"unreadable line ({row})"
    if row.get("mapping") != "mapped":
        return "unmapped"
    if str(row.get("is_peak")).lower() != "true":
        return "not a peak (mean, percentile or end of stage)"
    if row.get("outcome") not in ("ok", "oom", "fit"):
        return f"outcome {row.get('outcome')!r}"
    if row.get("outcome") != "ok":
        return "" if _number(row.get("card_memory_bytes")) > 0 else "censored without a card size"
    if not _number(row.get("value_bytes")) > 0:
        return "no number"
    return ""


def _record(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """One run: every target its rows measured, its outcome, its card, its source."""
    first = rows[0]
    outcomes = {row["outcome"] for row in rows}
    status = "oom" if "oom" in outcomes else "fit" if outcomes == {"fit"} else "ok"
    record: dict[str, Any] = {"status": status, "source": first["source"],
                              "device_total_bytes": _number(first.get("card_memory_bytes"))}
    if status != "ok":
        return record
    for row in rows:
        value = _number(row.get("value_bytes"))
        target = STATISTIC_TARGET.get(row.get("statistic", ""))
        if target is None:
            record["unknown_peak_bytes"] = value
        else:
            record[MEASURED_FIELD[target]] = value
    return record


def _number(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")
