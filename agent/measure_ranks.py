"""One rank of a multi-GPU measurement: runs inside each process torchrun starts
(agent/rank_child.py), measures its own GPU as measure.py measures one, and the parent
(agent/worker.py) gathers every rank's peaks into one Measurement.

- cuda: the process group first (NCCL; `torch.cuda.set_device` before any CUDA work, so each
  rank has one context on its own GPU), the cold context, the model built on the rank's GPU and
  wrapped (model/recipe/distributed.py: FSDP1, FSDP2, DeepSpeed), the allocator's cache emptied
  (the unsharded copy freed by sharding is not the run's), the peak counters reset, the steps
  with torch's counters and the NVML peak; the context read after the warm-up step includes the
  NCCL communicator's buffers, which live outside PyTorch's allocator.
- cpu: gloo processes, each counted by simulate's tracker (model/simulate/distributed_step.py):
  the test suite's rehearsal of the multi-GPU path on tiny models; never training data.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from vram_ml.agent.environment import PeakSampler, ProcessMemory
from vram_ml.agent.measure import Peaks, measured, paged_state_bytes, step_hook

if TYPE_CHECKING:
    from vram_ml.sample import Measurement
    from vram_ml.spec import Spec


def measure_rank(spec: Spec, backend: str, steps: int, nvml_index: int = 0,
                 fail_at_step: str = "") -> Measurement:
    """This rank's measurement; OOM -> status oom (lower bounds), other errors raise."""
    if backend == "cuda":
        return measured(lambda peaks: _measure_cuda_rank(spec, steps, nvml_index, peaks,
                                                         fail_at_step))
    return measured(lambda peaks: _measure_cpu_rank(spec, steps, peaks, fail_at_step))


def _measure_cuda_rank(spec: Spec, steps: int, nvml_index: int, peaks: Peaks,
                       fail_at_step: str) -> None:
    import torch

    from vram_ml.model.recipe import build_model, make_batch
    from vram_ml.model.recipe.distributed import init_process_group, run_distributed_steps, wrap

    memory = ProcessMemory(nvml_index)
    _, _, device = init_process_group("cuda")
    torch.empty(1, device=device)
    torch.cuda.synchronize()
    peaks.cold_context = peaks.context = max(0, (memory.read() or 0)
                                             - torch.cuda.memory_reserved())
    torch.cuda.reset_peak_memory_stats()
    try:
        model = build_model(spec, device)
        batch = make_batch(spec, model, device)
        wrapped = wrap(spec, model, device)
        del model
        torch.cuda.synchronize()
    finally:
        peaks.setup_allocated = torch.cuda.max_memory_allocated()
        peaks.setup_reserved = torch.cuda.max_memory_reserved()
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()

    def after_warm_up() -> None:
        peaks.paged = paged_state_bytes(wrapped.optimizer)
        reading = memory.read()
        if reading is not None:
            managed = 0 if memory.per_process else peaks.paged
            peaks.context = max(0, reading - torch.cuda.memory_reserved() - managed)

    sampler = PeakSampler(memory.read)
    try:
        with sampler:
            peaks.step_seconds.extend(run_distributed_steps(
                spec, wrapped, batch, steps, before_step=step_hook(fail_at_step, after_warm_up),
                synchronize=torch.cuda.synchronize))
            if len(peaks.step_seconds) == 1:
                after_warm_up()
    finally:
        peaks.allocated = torch.cuda.max_memory_allocated()
        peaks.reserved = torch.cuda.max_memory_reserved()
        peaks.nvml = sampler.peak_bytes


def _measure_cpu_rank(spec: Spec, steps: int, peaks: Peaks, fail_at_step: str) -> None:
    import time

    from vram_ml.model.recipe import build_model, make_batch
    from vram_ml.model.recipe.distributed import init_process_group, wrap
    from vram_ml.model.simulate.allocator import CachingAllocator
    from vram_ml.model.simulate.distributed_step import tracked_distributed_steps
    from vram_ml.model.simulate.step import quiet_libraries
    from vram_ml.model.simulate.tracker import LiveStorageTracker

    _, _, device = init_process_group("cpu")
    with quiet_libraries():
        setup = LiveStorageTracker(tokens=spec.batch_size * spec.seq_len,
                                   allocator=CachingAllocator())
        try:
            with setup:
                model = build_model(spec, device)
                batch = make_batch(spec, model, device)
                wrapped = wrap(spec, model, device)
        finally:
            peaks.setup_allocated = setup.peak.peak_allocated_bytes
            peaks.setup_reserved = setup.peak.peak_reserved_bytes
        start = time.perf_counter()
        peak = tracked_distributed_steps(spec, wrapped, batch, steps, step_hook(fail_at_step))
        peaks.step_seconds.extend([(time.perf_counter() - start) / steps] * steps)
        peaks.allocated = peak.peak_allocated_bytes
        peaks.reserved = peak.peak_reserved_bytes
