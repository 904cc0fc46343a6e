"""The dataset files: export (store -> datasets/), validate, import (a GPU machine's samples ->
store and datasets/).

Files are CSV or Parquet (by suffix) with the columns of `vram_ml.sample.COLUMNS`, documented in
the data card written beside them (agent/datacard.py); JSONL (one row per line, the spool's
format) is read too. Writing merges with what the file already holds, deduplicated by
`sample_key`, so an export from one machine never drops samples committed from another.
Only `backend=cuda` rows are written unless other backends are asked for explicitly.
"""

from __future__ import annotations

import csv
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vram_ml.agent.datacard import write_datacard
from vram_ml.agent.store import SampleStore
from vram_ml.dataset_files import DataFileError
from vram_ml.dataset_files import read_rows as read_data_file
from vram_ml.sample import COLUMNS, Sample, SampleError, peak_vram, row_to_sample, sample_to_row

DEFAULT_OUTPUT = Path("datasets/samples.csv")
TRAINING_BACKENDS = ("cuda",)
REQUIRED_CUDA_PROVENANCE = ("device_name", "device_total_bytes", "driver_version", "cuda_version",
                            "torch_version", "installed_transformers_version",
                            "installed_peft_version")


class DatasetError(ValueError):
    """An unreadable or invalid dataset file; one line."""


@dataclass
class Validation:
    """What `validate` found: valid samples, and one line per problem."""

    rows: int = 0
    samples: list[Sample] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def problem(self, number: int, text: object) -> None:
        self.problems.append(f"row {number}: {one_line(str(text))}")


    def counts(self) -> dict[str, dict[str, int]]:
        return {"backend": dict(Counter(s.provenance.backend for s in self.samples)),
                "status": dict(Counter(s.measurement.status for s in self.samples))}


