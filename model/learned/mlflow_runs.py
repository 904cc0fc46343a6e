"""MLflow runs for training and evaluation, with artifacts kept beside a SQLite store.

MLflow's default artifact root is `./mlruns` in the working directory, wherever that is; an
experiment created here stores its artifacts next to the SQLite file instead (`mlartifacts/`), so
a temporary store in a test stays in its temporary folder.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

SQLITE_PREFIX = "sqlite:///"


def _import_mlflow() -> Any:
    try:
        import mlflow
    except ImportError:
        raise ImportError("logging to MLflow needs mlflow: pip install 'vram-ml[learn]'") from None
    return mlflow


class TrackingUnavailableError(ValueError):
    """An MLflow tracking store that cannot be used now; the message is one line."""


@contextmanager
def mlflow_failures(tracking_uri: str) -> Iterator[None]:
    """Check the server answers (seconds, not MLflow's minutes of retries), then turn any MLflow
    failure inside the block into one line (TrackingUnavailableError)."""
    from vram_ml.tracking_uri import unreachable_reason

    unreachable = unreachable_reason(tracking_uri)
    if unreachable:
        raise TrackingUnavailableError(f"MLflow at {tracking_uri}: {unreachable}")
    mlflow = _import_mlflow()
    try:
        yield
    except mlflow.exceptions.MlflowException as error:
        line = (str(error).strip().splitlines() or [type(error).__name__])[0][:200]
        raise TrackingUnavailableError(f"MLflow at {tracking_uri}: {line}") from None


@contextmanager
def start_run(tracking_uri: str, experiment: str, run_name: str | None = None) -> Iterator[Any]:
    """An active MLflow run in `experiment` (created on first use) at `tracking_uri`.

    Raises:
        TrackingUnavailableError: unreachable server or an MLflow failure (one line).
    """
    mlflow = _import_mlflow()
    from mlflow.tracking import MlflowClient

    with mlflow_failures(tracking_uri):
        mlflow.set_tracking_uri(tracking_uri)
        client = MlflowClient(tracking_uri=tracking_uri)
        found = client.get_experiment_by_name(experiment)
        experiment_id = (
            found.experiment_id
            if found is not None
            else client.create_experiment(experiment,
                                          artifact_location=artifact_location(tracking_uri))
        )
        with mlflow.start_run(experiment_id=experiment_id, run_name=run_name) as run:
            yield run


def artifact_location(tracking_uri: str) -> str | None:
    """`mlartifacts/` beside a SQLite store; None (the server's default) for anything else."""
    if not tracking_uri.startswith(SQLITE_PREFIX):
        return None
    database = Path(tracking_uri[len(SQLITE_PREFIX) :]).expanduser().resolve()
    return (database.parent / "mlartifacts").as_uri()


def flat_metrics(metrics: dict[str, Any], prefix: str = "") -> dict[str, float]:
    """Nested metrics as MLflow keys `a/b/c` (None and NaN left out)."""
    flat: dict[str, float] = {}
    for key, value in metrics.items():
        name = f"{prefix}{key}".replace("-", "_")
        if isinstance(value, dict):
            flat.update(flat_metrics(value, f"{name}/"))
        elif isinstance(value, int | float) and np.isfinite(value):
            flat[name] = float(value)
    return flat
