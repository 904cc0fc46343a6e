"""TRL's SFTTrainer on the Hugging Face Trainer, with peft: how it wraps the model and steps.

Read from huggingface/trl (0.9.6-0.26.0; the lines below at v0.24.0 unless named):
- trl/models/utils.py:513-563 `prepare_peft_model` (trl/trainer/sft_trainer.py:229-275 in
  0.9.6): QLoRA calls peft's `prepare_model_for_kbit_training(model, use_gradient_checkpointing=
  args.gradient_checkpointing, gradient_checkpointing_kwargs=args.gradient_checkpointing_kwargs or
  {})` (0.25+: TRL's own, v0.25.1 trl/models/utils.py:475-517), then `get_peft_model`, then for
  4-bit under bf16 `peft_module_casting_to_bf16` (:503-510). Without quantization,
  `enable_gradient_checkpointing` (:474-500) and the Trainer call transformers'
  gradient_checkpointing_enable with its default kwargs;
- nothing casts trainable parameters: a full fine-tuning trains the weights in their load dtype;
- trl/trainer/sft_trainer.py:1083-1180 `compute_loss` (from 0.16; entropy from 0.22): the outputs
  stay alive for the metrics: entropy in chunks of 128 rows under no_grad
  (trl/trainer/utils.py:1521-1551) and the token accuracy from a shifted copy of the fp32 logits.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from vram_ml.model.formulas.stack import ENTROPY_CHUNK_ROWS, ENTROPY_FROM, StackRules
from vram_ml.model.recipe.frameworks.trainer import trainer_forward
from vram_ml.model.recipe.methods import add_lora

if TYPE_CHECKING:
    from vram_ml.spec import Spec

EMBEDDING_NAMES = ("lm_head", "embed_tokens", "wte", "wpe")  # utils.py:505


def prepare(model: nn.Module, spec: Spec) -> nn.Module:
    """`prepare_peft_model` for QLoRA, checkpointing for the rest, then LoRA."""
    rules = StackRules.of(spec)
    checkpointing = spec.gradient_checkpointing
    if spec.method == "qlora":
        if rules.peft_kbit_prepare:
            from peft import prepare_model_for_kbit_training

            model = prepare_model_for_kbit_training(
                model, use_gradient_checkpointing=checkpointing, gradient_checkpointing_kwargs={})
        else:
            _own_kbit_prepare(model, checkpointing)
    elif checkpointing:
        model.gradient_checkpointing_enable()  # transformers' default kwargs (4.x reentrant)
        if rules.reentrant_checkpoint:
            model.enable_input_require_grads()
    if spec.method in ("lora", "qlora"):
        model = add_lora(model, spec)
    if spec.method == "qlora" and rules.bf16_recast:
        _peft_module_casting_to_bf16(model)
    return model


def _own_kbit_prepare(model: nn.Module, checkpointing: bool) -> None:
    """TRL >= 0.25's prepare_model_for_kbit_training: freeze, fp16/bf16 "norm" parameters to
    fp32, input grads, checkpointing with `{}` (torch's default: reentrant)."""
    for name, param in model.named_parameters():
        param.requires_grad = False
        if param.dtype in (torch.float16, torch.bfloat16) and "norm" in name.lower():
            param.data = param.data.to(torch.float32)
    if checkpointing:
        model.enable_input_require_grads()
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={})


def _peft_module_casting_to_bf16(model: nn.Module) -> None:
    """Modules named "norm" (and LayerNorms) to fp32; fp32 embeddings / lm_head to bf16."""
    for name, module in model.named_modules():
        if isinstance(module, nn.LayerNorm) or "norm" in name:
            module.to(torch.float32)
        elif any(part in name for part in EMBEDDING_NAMES):
            weight = getattr(module, "weight", None)
            if weight is not None and weight.dtype == torch.float32:
                module.to(torch.bfloat16)


def forward_loss(model: nn.Module, batch: dict, spec: Spec) -> torch.Tensor:
    """SFTTrainer.compute_loss: the Trainer's loss, then its metrics on the kept fp32 logits."""
    outputs = trainer_forward(model, batch, spec)
    rules = StackRules.of(spec)
    if rules.trl_accuracy and outputs.logits is not None:
        with torch.no_grad():
            if rules.trl >= ENTROPY_FROM:
                _entropy(outputs.logits)
            shifted = outputs.logits[..., :-1, :].contiguous()
            predictions = shifted.argmax(dim=-1)
            labels = batch["labels"][..., 1:]
            mask = labels != -100
            _ = ((predictions == labels) & mask).sum() / mask.sum().clamp(min=1)
            del shifted, predictions
    return outputs.loss


def _entropy(logits: torch.Tensor) -> torch.Tensor:
    """trl/trainer/utils.py:1521-1551 entropy_from_logits: log-softmax per chunk of rows."""
    flat = logits.reshape(-1, logits.shape[-1])
    parts = []
    for chunk in flat.split(ENTROPY_CHUNK_ROWS, dim=0):
        logps = torch.nn.functional.log_softmax(chunk, dim=-1)
        parts.append(-(torch.exp(logps) * logps).sum(-1))
    return torch.cat(parts)
