"""The learned model's regressor: XGBoost on the residual over the analytical estimate.

Trees cannot extrapolate: a tree trained on 0.5B-8B models answers a 70B model with a value it
saw for 8B. So the trees never predict bytes. They predict `log(measured / analytical)`, and the
analytical estimator carries the scale: `prediction = analytical * exp(residual)`. A correction
learned on small models ("+12% when attention is eager and activations dominate") applies to a
large one unchanged.

Two regressors make one answer: a point estimate (squared error on the log ratio) and an upper
bound (`reg:quantileerror`, q0.95), widened by a conformal margin learned from out-of-fold
residuals so that the bound holds on samples the trees have not seen. OOM samples are lower bounds
(the peak exceeded the card): they can only widen that margin, and never enter the point fit.

scikit-learn's contract: `__init__` only stores hyperparameters, `fit` returns self, learned
attributes end in `_`.

Example:
    pipeline = learned_pipeline(quantile=0.95).fit(specs, measured_bytes)
    upper_bytes = pipeline.predict(new_specs)
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, RegressorMixin, TransformerMixin, clone
from sklearn.model_selection import KFold
from sklearn.pipeline import Pipeline
from sklearn.utils.validation import check_is_fitted

from vram_ml.model.learned.features import BASE_COLUMN, FEATURE_NAMES, feature_matrix


class SpecFeatures(TransformerMixin, BaseEstimator):
    """Specs -> the feature matrix of features.py (stateless: `fit` only records the names)."""

    def fit(self, specs: Any, y: Any = None) -> SpecFeatures:
        self.n_features_out_ = len(FEATURE_NAMES)
        return self

    def transform(self, specs: Any) -> np.ndarray:
        check_is_fitted(self, "n_features_out_")
        return feature_matrix(list(specs))[0]

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        return np.asarray(FEATURE_NAMES, dtype=object)


class ResidualXGBRegressor(RegressorMixin, BaseEstimator):
    """XGBoost on `log(y / exp(X[:, base_column]))`; predicts bytes.

    Args:
        base_column: the column holding the log of the analytical estimate.
        quantile: None for the point estimate (squared error), else the quantile to bound (0.95).
        calibration_folds: out-of-fold folds for the conformal margin of a quantile model
            (0: no margin).
        n_estimators, max_depth, learning_rate, subsample, colsample_bytree, min_child_weight,
        reg_lambda: XGBoost's, with defaults for a few hundred samples.
        random_state: reproducibility.
        n_jobs: XGBoost threads. 1 by default: a few hundred rows gain nothing from threads, and
            OpenMP threads on a busy machine can make a 0.1 s fit take half a minute.
    """

    def __init__(
        self,
        base_column: int = BASE_COLUMN,
        quantile: float | None = None,
        calibration_folds: int = 5,
        n_estimators: int = 200,
        max_depth: int = 4,
        learning_rate: float = 0.05,
        subsample: float = 0.8,
        colsample_bytree: float = 0.8,
        min_child_weight: float = 2.0,
        reg_lambda: float = 1.0,
        random_state: int = 0,
        n_jobs: int = 1,
    ) -> None:
        self.base_column = base_column
        self.quantile = quantile
        self.calibration_folds = calibration_folds
        self.n_estimators = n_estimators
        self.max_depth = max_depth
        self.learning_rate = learning_rate
        self.subsample = subsample
        self.colsample_bytree = colsample_bytree
        self.min_child_weight = min_child_weight
        self.reg_lambda = reg_lambda
        self.random_state = random_state
        self.n_jobs = n_jobs

    def fit(self, X: Any, y: Any, lower_bound: Any = None) -> ResidualXGBRegressor:
        """Fit on the rows whose `y` is a measured peak; rows flagged in `lower_bound` (OOM: y is
        the card's memory, which the peak exceeded) only widen a quantile model's margin.

        Raises:
            ValueError: no measured rows, a non-positive target, or mismatched shapes.
        """
        X, y, bound = _check(X, y, lower_bound)
        measured = ~bound
        if not measured.any():
            raise ValueError("no measured samples to fit (all are lower bounds)")
        self.n_features_in_ = X.shape[1]
        self.model_ = self._xgb().fit(
            X[measured], np.log(y[measured]) - X[measured, self.base_column]
        )
        self.margin_ = 0.0
        self.censored_misses_ = 0
        if self.quantile is not None and self.calibration_folds >= 2:
            self.margin_ = self._conformal_margin(X, y, bound)
        return self

    def predict_log(self, X: Any) -> np.ndarray:
        """Natural log of the predicted bytes."""
        check_is_fitted(self, "model_")
        X = np.asarray(X, dtype=np.float64)
        return X[:, self.base_column] + self.model_.predict(X) + self.margin_

    def predict(self, X: Any) -> np.ndarray:
        return np.exp(self.predict_log(X))

    def _xgb(self) -> Any:
        from xgboost import XGBRegressor

        objective: dict[str, Any] = {"objective": "reg:squarederror"}
        if self.quantile is not None:
            objective = {"objective": "reg:quantileerror", "quantile_alpha": self.quantile}
        return XGBRegressor(
            n_estimators=self.n_estimators,
            max_depth=self.max_depth,
            learning_rate=self.learning_rate,
            subsample=self.subsample,
            colsample_bytree=self.colsample_bytree,
            min_child_weight=self.min_child_weight,
            reg_lambda=self.reg_lambda,
            random_state=self.random_state,
            n_jobs=self.n_jobs,
            tree_method="hist",
            **objective,
        )

    def _conformal_margin(self, X: np.ndarray, y: np.ndarray, bound: np.ndarray) -> float:
        """The smallest non-negative log margin that lifts the out-of-fold bound above a
        `quantile` share of the samples (split-conformal, finite-sample corrected).

        Measured rows are scored out of fold (folds over measured rows only, so adding censored
        rows never changes their scores). A censored row (OOM: `y` is the card, the peak was
        above it) is scored by the model of all measured rows, which never saw it: below the
        card the bound missed by an unknown amount, an infinite score; at or above the card
        whether it covers is unknown, and it is left out. So censored rows can only widen the
        margin. When misses reach the quantile the margin is the largest finite score and
        `censored_misses_` says how many misses it could not cover."""
        measured = np.flatnonzero(~bound)
        folds = min(self.calibration_folds, measured.size)
        self.censored_misses_ = 0
        if folds < 2:
            return 0.0
        scores = np.full(len(y), np.nan)
        inner = clone(self).set_params(calibration_folds=0)
        splitter = KFold(folds, shuffle=True, random_state=self.random_state)
        for train, test in splitter.split(measured):
            fitted = clone(inner).fit(X[measured[train]], y[measured[train]])
            rows = measured[test]
            scores[rows] = np.log(y[rows]) - fitted.predict_log(X[rows])
        if bound.any():
            whole = clone(inner).fit(X[measured], y[measured])
            censored = np.log(y[bound]) - whole.predict_log(X[bound])
            scores[bound] = np.where(censored > 0, np.inf, np.nan)
            self.censored_misses_ = int((censored > 0).sum())
        scores = scores[~np.isnan(scores)]
        level = min(1.0, np.ceil((len(scores) + 1) * self.quantile) / len(scores))
        margin = float(np.quantile(scores, level, method="higher"))
        if not np.isfinite(margin):
            finite = scores[np.isfinite(scores)]
            margin = float(finite.max()) if finite.size else 0.0
        return max(0.0, margin)


def learned_pipeline(**params: Any) -> Pipeline:
    """Specs in, bytes out: SpecFeatures then ResidualXGBRegressor(**params)."""
    return Pipeline([("features", SpecFeatures()), ("residual", ResidualXGBRegressor(**params))])


def _check(X: Any, y: Any, lower_bound: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    X = np.asarray(X, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if X.ndim != 2 or y.shape != (X.shape[0],):
        raise ValueError(f"X must be (rows, features) and y (rows,): got {X.shape}, {y.shape}")
    bound = np.zeros(len(y), bool) if lower_bound is None else np.asarray(lower_bound, bool)
    if bound.shape != y.shape:
        raise ValueError("lower_bound must have one flag per row")
    if not np.all(np.isfinite(y) & (y > 0)):
        raise ValueError("targets must be positive byte counts")
    return X, y, bound
