"""Splits keep test rows (and every row of a test spec) out of training; metrics, the OOM check
and the bundle decision mean what they say. The data are SYNTHETIC (tests/model/conftest.py)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from vram_ml.model.learned.evaluation import bundle_decision, evaluate
from vram_ml.model.learned.evaluation_plots import log_evaluation, write_outputs
from vram_ml.model.learned.folds import grouped_folds, make_folds, size_folds
from vram_ml.model.learned.metrics import ape_metrics, card_metrics
from vram_ml.model.learned.training_set import TrainingSet, concatenate

GIB = 1024**3


def _twice(data: TrainingSet) -> TrainingSet:
    """Every row twice: two measurements of each spec (a repeat, or two sources)."""
    return concatenate([data, data])


def test_grouped_folds_test_every_row_once_and_never_split_a_spec(synthetic_set):
    data = _twice(synthetic_set.subset(np.arange(60)))
    folds = grouped_folds(data, k=5)
    tested = np.concatenate([fold.test for fold in folds])
    assert sorted(tested) == list(range(len(data)))
    ids = data.spec_ids
    for fold in folds:
        assert not set(ids[fold.train]) & set(ids[fold.test])


@pytest.mark.parametrize("split,labels", [("family", "families"), ("source", "source")])
def test_leave_one_out_folds_hold_out_exactly_one_label(synthetic_set, split, labels):
    values = getattr(synthetic_set, labels).astype(str)
    folds = make_folds(split, synthetic_set)
    assert {fold.label for fold in folds} == set(values)
    for fold in folds:
        assert set(values[fold.test]) == {fold.label}
        assert fold.label not in set(values[fold.train])


def test_size_fold_tests_only_models_larger_than_any_trained(synthetic_set):
    (fold,) = size_folds(synthetic_set)
    sizes = synthetic_set.total_params
    assert sizes[fold.test].min() > sizes[fold.train].max()
    assert 0.1 <= len(fold.test) / len(synthetic_set) <= 0.35


def test_metrics_by_hand():
    measured = np.array([10, 20, 40, 100], float) * GIB
    predicted = np.array([11, 18, 40, 150], float) * GIB
    upper = np.array([12, 21, 39, 160], float) * GIB
    metrics = ape_metrics(measured, predicted, upper)
    assert metrics["n"] == 4 and metrics["median_ape"] == pytest.approx(10.0)
    assert metrics["p90_ape"] == pytest.approx(38.0)  # linear: 10 + 0.7 x (50 - 10)
    assert metrics["worst_ape"] == pytest.approx(50.0) and metrics["coverage_q95"] == 0.75
    card = np.full(3, 24.0 * GIB)
    checks = card_metrics(card, np.array([23, 25, 30], float) * GIB,
                          oom=np.array([True, False, False]), fitted=np.array([False, True, True]))
    # the OOM run's bound (23 GiB) says it fits a 24 GiB card: not caught; both fitting runs'
    # bounds say they do not fit: false OOMs
    assert checks["oom_caught"] == 0.0 and checks["false_oom"] == 1.0


def test_learned_beats_the_formula_held_out_and_flags_ooms(synthetic_set, fast_params, tmp_path):
    evaluation = evaluate(synthetic_set, ("seed-formula", "analytical", "learned"),
                          ("source", "size"), fast_params)
    for split in ("source", "size"):
        body = evaluation.report["splits"][split]["targets"]["peak"]
        metrics = body["estimators"]
        assert metrics["learned"]["median_ape"] < metrics["analytical"]["median_ape"] / 2
        assert metrics["learned"]["coverage_q95"] >= 0.85
        assert metrics["learned"]["oom_caught"] >= 0.95
        # every estimator on the same rows
        assert len({m["n"] for m in metrics.values()}) == 1 and body["n"] == metrics["learned"]["n"]
    allocated = evaluation.report["splits"]["source"]["targets"]["allocated"]["estimators"]
    assert set(allocated) == {"analytical", "learned"}  # the seed formula has no allocated figure
    assert evaluation.report["bundle"]["bundle"] is True
    paths = write_outputs(evaluation, tmp_path / "out")
    names = sorted(path.name for path in paths)
    assert "predicted_vs_measured_source_peak.png" in names
    assert "predicted_vs_measured_size_reserved.png" in names and "error_by_family.png" in names
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["data"]["synthetic"] is True
    assert report["data"]["hash"] == synthetic_set.data_hash()
    for path in paths:
        assert path.stat().st_size > 1000
    run_id = log_evaluation(f"sqlite:///{tmp_path / 'mlflow.db'}", evaluation, paths)
    from mlflow.tracking import MlflowClient

    run = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}").get_run(run_id)
    assert "size/peak/learned/median_ape" in run.data.metrics
    assert run.data.tags["synthetic"] == "true"


def test_bundle_decision_is_no_when_learned_is_worse(synthetic_set):
    data = synthetic_set
    peak = data.peak_vram_bytes
    predictions = {"analytical": {"peak": peak * 1.05}, "learned": {"peak": peak * 1.20}}
    decision = bundle_decision(data, predictions)
    assert decision["bundle"] is False
    assert decision["learned_median_ape"] == pytest.approx(20.0)
    assert decision["analytical_median_ape"] == pytest.approx(5.0)


def test_leave_one_family_out_runs(synthetic_set, fast_params):
    subset = synthetic_set.subset(
        np.isin(synthetic_set.families, ["llama", "qwen2", "qwen3", "gemma2"]))
    evaluation = evaluate(subset, ("analytical", "learned"), ("family",), fast_params)
    body = evaluation.report["splits"]["family"]
    assert len(body["folds"]) == 4
    peak = body["targets"]["peak"]
    assert set(peak["by_family"]["learned"]) <= {"llama", "qwen2", "qwen3", "gemma2"}
    assert peak["estimators"]["learned"]["n"] == int(subset.measured("peak").sum())


def test_unknown_statistic_rows_are_only_evaluated(synthetic_set, fast_params):
    data = synthetic_set.subset(np.arange(80))
    data.unknown_peak_bytes = np.where(np.arange(80) % 4 == 0, data.peak_vram_bytes, np.nan)
    data.peak_vram_bytes = np.where(np.arange(80) % 4 == 0, np.nan, data.peak_vram_bytes)
    evaluation = evaluate(data, ("analytical",), ("random",), fast_params)
    unknown = evaluation.report["splits"]["random"]["targets"]["unknown"]
    assert unknown["n"] == int(np.isfinite(data.unknown_peak_bytes[data.ok]).sum()) > 0


def test_simulate_uses_precomputed_columns_or_says_why_not(synthetic_set, fast_params):
    subset = synthetic_set.subset(np.arange(40))
    subset.simulate_peak_vram_bytes = np.where(subset.ok, subset.peak_vram_bytes * 1.1, np.nan)
    evaluation = evaluate(subset, ("simulate",), ("random",), fast_params)
    metrics = evaluation.report["splits"]["random"]["targets"]["peak"]["estimators"]["simulate"]
    assert metrics["median_ape"] == pytest.approx(10.0)


def test_unknown_names_are_errors(synthetic_set):
    with pytest.raises(ValueError, match="oracle"):
        evaluate(synthetic_set, ("oracle",))
