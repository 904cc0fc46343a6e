"""The recipe's dtypes, as LLaMA-Factory picks them: frozen weights and compute, autocast,
trainable parameters."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from vram_ml.spec import Spec


def compute_dtype(spec: Spec) -> torch.dtype:
    """The dtype of frozen weights and of compute (LLaMA-Factory's `compute_dtype`)."""
    return {"fp16": torch.float16, "fp32": torch.float32}.get(spec.precision, torch.bfloat16)


def autocast_dtype(spec: Spec) -> torch.dtype | None:
    """The autocast dtype, or None when the step runs without autocast."""
    return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(spec.precision)


def trainable_dtype(spec: Spec) -> torch.dtype:
    """Trainable parameters are upcast to fp32 unless the spec is pure bf16."""
    return torch.bfloat16 if spec.precision == "pure_bf16" else torch.float32
