"""Read a DeepSpeed config (`deepspeed: ds_config.json` in a LLaMA-Factory YAML, `--deepspeed`,
an accelerate config's `deepspeed_config_file`) into the Spec's multi-GPU fields.

The JSON is read when the path exists (and reading files is allowed: the web calculator reads
none); LLaMA-Factory's five examples (examples/deepspeed/ds_z{0,2,3}[_offload]_config.json, kept
verbatim in examples/llamafactory_launch_configs.json) are known by name when it does not, and
the answer says which was assumed. `"auto"` is resolved as transformers' HfTrainerDeepSpeedConfig
resolves it (integrations/deepspeed.py:194-241 in v5.24.0): reduce_bucket_size = H^2, and for
ZeRO-3 stage3_prefetch_bucket_size = 0.9 H^2, stage3_param_persistence_threshold = 10 H (H the
model's hidden size). A key that is absent takes DeepSpeed@v0.18.9's default
(deepspeed/runtime/zero/config.py). Values that equal what the Spec's default means for the
stage are stored as the default, so `deepspeed: ds_z3_config.json` and `--zero-stage 3` are the
same spec.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

from vram_ml.spec import SpecError

# DeepSpeed@v0.18.9 deepspeed/runtime/zero/config.py, keys absent from the JSON
DEEPSPEED_DEFAULTS = {"reduce_bucket_size": 500_000_000, "stage3_prefetch_bucket_size": 50_000_000,
                      "stage3_param_persistence_threshold": 100_000,
                      "stage3_max_live_parameters": 1_000_000_000,
                      "stage3_max_reuse_distance": 1_000_000_000}
# top-level keys that make a JSON a DeepSpeed config (deepspeed/runtime/constants.py)
DEEPSPEED_KEYS = frozenset({"zero_optimization", "train_batch_size",
                            "train_micro_batch_size_per_gpu", "gradient_accumulation_steps",
                            "bf16", "fp16", "optimizer", "scheduler", "gradient_clipping",
                            "zero_allow_untested_optimizer", "steps_per_print",
                            "wall_clock_breakdown", "activation_checkpointing",
                            "communication_data_type"})
ZERO_KNOBS = {"reduce_bucket_size": "zero_reduce_bucket_size",
              "stage3_prefetch_bucket_size": "zero_prefetch_bucket_size",
              "stage3_param_persistence_threshold": "zero_persistence_threshold",
              "stage3_max_live_parameters": "zero_max_live_parameters",
              "stage3_max_reuse_distance": "zero_max_reuse_distance"}


@dataclass
class LaunchRead:
    """What a launch config (DeepSpeed JSON, accelerate YAML) said: Spec fields, and what was
    assumed ({what: why}) or is not modelled."""

    fields: dict[str, Any] = field(default_factory=dict)
    assumed: dict[str, str] = field(default_factory=dict)
    unmodelled: list[str] = field(default_factory=list)


@cache
def llamafactory_launch_configs() -> dict[str, Any]:
    """LLaMA-Factory 0.9.5's example DeepSpeed JSONs and accelerate YAMLs, by file name."""
    text = (resources.files("vram_ml") / "examples" / "llamafactory_launch_configs.json"
            ).read_text(encoding="utf-8")
    return json.loads(text)


def load_launch_file(value: str, kind: str, base: Path | None, read_files: bool
                     ) -> tuple[Any, str]:
    """The parsed file `value` names ("deepspeed" JSON or "accelerate" YAML), and where it came
    from; a LLaMA-Factory example by name when the file is not there.

    Raises:
        SpecError: no such file and no such example, unreadable, or not JSON / YAML (one line).
    """
    import yaml

    label = "deepspeed" if kind == "deepspeed" else "accelerate_config"
    if read_files:
        for path in [Path(value)] + ([base / value] if base is not None else []):
            if path.is_file():
                try:
                    text = path.read_text(encoding="utf-8")
                    return (json.loads(text) if kind == "deepspeed"
                            else yaml.safe_load(text)), str(path)
                except (OSError, UnicodeDecodeError) as error:
                    raise SpecError(f"{label}: cannot read {value!r} "
                                    f"({type(error).__name__})") from None
                except (json.JSONDecodeError, yaml.YAMLError, RecursionError):
                    what = "JSON" if kind == "deepspeed" else "YAML"
                    raise SpecError(f"{label}: {value!r} is not valid {what}") from None
    examples = llamafactory_launch_configs()
    name = Path(str(value)).name
    if name in examples[kind]:
        return examples[kind][name], (f"LLaMA-Factory's examples/{kind}/{name} "
                                      f"(v0.9.5, {examples['commit'][:7]}; no such file here)")
    known = ", ".join(examples[kind])
    reason = "no such file" if read_files else "the calculator reads no files"
    raise SpecError(f"{label}: {reason} {value!r}, and not one of LLaMA-Factory's examples "
                    f"({known}); paste the config itself")


