"""Run the recipe's training steps under the live-storage tracker: on fake tensors (`simulate`)
or for real on the CPU (the `cpu` backend, tiny models).

Both paths build the same model (the recipe, model/recipe/), register the same model state and
batch, apply the same CUDA rules (cuda_emulation.py) and run the same `train_step`; only the
tensors differ. That is what the fake == real tests hold to the byte.
"""

from __future__ import annotations

import contextlib
import logging
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from vram_ml.model import recipe
from vram_ml.model.formulas.analytical import CUBLAS_WORKSPACE_BYTES
from vram_ml.model.formulas.stack import StackRules
from vram_ml.model.recipe.stages.common import companions
from vram_ml.model.simulate.allocator import CachingAllocator
from vram_ml.model.simulate.cuda_emulation import cuda_behaviour, cuda_hidden_bytes
from vram_ml.model.simulate.fake import RealMetadataMode, make_fake, quantization_tensors
from vram_ml.model.simulate.tracker import LiveStorageTracker, Peak
from vram_ml.spec import Spec

Progress = Callable[[str], None]
SIMULATED_STEPS = 2  # optimizer states exist from step 2: its peak is usually the higher one
MAX_MICRO_STEPS = 2  # micro-steps after the second repeat its memory exactly (grads exist)


@dataclass
class StepRun:
    """What a tracked run of the recipe found."""

    peak: Peak
    seconds: float
    steps: int
    notes: list[str] = field(default_factory=list)


def simulated_spec(spec: Spec) -> tuple[Spec, list[str]]:
    """The spec the step actually runs, and a note for each approximation.

    Raises:
        ValueError: what cannot be simulated (one line).
    """
    if spec.liger_kernel:
        raise ValueError("liger_kernel: Liger's fused kernels cannot be simulated (refused)")
    if spec.distributed != "none" and not (spec.distributed == "fsdp" and spec.fsdp_version == 2):
        raise ValueError(
            f"distributed: simulate runs one GPU's step, or FSDP2 under torch's fake process "
            f"group; {spec.distributed} is not simulated (refused)"
        )
    notes, update = [], {}
    if spec.attention == "flash_attention_2":
        update["attention"] = "sdpa"
        notes.append("flash_attention_2 simulated as SDPA flash attention "
                     "(same saved tensors: output + logsumexp)")
    if spec.gradient_accumulation > MAX_MICRO_STEPS:
        update["gradient_accumulation"] = MAX_MICRO_STEPS
        notes.append(f"{spec.gradient_accumulation} micro-steps simulated as {MAX_MICRO_STEPS} "
                     "(later micro-steps repeat the second one's memory)")
    if spec.optimizer.startswith("paged_"):
        notes.append("paged optimizer states counted as device memory (unified memory may page)")
    padded = StackRules.of(spec).padded_seq_len(spec.seq_len)
    if padded != spec.seq_len:
        update["seq_len"] = padded
        notes.append(f"llamafactory pads to a multiple of 8: {padded} tokens per sample, all "
                     "real (no padding mask)")
    notes += installed_stack_notes(spec)
    return (spec.model_copy(update=update) if update else spec), notes


def installed_stack_notes(spec: Spec) -> list[str]:
    """Where the installed libraries differ from the spec's stack: the step runs what is
    installed (and the framework's code as the recipe re-implements it, never trl itself)."""
    from importlib.metadata import PackageNotFoundError, version

    from vram_ml.stack import parse_version

    differ = []
    for library in ("transformers", "peft", "bitsandbytes"):
        wanted = getattr(spec, f"{library}_version")
        try:
            installed = version(library)
        except PackageNotFoundError:
            continue
        if parse_version(installed) != parse_version(wanted):
            differ.append(f"{library} {installed} (spec: {wanted})")
    if not differ:
        return []
    return [f"executes the installed {', '.join(differ)}; the analytical estimate carries the "
            "spec's version rules"]


