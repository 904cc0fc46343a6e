"""`stage: dpo` (CustomDPOTrainer): chosen and rejected in one forward, then the reference's
log-probabilities; ORPO and SimPO (`pref_loss: orpo | simpo`) have no reference.

Read from hiyouga/LLaMA-Factory@v0.9.5 src/llamafactory/train/dpo/trainer.py:
- :57-60 dropout off in the policy and the reference; :70 no precomputed reference log-probs;
- :223-252 `concatenated_forward`: the batch cloned when a reference is used, the logits
  `.to(torch.float32)`, `get_batch_logps`, split at 2B // 2; the fp32 logits are returned too;
- :254-269 the reference under `torch.no_grad()`: a loaded model, or the policy in
  `disable_adapter()` (LoRA without `ref_model`);
- :271-312 `get_batch_loss_metrics`: the policy forward, then the reference, the loss, then
  metrics read from the policy's logits, so they stay alive through the reference forward;
- :150-166, :195-201 the odds-ratio and SimPO losses (logps / valid length).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from vram_ml.model.recipe.stages.common import (
    attach_companion,
    batch_logps,
    build_frozen_model,
    disable_dropout,
    model_inputs,
    pairwise_batch,
    reference_model,
    trainer_amp,
)
from vram_ml.stages import companion_spec, uses_reference

if TYPE_CHECKING:
    from vram_ml.spec import Spec

BETA = 0.1  # pref_beta: no effect on memory
SIMPO_GAMMA = 0.5


def prepare(model: nn.Module, spec: Spec, device: torch.device) -> nn.Module:
    """Dropout off; the reference model when one is loaded (a `ref_model`, or full / freeze)."""
    attach_reference(model, spec, device)
    disable_dropout(model)
    return model


def attach_reference(model: nn.Module, spec: Spec, device: torch.device,
                     value_head: bool = False) -> None:
    """`create_ref_model` (train/trainer_utils.py:116-146): a `ref_model` loads with
    `ref_model_quantization_bit`; without one, LoRA needs none and full / freeze load a frozen
    copy of the policy's model (quantized as the policy is)."""
    if not uses_reference(spec.stage, spec.pref_loss):
        return
    if spec.ref_model is None and spec.method in ("lora", "qlora"):
        return
    bits = spec.ref_model_quantization_bit if spec.ref_model is not None else spec.quant_bits
    reference = build_frozen_model(companion_spec(spec, "ref_model", bits), device, value_head)
    disable_dropout(reference)
    attach_companion(model, "reference", reference)


def make_batch(spec: Spec, model: nn.Module, device: str | torch.device) -> dict:
    return pairwise_batch(spec, model, device)


def concatenated_forward(model: nn.Module, batch: dict, spec: Spec) -> dict[str, torch.Tensor]:
    """One forward over the 2B sequences: fp32 logits, summed (ORPO / SimPO: averaged) logps."""
    if uses_reference(spec.stage, spec.pref_loss):  # nested_detach(batch, clone=True)
        batch = {key: value.detach().clone() for key, value in batch.items()}
    (logits,) = trainer_amp(spec, model, lambda: (model(**model_inputs(batch)).logits,))
    logits = logits.to(torch.float32)
    logps, valid_length = batch_logps(logits, batch["labels"])
    if spec.pref_loss in ("ipo", "orpo", "simpo"):
        logps = logps / valid_length
    half = batch["input_ids"].size(0) // 2
    chosen_logps, rejected_logps = logps.split(half, dim=0)
    chosen_logits, rejected_logits = logits.split(half, dim=0)
    return {"chosen_logps": chosen_logps, "rejected_logps": rejected_logps,
            "chosen_logits": chosen_logits, "rejected_logits": rejected_logits}


def forward_loss(model: nn.Module, batch: dict, spec: Spec) -> torch.Tensor:
    """`get_batch_loss_metrics`: policy, reference (no grad), loss, then the logits metrics."""
    with_reference = uses_reference(spec.stage, spec.pref_loss)
    policy = concatenated_forward(model, batch, spec)
    chosen, rejected = policy["chosen_logps"], policy["rejected_logps"]
    if with_reference:
        with torch.no_grad(), reference_model(model) as reference:
            ref = concatenated_forward(reference, batch, spec)
            ref_chosen, ref_rejected = ref["chosen_logps"], ref["rejected_logps"]
            del ref
        losses = -F.logsigmoid(BETA * ((chosen - ref_chosen) - (rejected - ref_rejected)))
    elif spec.pref_loss == "orpo":
        log_odds = (chosen - rejected) - (torch.log1p(-torch.exp(chosen))
                                          - torch.log1p(-torch.exp(rejected)))
        losses = -chosen - BETA * F.logsigmoid(log_odds)
    else:  # simpo
        losses = -F.logsigmoid(BETA * (chosen - rejected) - SIMPO_GAMMA)
    loss = losses.mean()
    # the metrics (`.mean().item()` on the logits); detached here so fake tensors can run them
    _ = (policy["chosen_logits"].mean().detach(), policy["rejected_logits"].mean().detach())
    del policy
    return loss
