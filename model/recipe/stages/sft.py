"""`stage: sft` (CustomSeq2SeqTrainer): the framework's own forward and loss (frameworks/), on the
batch of batch.py (LLaMA-Factory pads to a multiple of 8)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

if TYPE_CHECKING:
    from vram_ml.spec import Spec


def prepare(model: nn.Module, spec: Spec, device: torch.device) -> nn.Module:
    return model


def make_batch(spec: Spec, model: nn.Module, device: str | torch.device) -> dict:
    from vram_ml.model.recipe.batch import token_batch

    return token_batch(spec, model, device)


def forward_loss(model: nn.Module, batch: dict, spec: Spec) -> torch.Tensor:
    from vram_ml.model.recipe.frameworks import framework_for

    return framework_for(spec).forward_loss(model, batch, spec)
