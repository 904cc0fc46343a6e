"""Evaluate a saved XGBoost JSON model with numpy alone: the predict path never imports xgboost.

`import xgboost` costs about a second (it imports scikit-learn), more than `vram-ml predict` may
take in all. The model XGBoost writes with `save_model("x.json")` is plain JSON: per tree, the
arrays `left_children`, `right_children`, `split_indices`, `split_conditions` (the leaf value at a
leaf), `default_left` (where a missing value goes), and a global `base_score`. We pack every tree
into one flat node table and walk all trees for all rows at once, one level per step.

XGBoost's own rules, kept here: features are compared as float32, `x < condition` goes left, NaN
goes the default way, and the prediction is `base_score + sum of leaves` for identity-link
objectives (the only ones this project trains). A test holds this equal to xgboost's predictions.

Example:
    ensemble = TreeEnsemble.from_json_file(Path("peak.json"))
    margins = ensemble.predict(features)  # float64, one per row
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

# Objectives whose output is base_score + sum of leaves (no link function).
ROWS_PER_CHUNK = 8192  # bounds memory: trees x rows node ids per chunk
IDENTITY_OBJECTIVES = (
    "reg:squarederror",
    "reg:quantileerror",
    "reg:absoluteerror",
    "reg:pseudohubererror",
)


class UnsupportedModel(ValueError):
    """The JSON holds something this evaluator does not implement; the message is one line."""


@dataclass(frozen=True)
class TreeEnsemble:
    """All trees of one single-target gbtree model as flat arrays (node ids are global)."""

    roots: np.ndarray  # int64 (trees,): global id of each tree's root
    left: np.ndarray  # int64 (nodes,): left child; a leaf points to itself
    right: np.ndarray  # int64 (nodes,)
    feature: np.ndarray  # int64 (nodes,): split feature (0 at leaves)
    threshold: np.ndarray  # float32 (nodes,): split condition; the leaf value at leaves
    default_left: np.ndarray  # bool (nodes,)
    is_leaf: np.ndarray  # bool (nodes,)
    base_score: float
    num_features: int
    max_depth: int
    siblings: bool  # every right child is its left sibling + 1 (XGBoost's layout): one gather less

    @classmethod
    def from_json_file(cls, path: Path) -> TreeEnsemble:
        return cls.from_dict(json.loads(Path(path).read_text()))

    @classmethod
    def from_dict(cls, model: dict[str, Any]) -> TreeEnsemble:
        """Pack an XGBoost JSON model (the dict `save_model(*.json)` wrote).

        Raises:
            UnsupportedModel: not a single-target gbtree with numeric splits and identity link.
        """
        learner = model["learner"]
        objective = learner["objective"]["name"]
        if objective not in IDENTITY_OBJECTIVES:
            raise UnsupportedModel(f"objective {objective!r} is not an identity-link regression")
        params = learner["learner_model_param"]
        if int(params.get("num_target", "1")) != 1 or int(params.get("num_class", "0")) > 1:
            raise UnsupportedModel("only single-target models are supported")
        booster = learner["gradient_booster"]
        if booster["name"] != "gbtree":
            raise UnsupportedModel(f"booster {booster['name']!r} is not gbtree")
        trees = booster["model"]["trees"]
        if not trees:
            raise UnsupportedModel("the model has no trees")
        return cls._pack(trees, _parse_base_score(params["base_score"]), int(params["num_feature"]))

    @classmethod
    def _pack(
        cls, trees: list[dict[str, Any]], base_score: float, num_features: int
    ) -> TreeEnsemble:
        offsets = np.cumsum([0] + [len(tree["left_children"]) for tree in trees])
        left, right, feature, threshold, default_left = [], [], [], [], []
        for offset, tree in zip(offsets, trees, strict=False):
            if any(tree.get("split_type", ())):
                raise UnsupportedModel("categorical splits are not supported")
            tree_left = np.asarray(tree["left_children"], dtype=np.int64)
            tree_right = np.asarray(tree["right_children"], dtype=np.int64)
            own = np.arange(len(tree_left), dtype=np.int64)
            leaf = tree_left == -1
            left.append(np.where(leaf, own, tree_left) + offset)
            right.append(np.where(leaf, own, tree_right) + offset)
            feature.append(np.where(leaf, 0, np.asarray(tree["split_indices"], dtype=np.int64)))
            threshold.append(np.asarray(tree["split_conditions"], dtype=np.float32))
            default_left.append(np.asarray(tree["default_left"], dtype=bool))
        left_all = np.concatenate(left)
        ensemble = cls(
            roots=offsets[:-1].astype(np.int64),
            left=left_all,
            right=np.concatenate(right),
            feature=np.concatenate(feature),
            threshold=np.concatenate(threshold),
            default_left=np.concatenate(default_left),
            is_leaf=left_all == np.arange(len(left_all)),
            base_score=base_score,
            num_features=num_features,
            max_depth=0,
            siblings=False,
        )
        object.__setattr__(ensemble, "max_depth", ensemble._deepest())
        inner = ~ensemble.is_leaf
        object.__setattr__(
            ensemble, "siblings", bool(np.all(ensemble.right[inner] == ensemble.left[inner] + 1))
        )
        return ensemble

    def _deepest(self) -> int:
        """The number of levels of the deepest tree."""
        frontier, depth = self.roots.copy(), 0
        while True:
            inner = frontier[~self.is_leaf[frontier]]
            if inner.size == 0:
                return depth
            frontier = np.concatenate([self.left[inner], self.right[inner]])
            depth += 1
            if depth > 64:
                raise UnsupportedModel("a tree deeper than 64 levels (corrupt model?)")

    def predict(self, features: np.ndarray) -> np.ndarray:
        """base_score + the sum of every tree's leaf, for each row of `features` (rows x features).

        Raises:
            ValueError: the matrix has the wrong number of columns.
        """
        matrix = np.asarray(features, dtype=np.float32)
        if matrix.ndim != 2 or matrix.shape[1] != self.num_features:
            raise ValueError(f"expected (rows, {self.num_features}) features, got {matrix.shape}")
        chunks = [
            self._predict_chunk(matrix[start : start + ROWS_PER_CHUNK])
            for start in range(0, matrix.shape[0], ROWS_PER_CHUNK)
        ]
        return np.concatenate(chunks) if chunks else np.zeros(0)

    def _predict_chunk(self, matrix: np.ndarray) -> np.ndarray:
        # Feature-major layout, plus one row of -inf that every leaf "splits" on: -inf is never
        # >= a leaf's value, so a leaf sends each row to its own index (itself) and rows that
        # reached a leaf early stay there while deeper trees go on.
        rows = matrix.shape[0]
        columns = np.empty((self.num_features + 1, rows), dtype=np.float32)
        columns[:-1] = matrix.T
        columns[-1] = -np.inf
        flat = columns.ravel()
        offset = np.where(self.is_leaf, self.num_features, self.feature) * rows
        row_index = np.arange(rows)[None, :]
        has_missing = bool(np.isnan(matrix).any())
        node = np.repeat(self.roots[:, None], rows, axis=1)
        for _ in range(self.max_depth):
            value = flat[offset[node] + row_index]
            go_right = value >= self.threshold[node]
            if has_missing:
                go_right |= np.isnan(value) & ~self.default_left[node]
            if self.siblings:
                node = self.left[node] + go_right
            else:
                node = np.where(go_right, self.right[node], self.left[node])
        return self.base_score + self.threshold[node].sum(axis=0, dtype=np.float64)


def _parse_base_score(text: str) -> float:
    # XGBoost 3 writes a vector such as "[6.574782E-1]"; 2.x wrote a bare number.
    values = [float(part) for part in str(text).strip("[] ").split(",") if part.strip()]
    if len(values) != 1:
        raise UnsupportedModel(f"expected one base_score, got {text!r}")
    return values[0]
