"""SimulateEstimator: the simulated step's tensor peak, plus the CUDA memory no tensor holds.

`peak_vram_bytes` = CUDA context + the peak reserved by a replay of PyTorch's CUDA caching
allocator (allocator.py) over the simulated step's allocations and frees. Split for the
breakdown: tensor peak (exact, from fake-tensor execution, incl. the scratch rules of
cuda_emulation.py) + these named corrections, all in the breakdown's `overhead`:

- cublas_workspace: allocated through the caching allocator on the first matmul
  (32 MiB on Hopper, PyTorch's default `:4096:8`);
- allocator_rounding: blocks rounded to 512 bytes, unsplit remainders (allocated - tensors);
- allocator_cache: reserved but free at the peak (segment sizes, fragmentation);
- cuda_context: `CUDA_CONTEXT_BYTES`, the analytical estimator's assumption
  (model/formulas/analytical.py; NVML shows it, no tensor holds it; the agent measures it per
  device).
Not modelled: the model-loading order of a real run (its free blocks), NCCL buffers.

`Estimate.peak_allocated_bytes` / `peak_reserved_bytes` are what `torch.cuda.max_memory_allocated`
/ `max_memory_reserved` would report (the replayed allocator, cuBLAS workspace included), so they
compare with a Measurement's fields; the raw tensor peak is `Simulation.peak_tensor_bytes`
(`peak_tensor_bytes` in `vram-ml simulate --json`, and in the notes).

The simulated step is not a measurement: it is a prediction made by running the training code on
tensors that have no data.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from vram_ml.architectures import remote_code_refusal
from vram_ml.model.estimate import Estimate
from vram_ml.model.formulas.analytical import CUBLAS_WORKSPACE_BYTES, CUDA_CONTEXT_BYTES
from vram_ml.model.formulas.distributed import nccl_bytes

if TYPE_CHECKING:
    from vram_ml.model.simulate.step import StepRun
    from vram_ml.spec import Spec

MIB = 1024**2


@dataclass
class Simulation:
    """A simulated step: the Estimate and the run behind it."""

    estimate: Estimate
    run: StepRun
    peak_tensor_bytes: int
    corrections: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict:
        peak = self.run.peak
        return {
            "estimator": "simulate",
            "peak_tensor_bytes": self.peak_tensor_bytes,
            "peak_vram_bytes": self.estimate.peak_vram_bytes,
            "peak_allocated_bytes": peak.peak_allocated_bytes,
            "peak_reserved_bytes": peak.peak_reserved_bytes,
            "breakdown": self.estimate.breakdown,
            "corrections": self.corrections,
            "peak_step": peak.step,
            "peak_phase": peak.phase,
            "hidden_scratch_bytes": peak.hidden_bytes,
            "simulated_steps": self.run.steps,
            "ops": peak.ops,
            "seconds": round(self.run.seconds, 3),
            "notes": self.estimate.notes,
        }


def simulate(spec: Spec, progress: Callable[[str], None] | None = None,
             cuda_context_bytes: int = CUDA_CONTEXT_BYTES) -> Simulation:
    """Simulate the spec's training steps and turn the tensor peak into an Estimate.

    Raises:
        ValueError: the simulator's libraries are missing, or the spec cannot be simulated
            (one line).
    """
    run = _run(spec, progress)
    peak = run.peak
    corrections = {
        "cublas_workspace": CUBLAS_WORKSPACE_BYTES,
        "allocator_rounding": (peak.peak_allocated_bytes - CUBLAS_WORKSPACE_BYTES
                               - peak.peak_tensor_bytes),
        "allocator_cache": peak.peak_reserved_bytes - peak.peak_allocated_bytes,
        "cuda_context": cuda_context_bytes,
    }
    breakdown = dict(peak.breakdown)
    breakdown["overhead"] = sum(corrections.values())
    nccl = nccl_bytes(spec)  # outside the allocator (model/formulas/distributed.py)
    if nccl:
        breakdown["communication"] = breakdown.get("communication", 0) + nccl
    notes = [
        "simulated step on fake tensors (CPU), not a measurement",
        f"tensor peak {peak.peak_tensor_bytes / 1024**3:.2f} GiB in step {peak.step} "
        f"({peak.phase}); peak_allocated/reserved_bytes are the replayed CUDA allocator's",
        "overhead = cuBLAS workspace + caching-allocator rounding and cache (replayed) + "
        f"assumed CUDA context ({cuda_context_bytes // MIB} MiB)",
        *run.notes,
    ]
    estimate = Estimate(
        estimator="simulate",
        peak_vram_bytes=sum(breakdown.values()),
        breakdown=breakdown,
        peak_allocated_bytes=peak.peak_allocated_bytes,
        peak_reserved_bytes=peak.peak_reserved_bytes,
        notes=notes,
        num_gpus=spec.num_gpus,
    )
    return Simulation(estimate, run, peak.peak_tensor_bytes, corrections)


def _run(spec: Spec, progress: Callable[[str], None] | None) -> StepRun:
    refusal = remote_code_refusal(spec.resolved_model.name, spec.resolved_model.shape.model_type)
    if refusal:  # before torch is imported: the refusal needs no library
        raise ValueError(refusal)
    try:
        from vram_ml.model.simulate.step import simulate_step
    except ImportError as error:
        raise ValueError(
            f"simulate needs torch, transformers, peft and bitsandbytes ({error.name} is missing): "
            "pip install torch 'vram-ml[sim]'"
        ) from None
    try:
        return simulate_step(spec, progress=progress)
    except ValueError:
        raise
    except Exception as error:  # noqa: BLE001 - any failure inside the model code is one line
        detail = str(error).strip().splitlines()[0][:200] if str(error).strip() else ""
        raise ValueError(
            f"simulate: the step of {spec.resolved_model.name} "
            f"({spec.resolved_model.shape.model_type}) failed on fake tensors: "
            f"{type(error).__name__}: {detail}"
        ) from error


@dataclass
class SimulateEstimator:
    """Estimator interface over `simulate` (options: progress callback, CUDA constants)."""

    progress: Callable[[str], None] | None = None
    cuda_context_bytes: int = CUDA_CONTEXT_BYTES
    name: str = "simulate"

    def estimate(self, spec: Spec) -> Estimate:
        return simulate(spec, self.progress, self.cuda_context_bytes).estimate
