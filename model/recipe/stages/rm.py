"""`stage: rm` (PairwiseTrainer): a value head scores chosen and rejected in one forward.

Read from hiyouga/LLaMA-Factory@v0.9.5 src/llamafactory/:
- train/rm/workflow.py:46-49: `load_model(..., add_valuehead=True)` (TRL's
  AutoModelForCausalLMWithValueHead, model/loader.py:185-197) and the pairwise collator
  (2B sequences, pad_to_multiple_of 8); dropout stays on (no disable_dropout);
- train/rm/trainer.py:98-106: `_, _, values = model(**inputs, output_hidden_states=True, ...)`,
  the score at each sequence's last token, `-logsigmoid(chosen - rejected)`. The wrapper still
  computes and upcasts the LM logits (modeling_value_head.py:162-179); nothing uses them, so they
  are freed after the forward, and the output head gets no gradient.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from vram_ml.model.recipe.stages.common import (
    add_value_head,
    model_inputs,
    pairwise_batch,
    trainer_amp,
    value_head_forward,
)

if TYPE_CHECKING:
    from vram_ml.spec import Spec


def prepare(model: nn.Module, spec: Spec, device: torch.device) -> nn.Module:
    add_value_head(model)
    return model


def make_batch(spec: Spec, model: nn.Module, device: str | torch.device) -> dict:
    return pairwise_batch(spec, model, device)


def forward_loss(model: nn.Module, batch: dict, spec: Spec) -> torch.Tensor:
    """PairwiseTrainer.compute_loss: values of 2B sequences, the pairwise loss at the last
    token of each."""
    inputs = model_inputs(batch)
    lm_logits, values = trainer_amp(spec, model, lambda: value_head_forward(model, inputs))
    del lm_logits  # `_, _, values = model(...)`: the logits are dropped at once
    last = (batch["attention_mask"].sum(dim=-1, keepdim=True) - 1).to(values.device)
    scores = values.gather(dim=-1, index=last).squeeze(-1)
    chosen, rejected = scores.split(batch["input_ids"].size(0) // 2, dim=0)
    return -F.logsigmoid(chosen.float() - rejected.float()).mean()
