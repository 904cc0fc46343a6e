"""Run several estimators on one spec: the `estimate` command's library function."""

from __future__ import annotations

from vram_ml.model.estimate import Estimate, get_estimator
from vram_ml.spec import Spec


def estimate_all(spec: Spec, names: list[str]) -> list[Estimate]:
    """One Estimate per estimator name, in the order given.

    Raises:
        KeyError: an unknown estimator name.
        ValueError: an estimator refuses the spec (one line, e.g. simulate without transformers).
    """
    return [get_estimator(name).estimate(spec) for name in names]
