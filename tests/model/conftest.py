"""Fixtures of the learned-model and answers tests: SYNTHETIC samples and a model trained on them.

There are no real GPU samples yet. Every sample here is made at test time by
`vram_ml.model.learned.synthetic` (the analytical estimate times a known nonlinear distortion,
backend "synthetic"); nothing is written as a dataset row, and nothing trained here is ever bundled.

Tiers: these tests are in the default tier (`.venv/bin/python -m pytest tests/model/learned
tests/model/answers`);
the notebook run is included (about half a minute).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from vram_ml.model.learned.synthetic import synthetic_training_set
from vram_ml.model.learned.train import TrainParams, train
from vram_ml.model.learned.training_set import TrainingSet

# Small and fast: enough trees to learn the synthetic distortion, few enough for 2 CPU cores.
FAST_PARAMS = TrainParams(n_estimators=80, max_depth=4, learning_rate=0.1, calibration_folds=3)


@pytest.fixture
def fast_params() -> TrainParams:
    return FAST_PARAMS


@pytest.fixture(scope="session")
def synthetic_set() -> TrainingSet:
    return synthetic_training_set(n=200, seed=0)


@pytest.fixture(scope="session")
def artifact_dir(tmp_path_factory: pytest.TempPathFactory, synthetic_set: TrainingSet) -> Path:
    """A learned model trained on the synthetic fixture, written to a temporary folder."""
    output = tmp_path_factory.mktemp("learned_artifact")
    train(synthetic_set, output, FAST_PARAMS, tracking_uri=None, sources=["synthetic (test)"])
    return output
