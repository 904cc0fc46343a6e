"""The live-storage tracker: the peak of the bytes that tensors hold, op by op.

One tracker, two uses: `simulate` runs it over fake tensors, the `cpu` backend over a real CPU
step; both count the same thing. A storage is counted when an op first returns it and dropped
when it is freed (a weak reference to the storage, whose Python object lives exactly as long as
the storage does). Ops' internal scratch memory is not a tensor and is not seen; where CUDA's
scratch is known to matter, a `hidden_bytes` rule adds it at that op (see cuda_emulation.py).

Each storage carries one breakdown term (weights, adapters, activations, ...; what a training
stage's reference forward makes of the logits size is `reference_logits`, what PPO's generation
makes is `kv_cache`); the breakdown at the peak is kept, with the step and phase of the peak.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from vram_ml.model.recipe.stages.common import PHASE as STAGE_PHASE
from vram_ml.model.simulate.allocator import CachingAllocator

CUDA_ROUNDING = 512  # the CUDA caching allocator rounds every block up to 512 bytes

# Ops that create optimizer state when they run inside `optimizer.step()` (zeros_like etc.).
_STATE_OPS = frozenset({
    "aten.zeros_like.default", "aten.empty_like.default", "aten.zeros.default",
    "aten.empty.memory_format", "aten.full.default", "aten.full_like.default",
    "aten.new_zeros.default", "aten.new_empty.default", "aten.lift_fresh.default",
    "aten.scalar_tensor.default", "aten.empty_strided.default",
})
HiddenBytes = Callable[[object, tuple, dict, object], int]


@dataclass
class Peak:
    """The tracker's answer, bytes as integers."""

    peak_tensor_bytes: int = 0  # live storages at the peak (exact bytes)
    peak_rounded_bytes: int = 0  # the same with every storage rounded up as CUDA's allocator does
    breakdown: dict[str, int] = field(default_factory=dict)  # at the peak (exact bytes)
    step: int = 0  # 1-based optimizer step of the peak
    phase: str = ""  # setup | forward | backward | optimizer
    hidden_bytes: int = 0  # op scratch (hidden_bytes rules) included in the peak
    ops: int = 0
    peak_allocated_bytes: int = 0  # the replayed CUDA caching allocator (allocator.py)
    peak_reserved_bytes: int = 0


