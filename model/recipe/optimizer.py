"""The optimizer HF Trainer builds for the spec, and its fp16 GradScaler."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import torch
from torch import nn

from vram_ml.model.recipe.unsupported import UnsupportedRecipe

if TYPE_CHECKING:
    from vram_ml.spec import Spec


def trainable_parameters(model: nn.Module) -> Iterator[tuple[str, nn.Parameter]]:
    return ((name, p) for name, p in model.named_parameters() if p.requires_grad)


def make_optimizer(spec: Spec, model: nn.Module) -> torch.optim.Optimizer:
    """The optimizer HF Trainer builds for `spec.optimizer`: decay / no-decay groups (weight
    decay 0, LLaMA-Factory's default), AdamW with `foreach=True` as on CUDA.

    Raises:
        UnsupportedRecipe: an optimizer name the recipe does not know.
    """
    from transformers.trainer_pt_utils import get_parameter_names

    patterns = [r"bias", r"layernorm", r"rmsnorm", r"(?:^|\.)norm(?:$|\.)", r"_norm(?:$|\.)"]
    decay = set(get_parameter_names(model, [nn.LayerNorm], patterns))
    params = list(trainable_parameters(model))
    groups = [
        {"params": [p for n, p in params if n in decay], "weight_decay": 0.0},
        {"params": [p for n, p in params if n not in decay], "weight_decay": 0.0},
    ]
    groups = [group for group in groups if group["params"]]
    lr = 1e-4
    name = spec.optimizer
    if name == "adamw_torch":
        return torch.optim.AdamW(groups, lr=lr, foreach=True)
    if name == "adamw_torch_fused":
        return torch.optim.AdamW(groups, lr=lr, fused=True)
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr)
    if name == "adafactor":
        from transformers.optimization import Adafactor

        return Adafactor(groups, lr=lr, scale_parameter=False, relative_step=False)
    import bitsandbytes as bnb

    classes = {
        "adamw_8bit": bnb.optim.AdamW8bit,
        "paged_adamw_8bit": bnb.optim.PagedAdamW8bit,
        "paged_adamw_32bit": bnb.optim.PagedAdamW32bit,
    }
    if name not in classes:
        raise UnsupportedRecipe(f"optimizer: {name!r} is not in the recipe")
    return classes[name](groups, lr=lr)


def make_grad_scaler(spec: Spec, device: str | torch.device) -> torch.amp.GradScaler | None:
    """HF Trainer's GradScaler for fp16 AMP on CUDA; None otherwise."""
    if spec.precision != "fp16" or torch.device(device).type != "cuda":
        return None
    return torch.amp.GradScaler("cuda")
