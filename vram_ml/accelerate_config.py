"""Read an accelerate config (`accelerate launch --config_file fsdp_config.yaml`, `--accelerate-
config`) or the Trainer's `fsdp` / `fsdp_config` arguments into the Spec's multi-GPU fields.

LLaMA-Factory's examples/accelerate/fsdp_config.yaml, fsdp_config_offload.yaml, fsdp2_config.yaml
and fsdp_config_multiple_nodes.yaml are known by name when the file is not there. Keys as
accelerate@v1.11.0 reads them (src/accelerate/utils/dataclasses.py FullyShardedDataParallelPlugin:
`fsdp_` prefixed in a config file, sharding strategies also as accelerate's old numbers 1-5,
`fsdp_reshard_after_forward` for FSDP2); a DeepSpeed section (`deepspeed_config`) is read too.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vram_ml.deepspeed_config import LaunchRead, load_launch_file, read_deepspeed_config
from vram_ml.spec import SpecError

# accelerate/utils/constants.py FSDP_SHARDING_STRATEGY, in the order of its old numbers 1-5
SHARDING = ("FULL_SHARD", "SHARD_GRAD_OP", "NO_SHARD", "HYBRID_SHARD", "HYBRID_SHARD_ZERO2")
# the Trainer's `fsdp` option words (transformers TrainingArguments.fsdp / FSDPOption)
TRAINER_FSDP_WORDS = {"full_shard": "FULL_SHARD", "shard_grad_op": "SHARD_GRAD_OP",
                      "no_shard": "NO_SHARD", "hybrid_shard": "HYBRID_SHARD",
                      "hybrid_shard_zero2": "HYBRID_SHARD_ZERO2"}


def read_accelerate_config(value: Any, hidden_size: int, base: Path | None = None,
                           read_files: bool = False) -> LaunchRead:
    """The multi-GPU fields an accelerate config (a path, a known name, or its mapping) sets.

    Raises:
        SpecError: not an accelerate config, or a value accelerate would refuse (one line).
    """
    source = "the inline config"
    if isinstance(value, str):
        value, source = load_launch_file(value, "accelerate", base, read_files)
    if not isinstance(value, dict) or "distributed_type" not in value:
        raise SpecError(f"accelerate_config: {source} is not an accelerate config "
                        "(no distributed_type)")
    kind = str(value["distributed_type"]).upper()
    read = LaunchRead(assumed={"accelerate_config": f"accelerate_config: {source}"})
    gpus = _count(value.get("num_processes"), "num_processes")
    nodes = _count(value.get("num_machines"), "num_machines")
    if kind == "DEEPSPEED":
        read = _deepspeed_section(value.get("deepspeed_config") or {}, hidden_size, base,
                                  read_files, read)
    elif kind == "FSDP":
        read.fields.update(fsdp_fields(value.get("fsdp_config") or {}, read))
    elif kind in ("MULTI_GPU", "NO"):
        read.fields["distributed"] = "ddp" if kind == "MULTI_GPU" and (gpus or 2) > 1 else "none"
    else:
        raise SpecError(f"accelerate_config: distributed_type {kind} is not modelled (FSDP, "
                        "DEEPSPEED, MULTI_GPU or NO)")
    if gpus is not None:
        read.fields["num_gpus"] = gpus
    if nodes is not None:
        read.fields["num_nodes"] = nodes
    return read


def fsdp_fields(config: dict[str, Any], read: LaunchRead) -> dict[str, Any]:
    """An accelerate `fsdp_config` (or the Trainer's `fsdp_config`) as Spec fields."""
    if not isinstance(config, dict):
        raise SpecError("accelerate_config: fsdp_config must be a mapping")
    option = {key.removeprefix("fsdp_"): item for key, item in config.items()}
    version = option.get("version", 1)
    if version not in (1, 2, "1", "2"):
        raise SpecError(f"accelerate_config: fsdp_version must be 1 or 2 (got {version!r})")
    fields: dict[str, Any] = {"distributed": "fsdp", "fsdp_version": int(version)}
    strategy = option.get("sharding_strategy", option.get("reshard_after_forward"))
    fields["fsdp_sharding"] = sharding_of(strategy)
    if option.get("offload_params") in (True, "true", "True"):
        fields["offload"] = "optimizer+params"
    policy = str(option.get("auto_wrap_policy") or "TRANSFORMER_BASED_WRAP")
    if policy != "TRANSFORMER_BASED_WRAP":
        read.unmodelled.append(f"fsdp_auto_wrap_policy {policy} (estimated as "
                               "TRANSFORMER_BASED_WRAP: one unit per decoder layer)")
    if option.get("activation_checkpointing") in (True, "true"):
        read.assumed["fsdp_activation_checkpointing"] = ("fsdp_activation_checkpointing: read "
                                                         "as gradient checkpointing")
        fields["gradient_checkpointing"] = True
    return fields


def sharding_of(strategy: Any) -> str:
    """FULL_SHARD / SHARD_GRAD_OP / HYBRID_SHARD / NO_SHARD from what a config writes: the name,
    accelerate's old number (1-5), or FSDP2's reshard_after_forward (true / false)."""
    if strategy is None or strategy is True or str(strategy).lower() == "true":
        return "FULL_SHARD"
    if strategy is False or str(strategy).lower() == "false":
        return "SHARD_GRAD_OP"
    text = str(strategy).upper().removeprefix("SHARDINGSTRATEGY.")
    if text.isdigit() and 1 <= int(text) <= len(SHARDING):
        text = SHARDING[int(text) - 1]
    if text == "HYBRID_SHARD_ZERO2":
        raise SpecError("fsdp_sharding: HYBRID_SHARD_ZERO2 is not modelled (FULL_SHARD, "
                        "SHARD_GRAD_OP, HYBRID_SHARD, NO_SHARD)")
    if text not in SHARDING:
        raise SpecError(f"fsdp_sharding: {strategy!r} is not one of {', '.join(SHARDING[:4])}")
    return text


def trainer_fsdp_fields(words: Any, config: Any, read: LaunchRead) -> dict[str, Any]:
    """The Trainer's `fsdp: "full_shard auto_wrap offload"` and `fsdp_config: {...}`."""
    if isinstance(words, list):
        words = " ".join(str(word) for word in words)
    tokens = str(words).lower().split()
    fields = fsdp_fields(config if isinstance(config, dict) else {}, read)
    strategies = [TRAINER_FSDP_WORDS[t] for t in tokens if t in TRAINER_FSDP_WORDS]
    if strategies:
        fields["fsdp_sharding"] = sharding_of(strategies[0])
    if "offload" in tokens:
        fields["offload"] = "optimizer+params"
    unknown = [t for t in tokens if t not in TRAINER_FSDP_WORDS and t not in ("offload",
                                                                             "auto_wrap")]
    if unknown:
        raise SpecError(f"fsdp: {' '.join(unknown)!r} is not an FSDP option (full_shard, "
                        "shard_grad_op, hybrid_shard, no_shard, offload, auto_wrap)")
    return fields


def _deepspeed_section(section: dict[str, Any], hidden: int, base: Path | None,
                       read_files: bool, read: LaunchRead) -> LaunchRead:
    """accelerate's `deepspeed_config`: a `deepspeed_config_file`, or its own keys (zero_stage,
    offload_optimizer_device, offload_param_device)."""
    if not isinstance(section, dict):
        raise SpecError("accelerate_config: deepspeed_config must be a mapping")
    if section.get("deepspeed_config_file"):
        inner = read_deepspeed_config(str(section["deepspeed_config_file"]), hidden, base=base,
                                      read_files=read_files)
        inner.assumed.update(read.assumed)
        return inner
    zero: dict[str, Any] = {"stage": section.get("zero_stage", 0)}
    for key in ("offload_optimizer", "offload_param"):
        device = section.get(f"{key}_device")
        if device:
            zero[key] = {"device": device}
    inner = read_deepspeed_config({"zero_optimization": zero}, hidden)
    inner.assumed = {**read.assumed, **{k: v for k, v in inner.assumed.items()
                                        if k != "deepspeed"}}
    return inner


def _count(value: Any, name: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise SpecError(f"accelerate_config: {name} must be a positive integer (got {value!r})")
    return value
