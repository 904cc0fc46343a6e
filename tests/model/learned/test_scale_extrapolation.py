"""Raw scale features (features.RAW_SCALE_FEATURES) against extrapolation in scale: trained on the
committed real rows of models up to 7.5B parameters, tested on the rows of models 9x and more
larger (Llama-2-70B in fms-acceleration), is the learned model with them at least as close as the
same model with them blanked out? On today's data it is not (the xfail says by how much), while
held-out sources favour them: the claim is kept as a test that fails the day it holds again."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from vram_ml.model.learned.evaluation import measured_values
from vram_ml.model.learned.features import FEATURE_NAMES, RAW_SCALE_FEATURES, feature_matrix
from vram_ml.model.learned.train import TrainParams, fit_targets
from vram_ml.model.learned.training_set import load_training_set

DATASETS = Path(__file__).parents[3] / "datasets"
SMALL, LARGE = 7.5e9, 60e9


def _median_ape(matrix, data, train, test, target):
    model = fit_targets(matrix[train], data.subset(train), TrainParams(), (target,))[target]
    measured = measured_values(data, target)[test]
    rows = np.isfinite(measured)
    return float(np.median(np.abs(model.predict(matrix[test][rows]) / measured[rows] - 1)))


@pytest.fixture(scope="module")
def real_rows():
    data, _ = load_training_set([DATASETS])
    matrix, _ = feature_matrix(data.specs)
    return data, matrix


@pytest.mark.xfail(strict=True, reason=(
    "measured on data hash 387da25bd4ded5b1 (fms-acceleration's fp16 full rows mapped): with the "
    "raw scale features the 9x extrapolation is worse (peak median APE 17.0% vs 13.2% blanked, "
    "allocated 20.8% vs 20.0%), while leave-one-source-out is far better with them (19.6% vs "
    "30.9%): kept, and the feature set waits for a decision over all grouped splits; strict, "
    "so the mark goes when the data turns this back"))
def test_raw_scale_features_do_not_hurt_a_9x_extrapolation(real_rows):
    data, matrix = real_rows
    train = np.flatnonzero(data.total_params <= SMALL)
    test = np.flatnonzero(data.total_params >= LARGE)
    blank = matrix.copy()
    blank[:, [FEATURE_NAMES.index(name) for name in RAW_SCALE_FEATURES]] = 0.0
    compared = 0
    for target in ("peak", "allocated"):
        if np.isfinite(measured_values(data, target)[test]).sum() < 5:
            continue
        with_scale = _median_ape(matrix, data, train, test, target)
        without = _median_ape(blank, data, train, test, target)
        assert with_scale <= without + 0.01, (target, with_scale, without)
        compared += 1
    assert compared, "the committed data no longer holds >= 5 measured rows of a >= 60B model"
