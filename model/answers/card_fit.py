"""`vram-ml fit`: the inverse question — what fits this card, and what is the cheapest change.

Everything is judged on the bound users plan with: the learned upper bound (q0.95), or the point
estimate when only the analytical fallback answers. Candidates are predicted in batches (the
learned model answers thousands of specs a second), assuming memory grows with batch size and
sequence length.

Answers:
- the largest batch size and the largest cutoff length that fit, the rest unchanged;
- the gradient accumulation that keeps the effective batch (batch x accumulation x GPUs: the
  spec's own unless a target is given) at the batch chosen;
- when the spec does not fit: the cheapest single change that makes it fit, in the order a
  practitioner would try them (free first, quality-affecting last; changes within the method
  before a change of method or more hardware: DeepSpeed ZeRO-3 on the fewest GPUs that fit, CPU
  offload with the host RAM it needs), and the cheapest combination when no single change is
  enough. A change that leads where the recipe cannot measure (model/recipe_support.py) says so.
  Every figure is per GPU.

Example:
    report = find_fit(spec, gpu_memory_bytes=24 * 1024**3)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from vram_ml.model.answers.prediction import verdict
from vram_ml.model.formulas.activations import liger_applies
from vram_ml.model.learned.estimator import LEARNED_UPPER_BASIS, LearnedEstimator
from vram_ml.model.recipe_support import recipe_refusal
from vram_ml.optimizers import EIGHT_BIT
from vram_ml.spec import Spec, SpecError, build_spec

MAX_BATCH = 1024
MIN_SEQ, MAX_SEQ = 64, 131072
SEQ_STEP = 128  # cutoff lengths are proposed in multiples of this


@dataclass
class Change:
    """One change to the spec, with what it costs the user and what it leads to."""

    description: str
    cost: str
    fields: dict[str, Any]
    peak_vram_bytes: int = 0
    bound_vram_bytes: int = 0
    fits: bool = False
    unmeasured: str = ""  # why no micro-training can measure where this change leads ("": it can)


@dataclass
class FitReport:
    spec: Spec
    gpu_memory_bytes: int
    estimator: str  # who answered: learned | analytical
    bound_name: str  # "upper bound (q0.95 ...)" | "upper bound (assumed margin ...)" | "point ..."
    peak_vram_bytes: int
    bound_vram_bytes: int
    verdict: str  # fits | tight | does not fit: predict's verdict (answers.prediction.verdict)
    fits: bool  # verdict == "fits": what the searches below require
    max_batch_size: int | None  # None: not even batch 1 fits
    max_seq_len: int | None
    batch_size: int  # the batch proposed for the target effective batch
    gradient_accumulation: int
    effective_batch: int
    target_effective_batch: int
    changes: list[Change] = field(default_factory=list)  # single changes that fit, cheapest first
    combination: Change | None = None  # when no single change fits: the cheapest prefix together

    def to_dict(self) -> dict[str, Any]:
        result = {key: value for key, value in self.__dict__.items() if key not in ("spec",)}
        result["spec_id"] = self.spec.spec_id
        result["changes"] = [change.__dict__ for change in self.changes]
        result["combination"] = None if self.combination is None else self.combination.__dict__
        return result


def candidate_changes(spec: Spec) -> list[Change]:
    """Changes that lower memory, cheapest first, within the method before a change of method
    (only those that change this spec)."""
    lora = spec.method in ("lora", "qlora")
    eight_bit = EIGHT_BIT.get(spec.optimizer)
    options = [  # (applies, description, what it costs the user, fields)
        (spec.attention == "eager", "attention: sdpa", "none (no S x S score matrix)",
         {"attention": "sdpa"}),
        (not spec.liger_kernel and liger_applies(spec.model_copy(update={"liger_kernel": True})),
         "enable Liger kernels", "none (fused loss, no full logits)", {"liger_kernel": True}),
        (not spec.gradient_checkpointing, "enable gradient checkpointing", "~30% slower steps",
         {"gradient_checkpointing": True}),
        (eight_bit is not None, f"optimizer: {eight_bit}", "tiny quality risk (8-bit states)",
         {"optimizer": eight_bit}),
        (not lora and spec.precision in ("bf16", "no_amp", "fp32"), "precision: pure_bf16",
         "bf16 weights and optimizer states, no fp32 copy: less precise updates",
         {"precision": "pure_bf16"}),
        (lora and spec.lora_rank > 8, f"LoRA rank {spec.lora_rank} -> 8",
         "less adapter capacity", {"lora_rank": 8}),
        # a change of method last: a different fine-tuning, not the same one in less memory
        (not lora, "method: lora (rank 8)", "adapters instead of full weights",
         {"method": "lora", "lora_rank": 8}),
        (spec.method != "qlora" or spec.quant_bits == 8, "method: qlora 4-bit",
         "4-bit base weights, slower steps", {"method": "qlora", "quant_bits": 4}),
    ]
    return [Change(text, cost, fields) for applies, text, cost, fields in options if applies]


GPU_COUNTS = (2, 4, 8, 16)  # ZeRO-3 proposals: the fewest of these that fit


def hardware_changes(spec: Spec) -> list[Change]:
    """More hardware: DeepSpeed ZeRO-3 over more GPUs (LLaMA-Factory's ds_z3_config.json), and
    ZeRO-3 with CPU offload (ds_z3_offload_config.json) on the spec's GPUs."""
    from vram_ml.defaults import LLAMAFACTORY_DEFAULTS
    from vram_ml.distributed import MULTI_GPU_FIELDS

    zero3 = {name: LLAMAFACTORY_DEFAULTS[name][0] for name in MULTI_GPU_FIELDS
             if name != "accelerate_version"}
    zero3.update(distributed="deepspeed", zero_stage=3)
    changes = []
    if not (spec.distributed == "deepspeed" and spec.zero_stage == 3 and spec.offload == "none"):
        changes += [Change(f"DeepSpeed ZeRO-3 on {gpus} GPUs", f"{gpus} GPUs (parameters, "
                           "gradients and optimizer states sharded)",
                           {**zero3, "num_gpus": gpus, "num_nodes": 1})
                    for gpus in GPU_COUNTS if gpus >= spec.num_gpus]
    if spec.offload != "optimizer+params":
        gpus = f"{spec.num_gpus} GPU" + "s" * (spec.num_gpus > 1)
        changes.append(Change(f"DeepSpeed ZeRO-3 + CPU offload on {gpus}",
                              "slower steps; host RAM for the offloaded states",
                              {**zero3, "offload": "optimizer+params",
                               "num_gpus": spec.num_gpus, "num_nodes": spec.num_nodes}))
    return changes


def find_fit(
    spec: Spec,
    gpu_memory_bytes: int,
    target_effective_batch: int | None = None,
    estimator: LearnedEstimator | None = None,
) -> FitReport:
    """What fits a card of `gpu_memory_bytes` (see the module docstring); the effective batch
    kept is `target_effective_batch`, else the spec's own (batch x accumulation x GPUs)."""
    estimator = estimator or LearnedEstimator()
    own = spec.batch_size * spec.gradient_accumulation * spec.num_gpus
    target_effective_batch = target_effective_batch or own
    first = estimator.predict_batch([spec])
    bound = _bounds(first)
    report = FitReport(
        spec=spec,
        gpu_memory_bytes=gpu_memory_bytes,
        estimator=first.estimator,
        bound_name=_bound_name(first),
        peak_vram_bytes=round(first.peak_vram_bytes[0]),
        bound_vram_bytes=round(bound[0]),
        verdict=verdict(first.peak_vram_bytes[0], bound[0], gpu_memory_bytes),
        fits=bool(bound[0] <= gpu_memory_bytes),
        max_batch_size=largest_fitting(
            spec, "batch_size", _batch_candidates, gpu_memory_bytes, estimator
        ),
        max_seq_len=largest_fitting(spec, "seq_len", _seq_candidates, gpu_memory_bytes, estimator),
        batch_size=spec.batch_size,
        gradient_accumulation=spec.gradient_accumulation,
        effective_batch=own,
        target_effective_batch=target_effective_batch,
    )
    if report.max_batch_size is not None:
        report.batch_size, report.gradient_accumulation = accumulation_for(
            report.max_batch_size, spec.num_gpus, target_effective_batch
        )
        report.effective_batch = report.batch_size * report.gradient_accumulation * spec.num_gpus
    if not report.fits:
        report.changes, report.combination = _cheapest_changes(spec, gpu_memory_bytes, estimator)
    return report


def accumulation_for(max_batch: int, num_gpus: int, target: int) -> tuple[int, int]:
    """(batch, accumulation) with batch <= max_batch and batch x accumulation x GPUs = target,
    exactly when a batch allows it, else the smallest accumulation that reaches the target."""
    per_gpu = max(1, target // num_gpus)
    for batch in range(min(max_batch, per_gpu), 0, -1):
        if target % (batch * num_gpus) == 0:
            return batch, target // (batch * num_gpus)
    batch = min(max_batch, per_gpu)
    return batch, max(1, math.ceil(target / (batch * num_gpus)))


def largest_fitting(
    spec: Spec, name: str, candidates: Any, gpu_memory_bytes: int, estimator: LearnedEstimator
) -> int | None:
    """The largest value of `name` whose bound fits: coarse candidates, then a fine pass between
    the last that fits and the first that does not (two batched predictions)."""
    coarse = candidates(spec)
    fits = _fitting_values(spec, name, coarse, gpu_memory_bytes, estimator)
    if not fits:
        return None
    best = max(fits)
    above = [value for value in coarse if value > best]
    if not above:
        return best
    step = SEQ_STEP if name == "seq_len" else 1
    fine = list(range(best + step, above[0], step))
    return max(_fitting_values(spec, name, fine, gpu_memory_bytes, estimator), default=best)


def _fitting_values(
    spec: Spec, name: str, values: list[int], gpu_memory_bytes: int, estimator: LearnedEstimator
) -> list[int]:
    scores = _score(spec, [{name: value} for value in values], estimator)
    return [
        value
        for value, score in zip(values, scores, strict=True)
        if score is not None and score[1] <= gpu_memory_bytes
    ]


def _score(
    spec: Spec, field_sets: list[dict[str, Any]], estimator: LearnedEstimator
) -> list[tuple[int, int, int] | None]:
    """(peak, bound, host RAM) of each variant of `spec`, one batched prediction; None for
    invalid ones."""
    variants = [_variant(spec, fields) for fields in field_sets]
    valid = [variant for variant in variants if variant is not None]
    if not valid:
        return [None] * len(variants)
    prediction = estimator.predict_batch(valid)
    hosts = [estimate.host_memory_bytes or 0 for estimate in prediction.analytical]
    scores = iter(zip(prediction.peak_vram_bytes.tolist(), _bounds(prediction).tolist(), hosts,
                      strict=True))
    return [
        None if variant is None else tuple(round(x) for x in next(scores)) for variant in variants
    ]


def _batch_candidates(spec: Spec) -> list[int]:
    return [2**i for i in range(int(math.log2(MAX_BATCH)) + 1)]


def _seq_candidates(spec: Spec) -> list[int]:
    limit = min(MAX_SEQ, spec.resolved_model.shape.max_position_embeddings)
    values = [2**i for i in range(int(math.log2(MIN_SEQ)), int(math.log2(limit)) + 1)]
    return values + ([limit] if limit not in values else [])


def _cheapest_changes(
    spec: Spec, gpu_memory_bytes: int, estimator: LearnedEstimator
) -> tuple[list[Change], Change | None]:
    """Within the method first: its single changes that fit (cheapest first), else the shortest
    prefix of them that fits together; only then a change of method or more hardware (the
    fewest GPUs that fit), else the shortest prefix of the software changes that fits."""
    software, hardware = candidate_changes(spec), hardware_changes(spec)
    changes = software + hardware
    prefixes = [
        {k: v for change in software[:n] for k, v in change.fields.items()}
        for n in range(2, len(software) + 1)
    ]
    scores = _score(spec, [change.fields for change in changes] + prefixes, estimator)
    for change, score in zip(changes, scores, strict=False):
        if score is not None:
            change.peak_vram_bytes, change.bound_vram_bytes, host = score
            change.fits = score[1] <= gpu_memory_bytes
            if host:
                change.cost += f" ({host / 1024**3:.0f} GiB per node)"
            change.unmeasured = _unmeasured(spec, change.fields)
    more_gpus = [c for c in hardware if c.fits and "GPUs" in c.description and "+" not in
                 c.description]
    hardware = [c for c in hardware if c not in more_gpus or c is more_gpus[0]]  # the fewest
    same_method = sum("method" not in change.fields for change in software)
    prefix_scores = scores[len(changes):]
    for group, last in ((software[:same_method], same_method),
                        (software[same_method:] + hardware, len(software))):
        fitting = [change for change in group if change.fits]
        if fitting:
            return fitting, None
        for n, (fields, score) in enumerate(
            zip(prefixes[: max(0, last - 1)], prefix_scores, strict=False), start=2
        ):
            if score is not None and score[1] <= gpu_memory_bytes:
                return [], Change(
                    " + ".join(c.description for c in software[:n]),
                    "; ".join(c.cost for c in software[:n]),
                    fields,
                    *score[:2],
                    fits=True,
                    unmeasured=_unmeasured(spec, fields),
                )
    return [], None


def _unmeasured(spec: Spec, fields: dict[str, Any]) -> str:
    """Where the recipe cannot go (its refusal), for a change that leads there from a spec it
    can build: "" when the change stays measurable."""
    variant = _variant(spec, fields)
    if variant is None or recipe_refusal(spec):
        return ""
    refusal = recipe_refusal(variant)
    return f"unmeasured: {refusal}; no GPU sample checks this estimate" if refusal else ""


def _variant(spec: Spec, fields: dict[str, Any]) -> Spec | None:
    """The spec with `fields` changed; None when invalid or a stage step that would not start
    (vram_ml.stages.stage_refusal: PPO with freeze, or with 4/8-bit weights under bf16, fail in
    LLaMA-Factory too; the recipe's other refusals only leave a change unmeasured)."""
    from vram_ml.stages import stage_refusal

    try:
        variant = build_spec(**{**spec.model_dump(), **fields})
    except SpecError:
        return None
    return None if stage_refusal(variant) else variant


def _bound_name(prediction: Any) -> str:
    if prediction.upper_vram_bytes is None:
        return "point estimate"
    if prediction.estimator == "learned":
        return f"upper bound ({LEARNED_UPPER_BASIS})"
    return f"upper bound ({prediction.analytical[0].upper_basis})"


def _bounds(prediction: Any) -> np.ndarray:
    upper = prediction.upper_vram_bytes
    return prediction.peak_vram_bytes if upper is None else upper
