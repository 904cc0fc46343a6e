"""The search space file's schema (agent/space.yaml): every section checked when it is read.

A malformed space (a section without `models`, a knob that is not a Spec field, a margin that is
not a number) is one line naming where, not a KeyError deep in the planner.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from vram_ml.spec import Spec, format_validation_error

Variant = dict[str, int | float]  # Spec.model_overrides (dotted keys reach nested configs)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ModelEntry(_Strict):
    model: str = Field(min_length=1)
    variants: list[Variant] = Field(default_factory=lambda: [{}], min_length=1)


def _check_knobs(knobs: dict[str, list[Any]]) -> dict[str, list[Any]]:
    unknown = sorted(set(knobs) - set(Spec.model_fields))
    if unknown:
        raise ValueError(f"{', '.join(unknown)}: not a Spec field")
    return knobs


Knobs = dict[str, list[Any]]


class FitRule(_Strict):
    margin: float = Field(1.15, gt=0)
    edge_low: float = Field(0.85, gt=0)
    edge_share: float = Field(0.08, ge=0, le=1)
    max_params_b: float = Field(1e9, gt=0)
    paged_max: float = Field(0.5, gt=0)


class CpuSpace(_Strict):
    candidates: int | None = Field(None, ge=1)
    models: list[ModelEntry] = Field(min_length=1)
    knobs: Knobs = Field(default_factory=dict)

    @field_validator("knobs")
    @classmethod
    def _knob_names(cls, knobs: Knobs) -> Knobs:
        return _check_knobs(knobs)


class SearchSpace(_Strict):
    seed: int = 0
    candidates: int = Field(2000, ge=1)
    active_weight: float = Field(5.0, ge=0)
    fit: FitRule = Field(default_factory=FitRule)
    models: list[ModelEntry] = Field(min_length=1)
    knobs: Knobs
    cpu: CpuSpace | None = None

    @field_validator("knobs")
    @classmethod
    def _knob_names(cls, knobs: Knobs) -> Knobs:
        return _check_knobs(knobs)


def validate_space(raw: Any) -> dict[str, Any]:
    """The space as plain data, every section present and checked.

    Raises:
        ValueError: the first problem, one line naming its place (`models.2.model: ...`).
    """
    if not isinstance(raw, dict):
        raise ValueError("must be a mapping with `models` and `knobs`")
    try:
        space = SearchSpace.model_validate(raw)
    except ValidationError as error:
        raise ValueError(format_validation_error(error)) from None
    for name, values in {**space.knobs, **(space.cpu.knobs if space.cpu else {})}.items():
        if not values:
            raise ValueError(f"knobs.{name}: needs at least one value")
    return space.model_dump(exclude_none=True)


# Knob values that name what a model calls it: `lora_target: attention` (its q/k/v projection
# names), `additional_target: embeddings` (modules_to_save copies of its own embeddings and head)
ATTENTION_NAMES = ("q_proj", "k_proj", "v_proj", "query_key_value", "c_attn", "qkv_proj", "Wqkv")


def resolve_knob_aliases(fields: dict[str, Any], shape: Any) -> dict[str, Any]:
    """The LoRA knobs drawn as aliases, in this model's own module names."""
    fields = dict(fields)
    if fields.get("lora_target") == "attention":
        names = [n for n in shape.linear_names if n in ATTENTION_NAMES]
        fields["lora_target"] = names or ["all"]
    aliases = {"embeddings": [shape.embedding_module, shape.head_module], "none": []}
    drawn = fields.get("additional_target")
    if isinstance(drawn, str) and drawn in aliases:
        fields["additional_target"] = aliases[drawn]
    return fields
