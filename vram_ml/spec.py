"""Spec: one fine-tuning configuration — everything that can change peak memory.

A Spec is validated when it is built (bad values fail with one line naming the field) and has a
stable `spec_id`: the hash of its canonical JSON, with the model named canonically, so the same
configuration typed as flags, as a LLaMA-Factory YAML, or by an agent on another machine gets the
same id.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from functools import cached_property
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from vram_ml.architectures import ModelShape
from vram_ml.defaults import LLAMAFACTORY_DEFAULTS, STACK_FIELDS, default, optimizer_default
from vram_ml.distributed import (
    MULTI_GPU_FIELDS,
    Distributed,
    FsdpSharding,
    Offload,
    irrelevant_fields,
    parallel_problem,
    resolve_distributed,
)
from vram_ml.model_source import ModelSourceError, ResolvedModel, resolve_model
from vram_ml.optimizers import Optimizer, optimizer_name
from vram_ml.stack import LIBRARIES, check_version, parse_version
from vram_ml.stages import PrefLoss, RewardModelType, Stage, canonical_stage_fields, check_stage

Method = Literal["full", "freeze", "lora", "qlora"]
# bf16 / fp16: mixed precision (half-precision frozen weights, autocast, fp32 trainable params).
# pure_bf16: everything bf16, no upcast. fp32: everything fp32.
# no_amp: half-precision weights without autocast (LLaMA-Factory when neither flag is set).
# Under framework trl the weights are loaded in that precision and nothing trainable is upcast
# (peft's adapters aside), so pure_bf16 and no_amp train the same way there.
Precision = Literal["bf16", "fp16", "pure_bf16", "fp32", "no_amp"]
Attention = Literal["eager", "sdpa", "flash_attention_2"]
# llamafactory: llamafactory-cli train; trl: Hugging Face Trainer / TRL SFTTrainer + peft;
# hf_trainer: the Hugging Face Trainer + peft without TRL (a model's own finetune.py)
# (vram_ml/stack.py; what each does to memory: model/formulas/stack.py).
Framework = Literal["llamafactory", "trl", "hf_trainer"]
SPEC_VERSION = 2  # bump when a field's meaning changes: old spec_ids must not collide with new
# 2: the stack (framework, library versions: STACK_FIELDS). Rows of version 1 have none of them.
# The stage fields (STAGE_FIELDS) need no bump: an sft spec hashes without them, as before.
# Fields renamed to LLaMA-Factory's names (old name -> new name; the boolean is inverted). A rename
# changes no configuration, so `spec_id` hashes these under their old names: ids in stores,
# claims and datasets stay valid (spec_id_v1 too); rows with the old columns load
# (renamed_fields).
LEGACY_SPEC_FIELDS = {
    "train_vision_tower": "freeze_vision_tower",
    "train_projector": "freeze_multi_modal_projector",
}


class SpecError(ValueError):
    """An invalid spec; the message is one line naming the field."""


class Spec(BaseModel):
    """One fine-tuning configuration. Defaults are LLaMA-Factory's (vram_ml/defaults.py)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    model: str = Field(description="catalog id, config.json path or HF id")
    model_overrides: dict[str, int | float] = Field(default_factory=dict)
    method: Method = default("method")
    quant_bits: Literal[4, 8] | None = default("quant_bits")
    quant_type: Literal["nf4", "fp4"] = default("quant_type")
    double_quant: bool = default("double_quant")
    lora_rank: int = Field(default=default("lora_rank"), ge=1, le=4096)
    lora_alpha: int | None = Field(default=default("lora_alpha"), ge=1)  # no effect on memory
    lora_dropout: float = Field(default=default("lora_dropout"), ge=0.0, lt=1.0)
    lora_target: tuple[str, ...] = default("lora_target")
    # LoRA: modules trained whole beside the adapters (peft `modules_to_save`, LLaMA-Factory's
    # `additional_target`): each keeps its frozen original and trains a copy. The input
    # embeddings and the output head, by their module names (ModelShape.embedding_module /
    # head_module: embed_tokens / lm_head, Qwen's wte, ...).
    additional_target: tuple[str, ...] = default("additional_target")
    freeze_trainable_layers: int = Field(default=default("freeze_trainable_layers"), ge=1)
    batch_size: int = Field(default=default("batch_size"), ge=1, le=4096)
    gradient_accumulation: int = Field(default=default("gradient_accumulation"), ge=1)
    seq_len: int = Field(default=default("seq_len"), ge=1)
    precision: Precision = default("precision")
    gradient_checkpointing: bool = default("gradient_checkpointing")
    attention: Attention = default("attention")
    optimizer: Optimizer = default("optimizer")
    liger_kernel: bool = default("liger_kernel")
    images_per_sample: int = Field(default=default("images_per_sample"), ge=0, le=64)
    image_resolution: int = Field(default=default("image_resolution"), ge=28, le=8192)
    freeze_vision_tower: bool = default("freeze_vision_tower")
    freeze_multi_modal_projector: bool = default("freeze_multi_modal_projector")
    num_gpus: int = Field(default=default("num_gpus"), ge=1, le=4096)
    zero_stage: Literal[0, 1, 2, 3] = default("zero_stage")
    # --- multi-GPU: how the GPUs share the run (vram_ml/distributed.py; what it costs per GPU:
    # model/formulas/distributed.py). `distributed` defaults from num_gpus / zero_stage ---
    distributed: Distributed = default("distributed")
    num_nodes: int = Field(default=default("num_nodes"), ge=1, le=4096)
    offload: Offload = default("offload")
    fsdp_sharding: FsdpSharding = default("fsdp_sharding")
    fsdp_version: Literal[1, 2] = default("fsdp_version")
    zero_reduce_bucket_size: int | None = Field(default=default("zero_reduce_bucket_size"),
                                                ge=1, le=10**12)
    zero_overlap_comm: bool = default("zero_overlap_comm")
    zero_prefetch_bucket_size: int | None = Field(default=default("zero_prefetch_bucket_size"),
                                                  ge=0, le=10**12)
    zero_persistence_threshold: int | None = Field(
        default=default("zero_persistence_threshold"), ge=0, le=10**12)
    zero_max_live_parameters: int = Field(default=default("zero_max_live_parameters"), ge=0,
                                          le=10**13)
    zero_max_reuse_distance: int = Field(default=default("zero_max_reuse_distance"), ge=0,
                                         le=10**13)
    # --- the stack: the framework and the library versions whose code moves memory ---
    framework: Framework = default("framework")
    transformers_version: str = default("transformers_version")
    peft_version: str = default("peft_version")
    trl_version: str = default("trl_version")
    bitsandbytes_version: str = default("bitsandbytes_version")
    accelerate_version: str = default("accelerate_version")
    # --- the training stage (vram_ml/stages.py: which fields apply, what each stage loads) ---
    stage: Stage = default("stage")
    pref_loss: PrefLoss = default("pref_loss")  # dpo: orpo / simpo have no reference model
    ref_model: str | None = Field(default=default("ref_model"),
                                  description="a separately loaded reference (model source)")
    ref_model_quantization_bit: Literal[4, 8] | None = default("ref_model_quantization_bit")
    reward_model_type: RewardModelType = default("reward_model_type")  # ppo
    reward_model: str | None = Field(default=default("reward_model"),
                                     description="reward_model_type full: its model source")
    reward_model_quantization_bit: Literal[4, 8] | None = default("reward_model_quantization_bit")
    max_new_tokens: int = Field(default=default("max_new_tokens"), ge=1, le=65536)  # ppo

    @model_validator(mode="before")
    @classmethod
    def _check_stack(cls, data: Any) -> Any:
        """Versions as release numbers, within what the rules cover for the framework; the
        optimizer the spec's transformers version picks when none is given."""
        if not isinstance(data, dict):
            return data
        data = dict(data)
        framework = str(data.get("framework") or default("framework"))
        for library in LIBRARIES:
            name = f"{library}_version"
            try:
                data[name] = check_version(library, data.get(name) or default(name), framework)
            except ValueError as error:
                raise ValueError(f"{name}: {error}") from None
        if "optimizer" not in data:
            data["optimizer"] = optimizer_default(data["transformers_version"])[0]
        return resolve_distributed(data)

    @field_validator("optimizer", mode="before")
    @classmethod
    def _optimizer_name(cls, value: Any) -> Any:
        return optimizer_name(value)

    @field_validator("lora_target", mode="before")
    @classmethod
    def _split_targets(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = [part.strip() for part in value.split(",")]
        if isinstance(value, list | tuple):
            targets = sorted({str(part).strip() for part in value if str(part).strip()})
            if not targets:
                raise ValueError("needs at least one module name or 'all'")
            return ("all",) if "all" in targets else tuple(targets)
        return value

    @field_validator("additional_target", mode="before")
    @classmethod
    def _split_additional(cls, value: Any) -> Any:
        if value is None:
            return ()
        if isinstance(value, str):
            value = value.split(",")
        if isinstance(value, list | tuple | set):
            return tuple(sorted({str(part).strip() for part in value if str(part).strip()}))
        return value

    @model_validator(mode="after")
    def _check_consistency(self) -> Spec:
        if self.method == "qlora" and self.quant_bits is None:
            raise ValueError("quant_bits: qlora needs quant_bits 4 or 8")
        if self.method != "qlora" and self.quant_bits is not None:
            raise ValueError(f"quant_bits: only qlora quantizes (method is {self.method})")
        problem = parallel_problem(self, {name: LLAMAFACTORY_DEFAULTS[name][0]
                                          for name in MULTI_GPU_FIELDS})
        if problem:
            raise ValueError(problem)
        if self.zero_stage == 3 and self.precision == "pure_bf16":
            raise ValueError("precision: pure_bf16 is incompatible with ZeRO-3 (LLaMA-Factory)")
        if self.framework != "llamafactory" and self.method == "freeze":
            raise ValueError(f"method: freeze tuning is LLaMA-Factory's; {self.framework} trains "
                             "full, lora or qlora")
        self._check_model()
        check_stage(self)
        return self

    def _check_model(self) -> None:
        try:
            shape = self.shape  # resolves the model
        except ModelSourceError as error:
            raise ValueError(str(error)) from None
        if self.seq_len > shape.max_position_embeddings:
            raise ValueError(
                f"seq_len: {self.seq_len} exceeds the model's max positions "
                f"({shape.max_position_embeddings})"
            )
        if self.method in ("lora", "qlora") and self.lora_target != ("all",):
            unknown = sorted(set(self.lora_target) - set(shape.linear_names))
            if unknown:
                raise ValueError(
                    f"lora_target: {', '.join(unknown)} not in this model "
                    f"(has {', '.join(shape.linear_names)})"
                )
        if self.additional_target:
            if self.method not in ("lora", "qlora"):
                raise ValueError(f"additional_target: only LoRA trains modules beside adapters "
                                 f"(method is {self.method})")
            known = (shape.embedding_module, shape.head_module)
            unknown = sorted(set(self.additional_target) - set(known))
            if unknown:
                raise ValueError(f"additional_target: {', '.join(unknown)} is not this model's "
                                 f"input embeddings ({known[0]}) or output head ({known[1]}), "
                                 "the modules vram-ml models as modules_to_save")
        if self.method == "freeze" and self.freeze_trainable_layers > shape.num_layers:
            raise ValueError(
                f"freeze_trainable_layers: {self.freeze_trainable_layers} exceeds the model's "
                f"{shape.num_layers} layers"
            )
        if self.images_per_sample and not shape.is_multimodal:
            raise ValueError("images_per_sample: the model has no vision tower")

    @cached_property
    def resolved_model(self) -> ResolvedModel:
        return resolve_model(self.model, dict(self.model_overrides))

    @cached_property
    def shape(self) -> ModelShape:
        """The model's shape as the spec's transformers version builds it (4.x: MoE experts and
        routers as nn.Linear modules; 5.x: fused 3-D parameters)."""
        major = parse_version(self.transformers_version)[0]
        return self.resolved_model.shape.for_transformers(major)

    @property
    def effective_lora_alpha(self) -> int:
        return self.lora_alpha if self.lora_alpha is not None else 2 * self.lora_rank

    @property
    def target_modules(self) -> tuple[str, ...]:
        """LoRA target module names, with `all` expanded to every decoder-layer linear (as the
        spec's transformers version builds the layer)."""
        shape = self.shape
        return shape.linear_names if self.lora_target == ("all",) else self.lora_target

    def canonical(self) -> dict[str, Any]:
        """The fields that define the configuration, with the model named canonically (renamed
        fields under their old names, see LEGACY_SPEC_FIELDS: the hash does not move)."""
        fields = self.model_dump(mode="json")
        fields["model"] = self.resolved_model.name
        fields["lora_target"] = list(self.target_modules)
        if not self.additional_target:  # ids made before the field existed stay valid
            fields.pop("additional_target")
        fields.pop("lora_alpha")  # memory-irrelevant: the same run whatever alpha is
        for name in irrelevant_fields(self):  # multi-GPU fields another kind of run has no use
            fields.pop(name)  # for: a single-GPU spec keeps the id it had before they existed
        for old, new in LEGACY_SPEC_FIELDS.items():
            fields[old] = not fields.pop(new)
        fields["spec_version"] = SPEC_VERSION
        return canonical_stage_fields(self, fields)

    @cached_property
    def spec_id(self) -> str:
        payload = json.dumps(self.canonical(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(payload.encode()).hexdigest()[:16]

    def spec_id_v1(self) -> str:
        """The id SPEC_VERSION 1 gave this spec (no stack fields): what rows made before the
        stack was part of the spec carry."""
        fields = {k: v for k, v in self.canonical().items()
                  if k not in STACK_FIELDS and k not in MULTI_GPU_FIELDS}
        fields["spec_version"] = 1
        payload = json.dumps(fields, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(payload.encode()).hexdigest()[:16]


def renamed_fields(fields: dict[str, Any],
                   as_bool: Callable[[str, Any], bool] = lambda _, value: bool(value)
                   ) -> dict[str, Any]:
    """Spec fields as written before a rename (LEGACY_SPEC_FIELDS): each old field read as the
    new one, its boolean inverted (`as_bool` reads the old value: CSV text, JSON, ...)."""
    fields = dict(fields)
    for old, new in LEGACY_SPEC_FIELDS.items():
        if old in fields and fields.get(new) is None:
            value = fields.pop(old)
            fields[new] = None if value is None else not as_bool(old, value)
    return fields


def build_spec(**fields: Any) -> Spec:
    """Build a Spec, turning pydantic's multi-line errors into one SpecError line.

    Raises:
        SpecError: the first invalid field, named, in one line.
    """
    try:
        return Spec(**fields)
    except ValidationError as error:
        raise SpecError(format_validation_error(error)) from None


def format_validation_error(error: ValidationError) -> str:
    first = error.errors()[0]
    location = ".".join(str(part) for part in first["loc"])
    message = first["msg"].removeprefix("Value error, ")
    if location and not message.startswith(location.split(".")[0] + ":"):
        message = f"{location}: {message}"
    value = first.get("input")
    if location and not isinstance(value, dict) and value is not None and len(repr(value)) < 60:
        message += f" (got {value!r})"
    return message.replace("\n", " ")
