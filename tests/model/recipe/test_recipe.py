"""The recipe (model/recipe/): what it builds, in which dtype, what trains."""

from __future__ import annotations

import pytest
import torch

from vram_ml.model import recipe

from ..tiny_models import TINY_LLAVA, TINY_QWEN2_VL, TINY_TIED, tiny_spec

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")  # transformers deprecations


def _trainable(model):
    return {name: p for name, p in model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("precision,method,frozen,trainable", [
    ("bf16", "lora", torch.bfloat16, torch.float32),
    ("fp16", "lora", torch.float16, torch.float32),
    ("no_amp", "lora", torch.bfloat16, torch.float32),
    # pure_bf16: LLaMA-Factory casts nothing (adapter.py:316-317), peft's adapters stay fp32
    ("pure_bf16", "lora", torch.bfloat16, torch.float32),
    ("pure_bf16", "freeze", torch.bfloat16, torch.bfloat16),
    ("fp32", "lora", torch.float32, torch.float32),
])
def test_dtypes_follow_llamafactory(precision, method, frozen, trainable):
    model = recipe.build_model(tiny_spec(precision=precision, method=method), "meta")
    dtypes_frozen = {p.dtype for p in model.parameters() if not p.requires_grad}
    dtypes_trainable = {p.dtype for p in model.parameters() if p.requires_grad}
    assert dtypes_frozen == {frozen} and dtypes_trainable == {trainable}
    assert recipe.autocast_dtype(tiny_spec(precision=precision)) == (
        {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision))


def test_lora_targets_and_rank():
    model = recipe.build_model(tiny_spec(lora_target="q_proj,v_proj", lora_rank=4), "meta")
    names = _trainable(model)
    assert len(names) == 2 * 2 * 2  # 2 layers x (q, v) x (A, B)
    assert all("lora_" in n and (".q_proj." in n or ".v_proj." in n) for n in names)
    a = next(p for n, p in names.items() if "lora_A" in n)
    assert a.shape == (4, 64)


def test_freeze_trains_the_last_layers_only():
    model = recipe.build_model(tiny_spec(method="freeze", freeze_trainable_layers=1), "meta")
    assert _trainable(model) and all(".layers.1." in n for n in _trainable(model))


def test_full_trains_everything_in_fp32():
    model = recipe.build_model(tiny_spec(method="full"), "meta")
    assert len(_trainable(model)) == len(list(model.parameters()))


def test_qlora_quantizes_every_linear_but_the_head():
    import bitsandbytes as bnb

    model = recipe.build_model(tiny_spec(method="qlora", quant_bits=4), "cpu")
    base = model.base_model.model
    quantized = [n for n, m in base.named_modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert len(quantized) == 2 * 7
    assert not isinstance(base.lm_head, bnb.nn.Linear4bit)
    weight = base.model.layers[0].self_attn.q_proj.base_layer.weight
    assert weight.dtype == torch.uint8 and weight.numel() == 64 * 64 // 2


def test_vlm_vision_tower_and_projector_stay_frozen():
    spec = tiny_spec(TINY_LLAVA, method="full")
    model = recipe.build_model(spec, "meta")
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert frozen and all("vision_tower" in n or "multi_modal_projector" in n for n in frozen)
    lora = recipe.build_model(tiny_spec(TINY_LLAVA), "meta")
    assert all("language_model" in n for n in _trainable(lora))


def test_llava_batch_has_its_image_tokens():
    spec = tiny_spec(TINY_LLAVA, seq_len=128, images_per_sample=2)
    model = recipe.build_model(spec, "meta")
    batch = recipe.make_batch(spec, model)
    assert batch["pixel_values"].shape == (4, 3, 56, 56)
    assert (batch["input_ids"] == 1000).sum(dim=1).tolist() == [32, 32]  # 2 x (56/14)^2
    assert (batch["labels"] == -100).sum().item() == 2 * 32


def test_qwen2_vl_batch_grid_follows_the_resolution():
    spec = tiny_spec(TINY_QWEN2_VL, seq_len=128, images_per_sample=1, image_resolution=112)
    model = recipe.build_model(spec, "meta")
    batch = recipe.make_batch(spec, model)
    assert batch["image_grid_thw"].tolist() == [[1, 8, 8]] * 2
    assert batch["pixel_values"].shape == (2 * 64, 3 * 2 * 14 * 14)
    assert batch["mm_token_type_ids"].sum(dim=1).tolist() == [16, 16]  # 8*8 / 2^2


def test_images_larger_than_the_sequence_are_refused():
    spec = tiny_spec(TINY_QWEN2_VL, seq_len=32, images_per_sample=1, image_resolution=448)
    model = recipe.build_model(spec, "meta")
    with pytest.raises(recipe.UnsupportedRecipe, match="seq_len"):
        recipe.make_batch(spec, model)


@pytest.mark.parametrize("name,cls,bits_paged", [
    ("adamw_torch", "AdamW", None), ("adamw_torch_fused", "AdamW", None), ("sgd", "SGD", None),
    ("adafactor", "Adafactor", None), ("rmsprop", "RMSprop", None), ("adagrad", "Adagrad", None),
    ("adamw_8bit", "AdamW", (8, False)), ("adamw_bnb_8bit", "AdamW", (8, False)),
    ("paged_adamw_32bit", "AdamW", (32, True)), ("lion_8bit", "Lion", (8, False)),
    ("paged_lion_32bit", "Lion", (32, True)), ("ademamix", "AdEMAMix", (32, False)),
    ("rmsprop_bnb_8bit", "RMSprop", (8, None)),
])
def test_optimizers_are_built_as_transformers_builds_them(name, cls, bits_paged):
    spec = tiny_spec(method="full", optimizer=name)
    model = recipe.build_model(spec, "meta")
    optimizer = recipe.make_optimizer(spec, model)
    assert type(optimizer).__name__ == cls
    params = sum(len(g["params"]) for g in optimizer.param_groups)
    assert params == len(_trainable(model))
    if name in ("adamw_torch", "rmsprop", "adagrad"):
        assert optimizer.defaults["foreach"] is True  # torch's default on CUDA
    if bits_paged:  # bitsandbytes: one class per family, bits and paging from the name
        bits, paged = bits_paged
        assert optimizer.args.optim_bits == bits
        assert paged is None or optimizer.is_paged == paged


def test_liger_is_refused():
    with pytest.raises(recipe.UnsupportedRecipe, match="liger"):
        recipe.build_model(tiny_spec(liger_kernel=True), "meta")


def test_a_real_cpu_step_trains():
    spec = tiny_spec(lora_target="q_proj,v_proj")
    model = recipe.build_model(spec, "cpu")
    batch = recipe.make_batch(spec, model, "cpu")
    optimizer = recipe.make_optimizer(spec, model)
    before = {n: p.detach().clone() for n, p in _trainable(model).items()}
    loss = recipe.train_step(spec, model, batch, optimizer)
    assert torch.isfinite(loss)
    assert any(not torch.equal(before[n], p) for n, p in _trainable(model).items())
    assert all(p.grad is None for p in model.parameters())


@pytest.mark.parametrize("vision,projector", [(False, False), (False, True), (True, False)])
def test_qwen2_vl_merger_is_the_projector(vision, projector):
    spec = tiny_spec(TINY_QWEN2_VL, method="full", freeze_vision_tower=not vision,
                     freeze_multi_modal_projector=not projector)
    trainable = _trainable(recipe.build_model(spec, "meta"))
    assert any("visual.merger" in n for n in trainable) == projector
    assert any("visual.blocks" in n for n in trainable) == vision
    assert any("language_model" in n for n in trainable)


@pytest.mark.parametrize("device", ["meta", "cpu"])
def test_tied_embeddings_stay_one_tensor(device):
    from vram_ml.spec import build_spec

    spec = build_spec(method="full", seq_len=64, **TINY_TIED)
    model = recipe.build_model(spec, device)
    assert model.lm_head.weight is model.model.embed_tokens.weight
    assert sum(p.numel() for p in model.parameters()) == spec.resolved_model.shape.total_params
