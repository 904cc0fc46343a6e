"""The planner: which specs to measure next, from a search space (agent/space.yaml) or a plan file.

Order = coverage first: a greedy pick of the spec whose features (family, size, every knob's
value) are least covered by the store and by the specs already picked. `strategy="active"` adds
the learned model's uncertainty (vram_ml.model.learned.estimator, loaded lazily; coverage alone
when it is absent). Specs the analytical estimate (vram_ml.model.formulas, lazily; a rough
closed form when absent) puts above `fit.margin` x the GPU's memory are skipped, and a share of
specs near that edge is kept on purpose.
"""

from __future__ import annotations

import heapq
import json
import math
import random
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from vram_ml.agent.space_file import resolve_knob_aliases, validate_space
from vram_ml.defaults import STAGE_FIELDS
from vram_ml.model.formulas.experts import grouped_mm_dtype_problem
from vram_ml.model.recipe_support import recipe_refusal
from vram_ml.model_source import ModelSourceError
from vram_ml.spec import Spec, SpecError, build_spec
from vram_ml.stages import stage_fields_that_apply

LORA_FIELDS = ("lora_rank", "lora_dropout", "lora_target", "additional_target")
QUANT_FIELDS = ("quant_bits", "quant_type", "double_quant")
VISION_FIELDS = ("images_per_sample", "image_resolution", "freeze_vision_tower",
                 "freeze_multi_modal_projector")


MAX_PLAN_BYTES = 32 * 2**20  # a plan or space file is text: 100k specs fit easily


class PlanError(ValueError):
    """A bad space or plan file; the message is one line."""


def read_text_file(path: Path, what: str) -> str:
    """A plan or space file's text: a regular file of at most MAX_PLAN_BYTES, nothing else (no
    device, FIFO or /proc file that never ends)."""
    path = Path(path)
    try:
        if not path.exists():
            raise PlanError(f"{what}: cannot read {path} (no such file)")
        if not path.is_file():
            raise PlanError(f"{what}: {path} is not a regular file")
        if path.stat().st_size > MAX_PLAN_BYTES:
            raise PlanError(f"{what}: {path} is larger than {MAX_PLAN_BYTES // 2**20} MiB")
        return path.read_text(encoding="utf-8")
    except OSError as error:
        raise PlanError(f"{what}: cannot read {path} ({error.strerror})") from None
    except UnicodeDecodeError:
        raise PlanError(f"{what}: {path} is not UTF-8 text") from None


@dataclass
class Planned:
    """One spec to measure, and why it is in the plan."""

    spec: Spec
    reason: str = "coverage"  # coverage | edge | active | plan
    estimate_bytes: int | None = None


def load_space(path: Path | None = None, backend: str = "cuda") -> dict[str, Any]:
    """The search space (the packaged agent/space.yaml by default); `cpu:` replaces models and
    overrides knobs for the cpu backend."""
    if path is None:
        text = (resources.files("vram_ml.agent") / "space.yaml").read_text()
    else:
        text = read_text_file(path, "space")
    try:
        space = validate_space(yaml.safe_load(text))
    except yaml.YAMLError as error:
        raise PlanError(f"space: {path} is not valid YAML ({str(error).splitlines()[0]})") \
            from None
    except ValueError as error:
        raise PlanError(f"space: {path or 'space.yaml'}: {error}") from None
    if backend == "cpu" and "cpu" in space:
        cpu = space["cpu"]
        space = {**space, "models": cpu["models"], "knobs": {**space["knobs"], **cpu["knobs"]},
                 "candidates": cpu.get("candidates", space.get("candidates"))}
    return space


def read_plan_file(path: Path) -> list[Spec]:
    """An explicit plan: YAML (a list of spec dicts, or {specs: [...]}) or JSONL (one per line).

    Raises:
        PlanError: unreadable file or an invalid spec (its position named).
    """
    text = read_text_file(path, "plan")
    try:
        if str(path).endswith(".jsonl"):
            entries = [json.loads(line) for line in text.splitlines() if line.strip()]
        else:
            entries = yaml.safe_load(text)
            entries = entries.get("specs") if isinstance(entries, dict) else entries
    except (json.JSONDecodeError, yaml.YAMLError) as error:
        raise PlanError(f"plan: {path} is not valid YAML/JSONL ({str(error).splitlines()[0]})") \
            from None
    if not isinstance(entries, list):
        raise PlanError(f"plan: {path} must hold a list of spec dicts")
    specs = []
    for number, entry in enumerate(entries, 1):
        if not isinstance(entry, dict):
            raise PlanError(f"plan: entry {number} is not a mapping")
        try:
            specs.append(build_spec(**entry))
        except SpecError as error:
            raise PlanError(f"plan: entry {number}: {error}") from None
    return list({spec.spec_id: spec for spec in specs}.values())


