"""Features of a Spec for the learned model: plain numbers, no torch, many specs at once.

What goes in, and why:
- the config's numbers (layers, hidden, heads, kv heads, vocab, intermediate, experts, vision
  tower size) and the parameter counts that memory splits by (total, trainable, frozen);
- tokens per step (batch x seq, image tokens, attention scores, logits elements);
- every knob of the Spec that moves memory, categorical ones one-hot; the stack as the
  framework (one-hot) and each library's major and minor version; the training stage (one-hot)
  and what it loads and runs (a reference forward, reference weights, the reward model, PPO's
  generated tokens, 2 sequences per sample for the pairwise stages);
- the analytical estimator's answer: `log_analytical_peak` (the base the residual is learned on,
  see regressor.py) and each breakdown term as a fraction of that peak. Fractions are scale-free,
  so a tree split learned on small models ("activations are 60% of the peak") still applies to a
  70B model, where raw byte counts would fall outside everything seen in training.

Not a feature: the simulator's peak. `simulate` needs torch and takes seconds per spec, and a
feature present in training but missing at prediction shifts every split that used it. Prediction
must stay pure numpy; simulate is compared as an estimator in evaluation instead.

Example:
    matrix, analytical = feature_matrix(specs)  # (len(specs), len(FEATURE_NAMES)) float64
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from vram_ml.model.estimate import BREAKDOWN_TERMS, Estimate
from vram_ml.model.formulas.parameters import parameter_counts
from vram_ml.model.learned.targets import BASE_FEATURE as TARGET_BASE_FEATURE
from vram_ml.optimizers import OPTIMIZERS
from vram_ml.stack import FRAMEWORKS as FRAMEWORK_NAMES
from vram_ml.stack import parse_version
from vram_ml.stages import PAIRWISE_STAGES, STAGES, uses_reference

if TYPE_CHECKING:
    from vram_ml.architectures import ModelShape
    from vram_ml.spec import Spec

METHODS = ("full", "freeze", "lora", "qlora")
PRECISIONS = ("bf16", "fp16", "pure_bf16", "fp32", "no_amp")
ATTENTIONS = ("eager", "sdpa", "flash_attention_2")
FRAMEWORKS = tuple(FRAMEWORK_NAMES)
STAGE_NAMES = STAGES
REWARD_MODEL_TYPES = ("lora", "full", "api")
# The stack's library versions as (major, minor) numbers: the rules change at minor releases.
STACK_LIBRARIES = ("transformers", "peft", "trl", "bitsandbytes")

BASE_FEATURE = "log_analytical_peak"  # natural log of the analytical peak, bytes
SHAPE_FEATURES = (
    "num_layers",
    "hidden_size",
    "intermediate_size",
    "num_attention_heads",
    "num_key_value_heads",
    "head_dim",
    "vocab_size",
    "num_experts",
    "num_experts_per_tok",
    "tie_word_embeddings",
    "vision_layers",
    "vision_hidden_size",
    "vision_params",
    "projector_params",
    "total_params",
    "layer_params",
)
SPEC_FEATURES = (
    "trainable_params",
    "frozen_params",
    "trainable_fraction",
    "tokens_per_step",
    "image_tokens_per_sample",
    "vision_tokens_per_step",
    "attention_scores_per_step",
    "logits_elements_per_step",
    *(f"method_{name}" for name in METHODS),
    "quant_bits",
    "quant_nf4",
    "double_quant",
    "lora_rank",
    "lora_dropout",
    "lora_targets",
    "freeze_trainable_layers",
    "batch_size",
    "gradient_accumulation",
    "seq_len",
    *(f"precision_{name}" for name in PRECISIONS),
    "gradient_checkpointing",
    *(f"attention_{name}" for name in ATTENTIONS),
    *(f"optimizer_{name}" for name in OPTIMIZERS),
    "liger_kernel",
    "images_per_sample",
    "image_resolution",
    "freeze_vision_tower",
    "freeze_multi_modal_projector",
    "num_gpus",
    "zero_stage",
    *(f"framework_{name}" for name in FRAMEWORKS),
    *(f"{library}_{part}" for library in STACK_LIBRARIES for part in ("major", "minor")),
    # the training stage: which one, whether a reference forward runs and whether it loads
    # weights, PPO's reward model kind and generated tokens, the sequences in the graph
    *(f"stage_{name}" for name in STAGE_NAMES),
    "reference_forward",
    "reference_weights",
    *(f"reward_model_{name}" for name in REWARD_MODEL_TYPES),
    "max_new_tokens",
    "graph_sequences_per_sample",
)
# Features that grow with the model or the batch. Trees cannot extrapolate them (a 10x larger
# model lands in the largest trained model's leaf). They stay for the held-out sources: without
# them the leave-one-source-out median APE is 30.9%, with them 19.6% (79 rows, data hash
# 387da25bd4ded5b1). Trained on models up to 7.5B and tested on Llama-2-70B they now cost
# 3.8 points on the peak (tests/model/learned/test_scale_extrapolation.py: a strict xfail that
# says so).
RAW_SCALE_FEATURES = (
    *(name for name in SHAPE_FEATURES if name not in ("num_experts", "num_experts_per_tok",
                                                      "tie_word_embeddings")),
    "trainable_params", "frozen_params", "tokens_per_step", "vision_tokens_per_step",
    "attention_scores_per_step", "logits_elements_per_step",
)
# The analytical answer: its peak (log: the residual's base), the reserved and allocated shares,
# and the peak moment's composition. (`analytical_terms`, every term at its own moment, would cost
# a second analytical pass per spec: prediction speed comes first; tokens, scores and logits
# elements above carry the sizes of the terms that are not at the peak.)
ANALYTICAL_FEATURES = (
    BASE_FEATURE,
    "log_analytical_allocated",  # the base of the allocated target (targets.py)
    "log_analytical_reserved",  # the base of the reserved target
    "analytical_peak_gib",
    "analytical_reserved_fraction",
    "analytical_allocated_fraction",
    *(f"analytical_peak_{term}" for term in BREAKDOWN_TERMS),
)
FEATURE_NAMES: tuple[str, ...] = (*SHAPE_FEATURES, *SPEC_FEATURES, *ANALYTICAL_FEATURES)
BASE_COLUMN = FEATURE_NAMES.index(BASE_FEATURE)


def base_column(target: str) -> int:
    """The column of the analytical figure `target`'s residual is learned over (targets.py)."""
    return FEATURE_NAMES.index(TARGET_BASE_FEATURE[target])
