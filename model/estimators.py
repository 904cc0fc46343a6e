"""The four estimators by name; imported lazily so `predict` never loads what it does not use."""

from __future__ import annotations

from importlib import import_module

from vram_ml.model.estimate import Estimator

# name -> (module, class). Order is display order everywhere.
ESTIMATORS: dict[str, tuple[str, str]] = {
    "seed-formula": ("vram_ml.model.formulas", "SeedFormulaEstimator"),
    "analytical": ("vram_ml.model.formulas", "AnalyticalEstimator"),
    "simulate": ("vram_ml.model.simulate", "SimulateEstimator"),
    "learned": ("vram_ml.model.learned", "LearnedEstimator"),
}


def get_estimator(name: str, **options) -> Estimator:
    """Instantiate an estimator by name.

    Raises:
        KeyError: unknown name (the message lists the known ones).
    """
    if name not in ESTIMATORS:
        raise KeyError(f"unknown estimator {name!r} (known: {', '.join(ESTIMATORS)})")
    module_name, class_name = ESTIMATORS[name]
    return getattr(import_module(module_name), class_name)(**options)
