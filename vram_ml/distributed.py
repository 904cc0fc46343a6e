"""How a Spec's GPUs share the run: the multi-GPU fields' values, their defaults and their rules.

The Spec (spec.py) holds these fields as one block; this module resolves the default of
`distributed` from the others, checks that they fit together (one line naming the field), and
says which of them define a given configuration (the rest are left out of its `spec_id`, so a
single-GPU spec has the id it had before these fields existed). The DeepSpeed JSON and the
accelerate config are read into them by deepspeed_config.py and accelerate_config.py; what they
cost per GPU is model/formulas/distributed.py. Pure Python.

- `distributed`: none (one process), ddp (torch DDP), deepspeed (the DeepSpeed engine, ZeRO
  stage `zero_stage`, ZeRO-0 included: it is not DDP), fsdp (torch FSDP through accelerate).
- `offload`: DeepSpeed `offload_optimizer` / `offload_param` to the CPU; FSDP's CPU offload
  (`fsdp_offload_params: true`) moves parameters, gradients and the optimizer step together:
  "optimizer+params".
- `fsdp_sharding` and `fsdp_version` (1: FullyShardedDataParallel, 2: `fully_shard`), `num_nodes`
  (HYBRID_SHARD shards within a node, replicates across nodes).
- `zero_*`: the DeepSpeed `zero_optimization` keys that move memory, in elements; None = what
  LLaMA-Factory's examples/deepspeed/ds_z{stage}_config.json sets ("auto", resolved from the
  hidden size as transformers' HfTrainerDeepSpeedConfig does, for ZeRO-3; 5e8 for ZeRO-0/1/2).
"""

from __future__ import annotations

from typing import Any, Literal

Distributed = Literal["none", "ddp", "deepspeed", "fsdp"]
Offload = Literal["none", "optimizer", "params", "optimizer+params"]
FsdpSharding = Literal["FULL_SHARD", "SHARD_GRAD_OP", "HYBRID_SHARD", "NO_SHARD"]

ZERO_FIELDS = ("zero_reduce_bucket_size", "zero_overlap_comm", "zero_prefetch_bucket_size",
               "zero_persistence_threshold", "zero_max_live_parameters",
               "zero_max_reuse_distance")
FSDP_FIELDS = ("fsdp_sharding", "fsdp_version", "accelerate_version")
# every field of the block (zero_stage and num_gpus are older: they stay in every spec_id)
MULTI_GPU_FIELDS = ("distributed", "num_nodes", "offload", *FSDP_FIELDS, *ZERO_FIELDS)
# which kinds each field describes; under the others it keeps its default and no spec_id sees it
RELEVANT_UNDER: dict[str, tuple[str, ...]] = {
    "distributed": ("ddp", "deepspeed", "fsdp"),
    "num_nodes": ("ddp", "deepspeed", "fsdp"),
    "offload": ("deepspeed", "fsdp"),
    **{name: ("fsdp",) for name in FSDP_FIELDS},
    **{name: ("deepspeed",) for name in ZERO_FIELDS},
}


def resolve_distributed(data: dict[str, Any]) -> dict[str, Any]:
    """`distributed` when not given: DeepSpeed if a ZeRO stage > 0 or an offload is set, DDP for
    more than one GPU, none for one."""
    if data.get("distributed") is not None:
        return data
    data = dict(data)
    stage, offload = data.get("zero_stage") or 0, data.get("offload") or "none"
    gpus = data.get("num_gpus") or 1
    if (isinstance(stage, int) and stage > 0) or offload != "none":
        data["distributed"] = "deepspeed"
    elif isinstance(gpus, int) and not isinstance(gpus, bool) and gpus > 1:
        data["distributed"] = "ddp"
    else:
        data["distributed"] = "none"
    return data


def parallel_problem(spec: Any, defaults: dict[str, Any]) -> str | None:
    """Why the block does not describe a run (one line naming the field), or None."""
    kind, gpus = spec.distributed, spec.num_gpus
    if kind == "none" and gpus > 1:
        return f"distributed: none runs one process; num_gpus is {gpus} (ddp, deepspeed or fsdp)"
    if kind == "ddp" and gpus == 1:
        return "distributed: ddp needs num_gpus > 1 (one GPU trains without it)"
    if spec.zero_stage and kind != "deepspeed":
        return f"zero_stage: ZeRO stages are DeepSpeed's (distributed is {kind})"
    if gpus % spec.num_nodes:
        return f"num_nodes: {gpus} GPUs do not split evenly over {spec.num_nodes} nodes"
    for name, kinds in RELEVANT_UNDER.items():
        if name in ("distributed", "accelerate_version"):  # a stack field: any spec names it
            continue
        if kind not in kinds and getattr(spec, name) != defaults[name]:
            return f"{name}: only {' or '.join(kinds)} uses it (distributed is {kind})"
    return _offload_problem(spec) or _quantized_problem(spec) or _accelerate_problem(spec)


