"""MLflow: one run per sample — params = spec, metrics = measurement, tags = provenance.

Logging is idempotent: a run carries its `sample_key` as a tag and a sample whose key already has
a FINISHED run is not logged again (a run left unfinished by a crash mid-logging is deleted and
logged anew). Any MLflow failure — not installed, server unreachable, database locked — becomes
`TrackingUnavailable` with one line; the caller keeps the sample in the spool and replays later.
`run_to_row` turns a run back into a dataset row, so the dataset can be exported from MLflow.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

from vram_ml.sample import MEASUREMENT_COLUMNS, PROVENANCE_COLUMNS, SPEC_COLUMNS, Sample

DEFAULT_EXPERIMENT = "vram-ml-samples"
SCHEMA_TAG = "vram_ml.schema"
SCHEMA_VERSION = "1"
TEXT_MEASUREMENT = ("status", "message")  # measurement fields that are text: tags, not metrics
MAX_TAG_CHARS = 4000


class TrackingUnavailable(RuntimeError):
    """MLflow cannot be used right now; the message is one line."""


def _one_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0][:200]}" if lines else type(error).__name__


class Tracking:
    """An MLflow experiment holding one run per sample.

    Args:
        uri: tracking URI (`sqlite:///path/mlflow.db`, `http://host:port`, ...).
        experiment: experiment name.
        artifact_dir: artifact root for a new experiment (local stores; runs log no artifacts).
    """

    def __init__(self, uri: str, experiment: str = DEFAULT_EXPERIMENT,
                 artifact_dir: Path | None = None):
        self.uri = uri
        self.experiment = experiment
        self.artifact_dir = artifact_dir
        self._client = None
        self._experiment_id: str | None = None
        # Fail in seconds, not minutes, when a server is down (the spool keeps the sample).
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "15")

    def _connect(self):
        if self._client is not None:
            return self._client, self._experiment_id
        try:
            from mlflow.tracking import MlflowClient
        except ImportError:
            raise TrackingUnavailable(
                "mlflow is not installed (pip install 'vram-ml[agent]'): samples stay in the "
                "spool; run `vram-ml agent sync` where mlflow is") from None
        try:
            client = MlflowClient(tracking_uri=self.uri)
            experiment = client.get_experiment_by_name(self.experiment)
            if experiment is None:
                location = self.artifact_dir.resolve().as_uri() if self.artifact_dir else None
                experiment_id = client.create_experiment(self.experiment, location)
            else:
                experiment_id = experiment.experiment_id
        except Exception as error:  # noqa: BLE001 - every MLflow failure means "not now"
            raise TrackingUnavailable(f"MLflow at {self.uri}: {_one_line(error)}") from None
        self._client, self._experiment_id = client, experiment_id
        return client, experiment_id

    def check(self) -> None:
        """Raise TrackingUnavailable unless MLflow answers."""
        self._connect()

    def log(self, sample: Sample) -> str:
        """Log one sample (unless its sample_key already has a finished run); returns the run id."""
        client, experiment_id = self._connect()
        try:
            existing = self._runs(f"tags.sample_key = '{sample.sample_key}'")
            for run in existing:
                if run.info.status == "FINISHED":
                    return run.info.run_id
                client.delete_run(run.info.run_id)  # a crash mid-logging left it unfinished
            return self._create(client, experiment_id, sample)
        except TrackingUnavailable:
            raise
        except Exception as error:  # noqa: BLE001
            self._client = None
            raise TrackingUnavailable(f"MLflow at {self.uri}: {_one_line(error)}") from None

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
