"""How each framework builds, wraps and steps the model, one module per `Spec.framework`.

A framework module has two functions, called by the recipe (model_build.py, step.py):

- `prepare(model, spec) -> model`: after the model is built, quantized and its trainable
  parameters marked: gradient checkpointing, LoRA (peft), and the dtype casts the framework does;
- `forward_loss(model, batch, spec) -> loss`: one micro-batch's forward and loss as its trainer
  computes it (what stays alive until backward).

Adding a framework is adding a module here and its name in `FRAMEWORKS` (and in `Spec.framework`,
with its rules in model/formulas/stack.py). Neither LLaMA-Factory nor TRL is imported: the code
below was written from reading theirs, at the versions model/formulas/stack.py names.
"""

from __future__ import annotations

from types import ModuleType
from typing import TYPE_CHECKING

from vram_ml.model.recipe.frameworks import hf_trainer, llamafactory, trl

if TYPE_CHECKING:
    from vram_ml.spec import Spec

FRAMEWORKS: dict[str, ModuleType] = {
    "llamafactory": llamafactory, "trl": trl, "hf_trainer": hf_trainer}


def framework_for(spec: Spec) -> ModuleType:
    return FRAMEWORKS[spec.framework]
