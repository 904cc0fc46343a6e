"""The `seed-formula` estimator: the seed article's formula, as written (the baseline)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from vram_ml.model.estimate import BREAKDOWN_TERMS, GIB, Estimate

if TYPE_CHECKING:
    from vram_ml.spec import Spec

SEED_OVERHEAD_BYTES = GIB  # the seed article's fixed framework overhead

def seed_formula_breakdown(spec: Spec) -> dict[str, int]:
    """The seed article's formula, as written (it exists to be compared against, not improved):
    weights = params x bytes (fp32 4, half 2, QLoRA 4-bit 0.5, 8-bit 1); activations = batch x
    seq x hidden x layers x bytes; LoRA = layers x rank x (hidden + hidden) x 2 bytes per target;
    gradients 2 and AdamW 8 bytes per trainable parameter; 1 GiB framework overhead. It ignores
    the optimizer kind, attention, checkpointing, logits, images and multi-GPU sharding."""
    shape = spec.resolved_model.shape
    width = 4 if spec.precision == "fp32" else 2
    per_weight = {4: 0.5, 8: 1.0}.get(spec.quant_bits, width)
    lora = 0
    if spec.method in ("lora", "qlora"):
        lora = shape.num_layers * spec.lora_rank * 2 * shape.hidden_size * len(spec.target_modules)
        trainable = lora
    elif spec.method == "freeze":
        trainable = spec.freeze_trainable_layers * shape.layer_params
    else:
        trainable = shape.total_params
    breakdown = {
        "weights": int(shape.total_params * per_weight),
        "adapters": lora * 2,
        "gradients": trainable * 2,
        "optimizer": trainable * 8,
        "activations": spec.batch_size * spec.seq_len * shape.hidden_size * shape.num_layers
        * width,
        "overhead": SEED_OVERHEAD_BYTES,
    }
    return {term: breakdown.get(term, 0) for term in BREAKDOWN_TERMS}


@dataclass
class SeedFormulaEstimator:
    """The seed article's formula, kept as the baseline every other estimator is compared to."""

    name: str = "seed-formula"

    def estimate(self, spec: Spec) -> Estimate:
        breakdown = seed_formula_breakdown(spec)
        return Estimate(estimator=self.name, peak_vram_bytes=sum(breakdown.values()),
                        breakdown=breakdown,
                        notes=["the seed article's formula as written (a plain sum of terms)"])
