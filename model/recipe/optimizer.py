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
    """The optimizer HF Trainer builds for `spec.optimizer` (transformers 5.24
    trainer_optimizer.py): decay / no-decay groups (weight decay 0, LLaMA-Factory's default),
    torch optimizers with `foreach=True` as on CUDA, bitsandbytes' for the 8-bit / paged / Lion /
    AdEMAMix / bnb RMSprop names.

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
    if name in ("adamw_torch", "adamw_torch_fused"):
        return torch.optim.AdamW(groups, lr=lr, **_CUDA_DEFAULT[name])
    if name in ("rmsprop", "adagrad"):  # HF: momentum 0; CUDA defaults to foreach
        cls = torch.optim.RMSprop if name == "rmsprop" else torch.optim.Adagrad
        return cls(groups, lr=lr, foreach=True)
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr)
    if name == "adafactor":
        from transformers.optimization import Adafactor

        return Adafactor(groups, lr=lr, scale_parameter=False, relative_step=False)
    family = next((f for f in ("adamw", "lion", "rmsprop", "ademamix") if f in name), None)
    if family is None:
        raise UnsupportedRecipe(f"optimizer: {name!r} is not in the recipe")
    import bitsandbytes as bnb

    # as transformers' _get_bitsandbytes_optimizer: one class per family, bits and paging by name
    cls = {"adamw": bnb.optim.AdamW, "lion": bnb.optim.Lion, "rmsprop": bnb.optim.RMSprop,
           "ademamix": bnb.optim.AdEMAMix}[family]
    kwargs = {"optim_bits": 8 if "8bit" in name else 32}
    if family != "rmsprop":
        kwargs["is_paged"] = "paged" in name
    return cls(groups, lr=lr, **kwargs)


_CUDA_DEFAULT = {"adamw_torch": {"foreach": True}, "adamw_torch_fused": {"fused": True}}


def make_grad_scaler(spec: Spec, device: str | torch.device) -> torch.amp.GradScaler | None:
    """HF Trainer's GradScaler for fp16 AMP on CUDA; None otherwise."""
    if spec.precision != "fp16" or torch.device(device).type != "cuda":
        return None
    return torch.amp.GradScaler("cuda")
