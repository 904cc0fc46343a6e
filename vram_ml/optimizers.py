"""Optimizer names: those of transformers' OptimizerNames (training_args.py, transformers 5.24)
that vram-ml models, their aliases, and the others, refused by name with the reason.

How each modelled optimizer's states are sized: model/formulas/model_states.py
(`OPTIMIZER_STATES`); how the recipe builds it: model/recipe/optimizer.py.
"""

from __future__ import annotations

from typing import Literal, get_args

Optimizer = Literal[
    "adamw_torch", "adamw_torch_fused", "adamw_8bit", "paged_adamw_8bit", "paged_adamw_32bit",
    "lion_8bit", "lion_32bit", "paged_lion_8bit", "paged_lion_32bit",
    "ademamix", "ademamix_8bit", "paged_ademamix_8bit", "paged_ademamix_32bit",
    "rmsprop", "rmsprop_bnb_8bit", "rmsprop_bnb_32bit", "adagrad", "sgd", "adafactor",
]
OPTIMIZERS: tuple[str, ...] = get_args(Optimizer)
# transformers' other spellings of the same optimizer (trainer_optimizer.py builds them alike)
ALIASES = {"adamw_bnb_8bit": "adamw_8bit", "rmsprop_bnb": "rmsprop_bnb_32bit"}
# The rest of OptimizerNames: accepted by transformers, refused here with why.
_PROJECTED = "projects gradients to low rank (states sized by its rank and targets)"
_FUSED_STEP = "updates inside backward (no gradient buffer), not modelled"
UNMODELLED = {
    "adamw_torch_xla": "an XLA optimizer (no CUDA)",
    "adamw_torch_npu_fused": "an Ascend NPU optimizer (no CUDA)",
    "adamw_anyprecision": "torchdistx's states in a chosen dtype",
    "adamw_torch_4bit": "torchao's 4-bit states (block scales not modelled)",
    "adamw_torch_8bit": "torchao's 8-bit states (block scales not modelled)",
    "galore_adamw": f"GaLore {_PROJECTED}",
    "galore_adamw_8bit": f"GaLore {_PROJECTED}",
    "galore_adafactor": f"GaLore {_PROJECTED}",
    "galore_adamw_layerwise": f"GaLore {_PROJECTED}, layer-wise",
    "galore_adamw_8bit_layerwise": f"GaLore {_PROJECTED}, layer-wise",
    "galore_adafactor_layerwise": f"GaLore {_PROJECTED}, layer-wise",
    "apollo_adamw": f"APOLLO {_PROJECTED}",
    "apollo_adamw_layerwise": f"APOLLO {_PROJECTED}, layer-wise",
    "lomo": f"LOMO {_FUSED_STEP}",
    "adalomo": f"AdaLomo {_FUSED_STEP}",
    "grokadamw": "grokadamw's extra gradient EMA",
    "schedule_free_radam": "schedule-free states (z and an average)",
    "schedule_free_adamw": "schedule-free states (z and an average)",
    "schedule_free_sgd": "schedule-free states (z and an average)",
    "stable_adamw": "optimi's StableAdamW states",
}
# The 8-bit twin of each optimizer with 32-bit (or parameter-dtype) states: what `fit` proposes.
EIGHT_BIT = {
    "adamw_torch": "adamw_8bit", "adamw_torch_fused": "adamw_8bit",
    "paged_adamw_32bit": "paged_adamw_8bit", "lion_32bit": "lion_8bit",
    "paged_lion_32bit": "paged_lion_8bit", "ademamix": "ademamix_8bit",
    "paged_ademamix_32bit": "paged_ademamix_8bit", "rmsprop": "rmsprop_bnb_8bit",
    "rmsprop_bnb_32bit": "rmsprop_bnb_8bit",
}


def optimizer_name(value: object) -> object:
    """An optimizer name as the Spec stores it: aliases resolved; transformers' names that are
    not modelled raise ValueError naming why (anything else is left to the Spec's validation)."""
    if not isinstance(value, str):
        return value
    name = ALIASES.get(value.strip().lower(), value.strip().lower())
    if name in UNMODELLED:
        raise ValueError(f"{name!r} is a transformers optimizer vram-ml does not model "
                         f"({UNMODELLED[name]}); modelled: {', '.join(OPTIMIZERS)}")
    return name
