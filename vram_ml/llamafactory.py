"""Read a LLaMA-Factory training YAML (`llamafactory-cli train train.yaml`) into a Spec.

Every key is accounted for: mapped to a Spec field, known but memory-irrelevant (ignored), known
to move memory in a way not modelled (unmodelled), accepted by LLaMA-Factory but not assessed
here (unassessed), or unknown: a key LLaMA-Factory itself refuses (vram_ml/llamafactory_keys.py),
an error with a "did you mean" unless `allow_unknown`. Keys the file leaves out take
LLaMA-Factory's defaults, echoed as `assumed`; a vision-language model's images per sample, which
a YAML never says (its dataset does), is assumed to be one and said so.
"""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from vram_ml.defaults import assumed_defaults
from vram_ml.launch_configs import LAUNCH_KEYS, read_launch_configs
from vram_ml.llamafactory_keys import LLAMAFACTORY_KEYS
from vram_ml.llamafactory_stages import STAGE_IGNORED_KEYS, STAGE_KEYS, read_stage_keys
from vram_ml.spec import Spec, SpecError, build_spec

# Keys LLaMA-Factory / transformers accept that do not change peak memory.
IGNORED_KEYS = frozenset(
    {
        "do_train",
        "do_eval",
        "do_predict",
        "learning_rate",
        "num_train_epochs",
        "max_steps",
        "warmup_steps",
        "warmup_ratio",
        "lr_scheduler_type",
        "weight_decay",
        "adam_beta1",
        "adam_beta2",
        "adam_epsilon",
        "max_grad_norm",
        "seed",
        "lora_alpha",
        "use_rslora",
        "dataset",
        "eval_dataset",
        "dataset_dir",
        "template",
        "max_samples",
        "overwrite_cache",
        "preprocessing_num_workers",
        "dataloader_num_workers",
        "output_dir",
        "logging_steps",
        "save_steps",
        "save_strategy",
        "save_total_limit",
        "save_only_model",
        "plot_loss",
        "overwrite_output_dir",
        "report_to",
        "run_name",
        "logging_dir",
        "ddp_timeout",
        "resume_from_checkpoint",
        "val_size",
        "per_device_eval_batch_size",
        "eval_strategy",
        "eval_steps",
        "trust_remote_code",
        "flash_attn_version",
        "lr_scheduler_kwargs",
        "push_to_hub",
        "hub_model_id",
        "tokenized_path",
        "streaming",
        "buffer_size",
        "mix_strategy",
        "interleave_probs",
        "media_dir",
        "include_num_input_tokens_seen",
        "use_reentrant_gc",
        "adapter_name_or_path",
        "export_dir",
        "finetuning_args",
        "cache_dir",
        "hf_hub_token",
        "ms_hub_token",
        "om_hub_token",
        "print_param_status",
        "packing",  # sft: bins padded to cutoff_len (the batch's length anyway); pt: below
        "train_on_prompt",
        "mask_history",
        "use_fast_tokenizer",
        "split",
    }
)

# Keys that change memory in ways this version does not model: reported, never dropped silently.
UNMODELLED_KEYS = frozenset(
    {
        "use_dora",
        "use_galore",
        "use_badam",
        "use_apollo",
        "use_unsloth",
        "pissa_init",
        "upcast_layernorm",
        "upcast_lmhead_output",
        "rope_scaling",
        "shift_attn",
        "freeze_language_model",
        "freeze_trainable_modules",
        "freeze_extra_modules",
        "torch_compile",
        "video_max_pixels_train",
        "moe_aux_loss_coef",
        "neat_packing",  # without FA2: a (B, 1, S, S) block-diagonal mask (data/collator.py:524)
        # videos: a sample's frames add image tokens; vram-ml models images only
        "video_max_pixels",
        "video_min_pixels",
        "video_fps",
        "video_maxlen",
    }
)
# LLaMA-Factory's on-the-fly quantization methods (model_utils/quantization.py): bitsandbytes is
# modelled; HQQ and EETQ store weights in other formats; the rest name pre-quantized checkpoints
# and quantize nothing on the fly.
QUANTIZATION_METHODS = ("bnb", "bitsandbytes")
OTHER_ON_THE_FLY_QUANTIZATION = ("hqq", "eetq")
IMAGES_ASSUMED = 1  # a VLM YAML does not say how many images a sample has: its dataset does
IMAGE_MAX_PIXELS_DEFAULT = 768 * 768  # LLaMA-Factory data_args.py