def _offload_problem(spec: Any) -> str | None:
    if spec.offload == "none":
        return None
    if spec.distributed == "fsdp" and spec.offload != "optimizer+params":
        return ("offload: FSDP's CPU offload moves parameters, gradients and the optimizer step "
                "together (optimizer+params)")
    if spec.distributed == "deepspeed" and spec.zero_stage == 0:
        return "offload: ZeRO-Offload needs ZeRO stage 1, 2 or 3 (zero_stage is 0)"
    if spec.distributed == "deepspeed" and "params" in spec.offload and spec.zero_stage != 3:
        return f"offload: parameter offload needs ZeRO-3 (zero_stage is {spec.zero_stage})"
    return None


def _quantized_problem(spec: Any) -> str | None:
    """LLaMA-Factory@v0.9.5:src/llamafactory/model/model_utils/quantization.py:183-191: under
    ZeRO-3 or FSDP only 4-bit bitsandbytes (its quant storage in the compute dtype)."""
    sharded = spec.distributed == "fsdp" or (spec.distributed == "deepspeed"
                                              and spec.zero_stage == 3)
    if spec.method == "qlora" and sharded and spec.quant_bits != 4:
        return "quant_bits: only 4-bit QLoRA shards under ZeRO-3 / FSDP (LLaMA-Factory refuses 8)"
    return None


# accelerate@v1.6.0:src/accelerate/utils/dataclasses.py:1455: `fsdp_version` (FSDP2) appears;
# accelerate@v1.12.0:src/accelerate/utils/fsdp_utils.py:709-712 casts the whole model to fp32
# before `fully_shard`, Params4bit included (bitsandbytes 0.50 Params4bit.to -> float); 1.13.0
# (fsdp_utils.py:733-740) upcasts only parameters that require grad, none of a 4-bit model.
FSDP2_FROM = (1, 6, 0)
FSDP2_QLORA_FROM = (1, 13, 0)


def _accelerate_problem(spec: Any) -> str | None:
    from vram_ml.stack import format_version, parse_version

    if spec.distributed != "fsdp" or spec.fsdp_version != 2:
        return None
    version = parse_version(spec.accelerate_version)
    if version < FSDP2_FROM:
        return (f"fsdp_version: FSDP2 needs accelerate >= {format_version(FSDP2_FROM)} "
                f"(accelerate_version is {spec.accelerate_version})")
    if spec.method == "qlora" and version < FSDP2_QLORA_FROM:
        return (f"fsdp_version: QLoRA under FSDP2 needs accelerate >= "
                f"{format_version(FSDP2_QLORA_FROM)}; older ones cast the 4-bit weights to fp32 "
                f"(accelerate_version is {spec.accelerate_version})")
    return None


def relevant(name: str, spec: Any) -> bool:
    """Whether multi-GPU field `name` describes `spec`'s run (the ZeRO-3 knobs only under
    ZeRO-3); other fields always do."""
    if name not in RELEVANT_UNDER:
        return True
    if spec.distributed not in RELEVANT_UNDER[name]:
        return False
    return not (name in ZERO_FIELDS[2:] and spec.zero_stage != 3)


def irrelevant_fields(spec: Any) -> list[str]:
    """The block's fields that do not describe this spec's run (left out of its spec_id)."""
    return [name for name, kinds in RELEVANT_UNDER.items() if spec.distributed not in kinds]


def shard_group(spec: Any) -> int:
    """GPUs one copy of the model states is sharded over: all of them, but HYBRID_SHARD shards
    within a node (torch FSDP ShardingStrategy.HYBRID_SHARD) and replicates across nodes."""
    if spec.distributed == "fsdp" and spec.fsdp_sharding == "HYBRID_SHARD":
        return spec.num_gpus // spec.num_nodes
    return spec.num_gpus


def describe(spec: Any) -> str:
    """One line: how the GPUs share the run ("DeepSpeed ZeRO-3 + offload optimizer+params on
    8 GPUs")."""
    gpus = f"{spec.num_gpus} GPU{'s' if spec.num_gpus > 1 else ''}"
    if spec.num_nodes > 1:
        gpus += f" on {spec.num_nodes} nodes"
    offload = f" + CPU offload ({spec.offload})" if spec.offload != "none" else ""
    if spec.distributed == "deepspeed":
        return f"DeepSpeed ZeRO-{spec.zero_stage}{offload} on {gpus}"
    if spec.distributed == "fsdp":
        return f"FSDP{spec.fsdp_version} {spec.fsdp_sharding}{offload} on {gpus}"
    if spec.distributed == "ddp":
        return f"DDP on {gpus}"
    return "one GPU"
