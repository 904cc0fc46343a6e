"""The numpy evaluator gives xgboost's own predictions, so predict never needs xgboost."""

from __future__ import annotations

import json

import numpy as np
import pytest
import xgboost as xgb

from vram_ml.model.learned.features import feature_matrix
from vram_ml.model.learned.tree_eval import TreeEnsemble, UnsupportedModel


@pytest.mark.parametrize("target", ["peak", "upper", "allocated", "reserved"])
def test_equals_xgboost_on_the_fixture(artifact_dir, synthetic_set, target):
    matrix, _ = feature_matrix(synthetic_set.specs)
    booster = xgb.Booster()
    booster.load_model(str(artifact_dir / f"{target}.json"))
    expected = booster.inplace_predict(matrix)
    ours = TreeEnsemble.from_json_file(artifact_dir / f"{target}.json").predict(matrix)
    np.testing.assert_allclose(ours, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("objective", ["reg:squarederror", "reg:quantileerror"])
def test_equals_xgboost_with_missing_values_and_deep_trees(tmp_path, objective):
    rng = np.random.default_rng(1)
    features = rng.normal(size=(400, 6))
    target = features[:, 0] * 2 + features[:, 1] ** 2 + np.sin(3 * features[:, 2])
    features[rng.random(features.shape) < 0.15] = np.nan
    extra = {"quantile_alpha": 0.9} if objective == "reg:quantileerror" else {}
    model = xgb.XGBRegressor(n_estimators=30, max_depth=7, objective=objective, n_jobs=1, **extra)
    model.fit(features, target).save_model(tmp_path / "model.json")
    probe = rng.normal(size=(300, 6))
    probe[rng.random(probe.shape) < 0.2] = np.nan
    ours = TreeEnsemble.from_json_file(tmp_path / "model.json").predict(probe)
    np.testing.assert_allclose(
        ours, model.get_booster().inplace_predict(probe), rtol=1e-5, atol=1e-5
    )


def test_refuses_what_it_does_not_implement(tmp_path):
    model = xgb.XGBRegressor(n_estimators=2, objective="reg:gamma", n_jobs=1)
    model.fit(np.random.default_rng(0).random((50, 3)), np.arange(1, 51)).save_model(
        tmp_path / "m.json"
    )
    with pytest.raises(UnsupportedModel, match="reg:gamma"):
        TreeEnsemble.from_json_file(tmp_path / "m.json")


def test_wrong_feature_count_is_an_error(artifact_dir):
    ensemble = TreeEnsemble.from_dict(json.loads((artifact_dir / "peak.json").read_text()))
    with pytest.raises(ValueError, match="features"):
        ensemble.predict(np.zeros((2, ensemble.num_features + 1)))
    assert ensemble.predict(np.zeros((0, ensemble.num_features))).shape == (0,)
