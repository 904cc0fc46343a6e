"""The one definition of trainable parameters and image tokens (model/formulas/) against the
model the recipe really builds (transformers + peft on the meta device, tiny models on CPU)."""

from __future__ import annotations

import pytest
import torch

from vram_ml.model import recipe
from vram_ml.model.formulas.parameters import parameter_counts, trainable_parameters
from vram_ml.model.formulas.vision import image_geometry
from vram_ml.spec import build_spec

from ..tiny_models import TINY_LLAMA, TINY_LLAVA, TINY_QWEN2_VL, tiny_spec

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")

# A GPT-style decoder (`transformer.h.N` names, fused query_key_value) scaled down.
TINY_BLOOM = dict(model="bigscience/bloomz-7b1", model_overrides={
    "n_layer": 2, "hidden_size": 64, "n_head": 4, "vocab_size": 1000})
VISION = [  # (freeze_vision_tower, freeze_multi_modal_projector)
    pytest.param(True, True, id="frozen"), pytest.param(False, True, id="tower"),
    pytest.param(True, False, id="projector"), pytest.param(False, False, id="both")]
METHODS = [
    pytest.param(dict(method="lora", lora_target="q_proj,v_proj"), id="lora-q,v"),
    pytest.param(dict(method="lora", lora_target="all"), id="lora-all"),
    pytest.param(dict(method="full"), id="full"),
    pytest.param(dict(method="freeze", freeze_trainable_layers=1), id="freeze-1"),
]


def built_trainable(spec) -> int:
    model = recipe.build_model(spec, "meta")
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


@pytest.mark.parametrize("fields", METHODS)
@pytest.mark.parametrize("model", [TINY_LLAVA, TINY_QWEN2_VL], ids=["llava", "qwen2vl"])
@pytest.mark.parametrize("freeze_tower, freeze_projector", VISION)
def test_vlm_trainable_parameters_are_what_the_recipe_builds(model, fields, freeze_tower,
                                                             freeze_projector):
    spec = tiny_spec(model, freeze_vision_tower=freeze_tower,
                     freeze_multi_modal_projector=freeze_projector, **fields)
    assert built_trainable(spec) == trainable_parameters(spec).total


@pytest.mark.parametrize("fields", [*METHODS, pytest.param(
    dict(method="qlora", quant_bits=4, lora_target="all"), id="qlora-all"), pytest.param(
    dict(method="lora", lora_target="all", framework="trl"), id="trl-lora-all")])
@pytest.mark.parametrize("model", [dict(model=TINY_LLAMA), TINY_BLOOM], ids=["llama", "bloom"])
def test_decoder_trainable_parameters_are_what_the_recipe_builds(model, fields):
    if model is TINY_BLOOM and fields.get("lora_target") == "q_proj,v_proj":
        fields = {**fields, "lora_target": "query_key_value"}
    spec = build_spec(batch_size=1, seq_len=64, precision="bf16", **model, **fields)
    device = "cpu" if spec.method == "qlora" else "meta"  # bitsandbytes quantizes real weights
    model_built = recipe.build_model(spec, device)
    assert sum(p.numel() for p in model_built.parameters() if p.requires_grad) == (
        trainable_parameters(spec).total)


@pytest.mark.parametrize("model, targets", [
    (dict(model=TINY_LLAMA), "embed_tokens"), (dict(model=TINY_LLAMA), "lm_head"),
    (dict(model=TINY_LLAMA), "embed_tokens,lm_head"), (TINY_BLOOM, "word_embeddings,lm_head"),
], ids=["llama-embed", "llama-head", "llama-both", "bloom-both"])
@pytest.mark.parametrize("framework", ["llamafactory", "trl"])
def test_modules_to_save_copies_are_what_peft_builds(model, targets, framework):
    """additional_target: peft copies each module and trains the copy; the original stays."""
    spec = build_spec(batch_size=1, seq_len=64, precision="bf16", framework=framework,
                      additional_target=targets, **model)
    plain = build_spec(batch_size=1, seq_len=64, precision="bf16", framework=framework, **model)
    built = recipe.build_model(spec, "meta")
    counts = trainable_parameters(spec)
    assert sum(p.numel() for p in built.parameters() if p.requires_grad) == counts.total
    assert counts.saved > 0 and counts.total == trainable_parameters(plain).total + counts.saved
    trainable, frozen = parameter_counts(spec)
    assert frozen == parameter_counts(plain)[1]  # the originals stay, frozen
    assert trainable + frozen == sum(p.numel() for p in built.parameters())


@pytest.mark.parametrize("model", [TINY_LLAVA, TINY_QWEN2_VL], ids=["llava", "qwen2vl"])
def test_modules_to_save_copies_in_a_vlm_are_the_language_models(model):
    """A VLM's embed_tokens sits in its language model (`model.language_model.embed_tokens`):
    peft finds it by the name's end, as the count expects."""
    spec = tiny_spec(model, additional_target="embed_tokens,lm_head")
    assert built_trainable(spec) == trainable_parameters(spec).total
    assert trainable_parameters(spec).saved == 2 * spec.shape.input_embedding_params


def test_the_issue_case_lora_q_v_on_an_unfrozen_clip_tower():
    """LLaMA-Factory's LoRA reaches the tower's q_proj / v_proj when it is not frozen."""
    frozen = tiny_spec(TINY_LLAVA, lora_target="q_proj,v_proj")
    tower = tiny_spec(TINY_LLAVA, lora_target="q_proj,v_proj", freeze_vision_tower=False)
    assert trainable_parameters(frozen).total == 3584 and trainable_parameters(frozen).vision == 0
    assert trainable_parameters(tower).total == 5632 == built_trainable(tower)
    trainable, frozen_params = parameter_counts(tower)
    assert frozen_params == tower.resolved_model.shape.total_params  # LoRA trains no base weight


@pytest.mark.parametrize("model, resolution, images", [
    (TINY_LLAVA, 56, 2), (TINY_QWEN2_VL, 224, 1), (TINY_QWEN2_VL, 300, 2)])
def test_image_tokens_are_what_the_batch_holds_and_the_model_accepts(model, resolution, images):
    spec = tiny_spec(model, seq_len=256, images_per_sample=images, image_resolution=resolution,
                     precision="fp32", gradient_checkpointing=False)
    geometry = image_geometry(spec)
    built = recipe.build_model(spec, "cpu")
    batch = recipe.make_batch(spec, built)
    config = built.config
    image_id = getattr(config, "image_token_index", None) or config.image_token_id
    assert ((batch["input_ids"] == image_id).sum(dim=1) == images * geometry.placeholder_tokens
            ).all()
    assert (batch["labels"] == -100).sum(dim=1).tolist() == [images * geometry.lm_tokens] * 2
    with torch.no_grad():  # the model checks image tokens against the features its tower makes
        assert torch.isfinite(built(**batch).loss)
