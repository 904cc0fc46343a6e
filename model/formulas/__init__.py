"""The closed-form estimators: `seed-formula` (the seed article, as written) and `analytical`
(the refined closed form: model states, activations, logits and the vision tower, moment by
moment). Pure Python: `predict` runs them thousands of times a second without torch.
"""

from vram_ml.model.formulas.analytical import AnalyticalEstimator
from vram_ml.model.formulas.seed_formula import SeedFormulaEstimator

__all__ = ["AnalyticalEstimator", "SeedFormulaEstimator"]