def one_line(text: str) -> str:
    """`text` with line breaks and other control characters escaped: one printable line."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


# --- reading and writing ----------------------------------------------------------------------


def read_rows(path: Path) -> list[dict[str, Any] | str]:
    """Raw rows of a CSV, JSONL or Parquet file (the trunk's reader, `vram_ml.dataset_files`); a
    line that cannot be read as a row comes back as a one-line string saying why (validate
    rejects it).

    Raises:
        DatasetError: missing, not a regular file, too large, or unreadable.
    """
    try:
        return read_data_file(path)
    except DataFileError as error:
        raise DatasetError(str(error)) from None


def validate_rows(rows: list[dict[str, Any] | str]) -> Validation:
    """Check every row: schema, spec, consistency of the peaks, provenance, duplicates."""
    result = Validation(rows=len(rows))
    tables = [row for row in rows if isinstance(row, dict)]
    present = {str(key) for row in tables for key in row} if tables else set(COLUMNS)
    missing = [c for c in COLUMNS if c not in present]
    if missing:
        result.warnings.append(f"columns missing (read as empty): {', '.join(missing)}")
    unknown = sorted(present - set(COLUMNS))
    if unknown:
        result.warnings.append(one_line(f"unknown columns (ignored): {', '.join(unknown)}")[:300])
    seen: set[str] = set()
    for number, row in enumerate(rows, 1):
        if not isinstance(row, dict):
            result.problem(number, row)
            continue
        try:
            sample = row_to_sample(row)
        except SampleError as error:
            result.problem(number, error)
            continue
        problem = check_sample(sample)
        if not problem and sample.sample_key in seen:
            problem = f"duplicate of an earlier row (sample_key {sample.sample_key})"
        if problem:
            result.problem(number, problem)
            continue
        seen.add(sample.sample_key)
        result.samples.append(sample)
    return result


def check_sample(sample: Sample) -> str:
    """The first inconsistency of one sample, or ""."""
    m, p = sample.measurement, sample.provenance
    if m.status == "ok":
        if m.peak_reserved_bytes is None or m.cuda_context_bytes is None:
            return "ok sample without peak_reserved_bytes / cuda_context_bytes"
        if m.peak_vram_bytes != peak_vram(m.cuda_context_bytes, m.peak_reserved_bytes,
                                          m.paged_bytes):
            return "peak_vram_bytes != cuda_context_bytes + peak_reserved_bytes + paged_bytes"
        if m.peak_allocated_bytes is not None and m.peak_allocated_bytes > m.peak_reserved_bytes:
            return "peak_allocated_bytes > peak_reserved_bytes"
        if p.device_total_bytes and m.peak_vram_bytes > p.device_total_bytes:
            return "peak_vram_bytes exceeds the device's memory"
    if m.status != "ok" and not m.message:
        return f"{m.status} sample without a message"
    if p.backend == "cuda":
        absent = [name for name in REQUIRED_CUDA_PROVENANCE if not getattr(p, name)]
        if absent:
            return f"cuda sample without provenance: {', '.join(absent)}"
    return ""


def write_samples(samples: list[Sample], path: Path) -> None:
    """Write samples (sorted by created_at, sample_key) as CSV or Parquet, atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = [sample_to_row(s) for s in sorted(samples, key=lambda s: (s.provenance.created_at,
                                                                      s.sample_key))]
    temporary = path.with_name(path.name + ".tmp")
    if path.suffix == ".parquet":
        import pandas as pd

        frame = pd.DataFrame(rows, columns=list(COLUMNS))
        for column in COLUMNS:
            if column.endswith("_bytes") or column in ("steps", "quant_bits", "lora_alpha"):
                frame[column] = frame[column].astype("Int64")
        frame.to_parquet(temporary, index=False)
    else:
        with open(temporary, "w", newline="", encoding="utf-8") as handle:
            # RFC 4180 line ends: csv then quotes a value holding "\r" (a host name, a message),
            # which with "\n" alone it writes bare, and a bare "\r" ends the row on reading
            writer = csv.DictWriter(handle, fieldnames=list(COLUMNS), lineterminator="\r\n")
            writer.writeheader()
            for row in rows:
                writer.writerow({key: "" if value is None else value for key, value in row.items()})
    os.replace(temporary, path)


def merge(*groups: list[Sample]) -> list[Sample]:
    """Union by sample_key (first wins; a later copy only fills an empty mlflow_run_id)."""
    merged: dict[str, Sample] = {}
    for group in groups:
        for sample in group:
            kept = merged.setdefault(sample.sample_key, sample)
            if not kept.provenance.mlflow_run_id and sample.provenance.mlflow_run_id:
                kept.provenance.mlflow_run_id = sample.provenance.mlflow_run_id
    return list(merged.values())


# --- the three commands -----------------------------------------------------------------------


def validate_file(path: Path) -> Validation:
    """`vram-ml dataset validate`: every row of a samples file checked.

    Raises:
        DatasetError: unreadable, or empty (not even a header: nothing says it is a dataset).
    """
    rows = read_rows(path)
    if not rows and Path(path).suffix != ".parquet" and not Path(path).read_bytes().strip():
        raise DatasetError(f"{path}: empty file (no header, no rows)")
    return validate_rows(rows)


def store_samples(store: SampleStore, source: str = "mlflow") -> list[Sample]:
    """The store's samples: from MLflow (all machines that log there) merged with the local spool,
    or the spool alone.

    Raises:
        TrackingUnavailable: source "mlflow" and MLflow does not answer.
    """
    from vram_ml.agent.tracking import run_to_row

    spooled = store.spool.samples()
    if source == "spool" or store.tracking is None:
        return spooled
    tracked = []
    for run in store.tracking.finished_runs():
        try:
            tracked.append(row_to_sample(run_to_row(run)))
        except SampleError:
            continue  # a run that is not a valid sample (edited by hand): not data
    return merge(tracked, spooled)


def update_file(output: Path, samples: list[Sample], backends: tuple[str, ...],
                replace: bool = False) -> tuple[list[Sample], int]:
    """Merge `samples` of the chosen backends into `output` (+ its data card).

    Returns:
        (every sample now in the file, how many were new).

    Raises:
        DatasetError: `output` exists and is invalid (never overwritten unless `replace`).
    """
    return _write_merged(output, existing_samples(output, replace), samples, backends)


def existing_samples(output: Path, replace: bool = False) -> list[Sample]:
    """The samples `output` holds now ([] if absent or `replace`).

    Raises:
        DatasetError: `output` exists and is invalid (never overwritten unless `replace`).
    """
    if not Path(output).exists() or replace:
        return []
    check = validate_file(output)
    if not check.ok:
        raise DatasetError(f"{output}: {check.problems[0]} (fix it or pass --replace)")
    return check.samples


def _write_merged(output: Path, existing: list[Sample], samples: list[Sample],
                  backends: tuple[str, ...]) -> tuple[list[Sample], int]:
    chosen = [s for s in samples if s.provenance.backend in backends]
    merged = merge(existing, chosen)
    write_samples(merged, output)
    write_datacard(merged, output)
    return merged, len(merged) - len(existing)


def export_dataset(store: SampleStore, output: Path = DEFAULT_OUTPUT, source: str = "mlflow",
                   backends: tuple[str, ...] = TRAINING_BACKENDS, replace: bool = False
                   ) -> dict[str, Any]:
    """`vram-ml dataset export`: the store's samples -> `output` (CSV/Parquet) + DATACARD.md."""
    samples = store_samples(store, source)
    merged, new = update_file(output, samples, backends, replace)
    return {"output": str(output), "rows": len(merged), "new": new, "in_store": len(samples),
            "left_out_backends": dict(Counter(s.provenance.backend for s in samples
                                              if s.provenance.backend not in backends)),
            "datacard": str(Path(output).parent / "DATACARD.md")}


def import_dataset(path: Path, store: SampleStore, output: Path = DEFAULT_OUTPUT,
                   backends: tuple[str, ...] = TRAINING_BACKENDS) -> dict[str, Any]:
    """`vram-ml dataset import`: a samples file (JSONL/CSV/Parquet) from a GPU machine ->
    validated -> the store (spool, then MLflow) -> merged into `output`.

    Every valid row is stored, each bad one rejected with one line; the valid ones reach the spool
    in one write (all or none).

    Raises:
        DatasetError: unreadable file, or no valid row at all.
        SpoolError: the store cannot be written (nothing of the file is stored).
    """
    check = validate_file(path)
    if check.rows and not check.samples:
        raise DatasetError(f"{path}: no valid sample ({check.problems[0]})")
    existing = existing_samples(output)  # refuse an invalid output before storing anything
    recorded = store.record_many(check.samples)
    merged, new = _write_merged(output, existing, check.samples, backends)
    return {"file": str(path), "rows": check.rows, "valid": len(check.samples),
            "rejected": check.problems, "new_in_store": sum(r.new for r in recorded),
            "logged_to_mlflow": sum(bool(r.run_id) for r in recorded),
            "tracking_error": store.tracking_error, "output": str(output),
            "rows_in_output": len(merged), "new_in_output": new}


# --- repeatability (scripts/device_session.sh) ------------------------------------------------


def repeat_plan(samples: list[Sample], count: int) -> list[dict[str, Any]]:
    """Spec dicts of the first `count` ok samples: measured again, in fresh processes."""
    ok = [s for s in samples if s.measurement.status == "ok"][:count]
    return [s.spec.model_dump(mode="json") for s in ok]


def repeatability(first: list[Sample], second: list[Sample]) -> list[dict[str, Any]]:
    """Per spec measured in both: the two peaks and their relative difference."""
    again = {s.spec_id: s for s in second if s.measurement.status == "ok"}
    rows = []
    for sample in first:
        other = again.get(sample.spec_id)
        if other is None or sample.measurement.status != "ok":
            continue
        a, b = sample.measurement.peak_vram_bytes, other.measurement.peak_vram_bytes
        rows.append({"spec_id": sample.spec_id, "peak_vram_bytes": a, "repeat_peak_vram_bytes": b,
                     "relative_difference": abs(a - b) / max(a, b, 1)})
    return rows
