"""What the recipe (model/recipe/) builds, in pure Python: the specs it refuses, and why.

The recipe raises these reasons when asked to build such a spec; `fit` asks here (without
importing torch) before it proposes a change, and says "unmeasured" when the change leads to a
spec no micro-training can measure.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from vram_ml.model.formulas.experts import lora_expert_ranks
from vram_ml.stages import stage_refusal

if TYPE_CHECKING:
    from vram_ml.spec import Spec

SUPPORTED_VLMS = ("llava", "qwen2_vl", "qwen2_5_vl", "qwen3_vl", "qwen3_vl_moe", "glm4v", "gemma3",
                  "mistral3")


def recipe_refusal(spec: Spec) -> str:
    """Why the recipe cannot build `spec` (one line), or "" when it can."""
    if spec.liger_kernel:
        return "liger_kernel: Liger kernels are not part of this recipe"
    if spec.additional_target and spec.framework == "llamafactory" and spec.precision == "no_amp":
        # LLaMA-Factory upcasts the modules_to_save copies to fp32 and nothing casts their
        # inputs or outputs: the real CPU step fails in the first matmul that mixes them
        return ("additional_target: without bf16/fp16 LLaMA-Factory's fp32 copies meet "
                "half-precision tensors (a dtype error in the step); set bf16 or fp16")
    shape = spec.resolved_model.shape
    if spec.lora_dropout and lora_expert_ranks(spec, spec.shape):
        # peft >= 0.19 moves gate/up/down targets onto fused experts as lora.ParamWrapper,
        # whose __init__ raises on dropout (peft 0.21 tuners/lora/layer.py:2366)
        return ("lora_dropout: peft's LoRA on fused experts (ParamWrapper) does not work with "
                "lora_dropout != 0; set 0 or leave gate/up/down_proj out of lora_target")
    if shape.is_multimodal and shape.model_type not in SUPPORTED_VLMS:
        return (f"model: vision-language family {shape.model_type!r} is not in the recipe "
                f"(supported: {', '.join(SUPPORTED_VLMS)})")
    return stage_refusal(spec)  # PPO with freeze, or with 4/8-bit weights under bf16
