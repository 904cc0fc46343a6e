"""The Hugging Face Trainer with peft and no TRL, as a model's own finetune.py drives it.

Read from QwenLM/Qwen@2df8e8a finetune.py (the published Qwen / Qwen-VL rows' script):
- `prepare_model_for_kbit_training(model, use_gradient_checkpointing=...)` for QLoRA
  (:344-347), then `get_peft_model`; `model.enable_input_require_grads()` under checkpointing
  (:354-355); nothing casts the adapters or the embeddings back (no TRL
  `peft_module_casting_to_bf16`): StackRules.bf16_recast is TRL's only;
- the Trainer's own compute_loss: `outputs = model(**inputs)`, the loss, nothing kept for
  metrics (StackRules.trl_accuracy is TRL's only).

The wrapping is TRL's prepare with those two rules off (StackRules decides), so it is shared.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from vram_ml.model.recipe.frameworks.trainer import trainer_forward
from vram_ml.model.recipe.frameworks.trl import prepare

if TYPE_CHECKING:
    from vram_ml.spec import Spec

__all__ = ["forward_loss", "prepare"]


def forward_loss(model: nn.Module, batch: dict, spec: Spec) -> torch.Tensor:
    """Trainer.compute_loss: the model's loss, the outputs dropped with it."""
    return trainer_forward(model, batch, spec).loss
