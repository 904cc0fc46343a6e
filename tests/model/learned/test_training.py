"""Training writes a pickle-free artifact that the numpy path reads back to the same numbers."""

from __future__ import annotations

import json

import numpy as np
import pytest

from vram_ml.model.learned.estimator import BUNDLED_DIR, LearnedEstimator
from vram_ml.model.learned.features import FEATURE_NAMES, feature_matrix
from vram_ml.model.learned.train import TrainingError, fit_targets, train


def test_artifact_is_json_only_and_complete(artifact_dir, synthetic_set):
    files = sorted(path.name for path in artifact_dir.iterdir())
    assert files == ["allocated.json", "metadata.json", "peak.json", "reserved.json", "upper.json"]
    metadata = json.loads((artifact_dir / "metadata.json").read_text())
    assert metadata["feature_names"] == list(FEATURE_NAMES)
    assert metadata["data"]["hash"] == synthetic_set.data_hash()
    assert metadata["data"]["backends"] == {"synthetic": len(synthetic_set)}
    assert metadata["targets"]["upper"]["quantile"] == 0.95
    assert metadata["metrics"]["source"]["peak"]["learned"]["median_ape"] > 0
    assert metadata["targets"]["allocated"]["base_feature"] == "log_analytical_allocated"
    assert metadata["trained_range"]["total_params"][0] > 0
    assert len(metadata["analytical_probe"]) == 3


def test_loaded_artifact_predicts_what_the_regressors_predict(
    artifact_dir, synthetic_set, fast_params
):
    matrix, _ = feature_matrix(synthetic_set.specs)
    models = fit_targets(matrix, synthetic_set, fast_params, ("peak", "upper"))
    batch = LearnedEstimator(artifact_dir).predict_batch(synthetic_set.specs)
    assert batch.estimator == "learned"
    np.testing.assert_allclose(batch.peak_vram_bytes, models["peak"].predict(matrix), rtol=1e-4)
    np.testing.assert_allclose(
        batch.upper_vram_bytes,
        np.maximum(models["upper"].predict(matrix), batch.peak_vram_bytes),
        rtol=1e-4,
    )


def test_oom_specs_are_predicted_not_to_fit_their_card(artifact_dir, synthetic_set):
    """The upper bound is a q0.95 bound whose conformal margin counts a censored row below its
    card as a miss (regressor._conformal_margin): at least 95% of the OOM runs it learned from are
    predicted not to fit, not necessarily every one."""
    oom = np.flatnonzero(synthetic_set.oom)
    assert oom.size >= 20
    batch = LearnedEstimator(artifact_dir).predict_batch([synthetic_set.specs[i] for i in oom])
    caught = batch.upper_vram_bytes > synthetic_set.device_total_bytes[oom]
    assert caught.mean() >= 0.95


def test_synthetic_data_never_becomes_the_bundled_model(synthetic_set, fast_params):
    with pytest.raises(TrainingError, match="bundled"):
        train(synthetic_set, BUNDLED_DIR, fast_params)
    with pytest.raises(TrainingError, match="bundled"):
        train(synthetic_set, None, fast_params)
    assert not (BUNDLED_DIR / "metadata.json").exists()


def test_nothing_to_learn_is_an_error(synthetic_set, tmp_path, fast_params):
    with pytest.raises(TrainingError, match="too few"):
        train(synthetic_set.subset(synthetic_set.oom), tmp_path, fast_params)


def test_too_few_samples_are_refused_not_trusted(synthetic_set, tmp_path, fast_params):
    """Nine tiny samples used to train a model whose bound for a 7B model was 0.2% wide."""
    nine = synthetic_set.subset(np.flatnonzero(synthetic_set.ok)[:9])
    with pytest.raises(TrainingError, match="9 measured peaks: too few"):
        train(nine, tmp_path, fast_params)


def test_predict_outside_the_trained_range_says_so(synthetic_set, tmp_path, fast_params):
    small = synthetic_set.subset(synthetic_set.total_params < 4e9)
    train(small, tmp_path, fast_params)
    from vram_ml.spec import build_spec

    inside = build_spec(model=small.specs[0].model, model_overrides=small.specs[0].model_overrides)
    big = build_spec(model="meta-llama/Llama-2-70b-hf", batch_size=1, seq_len=1024)
    notes = {name: LearnedEstimator(tmp_path).estimate(spec).notes
             for name, spec in (("inside", inside), ("big", big))}
    assert any("outside the learned model's training range: total_params 68.98B" in note
               for note in notes["big"])
    assert not any("total_params" in note for note in notes["inside"])


def test_logs_and_registers_in_mlflow(tmp_path, synthetic_set, fast_params):
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    small = synthetic_set.subset(np.arange(80))
    result = train(small, tmp_path / "model", fast_params, tracking_uri=uri)
    client = MlflowClient(tracking_uri=uri)
    run = client.get_run(result.mlflow_run_id)
    assert run.data.tags["data_hash"] == small.data_hash()
    assert "source/peak/learned/median_ape" in run.data.metrics
    assert run.data.params["n_estimators"] == str(fast_params.n_estimators)
    assert result.registered_version == "1"
    artifacts = {item.path for item in client.list_artifacts(run.info.run_id, "artifact")}
    assert "artifact/metadata.json" in artifacts
    stored = list((tmp_path / "mlartifacts").rglob("*"))
    assert stored and not [p for p in stored if p.suffix in (".pkl", ".pickle")]
