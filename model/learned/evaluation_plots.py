"""The evaluation's outputs: report.json, PNG plots, and an MLflow run with both.

Plots: predicted vs measured per estimator (log-log, one panel each, for each split) and the mean
absolute % error by architecture family (leave-one-family-out when it ran: each family's bar is
the error on a family the learned model never saw).

Example:
    paths = write_outputs(evaluation, Path("evaluation"))
    log_evaluation("sqlite:///mlflow.db", evaluation, paths)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from vram_ml.model.learned.evaluation import Evaluation

GIB = 1024**3
EXPERIMENT = "vram-ml-evaluation"


def write_outputs(evaluation: Evaluation, output_dir: Path) -> list[Path]:
    """report.json plus the PNGs, in `output_dir`; returns the paths written."""
    output_dir.mkdir(parents=True, exist_ok=True)
    report = output_dir / "report.json"
    report.write_text(json.dumps(evaluation.report, indent=2, sort_keys=True) + "\n")
    paths = [report]
    for split in evaluation.predictions:
        paths.append(
            plot_predicted_vs_measured(
                evaluation, split, output_dir / f"predicted_vs_measured_{split}.png"
            )
        )
    if evaluation.predictions:
        paths.append(plot_error_by_family(evaluation, output_dir / "error_by_family.png"))
    return paths


def _pyplot() -> Any:
    import matplotlib

    if "ipykernel" not in sys.modules:  # files only; a notebook keeps its inline backend
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_predicted_vs_measured(evaluation: Evaluation, split: str, path: Path | None = None) -> Any:
    """One log-log panel per estimator: measured peak (x) vs predicted (y), OOMs at their card."""
    plt = _pyplot()
    data, predictions = evaluation.data, evaluation.predictions[split]
    figure, axes = plt.subplots(
        1,
        len(predictions),
        figsize=(4.2 * len(predictions), 4.2),
        squeeze=False,
        sharex=True,
        sharey=True,
    )
    for axis, (name, (peak, upper)) in zip(axes[0], predictions.items(), strict=True):
        ok, oom = data.ok & np.isfinite(peak), data.oom & np.isfinite(peak)
        measured = data.peak_vram_bytes[ok] / GIB
        axis.scatter(measured, peak[ok] / GIB, s=10, alpha=0.6, label="point")
        if upper is not None:
            axis.scatter(measured, upper[ok] / GIB, s=6, alpha=0.4, marker="^", label="upper (q95)")
        if oom.any():
            axis.scatter(
                data.device_total_bytes[oom] / GIB,
                peak[oom] / GIB,
                s=14,
                marker="x",
                color="crimson",
                label="OOM (x = card)",
            )
        limits = [0.1, max(1.0, float(np.nanmax(peak[ok | oom]) / GIB) * 1.3)]
        axis.plot(limits, limits, color="gray", linewidth=1)
        metrics = evaluation.report["splits"][split]["estimators"][name]
        axis.set(
            xscale="log",
            yscale="log",
            title=f"{name}  MAPE {_pct(metrics['mape'])}",
            xlabel="measured peak (GiB)",
        )
        axis.legend(fontsize=7, loc="upper left")
    axes[0][0].set_ylabel("predicted peak (GiB)")
    figure.suptitle(_title(evaluation, f"predicted vs measured — split: {split}"), fontsize=10)
    figure.tight_layout()
    return _save(plt, figure, path)


def plot_error_by_family(evaluation: Evaluation, path: Path | None = None) -> Any:
    """Grouped bars: mean absolute % error per family and estimator."""
    plt = _pyplot()
    split = "family" if "family" in evaluation.predictions else next(iter(evaluation.predictions))
    by_family = evaluation.report["splits"][split]["by_family"]
    families = sorted({family for errors in by_family.values() for family in errors})
    width = 0.8 / max(len(by_family), 1)
    figure, axis = plt.subplots(figsize=(min(18.0, max(6.0, 2.0 + 0.5 * len(families))), 4.5))
    positions = np.arange(len(families))
    for i, (name, errors) in enumerate(by_family.items()):
        axis.bar(
            positions + i * width, [errors.get(f, np.nan) for f in families], width, label=name
        )
    axis.set_xticks(positions + width * (len(by_family) - 1) / 2, families, rotation=45, ha="right")
    axis.set(ylabel="mean absolute % error")
    axis.set_title(_title(evaluation, f"error by family — split: {split}"), fontsize=10)
    axis.legend(fontsize=8)
    figure.tight_layout()
    return _save(plt, figure, path)


def log_evaluation(tracking_uri: str, evaluation: Evaluation, paths: list[Path]) -> str:
    """One MLflow run with every metric (`split/estimator/metric`) and the report and plots."""
    from vram_ml.model.learned.mlflow_runs import flat_metrics, start_run

    with start_run(tracking_uri, EXPERIMENT) as run:
        import mlflow

        metrics = {split: body["estimators"] for split, body in evaluation.report["splits"].items()}
        mlflow.log_metrics(flat_metrics(metrics))
        mlflow.set_tags(
            {
                "data_hash": evaluation.report["data"]["hash"],
                "synthetic": str(evaluation.report["data"]["synthetic"]).lower(),
            }
        )
        for path in paths:
            mlflow.log_artifact(str(path))
    return run.info.run_id


def _title(evaluation: Evaluation, text: str) -> str:
    return f"SYNTHETIC DATA (not measurements) — {text}" if evaluation.data.is_synthetic else text


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}%"


def _save(plt: Any, figure: Any, path: Path | None) -> Any:
    if path is None:
        return figure
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
