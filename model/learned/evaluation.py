"""`vram-ml evaluate`: every estimator, every split, the metrics a user plans with.

Estimators: seed-formula, analytical, simulate (only when asked: from precomputed dataset
columns, or run live where torch is installed), learned (refitted on each training fold).

Splits (the learned model's test rows never take part in its fit):
- random: K-fold over samples;
- family: leave one architecture family out (does it transfer to an unseen architecture?);
- size: train on the smaller models, test on the largest (does it extrapolate in scale?).

Metrics on measured (ok) samples: MAPE, median and worst absolute % error, median signed % error
(bias), and for estimators with an upper bound its coverage (share of peaks at or under it) and
overshoot (median % it asks for above the peak). OOM samples are lower bounds: `oom_caught` is the
share of them predicted not to fit the card they failed on (upper bound, or the point estimate
when there is none) and `false_oom` the share of measured samples wrongly predicted not to fit.

Example:
    evaluation = evaluate(training_set)
    evaluation.report["splits"]["family"]["estimators"]["learned"]["mape"]
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from vram_ml.model.estimate import Estimate
from vram_ml.model.learned.training_set import TrainingSet

if TYPE_CHECKING:
    from vram_ml.model.learned.train import TrainParams

ESTIMATORS = ("seed-formula", "analytical", "simulate", "learned")
SPLITS = ("random", "family", "size")
SIZE_TEST_SHARE = 0.2  # the largest models holding about this share of samples are the test set


@dataclass
class Fold:
    train: np.ndarray  # row indices
    test: np.ndarray
    label: str


@dataclass
class Evaluation:
    """The JSON report plus the out-of-fold predictions behind it (for plots and notebooks)."""

    data: TrainingSet
    report: dict[str, Any]
    # split -> estimator -> (peak, upper or None), NaN where a row was not tested in that split
    predictions: dict[str, dict[str, tuple[np.ndarray, np.ndarray | None]]] = field(
        default_factory=dict
    )


def random_folds(data: TrainingSet, k: int = 5, seed: int = 0) -> list[Fold]:
    order = np.random.default_rng(seed).permutation(len(data))
    parts = np.array_split(order, min(k, len(data)))
    return [
        Fold(np.setdiff1d(order, part), np.sort(part), f"fold {i + 1}/{len(parts)}")
        for i, part in enumerate(parts)
    ]


def family_folds(data: TrainingSet) -> list[Fold]:
    families = data.families
    rows = np.arange(len(data))
    return [
        Fold(rows[families != family], rows[families == family], family)
        for family in sorted(set(families.tolist()))
        if (data.ok & (families != family)).any()
    ]


def size_folds(data: TrainingSet, test_share: float = SIZE_TEST_SHARE) -> list[Fold]:
    """One fold: the largest models (by parameters) whose samples make up ~`test_share`."""
    sizes = data.total_params
    distinct = np.unique(sizes)[::-1]
    threshold = distinct[0]
    for size in distinct:
        if (sizes >= size).mean() > test_share:
            break
        threshold = size
    rows = np.arange(len(data))
    train, test = rows[sizes < threshold], rows[sizes >= threshold]
    if not data.ok[train].any():
        return []
    label = f"train <= {sizes[train].max() / 1e9:.1f}B params, test >= {threshold / 1e9:.1f}B"
    return [Fold(train, test, label)]


def make_folds(split: str, data: TrainingSet, k: int = 5, seed: int = 0) -> list[Fold]:
    if split == "random":
        return random_folds(data, k, seed)
    if split == "family":
        return family_folds(data)
    if split == "size":
        return size_folds(data)
    raise ValueError(f"unknown split {split!r} (known: {', '.join(SPLITS)})")


def error_metrics(data: TrainingSet, peak: np.ndarray, upper: np.ndarray | None) -> dict[str, Any]:
    """Metrics of one estimator over the rows where `peak` is not NaN."""
    tested = np.isfinite(peak)
    ok, oom = data.ok & tested, data.oom & tested
    measured = data.peak_vram_bytes[ok]
    signed = (peak[ok] - measured) / measured * 100
    metrics: dict[str, Any] = {
        "n": int(ok.sum()),
        "mape": _stat(np.mean, np.abs(signed)),
        "median_ape": _stat(np.median, np.abs(signed)),
        "worst_ape": _stat(np.max, np.abs(signed)),
        "bias_pct": _stat(np.median, signed),
        "coverage_q95": None,
        "overshoot_pct": None,
    }
    if upper is not None and ok.any():
        metrics["coverage_q95"] = float(np.mean(upper[ok] >= measured))
        metrics["overshoot_pct"] = float(np.median((upper[ok] - measured) / measured * 100))
    bound = upper if upper is not None else peak
    known = ok & np.isfinite(data.device_total_bytes)
    metrics["oom_n"] = int(oom.sum())
    metrics["oom_caught"] = (
        float(np.mean(bound[oom] > data.device_total_bytes[oom])) if oom.any() else None
    )
    metrics["false_oom"] = (
        float(np.mean(bound[known] > data.device_total_bytes[known])) if known.any() else None
    )
    return metrics


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
    if not data.ok.any():
        raise ValueError("no measured (status ok) samples to evaluate on")
    params = params or TrainParams()
    if matrix is None or analytical is None:
        matrix, analytical = feature_matrix(data.specs, analytical)
    fixed, notes = _fixed_predictions(data, estimators, analytical)
    evaluation = Evaluation(data, {"data": _data_summary(data), "notes": notes, "splits": {}})
    for split in splits:
        folds = make_folds(split, data, k, params.random_state)
        predictions = {name: fixed[name] for name in estimators if name in fixed}
        if "learned" in estimators:
            predictions["learned"] = _learned_out_of_fold(data, matrix, folds, params)
        tested = np.zeros(len(data), bool)
        for fold in folds:
            tested[fold.test] = True
        predictions = {name: _only(tested, *values) for name, values in predictions.items()}
        evaluation.predictions[split] = predictions
        evaluation.report["splits"][split] = {
            "folds": [
                {"label": f.label, "train": len(f.train), "test": len(f.test)} for f in folds
            ],
            "estimators": {
                name: error_metrics(data, *values) for name, values in predictions.items()
            },
            "by_family": {
                name: _by_family(data, values[0]) for name, values in predictions.items()
            },
        }
    return evaluation


def _learned_out_of_fold(
    data: TrainingSet, matrix: np.ndarray, folds: list[Fold], params: TrainParams
) -> tuple[np.ndarray, np.ndarray]:
    from vram_ml.model.learned.train import fit_targets

    peak, upper = np.full(len(data), np.nan), np.full(len(data), np.nan)
    for fold in folds:
        models = fit_targets(matrix[fold.train], data.subset(fold.train), params, ("peak", "upper"))
        peak[fold.test] = models["peak"].predict(matrix[fold.test])
        upper[fold.test] = np.maximum(models["upper"].predict(matrix[fold.test]), peak[fold.test])
    return peak, upper


def _fixed_predictions(
    data: TrainingSet, estimators: tuple[str, ...], analytical: list[Estimate]
) -> tuple[dict[str, tuple[np.ndarray, np.ndarray | None]], list[str]]:
    """Predictions of the estimators that do not learn: the same for every split."""
    from vram_ml.model.estimate import get_estimator

    fixed: dict[str, tuple[np.ndarray, np.ndarray | None]] = {}
    notes: list[str] = []
    if "analytical" in estimators:
        fixed["analytical"] = _arrays(analytical)
    if "seed-formula" in estimators:
        seed = get_estimator("seed-formula")
        fixed["seed-formula"] = _arrays([seed.estimate(spec) for spec in data.specs])
    if "simulate" in estimators:
        simulated, note = _simulate(data)
        if note:
            notes.append(note)
        if np.isfinite(simulated).any():
            fixed["simulate"] = (simulated, None)
    return fixed, notes


def _simulate(data: TrainingSet) -> tuple[np.ndarray, str]:
    """Precomputed simulate peaks, completed live when the simulator can run here."""
    values = data.simulate_peak_vram_bytes.astype(float).copy()
    missing = np.flatnonzero(~np.isfinite(values) & data.ok)
    if missing.size == 0:
        return values, ""
    try:
        from vram_ml.model.estimate import get_estimator

        simulator = get_estimator("simulate")
        for i in missing:
            values[i] = simulator.estimate(data.specs[i]).peak_vram_bytes
    except (ImportError, ValueError) as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        return values, (
            f"simulate: {missing.size} samples without a precomputed simulate peak "
            f"were left out ({reason})"
        )
    return values, ""


def _arrays(estimates: list[Estimate]) -> tuple[np.ndarray, np.ndarray | None]:
    peak = np.array([e.peak_vram_bytes for e in estimates], dtype=float)
    uppers = [e.upper_vram_bytes for e in estimates]
    upper = None if any(u is None for u in uppers) else np.array(uppers, dtype=float)
    return peak, upper


def _only(
    tested: np.ndarray, peak: np.ndarray, upper: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray | None]:
    keep = tested & np.isfinite(peak)
    return np.where(keep, peak, np.nan), None if upper is None else np.where(keep, upper, np.nan)


def _by_family(data: TrainingSet, peak: np.ndarray) -> dict[str, float]:
    families = data.families
    ok = data.ok & np.isfinite(peak)
    result = {}
    for family in sorted(set(families[ok].tolist())):
        rows = ok & (families == family)
        errors = np.abs(peak[rows] / data.peak_vram_bytes[rows] - 1) * 100
        result[family] = float(np.mean(errors))
    return result


def _data_summary(data: TrainingSet) -> dict[str, Any]:
    backends, counts = np.unique(data.backend.astype(str), return_counts=True)
    return {
        "samples": len(data),
        "ok": int(data.ok.sum()),
        "oom": int(data.oom.sum()),
        "families": len(set(data.families.tolist())),
        "hash": data.data_hash(),
        "backends": dict(zip(backends.tolist(), counts.tolist(), strict=True)),
        "synthetic": data.is_synthetic,
    }


def _stat(function: Any, values: np.ndarray) -> float | None:
    return float(function(values)) if values.size else None
