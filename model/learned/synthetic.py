"""SYNTHETIC samples — NOT measurements. For tests and for the notebook when no real data exists.

Nothing here ever ran on a GPU. Each "measured" peak is the analytical estimate times a known,
made-up nonlinear distortion (below), so tests can check that the learned model recovers a
correction the analytical formula lacks, and that size and family splits behave. The samples are
built in memory as a `TrainingSet` with backend "synthetic"; they are never written as dataset rows
(the sample schema's backends are cuda | cpu | simulated, and a file could be mistaken for data),
and `vram-ml train` refuses to bundle a model trained on them.

The distortion, in log space (`measured = analytical * exp(distortion)`):
    0.20 * activations_fraction * (1.8 if eager else 1.0) * (0.5 if checkpointing else 1.0)
  + 0.12 * logits_fraction                       (fp32 logits copies in the loss)
  + 0.06 if qlora                                (dequantized weight temporaries)
  + 0.05 * tanh(tokens_per_step / 8192)          (allocator fragmentation)
  + a per-family offset in [-0.04, 0.04]         (what a family-blind formula misses)
  + noise ~ N(0, 0.015)
Each sample is "run" on a card of 24, 40, 48 or 80 GiB; a peak above the card becomes an OOM.
"""

from __future__ import annotations

import math
from functools import cache

import numpy as np

from vram_ml.model.learned.features import analytical_estimates
from vram_ml.model.learned.training_set import TrainingSet
from vram_ml.model_source import load_catalog
from vram_ml.spec import Spec, SpecError, build_spec

SYNTHETIC_BACKEND = "synthetic"
SYNTHETIC_BANNER = (
    "SYNTHETIC DATA: made-up samples (analytical x a known distortion), NOT GPU measurements"
)
CARDS_GIB = (24, 40, 48, 80)
GIB = 1024**3
LARGE_MODEL_SHARE = 0.12  # the rest are small or scaled-down models, as the agent measures
# The families the fixture draws from, fixed so that a catalog that grows (new families the
# analytical formula already models) does not change what the tests learn from.
SYNTHETIC_FAMILIES = frozenset({
    "llama", "mistral", "mixtral", "qwen2", "qwen3", "gemma", "gemma2", "phi", "phi3", "bloom",
    "gpt_neox", "stablelm", "gpt_bigcode", "falcon", "llava", "qwen2_vl", "qwen2_5_vl",
    "paligemma", "idefics3", "mllama",
})


def synthetic_training_set(n: int = 300, seed: int = 0) -> TrainingSet:
    """`n` synthetic samples (see the module docstring); deterministic for a given seed."""
    rng = np.random.default_rng(seed)
    catalog = sorted(name for name, entry in load_catalog().items()
                     if entry.family in SYNTHETIC_FAMILIES)
    specs: list[Spec] = []
    while len(specs) < n:
        spec = _random_spec(rng, catalog)
        if spec is not None:
            specs.append(spec)
    analytical = analytical_estimates(specs)
    families = sorted({spec.resolved_model.family for spec in specs})
    offsets = dict(zip(families, np.linspace(-0.04, 0.04, len(families)), strict=True))
    peak = np.array(
        [
            estimate.peak_vram_bytes
            * math.exp(
                _distortion(spec, estimate.breakdown, estimate.peak_vram_bytes, offsets, rng)
            )
            for spec, estimate in zip(specs, analytical, strict=True)
        ]
    )
    peak = np.ceil(peak / 2**21) * 2**21  # the caching allocator works in 2 MiB blocks
    cards = rng.choice(CARDS_GIB, size=n).astype(float) * GIB
    oom = peak > cards
    context = 0.5 * GIB
    reserved = np.maximum(peak - context, GIB / 8)
    allocated = reserved * rng.uniform(0.82, 0.95, size=n)
    return TrainingSet(
        specs=specs,
        status=np.where(oom, "oom", "ok"),
        peak_vram_bytes=np.where(oom, np.nan, peak),
        peak_allocated_bytes=np.where(oom, np.nan, np.round(allocated)),
        peak_reserved_bytes=np.where(oom, np.nan, reserved),
        device_total_bytes=cards,
        backend=np.full(n, SYNTHETIC_BACKEND, dtype=object),
        # three pretend sources, so the leave-one-source-out split has folds to run
        source=np.array([f"synthetic-{i % 3}" for i in range(n)], dtype=object),
    )


def _distortion(
    spec: Spec,
    breakdown: dict[str, int],
    peak: int,
    offsets: dict[str, float],
    rng: np.random.Generator,
) -> float:
    activations = breakdown.get("activations", 0) / peak
    logits = breakdown.get("logits", 0) / peak
    tokens = spec.batch_size * spec.seq_len
    return (
        0.20
        * activations
        * (1.8 if spec.attention == "eager" else 1.0)
        * (0.5 if spec.gradient_checkpointing else 1.0)
        + 0.12 * logits
        + (0.06 if spec.method == "qlora" else 0.0)
        + 0.05 * math.tanh(tokens / 8192)
        + offsets[spec.resolved_model.family]
        + rng.normal(0.0, 0.015)
    )


def _random_spec(rng: np.random.Generator, catalog: list[str]) -> Spec | None:
    model = str(rng.choice(catalog))
    shape = load_catalog()[model].config
    large = rng.random() < LARGE_MODEL_SHARE
    total = _billions(model)
    if large != (total > 12) or total > 100:
        return None
    method = str(rng.choice(["lora", "qlora", "full", "freeze"], p=[0.45, 0.3, 0.15, 0.1]))
    fields: dict = {
        "model": model,
        "method": method,
        "quant_bits": int(rng.choice([4, 8], p=[0.8, 0.2])) if method == "qlora" else None,
        "lora_rank": int(rng.choice([8, 16, 32, 64])),
        "lora_dropout": float(rng.choice([0.0, 0.05])),
        "batch_size": int(rng.choice([1, 2, 4, 8])),
        "seq_len": int(rng.choice([256, 512, 1024, 2048])),
        "precision": str(
            rng.choice(["bf16", "fp16", "pure_bf16", "fp32"], p=[0.6, 0.15, 0.2, 0.05])
        ),
        "gradient_checkpointing": bool(rng.random() < 0.6),
        "attention": str(rng.choice(["sdpa", "eager", "flash_attention_2"], p=[0.5, 0.25, 0.25])),
        "optimizer": str(rng.choice(["adamw_torch", "adamw_8bit", "sgd"], p=[0.7, 0.2, 0.1])),
        "liger_kernel": bool(rng.random() < 0.2),
    }
    layers = shape.get("num_hidden_layers")
    if not large and layers and total > 1.0 and rng.random() < 0.6:
        fields["model_overrides"] = {"num_hidden_layers": int(rng.integers(2, max(3, layers // 4)))}
    if "vision_config" in shape and rng.random() < 0.7:
        fields["images_per_sample"] = int(rng.integers(1, 3))
        fields["image_resolution"] = int(rng.choice([224, 448, 768]))
    try:
        return build_spec(**fields)
    except SpecError:
        return None


@cache
def _billions(model: str) -> float:
    from vram_ml.architectures import shape_from_config

    return shape_from_config(load_catalog()[model].config).total_params / 1e9