_FLASH_ATTN = {
    "auto": "sdpa",
    "sdpa": "sdpa",
    "disabled": "eager",
    "fa2": "flash_attention_2",
    "fa3": "flash_attention_2",
}
_FINETUNING = {"lora": "lora", "full": "full", "freeze": "freeze"}


@dataclass
class LlamaFactoryRead:
    """What a YAML became: the spec plus every key's fate."""

    spec: Spec
    assumed: dict[str, str] = field(default_factory=dict)  # spec field -> LLaMA-Factory default
    ignored: list[str] = field(default_factory=list)
    unmodelled: list[str] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)  # refused unless allow_unknown
    unassessed: list[str] = field(default_factory=list)  # LLaMA-Factory keys not classified here


def read_llamafactory_yaml(
    path: str | Path, overrides: dict[str, Any] | None = None, allow_unknown: bool = False
) -> LlamaFactoryRead:
    """Read a LLaMA-Factory YAML; `overrides` (Spec fields, e.g. from CLI flags) win over the file.

    Raises:
        SpecError: unreadable file, bad YAML, a key LLaMA-Factory refuses (unless
            `allow_unknown`), or an invalid configuration (one line).
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecError(f"config: no such file {str(path)!r}") from None
    except (OSError, UnicodeDecodeError) as error:
        raise SpecError(f"config: cannot read {str(path)!r} ({type(error).__name__})") from None
    return spec_from_llamafactory(parse_llamafactory_text(text, repr(str(path))), overrides,
                                  allow_unknown, base=path.parent, read_files=True)


def parse_llamafactory_text(text: str, name: str = "the YAML") -> dict[str, Any]:
    """The mapping a LLaMA-Factory YAML holds (yaml.safe_load); `name` says which in errors.

    Raises:
        SpecError: not valid YAML, or not a mapping (one line).
    """
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as error:
        line = getattr(getattr(error, "problem_mark", None), "line", None)
        where = f" at line {line + 1}" if line is not None else ""
        raise SpecError(f"config: {name} is not valid YAML{where}") from None
    except RecursionError:
        raise SpecError(f"config: {name} is nested too deeply") from None
    if not isinstance(raw, dict):
        raise SpecError(f"config: {name} must be a mapping of LLaMA-Factory keys")
    return raw


def spec_from_llamafactory(
    raw: dict[str, Any], overrides: dict[str, Any] | None = None, allow_unknown: bool = False,
    base: Path | None = None, read_files: bool = False,
) -> LlamaFactoryRead:
    """The spec a YAML's mapping describes. `overrides` may also name launch configs
    (`deepspeed`, `accelerate_config`), read from `base` when `read_files` (never for the web)."""
    fields, consumed = _map_keys(raw)
    overrides = dict(overrides or {})
    launch_names = {name: overrides.pop(name) for name in ("deepspeed", "accelerate_config")
                    if name in overrides}
    stage = read_stage_keys(raw, overrides, fields["model"])  # stage, pref_loss, ppo_* ...
    fields.update(stage.fields)
    consumed |= stage.consumed
    launch = read_launch_configs(raw, fields, {**overrides, **launch_names}, base, read_files)
    fields.update(launch.fields)
    fields.update(overrides)
    consumed |= {key for key in LAUNCH_KEYS if key in raw}
    ignorable = IGNORED_KEYS | STAGE_IGNORED_KEYS | {*STAGE_KEYS, "num_beams"}
    ignored = sorted(key for key in raw if key in ignorable and key not in consumed)
    unmodelled = sorted(
        [key for key in raw if key in UNMODELLED_KEYS and raw[key] not in (None, False)]
        + stage.unmodelled
    )
    rest = [str(key) for key in raw
            if key not in consumed and key not in ignorable and key not in UNMODELLED_KEYS]
    unassessed = sorted(key for key in rest if key in LLAMAFACTORY_KEYS)
    unknown = sorted(key for key in rest if key not in LLAMAFACTORY_KEYS)
    if unknown and not allow_unknown:
        raise SpecError(unknown_keys_message(unknown))
    spec = build_spec(**fields)
    resized = _resize_vocab_targets(raw, spec)
    if resized:
        consumed.add("resize_vocab")
        unassessed = [key for key in unassessed if key != "resize_vocab"]
        fields["additional_target"] = resized
        spec = build_spec(**fields)
    multimodal = spec.resolved_model.shape.is_multimodal
    assumed = assumed_defaults(fields, multimodal, spec.transformers_version, spec)
    if resized:
        assumed["additional_target"] = (
            f"additional_target: {','.join(resized)}, the input embeddings and output head "
            "resize_vocab trains (LLaMA-Factory adapter.py); the tokenizer assumed to add no "
            "rows beyond the embedding's")
    assumed.update({key: note for key, note in stage.assumed.items() if key not in overrides})
    if multimodal and "images_per_sample" not in fields:
        spec = build_spec(**{**fields, "images_per_sample": IMAGES_ASSUMED})
        assumed["images_per_sample"] = images_assumed_note()
    assumed.update(launch.assumed)
    return LlamaFactoryRead(spec, assumed, ignored, unmodelled + launch.unmodelled, unknown,
                            unassessed)


def _resize_vocab_targets(raw: dict[str, Any], spec: Any) -> tuple[str, ...]:
    """LoRA with resize_vocab and no additional_target: LLaMA-Factory sets it to the modules
    holding the input and output embeddings (model/adapter.py `_setup_lora_tuning`)."""
    if not raw.get("resize_vocab") or spec.method not in ("lora", "qlora") or (
            spec.additional_target):
        return ()
    return (spec.shape.embedding_module, spec.shape.head_module)


def images_assumed_note() -> str:
    return (f"images per sample: unknown (the YAML does not say; its dataset does), estimated "
            f"with {IMAGES_ASSUMED}; pass --images N")


def unknown_keys_message(unknown: list[str]) -> str:
    """One line: each key LLaMA-Factory would refuse, with the closest known key (difflib)."""
    known = sorted(LLAMAFACTORY_KEYS | IGNORED_KEYS | UNMODELLED_KEYS)
    described = []
    for key in unknown:
        close = difflib.get_close_matches(key, known, n=1, cutoff=0.75)
        described.append(f"{key!r} (did you mean {close[0]!r}?)" if close else repr(key))
    return (f"config: unknown key{'s' if len(unknown) > 1 else ''} {', '.join(described)}: "
            "LLaMA-Factory refuses keys it does not know; --allow-unknown to go on without them")


def _map_keys(raw: dict[str, Any]) -> tuple[dict[str, Any], set[str]]:
    """LLaMA-Factory keys -> Spec fields. Returns (fields, consumed keys)."""
    fields: dict[str, Any] = {}
    consumed: set[str] = set()

    def take(key: str) -> Any:
        consumed.add(key)
        return raw[key]

    if "model_name_or_path" not in raw:
        raise SpecError("config: model_name_or_path is required")
    fields["model"] = str(take("model_name_or_path"))
    fields["framework"] = "llamafactory"  # llamafactory-cli train's YAML (a flag may override)
    direct = {
        "lora_rank": "lora_rank",
        "lora_alpha": "lora_alpha",
        "lora_dropout": "lora_dropout",
        "lora_target": "lora_target",
        "additional_target": "additional_target",
        "quantization_type": "quant_type",
        "double_quantization": "double_quant",
        "per_device_train_batch_size": "batch_size",
        "gradient_accumulation_steps": "gradient_accumulation",
        "cutoff_len": "seq_len",
        "enable_liger_kernel": "liger_kernel",
        "optim": "optimizer",
        "freeze_trainable_layers": "freeze_trainable_layers",
    }
    for key, name in direct.items():
        if key in raw and raw[key] is not None:
            fields[name] = take(key)
    finetuning = str(take("finetuning_type")) if "finetuning_type" in raw else "lora"
    if finetuning not in _FINETUNING:
        raise SpecError(f"finetuning_type: {finetuning!r} is not one of lora, full, freeze")
    fields["method"] = _FINETUNING[finetuning]
    bits = take("quantization_bit") if "quantization_bit" in raw else None
    _check_quantization_method(raw, take, bits)
    if bits is not None:
        fields["quant_bits"] = bits
        if fields["method"] != "lora":
            raise SpecError(
                "quantization_bit: LLaMA-Factory quantizes only for finetuning_type lora"
            )
        fields["method"] = "qlora"
    fields.update(_precision(raw, take))
    if "disable_gradient_checkpointing" in raw:
        fields["gradient_checkpointing"] = not bool(take("disable_gradient_checkpointing"))
    if "flash_attn" in raw:
        value = str(take("flash_attn"))
        if value not in _FLASH_ATTN:
            raise SpecError(f"flash_attn: {value!r} is not one of {', '.join(_FLASH_ATTN)}")
        fields["attention"] = _FLASH_ATTN[value]
    fields.update(_image_keys(raw, take))
    for key in ("freeze_vision_tower", "freeze_multi_modal_projector"):
        if key in raw:
            fields[key] = take(key)
    if "images_per_sample" in raw:  # not a LLaMA-Factory key: its data decides; ours to say
        fields["images_per_sample"] = take("images_per_sample")
    # `deepspeed`, `fsdp`, `fsdp_config`: read by launch_configs.py (spec_from_llamafactory)
    for key in ("num_gpus", "num_nodes"):  # not LLaMA-Factory keys (torchrun decides); ours
        if key in raw:
            fields[key] = take(key)
    return fields, consumed


def _pixels(raw: dict[str, Any], take, key: str) -> int | None:
    if key not in raw:
        return None
    pixels = take(key)
    if isinstance(pixels, bool) or not isinstance(pixels, int) or pixels <= 0:
        raise SpecError(f"{key}: must be a positive integer (got {pixels!r})")
    return pixels


def _image_keys(raw: dict[str, Any], take) -> dict[str, Any]:
    """`image_max_pixels` bounds every image (LLaMA-Factory resizes larger ones down to it): the
    estimate assumes square images at that bound (`image_resolution` = its square root), so
    `image_min_pixels` (smaller images are resized up to it) only has to be consistent."""
    largest = _pixels(raw, take, "image_max_pixels")
    smallest = _pixels(raw, take, "image_min_pixels")
    if smallest is not None and smallest > (largest or IMAGE_MAX_PIXELS_DEFAULT):
        raise SpecError(f"image_min_pixels: {smallest} exceeds image_max_pixels "
                        f"({largest or IMAGE_MAX_PIXELS_DEFAULT})")
    return {} if largest is None else {"image_resolution": math.isqrt(largest)}


def _check_quantization_method(raw: dict[str, Any], take, bits: Any) -> None:
    if "quantization_method" not in raw:
        return
    method = str(take("quantization_method")).lower()
    if bits is None or method in QUANTIZATION_METHODS:
        return  # without quantization_bit, LLaMA-Factory quantizes nothing on the fly
    if method in OTHER_ON_THE_FLY_QUANTIZATION:
        raise SpecError(f"quantization_method: {method} is not modelled (vram-ml models "
                        "bitsandbytes 4/8-bit only; its packed weights and constants differ)")
    raise SpecError(f"quantization_method: {method} quantizes nothing on the fly in LLaMA-Factory "
                    "(it names a pre-quantized checkpoint, which vram-ml does not model)")


def _precision(raw: dict[str, Any], take) -> dict[str, Any]:
    bf16 = bool(take("bf16")) if "bf16" in raw else False
    fp16 = bool(take("fp16")) if "fp16" in raw else False
    pure_bf16 = bool(take("pure_bf16")) if "pure_bf16" in raw else False
    if bf16 and fp16:
        raise SpecError("bf16: bf16 and fp16 cannot both be true")
    if pure_bf16:
        return {"precision": "pure_bf16"}
    if bf16:
        return {"precision": "bf16"}
    if fp16:
        return {"precision": "fp16"}
    return {} if not {"bf16", "fp16"} & set(raw) else {"precision": "no_amp"}
