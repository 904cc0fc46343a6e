"""`vram-ml train` and `vram-ml evaluate`: the learned model fitted to real samples, and every
estimator compared on them."""

import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from vram_ml.cli.display import print_json
from vram_ml.cli.spec_options import fail, fail_to_write

if TYPE_CHECKING:
    from vram_ml.model.learned.training_set import TrainingSet

app = typer.Typer()
JsonOption = Annotated[bool, typer.Option("--json", help="JSON output (bytes).")]
DataOption = Annotated[
    list[str] | None,
    typer.Option(
        "--data",
        help="Dataset file or folder (CSV/Parquet/JSONL), or an MLflow tracking URI. "
        "Repeatable. Default: datasets/.",
    ),
]
# Test-only: build synthetic samples in memory instead of reading data (never real, never bundled).
SyntheticOption = Annotated[int, typer.Option("--synthetic", hidden=True)]


def train(
    data: DataOption = None,
    output: Annotated[
        Path | None,
        typer.Option(help="Artifact folder (default: the bundled model inside the package)."),
    ] = None,
    tracking_uri: Annotated[
        str | None,
        typer.Option(
            help="MLflow store (default: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db)."
        ),
    ] = None,
    mlflow: Annotated[bool, typer.Option(help="Log the run and register the model.")] = True,
    experiment: Annotated[
        str, typer.Option(help="MLflow experiment holding samples (when --data is a tracking URI).")
    ] = "vram-ml-samples",
    n_estimators: Annotated[int, typer.Option(help="Trees per target.", min=1)] = 200,
    max_depth: Annotated[int, typer.Option(help="Tree depth.", min=1, max=12)] = 4,
    min_peaks: Annotated[int, typer.Option(
        help="Refuse to train on fewer measured peaks.", min=2)] = 30,
    synthetic: SyntheticOption = 0,
    as_json: JsonOption = False,
) -> None:
    """Train the learned model on real GPU measurements (backends cuda and published) and write
    its artifact; into the package only if it beats the analytical estimator on held-out sources.

    Example: vram-ml train --data datasets/samples.csv --output /tmp/model
    """
    from vram_ml.model.learned.estimator import BUNDLED_DIR
    from vram_ml.model.learned.train import TrainingError, TrainParams
    from vram_ml.model.learned.train import train as train_model

    training_set, sources = _load(data, experiment, synthetic)
    uri = (
        (tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or "sqlite:///mlflow.db")
        if mlflow
        else None
    )
    _check_tracking(uri)
    try:
        with fail_to_write(output or BUNDLED_DIR, "output", folder=True):
            result = train_model(
                training_set,
                output,
                TrainParams(n_estimators=n_estimators, max_depth=max_depth, min_peaks=min_peaks),
                uri,
                sources,
            )
    except (TrainingError, ValueError) as error:
        raise fail(str(error)) from None
    payload = {
        "output_dir": str(result.output_dir),
        "mlflow_run_id": result.mlflow_run_id,
        "registered_version": result.registered_version,
        "notes": result.notes,
        "data": result.metadata["data"],
        "metrics": result.metadata["metrics"],
        "bundle_decision": result.metadata.get("bundle_decision"),
    }
    if as_json:
        print_json(payload)
        return
    from vram_ml.cli.learned_display import print_training

    print_training(payload, uri)


def evaluate(
    data: DataOption = None,
    estimators: Annotated[
        str, typer.Option(help="Comma-separated: seed-formula, analytical, simulate, learned.")
    ] = "seed-formula,analytical,learned",
    splits: Annotated[
        str, typer.Option(help="Comma-separated: source, family, size, random.")
    ] = "source,family,size,random",
    output: Annotated[Path, typer.Option(help="Folder for report.json and the PNG plots.")] = Path(
        "evaluation"
    ),
    tracking_uri: Annotated[
        str | None, typer.Option(help="Log metrics and plots to this MLflow store.")
    ] = None,
    experiment: Annotated[
        str, typer.Option(help="MLflow experiment holding samples (when --data is a tracking URI).")
    ] = "vram-ml-samples",
    synthetic: SyntheticOption = 0,
    as_json: JsonOption = False,
) -> None:
    """Compare every estimator on measured samples, held out by source, family, size and at
    random (grouped by spec), per target (nvidia-smi peak, allocated, reserved).

    Example: vram-ml evaluate --data datasets/samples.csv --output evaluation/ --tracking-uri sqlite:///mlflow.db
    """
    from vram_ml.model.learned.evaluation import evaluate as evaluate_estimators
    from vram_ml.model.learned.evaluation_plots import log_evaluation, write_outputs

    training_set, _ = _load(data, experiment, synthetic)
    _check_tracking(tracking_uri)
    with fail_to_write(output, "output", folder=True):
        try:
            evaluation = evaluate_estimators(training_set, _names(estimators), _names(splits))
        except ValueError as error:
            raise fail(str(error)) from None
        paths = write_outputs(evaluation, output)
    try:
        run_id = log_evaluation(tracking_uri, evaluation, paths) if tracking_uri else None
    except ValueError as error:  # MLflow failed while logging (one line)
        raise fail(str(error), code=1) from None
    if as_json:
        print_json({**evaluation.report, "files": [str(p) for p in paths], "mlflow_run_id": run_id})
        return
    from vram_ml.cli.learned_display import print_evaluation

    print_evaluation(evaluation.report, paths, run_id)


def _check_tracking(uri: str | None) -> None:
    """An MLflow server that will be logged to must answer before the work starts."""
    from vram_ml.tracking_uri import unreachable_reason

    unreachable = unreachable_reason(uri) if uri else ""
    if unreachable:
        raise fail(f"MLflow at {uri}: {unreachable}", code=1)


def _names(text: str) -> tuple[str, ...]:
    return tuple(name.strip() for name in text.split(",") if name.strip())


def _load(
    data: list[str] | None, experiment: str, synthetic: int
) -> tuple["TrainingSet", list[str]]:
    """The training set: real measurements (cuda, published) from `data`, or (tests only)
    synthetic ones."""
    if synthetic:
        from vram_ml.model.learned.synthetic import SYNTHETIC_BANNER, synthetic_training_set

        typer.echo(f"WARNING: {SYNTHETIC_BANNER}", err=True)
        return synthetic_training_set(synthetic), ["synthetic (in memory)"]
    from vram_ml.model.learned.training_set import load_training_set

    sources = data or ["datasets"]
    try:
        training_set, report = load_training_set(sources, experiment)
    except (FileNotFoundError, ValueError, ImportError) as error:
        raise fail(str(error)) from None
    if not training_set.measured("peak").any():
        others = ", ".join(f"{k} {v}" for k, v in report.skipped_backend.items()) or "none"
        raise fail(
            f"data: no measured peak (backend cuda or published) in "
            f"{', '.join(map(str, sources))} ({report.rows} rows; other backends: {others}); "
            "the learned model learns only from real GPU measurements"
        )
    return training_set, report.sources


app.command()(train)
app.command()(evaluate)
