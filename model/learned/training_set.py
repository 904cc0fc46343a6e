"""Read samples for training and evaluation: only real GPU measurements (`backend=cuda`).

Sources: dataset files (CSV, Parquet, JSONL; a folder means every such file in it) in the flat row
schema of `vram_ml.sample`, or an MLflow tracking store (one run per sample: params = spec,
metrics = measurement, tags = provenance). Every row is validated by `row_to_sample`; rows from
another backend are counted and left out, never used: `cpu` and `simulated` samples are not
measurements of a GPU.

The result is a `TrainingSet`: specs plus measured arrays. Tests and the notebook build one
directly from synthetic data (synthetic.py), which therefore never passes through a file.

Example:
    training_set, report = load_training_set(["datasets/"])
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vram_ml.dataset_files import DATA_SUFFIXES, read_rows
from vram_ml.sample import SampleError, row_to_sample
from vram_ml.spec import Spec

SIMULATE_COLUMN = "simulate_peak_vram_bytes"  # optional: the simulator's answer, precomputed
DEFAULT_EXPERIMENT = "vram-ml-samples"


@dataclass
class TrainingSet:
    """Specs and what was measured for them; NaN where a value is unknown."""

    specs: list[Spec]
    status: np.ndarray  # "ok" | "oom"
    peak_vram_bytes: np.ndarray  # float; NaN for OOM
    peak_allocated_bytes: np.ndarray
    peak_reserved_bytes: np.ndarray
    device_total_bytes: np.ndarray  # the card's memory; an OOM's peak exceeded it
    backend: np.ndarray  # where the numbers came from: "cuda", or "synthetic" in tests
    simulate_peak_vram_bytes: np.ndarray = field(default=None)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        if self.simulate_peak_vram_bytes is None:
            self.simulate_peak_vram_bytes = np.full(len(self.specs), np.nan)

    def __len__(self) -> int:
        return len(self.specs)

    @property
    def ok(self) -> np.ndarray:
        return self.status == "ok"

    @property
    def oom(self) -> np.ndarray:
        return (self.status == "oom") & np.isfinite(self.device_total_bytes)

    @property
    def families(self) -> np.ndarray:
        return np.array([spec.resolved_model.family for spec in self.specs])

    @property
    def total_params(self) -> np.ndarray:
        return np.array([spec.resolved_model.shape.total_params for spec in self.specs], float)

    @property
    def is_synthetic(self) -> bool:
        return bool(np.any(self.backend == "synthetic"))

    def subset(self, index: Any) -> TrainingSet:
        index = np.asarray(index)
        positions = np.flatnonzero(index) if index.dtype == bool else index
        return TrainingSet(
            specs=[self.specs[i] for i in positions],
            **{name: getattr(self, name)[positions] for name in _ARRAYS},
        )

    def data_hash(self) -> str:
        """A hash of exactly what the model learns from, independent of row order."""
        rows = sorted(
            json.dumps([spec.spec_id, *(_number(getattr(self, name)[i]) for name in _ARRAYS)])
            for i, spec in enumerate(self.specs)
        )
        return hashlib.sha256("\n".join(rows).encode()).hexdigest()[:16]


_ARRAYS = (
    "status",
    "peak_vram_bytes",
    "peak_allocated_bytes",
    "peak_reserved_bytes",
    "device_total_bytes",
    "backend",
    "simulate_peak_vram_bytes",
)


@dataclass
class LoadReport:
    """What was read, kept and left out, so the user sees why a dataset is smaller than a file."""

    sources: list[str] = field(default_factory=list)
    rows: int = 0
    kept: int = 0
    skipped_backend: Counter = field(default_factory=Counter)
    skipped_status: Counter = field(default_factory=Counter)
    duplicates: int = 0
    invalid: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "sources": self.sources,
            "rows": self.rows,
            "kept": self.kept,
            "skipped_backend": dict(self.skipped_backend),
            "skipped_status": dict(self.skipped_status),
            "duplicates": self.duplicates,
            "invalid": self.invalid[:20],
        }


def load_training_set(
    sources: Sequence[str | Path],
    experiment: str = DEFAULT_EXPERIMENT,
    allow_backends: Iterable[str] = ("cuda",),
) -> tuple[TrainingSet, LoadReport]:
    """Read every source and keep the valid ok/oom samples of the allowed backends.

    Args:
        sources: files, folders, or MLflow tracking URIs (anything with `://`).
        experiment: the MLflow experiment that holds one run per sample.
        allow_backends: backends to keep; only `cuda` is a measurement of a GPU.

    Raises:
        FileNotFoundError: a source path does not exist.
    """
    allowed, report = set(allow_backends), LoadReport()
    seen: set[tuple[str, str]] = set()
    kept: list[tuple[Any, dict[str, Any]]] = []
    for source, row in _rows(sources, experiment, report):
        report.rows += 1
        if isinstance(row, str):  # a line of a file that is not a row (bad JSON, broken CSV)
            report.invalid.append(f"{source}: {row}")
            continue
        backend = str(row.get("backend") or "")
        if backend not in allowed:
            report.skipped_backend[backend or "missing"] += 1
            continue
        try:
            sample = row_to_sample(row)
        except SampleError as error:
            report.invalid.append(f"{source}: {error}")
            continue
        if sample.measurement.status not in ("ok", "oom"):
            report.skipped_status[sample.measurement.status] += 1
            continue
        key = (sample.sample_key, sample.provenance.created_at)
        if key in seen:
            report.duplicates += 1
            continue
        seen.add(key)
        kept.append((sample, row))
    report.kept = len(kept)
    return _training_set(kept), report


def _training_set(kept: list[tuple[Any, dict[str, Any]]]) -> TrainingSet:
    def column(get: Any) -> np.ndarray:
        return np.array([_float(get(sample, row)) for sample, row in kept], dtype=float)

    return TrainingSet(
        specs=[sample.spec for sample, _ in kept],
        status=np.array([sample.measurement.status for sample, _ in kept], dtype="<U3"),
        peak_vram_bytes=column(lambda s, r: s.measurement.peak_vram_bytes),
        peak_allocated_bytes=column(lambda s, r: s.measurement.peak_allocated_bytes),
        peak_reserved_bytes=column(lambda s, r: s.measurement.peak_reserved_bytes),
        device_total_bytes=column(lambda s, r: s.provenance.device_total_bytes),
        backend=np.array([sample.provenance.backend for sample, _ in kept], dtype=object),
        simulate_peak_vram_bytes=column(lambda s, r: r.get(SIMULATE_COLUMN)),
    )


def _rows(
    sources: Sequence[str | Path], experiment: str, report: LoadReport
) -> Iterator[tuple[str, dict[str, Any]]]:
    for source in sources:
        text = str(source)
        if "://" in text:
            report.sources.append(f"{text} (experiment {experiment})")
            yield from ((text, row) for row in mlflow_rows(text, experiment))
            continue
        path = Path(text)
        if not path.exists():
            raise FileNotFoundError(f"data: no such file or folder: {text}")
        files = (
            sorted(p for p in path.rglob("*") if p.suffix in DATA_SUFFIXES and p.is_file())
            if path.is_dir()
            else [path]
        )
        for file in files:
            report.sources.append(str(file))
            yield from ((str(file), row) for row in file_rows(file))


def file_rows(path: Path) -> list[dict[str, Any] | str]:
    """The flat rows of one dataset file (CSV, Parquet or JSONL), read by the trunk's reader
    (`vram_ml.dataset_files`: regular files only, a size limit); a line that is not a row comes
    back as a one-line string saying why (counted as invalid).

    Raises:
        ValueError: an unknown file type, or an unreadable file (`DataFileError`, one line).
    """
    if path.suffix not in DATA_SUFFIXES:
        raise ValueError(f"data: {path} is not .csv, .parquet or .jsonl")
    return read_rows(path)


def mlflow_rows(tracking_uri: str, experiment: str) -> Iterator[dict[str, Any]]:
    """One flat row per finished MLflow run: params (spec), metrics (measurement), tags
    (provenance, status, message), as the agent logs them.

    Raises:
        ValueError: the server cannot be reached, or MLflow fails (one line).
    """
    from vram_ml.model.learned.mlflow_runs import mlflow_failures

    with mlflow_failures(tracking_uri):
        from mlflow.tracking import MlflowClient

        client = MlflowClient(tracking_uri=tracking_uri)
        found = client.get_experiment_by_name(experiment)
    if found is None:
        return
    token = None
    while True:
        with mlflow_failures(tracking_uri):
            page = client.search_runs([found.experiment_id], max_results=1000, page_token=token)
        for run in page:
            if run.info.status == "FINISHED":
                yield {**run.data.tags, **run.data.params, **run.data.metrics}
        token = page.token
        if not token:
            return


def _float(value: Any) -> float:
    if value is None or value == "":
        return float("nan")
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")


def _number(value: Any) -> Any:
    if isinstance(value, float | np.floating):
        return None if np.isnan(value) else int(value)
    return str(value)
