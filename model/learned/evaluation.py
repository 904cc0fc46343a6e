"""`vram-ml evaluate`: every estimator, every split, every target, the metrics a user plans with.

Estimators: seed-formula, analytical, simulate (only when asked: from precomputed dataset
columns, or run live where torch is installed), learned (refitted on each training fold).
Splits (folds.py): leave one source out, leave one family out, size, grouped random.
Targets (targets.py): the nvidia-smi `peak`, torch's `allocated` and `reserved` peaks, each
compared on the rows that measured it; `unknown`: published peaks whose statistic is not known,
compared with each estimator's peak, never trained on.

Within a target every estimator is scored on the same rows (those every compared estimator
answered). Metrics: median and p90 absolute % error, MAPE, worst, bias, the upper bound's coverage;
per source, family and method; for censored rows `oom_caught` and `false_oom` (metrics.py).

`bundle` (source split): the learned model's median APE over every measured (row, target) pair
against the analytical estimator's on the same pairs. A learned model is bundled only if it is
lower: a worse learned model never replaces a better formula.

Example:
    evaluation = evaluate(training_set)
    evaluation.report["splits"]["source"]["targets"]["peak"]["estimators"]["learned"]
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from vram_ml.model.estimate import Estimate
from vram_ml.model.learned.folds import SPLITS, Fold, make_folds
from vram_ml.model.learned.metrics import ape_metrics, card_metrics, grouped_ape
from vram_ml.model.learned.targets import ESTIMATE_FIELD, MEASURED_FIELD, MEASURED_TARGETS
from vram_ml.model.learned.training_set import TrainingSet

if TYPE_CHECKING:
    from vram_ml.model.learned.train import TrainParams

ESTIMATORS = ("seed-formula", "analytical", "simulate", "learned")
EVALUATED_TARGETS = (*MEASURED_TARGETS, "unknown")
Predictions = dict[str, np.ndarray]  # target (peak, upper, allocated, reserved) -> bytes


@dataclass
class Evaluation:
    """The JSON report plus the out-of-fold predictions behind it (for plots and notebooks)."""

    data: TrainingSet
    report: dict[str, Any]
    # split -> estimator -> target -> bytes, NaN where a row was not tested in that split
    predictions: dict[str, dict[str, Predictions]] = field(default_factory=dict)


def evaluate(
    data: TrainingSet,
    estimators: tuple[str, ...] = ("seed-formula", "analytical", "learned"),
    splits: tuple[str, ...] = SPLITS,
    params: TrainParams | None = None,
    k: int = 5,
    matrix: np.ndarray | None = None,
    analytical: list[Estimate] | None = None,
) -> Evaluation:
    """Evaluate `estimators` on `data` under each split.

    Raises:
        ValueError: an unknown estimator or split, or no measured samples.
    """
    from vram_ml.model.learned.features import feature_matrix
    from vram_ml.model.learned.train import TrainParams

    unknown = set(estimators) - set(ESTIMATORS)
    if unknown:
        raise ValueError(
            f"unknown estimator(s) {', '.join(sorted(unknown))} (known: {', '.join(ESTIMATORS)})"
        )
    if not data.measured("peak").any():
        raise ValueError("no measured peaks (status ok) to evaluate on")
    params = params or TrainParams()
    if matrix is None or analytical is None:
        matrix, analytical = feature_matrix(data.specs, analytical)
    fixed, notes = _fixed_predictions(data, estimators, analytical)
    evaluation = Evaluation(data, {"data": data_summary(data), "notes": notes, "splits": {}})
    for split in splits:
        folds = make_folds(split, data, k, params.random_state)
        predictions = {name: fixed[name] for name in estimators if name in fixed}
        if "learned" in estimators:
            predictions["learned"] = _learned_out_of_fold(data, matrix, folds, params)
        tested = np.zeros(len(data), bool)
        for fold in folds:
            tested[fold.test] = True
        predictions = {name: {t: np.where(tested, v, np.nan) for t, v in values.items()}
                       for name, values in predictions.items()}
        evaluation.predictions[split] = predictions
        evaluation.report["splits"][split] = {
            "folds": [{"label": f.label, "train": len(f.train), "test": len(f.test)}
                      for f in folds],
            "targets": {target: target_report(data, predictions, target)
                        for target in EVALUATED_TARGETS},
        }
    if "source" in evaluation.predictions and {"learned", "analytical"} <= set(estimators):
        evaluation.report["bundle"] = bundle_decision(data, evaluation.predictions["source"])
    return evaluation


def measured_values(data: TrainingSet, target: str) -> np.ndarray:
    """The measured bytes of `target` (NaN where a row did not measure it)."""
    values = data.unknown_peak_bytes if target == "unknown" else getattr(
        data, MEASURED_FIELD[target])
    return np.where(data.ok, values, np.nan)


def target_report(data: TrainingSet, predictions: dict[str, Predictions],
                  target: str) -> dict[str, Any]:
    """One target: every estimator that answers it, on the rows all of them answered."""
    asked = "peak" if target == "unknown" else target
    names = [name for name, values in predictions.items() if asked in values]
    measured = measured_values(data, target)
    common = np.isfinite(measured)
    for name in names:
        common &= np.isfinite(predictions[name][asked])
    report: dict[str, Any] = {"n": int(common.sum()), "estimators": {}, "by_source": {},
                              "by_family": {}, "by_method": {}}
    chosen = np.where(common, measured, np.nan)
    for name in names:
        values = predictions[name]
        upper = values.get("upper") if asked == "peak" else None
        metrics = ape_metrics(chosen, values[asked], upper)
        if target == "peak":
            bound = upper if upper is not None else values["peak"]
            fitted = data.fit_label | data.measured("peak")
            metrics.update(card_metrics(data.device_total_bytes, bound, data.oom, fitted))
        report["estimators"][name] = metrics
        for key, labels in (("by_source", data.source), ("by_family", data.families),
                            ("by_method", data.methods)):
            report[key][name] = grouped_ape(chosen, values[asked], labels)
    return report


def bundle_decision(data: TrainingSet, predictions: dict[str, Predictions]) -> dict[str, Any]:
    """Leave-one-source-out median APE over every measured (row, target) pair, learned vs
    analytical on the same pairs; `bundle` is true only when learned is lower."""
    errors: dict[str, list[np.ndarray]] = {"learned": [], "analytical": []}
    for target in MEASURED_TARGETS:
        measured = measured_values(data, target)
        learned = predictions["learned"].get(target)
        formula = predictions["analytical"].get(target)
        if learned is None or formula is None:
            continue
        rows = np.isfinite(measured) & np.isfinite(learned) & np.isfinite(formula)
        for name, values in (("learned", learned), ("analytical", formula)):
            errors[name].append(np.abs(values[rows] / measured[rows] - 1) * 100)
    pooled = {name: np.concatenate(parts) if parts else np.array([])
              for name, parts in errors.items()}
    medians = {name: float(np.median(v)) if v.size else None for name, v in pooled.items()}
    bundle = None not in medians.values() and medians["learned"] < medians["analytical"]
    return {"split": "source", "pairs": int(pooled["learned"].size),
            "learned_median_ape": medians["learned"],
            "analytical_median_ape": medians["analytical"], "bundle": bool(bundle)}


def data_summary(data: TrainingSet) -> dict[str, Any]:
    return {
        "samples": len(data),
        "ok": int(data.ok.sum()),
        "oom": int(data.oom.sum()),
        "fit_labels": int(data.fit_label.sum()),
        "unknown_statistic": int(np.isfinite(measured_values(data, "unknown")).sum()),
        "families": len(set(data.families.tolist())),
        "hash": data.data_hash(),
        **data.counts(),
        "synthetic": data.is_synthetic,
    }


def _learned_out_of_fold(data: TrainingSet, matrix: np.ndarray, folds: list[Fold],
                         params: TrainParams) -> Predictions:
    from vram_ml.model.learned.train import fit_targets

    out = {target: np.full(len(data), np.nan) for target in ESTIMATE_FIELD}
    for fold in folds:
        models = fit_targets(matrix[fold.train], data.subset(fold.train), params)
        for target, model in models.items():
            out[target][fold.test] = model.predict(matrix[fold.test])
        out["upper"][fold.test] = np.maximum(out["upper"][fold.test], out["peak"][fold.test])
    return out


def _fixed_predictions(
    data: TrainingSet, estimators: tuple[str, ...], analytical: list[Estimate]
) -> tuple[dict[str, Predictions], list[str]]:
    """Predictions of the estimators that do not learn: the same for every split."""
    from vram_ml.model.estimate import get_estimator

    fixed: dict[str, Predictions] = {}
    notes: list[str] = []
    if "analytical" in estimators:
        fixed["analytical"] = estimate_arrays(analytical)
    if "seed-formula" in estimators:
        seed = get_estimator("seed-formula")
        fixed["seed-formula"] = estimate_arrays([seed.estimate(spec) for spec in data.specs])
    if "simulate" in estimators:
        simulated, note = _simulate(data)
        if note:
            notes.append(note)
        if np.isfinite(simulated).any():
            fixed["simulate"] = {"peak": simulated}
    return fixed, notes


def estimate_arrays(estimates: list[Estimate]) -> Predictions:
    """Each target an estimator answered for every row, as arrays (a target some row lacks is
    left out: the seed formula has no allocated or reserved figure, nor an upper bound)."""
    arrays = {}
    for target, name in ESTIMATE_FIELD.items():
        values = [getattr(e, name) for e in estimates]
        if values and all(v is not None for v in values):
            arrays[target] = np.array(values, dtype=float)
    return arrays


def _simulate(data: TrainingSet) -> tuple[np.ndarray, str]:
    """Precomputed simulate peaks, completed live where the simulator runs here (a spec it
    refuses, e.g. multi-GPU, is left out and counted in the note)."""
    values = data.simulate_peak_vram_bytes.astype(float).copy()
    missing = np.flatnonzero(~np.isfinite(values) & data.ok)
    if missing.size == 0:
        return values, ""
    from vram_ml.model.estimate import get_estimator

    try:
        simulator = get_estimator("simulate")
    except ImportError as error:
        return values, f"simulate: {missing.size} rows left out ({str(error).splitlines()[0]})"
    refused: dict[str, int] = {}
    for i in missing:
        try:
            values[i] = simulator.estimate(data.specs[i]).peak_vram_bytes
        except (ImportError, ValueError) as error:
            reason = (str(error).splitlines() or [type(error).__name__])[0][:80]
            refused[reason] = refused.get(reason, 0) + 1
    if not refused:
        return values, ""
    reasons = "; ".join(f"{n} x {reason}" for reason, n in sorted(refused.items()))
    return values, f"simulate: {sum(refused.values())} rows left out ({reasons})"