# --- candidates -------------------------------------------------------------------------------


def draw_candidates(space: dict[str, Any], count: int | None = None) -> list[Spec]:
    """Valid, distinct specs drawn at random (seeded) from the space."""
    rng = random.Random(space.get("seed", 0))
    count = count or int(space.get("candidates", 2000))
    entries = [(entry["model"], variant) for entry in space["models"]
               for variant in entry.get("variants", [{}])]
    specs: dict[str, Spec] = {}
    for _ in range(count):
        model, overrides = rng.choice(entries)
        fields = {name: rng.choice(values) for name, values in space["knobs"].items()}
        spec = make_spec(model, overrides, fields)
        if spec is not None:
            specs.setdefault(spec.spec_id, spec)
    return list(specs.values())


def make_spec(model: str, overrides: dict, fields: dict[str, Any]) -> Spec | None:
    """A spec from drawn knob values, with the knobs that do not apply reset (None if invalid)."""
    try:
        base = build_spec(model=model, model_overrides=overrides)
    except SpecError:
        return None
    shape = base.resolved_model.shape
    fields = dict(fields)
    if fields.get("method") not in ("lora", "qlora"):
        for name in LORA_FIELDS:
            fields.pop(name, None)
    else:
        fields = resolve_knob_aliases(fields, shape)
    if fields.get("method") != "qlora":
        for name in QUANT_FIELDS:
            fields.pop(name, None)
    elif fields.get("quant_bits") == 8:
        fields.pop("quant_type", None)
        fields.pop("double_quant", None)
    if fields.get("method") != "freeze":
        fields.pop("freeze_trainable_layers", None)
    else:
        fields["freeze_trainable_layers"] = min(fields.get("freeze_trainable_layers", 2),
                                                shape.num_layers)
    if not shape.is_multimodal:
        for name in VISION_FIELDS:
            fields.pop(name, None)
    fields["seq_len"] = min(fields.get("seq_len", 2048), shape.max_position_embeddings)
    applies = stage_fields_that_apply(fields)
    for name in STAGE_FIELDS:
        if name not in applies:
            fields.pop(name, None)
    try:
        spec = build_spec(model=model, model_overrides=overrides, **fields)
    except (SpecError, ModelSourceError):
        return None
    if recipe_refusal(spec):  # stage_refusal among them
        return None  # a step the recipe cannot run (a stage LLaMA-Factory would fail on too)
    if spec.images_per_sample * image_tokens(spec) > spec.seq_len:
        return None  # the images alone would not fit in seq_len (the recipe refuses it)
    if grouped_mm_dtype_problem(spec, spec.resolved_model.shape):
        return None  # fused experts outside bf16: the recipe refuses it (torch grouped_mm)
    return spec


def image_tokens(spec: Spec) -> int:
    """Tokens one image adds to the sequence (0 for text models): the formulas' one definition."""
    if spec.resolved_model.shape.vision is None:
        return 0
    from vram_ml.model.formulas.vision import image_geometry

    return image_geometry(spec).lm_tokens


# --- features and coverage --------------------------------------------------------------------


def features(spec: Spec) -> tuple[str, ...]:
    """What coverage counts: one `name=value` per dimension of the spec."""
    resolved = spec.resolved_model
    size = resolved.shape.total_params
    values = {
        "family": resolved.family,
        "size": f"2^{round(math.log2(max(size, 1)))}",
        "variant": "real" if not spec.model_overrides else "scaled",
        "tokens": f"2^{round(math.log2(spec.batch_size * spec.seq_len))}",
    }
    for name in ("method", "quant_bits", "quant_type", "double_quant", "lora_rank", "lora_dropout",
                 "batch_size", "seq_len", "gradient_accumulation", "precision",
                 "gradient_checkpointing", "attention", "optimizer", "freeze_trainable_layers",
                 "images_per_sample", "image_resolution", "freeze_vision_tower",
                 "freeze_multi_modal_projector"):
        values[name] = getattr(spec, name)
    values["lora_target"] = "all" if spec.lora_target == ("all",) else "subset"
    values["additional_target"] = "embeddings" if spec.additional_target else "none"
    values["stage"] = spec.stage if spec.stage != "dpo" else f"dpo/{spec.pref_loss}"
    values["stage x method"] = f"{spec.stage}/{spec.method}"
    values["method x precision"] = f"{spec.method}/{spec.precision}"
    values["method x optimizer"] = f"{spec.method}/{spec.optimizer}"
    return tuple(f"{name}={value}" for name, value in values.items())


