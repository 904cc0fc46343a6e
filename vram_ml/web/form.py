"""The page's form, described from the Spec itself: one input per Spec field, its kind, bounds
and choices from the Spec's JSON schema, its default and where LLaMA-Factory sets it from
`vram_ml.defaults`, its label from the CLI flag's help. A field added to the Spec appears on the
page with no change here (in the group "other" until it is given one).
"""

from __future__ import annotations

from typing import Any

from vram_ml.cards import CARDS, DEFAULT_FIT_CARD
from vram_ml.defaults import IMAGE_FIELDS, LLAMAFACTORY_DEFAULTS, STACK_FIELDS, STAGE_FIELDS
from vram_ml.model.estimate import BREAKDOWN_TERMS, ESTIMATORS
from vram_ml.spec import Spec

GROUPS: dict[str, tuple[str, ...]] = {
    "model": ("model", "model_overrides"),
    "method": ("method", "quant_bits", "quant_type", "double_quant", "freeze_trainable_layers"),
    "LoRA": ("lora_rank", "lora_target", "additional_target", "lora_dropout", "lora_alpha"),
    "batch": ("batch_size", "seq_len", "gradient_accumulation"),
    "precision and kernels": (
        "precision", "gradient_checkpointing", "attention", "optimizer", "liger_kernel",
    ),
    "vision (VLMs)": IMAGE_FIELDS,
    "GPUs": ("num_gpus", "distributed", "zero_stage", "offload", "fsdp_sharding", "fsdp_version",
             "num_nodes", "zero_reduce_bucket_size", "zero_overlap_comm",
             "zero_prefetch_bucket_size", "zero_persistence_threshold",
             "zero_max_live_parameters", "zero_max_reuse_distance"),
    "stack": STACK_FIELDS,
    "training stage": STAGE_FIELDS,
}
# field -> {other field: values under which it matters}; the page dims it otherwise
RELEVANT_WHEN: dict[str, dict[str, list[Any]]] = {
    "quant_bits": {"method": ["qlora"]},
    "quant_type": {"method": ["qlora"]},
    "double_quant": {"method": ["qlora"]},
    "freeze_trainable_layers": {"method": ["freeze"]},
    **{name: {"method": ["lora", "qlora"]} for name in GROUPS["LoRA"]},
    "zero_stage": {"distributed": ["deepspeed"]},
    "offload": {"distributed": ["deepspeed", "fsdp"]},
    "fsdp_sharding": {"distributed": ["fsdp"]},
    "fsdp_version": {"distributed": ["fsdp"]},
    "accelerate_version": {"distributed": ["fsdp"]},
    **{name: {"distributed": ["deepspeed"]} for name in (
        "zero_reduce_bucket_size", "zero_overlap_comm", "zero_prefetch_bucket_size",
        "zero_persistence_threshold", "zero_max_live_parameters", "zero_max_reuse_distance")},
    **{name: {"model": ["multimodal"]} for name in IMAGE_FIELDS},
    "pref_loss": {"stage": ["dpo"]},
    "ref_model": {"stage": ["dpo", "kto", "ppo"]},
    "ref_model_quantization_bit": {"stage": ["dpo", "kto", "ppo"]},
    **{name: {"stage": ["ppo"]} for name in ("reward_model_type", "reward_model",
                                            "reward_model_quantization_bit", "max_new_tokens")},
}


def form_description() -> dict[str, Any]:
    """Everything the page needs to draw its form and its answer (GET /api/form)."""
    from vram_ml.cli.spec_options import spec_flags

    flags = spec_flags()
    schema = Spec.model_json_schema()
    group_of = {name: group for group, names in GROUPS.items() for name in names}
    fields = [
        {
            "name": name,
            "label": flags.get(name, ("--" + name.replace("_", "-"), ""))[0],
            "help": flags.get(name, ("", prop.get("description", prop.get("title", ""))))[1],
            "group": group_of.get(name, "other"),
            "default": prop.get("default"),
            "default_source": LLAMAFACTORY_DEFAULTS.get(name, (None, None))[1],
            "relevant_when": RELEVANT_WHEN.get(name),
            **field_kind(prop),
        }
        for name, prop in schema["properties"].items()
    ]
    return {
        "fields": fields,
        "groups": [*GROUPS, "other"],
        "cards": [card.to_dict() for card in CARDS],
        "default_fit_card": DEFAULT_FIT_CARD,
        "estimators": list(ESTIMATORS),
        "breakdown_terms": list(BREAKDOWN_TERMS),
    }


def field_kind(prop: dict[str, Any]) -> dict[str, Any]:
    """A JSON-schema property as an input: choice, integer, number, boolean, list, mapping, text."""
    options = prop.get("anyOf", [prop])
    nullable = any(option.get("type") == "null" for option in options)
    main = next((option for option in options if option.get("type") != "null"), {})
    bounds = {
        key: main[key] for key in ("minimum", "maximum", "exclusiveMaximum") if key in main
    }
    if "enum" in main:
        return {"kind": "choice", "choices": ([None] if nullable else []) + main["enum"]}
    kinds = {"integer": "integer", "number": "number", "boolean": "boolean", "array": "list",
             "object": "mapping"}
    return {"kind": kinds.get(main.get("type"), "text"), "nullable": nullable, **bounds}
