"""Options shared by the commands that read or write the sample store (agent, dataset)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

StoreOption = Annotated[Path | None, typer.Option(
    "--store", help="Spool folder (default $VRAM_ML_STORE or ~/.vram-ml/store).")]
TrackingOption = Annotated[str | None, typer.Option(
    help="MLflow tracking URI (default: SQLite file in the store).")]
NoMlflowOption = Annotated[bool, typer.Option("--no-mlflow", help="Spool only; sync later.")]
ExperimentOption = Annotated[str | None, typer.Option(help="MLflow experiment name.")]
JsonOption = Annotated[bool, typer.Option("--json", help="JSON output.")]
BackendsOption = Annotated[list[str] | None, typer.Option(
    "--include-backend", help="Also write samples of this backend (cpu, simulated).")]


def open_store(store: Path | None, tracking_uri: str | None, no_mlflow: bool,
               experiment: str | None = None, read_only: bool = False):
    """The sample store these options name (the spool, and MLflow unless --no-mlflow);
    `read_only` creates nothing (agent status)."""
    from vram_ml.agent.store import SampleStore, default_store_dir

    return SampleStore(store or default_store_dir(), "" if no_mlflow else tracking_uri, experiment,
                       read_only=read_only)
