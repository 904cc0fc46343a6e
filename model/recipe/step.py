"""The training step: `gradient_accumulation` micro-batches, clipping, the optimizer step; and the
loop of N steps the agent measures and simulate fakes."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
from torch import nn

from vram_ml.model.recipe.stages import stage_for

if TYPE_CHECKING:
    from vram_ml.spec import Spec

MAX_GRAD_NORM = 1.0  # HF TrainingArguments.max_grad_norm


def train_step(
    spec: Spec,
    model: nn.Module,
    batch: dict,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler | None = None,
) -> torch.Tensor:
    """One optimizer step: `gradient_accumulation` x (the stage's forward and loss, for sft and
    pt the framework's, under the HF Trainer's autocast; backward), gradient clipping,
    `optimizer.step()`, `zero_grad(set_to_none=True)`; a stage with a step of its own runs it.

    Returns:
        The last micro-batch's loss, detached.
    """
    stage = stage_for(spec)
    if hasattr(stage, "train_step"):  # a step of its own (PPO: rollouts, then mini-batches)
        return stage.train_step(spec, model, batch, optimizer, scaler)
    for _ in range(spec.gradient_accumulation):
        loss = stage.forward_loss(model, batch, spec) / spec.gradient_accumulation
        (scaler.scale(loss) if scaler else loss).backward()
        loss = loss.detach()
    optimizer_step(optimizer, scaler)
    return loss


def optimizer_step(optimizer: torch.optim.Optimizer,
                   scaler: torch.amp.GradScaler | None = None) -> None:
    """Gradient clipping, `optimizer.step()` (through the fp16 scaler), `zero_grad(None)`."""
    if scaler:
        scaler.unscale_(optimizer)
    params = [p for group in optimizer.param_groups for p in group["params"]]
    torch.nn.utils.clip_grad_norm_(params, MAX_GRAD_NORM, foreach=True)
    if scaler:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def run_steps(
    spec: Spec,
    model: nn.Module,
    batch: dict,
    optimizer: torch.optim.Optimizer,
    steps: int,
    *,
    scaler: torch.amp.GradScaler | None = None,
    before_step: Callable[[int], None] | None = None,
    synchronize: Callable[[], None] | None = None,
) -> list[float]:
    """Run `steps` training steps; `before_step(n)` is called before step n (1-based: progress,
    test hooks), `synchronize` after each (CUDA: so the step's time is real).

    Returns:
        Seconds per step.
    """
    seconds = []
    for step in range(1, steps + 1):
        if before_step is not None:
            before_step(step)
        start = time.perf_counter()
        train_step(spec, model, batch, optimizer, scaler=scaler)
        if synchronize is not None:
            synchronize()
        seconds.append(time.perf_counter() - start)
    return seconds