class LiveStorageTracker(TorchDispatchMode):
    """Count live storages and their peak while active.

    Args:
        vocab_size: tensors whose last dim is the vocabulary and that cover all tokens are logits.
        tokens: batch x sequence tokens (for the logits rule).
        hidden_bytes: optional rule giving an op's invisible scratch bytes (CUDA emulation).
        allocator: optional CUDA caching-allocator replay fed with every allocation and free.
    """

    def __init__(
        self, vocab_size: int = 0, tokens: int = 0, hidden_bytes: HiddenBytes | None = None,
        allocator: CachingAllocator | None = None,
    ):
        super().__init__()
        self.allocator = allocator
        self.vocab_size = vocab_size
        self.logits_numel = tokens * vocab_size
        self.hidden_bytes = hidden_bytes
        self.live: dict[int, list] = {}  # storage key -> [bytes, rounded bytes, term, weakref]
        self.terms: dict[str, int] = {}
        self.current = 0
        self.current_rounded = 0
        self.peak = Peak()
        self.step = 1
        self.in_optimizer = False

    # --- registration ---------------------------------------------------------------------

    def track(self, tensor: torch.Tensor, term: str) -> None:
        """Count `tensor`'s storage under `term` (if not yet counted); a DTensor (FSDP2's
        sharded parameters, their gradients and optimizer states) by its local shard."""
        tensor = getattr(tensor, "_local_tensor", tensor)
        try:
            storage = tensor.untyped_storage()
        except (NotImplementedError, RuntimeError):
            return
        key = storage._cdata
        if key in self.live:
            return
        n_bytes = storage.nbytes()
        rounded = -(-n_bytes // CUDA_ROUNDING) * CUDA_ROUNDING
        ref = weakref.ref(storage, lambda _, key=key: self._free(key))
        block = self.allocator.malloc(n_bytes) if self.allocator and n_bytes else None
        self.live[key] = [n_bytes, rounded, term, ref, block]
        self.terms[term] = self.terms.get(term, 0) + n_bytes
        self.current += n_bytes
        self.current_rounded += rounded

    def track_all(self, tensors: Iterable[torch.Tensor], term: str) -> None:
        for tensor in tensors:
            self.track(tensor, term)

    def retag(self, tensor: torch.Tensor, term: str) -> None:
        """Move a counted storage to another term (a gradient, an optimizer state)."""
        tensor = getattr(tensor, "_local_tensor", tensor)
        entry = self.live.get(tensor.untyped_storage()._cdata)
        if entry is None or entry[2] == term:
            return
        self.terms[entry[2]] -= entry[0]
        self.terms[term] = self.terms.get(term, 0) + entry[0]
        entry[2] = term

    def _free(self, key: int) -> None:
        entry = self.live.pop(key, None)
        if entry is not None:
            self.current -= entry[0]
            self.current_rounded -= entry[1]
            self.terms[entry[2]] -= entry[0]
            if entry[4] is not None:
                self.allocator.free(entry[4])

    # --- dispatch -------------------------------------------------------------------------

    def phase(self) -> str:
        if self.in_optimizer:
            return "optimizer"
        return "backward" if torch._C._current_graph_task_id() != -1 else "forward"

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if func.namespace == "prim":  # metadata queries (fake tensors ask prim.device)
            return out
        self.peak.ops += 1
        phase = None
        for tensor in tensors_in(out):
            phase = phase or self.phase()
            self.track(tensor, self._term(func, tensor, phase))
        hidden = self.hidden_bytes(func, args, kwargs, out) if self.hidden_bytes else 0
        if hidden and self.allocator:
            self.allocator.free(self.allocator.malloc(hidden))
        self.observe(hidden, phase)
        return out

    def _term(self, func, tensor: torch.Tensor, phase: str) -> str:
        if phase == "optimizer":
            return "optimizer" if str(func) in _STATE_OPS else "temporaries"
        stage_phase = STAGE_PHASE.get()  # recipe/stages/common.py: what the stage is running
        if stage_phase == "generation":
            return "kv_cache"
        if (self.logits_numel and tensor.dim() >= 2 and tensor.shape[-1] == self.vocab_size
                and tensor.numel() >= self.logits_numel):
            return "reference_logits" if stage_phase == "reference" else "logits"
        return "activations" if phase == "forward" else "temporaries"

    def observe(self, hidden: int = 0, phase: str | None = None) -> None:
        """Record a new peak if the live bytes (+ an op's hidden scratch) exceed it."""
        if self.allocator:
            self.peak.peak_allocated_bytes = self.allocator.peak_allocated_bytes
            self.peak.peak_reserved_bytes = self.allocator.peak_reserved_bytes
        if self.current + hidden <= self.peak.peak_tensor_bytes:
            self.peak.peak_rounded_bytes = max(self.peak.peak_rounded_bytes,
                                               self.current_rounded + hidden)
            return
        peak = self.peak
        peak.peak_tensor_bytes = self.current + hidden
        peak.peak_rounded_bytes = max(peak.peak_rounded_bytes, self.current_rounded + hidden)
        peak.breakdown = {term: n for term, n in self.terms.items() if n}
        if hidden:
            peak.breakdown["temporaries"] = peak.breakdown.get("temporaries", 0) + hidden
        peak.hidden_bytes = hidden
        peak.step = self.step
        peak.phase = phase or self.phase()

    # --- training hooks -------------------------------------------------------------------

    def watch_training(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> list:
        """Tag gradients and optimizer state as they appear; returns the hook handles."""
        handles = []

        def tag_grad(param: torch.Tensor) -> None:
            if param.grad is not None:
                self.retag(param.grad, "gradients")

        for param in model.parameters():
            if param.requires_grad:
                handles.append(param.register_post_accumulate_grad_hook(tag_grad))

        def before_step(*_):
            self.in_optimizer = True

        def after_step(opt, *_):
            self.in_optimizer = False
            for state in opt.state.values():
                for value in state.values():
                    if isinstance(value, torch.Tensor):
                        self.retag(value, "optimizer")
            self.step += 1

        handles.append(optimizer.register_step_pre_hook(before_step))
        handles.append(optimizer.register_step_post_hook(after_step))
        return handles


def tensors_in(tree) -> list[torch.Tensor]:
    """The tensors in an op's arguments or outputs (tensors, lists, tuples, dicts), fast."""
    if isinstance(tree, torch.Tensor):
        return [tree]
    found = []
    stack = [tree]
    while stack:
        item = stack.pop()
        if isinstance(item, torch.Tensor):
            found.append(item)
        elif isinstance(item, list | tuple):
            stack.extend(item)
        elif isinstance(item, dict):
            stack.extend(item.values())
    return found