_GIB = 1024**3
_shape_rows: dict[tuple, tuple[float, ...]] = {}
_count_rows: dict[tuple, tuple[int, int, int]] = {}
_version_rows: dict[tuple, tuple[int, ...]] = {}


def analytical_estimates(specs: Sequence[Spec]) -> list[Estimate]:
    """The analytical estimator's answer for each spec (the base every residual sits on)."""
    from vram_ml.model.estimate import get_estimator

    estimator = get_estimator("analytical")
    return [estimator.estimate(spec) for spec in specs]


def feature_matrix(
    specs: Sequence[Spec], analytical: Sequence[Estimate] | None = None
) -> tuple[np.ndarray, list[Estimate]]:
    """The (specs x FEATURE_NAMES) matrix, and the analytical estimates it was built from.

    Args:
        specs: the specs, any number.
        analytical: their analytical estimates when already known (computed otherwise).
    """
    estimates = list(analytical) if analytical is not None else analytical_estimates(specs)
    if len(estimates) != len(specs):
        raise ValueError(f"{len(specs)} specs but {len(estimates)} analytical estimates")
    rows = [
        _shape_row(spec) + spec_row(spec) + analytical_row(estimate)
        for spec, estimate in zip(specs, estimates, strict=True)
    ]
    matrix = np.array(rows, dtype=np.float64).reshape(len(rows), len(FEATURE_NAMES))
    return matrix, estimates


def _shape_row(spec: Spec) -> tuple[float, ...]:
    # The model's numbers are the same for every spec of a model: computed once per model.
    key = (spec.model, tuple(sorted(spec.model_overrides.items())))
    row = _shape_rows.get(key)
    if row is None:
        row = _shape_rows[key] = shape_row(spec.resolved_model.shape)
    return row


def shape_row(shape: ModelShape) -> tuple[float, ...]:
    vision = shape.vision
    return (
        shape.num_layers,
        shape.hidden_size,
        shape.intermediate_size,
        shape.num_attention_heads,
        shape.num_key_value_heads,
        shape.head_dim,
        shape.vocab_size,
        shape.num_experts,
        shape.num_experts_per_tok,
        float(shape.tie_word_embeddings),
        vision.num_layers if vision else 0,
        vision.hidden_size if vision else 0,
        shape.vision_params,
        shape.projector_params,
        shape.total_params,
        shape.layer_params,
    )


