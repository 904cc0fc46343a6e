"""The residual regressor: scikit-learn's contract, and it learns what the formula misses."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.base import clone

from vram_ml.model.learned.features import BASE_COLUMN, feature_matrix
from vram_ml.model.learned.regressor import ResidualXGBRegressor, learned_pipeline


@pytest.fixture(scope="module")
def measured(synthetic_set):
    matrix, _ = feature_matrix(synthetic_set.specs)
    ok = synthetic_set.ok
    return matrix[ok], synthetic_set.peak_vram_bytes[ok]


def test_follows_the_scikit_learn_contract(measured):
    matrix, peak = measured
    regressor = ResidualXGBRegressor(n_estimators=20, quantile=0.9, calibration_folds=2)
    assert not [name for name in vars(regressor) if name.endswith("_")]  # __init__ only stores
    assert clone(regressor).get_params() == regressor.get_params()
    assert regressor.fit(matrix, peak) is regressor
    learned = [name for name in vars(regressor) if name.endswith("_")]
    assert set(learned) == {"n_features_in_", "model_", "margin_", "censored_misses_"}
    assert regressor.predict(matrix).shape == peak.shape


def test_learns_the_residual_and_scales_with_the_analytical_base(measured):
    matrix, peak = measured
    half = len(peak) // 2
    regressor = ResidualXGBRegressor(n_estimators=80, learning_rate=0.1).fit(
        matrix[:half], peak[:half]
    )
    analytical = np.exp(matrix[half:, BASE_COLUMN])
    learned_error = np.mean(np.abs(regressor.predict(matrix[half:]) / peak[half:] - 1))
    analytical_error = np.mean(np.abs(analytical / peak[half:] - 1))
    assert learned_error < analytical_error / 2
    # The trees move the analytical answer by a factor within what training showed, at any scale.
    seen = peak[:half] / np.exp(matrix[:half, BASE_COLUMN])
    huge = matrix[half:].copy()
    huge[:, BASE_COLUMN] += np.log(1000)  # a thousand times the analytical peak
    factor = regressor.predict(huge) / np.exp(huge[:, BASE_COLUMN])
    assert seen.min() / 1.1 < factor.min() and factor.max() < seen.max() * 1.1


def test_quantile_model_covers(measured):
    matrix, peak = measured
    upper = ResidualXGBRegressor(quantile=0.95, n_estimators=60, calibration_folds=3).fit(
        matrix, peak
    )
    assert np.mean(upper.predict(matrix) >= peak) >= 0.95


@pytest.mark.parametrize("card_factor", [0.5, 1.0, 3.0])
def test_censored_rows_never_tighten_the_bound(measured, card_factor):
    """OOM rows with y = the card: whether the card is below, at or above the peak the model
    predicts, adding them can only keep or widen the margin (it used to shrink: an OOM row
    predicted above its card counted as a negative error)."""
    matrix, peak = measured
    params = dict(quantile=0.95, n_estimators=40, calibration_folds=3)
    alone = ResidualXGBRegressor(**params).fit(matrix, peak)
    card = card_factor * alone.predict(matrix[:30])  # OOM runs of the first 30 specs
    X = np.vstack([matrix, matrix[:30]])
    y = np.concatenate([peak, card])
    bound = np.concatenate([np.zeros(len(peak), bool), np.ones(30, bool)])
    with_ooms = ResidualXGBRegressor(**params).fit(X, y, bound)
    assert with_ooms.margin_ >= alone.margin_
    if card_factor > 1:  # cards above the bound: the bound missed them all
        assert with_ooms.censored_misses_ == 30 and with_ooms.margin_ > alone.margin_


def test_rejects_bad_targets(measured):
    matrix, peak = measured
    with pytest.raises(ValueError, match="positive"):
        ResidualXGBRegressor().fit(matrix[:3], np.array([1.0, 0.0, 2.0]))
    with pytest.raises(ValueError, match="lower bounds"):
        ResidualXGBRegressor().fit(matrix[:3], peak[:3], np.ones(3, bool))


def test_pipeline_takes_specs(synthetic_set):
    ok = np.flatnonzero(synthetic_set.ok)[:80]
    specs = [synthetic_set.specs[i] for i in ok]
    pipeline = learned_pipeline(n_estimators=20).fit(specs, synthetic_set.peak_vram_bytes[ok])
    assert pipeline.predict(specs[:3]).shape == (3,)
    assert len(pipeline[:-1].get_feature_names_out()) == pipeline[-1].n_features_in_
