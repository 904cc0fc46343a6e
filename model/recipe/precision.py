"""The recipe's dtypes: frozen weights and compute (LLaMA-Factory's `compute_dtype`; under trl
the load dtype), autocast, trainable parameters (as the spec's framework casts them)."""

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
    """The dtype base parameters train in: LLaMA-Factory upcasts them to fp32 unless pure bf16;
    TRL trains them in their load dtype (StackRules.fp32_trainable). LoRA adapters are fp32
    where peft casts them (StackRules.fp32_adapters, methods.add_lora)."""
    from vram_ml.model.formulas.stack import StackRules

    if StackRules.of(spec).fp32_trainable:
        return torch.float32
    return compute_dtype(spec)
