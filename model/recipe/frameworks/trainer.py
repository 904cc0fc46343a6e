"""What both frameworks share: the Hugging Face Trainer's forward under accelerate."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from vram_ml.model.recipe.precision import autocast_dtype

if TYPE_CHECKING:
    from vram_ml.spec import Spec


def trainer_forward(model: nn.Module, batch: dict, spec: Spec) -> Any:
    """The model's forward as the HF Trainer runs it under accelerate's native AMP: inside
    autocast, then every half-precision output converted to fp32 after autocast exits
    (accelerate@v1.11.0 accelerator.py:1750-1761 `convert_outputs_to_fp32`; operations.py:765-786),
    so the logits exist in fp32 beside the loss's saved log-softmax until the output is dropped."""
    amp = autocast_dtype(spec)
    device_type = next(model.parameters()).device.type
    with torch.autocast(device_type, dtype=amp or torch.float32, enabled=amp is not None):
        outputs = model(**batch)
    if amp is not None and outputs.logits is not None and outputs.logits.dtype != torch.float32:
        outputs.logits = outputs.logits.float()
    return outputs


def cast_trainable(model: nn.Module, dtype: torch.dtype) -> None:
    """Every parameter that requires grad to `dtype` (`param.data = param.data.to(dtype)`)."""
    for param in model.parameters():
        if param.requires_grad and param.dtype != dtype:
            param.data = param.data.to(dtype)
