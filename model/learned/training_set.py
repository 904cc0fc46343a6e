"""Read measurements for training and evaluation: only real GPU measurements, ours (`cuda`) and
other people's (`published`).

Sources: dataset files (CSV, Parquet, JSONL; a folder means every such file in it) in the flat row
schema of `vram_ml.sample`, the published table (datasets/published/measurements.parquet, recognised
by its header, read by published_set.py), or an MLflow tracking store (one run per sample:
params = spec, metrics = measurement, tags = provenance). Every sample row is validated by
`row_to_sample`; rows from another backend are counted and left out, never used: `cpu` and
`simulated` samples are not measurements of a GPU.

The result is a `TrainingSet`: specs plus measured arrays, NaN where a row did not measure a
target (a published `allocated` row has no nvidia-smi peak). Tests and the notebook build one
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
from vram_ml.model.learned.targets import MEASURED_FIELD, MEASURED_TARGETS
from vram_ml.sample import SampleError, row_to_sample
from vram_ml.spec import Spec

SIMULATE_COLUMN = "simulate_peak_vram_bytes"  # optional: the simulator's answer, precomputed
DEFAULT_EXPERIMENT = "vram-ml-samples"
MEASURED_BACKENDS = ("cuda", "published")  # the only backends that are measurements of a GPU


@dataclass
class TrainingSet:
    """Specs and what was measured for them; NaN where a value was not measured."""

    specs: list[Spec]
    status: np.ndarray  # "ok" | "oom" (peak above the card) | "fit" (peak at most the card)
    peak_vram_bytes: np.ndarray  # float; the nvidia-smi peak (targets.py: `peak`)
    peak_allocated_bytes: np.ndarray
    peak_reserved_bytes: np.ndarray
    device_total_bytes: np.ndarray  # the card's memory; an OOM's peak exceeded it
    backend: np.ndarray  # where the numbers came from: "cuda", "published", "synthetic" (tests)
    simulate_peak_vram_bytes: np.ndarray = field(default=None)  # type: ignore[assignment]
    source: np.ndarray = field(default=None)  # type: ignore[assignment]  # "cuda" or a source id
    unknown_peak_bytes: np.ndarray = field(default=None)  # type: ignore[assignment]  # eval only

    def __post_init__(self) -> None:
        n = len(self.specs)
        if self.simulate_peak_vram_bytes is None:
            self.simulate_peak_vram_bytes = np.full(n, np.nan)
        if self.source is None:
            self.source = np.array(self.backend, dtype=object)
        if self.unknown_peak_bytes is None:
            self.unknown_peak_bytes = np.full(n, np.nan)

    def __len__(self) -> int:
        return len(self.specs)

    @property
    def ok(self) -> np.ndarray:
        return self.status == "ok"

    @property
    def oom(self) -> np.ndarray:
        return (self.status == "oom") & np.isfinite(self.device_total_bytes)

    @property
    def fit_label(self) -> np.ndarray:
        """Rows that only say the run fitted its card (no number published)."""
        return (self.status == "fit") & np.isfinite(self.device_total_bytes)

    def measured(self, target: str) -> np.ndarray:
        """Rows that measured `target` (targets.py): ok and a positive number."""
        values = getattr(self, MEASURED_FIELD[target])
        return self.ok & np.isfinite(values) & (values > 0)

    @property
    def spec_ids(self) -> np.ndarray:
        """The group of each row: samples of one spec are never split across folds."""
        return np.array([spec.spec_id for spec in self.specs], dtype=object)

    @property
    def methods(self) -> np.ndarray:
        return np.array([spec.method for spec in self.specs], dtype=object)

    @property
    def families(self) -> np.ndarray:
        return np.array([spec.resolved_model.family for spec in self.specs])

    @property
    def total_params(self) -> np.ndarray:
        return np.array([spec.resolved_model.shape.total_params for spec in self.specs], float)

    @property
    def is_synthetic(self) -> bool:
        return bool(np.any(self.backend == "synthetic"))

    def counts(self) -> dict[str, dict[str, int]]:
        """Rows per backend and per source, and measured rows per target."""
        def tally(values: np.ndarray) -> dict[str, int]:
            names, counts = np.unique(values.astype(str), return_counts=True)
            return dict(zip(names.tolist(), counts.tolist(), strict=True))

        return {
            "backends": tally(self.backend),
            "sources": tally(self.source),
            "targets": {t: int(self.measured(t).sum()) for t in MEASURED_TARGETS},
        }

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
    "source",
    "unknown_peak_bytes",
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
    published: Counter = field(default_factory=Counter)  # published rows: kept / left out, why

    def to_dict(self) -> dict[str, Any]:
        return {
            "sources": self.sources,
            "rows": self.rows,
            "kept": self.kept,
            "skipped_backend": dict(self.skipped_backend),
            "skipped_status": dict(self.skipped_status),
            "duplicates": self.duplicates,
            "invalid": self.invalid[:20],
            "published": dict(self.published),
        }


def load_training_set(
    sources: Sequence[str | Path],
    experiment: str = DEFAULT_EXPERIMENT,
    allow_backends: Iterable[str] = MEASURED_BACKENDS,
) -> tuple[TrainingSet, LoadReport]:
    """Read every source and keep the valid measurements of the allowed backends.

    Args:
        sources: files, folders, or MLflow tracking URIs (anything with `://`).
        experiment: the MLflow experiment that holds one run per sample.
        allow_backends: backends to keep; `cuda` and `published` are measurements of a GPU.

    Raises:
        FileNotFoundError: a source path does not exist.
    """
    from vram_ml.model.learned.published_set import is_published_table, published_training_set

    allowed, report = set(allow_backends), LoadReport()
    seen: set[tuple[str, str]] = set()
    kept: list[tuple[Any, dict[str, Any]]] = []
    published: list[TrainingSet] = []
    for source, rows in _row_groups(sources, experiment, report):
        if is_published_table(rows):
            report.rows += len(rows)
            if "published" in allowed:
                part, counts = published_training_set(rows)
                published.append(part)
                report.published.update(counts)
            else:
                report.skipped_backend["published"] += len(rows)
            continue
        for row in rows:
            report.rows += 1
            sample = _sample(source, row, allowed, report)
            if sample is None:
                continue
            key = (sample.sample_key, sample.provenance.created_at)
            if key in seen:
                report.duplicates += 1
                continue
            seen.add(key)
            kept.append((sample, row))
    data = concatenate([_training_set(kept), *published])
    report.kept = len(data)
    return data, report


def _sample(source: str, row: dict[str, Any] | str, allowed: set[str],
            report: LoadReport) -> Any | None:
    """The row as a Sample to keep, or None (counted in the report: why it was left out)."""
    if isinstance(row, str):  # a line of a file that is not a row (bad JSON, broken CSV)
        report.invalid.append(f"{source}: {row}")
        return None
    backend = str(row.get("backend") or "")
    if backend not in allowed:
        report.skipped_backend[backend or "missing"] += 1
        return None
    try:
        sample = row_to_sample(row)
    except SampleError as error:
        report.invalid.append(f"{source}: {error}")
        return None
    if sample.measurement.status not in ("ok", "oom"):
        report.skipped_status[sample.measurement.status] += 1
        return None
    return sample


def concatenate(parts: Sequence[TrainingSet]) -> TrainingSet:
    """One TrainingSet of the rows of every part, in order."""
    parts = [part for part in parts if len(part)] or list(parts[:1])
    return TrainingSet(
        specs=[spec for part in parts for spec in part.specs],
        **{name: np.concatenate([getattr(part, name) for part in parts]) for name in _ARRAYS},
    )


def _training_set(kept: list[tuple[Any, dict[str, Any]]]) -> TrainingSet:
    def column(get: Any) -> np.ndarray:
        return np.array([_float(get(sample, row)) for sample, row in kept], dtype=float)

    backend = np.array([sample.provenance.backend for sample, _ in kept], dtype=object)
    return TrainingSet(
        specs=[sample.spec for sample, _ in kept],
        status=np.array([sample.measurement.status for sample, _ in kept], dtype="<U3"),
        peak_vram_bytes=column(lambda s, r: s.measurement.peak_vram_bytes),
        peak_allocated_bytes=column(lambda s, r: s.measurement.peak_allocated_bytes),
        peak_reserved_bytes=column(lambda s, r: s.measurement.peak_reserved_bytes),
        device_total_bytes=column(lambda s, r: s.provenance.device_total_bytes),
        backend=backend,
        simulate_peak_vram_bytes=column(lambda s, r: r.get(SIMULATE_COLUMN)),
        source=backend.copy(),  # our own samples: the source is the backend (`cuda`)
    )


def _row_groups(
    sources: Sequence[str | Path], experiment: str, report: LoadReport
) -> Iterator[tuple[str, list[dict[str, Any] | str]]]:
    """(source, its rows) for every file (each file is one group) and MLflow store."""
    for source in sources:
        text = str(source)
        if "://" in text:
            report.sources.append(f"{text} (experiment {experiment})")
            yield text, list(mlflow_rows(text, experiment))
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
            yield str(file), file_rows(file)


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
