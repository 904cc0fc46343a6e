"""Build the spec's model from its config numbers, ready to train: dtypes, quantization, frozen
parts, gradient checkpointing and LoRA (random weights; never remote code)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from vram_ml.model.recipe.frameworks import framework_for
from vram_ml.model.recipe.methods import mark_trainable, quantize_linears
from vram_ml.model.recipe.precision import compute_dtype
from vram_ml.model.recipe.stages import stage_for
from vram_ml.model.recipe.unsupported import UnsupportedRecipe, refuse_remote_code
from vram_ml.model.recipe.weights import materialize
from vram_ml.model.recipe_support import SUPPORTED_VLMS, recipe_refusal  # noqa: F401 (re-export)

if TYPE_CHECKING:
    from vram_ml.spec import Spec


def hf_config(spec: Spec) -> Any:
    """The transformers config of the spec's model (from its config numbers; no remote code)."""
    from transformers import AutoConfig

    config = dict(spec.resolved_model.config)
    model_type = config.pop("model_type")
    for key in ("transformers_version", "_name_or_path", "auto_map"):
        config.pop(key, None)
    hf = AutoConfig.for_model(model_type, **config)
    for sub in {id(c): c for c in (hf, hf.get_text_config())}.values():
        sub.use_cache = False  # training keeps no KV cache (LLaMA-Factory sets it off)
    return hf


def model_class(config: Any) -> type:
    """The transformers class that trains this config (its `architectures`, else an Auto class)."""
    import transformers

    for name in config.architectures or ():
        cls = getattr(transformers, name, None)
        if cls is not None and name.endswith(("ForCausalLM", "ForConditionalGeneration")):
            return cls
    if is_multimodal(config):
        return transformers.AutoModelForImageTextToText
    return transformers.AutoModelForCausalLM


def attention_implementation(spec: Spec, config: Any) -> str:
    """`spec.attention`, except that `sdpa` (LLaMA-Factory's `flash_attn: auto`) falls back to
    eager for models transformers has no SDPA path for (as `auto` does)."""
    cls = model_class(config)
    mapping = getattr(cls, "_model_mapping", None)
    if mapping is not None and type(config) in mapping:
        cls = mapping[type(config)]
    if spec.attention == "sdpa" and not getattr(cls, "_supports_sdpa", True):
        return "eager"
    return spec.attention


def check_grouped_experts(model: nn.Module) -> None:
    """transformers 5 runs fused MoE experts through `torch._grouped_mm` (its default
    `experts_implementation`), which takes bf16 only (torch's meta and CUDA kernels check it):
    experts kept in fp32 (trained with LLaMA-Factory's fp32 upcast) or fp16 make the step fail.

    Raises:
        UnsupportedRecipe: the experts' dtype, in one line.
    """
    for name, module in model.named_modules():
        config = getattr(module, "config", None)
        if getattr(config, "_experts_implementation", None) != "grouped_mm":
            continue
        for param_name in ("gate_up_proj", "up_proj", "down_proj"):
            param = module._parameters.get(param_name)
            if param is not None and param.dim() == 3 and param.dtype != torch.bfloat16:
                raise UnsupportedRecipe(
                    f"model: {name}.{param_name} is {str(param.dtype).removeprefix('torch.')}; "
                    "transformers 5 runs fused MoE experts through torch grouped_mm, which takes "
                    "bf16 only (train the experts in pure_bf16, or freeze them: lora / qlora)")


def is_multimodal(config: Any) -> bool:
    return getattr(config, "vision_config", None) is not None


def build_model(spec: Spec, device: str | torch.device = "cpu") -> nn.Module:
    """Build the model of `spec`, ready to train: dtypes, quantization, frozen parts, then
    checkpointing, LoRA and casts as the spec's framework does them (recipe/frameworks/), then
    what its training stage adds (recipe/stages/: a value head, a frozen reference or reward
    model beside the policy, `stages.common.companions(model)`).

    Args:
        spec: the configuration.
        device: "cuda" or "cpu" (random weights, really allocated) or "meta" (no storage: what
            `simulate` turns into fake tensors). QLoRA weights are quantized by bitsandbytes on
            the device (on "meta", bitsandbytes' shape functions give the packed layout).

    Returns:
        The model in train mode; a peft model for lora/qlora.

    Raises:
        UnsupportedRecipe: liger kernels, an unsupported vision-language family, a model that
            is remote code only, or a method the recipe does not build.
    """
    from accelerate import init_empty_weights

    refuse_remote_code(spec)
    device = torch.device(device)
    config = hf_config(spec)
    refusal = recipe_refusal(spec)
    if refusal:
        raise UnsupportedRecipe(refusal)
    with init_empty_weights(include_buffers=False):  # parameters on meta, small buffers real
        cls = model_class(config)
        build = getattr(cls, "from_config", None) or cls._from_config  # Auto classes / concrete
        model = build(config, dtype=compute_dtype(spec),
                      attn_implementation=attention_implementation(spec, config))
    model.tie_weights()  # init_empty_weights unties them (tie_word_embeddings models)
    if spec.method == "qlora":
        quantize_linears(model, spec, device)
    mark_trainable(model, spec)
    model = framework_for(spec).prepare(model, spec)  # checkpointing, LoRA, casts
    check_grouped_experts(model)
    model = stage_for(spec).prepare(model, spec, device)  # value head, reference / reward models
    if device.type != "meta":
        materialize(model, device)
    model.train()
    return model
