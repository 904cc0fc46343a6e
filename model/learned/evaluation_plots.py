"""The evaluation's outputs: report.json, PNG plots, and an MLflow run with both.

Plots: predicted vs measured per estimator (log-log, one panel each, coloured by source, for each
split and measured target) and the median absolute % error by architecture family
(leave-one-family-out when it ran: each family's bar is the error on a family the learned model
never saw).

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

from vram_ml.model.learned.evaluation import Evaluation, measured_values
from vram_ml.model.learned.targets import MEASURED_TARGETS

GIB = 1024**3
EXPERIMENT = "vram-ml-evaluation"


def write_outputs(evaluation: Evaluation, output_dir: Path) -> list[Path]:
    """report.json plus the PNGs, in `output_dir`; returns the paths written.

    Raises:
        OSError: the folder cannot be created or written (the caller says so in one line).
    """
    output_dir.mkdir(parents=True, exist_ok=True)
    report = output_dir / "report.json"
    report.write_text(json.dumps(evaluation.report, indent=2, sort_keys=True) + "\n")
    paths = [report]
    for split, predictions in evaluation.predictions.items():
        for target in MEASURED_TARGETS:
            if evaluation.report["splits"][split]["targets"][target]["n"]:
                paths.append(plot_predicted_vs_measured(
                    evaluation, split, target,
                    output_dir / f"predicted_vs_measured_{split}_{target}.png"))
    if evaluation.predictions:
        paths.append(plot_error_by_family(evaluation, output_dir / "error_by_family.png"))
    return paths


def _pyplot() -> Any:
    import matplotlib

    if "ipykernel" not in sys.modules:  # files only; a notebook keeps its inline backend
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_predicted_vs_measured(evaluation: Evaluation, split: str, target: str = "peak",
                               path: Path | None = None) -> Any:
    """One log-log panel per estimator: measured (x) vs predicted (y) for `target`, coloured by
    source; OOM runs at their card (peak target)."""
    plt = _pyplot()
    data, predictions = evaluation.data, evaluation.predictions[split]
    body = evaluation.report["splits"][split]["targets"][target]
    names = list(body["estimators"])
    figure, axes = plt.subplots(1, len(names), figsize=(4.2 * len(names), 4.4), squeeze=False,
                                sharex=True, sharey=True)
    measured = measured_values(data, target)
    common = np.isfinite(measured)
    for name in names:
        common &= np.isfinite(predictions[name][target])
    sources = sorted(set(data.source[common].astype(str).tolist()))
    colours = plt.get_cmap("tab10" if len(sources) <= 10 else "tab20")
    for axis, name in zip(axes[0], names, strict=True):
        predicted = predictions[name][target]
        for i, source in enumerate(sources):
            rows = common & (data.source.astype(str) == source)
            axis.scatter(measured[rows] / GIB, predicted[rows] / GIB, s=9, alpha=0.6,
                         color=colours(i % colours.N), label=source)
        oom = data.oom & np.isfinite(predicted)
        if target == "peak" and oom.any():
            axis.scatter(data.device_total_bytes[oom] / GIB, predicted[oom] / GIB, s=14,
                         marker="x", color="crimson", label="OOM (x = card)")
        top = np.nanmax(np.concatenate([predicted[common], measured[common]])) / GIB
        limits = [0.1, max(1.0, float(top) * 1.3)]
        axis.plot(limits, limits, color="gray", linewidth=1)
        metrics = body["estimators"][name]
        axis.set(xscale="log", yscale="log", xlabel=f"measured {target} (GiB)",
                 title=f"{name}  median {_pct(metrics['median_ape'])} "
                       f"p90 {_pct(metrics['p90_ape'])}")
    axes[0][0].set_ylabel(f"predicted {target} (GiB)")
    axes[0][-1].legend(fontsize=6, loc="upper left", ncol=1 + len(sources) // 8)
    figure.suptitle(_title(evaluation, f"predicted vs measured {target} — split: {split} "
                                       f"({body['n']} rows)"), fontsize=10)
    figure.tight_layout()
    return _save(plt, figure, path)


def plot_error_by_family(evaluation: Evaluation, path: Path | None = None) -> Any:
    """Grouped bars: median absolute % error of the peak per family and estimator (held-out
    families when the family split ran: each bar is a family the learned model never saw)."""
    plt = _pyplot()
    split = "family" if "family" in evaluation.predictions else next(iter(evaluation.predictions))
    by_family = evaluation.report["splits"][split]["targets"]["peak"]["by_family"]
    families = sorted({family for errors in by_family.values() for family in errors})
    width = 0.8 / max(len(by_family), 1)
    figure, axis = plt.subplots(figsize=(min(18.0, max(6.0, 2.0 + 0.5 * len(families))), 4.5))
    positions = np.arange(len(families))
    for i, (name, errors) in enumerate(by_family.items()):
        values = [errors[f]["median_ape"] if f in errors else np.nan for f in families]
        axis.bar(positions + i * width, values, width, label=name)
    axis.set_xticks(positions + width * (len(by_family) - 1) / 2, families, rotation=45, ha="right")
    axis.set(ylabel="median absolute % error (peak)")
    axis.set_title(_title(evaluation, f"error by family — split: {split}"), fontsize=10)
    axis.legend(fontsize=8)
    figure.tight_layout()
    return _save(plt, figure, path)


def log_evaluation(tracking_uri: str, evaluation: Evaluation, paths: list[Path]) -> str:
    """One MLflow run with every metric (`split/estimator/metric`) and the report and plots."""
    from vram_ml.model.learned.mlflow_runs import flat_metrics, start_run

    with start_run(tracking_uri, EXPERIMENT) as run:
        import mlflow

        metrics = {split: {target: value["estimators"] for target, value in body["targets"].items()}
                   for split, body in evaluation.report["splits"].items()}
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
