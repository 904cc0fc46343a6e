"""MLflow: one run per sample — params = spec, metrics = measurement, tags = provenance.

Logging is idempotent and, across agents sharing one tracking server, never doubles a sample:
a run is created only by the owner of the sample's publish marker (agent/claims.py), under its
store's file lock, and only when no FINISHED run carries that `sample_key` (a run the owner left
unfinished by a crash mid-logging is deleted and logged anew). `claim` / `release` let agents skip
specs another agent is measuring. Any MLflow failure — not installed, server unreachable, database
locked — becomes `TrackingUnavailable` with one line; the caller keeps the sample in the spool and
replays later. `run_to_row` turns a run back into a dataset row, so the dataset can be exported
from MLflow.
"""

from __future__ import annotations

import fcntl
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from vram_ml.agent import claims
from vram_ml.agent.claims import Claim, Identity
from vram_ml.sample import MEASUREMENT_COLUMNS, PROVENANCE_COLUMNS, SPEC_COLUMNS, Sample
from vram_ml.tracking_uri import unreachable_reason

DEFAULT_EXPERIMENT = "vram-ml-samples"
SCHEMA_TAG = "vram_ml.schema"
SCHEMA_VERSION = "1"
TEXT_MEASUREMENT = ("status", "message", "per_gpu_peak_vram")  # text: tags, not metrics
MAX_TAG_CHARS = 4000


class TrackingUnavailable(RuntimeError):
    """MLflow cannot be used right now; the message is one line."""


@dataclass
class Published:
    """What logging one sample did: `logged` (this call made the run), `present` (a finished run
    was there already) or `elsewhere` (another agent owns the sample and has not finished it)."""

    run_id: str
    outcome: str


def _one_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0][:200]}" if lines else type(error).__name__


