"""One rank's training steps across GPUs under the live-storage tracker: for real on the CPU
(the agent's `cpu` backend: torchrun over gloo processes, tiny models) or on fake tensors with
torch's fake process group (`simulate` of FSDP2: rank 0's view, as torchtitan's estimator and
torch's FSDPMemTracker run it).

The same recipe as one GPU's (model/recipe/), wrapped by model/recipe/distributed.py; what
exists before the steps is registered as step.py registers it, plus the distributed machinery's
own storages (FSDP2's DTensor shards are counted by their local tensors; DeepSpeed's partitions,
fp32 master copies and flat buffers by walking its optimizer).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import torch

from vram_ml.model.formulas.analytical import CUBLAS_WORKSPACE_BYTES
from vram_ml.model.recipe.distributed import Wrapped, run_distributed_steps
from vram_ml.model.simulate.allocator import CachingAllocator
from vram_ml.model.simulate.cuda_emulation import cuda_behaviour, cuda_hidden_bytes
from vram_ml.model.simulate.step import register_state
from vram_ml.model.simulate.tracker import LiveStorageTracker, Peak
from vram_ml.spec import Spec

WALK_DEPTH = 3  # DeepSpeed keeps its buffers in lists of lists, dicts and small objects


def register_engine_state(tracker: LiveStorageTracker, wrapped: Wrapped) -> None:
    """DeepSpeed's storages that are not module parameters: ZeRO-3 partitions (`ds_tensor`),
    fp32 master partitions, flat bf16 groups, gradient partitions and buckets."""
    if wrapped.engine is None:
        return
    for param in wrapped.model.parameters():
        partition = getattr(param, "ds_tensor", None)
        if isinstance(partition, torch.Tensor):
            tracker.track(partition, "weights")
    seen: set[int] = set()

    def walk(value: Any, name: str, depth: int) -> None:
        if id(value) in seen or depth > WALK_DEPTH or isinstance(value, torch.nn.Module):
            return
        seen.add(id(value))
        if isinstance(value, torch.Tensor):
            tracker.track(value, "gradients" if "grad" in name else "optimizer")
        elif isinstance(value, list | tuple):
            for item in value:
                walk(item, name, depth + 1)
        elif isinstance(value, dict):
            for key, item in value.items():
                walk(item, f"{name}.{key}", depth + 1)
        elif type(value).__module__.startswith("deepspeed"):
            for key, item in vars(value).items():
                walk(item, key, depth + 1)

    for key, value in vars(wrapped.optimizer).items():
        walk(value, key, 0)


def tracked_distributed_steps(spec: Spec, wrapped: Wrapped, batch: dict, steps: int,
                              before_step: Callable[[int], None] | None = None,
                              emulate_cuda: bool = True) -> Peak:
    """This rank's peak over `steps` steps (bytes as step.py's tracker counts them)."""
    model = wrapped.model
    inner = getattr(wrapped.optimizer, "optimizer", wrapped.optimizer)  # DeepSpeed wraps torch's
    if getattr(inner, "is_paged", False):
        inner.is_paged = False  # no unified memory here; states become plain tensors
    text = model.config.get_text_config()
    tracker = LiveStorageTracker(
        vocab_size=text.vocab_size, tokens=spec.batch_size * spec.seq_len,
        hidden_bytes=cuda_hidden_bytes if emulate_cuda else None,
        allocator=CachingAllocator() if emulate_cuda else None,
    )
    register_state(tracker, model, batch)
    register_engine_state(tracker, wrapped)
    if tracker.allocator:
        tracker.allocator.malloc(CUBLAS_WORKSPACE_BYTES)
    tracker.observe(phase="setup")
    handles = tracker.watch_training(model, inner)
    try:
        with cuda_behaviour() if emulate_cuda else contextlib.nullcontext(), tracker:
            run_distributed_steps(spec, wrapped, batch, steps, before_step=before_step)
    finally:
        for handle in handles:
            handle.remove()
    return tracker.peak



def simulate_distributed_step(spec: Spec, steps: int, notes: list[str],
                              progress: Callable[[str], None] | None = None):
    """FSDP2 on fake tensors, world size `spec.num_gpus` under torch's fake process group
    (collectives are no-ops that still allocate their outputs): rank 0's peak.

    Raises:
        ValueError: a process group already runs in this process (one line).
    """
    import time

    import torch.distributed as dist
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.testing._internal.distributed.fake_pg import FakeStore

    from vram_ml.model import recipe
    from vram_ml.model.recipe.distributed import wrap
    from vram_ml.model.simulate.fake import RealMetadataMode, make_fake
    from vram_ml.model.simulate.step import StepRun, quiet_libraries

    if dist.is_initialized():
        raise ValueError("distributed: a process group already runs here; simulate needs its own")
    start = time.perf_counter()
    dist.init_process_group("fake", rank=0, world_size=spec.num_gpus, store=FakeStore())
    try:
        with quiet_libraries():
            if progress:
                progress(f"building the model on meta, sharding it over {spec.num_gpus} GPUs")
            model = recipe.build_model(spec, "meta")
            mode = FakeTensorMode(allow_non_fake_inputs=True)
            make_fake(model, mode)
            batch = recipe.make_batch(spec, model, "cpu")
            with mode, RealMetadataMode():
                wrapped = wrap(spec, model, torch.device("cpu"))
                peak = tracked_distributed_steps(spec, wrapped, batch, steps, before_step=(
                    (lambda step: progress(f"step {step} of {steps}")) if progress else None))
    finally:
        dist.destroy_process_group()
    notes = [*notes, f"FSDP2 over {spec.num_gpus} GPUs under torch's fake process group: rank "
             "0's memory (collectives allocate their outputs, move no data)"]
    return StepRun(peak, time.perf_counter() - start, steps, notes)