def simulate_step(
    spec: Spec, steps: int = SIMULATED_STEPS, progress: Progress | None = None
) -> StepRun:
    """Simulate `steps` training steps on fake tensors and return the tensor peak.

    Raises:
        ValueError: the spec cannot be simulated (one line).
    """
    from torch._subclasses.fake_tensor import FakeTensorMode

    start = time.perf_counter()
    spec, notes = simulated_spec(spec)
    if spec.distributed != "none":  # FSDP2: rank 0's view (distributed_step.py)
        from vram_ml.model.simulate.distributed_step import simulate_distributed_step

        return simulate_distributed_step(spec, steps, notes, progress)
    _say(progress, "building the model on meta")
    with quiet_libraries():
        model = recipe.build_model(spec, "meta")
        attention = model.config._attn_implementation
        if attention != spec.attention:
            notes.append(f"{spec.attention} attention not available for this model: {attention}")
        mode = FakeTensorMode(allow_non_fake_inputs=True)
        make_fake(model, mode)
        for companion in companions(model).values():  # a stage's reference / reward model
            make_fake(companion, mode)
        batch = recipe.make_batch(spec, model, "cpu")
        with mode, RealMetadataMode():
            peak = _tracked_steps(spec, model, batch, steps, progress)
    return StepRun(peak, time.perf_counter() - start, steps, notes)


def run_on_cpu(spec: Spec, steps: int = SIMULATED_STEPS, emulate_cuda: bool = True) -> StepRun:
    """Run `steps` real training steps on the CPU (tiny models) under the same tracker."""
    start = time.perf_counter()
    spec, notes = simulated_spec(spec)
    torch.manual_seed(0)
    with quiet_libraries():
        model = recipe.build_model(spec, "cpu")
        batch = recipe.make_batch(spec, model, "cpu")
        peak = _tracked_steps(spec, model, batch, steps, None, emulate_cuda)
    return StepRun(peak, time.perf_counter() - start, steps, notes)


def _tracked_steps(spec: Spec, model: nn.Module, batch: dict, steps: int,
                   progress: Progress | None, emulate_cuda: bool = True) -> Peak:
    optimizer = recipe.make_optimizer(spec, model)
    if getattr(optimizer, "is_paged", False):
        optimizer.is_paged = False  # no unified memory here; states become plain tensors
    text = model.config.get_text_config()
    tracker = LiveStorageTracker(
        vocab_size=text.vocab_size,
        tokens=spec.batch_size * spec.seq_len,
        hidden_bytes=cuda_hidden_bytes if emulate_cuda else None,
        allocator=CachingAllocator() if emulate_cuda else None,
    )
    register_state(tracker, model, batch, optimizer)
    if tracker.allocator:
        tracker.allocator.malloc(CUBLAS_WORKSPACE_BYTES)
    tracker.observe(phase="setup")
    handles = tracker.watch_training(model, optimizer)
    emulation = cuda_behaviour() if emulate_cuda else contextlib.nullcontext()
    try:
        with emulation, tracker:
            recipe.run_steps(spec, model, batch, optimizer, steps, before_step=lambda step: _say(
                progress, f"step {step} of {steps}: forward, backward, optimizer"))
    finally:
        for handle in handles:
            handle.remove()
    return tracker.peak


def register_state(tracker: LiveStorageTracker, model: nn.Module, batch: dict,
                   optimizer: torch.optim.Optimizer | None = None) -> None:
    """Count what exists before the step: weights, adapters, quantization state, the batch, a
    stage's frozen reference / reward model (as `reference_model` / `reward_model`; PPO's
    "reward" adapter on the policy's base as `reward_model`), and optimizer states made when the
    optimizer is (torch's Adagrad fills `state_sum` there)."""
    tracker.track_all(quantization_tensors(model), "quantization_constants")
    for name, param in model.named_parameters():
        if ".reward." in name:
            tracker.track(param, "reward_model")
        else:
            tracker.track(param, "adapters" if "lora_" in name else "weights")
    tracker.track_all(model.buffers(), "weights")
    for role, companion in companions(model).items():
        term = f"{role}_model"
        tracker.track_all(quantization_tensors(companion), term)
        tracker.track_all(companion.parameters(), term)
        tracker.track_all(companion.buffers(), term)
    tracker.track_all(batch.values(), "activations")
    if optimizer is not None:
        for state in optimizer.state.values():
            tracker.track_all((v for v in state.values() if torch.is_tensor(v)), "optimizer")


@contextlib.contextmanager
def quiet_libraries():
    """Silence library chatter that says nothing about memory (deprecations, bitsandbytes'
    optional CPU kernels, its fp16-cast notice on every 8-bit matmul)."""
    logger = logging.getLogger("bitsandbytes")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            yield
    finally:
        logger.setLevel(level)


def _say(progress: Progress | None, message: str) -> None:
    if progress is not None:
        progress(message)