def spec_row(spec: Spec) -> tuple[float, ...]:
    shape = spec.resolved_model.shape
    trainable, frozen, targets = _counts(spec)
    tokens = spec.batch_size * spec.seq_len
    per_image, encoder_per_image = image_tokens(spec)
    return (
        trainable,
        frozen,
        trainable / max(trainable + frozen, 1),
        tokens,
        spec.images_per_sample * per_image,
        spec.batch_size * spec.images_per_sample * encoder_per_image,
        spec.batch_size * shape.num_attention_heads * spec.seq_len**2,
        tokens * shape.vocab_size,
        *_one_hot(spec.method, METHODS),
        spec.quant_bits or 0,
        float(spec.quant_type == "nf4"),
        float(spec.double_quant),
        spec.lora_rank,
        spec.lora_dropout,
        targets,
        spec.freeze_trainable_layers,
        spec.batch_size,
        spec.gradient_accumulation,
        spec.seq_len,
        *_one_hot(spec.precision, PRECISIONS),
        float(spec.gradient_checkpointing),
        *_one_hot(spec.attention, ATTENTIONS),
        *_one_hot(spec.optimizer, OPTIMIZERS),
        float(spec.liger_kernel),
        spec.images_per_sample,
        spec.image_resolution,
        float(spec.freeze_vision_tower),
        float(spec.freeze_multi_modal_projector),
        spec.num_gpus,
        spec.zero_stage,
        *_one_hot(spec.framework, FRAMEWORKS),
        *_stack_versions(spec),
        *_stage_row(spec),
    )


def _stage_row(spec: Spec) -> tuple[float, ...]:
    ppo = spec.stage == "ppo"
    reference = uses_reference(spec.stage, spec.pref_loss)
    separate = reference and (spec.ref_model is not None or spec.method in ("full", "freeze"))
    return (
        *_one_hot(spec.stage, STAGE_NAMES),
        float(reference),
        float(separate),
        *(float(ppo and spec.reward_model_type == name) for name in REWARD_MODEL_TYPES),
        spec.max_new_tokens if ppo else 0,
        2.0 if spec.stage in PAIRWISE_STAGES else 1.0,
    )


def _stack_versions(spec: Spec) -> tuple[int, ...]:
    """(major, minor) of each library of the spec's stack, in STACK_LIBRARIES order."""
    key = tuple(getattr(spec, f"{library}_version") for library in STACK_LIBRARIES)
    row = _version_rows.get(key)
    if row is None:
        row = _version_rows[key] = tuple(
            part for text in key for part in parse_version(text)[:2])
    return row


def analytical_row(estimate: Estimate) -> tuple[float, ...]:
    peak = max(estimate.peak_vram_bytes, 1)
    return (
        math.log(peak),
        math.log(max(estimate.peak_allocated_bytes or peak, 1)),
        math.log(max(estimate.peak_reserved_bytes or peak, 1)),
        peak / _GIB,
        (estimate.peak_reserved_bytes or 0) / peak,
        (estimate.peak_allocated_bytes or 0) / peak,
        *(estimate.breakdown.get(term, 0) / peak for term in BREAKDOWN_TERMS),
    )


def image_tokens(spec: Spec) -> tuple[int, int]:
    """(tokens one image adds to the sequence, patch states the vision tower runs for it)."""
    if spec.resolved_model.shape.vision is None or not spec.images_per_sample:
        return 0, 0
    from vram_ml.model.formulas.vision import image_geometry

    geometry = image_geometry(spec)
    return geometry.lm_tokens, geometry.encoder_tokens


def _counts(spec: Spec) -> tuple[int, int, int]:
    """(trainable, frozen, LoRA targets), computed once per model and method settings."""
    key = (
        spec.model,
        tuple(sorted(spec.model_overrides.items())),
        spec.method,
        spec.lora_rank,
        spec.lora_target,
        spec.freeze_trainable_layers,
        spec.freeze_vision_tower,
        spec.freeze_multi_modal_projector,
        parse_version(spec.transformers_version)[0],
    )
    counts = _count_rows.get(key)
    if counts is None:
        counts = _count_rows[key] = (*parameter_counts(spec), len(spec.target_modules))
    return counts


def _one_hot(value: str, choices: tuple[str, ...]) -> tuple[float, ...]:
    return _ONE_HOT[choices][value]


_ONE_HOT = {
    choices: {value: tuple(float(value == choice) for choice in choices) for value in choices}
    for choices in (METHODS, PRECISIONS, ATTENTIONS, OPTIMIZERS, FRAMEWORKS, STAGE_NAMES)
}
