"""The micro-training recipe as a measurement: one spec, one device, N optimizer steps.

Runs inside the child process (agent/child.py); the training itself is the project's one recipe,
`vram_ml.model.recipe` (build_model, make_batch, make_optimizer, run_steps), shared with
`simulate`. This module only measures around it:

- cuda: the cold context (NVML process memory once a context exists, minus what torch reserved),
  then set-up (model, batch, optimizer) with `torch.cuda.max_memory_allocated/reserved`, the peak
  counters reset, then the steps with the same counters and an NVML peak sampled by a thread.
  After the first (warm-up) step has loaded its kernels and made its cuBLAS / cuDNN handles, the
  context is read again: NVML process memory - `torch.cuda.memory_reserved()` - the paged
  optimizer states where the reading includes them (the device's used memory does, NVML's
  per-process figure does not). `peak_vram_bytes = sample.peak_vram(cuda_context_bytes,
  peak_reserved_bytes, paged_bytes)`, the target as vram_ml/sample.py defines it.
- cpu: the same steps on the CPU under `simulate`'s own machinery (one tracker, two uses): the
  model state is registered by `vram_ml.model.simulate.step.register_state` (weights, adapters,
  bitsandbytes quantization state, the batch), the steps run under simulate's CUDA rules
  (cuda_emulation.py) and the peaks are its replayed CUDA caching allocator's, i.e. the same
  bytes as simulate's `Estimate.peak_allocated_bytes / peak_reserved_bytes` for the spec (the
  tests hold them equal). No context, no NVML. Only for tests of the agent and as proof that
  simulate counts what really runs: never training data.

An out-of-memory error becomes `status="oom"`; the peaks seen until then are kept as lower bounds.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from vram_ml.agent.environment import PeakSampler, ProcessMemory
from vram_ml.sample import Measurement, peak_vram

if TYPE_CHECKING:
    from vram_ml.spec import Spec

DEFAULT_STEPS = 3
OOM_MARKERS = ("out of memory", "CUBLAS_STATUS_ALLOC_FAILED", "cudaErrorMemoryAllocation")


@dataclass
class Peaks:
    """Peaks observed so far; on OOM they are what the sample keeps (lower bounds)."""

    context: int = 0  # after the warm-up step (the cold context until it has run)
    cold_context: int = 0
    paged: int = 0
    setup_allocated: int | None = None
    setup_reserved: int | None = None
    allocated: int | None = None
    reserved: int | None = None
    nvml: int | None = None
    step_seconds: list[float] = field(default_factory=list)

    def measurement(self, status: str = "ok", message: str = "") -> Measurement:
        reserved = max(v for v in (self.reserved, self.setup_reserved, 0) if v is not None)
        seconds = self.step_seconds[1:] or self.step_seconds  # step 1 warms kernels up
        return Measurement(
            status=status,
            message=message,
            peak_allocated_bytes=self.allocated,
            peak_reserved_bytes=self.reserved,
            setup_peak_allocated_bytes=self.setup_allocated,
            setup_peak_reserved_bytes=self.setup_reserved,
            cuda_context_bytes=self.context,
            cold_context_bytes=self.cold_context,
            paged_bytes=self.paged,
            nvml_peak_bytes=self.nvml,
            peak_vram_bytes=peak_vram(self.context, reserved, self.paged)
            if status != "error" else None,
            step_seconds=sum(seconds) / len(seconds) if seconds else None,
            steps=len(self.step_seconds),
        )


def is_oom(error: BaseException) -> bool:
    import torch

    if isinstance(error, torch.OutOfMemoryError):
        return True
    return isinstance(error, RuntimeError) and any(m in str(error) for m in OOM_MARKERS)


def one_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0][:400]}" if text else type(error).__name__


def measure(spec: Spec, backend: str, steps: int = DEFAULT_STEPS, nvml_index: int = 0,
            fail_at_step: str = "") -> Measurement:
    """Run the recipe and measure it; OOM -> status oom (lower bounds), other errors raise.

    Args:
        spec: the configuration.
        backend: "cuda" or "cpu".
        steps: optimizer steps after set-up.
        nvml_index: the NVML index of the GPU (CUDA_VISIBLE_DEVICES already points at it).
        fail_at_step: test hook: "oom" or "error" raises at the first step (see child.py).
    """
    if backend == "cuda":
        return measured(lambda peaks: _measure_cuda(spec, steps, nvml_index, peaks, fail_at_step))
    return measured(lambda peaks: _measure_cpu(spec, steps, peaks, fail_at_step))


def measured(run: Callable[[Peaks], None]) -> Measurement:
    """The Measurement of `run` filling a fresh Peaks; an OOM is status oom with the peaks seen
    so far as lower bounds, any other error raises."""
    peaks = Peaks()
    try:
        run(peaks)
    except Exception as error:
        if not is_oom(error):
            raise
        return peaks.measurement("oom", one_line(error) + " (peaks are lower bounds)")
    return peaks.measurement()


def step_hook(fail_at_step: str, after_warm_up: Callable[[], None] | None = None
              ) -> Callable[[int], None]:
    """The recipe's `before_step`: `after_warm_up` before step 2 (the context is read after the
    warm-up step), and the test hook: "oom" or "error" raises at the first step (child.py)."""

    def before_step(step: int) -> None:
        import torch

        if step == 2 and after_warm_up is not None:
            after_warm_up()
        if fail_at_step == "oom":
            raise torch.OutOfMemoryError("simulated out of memory (test hook)")
        if fail_at_step == "error":
            raise RuntimeError("simulated failure (test hook)")

    return before_step


def paged_state_bytes(optimizer: Any) -> int:
    """Bytes of the optimizer states bitsandbytes keeps in CUDA managed memory (`is_paged`
    tensors: a paged optimizer's states of tensors of at least 1e5 elements); 0 otherwise."""
    if not getattr(optimizer, "is_paged", False):
        return 0
    return sum(value.numel() * value.element_size() for state in optimizer.state.values()
               for value in state.values() if getattr(value, "is_paged", False))


def _steps(spec: Spec, model: Any, batch: dict, optimizer: Any, scaler: Any, steps: int,
           peaks: Peaks, fail_at_step: str, synchronize=None, after_warm_up=None) -> None:
    from vram_ml.model.recipe import run_steps

    peaks.step_seconds.extend(run_steps(spec, model, batch, optimizer, steps, scaler=scaler,
                                        before_step=step_hook(fail_at_step, after_warm_up),
                                        synchronize=synchronize))


def _measure_cuda(spec: Spec, steps: int, nvml_index: int, peaks: Peaks, fail_at_step: str) -> None:
    import torch

    from vram_ml.model.recipe import (
        build_model,
        make_batch,
        make_grad_scaler,
        make_optimizer,
    )

    memory = ProcessMemory(nvml_index)  # baseline before this process has a context
    torch.cuda.init()
    torch.empty(1, device="cuda")  # creates the context
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    cold = memory.read()
    peaks.cold_context = peaks.context = max(0, (cold or 0) - torch.cuda.memory_reserved())
    torch.cuda.reset_peak_memory_stats()

    def record_setup() -> None:
        peaks.setup_allocated = torch.cuda.max_memory_allocated()
        peaks.setup_reserved = torch.cuda.max_memory_reserved()

    try:
        model = build_model(spec, "cuda")
        batch = make_batch(spec, model, "cuda")
        optimizer = make_optimizer(spec, model)
        scaler = make_grad_scaler(spec, "cuda")
        torch.cuda.synchronize()
    finally:
        record_setup()
    torch.cuda.reset_peak_memory_stats()
    warm = []

    def after_warm_up() -> None:
        """The context once a step has run (lazily loaded kernels, library handles)."""
        warm.append(True)
        peaks.paged = paged_state_bytes(optimizer)
        reading = memory.read()
        if reading is not None:
            managed = 0 if memory.per_process else peaks.paged
            peaks.context = max(0, reading - torch.cuda.memory_reserved() - managed)

    sampler = PeakSampler(memory.read)
    try:
        with sampler:
            _steps(spec, model, batch, optimizer, scaler, steps, peaks, fail_at_step,
                   torch.cuda.synchronize, after_warm_up)
            if not warm and peaks.step_seconds:  # a single step: read after it
                after_warm_up()
    finally:
        peaks.allocated = torch.cuda.max_memory_allocated()
        peaks.reserved = torch.cuda.max_memory_reserved()
        peaks.nvml = sampler.peak_bytes
        peaks.paged = paged_state_bytes(optimizer)


def _measure_cpu(spec: Spec, steps: int, peaks: Peaks, fail_at_step: str) -> None:
    """The steps on real CPU tensors, counted exactly as `simulate` counts them (see step.py)."""
    from vram_ml.model.formulas.analytical import CUBLAS_WORKSPACE_BYTES
    from vram_ml.model.recipe import build_model, make_batch, make_optimizer
    from vram_ml.model.simulate.allocator import CachingAllocator
    from vram_ml.model.simulate.cuda_emulation import cuda_behaviour, cuda_hidden_bytes
    from vram_ml.model.simulate.step import quiet_libraries, register_state
    from vram_ml.model.simulate.tracker import LiveStorageTracker

    tokens = spec.batch_size * spec.seq_len
    with quiet_libraries():
        setup = LiveStorageTracker(tokens=tokens, allocator=CachingAllocator())
        try:
            with setup:
                model = build_model(spec, "cpu")
                batch = make_batch(spec, model, "cpu")
                optimizer = make_optimizer(spec, model)
        finally:
            peaks.setup_allocated = setup.peak.peak_allocated_bytes
            peaks.setup_reserved = setup.peak.peak_reserved_bytes
        if getattr(optimizer, "is_paged", False):
            optimizer.is_paged = False  # no unified memory here (as in simulate)
        tracker = LiveStorageTracker(
            vocab_size=model.config.get_text_config().vocab_size, tokens=tokens,
            hidden_bytes=cuda_hidden_bytes, allocator=CachingAllocator(),
        )
        # what lives across the steps, registered exactly as simulate registers it
        register_state(tracker, model, batch, optimizer)
        tracker.allocator.malloc(CUBLAS_WORKSPACE_BYTES)
        tracker.observe(phase="setup")
        handles = tracker.watch_training(model, optimizer)
        try:
            with cuda_behaviour(), tracker:
                _steps(spec, model, batch, optimizer, None, steps, peaks, fail_at_step)
        finally:
            for handle in handles:
                handle.remove()
            peaks.allocated = tracker.peak.peak_allocated_bytes
            peaks.reserved = tracker.peak.peak_reserved_bytes
