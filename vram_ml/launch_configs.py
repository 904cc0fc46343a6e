"""The launch configs a run names beside its training arguments: a DeepSpeed JSON (the YAML's
`deepspeed:` or `--deepspeed`), the Trainer's `fsdp` / `fsdp_config`, an accelerate config
(`--accelerate-config`), merged into Spec fields in one place for the YAML reader, the CLI and
the web calculator. Flags win over files, files over the YAML's own keys."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vram_ml.accelerate_config import read_accelerate_config, trainer_fsdp_fields
from vram_ml.deepspeed_config import LaunchRead, read_deepspeed_config

# a YAML does not say how many GPUs torchrun / accelerate start; `num_gpus:` or --num-gpus does
ASSUMED_GPUS = 8
LAUNCH_KEYS = ("deepspeed", "fsdp", "fsdp_config")  # LLaMA-Factory / Trainer keys read here


def read_launch_configs(raw: dict[str, Any], model_fields: dict[str, Any],
                        overrides: dict[str, Any], base: Path | None = None,
                        read_files: bool = False) -> LaunchRead:
    """Multi-GPU fields from the YAML's launch keys (`raw`) and the `deepspeed` /
    `accelerate_config` overrides, with what was assumed and what is not modelled.

    Raises:
        SpecError: a config that cannot be read or is not what it claims (one line).
    """
    merged = LaunchRead()
    deepspeed = overrides.get("deepspeed") or raw.get("deepspeed")
    accelerate = overrides.get("accelerate_config")
    if raw.get("fsdp") and not deepspeed:
        merged = _merge(merged, LaunchRead(fields=trainer_fsdp_fields(
            raw["fsdp"], raw.get("fsdp_config"), merged)))
    if accelerate:
        merged = _merge(merged, read_accelerate_config(accelerate, hidden_size_of(model_fields),
                                                       base, read_files))
    if deepspeed:
        stage = overrides.get("zero_stage")
        merged = _merge(merged, read_deepspeed_config(deepspeed, hidden_size_of(model_fields),
                                                      stage, base, read_files))
    if merged.fields.get("distributed") not in (None, "none") and "num_gpus" not in (
            merged.fields) and "num_gpus" not in raw and "num_gpus" not in overrides:
        merged.fields["num_gpus"] = ASSUMED_GPUS
        merged.assumed["num_gpus"] = (f"num_gpus: {ASSUMED_GPUS} (the launch config names no GPU "
                                      "count; pass --num-gpus)")
    return merged


def _merge(first: LaunchRead, second: LaunchRead) -> LaunchRead:
    return LaunchRead({**first.fields, **second.fields}, {**first.assumed, **second.assumed},
                      first.unmodelled + second.unmodelled)


def hidden_size_of(model_fields: dict[str, Any]) -> int:
    """The hidden size "auto" values are resolved from; 0 when the model does not resolve
    (the Spec then says why)."""
    from vram_ml.model_source import ModelSourceError, resolve_model

    try:
        model = resolve_model(str(model_fields.get("model")),
                              dict(model_fields.get("model_overrides") or {}))
    except (ModelSourceError, ValueError, TypeError):
        return 0
    return model.shape.hidden_size
