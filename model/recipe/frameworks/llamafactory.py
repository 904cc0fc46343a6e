"""`llamafactory-cli train` (LLaMA-Factory 0.9.5, stage sft): how it wraps the model and steps.

Read from hiyouga/LLaMA-Factory@v0.9.5, src/llamafactory/:
- model/loader.py:155, :180-183: weights in the checkpoint's dtype ("auto"), then patch_model
  (gradient checkpointing), then init_adapter (LoRA, fp32 casts);
- model/model_utils/checkpointing.py:80-134, :164-178: its own gradient_checkpointing_enable:
  `torch.utils.checkpoint.checkpoint` with `use_reentrant=True` (model_args.py:149-151), applied
  through a wrapper that checkpoints a layer only when it holds a trainable parameter (and then
  sets requires_grad on its hidden-states input); other layers run as they are. transformers' own
  gradient_checkpointing_enable (its enable_input_require_grads, 5.x's non-reentrant default) is
  never called;
- model/adapter.py:283-288, :313-325: get_peft_model (peft casts adapters to fp32 itself), then
  every trainable parameter to fp32 unless pure_bf16; no prepare_model_for_kbit_training;
- train/sft/trainer.py:151-163: the model's own loss through the HF Trainer (accelerate's AMP).
The collator's padding to a multiple of 8 is `StackRules.padded_seq_len` (the recipe's batch).
"""

from __future__ import annotations

from functools import partial, wraps
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from vram_ml.model.recipe.frameworks.trainer import cast_trainable, trainer_forward
from vram_ml.model.recipe.methods import add_lora
from vram_ml.model.recipe.precision import trainable_dtype

if TYPE_CHECKING:
    from vram_ml.spec import Spec

USE_REENTRANT_GC = True  # hparams/model_args.py:149-151 `use_reentrant_gc: bool = True`


def prepare(model: nn.Module, spec: Spec) -> nn.Module:
    """Checkpointing (LLaMA-Factory's wrapper), LoRA, fp32 trainable parameters."""
    if spec.gradient_checkpointing:
        enable_checkpointing(model, {"use_reentrant": USE_REENTRANT_GC})
    if spec.method in ("lora", "qlora"):
        model = add_lora(model, spec)
    if spec.precision != "pure_bf16":
        cast_trainable(model, trainable_dtype(spec))
    return model


def enable_checkpointing(model: nn.Module, kwargs: dict[str, Any]) -> None:
    """`_gradient_checkpointing_enable` (checkpointing.py:106-134) with
    `get_custom_gradient_checkpointing_func` (:80-103), on the installed transformers."""
    from torch.utils.checkpoint import checkpoint

    checkpoint_func = only_trainable_layers(partial(checkpoint, **kwargs))
    model._set_gradient_checkpointing(enable=True, gradient_checkpointing_func=checkpoint_func)
    model.config.use_cache = False


def only_trainable_layers(checkpoint_func):
    """Checkpoint a layer only if one of its parameters requires grad, and then make its first
    floating tensor argument (the hidden states) require grad; run the others directly."""

    @wraps(checkpoint_func)
    def custom_checkpoint(func, *args, **kwargs):
        module = _layer_of(func)
        if not any(param.requires_grad for param in module.parameters()):
            return func(*args, **kwargs)
        for arg in args:
            if torch.is_tensor(arg) and torch.is_floating_point(arg):
                arg.requires_grad_(True)
                break
        return checkpoint_func(func, *args, **kwargs)

    return custom_checkpoint


def _layer_of(func) -> nn.Module:
    """The layer a checkpointed call belongs to. transformers <= 5.6 passes
    `partial(super().__call__, **kwargs)`, a bound method (LLaMA-Factory reads
    `func.func.__self__`); 5.24 passes `partial(forward, self, **kwargs)`
    (modeling_layers.py:123)."""
    inner = func.func if isinstance(func, partial) else func
    owner = getattr(inner, "__self__", None)
    if owner is None and isinstance(func, partial) and func.args:
        owner = func.args[0]
    return owner


def forward_loss(model: nn.Module, batch: dict, spec: Spec) -> torch.Tensor:
    """CustomSeq2SeqTrainer.compute_loss for sft: the model's loss; the outputs are dropped."""
    return trainer_forward(model, batch, spec).loss
