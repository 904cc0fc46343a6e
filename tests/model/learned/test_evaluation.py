"""Splits keep test rows out of training; metrics and the OOM check mean what they say."""

from __future__ import annotations

import json

import numpy as np
import pytest

from vram_ml.model.learned.evaluation import (
    error_metrics,
    evaluate,
    family_folds,
    random_folds,
    size_folds,
)
from vram_ml.model.learned.evaluation_plots import log_evaluation, write_outputs
from vram_ml.model.learned.training_set import TrainingSet

GIB = 1024**3


def test_random_folds_test_every_row_once(synthetic_set):
    folds = random_folds(synthetic_set, k=5)
    tested = np.concatenate([fold.test for fold in folds])
    assert sorted(tested) == list(range(len(synthetic_set)))
    for fold in folds:
        assert not set(fold.train) & set(fold.test)


def test_family_folds_hold_out_exactly_one_family(synthetic_set):
    families = synthetic_set.families
    folds = family_folds(synthetic_set)
    assert {fold.label for fold in folds} == set(families)
    for fold in folds:
        assert set(families[fold.test]) == {fold.label}
        assert fold.label not in set(families[fold.train])


def test_size_fold_tests_only_models_larger_than_any_trained(synthetic_set):
    (fold,) = size_folds(synthetic_set)
    sizes = synthetic_set.total_params
    assert sizes[fold.test].min() > sizes[fold.train].max()
    assert 0.1 <= len(fold.test) / len(synthetic_set) <= 0.35


def _tiny(peaks: list[float | None], cards: list[float], status: list[str]) -> TrainingSet:
    n = len(peaks)
    return TrainingSet(
        specs=[None] * n,
        status=np.array(status),
        device_total_bytes=np.array(cards),
        peak_vram_bytes=np.array([np.nan if p is None else p for p in peaks]),
        peak_allocated_bytes=np.full(n, np.nan),
        peak_reserved_bytes=np.full(n, np.nan),
        backend=np.full(n, "synthetic", dtype=object),
    )


def test_metrics_by_hand():
    data = _tiny([10 * GIB, 20 * GIB, None], [24 * GIB, 24 * GIB, 24 * GIB], ["ok", "ok", "oom"])
    peak = np.array([11, 18, 30]) * GIB
    upper = np.array([12, 21, 23]) * GIB
    metrics = error_metrics(data, peak.astype(float), upper.astype(float))
    assert metrics["n"] == 2 and metrics["mape"] == pytest.approx(10.0)
    assert metrics["worst_ape"] == pytest.approx(10.0) and metrics["bias_pct"] == pytest.approx(0.0)
    assert metrics["coverage_q95"] == 1.0 and metrics["overshoot_pct"] == pytest.approx(12.5)
    # The OOM run's upper bound (23 GiB) says it fits a 24 GiB card: the check must fail it.
    assert metrics["oom_n"] == 1 and metrics["oom_caught"] == 0.0 and metrics["false_oom"] == 0.0
    without_upper = error_metrics(data, peak.astype(float), None)
    assert without_upper["coverage_q95"] is None and without_upper["oom_caught"] == 1.0


def test_learned_beats_the_formula_on_every_split_and_flags_ooms(
    synthetic_set, fast_params, tmp_path
):
    evaluation = evaluate(
        synthetic_set, ("seed-formula", "analytical", "learned"), ("random", "size"), fast_params
    )
    for split in ("random", "size"):
        metrics = evaluation.report["splits"][split]["estimators"]
        assert metrics["learned"]["mape"] < metrics["analytical"]["mape"] / 2
        assert metrics["learned"]["coverage_q95"] >= 0.85
        assert metrics["learned"]["oom_caught"] >= 0.95
    paths = write_outputs(evaluation, tmp_path / "out")
    names = sorted(path.name for path in paths)
    assert names == [
        "error_by_family.png",
        "predicted_vs_measured_random.png",
        "predicted_vs_measured_size.png",
        "report.json",
    ]
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert (
        report["data"]["synthetic"] is True and report["data"]["hash"] == synthetic_set.data_hash()
    )
    for path in paths:
        assert path.stat().st_size > 1000
    run_id = log_evaluation(f"sqlite:///{tmp_path / 'mlflow.db'}", evaluation, paths)
    from mlflow.tracking import MlflowClient

    run = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}").get_run(run_id)
    assert "size/learned/mape" in run.data.metrics and run.data.tags["synthetic"] == "true"


def test_leave_one_family_out_runs(synthetic_set, fast_params):
    subset = synthetic_set.subset(
        np.isin(synthetic_set.families, ["llama", "qwen2", "qwen3", "gemma2"])
    )
    evaluation = evaluate(subset, ("analytical", "learned"), ("family",), fast_params)
    body = evaluation.report["splits"]["family"]
    assert len(body["folds"]) == 4 and set(body["by_family"]["learned"]) <= {
        "llama",
        "qwen2",
        "qwen3",
        "gemma2",
    }
    assert body["estimators"]["learned"]["n"] == int(subset.ok.sum())


def test_simulate_uses_precomputed_columns_or_says_why_not(synthetic_set, fast_params):
    subset = synthetic_set.subset(np.arange(40))
    subset.simulate_peak_vram_bytes = np.where(subset.ok, subset.peak_vram_bytes * 1.1, np.nan)
    evaluation = evaluate(subset, ("simulate",), ("random",), fast_params)
    assert evaluation.report["splits"]["random"]["estimators"]["simulate"]["mape"] == pytest.approx(
        10.0
    )


def test_unknown_names_are_errors(synthetic_set):
    with pytest.raises(ValueError, match="oracle"):
        evaluate(synthetic_set, ("oracle",))
