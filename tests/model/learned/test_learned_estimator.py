"""The learned estimator: its artifact when there is one, the analytical answer (said) when not."""

from __future__ import annotations

import json
import os
import shutil

import pytest

from vram_ml.model.estimate import get_estimator
from vram_ml.model.learned.estimator import (
    ENV_ARTIFACT,
    FALLBACK_NOTE,
    ArtifactError,
    LearnedEstimator,
)
from vram_ml.spec import build_spec


@pytest.fixture
def spec():
    return build_spec(
        model="Qwen/Qwen2.5-1.5B", method="lora", batch_size=2, seq_len=1024, precision="bf16"
    )


def test_without_a_model_the_analytical_estimator_answers_and_says_so(spec, monkeypatch):
    monkeypatch.delenv(ENV_ARTIFACT, raising=False)
    estimate = get_estimator("learned").estimate(spec)
    analytical = get_estimator("analytical").estimate(spec)
    assert estimate.estimator == "analytical" and FALLBACK_NOTE in estimate.notes
    assert estimate.peak_vram_bytes == analytical.peak_vram_bytes


def test_with_a_model_every_target_is_answered(spec, artifact_dir):
    estimate = LearnedEstimator(artifact_dir).estimate(spec)
    assert estimate.estimator == "learned"
    assert estimate.peak_vram_bytes <= estimate.upper_vram_bytes
    assert estimate.peak_allocated_bytes < estimate.peak_reserved_bytes < estimate.peak_vram_bytes
    analytical = get_estimator("analytical").estimate(spec)
    correction = estimate.breakdown["learned_correction"]
    assert correction == estimate.peak_vram_bytes - analytical.peak_vram_bytes
    assert any("synthetic" in note for note in estimate.notes)


def test_environment_variable_points_at_a_model(spec, artifact_dir, monkeypatch):
    monkeypatch.setenv(ENV_ARTIFACT, str(artifact_dir))
    assert LearnedEstimator().estimate(spec).estimator == "learned"
    monkeypatch.setenv(ENV_ARTIFACT, str(artifact_dir / "missing"))
    with pytest.raises(ArtifactError, match="no metadata.json"):
        LearnedEstimator().estimate(spec)


def test_a_changed_analytical_estimator_is_reported(spec, artifact_dir, tmp_path):
    copy = shutil.copytree(artifact_dir, tmp_path / "model")
    metadata = json.loads((copy / "metadata.json").read_text())
    metadata["analytical_probe"][0]["peak_vram_bytes"] += 1024**3
    (copy / "metadata.json").write_text(json.dumps(metadata))
    notes = LearnedEstimator(copy).estimate(spec).notes
    assert any("analytical estimator changed" in note for note in notes)


def test_an_artifact_for_other_features_is_refused(spec, artifact_dir, tmp_path):
    copy = shutil.copytree(artifact_dir, tmp_path / "model")
    metadata = json.loads((copy / "metadata.json").read_text())
    metadata["feature_names"] = metadata["feature_names"][:-1]
    (copy / "metadata.json").write_text(json.dumps(metadata))
    with pytest.raises(ArtifactError, match="retrain"):
        LearnedEstimator(copy).estimate(spec)


def test_batch_equals_one_by_one(artifact_dir, synthetic_set):
    estimator = LearnedEstimator(artifact_dir)
    specs = synthetic_set.specs[:20]
    batch = estimator.predict_batch(specs, targets=("peak", "upper", "allocated", "reserved"))
    singles = [estimator.estimate(spec) for spec in specs]
    assert [round(v) for v in batch.peak_vram_bytes] == [e.peak_vram_bytes for e in singles]
    assert [round(v) for v in batch.peak_reserved_bytes] == [e.peak_reserved_bytes for e in singles]


def test_an_artifact_is_read_once_per_version_of_its_files(artifact_dir, tmp_path):
    copy = shutil.copytree(artifact_dir, tmp_path / "model")
    first = LearnedEstimator(copy).artifact
    assert LearnedEstimator(copy).artifact is first  # a sweep builds estimators per spec
    metadata = copy / "metadata.json"
    stat = metadata.stat()
    os.utime(metadata, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert LearnedEstimator(copy).artifact is not first  # retrained in place: read again
