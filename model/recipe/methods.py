"""The fine-tuning method applied to a built model: what trains (full / freeze / LoRA), and the
bitsandbytes quantization of QLoRA, as LLaMA-Factory and transformers' integration do them."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import torch
from torch import nn

from vram_ml.model.recipe.precision import compute_dtype
from vram_ml.model.recipe.unsupported import UnsupportedRecipe
from vram_ml.model.recipe.weights import random_weight

if TYPE_CHECKING:
    from vram_ml.spec import Spec

QUANT_BLOCKSIZE_4BIT = 64  # bitsandbytes' default for 4-bit weights
# Name components of vision towers and projectors (LLaMA-Factory's visual.py, per model family).
VISION_MODULES = ("vision_tower", "visual", "vision_model")
PROJECTOR_MODULES = ("multi_modal_projector", "merger", "mm_projector")


def forbidden_prefixes(model: nn.Module, spec: Spec) -> tuple[str, ...]:
    """Module names that stay frozen: the vision tower and projector unless the spec trains them.

    A projector may sit inside the vision module (Qwen2-VL's `visual.merger`): the vision part is
    then its other children (`visual.patch_embed`, `visual.blocks`), as in LLaMA-Factory.
    """
    names = [name for name, _ in model.named_modules()]

    def projector(name: str) -> bool:
        return any(part in PROJECTOR_MODULES for part in name.split("."))

    def vision(name: str) -> bool:
        return any(part in VISION_MODULES for part in name.split(".")) and not projector(name)

    projectors = [name for name in names if projector(name)]
    prefixes: list[str] = []
    for name in names:
        holds_projector = any(p.startswith(name + ".") for p in projectors)
        frozen = (projector(name) and spec.freeze_multi_modal_projector) or (
            vision(name) and spec.freeze_vision_tower and not holds_projector)
        if frozen and not _inside(name, tuple(prefixes)):
            prefixes.append(name)
    return tuple(prefixes)


def _inside(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == prefix or name.startswith(prefix + ".") for prefix in prefixes)


def mark_trainable(model: nn.Module, spec: Spec) -> None:
    """Set requires_grad per method (LoRA parameters are added later by peft).

    `freeze` as LLaMA-Factory's `_setup_freeze_tuning`: a parameter trains when its name holds
    `.{index}.` of one of the last N decoder layers (so a tower that is not frozen trains its
    blocks of those indices too), or lies in a projector that is not frozen.
    """
    forbidden = forbidden_prefixes(model, spec)
    layer_ids = None
    if spec.method == "freeze":
        layers = spec.resolved_model.shape.num_layers
        layer_ids = {str(i) for i in range(max(0, layers - spec.freeze_trainable_layers), layers)}
    for name, param in model.named_parameters():
        if spec.method in ("lora", "qlora") or _inside(name, forbidden):
            param.requires_grad_(False)
        elif layer_ids is not None:
            indices = set(re.findall(r"(?<=\.)(\d+)(?=\.)", name))
            projector = not spec.freeze_multi_modal_projector and _in_projector(name)
            param.requires_grad_(bool(indices & layer_ids) or projector)
        else:
            param.requires_grad_(param.is_floating_point())


def _in_projector(name: str) -> bool:
    return any(part in PROJECTOR_MODULES for part in name.split("."))


def lora_target_names(model: nn.Module, spec: Spec) -> list[str]:
    """Full names of the linears LoRA wraps: LLaMA-Factory's targets, outside frozen vision
    modules, never the output head; `all` never reaches a projector (LLaMA-Factory's
    find_all_linear_modules leaves projector keys out). A linear is what find_all_linear_modules
    takes: a module whose class name says Linear (Llama 4's router subclasses nn.Linear as
    `Llama4Router` and returns a tuple: not a target)."""
    from peft.tuners.lora import LoraLayer

    wanted = set(spec.lora_target)
    forbidden = forbidden_prefixes(model, spec)
    head = model.get_output_embeddings()
    names = []
    for name, module in model.named_modules():
        linear = (isinstance(module, nn.Linear) and "Linear" in type(module).__name__
                  and not isinstance(module, LoraLayer))
        if not linear or module is head or _inside(name, forbidden):
            continue
        if ("all" in wanted and not _in_projector(name)) or name.rsplit(".", 1)[-1] in wanted:
            names.append(name)
    return names


def add_lora(model: nn.Module, spec: Spec) -> nn.Module:
    """Wrap the target linears with peft LoRA (rank, alpha, dropout from the spec) and copy the
    additional_target modules to train (peft modules_to_save)."""
    import peft

    targets = lora_target_names(model, spec)
    if not targets:
        raise UnsupportedRecipe(f"lora_target: no linear named {', '.join(spec.lora_target)}")
    config = peft.LoraConfig(
        r=spec.lora_rank,
        lora_alpha=spec.effective_lora_alpha,
        lora_dropout=spec.lora_dropout,
        target_modules=targets,
        task_type=peft.TaskType.CAUSAL_LM,
        modules_to_save=list(spec.additional_target) or None,
    )
    from vram_ml.model.formulas.stack import StackRules

    # peft < 0.12 leaves the adapters in the base weights' dtype: the installed peft does the
    # same when told not to upcast them (StackRules.fp32_adapters).
    return peft.get_peft_model(model, config,
                               autocast_adapter_dtype=StackRules.of(spec).fp32_adapters)


def quantize_linears(model: nn.Module, spec: Spec, device: torch.device) -> None:
    """Replace the linears transformers' bitsandbytes integration would quantize by bitsandbytes
    4-bit / 8-bit modules holding quantized random weights on `device`."""
    import bitsandbytes as bnb
    from transformers import BitsAndBytesConfig
    from transformers.integrations.bitsandbytes import replace_with_bnb_linear
    from transformers.quantizers.base import get_keys_to_not_convert

    quant_config = BitsAndBytesConfig(
        load_in_4bit=spec.quant_bits == 4,
        load_in_8bit=spec.quant_bits == 8,
        bnb_4bit_compute_dtype=compute_dtype(spec),
        bnb_4bit_use_double_quant=spec.double_quant,
        bnb_4bit_quant_type=spec.quant_type,
        llm_int8_threshold=0.0,
    )
    # bitsandbytes caches its 8-bit code on the device of the first call: keep that one real.
    bnb.functional.name2qmap.setdefault("dynamic", bnb.functional.create_dynamic_map())
    skip = get_keys_to_not_convert(model) + list(model._keep_in_fp32_modules or [])
    replace_with_bnb_linear(model, modules_to_not_convert=skip, quantization_config=quant_config)
    for module in model.modules():
        if isinstance(module, bnb.nn.Linear4bit):
            weight = random_weight(module, compute_dtype(spec), device)
            packed, state = bnb.functional.quantize_4bit(
                weight, blocksize=QUANT_BLOCKSIZE_4BIT, compress_statistics=spec.double_quant,
                quant_type=spec.quant_type, quant_storage=torch.uint8,
            )
            module.weight = bnb.nn.Params4bit(
                packed, requires_grad=False, quant_state=state, blocksize=QUANT_BLOCKSIZE_4BIT,
                compress_statistics=spec.double_quant, quant_type=spec.quant_type,
                quant_storage=torch.uint8, bnb_quantized=True, module=module,
            )
            module.quant_state = state
            # bitsandbytes 0.50 repacks a 4-bit weight for its CPU kernels the first time an
            # eval-mode layer runs without grad (nn/modules.py:611-620): a CPU-only layout (and
            # a new storage); off, so a CPU run keeps what CUDA keeps (frozen references, PPO's
            # rollouts)
            module.support_avx512bf16_for_cpu = False
        elif isinstance(module, bnb.nn.Linear8bitLt):
            weight = random_weight(module, compute_dtype(spec), device)
            int8_weight, row_scales, _ = bnb.functional.int8_vectorwise_quant(weight)
            module.weight = bnb.nn.Int8Params(
                int8_weight, requires_grad=False, has_fp16_weights=False, CB=int8_weight,
                SCB=row_scales,
            )
        else:
            continue
        if module.bias is not None:
            module.bias = nn.Parameter(torch.zeros_like(module.bias, device=device), False)
    model.is_loaded_in_4bit = spec.quant_bits == 4
    model.is_loaded_in_8bit = spec.quant_bits == 8
