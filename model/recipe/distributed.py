"""The recipe across GPUs: one process per GPU under torchrun, the model wrapped as accelerate and
the HF Trainer wrap it, the step as the engine runs it.

- FSDP2 (`fsdp_version: 2`): `fully_shard` on every decoder layer, then on the root, with
  MixedPrecisionPolicy(param_dtype = reduce_dtype = the compute dtype) under bf16 / fp16 AMP
  (accelerate@v1.11.0 utils/dataclasses.py:2050-2085), reshard_after_forward True for FULL_SHARD /
  HYBRID_SHARD (a 2-D mesh: replicate across nodes, shard within), False for SHARD_GRAD_OP;
  CPUOffloadPolicy for CPU offload; accelerate < 1.13 first casts the whole model to fp32
  (StackRules.fsdp_frozen_bytes).
- FSDP1: FullyShardedDataParallel with the decoder layers as units (TRANSFORMER_BASED_WRAP), and
  every trainable leaf its own unit for LoRA (peft's fsdp_auto_wrap_policy, which the Trainer
  installs for peft models), BACKWARD_PRE, limit_all_gathers, use_orig_params, MixedPrecision in
  the compute dtype, then the flat parameters that require grad upcast to fp32 (accelerate
  accelerator.py, from 0.30).
- DeepSpeed: `deepspeed.initialize` with the HF-style client AdamW and a config built from the
  spec's ZeRO fields ("auto" resolved as model/formulas/distributed.zero_settings does);
  `engine.backward`, `engine.step` (clipping by `gradient_clipping`).

Collectives: NCCL on CUDA, gloo on the CPU (the test suite's two-process rehearsal; DeepSpeed
with DS_ACCELERATOR=cpu). The spec's num_gpus is the world size torchrun gives.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist
from torch import nn

from vram_ml.model.formulas.distributed import zero_settings
from vram_ml.model.formulas.stack import StackRules
from vram_ml.model.recipe.frameworks import framework_for
from vram_ml.model.recipe.optimizer import make_optimizer
from vram_ml.model.recipe.precision import compute_dtype
from vram_ml.model.recipe.step import MAX_GRAD_NORM, run_steps
from vram_ml.model.recipe.unsupported import UnsupportedRecipe

if TYPE_CHECKING:
    from vram_ml.spec import Spec


@dataclass
class Wrapped:
    """The model as the step runs it, its optimizer, and the DeepSpeed engine (or None)."""

    model: nn.Module
    optimizer: Any
    engine: Any = None


def init_process_group(device_type: str) -> tuple[int, int, torch.device]:
    """(rank, world size, this rank's device) from torchrun's environment."""
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local = int(os.environ.get("LOCAL_RANK", rank))
    if device_type == "cuda":
        torch.cuda.set_device(local)  # before any CUDA work: one context per GPU
        device = torch.device("cuda", local)
    else:
        device = torch.device("cpu")
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device_type == "cuda" else "gloo",
                                device_id=device if device_type == "cuda" else None)
    return rank, world, device


def layer_classes(model: nn.Module) -> set[type]:
    """The decoder-layer (and vision-block) classes: the model's `_no_split_modules`."""
    names = set()
    for module in model.modules():
        names |= set(getattr(module, "_no_split_modules", None) or ())
    return {type(m) for m in model.modules() if type(m).__name__ in names}


def wrap(spec: Spec, model: nn.Module, device: torch.device) -> Wrapped:
    """Shard `model` as the spec's distributed setting does, and make its optimizer."""
    if spec.distributed == "deepspeed":
        return _deepspeed(spec, model)
    if spec.distributed != "fsdp":
        raise UnsupportedRecipe(f"distributed: {spec.distributed} is not in the multi-GPU "
                                "recipe (fsdp, deepspeed)")
    model = _fsdp2(spec, model, device) if spec.fsdp_version == 2 else _fsdp1(spec, model, device)
    return Wrapped(model, make_optimizer(spec, model))


def _mixed(spec: Spec) -> torch.dtype | None:
    return compute_dtype(spec) if spec.precision in ("bf16", "fp16") else None


def _fsdp2(spec: Spec, model: nn.Module, device: torch.device) -> nn.Module:
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import CPUOffloadPolicy, MixedPrecisionPolicy, fully_shard

    if StackRules.of(spec).fsdp_frozen_bytes(spec, 2) == 4:
        model.to(torch.float32)  # accelerate < 1.13: the whole model, before sharding
    world = spec.num_gpus
    if spec.fsdp_sharding == "HYBRID_SHARD" and spec.num_nodes > 1:
        mesh = init_device_mesh(device.type, (spec.num_nodes, world // spec.num_nodes))
    else:
        mesh = init_device_mesh(device.type, (world,))
    half = _mixed(spec)
    options: dict[str, Any] = {"mesh": mesh,
                               "reshard_after_forward": spec.fsdp_sharding != "SHARD_GRAD_OP"}
    if half is not None:
        options["mp_policy"] = MixedPrecisionPolicy(param_dtype=half, reduce_dtype=half)
    if spec.offload != "none":
        options["offload_policy"] = CPUOffloadPolicy(pin_memory=device.type == "cuda")
    classes = tuple(layer_classes(model))
    for module in reversed(list(model.modules())):
        if isinstance(module, classes):
            fully_shard(module, **options)
    fully_shard(model, **options)
    return model


def _fsdp1(spec: Spec, model: nn.Module, device: torch.device) -> nn.Module:
    import functools

    from torch.distributed.fsdp import (
        BackwardPrefetch,
        CPUOffload,
        MixedPrecision,
        ShardingStrategy,
    )
    from torch.distributed.fsdp import FullyShardedDataParallel as FSDP
    from torch.distributed.fsdp.wrap import (
        _or_policy,
        lambda_auto_wrap_policy,
        transformer_auto_wrap_policy,
    )

    policy = functools.partial(transformer_auto_wrap_policy,
                               transformer_layer_cls=layer_classes(model))
    if spec.method in ("lora", "qlora"):  # peft fsdp_auto_wrap_policy: trainable leaves too
        leaves = functools.partial(lambda_auto_wrap_policy, lambda_fn=lambda m: (
            not list(m.named_children()) and getattr(m, "weight", None) is not None
            and m.weight.requires_grad))
        policy = functools.partial(_or_policy, policies=[leaves, policy])
    half = _mixed(spec)
    model = FSDP(model, auto_wrap_policy=policy,
                 sharding_strategy=getattr(ShardingStrategy, spec.fsdp_sharding),
                 mixed_precision=MixedPrecision(half, half, half) if half else None,
                 cpu_offload=CPUOffload(offload_params=spec.offload != "none"),
                 backward_prefetch=BackwardPrefetch.BACKWARD_PRE, limit_all_gathers=True,
                 use_orig_params=True, device_id=device)
    if half is not None:  # accelerate's upcast of the flat parameters that train
        for unit in FSDP.fsdp_modules(model):
            flat = getattr(unit, "_flat_param", None)
            if flat is not None and flat.requires_grad and flat.dtype != torch.float32:
                flat.data = flat.data.to(torch.float32)
                unit._handle._orig_param_dtype = torch.float32
    return model


def deepspeed_config(spec: Spec) -> dict[str, Any]:
    """The DeepSpeed config the spec's ZeRO fields describe, "auto" resolved."""
    zero = zero_settings(spec, spec.shape.hidden_size)
    section: dict[str, Any] = {"stage": spec.zero_stage, "overlap_comm": spec.zero_overlap_comm,
                               "contiguous_gradients": True,
                               "reduce_bucket_size": zero["reduce_bucket"]}
    if spec.zero_stage == 3:
        section.update(stage3_prefetch_bucket_size=zero["prefetch"],
                       stage3_param_persistence_threshold=zero["persistence"],
                       stage3_max_live_parameters=spec.zero_max_live_parameters,
                       stage3_max_reuse_distance=spec.zero_max_reuse_distance)
    for word, key in (("optimizer", "offload_optimizer"), ("params", "offload_param")):
        if word in spec.offload:
            section[key] = {"device": "cpu"}
    return {"train_micro_batch_size_per_gpu": spec.batch_size,
            "gradient_accumulation_steps": spec.gradient_accumulation,
            "gradient_clipping": MAX_GRAD_NORM, "zero_allow_untested_optimizer": True,
            "bf16": {"enabled": spec.precision in ("bf16", "pure_bf16")},
            "fp16": {"enabled": spec.precision == "fp16"}, "zero_optimization": section,
            "steps_per_print": 10**9}


def _deepspeed(spec: Spec, model: nn.Module) -> Wrapped:
    try:
        import deepspeed
    except ImportError:
        raise UnsupportedRecipe("distributed: deepspeed is not installed (pip install "
                                "'vram-ml[multigpu]')") from None
    if os.environ.get("DS_ACCELERATOR") == "cpu":
        import deepspeed.comm

        # torch 2.13 + gloo: ZeRO-1/2's in-place all_gather_into_tensor after the step fails
        # ("a view ... modified inplace"); DeepSpeed's bucketed fallback all-gather works
        deepspeed.comm.has_all_gather_into_tensor = lambda: False
    optimizer = make_optimizer(spec, model)
    engine, optimizer, _, _ = deepspeed.initialize(model=model, optimizer=optimizer,
                                                   config=deepspeed_config(spec))
    return Wrapped(engine.module, optimizer, engine)


def run_distributed_steps(spec: Spec, wrapped: Wrapped, batch: dict, steps: int, *,
                          before_step: Callable[[int], None] | None = None,
                          synchronize: Callable[[], None] | None = None) -> list[float]:
    """`steps` training steps on every rank; seconds per step."""
    if wrapped.engine is None:
        return run_steps(spec, wrapped.model, batch, wrapped.optimizer, steps,
                         before_step=before_step, synchronize=synchronize)
    forward_loss, engine, seconds = framework_for(spec).forward_loss, wrapped.engine, []
    for step in range(1, steps + 1):
        if before_step is not None:
            before_step(step)
        start = time.perf_counter()
        for _ in range(spec.gradient_accumulation):
            loss = forward_loss(engine, batch, spec)
            engine.backward(loss)
            engine.step()  # an optimizer step at the accumulation boundary
        if synchronize is not None:
            synchronize()
        seconds.append(time.perf_counter() - start)
    return seconds
