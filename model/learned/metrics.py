"""Error metrics, in the terms a user plans with: absolute percentage error (APE) as median and
p90, the bias, and for an upper bound its coverage; for censored rows, whether a run that ran out
of memory was predicted not to fit, and whether one that fitted was predicted not to.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def ape_metrics(measured: np.ndarray, predicted: np.ndarray,
                upper: np.ndarray | None = None) -> dict[str, Any]:
    """Metrics over rows where both `measured` and `predicted` are known."""
    rows = np.isfinite(measured) & np.isfinite(predicted) & (measured > 0)
    signed = (predicted[rows] - measured[rows]) / measured[rows] * 100
    absolute = np.abs(signed)
    metrics: dict[str, Any] = {
        "n": int(rows.sum()),
        "median_ape": _stat(np.median, absolute),
        "p90_ape": _stat(lambda v: np.quantile(v, 0.9), absolute),
        "mape": _stat(np.mean, absolute),
        "worst_ape": _stat(np.max, absolute),
        "bias_pct": _stat(np.median, signed),
    }
    if upper is not None:
        bound = upper[rows]
        known = np.isfinite(bound)
        metrics["coverage_q95"] = (float(np.mean(bound[known] >= measured[rows][known]))
                                   if known.any() else None)
        metrics["overshoot_pct"] = (
            float(np.median((bound[known] - measured[rows][known]) / measured[rows][known] * 100))
            if known.any() else None)
    return metrics


def card_metrics(card: np.ndarray, bound: np.ndarray, oom: np.ndarray,
                 fitted: np.ndarray) -> dict[str, Any]:
    """`oom_caught`: share of out-of-memory runs whose bound is above their card; `false_oom`:
    share of runs known to fit (measured under a known card, or labelled fit) whose bound is."""
    known = np.isfinite(bound) & np.isfinite(card)
    caught, false = oom & known, fitted & known
    return {
        "oom_n": int(caught.sum()),
        "oom_caught": float(np.mean(bound[caught] > card[caught])) if caught.any() else None,
        "fit_n": int(false.sum()),
        "false_oom": float(np.mean(bound[false] > card[false])) if false.any() else None,
    }


def grouped_ape(measured: np.ndarray, predicted: np.ndarray,
                labels: np.ndarray) -> dict[str, dict[str, Any]]:
    """n, median and p90 APE per label (source, family, method)."""
    rows = np.isfinite(measured) & np.isfinite(predicted)
    result = {}
    for label in sorted(set(labels[rows].astype(str).tolist())):
        chosen = rows & (labels.astype(str) == label)
        metrics = ape_metrics(measured[chosen], predicted[chosen])
        result[label] = {key: metrics[key] for key in ("n", "median_ape", "p90_ape")}
    return result


def _stat(function: Any, values: np.ndarray) -> float | None:
    return float(function(values)) if values.size else None
