"""The recipe on the 2026 catalog's families (scaled down, built on meta): what LoRA reaches on
fused experts, what it refuses, and one batch per vision-language family.

LoRA's reach is counted twice: by the formulas (pure Python, what `predict` uses) and by peft on
the recipe's real model; the two must agree to the parameter.
"""

from __future__ import annotations

import pytest
import torch

from vram_ml.model import recipe
from vram_ml.model.formulas.experts import lora_expert_ranks
from vram_ml.model.formulas.parameters import adapter_tensors, numel
from vram_ml.model.recipe.unsupported import UnsupportedRecipe
from vram_ml.spec import build_spec

from ..scaled_families import PEFT_HERE, SCALED, SCALED_VLM

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")

MOE = ["qwen3_moe", "qwen2_moe", "deepseek_v2", "deepseek_v3", "glm4_moe", "minimax_m2",
       "gpt_oss", "llama4"]


def _spec(family: str, **fields):
    hf_id, overrides = {**SCALED, **SCALED_VLM}[family]
    base = dict(model=hf_id, model_overrides=overrides, batch_size=1, seq_len=64,
                precision="bf16", **PEFT_HERE)
    return build_spec(**{**base, **fields})


@pytest.mark.parametrize("family", MOE)
def test_lora_parameters_equal_what_peft_makes(family):
    """`lora_target: all` on fused experts: peft 0.21 moves gate/up/down targets onto the 3-D
    expert parameters for DeepSeek / GLM-4.5 / Qwen3-MoE-style types (rank 2r on gate_up) and
    drops them from the shared / dense MLPs; elsewhere experts get no adapter."""
    spec = _spec(family)
    model = recipe.build_model(spec, "meta")
    made = sum(p.numel() for name, p in model.named_parameters() if "lora_" in name)
    assert made == numel(adapter_tensors(spec, spec.resolved_model.shape))
    on_experts = any(".experts." in name and "lora_" in name for name, _ in
                     model.named_parameters())  # routed experts, not `shared_experts`
    assert on_experts == bool(lora_expert_ranks(spec, spec.resolved_model.shape))


def test_experts_reached_only_where_peft_converts():
    for family in ("glm4_moe", "deepseek_v3"):
        new, old = _spec(family, peft_version="0.20.0"), _spec(family, peft_version="0.18.1")
        assert lora_expert_ranks(new, new.resolved_model.shape), family
        assert not lora_expert_ranks(old, old.resolved_model.shape), family  # peft < 0.19
    for family in ("qwen3_moe", "qwen2_moe", "minimax_m2", "gpt_oss", "llama4"):
        assert not lora_expert_ranks(_spec(family), _spec(family).resolved_model.shape), family


@pytest.mark.parametrize("fields", [{"method": "full"}, {"precision": "fp16"}])
def test_grouped_experts_outside_bf16_are_refused(fields):
    """torch grouped_mm takes bf16 only: fp32 (trained, upcast) or fp16 experts fail."""
    with pytest.raises(UnsupportedRecipe, match="grouped_mm") as error:
        recipe.build_model(_spec("qwen3_moe", **fields), "meta")
    assert "\n" not in str(error.value)


def test_llama4_router_is_not_a_lora_target():
    """Llama4Router subclasses nn.Linear but returns a tuple; LLaMA-Factory's rule (a class
    named ...Linear) leaves it out, and so does the recipe."""
    model = recipe.build_model(_spec("llama4"), "meta")
    assert not any("router" in name and "lora_" in name for name, _ in model.named_parameters())


@pytest.mark.parametrize("family", sorted(SCALED_VLM))
def test_vlm_batch_puts_the_geometry_tokens_in_the_sequence(family):
    from vram_ml.model.formulas.vision import image_geometry

    spec = _spec(family, images_per_sample=1, image_resolution=448, seq_len=512)
    model = recipe.build_model(spec, "meta")
    batch = recipe.make_batch(spec, model)
    geometry = image_geometry(spec)
    config = model.config
    image_id = getattr(config, "image_token_id", None) or config.image_token_index
    assert int((batch["input_ids"] == image_id).sum()) == geometry.placeholder_tokens
    assert int((batch["labels"] == -100).sum()) == geometry.lm_tokens
    pixels = batch["pixel_values"]
    if "image_grid_thw" in batch:
        assert pixels.shape[0] == geometry.encoder_tokens
    else:
        side = pixels.shape[-1] // config.vision_config.patch_size
        assert side * side == geometry.encoder_tokens
    assert pixels.dtype == torch.float32