def order_by_coverage(candidates: list[Spec], measured: Iterable[Spec], limit: int | None = None,
                      bonus: Callable[[Spec], float] | None = None) -> list[Spec]:
    """Greedy coverage order (lazy greedy: a spec's score only falls as counts grow).

    Score = sum over features of 1 / (1 + times seen) (+ `bonus(spec)`, e.g. uncertainty);
    ties go to the cheaper spec (fewer parameters x tokens).
    """
    counts: Counter[str] = Counter(f for spec in measured for f in features(spec))
    extra = {spec.spec_id: bonus(spec) if bonus else 0.0 for spec in candidates}
    feats = {spec.spec_id: features(spec) for spec in candidates}

    def score(spec: Spec) -> float:
        return sum(1.0 / (1 + counts[f]) for f in feats[spec.spec_id]) + extra[spec.spec_id]

    heap = [(-score(s), cost(s), s.spec_id, s) for s in candidates]
    heapq.heapify(heap)
    ordered: list[Spec] = []
    while heap and (limit is None or len(ordered) < limit):
        negative, spec_cost, spec_id, spec = heapq.heappop(heap)
        fresh = score(spec)
        if heap and fresh < -heap[0][0] - 1e-12:
            heapq.heappush(heap, (-fresh, spec_cost, spec_id, spec))
            continue
        ordered.append(spec)
        counts.update(feats[spec_id])
    return ordered


def cost(spec: Spec) -> float:
    shape = spec.resolved_model.shape
    return shape.total_params * (1 + spec.batch_size * spec.seq_len / 1024)


# --- the plan ---------------------------------------------------------------------------------


@dataclass
class Plan:
    planned: list[Planned]
    notes: list[str]
    skipped: dict[str, int]


def make_plan(space: dict[str, Any], measured: list[Spec], done_ids: set[str],
              device_total_bytes: int | None = None, strategy: str = "coverage",
              limit: int | None = None) -> Plan:
    """Order the space's candidates for measuring.

    Args:
        space: from `load_space`.
        measured: specs already measured (their features count as covered).
        done_ids: spec_ids already in the store for this backend and device: never planned.
        device_total_bytes: the GPU's memory; None (cpu backend) = no fit rule.
        strategy: "coverage" or "active" (learned model's uncertainty; coverage when absent).
        limit: at most this many specs.
    """
    fit = space.get("fit", {})
    notes: list[str] = []
    skipped = Counter()
    candidates = []
    max_params = float(fit.get("max_params_b", 1e9)) * 1e9
    for spec in draw_candidates(space):
        if spec.spec_id in done_ids:
            skipped["already measured"] += 1
        elif spec.resolved_model.shape.total_params > max_params:
            skipped["above max_params_b"] += 1
        else:
            candidates.append(spec)
    estimates: dict[str, int] = {}
    edge: list[Spec] = []
    if device_total_bytes:
        estimate, name = peak_estimator()
        notes.append(f"fit rule: {name} estimate vs {device_total_bytes / 2**30:.0f} GiB")
        kept = []
        for spec in candidates:
            estimates[spec.spec_id] = estimate(spec)
            ratio = estimates[spec.spec_id] / device_total_bytes
            if ratio > float(fit.get("margin", 1.15)):
                skipped["predicted OOM"] += 1
            elif spec.optimizer.startswith("paged") and ratio > float(fit.get("paged_max", 0.5)):
                skipped["paged optimizer near the edge"] += 1
            elif ratio >= float(fit.get("edge_low", 0.85)):
                edge.append(spec)
            else:
                kept.append(spec)
        candidates = kept
    bonus = None
    if strategy == "active":
        bonus, note = uncertainty_bonus(candidates, float(space.get("active_weight", 5.0)))
        notes.append(note)
    ordered = order_by_coverage(candidates, measured, limit, bonus)
    edges = order_by_coverage(edge, measured, limit)
    reason = "active" if bonus else "coverage"
    planned = interleave([Planned(s, reason, estimates.get(s.spec_id)) for s in ordered],
                         [Planned(s, "edge", estimates.get(s.spec_id)) for s in edges],
                         float(fit.get("edge_share", 0.08)))
    return Plan(planned[:limit] if limit else planned, notes, dict(skipped))