def read_deepspeed_config(value: Any, hidden_size: int, stage_override: int | None = None,
                          base: Path | None = None, read_files: bool = False) -> LaunchRead:
    """The multi-GPU fields a DeepSpeed config (a path, a known name, or the dict itself) sets.

    Raises:
        SpecError: not a DeepSpeed config, or a value DeepSpeed would refuse (one line).
    """
    source = "the inline config"
    if isinstance(value, str):
        value, source = load_launch_file(value, "deepspeed", base, read_files)
    if not isinstance(value, dict) or not DEEPSPEED_KEYS & set(value):
        raise SpecError(f"deepspeed: {source} is not a DeepSpeed config (no zero_optimization, "
                        "bf16, fp16 or batch-size keys)")
    zero = value.get("zero_optimization") or {}
    if not isinstance(zero, dict):
        raise SpecError("deepspeed: zero_optimization must be a mapping")
    read = LaunchRead(assumed={"deepspeed": f"deepspeed: {source}"})
    stage = _stage(zero.get("stage", 0))
    if stage_override is not None and stage_override != stage:
        read.assumed["zero_stage"] = (f"zero_stage: {stage_override} (the flag; the config says "
                                      f"{stage})")
        stage = stage_override
    read.fields.update(distributed="deepspeed", zero_stage=stage,
                       offload=_offload(zero, read), zero_overlap_comm=_overlap(zero, stage))
    for key, name in ZERO_KNOBS.items():
        if stage < 3 and key != "reduce_bucket_size":
            continue
        read.fields[name] = _knob(zero, key, stage, hidden_size, read)
    if zero.get("contiguous_gradients") is False:
        read.unmodelled.append("deepspeed zero_optimization.contiguous_gradients: false "
                               "(estimated as true)")
    if isinstance(value.get("optimizer"), dict):
        kind = value["optimizer"].get("type")
        read.assumed["deepspeed optimizer"] = (f"deepspeed optimizer {kind}: states as torch's "
                                               "AdamW (fp32, 8 bytes per parameter)")
    return read


def _stage(value: Any) -> int:
    if isinstance(value, bool) or value not in (0, 1, 2, 3, 0.0, 1.0, 2.0, 3.0):
        raise SpecError(f"deepspeed: zero_optimization.stage must be 0, 1, 2 or 3 (got {value!r})")
    return int(value)


def _offload(zero: dict[str, Any], read: LaunchRead) -> str:
    """Where ZeRO offloads: offload_optimizer / offload_param devices (cpu | nvme | none), or
    the old `cpu_offload: true`."""
    moved = []
    for key, what in (("offload_optimizer", "optimizer"), ("offload_param", "params")):
        block = zero.get(key) or {}
        device = str(block.get("device", "none") if isinstance(block, dict) else block).lower()
        if device in ("cpu", "nvme"):
            moved.append(what)
            if device == "nvme":
                read.unmodelled.append(f"deepspeed {key}.device: nvme (GPU side as a CPU "
                                       "offload; host RAM estimated as if on the CPU)")
        elif device not in ("none", "null", ""):
            raise SpecError(f"deepspeed: zero_optimization.{key}.device must be cpu, nvme or "
                            f"none (got {device!r})")
    if zero.get("cpu_offload") is True and "optimizer" not in moved:
        moved.append("optimizer")
    return "+".join(moved) if moved else "none"


def _overlap(zero: dict[str, Any], stage: int) -> bool:
    """DeepSpeed's default overlap_comm: True for ZeRO-3, False otherwise (config.py:383-386)."""
    value = zero.get("overlap_comm")
    if value is None:
        return stage == 3
    if not isinstance(value, bool):
        raise SpecError(f"deepspeed: zero_optimization.overlap_comm must be true or false "
                        f"(got {value!r})")
    return value


def _knob(zero: dict[str, Any], key: str, stage: int, hidden: int, read: LaunchRead
          ) -> int | None:
    """One bucket size in elements; None where it equals what the Spec's default means."""
    auto = {"reduce_bucket_size": hidden * hidden,
            "stage3_prefetch_bucket_size": int(0.9 * hidden * hidden),
            "stage3_param_persistence_threshold": 10 * hidden}
    meant = {"reduce_bucket_size": auto["reduce_bucket_size"] if stage == 3
             else DEEPSPEED_DEFAULTS["reduce_bucket_size"],
             "stage3_prefetch_bucket_size": auto["stage3_prefetch_bucket_size"],
             "stage3_param_persistence_threshold": auto["stage3_param_persistence_threshold"]}
    value = zero.get(key, DEEPSPEED_DEFAULTS[key])
    if value == "auto" and key in auto:
        value = auto[key]
        read.assumed[key] = (f"{key}: auto = {value:,} elements (transformers' DeepSpeed "
                             f"integration, hidden size {hidden})")
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1e13:
        raise SpecError(f"deepspeed: zero_optimization.{key} must be a number of elements or "
                        f"'auto' (got {value!r})")
    value = int(value)
    if key in meant:
        return None if value == meant[key] else value
    return value
