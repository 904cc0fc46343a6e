"""Estimate, the Estimator interface every answer in vram-ml goes through, and the estimators by
name (imported lazily, so `predict` never loads what it does not use)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from importlib import import_module
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from vram_ml.spec import Spec

# Breakdown terms, in display order. Every estimator fills the ones it knows; all are bytes.
BREAKDOWN_TERMS = (
    "weights",
    "quantization_constants",
    "adapters",
    "gradients",
    "optimizer",
    "gathered",  # ZeRO-3 / FSDP: parameters gathered on this GPU (persistent, in flight, root)
    "communication",  # gradient buckets (DDP, ZeRO), NCCL's buffers
    "activations",
    "logits",
    # the training stage's (model/formulas/stages.py): a frozen reference / reward model (or
    # PPO's reward adapter), the reference forward's logits, PPO generation's KV cache
    "reference_model",
    "reward_model",
    "reference_logits",
    "kv_cache",
    "temporaries",
    "overhead",
)


@dataclass
class Estimate:
    """One estimator's answer for one spec. Bytes as integers; GiB only on display.

    Figures are per GPU (the one that decides an out-of-memory); `total_vram_bytes` is what
    nvidia-smi sums over the spec's `num_gpus`, `host_memory_bytes` the CPU RAM an offload needs
    on one node (None: none, or not estimated).
    """

    estimator: str
    peak_vram_bytes: int
    breakdown: dict[str, int]
    lower_vram_bytes: int | None = None
    upper_vram_bytes: int | None = None
    # what the upper bound rests on, said beside it: "assumed margin: ..." (analytical) or the
    # learned model's quantile; "" when there is no bound
    upper_basis: str = ""
    peak_allocated_bytes: int | None = None
    peak_reserved_bytes: int | None = None
    notes: list[str] = field(default_factory=list)
    num_gpus: int = 1
    host_memory_bytes: int | None = None

    @property
    def total_vram_bytes(self) -> int:
        return self.peak_vram_bytes * self.num_gpus

    def to_dict(self) -> dict:
        return {**asdict(self), "total_vram_bytes": self.total_vram_bytes}


class Estimator(Protocol):
    name: str

    def estimate(self, spec: Spec) -> Estimate: ...


GIB = 1024**3


def gib(n_bytes: int | float | None) -> str:
    return "-" if n_bytes is None else f"{n_bytes / GIB:.2f}"


# name -> (module, class). Order is display order everywhere.
ESTIMATORS: dict[str, tuple[str, str]] = {
    "seed-formula": ("vram_ml.model.formulas.seed_formula", "SeedFormulaEstimator"),
    "analytical": ("vram_ml.model.formulas.analytical", "AnalyticalEstimator"),
    "simulate": ("vram_ml.model.simulate", "SimulateEstimator"),
    "learned": ("vram_ml.model.learned.estimator", "LearnedEstimator"),
}


def get_estimator(name: str, **options) -> Estimator:
    """Instantiate an estimator by name.

    Raises:
        KeyError: unknown name (the message lists the known ones).
    """
    if name not in ESTIMATORS:
        raise KeyError(f"unknown estimator {name!r} (known: {', '.join(ESTIMATORS)})")
    module_name, class_name = ESTIMATORS[name]
    return getattr(import_module(module_name), class_name)(**options)
