"""`stage: ppo` (CustomPPOTrainer on TRL 0.9.6's PPOTrainer): generate, score, roll out, train.

LLaMA-Factory 0.9.5's PPO needs trl <= 0.9.6 (vram_ml/stages.py PPO_TRL_NOTE). Read from
hiyouga/LLaMA-Factory@v0.9.5 src/llamafactory/train/ppo/ and huggingface/trl@v0.9.6:
- workflow.py:46-53: the policy with a value head, the reference (`create_ref_model(...,
  add_valuehead=True)`: LoRA none, the policy's adapter disabled instead), the reward model
  (`reward_model_type: lora`: a second, frozen fp32 adapter "reward" on the policy's base,
  trainer_utils.py:158-173; `full`: a frozen model with a value head; `api`: none);
- trainer.py:99-117: mini-batches of B, `batch_size = B x GA x ppo_buffer_size`; :176 every
  forward but generation under `torch.autocast(device.type)`: fp16 on CUDA, whatever `bf16` says;
- trainer.py:245-269, :350-419: for each chunk of B prompts, eval mode, generate (no
  autocast), the reward forward (replace_model -> the "reward" adapter), then
  `PPOTrainer.step` (trl ppo_trainer.py:647-890): no-grad forwards of the policy and the
  reference over the rollouts, then mini-batches with the graph; LLaMA-Factory's
  `batched_forward_pass` (trainer.py:421-489) returns `torch.cat(all_logits)[:, :-1]`, a fresh
  fp32 copy that `step` holds through backward, and TRL's loss computes the entropy of those
  logits on the graph (trl core.py:197-201, ppo_trainer.py:1199-1245).
Not done (memory-neutral or noted): the value-head weight swap for the reward adapter (2 x
(hidden + 1) floats), `torch_gc` (lowers reserved, not allocated memory), rewards whitening and
the advantage recursion are simplified (a few B x L floats), `ppo_epochs` (repeats the same
mini-batches).
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from vram_ml.model.recipe.stages.common import (
    add_value_head,
    attach_companion,
    build_frozen_model,
    companions,
    phase,
    reference_model,
    value_head_forward,
)
from vram_ml.model.recipe.stages.dpo import attach_reference
from vram_ml.model.recipe.stages.generation import generate
from vram_ml.model.recipe.unsupported import UnsupportedRecipe
from vram_ml.stages import companion_spec, stage_refusal

if TYPE_CHECKING:
    from vram_ml.spec import Spec

CLIP_RANGE, CLIP_RANGE_VALUE, VF_COEF, KL_COEF = 0.2, 0.2, 0.1, 0.2  # PPOConfig defaults
# LLaMA-Factory's amp_context: torch.autocast(device_type) takes the device's default dtype,
# fp16 on CUDA; the recipe uses fp16 on every device so that simulate (CPU) runs what CUDA runs.
PPO_AUTOCAST = torch.float16


def prepare(model: nn.Module, spec: Spec, device: torch.device) -> nn.Module:
    """Value head, reference (full / freeze or `ref_model`), reward adapter or reward model.

    Raises:
        UnsupportedRecipe: freeze, or a 4/8-bit model with bf16 (vram_ml.stages.stage_refusal:
            bitsandbytes layers return bf16, and the rotary embedding's torch.cat of two bf16
            tensors fails under fp16 autocast, "Unexpected floating ScalarType in
            at::autocast::prioritize", ATen's device-independent rule, seen on CPU here).
    """
    refusal = stage_refusal(spec)
    if refusal:
        raise UnsupportedRecipe(refusal)
    add_value_head(model)
    attach_reference(model, spec, device, value_head=True)
    if spec.reward_model_type == "lora":
        model.add_adapter("reward", copy.deepcopy(model.peft_config["default"]))
        for name, param in model.named_parameters():
            if ".reward." in name:  # load_adapter(..., is_trainable=False): frozen, fp32
                param.requires_grad_(False)
                param.data = param.data.to(torch.float32)
    elif spec.reward_model_type == "full":
        reward = build_frozen_model(
            companion_spec(spec, "reward_model", spec.reward_model_quantization_bit), device,
            value_head=True)
        attach_companion(model, "reward", reward)
    return model


def make_batch(spec: Spec, model: nn.Module, device: str | torch.device) -> dict:
    """B prompts of `seq_len` tokens (the unsupervised processor truncates them to cutoff_len;
    the collator adds no multiple-of-8 padding)."""
    from vram_ml.model.recipe.batch import token_batch

    return token_batch(spec, model, device)


def autocast(model: nn.Module) -> torch.autocast:
    return torch.autocast(next(model.parameters()).device.type, dtype=PPO_AUTOCAST)


def train_step(spec: Spec, model: nn.Module, batch: dict, optimizer: torch.optim.Optimizer,
               scaler: torch.amp.GradScaler | None = None) -> torch.Tensor:
    """Rollouts of `gradient_accumulation` chunks of B prompts, then one mini-batch of B per
    chunk with the graph (accelerate accumulates them), then the optimizer step."""
    from vram_ml.model.recipe.step import optimizer_step

    rollouts = [rollout(model, batch, spec) for _ in range(spec.gradient_accumulation)]
    for experience in rollouts:
        loss, logits = minibatch_loss(model, experience)
        loss = loss / spec.gradient_accumulation
        (scaler.scale(loss) if scaler else loss).backward()
        loss = loss.detach()
        del logits  # `step` holds the logits copy until train_minibatch returns
    del rollouts
    optimizer_step(optimizer, scaler)
    return loss


def rollout(model: nn.Module, batch: dict, spec: Spec) -> dict[str, torch.Tensor]:
    """One chunk of B prompts: responses, scores, the policy's and the reference's logprobs and
    values (all without the graph), rewards and advantages."""
    model.train(False)  # eval mode, as LLaMA-Factory sets it before generating
    with torch.no_grad():
        with phase("generation"):
            response = generate(model, batch["input_ids"], batch["attention_mask"],
                                spec.max_new_tokens)
        input_ids = torch.cat([batch["input_ids"], response], dim=1)
        inputs = {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids)}
        scores = reward_scores(model, inputs, spec)
        logprobs, values = forward_pass(model, inputs)
        with reference_model(model) as reference:
            ref_logprobs, _ = forward_pass(reference, inputs)
        masks = inputs["attention_mask"][:, 1:].float()
        rewards = -KL_COEF * (logprobs - ref_logprobs)
        rewards[:, -1] += scores
        advantages = rewards - values
        advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)
        returns = advantages + values
    model.train()
    return {**inputs, "old_logprobs": logprobs, "values": values, "masks": masks,
            "advantages": advantages.detach(), "returns": returns}


def reward_scores(model: nn.Module, inputs: dict, spec: Spec) -> torch.Tensor:
    """get_rewards (trainer.py:388-419): the reward model's value at each last token."""
    if spec.reward_model_type == "api":
        return torch.zeros(inputs["input_ids"].size(0), device=inputs["input_ids"].device)
    reward = companions(model).get("reward")
    if reward is None:  # replace_model(target="reward"): the "reward" adapter on the base
        model.set_adapter("reward")
    try:
        with autocast(model):
            lm_logits, values = value_head_forward(reward if reward is not None else model, inputs)
        del lm_logits
    finally:
        if reward is None:
            model.set_adapter("default")
    last = inputs["attention_mask"].sum(dim=-1, keepdim=True) - 1
    return values.gather(dim=-1, index=last).squeeze(-1).float()


def forward_pass(model: nn.Module, inputs: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """batched_forward_pass without logits (trainer.py:421-489): logprobs of the tokens, values."""
    with autocast(model):
        logits, values = value_head_forward(model, inputs)
    logprobs = logprobs_from_logits(logits[:, :-1, :], inputs["input_ids"][:, 1:])
    del logits
    return logprobs, values[:, :-1]


def logprobs_from_logits(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """trl core.py:131-139."""
    logp = F.log_softmax(logits, dim=2)
    return torch.gather(logp, 2, labels.unsqueeze(2)).squeeze(-1)


def minibatch_loss(model: nn.Module, experience: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """One training mini-batch: batched_forward_pass(return_logits=True), then TRL's loss with
    the entropy of the logits copy on the graph. Returns the loss and that copy (held through
    backward, as `step` holds it)."""
    inputs = {"input_ids": experience["input_ids"], "attention_mask": experience["attention_mask"]}
    with autocast(model):
        lm_logits, values = value_head_forward(model, inputs)
    logprobs = logprobs_from_logits(lm_logits[:, :-1, :], inputs["input_ids"][:, 1:])
    all_logits = [lm_logits]
    del lm_logits
    logits = torch.cat(all_logits)[:, :-1]
    del all_logits
    vpreds = torch.cat([values])[:, :-1]
    mask, old_values = experience["masks"], experience["values"]
    clipped = torch.max(torch.min(vpreds, old_values + CLIP_RANGE_VALUE),
                        old_values - CLIP_RANGE_VALUE)
    returns = experience["returns"]
    vf_loss = 0.5 * _masked_mean(torch.max((vpreds - returns) ** 2, (clipped - returns) ** 2),
                                 mask)
    ratio = torch.exp(logprobs - experience["old_logprobs"])
    advantages = experience["advantages"]
    pg_loss = _masked_mean(torch.max(-advantages * ratio,
                                     -advantages * torch.clamp(ratio, 1 - CLIP_RANGE,
                                                               1 + CLIP_RANGE)), mask)
    loss = pg_loss + VF_COEF * vf_loss
    _ = _masked_mean(_entropy_from_logits(logits), mask).detach()  # a statistic
    return loss, logits


def _entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """trl core.py:197-201."""
    pd = F.softmax(logits, dim=-1)
    return torch.logsumexp(logits, dim=-1) - torch.sum(pd * logits, dim=-1)


def _masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return (values * mask).sum() / mask.sum()