class Tracking:
    """An MLflow experiment holding one run per sample.

    Args:
        uri: tracking URI (`sqlite:///path/mlflow.db`, `http://host:port`, ...).
        experiment: experiment name.
        artifact_dir: artifact root for new experiments (local stores; runs log no artifacts;
            a tracking server keeps its own).
        identity: who claims and publishes (the store's; a fresh one when None).
        lock_path: file lock that serializes publishing by every process of one store.
    """

    def __init__(self, uri: str, experiment: str = DEFAULT_EXPERIMENT,
                 artifact_dir: Path | None = None, identity: Identity | None = None,
                 lock_path: Path | None = None):
        self.uri = uri
        self.experiment = experiment
        self.artifact_dir = artifact_dir
        self.identity = identity or claims.ephemeral_identity()
        self.lock_path = lock_path
        self._thread_lock = threading.Lock()
        self._client = None
        self._experiment_id: str | None = None
        # Fail in seconds, not minutes, when a server is down (the spool keeps the sample).
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "15")
        # MLflow prints "View run ... at: URL" on stdout for a server: stdout is for --json.
        os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")

    def _connect(self):
        if self._client is not None:
            return self._client, self._experiment_id
        unreachable = unreachable_reason(self.uri)
        if unreachable:  # in seconds, where MLflow would retry for minutes
            raise TrackingUnavailable(f"MLflow at {self.uri}: {unreachable}")
        try:
            from mlflow.tracking import MlflowClient
        except ImportError:
            raise TrackingUnavailable(
                "mlflow is not installed (pip install 'vram-ml[agent]'): samples stay in the "
                "spool; run `vram-ml agent sync` where mlflow is") from None
        try:
            client = MlflowClient(tracking_uri=self.uri)
            experiment = client.get_experiment_by_name(self.experiment)
            experiment_id = experiment.experiment_id if experiment else \
                claims.create_unique(client, self.experiment, {}, self.location)
            if experiment_id is None:  # another agent created it a moment ago
                experiment_id = client.get_experiment_by_name(self.experiment).experiment_id
        except Exception as error:  # noqa: BLE001 - every MLflow failure means "not now"
            raise TrackingUnavailable(f"MLflow at {self.uri}: {_one_line(error)}") from None
        self._client, self._experiment_id = client, experiment_id
        return client, experiment_id

    @property
    def location(self) -> str | None:
        """Artifact location for experiments this agent creates (None: the server decides)."""
        if self.artifact_dir is None or self.uri.startswith(("http://", "https://")):
            return None
        return self.artifact_dir.resolve().as_uri()

    def check(self) -> None:
        """Raise TrackingUnavailable unless MLflow answers."""
        self._connect()

    @contextmanager
    def _failures(self) -> Iterator[None]:
        try:
            yield
        except TrackingUnavailable:
            raise
        except Exception as error:  # noqa: BLE001 - every MLflow failure means "not now"
            self._client = None
            raise TrackingUnavailable(f"MLflow at {self.uri}: {_one_line(error)}") from None

    @contextmanager
    def _publishing(self) -> Iterator[None]:
        """One publisher at a time per store: its threads (lock) and its processes (flock)."""
        with self._thread_lock:
            if self.lock_path is None:
                yield
                return
            self.lock_path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.lock_path, "a") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)
                try:
                    yield
                finally:
                    fcntl.flock(lock, fcntl.LOCK_UN)

    def claim(self, sample_key: str, lease_s: float) -> Claim:
        """Claim a sample_key before measuring it (agent/claims.py)."""
        client, _ = self._connect()
        with self._failures():
            return claims.claim(client, self.experiment, sample_key, self.identity, lease_s,
                                self.location)

    def release(self, won: Claim) -> None:
        client, _ = self._connect()
        with self._failures():
            claims.release(client, won)

    def release_leftovers(self) -> int:
        """Delete claims this store's ended processes (or this one) left on the server."""
        client, experiment_id = self._connect()
        with self._failures():
            return claims.release_leftovers(client, self.experiment, self.identity) \
                + claims.hide_published_markers(client, self.experiment, experiment_id,
                                                self.identity)

    def log(self, sample: Sample) -> Published:
        """Log one sample unless it is stored already or another agent owns it (module doc)."""
        client, experiment_id = self._connect()
        with self._failures(), self._publishing():
            mine, marker_id, active = claims.win_marker(
                client, self.experiment, sample.sample_key, self.identity, self.location)
            runs = self._runs_of(sample)
            finished = [run for run in runs if run.info.status == "FINISHED"]
            if finished:
                published = Published(finished[0].info.run_id, "present")
            elif not mine:
                return Published("", "elsewhere")
            else:
                for run in runs:  # only this store creates runs for it: a crash left these
                    client.delete_run(run.info.run_id)
                published = Published(self._create(client, experiment_id, sample), "logged")
            if mine and active:
                client.delete_experiment(marker_id)  # hide it; its name stays reserved
            return published

    def _runs_of(self, sample: Sample) -> list[Any]:
        """Active runs carrying exactly this sample_key (looked up by its hex spec_id)."""
        return [run for run in self._runs(f"tags.spec_id = '{sample.spec_id}'")
                if run.data.tags.get("sample_key") == sample.sample_key]

    def _create(self, client, experiment_id: str, sample: Sample) -> str:
        from mlflow.entities import Metric, Param

        params, metrics, tags = sample_to_run(sample)
        spec = sample.spec
        name = f"{spec.resolved_model.name.split('/')[-1]} {spec.method} " \
               f"b{spec.batch_size}x{spec.seq_len} {sample.spec_id[:8]}"
        run = client.create_run(experiment_id, tags=tags, run_name=name)
        now = int(time.time() * 1000)
        client.log_batch(
            run.info.run_id,
            metrics=[Metric(key, float(value), now, 0) for key, value in metrics.items()],
            params=[Param(key, value) for key, value in params.items()],
        )
        client.set_terminated(run.info.run_id, "FINISHED")
        return run.info.run_id

    def _runs(self, filter_string: str = "") -> Iterator[Any]:
        from mlflow.entities import ViewType

        client, experiment_id = self._connect()
        token = None
        while True:
            page = client.search_runs([experiment_id], filter_string, ViewType.ACTIVE_ONLY,
                                      max_results=1000, page_token=token)
            yield from page
            token = page.token
            if not token:
                return

    def finished_runs(self) -> list[Any]:
        """Every finished sample run of the experiment."""
        try:
            return [run for run in self._runs() if run.info.status == "FINISHED"
                    and run.data.tags.get(SCHEMA_TAG)]
        except TrackingUnavailable:
            raise
        except Exception as error:  # noqa: BLE001
            raise TrackingUnavailable(f"MLflow at {self.uri}: {_one_line(error)}") from None

    def logged_keys(self) -> set[str]:
        return {run.data.tags["sample_key"] for run in self.finished_runs()}


def sample_to_run(sample: Sample) -> tuple[dict[str, str], dict[str, float], dict[str, str]]:
    """(params, metrics, tags) of one sample's run; None values are left out."""
    row = sample.to_row()
    params = {name: str(row[name]) for name in ("spec_id", *SPEC_COLUMNS)
              if row[name] is not None}
    measurement = asdict(sample.measurement)
    metrics = {name: value for name, value in measurement.items()
               if name not in TEXT_MEASUREMENT and value is not None}
    tags = {name: _tag(row[name]) for name in PROVENANCE_COLUMNS if name != "mlflow_run_id"}
    tags.update(status=sample.measurement.status, message=_tag(sample.measurement.message),
                per_gpu_peak_vram=sample.measurement.per_gpu_peak_vram,
                spec_id=sample.spec_id, sample_key=sample.sample_key)
    tags[SCHEMA_TAG] = SCHEMA_VERSION
    return params, metrics, tags


def _tag(value: Any) -> str:
    return "" if value is None else str(value)[:MAX_TAG_CHARS]


def run_to_row(run: Any) -> dict[str, Any]:
    """The flat dataset row a sample run holds (the inverse of `sample_to_run`)."""
    row: dict[str, Any] = dict(run.data.params)
    for name in MEASUREMENT_COLUMNS:
        if name in TEXT_MEASUREMENT:
            row[name] = run.data.tags.get(name, "")
        elif name in run.data.metrics:
            row[name] = run.data.metrics[name]
    for name in PROVENANCE_COLUMNS:
        row[name] = run.data.tags.get(name, "")
    row["mlflow_run_id"] = run.info.run_id
    return row