def interleave(main: list[Planned], edge: list[Planned], share: float) -> list[Planned]:
    """`main` with an `edge` spec after every 1/share - 1 main specs (edge ones run out first)."""
    if not edge or share <= 0:
        return main
    every = max(1, round(1 / share) - 1)
    result: list[Planned] = []
    edge_iter = iter(edge)
    for index, planned in enumerate(main, 1):
        result.append(planned)
        if index % every == 0:
            result.extend(item for item in [next(edge_iter, None)] if item)
    return result


def peak_estimator() -> tuple[Callable[[Spec], int], str]:
    """The analytical estimator's peak (lazily imported), else a rough closed form."""
    try:
        from vram_ml.model.formulas import AnalyticalEstimator

        estimator = AnalyticalEstimator()
    except Exception:  # noqa: BLE001 - absent or broken: plan with the rough form
        return rough_peak_bytes, "rough (vram_ml.model.formulas unavailable)"

    def estimate(spec: Spec) -> int:
        try:
            return int(estimator.estimate(spec).peak_vram_bytes)
        except Exception:  # noqa: BLE001 - one spec it cannot price: the rough form
            return rough_peak_bytes(spec)

    return estimate, "analytical"


def uncertainty_bonus(specs: list[Spec], weight: float = 5.0
                      ) -> tuple[Callable[[Spec], float] | None, str]:
    """The learned model's uncertainty, log(upper / peak), scaled to at most `weight`, as a
    coverage bonus; (None, why not) when no learned model is available."""
    try:
        from vram_ml.model.learned.estimator import LearnedEstimator

        batch = LearnedEstimator().predict_batch(specs, targets=("peak", "upper"))
    except Exception as error:  # noqa: BLE001 - absent or broken: coverage alone
        return None, f"active: learned model unavailable ({type(error).__name__}); coverage order"
    if batch.estimator != "learned" or batch.upper_vram_bytes is None:
        return None, "active: no trained learned model (analytical fallback); coverage order"
    spread = [math.log(max(u, p) / max(p, 1.0))
              for u, p in zip(batch.upper_vram_bytes, batch.peak_vram_bytes, strict=True)]
    scale = weight / max(max(spread, default=0.0), 1e-9)
    by_id = {spec.spec_id: u * scale for spec, u in zip(specs, spread, strict=True)}
    return (lambda spec: by_id.get(spec.spec_id, 0.0),
            "active: ordered by coverage + learned-model uncertainty (upper / peak)")


def rough_peak_bytes(spec: Spec) -> int:
    """A deliberately simple peak: weights, trainable states, activations, logits, context."""
    shape = spec.resolved_model.shape
    half = 4 if spec.precision == "fp32" else 2
    linear = shape.num_layers * shape.layer_linear_params
    if spec.method == "qlora":
        packed = 0.55 if spec.quant_bits == 4 else 1.05
        weights = linear * packed + (shape.total_params - linear) * half
    else:
        weights = shape.total_params * half
    from vram_ml.model.formulas.parameters import trainable_parameters

    trainable = trainable_parameters(spec).total
    state_bytes = {"sgd": 0, "adafactor": 1, "adamw_8bit": 2, "paged_adamw_8bit": 2}
    state = state_bytes.get(spec.optimizer, 8)
    states = trainable * (4 + 4 + state)
    tokens = spec.batch_size * spec.seq_len
    per_layer_act = tokens * shape.hidden_size * (2 if spec.gradient_checkpointing else 34)
    if spec.attention == "eager" and not spec.gradient_checkpointing:
        per_layer_act += spec.batch_size * shape.num_attention_heads * spec.seq_len**2 * 2 * half
    logits = tokens * shape.vocab_size * 4 * 3
    return int(weights + states + shape.num_layers * per_layer_act + logits + 600 * 2**20)
