"""The evaluation's splits. A learned model's test rows never take part in its fit, and the rows
of one spec are never split between train and test (folds are grouped by `spec_id`).

- source: leave one source out (ours, `cuda`, and each published source): does a model learned
  from the others hold on a benchmark it never saw?
- family: leave one architecture family out (does it transfer to an unseen architecture?);
- size: train on the smaller models, test on the largest (does it extrapolate in scale?);
- random: K folds over spec_id groups (never on its own: it flatters a learned model).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vram_ml.model.learned.training_set import TrainingSet

SPLITS = ("source", "family", "size", "random")
SIZE_TEST_SHARE = 0.2  # the largest models holding about this share of rows are the test set


@dataclass
class Fold:
    train: np.ndarray  # row indices
    test: np.ndarray
    label: str


def make_folds(split: str, data: TrainingSet, k: int = 5, seed: int = 0) -> list[Fold]:
    """The folds of `split` (only folds whose training rows measured a peak).

    Raises:
        ValueError: an unknown split.
    """
    makers = {"source": lambda: _leave_one_out(data, data.source),
              "family": lambda: _leave_one_out(data, data.families),
              "size": lambda: size_folds(data), "random": lambda: grouped_folds(data, k, seed)}
    if split not in makers:
        raise ValueError(f"unknown split {split!r} (known: {', '.join(SPLITS)})")
    peaks = data.measured("peak")
    return [fold for fold in makers[split]() if peaks[fold.train].sum() >= 2 and fold.test.size]


def grouped_folds(data: TrainingSet, k: int = 5, seed: int = 0) -> list[Fold]:
    """K folds over spec_id groups, in a seeded random order."""
    groups = data.spec_ids
    unique = np.unique(groups)
    order = np.random.default_rng(seed).permutation(unique.size)
    parts = np.array_split(unique[order], min(k, unique.size))
    rows = np.arange(len(data))
    folds = []
    for i, part in enumerate(parts):
        test = np.isin(groups, part)
        folds.append(Fold(rows[~test], rows[test], f"fold {i + 1}/{len(parts)}"))
    return folds


def size_folds(data: TrainingSet, test_share: float = SIZE_TEST_SHARE) -> list[Fold]:
    """One fold: the largest models (by parameters) whose rows make up ~`test_share`."""
    sizes = data.total_params
    if not sizes.size:
        return []
    distinct = np.unique(sizes)[::-1]
    threshold = distinct[0]
    for size in distinct:
        if (sizes >= size).mean() > test_share:
            break
        threshold = size
    rows = np.arange(len(data))
    train, test = rows[sizes < threshold], rows[sizes >= threshold]
    if not train.size:
        return []
    label = f"train <= {sizes[train].max() / 1e9:.1f}B params, test >= {threshold / 1e9:.1f}B"
    return [Fold(train, test, label)]


def _leave_one_out(data: TrainingSet, labels: np.ndarray) -> list[Fold]:
    rows = np.arange(len(data))
    labels = labels.astype(str)
    return [Fold(rows[labels != label], rows[labels == label], label)
            for label in sorted(set(labels.tolist()))]
