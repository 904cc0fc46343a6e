"""`vram-ml train`: fit the learned model, write the artifact, log it to MLflow.

One function, `train`, does it all and returns a `TrainResult`; the command only prints it.
The artifact (see estimator.py) is plain JSON: XGBoost's own JSON model per target and a
metadata.json. No pickle anywhere: MLflow gets the XGBoost flavor in JSON format plus the artifact
folder, and the model is registered.

Synthetic data never reaches the bundled folder: `train` refuses to write a model trained on
anything but real measurements (`cuda`, `published`) into the package, and refuses to bundle one
that does not beat the analytical estimator on held-out sources (evaluation.py `bundle`).

Example:
    training_set, report = load_training_set(["datasets/"])
    result = train(training_set, output_dir=Path("/tmp/model"), tracking_uri=None)
"""

from __future__ import annotations

import json
import platform
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from vram_ml.model.learned.estimator import ARTIFACT_FORMAT, BUNDLED_DIR
from vram_ml.model.learned.features import (
    BASE_COLUMN,
    FEATURE_NAMES,
    base_column,
    feature_matrix,
)
from vram_ml.model.learned.regressor import ResidualXGBRegressor
from vram_ml.model.learned.targets import BASE_FEATURE, MEASURED_FIELD, TARGETS
from vram_ml.model.learned.trained_range import trained_range
from vram_ml.model.learned.training_set import MEASURED_BACKENDS, TrainingSet

REGISTERED_MODEL = "vram-ml-learned"
EXPERIMENT = "vram-ml-training"
# Specs whose analytical estimate is stored with the model: if the formula changes later, the
# learned residuals no longer sit on the numbers they were learned on, and predict says so.
PROBE_SPECS = (
    {
        "model": "meta-llama/Meta-Llama-3-8B",
        "method": "lora",
        "batch_size": 2,
        "seq_len": 1024,
        "precision": "bf16",
    },
    {
        "model": "Qwen/Qwen2.5-0.5B",
        "method": "full",
        "batch_size": 4,
        "seq_len": 512,
        "precision": "bf16",
        "gradient_checkpointing": False,
        "attention": "eager",
    },
    {
        "model": "Qwen/Qwen2.5-7B",
        "method": "qlora",
        "quant_bits": 4,
        "batch_size": 1,
        "seq_len": 2048,
        "precision": "bf16",
    },
)


class TrainingError(ValueError):
    """Training cannot proceed; the message is one line."""


@dataclass
class TrainParams:
    """Hyperparameters of every target's regressor (the defaults suit a few hundred samples)."""

    n_estimators: int = 200  # trees per target
    max_depth: int = 4  # shallow: few samples, and the predict path walks every level
    learning_rate: float = 0.05
    quantile: float = 0.95  # the upper bound users plan on
    calibration_folds: int = 5  # out-of-fold folds for the upper bound's conformal margin
    random_state: int = 0
    min_peaks: int = 30  # fewer measured peaks: refuse to train (no trustworthy bound)
    # splits evaluated at training time, stored in the artifact; `source` decides the bundle
    splits: tuple[str, ...] = ("source", "family", "size")

    def regressor(self, quantile: float | None = None,
                  base: int = BASE_COLUMN) -> ResidualXGBRegressor:
        return ResidualXGBRegressor(
            base_column=base,
            quantile=quantile,
            calibration_folds=self.calibration_folds,
            n_estimators=self.n_estimators,
            max_depth=self.max_depth,
            learning_rate=self.learning_rate,
            random_state=self.random_state,
        )


@dataclass
class TrainResult:
    output_dir: Path
    metadata: dict[str, Any]
    mlflow_run_id: str | None = None
    registered_version: str | None = None
    notes: list[str] = field(default_factory=list)


def fit_targets(
    matrix: np.ndarray,
    data: TrainingSet,
    params: TrainParams,
    targets: tuple[str, ...] = TARGETS,
) -> dict[str, ResidualXGBRegressor]:
    """One fitted regressor per target, each on the rows that measured it and over its own
    analytical base (targets.py). OOM rows enter only the upper bound, as lower bounds.

    Raises:
        TrainingError: fewer than two rows measured the peak.
    """
    peak_rows = data.measured("peak")
    if peak_rows.sum() < 2:
        raise TrainingError(
            f"{int(peak_rows.sum())} measured peaks (status ok): too few to learn from")
    models: dict[str, ResidualXGBRegressor] = {}
    for target in targets:
        if target == "upper":
            rows = peak_rows | data.oom
            y = np.where(peak_rows, data.peak_vram_bytes, data.device_total_bytes)[rows]
            models[target] = params.regressor(params.quantile, base_column("upper")).fit(
                matrix[rows], y, ~peak_rows[rows])
            continue
        rows = data.measured(target)
        if rows.sum() >= 2:
            values = getattr(data, MEASURED_FIELD[target])
            models[target] = params.regressor(None, base_column(target)).fit(
                matrix[rows], values[rows])
    return models


