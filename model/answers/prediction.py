"""`vram-ml predict`: one spec's answer, the figures beside it, and which cards it fits.

The answer comes from the learned model, or from the analytical estimator when no learned model
is bundled (said in `fallback_reason`, never hidden). The analytical and seed-formula figures are
given beside it, and a verdict per card on the bound users plan with: the upper bound when there is
one, else the point estimate.

Example:
    prediction = predict(spec, gpu_memory_gib=[24, 80])
    prediction.to_dict()["cards"][0]["verdict"]   # "fits" | "tight" | "does not fit"

Memory on screen is in GiB (2^30 bytes); a card sold as "24 GB" (RTX 4090, A10G) has 24 GiB.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from vram_ml.model.estimate import GIB, Estimate
from vram_ml.model.learned.estimator import FALLBACK_NOTE, LearnedEstimator
from vram_ml.spec import Spec

# Common cards, by their nominal memory ("24 GB" cards have 24 GiB: RTX 3090/4090, A10G 24 GiB;
# A100 40 GiB; L40S / RTX 6000 Ada 48 GiB; A100 / H100 80 GiB).
COMMON_CARDS_GIB = (24.0, 40.0, 48.0, 80.0)


VERDICTS = ("fits", "tight", "does not fit")


def verdict(peak_bytes: int | float, bound_bytes: int | float, card_bytes: int) -> str:
    """The one verdict `predict` and `fit` give a card: `fits` (the bound fits), `tight` (the
    point estimate fits, the bound does not), `does not fit` (not even the point estimate)."""
    if bound_bytes <= card_bytes:
        return "fits"
    return "tight" if peak_bytes <= card_bytes else "does not fit"


@dataclass
class CardVerdict:
    gpu_memory_gib: float
    gpu_memory_bytes: int
    verdict: str  # "fits" | "tight" (point fits, upper bound does not) | "does not fit"
    spare_bytes: int  # card minus the bound (negative: short by that much)


@dataclass
class Prediction:
    answer: Estimate  # learned, or analytical as the fallback
    beside: list[Estimate]  # the other figures: analytical (when learned answered), seed-formula
    cards: list[CardVerdict]
    fallback_reason: str | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def estimator(self) -> str:
        return self.answer.estimator

    @property
    def peak_vram_bytes(self) -> int:
        return self.answer.peak_vram_bytes

    @property
    def upper_vram_bytes(self) -> int | None:
        return self.answer.upper_vram_bytes

    @property
    def bound_vram_bytes(self) -> int:
        return self.answer.upper_vram_bytes or self.answer.peak_vram_bytes

    def to_dict(self) -> dict[str, Any]:
        answer = self.answer
        return {
            "estimator": answer.estimator,
            "fallback_reason": self.fallback_reason,
            "peak_vram_bytes": answer.peak_vram_bytes,  # per GPU
            "upper_vram_bytes": answer.upper_vram_bytes,
            "upper_basis": answer.upper_basis,
            "num_gpus": answer.num_gpus,
            "total_vram_bytes": answer.total_vram_bytes,  # over the GPUs (nvidia-smi's sum)
            "host_memory_bytes": answer.host_memory_bytes,  # offloaded states, one node
            "peak_allocated_bytes": answer.peak_allocated_bytes,
            "peak_reserved_bytes": answer.peak_reserved_bytes,
            "breakdown": answer.breakdown,
            "beside": {estimate.estimator: estimate.peak_vram_bytes for estimate in self.beside},
            "cards": [asdict(card) for card in self.cards],
            "notes": answer.notes,
        }


def predict(
    spec: Spec,
    gpu_memory_gib: Sequence[float] | None = None,
    artifact_dir: str | Path | None = None,
) -> Prediction:
    """The answer for `spec` and a verdict for each card (default: 24, 40, 48, 80 GiB); on
    several GPUs the figures and verdicts are per GPU, `total_vram_bytes` their sum."""
    from vram_ml.model.estimate import get_estimator

    learned = LearnedEstimator(artifact_dir)
    answer = learned.estimate(spec)
    fallback = answer.estimator != "learned"
    beside = [] if fallback else [get_estimator("analytical").estimate(spec)]
    beside.append(get_estimator("seed-formula").estimate(spec))
    cards = [card_verdict(answer, size) for size in (gpu_memory_gib or COMMON_CARDS_GIB)]
    return Prediction(answer, beside, cards, FALLBACK_NOTE if fallback else None)


def card_verdict(estimate: Estimate, gpu_memory_gib: float) -> CardVerdict:
    card = int(gpu_memory_gib * GIB)
    bound = estimate.upper_vram_bytes or estimate.peak_vram_bytes
    return CardVerdict(gpu_memory_gib, card, verdict(estimate.peak_vram_bytes, bound, card),
                       card - bound)
