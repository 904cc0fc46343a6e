"""`stage: kto` (CustomKTOTrainer): a target batch with the graph, a KL batch without, then the
reference's target and KL forwards.

Read from hiyouga/LLaMA-Factory@v0.9.5 src/llamafactory/:
- data/processor/feedback.py:70-87: each example's KL sample pairs its prompt with the previous
  example's response, both truncated to cutoff_len; data/collator.py:571-608 pads the target and
  the KL batch separately (B sequences each, pad_to_multiple_of 8, kto/workflow.py:48-54);
- train/kto/trainer.py:57-60 dropout off; :179-189 the target forward (fp32 logits, logps), the
  KL forward under no_grad; :194-197 chosen / rejected logits by boolean indexing (copies, kept
  for the `nansum().item()` metrics, :258-264); :202-218 the reference's target and KL forwards
  (no grad; LoRA: `disable_adapter()`); a reference always exists (kto/workflow.py:57-60).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from vram_ml.model.recipe.stages.common import (
    batch_logps,
    disable_dropout,
    model_inputs,
    reference_model,
    trainer_amp,
)
from vram_ml.model.recipe.stages.dpo import BETA, attach_reference

if TYPE_CHECKING:
    from vram_ml.spec import Spec


def prepare(model: nn.Module, spec: Spec, device: torch.device) -> nn.Module:
    attach_reference(model, spec, device)
    disable_dropout(model)
    return model


def make_batch(spec: Spec, model: nn.Module, device: str | torch.device) -> dict:
    """The target batch, the KL batch (the previous example's response: the same lengths) and
    which examples are desirable (half of them; as indices, the copies boolean masks make)."""
    from vram_ml.model.recipe.batch import token_batch

    batch = token_batch(spec, model, device)
    for key in ("input_ids", "attention_mask", "labels"):
        batch[f"kl_{key}"] = torch.roll(batch[key], 1, dims=0)
    tags = torch.arange(spec.batch_size) % 2 == 0
    batch["kto_chosen_index"] = tags.nonzero().squeeze(1).to(device)
    batch["kto_rejected_index"] = (~tags).nonzero().squeeze(1).to(device)
    return batch


def _forward(model: nn.Module, batch: dict, spec: Spec, prefix: str = ""
             ) -> tuple[torch.Tensor, torch.Tensor]:
    (logits,) = trainer_amp(spec, model, lambda: (model(**model_inputs(batch, prefix)).logits,))
    logits = logits.to(torch.float32)
    logps, valid_length = batch_logps(logits, batch[f"{prefix}labels"])
    return logits, logps, logps / valid_length


def concatenated_forward(model: nn.Module, batch: dict, spec: Spec) -> tuple[torch.Tensor, ...]:
    """Target forward, KL forward (no grad), then the chosen / rejected split (copies)."""
    target_logits, target_logps, target_logps_avg = _forward(model, batch, spec)
    with torch.no_grad():
        _, kl_logps, _ = _forward(model, batch, spec, "kl_")
    chosen, rejected = batch["kto_chosen_index"], batch["kto_rejected_index"]
    return (target_logps[chosen], target_logps[rejected], target_logits[chosen],
            target_logits[rejected], kl_logps, target_logps_avg[chosen])


def forward_loss(model: nn.Module, batch: dict, spec: Spec) -> torch.Tensor:
    """`get_batch_loss_metrics`: policy, reference (no grad), the KTO loss, the metrics."""
    chosen, rejected, chosen_logits, rejected_logits, kl, _ = concatenated_forward(
        model, batch, spec)
    with torch.no_grad(), reference_model(model) as reference:
        ref_chosen, ref_rejected, _, _, ref_kl, _ = concatenated_forward(reference, batch, spec)
    kl_term = (kl - ref_kl).mean().clamp(min=0).detach()
    losses = torch.cat((1 - torch.sigmoid(BETA * ((chosen - ref_chosen) - kl_term)),
                        1 - torch.sigmoid(BETA * (kl_term - (rejected - ref_rejected)))))
    loss = losses.nanmean()
    _ = (chosen_logits.nansum().detach(), rejected_logits.nansum().detach())  # the metrics
    return loss