def train(
    data: TrainingSet,
    output_dir: Path | None = None,
    params: TrainParams | None = None,
    tracking_uri: str | None = None,
    sources: list[str] | None = None,
) -> TrainResult:
    """Fit every target, write the artifact to `output_dir` (default: the bundled folder) and,
    with a tracking URI, log params, metrics, data hash and the registered model to MLflow.

    Raises:
        TrainingError: nothing to learn from, or synthetic data headed for the bundled folder.
    """
    from vram_ml.model.learned.evaluation import evaluate

    params = params or TrainParams()
    output_dir = Path(output_dir) if output_dir is not None else BUNDLED_DIR
    bundling = output_dir.resolve() == BUNDLED_DIR.resolve()
    if not set(data.backend) <= set(MEASURED_BACKENDS) and bundling:
        raise TrainingError(
            "only real GPU measurements (backends cuda, published) may become the bundled "
            "model; pass --output DIR for anything else"
        )
    peaks = int(data.measured("peak").sum())
    if peaks < params.min_peaks:
        raise TrainingError(
            f"{peaks} measured peaks: too few for a learned model (at least {params.min_peaks}; "
            "a handful of samples gives a bound that looks tight and is not)"
        )
    matrix, analytical = feature_matrix(data.specs)
    models = fit_targets(matrix, data, params)
    evaluation = evaluate(data, estimators=("analytical", "learned"), splits=params.splits,
                          params=params, matrix=matrix, analytical=analytical)
    decision = evaluation.report.get("bundle")
    if bundling and not (decision and decision["bundle"]):
        raise TrainingError(
            "the learned model does not beat the analytical estimator on held-out sources "
            f"({_decision_text(decision)}): not bundled; `vram-ml evaluate` shows where"
        )
    metadata = artifact_metadata(data, params, compact_metrics(evaluation.report), sources)
    metadata["bundle_decision"] = decision
    write_artifact(output_dir, models, metadata)
    result = TrainResult(output_dir, metadata)
    if data.is_synthetic:
        result.notes.append("trained on SYNTHETIC data: for tests only, never for predictions")
    if decision and not decision["bundle"]:
        result.notes.append(f"does not beat the analytical estimator ({_decision_text(decision)})")
    if tracking_uri:
        result.mlflow_run_id, result.registered_version = log_training(
            tracking_uri, output_dir, models["peak"], metadata, params
        )
    return result


def compact_metrics(report: dict[str, Any]) -> dict[str, Any]:
    """split -> target -> estimator -> the headline metrics (what the artifact keeps)."""
    keep = ("n", "median_ape", "p90_ape", "coverage_q95", "oom_caught", "false_oom")
    return {
        split: {target: {name: {k: m.get(k) for k in keep if k in m}
                         for name, m in body["estimators"].items()}
                for target, body in value["targets"].items() if body["n"]}
        for split, value in report["splits"].items()
    }


def _decision_text(decision: dict[str, Any] | None) -> str:
    if not decision or decision["learned_median_ape"] is None:
        return "no leave-one-source-out comparison: one source only"
    return (f"leave-one-source-out median APE {decision['learned_median_ape']:.1f}% learned vs "
            f"{decision['analytical_median_ape']:.1f}% analytical over {decision['pairs']} rows")


def artifact_metadata(
    data: TrainingSet, params: TrainParams, metrics: dict[str, Any], sources: list[str] | None
) -> dict[str, Any]:
    from vram_ml.model.learned.features import analytical_estimates
    from vram_ml.spec import build_spec

    probes = analytical_estimates([build_spec(**fields) for fields in PROBE_SPECS])
    return {
        "format": ARTIFACT_FORMAT,
        "feature_names": list(FEATURE_NAMES),
        "targets": {},  # filled by write_artifact
        "data": {
            "hash": data.data_hash(),
            "samples": len(data),
            "ok": int(data.ok.sum()),
            "oom": int(data.oom.sum()),
            "families": sorted(set(data.families.tolist())),
            **data.counts(),
            "files": sources or [],
        },
        "trained_range": trained_range(data),
        "metrics": metrics,
        "hyperparameters": asdict(params),
        "analytical_probe": [
            {"spec": fields, "peak_vram_bytes": estimate.peak_vram_bytes}
            for fields, estimate in zip(PROBE_SPECS, probes, strict=True)
        ],
        "trained_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "versions": _versions(),
    }


def write_artifact(
    output_dir: Path, models: dict[str, ResidualXGBRegressor], metadata: dict[str, Any]
) -> None:
    """XGBoost JSON per target plus metadata.json (written last: a folder is complete once the
    metadata exists)."""
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "metadata.json").unlink(missing_ok=True)
    for target, model in models.items():
        model.model_.get_booster().save_model(str(output_dir / f"{target}.json"))
        metadata["targets"][target] = {
            "file": f"{target}.json",
            "base_feature": BASE_FEATURE[target],
            "margin": model.margin_,
            "censored_misses": model.censored_misses_,
            "objective": "quantile" if model.quantile is not None else "squared_error",
            "quantile": model.quantile,
        }
    (output_dir / "metadata.json").write_text(json.dumps(metadata, indent=2, sort_keys=True) + "\n")


def log_training(
    tracking_uri: str,
    output_dir: Path,
    point: ResidualXGBRegressor,
    metadata: dict[str, Any],
    params: TrainParams,
) -> tuple[str, str | None]:
    """One MLflow run: params, metrics, data hash, the artifact folder, the registered model."""
    import mlflow.xgboost

    from vram_ml.model.learned.mlflow_runs import flat_metrics, start_run

    with start_run(tracking_uri, EXPERIMENT) as run:
        import mlflow

        mlflow.log_params(asdict(params))
        mlflow.set_tags(
            {
                "data_hash": metadata["data"]["hash"],
                "backends": ",".join(metadata["data"]["backends"]),
            }
        )
        mlflow.log_metrics(flat_metrics(metadata["metrics"]))
        mlflow.log_artifacts(str(output_dir), artifact_path="artifact")
        info = mlflow.xgboost.log_model(
            point.model_.get_booster(),
            name="peak",
            model_format="json",
            registered_model_name=REGISTERED_MODEL,
        )
    version = getattr(info, "registered_model_version", None)
    return run.info.run_id, None if version is None else str(version)


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = {"python": platform.python_version()}
    for package in ("vram-ml", "xgboost", "xgboost-cpu", "scikit-learn", "numpy"):
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            continue
    return found
