"""Each training stage's step, one module per `Spec.stage`, as LLaMA-Factory 0.9.5 runs it.

A stage module has three functions the recipe calls (model_build.py, batch.py, step.py):

- `prepare(model, spec, device) -> model`: after the framework has prepared the policy: a value
  head, a frozen reference or reward model (`common.attach_companion`: beside the policy, never
  inside it, so no optimizer or `.train()` reaches it), dropout off;
- `make_batch(spec, model, device) -> dict`: the stage's micro-batch (pairwise: 2B sequences;
  KTO: a target and a KL batch; PPO: prompts);
- `forward_loss(model, batch, spec) -> loss`: one micro-batch's forwards and loss, with what its
  trainer keeps alive until backward;
and may define `train_step(spec, model, batch, optimizer, scaler) -> loss` when its optimizer
step is not `gradient_accumulation` x (forward_loss, backward) (PPO: rollouts first).

Adding a stage is adding a module here and its name in `STAGES` (and in `vram_ml.stages`, with
its memory in model/formulas/stages.py). Neither LLaMA-Factory nor TRL is imported.
"""

from __future__ import annotations

from types import ModuleType
from typing import TYPE_CHECKING

from vram_ml.model.recipe.stages import dpo, kto, ppo, pt, rm, sft

if TYPE_CHECKING:
    from vram_ml.spec import Spec

STAGES: dict[str, ModuleType] = {"sft": sft, "pt": pt, "dpo": dpo, "kto": kto, "rm": rm,
                                 "ppo": ppo}


def stage_for(spec: Spec) -> ModuleType:
    return STAGES[spec.stage]
