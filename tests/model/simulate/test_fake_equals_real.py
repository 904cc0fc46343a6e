"""Fake == real, to the byte: the simulated step counts exactly what a real CPU step allocates.

Both runs use the same recipe, tracker and CUDA rules; only the tensors differ (fake vs real).
The default tier runs one case of each recipe path; the rest of the grid (`slow`) runs the same
paths in more combinations.
"""

from __future__ import annotations

import pytest

from ..tiny_models import TINY_LLAVA, TINY_QWEN2_VL, TINY_TIED, tiny_spec

DEFAULT_TIER = {("sdpa", True, "all"), ("eager", False, "q_proj,v_proj")}  # each axis both ways
LLAMA_GRID = [
    pytest.param(dict(attention=attention, gradient_checkpointing=ckpt, lora_target=target),
                 id=f"llama-{attention}-{'ckpt' if ckpt else 'nockpt'}-{target.replace(',', '+')}",
                 marks=[] if (attention, ckpt, target) in DEFAULT_TIER else [pytest.mark.slow])
    for attention in ("sdpa", "eager")
    for ckpt in (True, False)
    for target in ("q_proj,v_proj", "all")
]

RECIPES = [
    pytest.param(dict(method="qlora", quant_bits=4), id="qlora-nf4-double-quant"),
    pytest.param(dict(method="qlora", quant_bits=4, quant_type="fp4", double_quant=False,
                      gradient_checkpointing=False), id="qlora-fp4", marks=pytest.mark.slow),
    pytest.param(dict(method="qlora", quant_bits=8), id="qlora-8bit"),
    pytest.param(dict(lora_dropout=0.1), id="lora-dropout"),
    pytest.param(dict(lora_dropout=0.1, gradient_checkpointing=False), id="lora-dropout-nockpt",
                 marks=pytest.mark.slow),
    pytest.param(dict(method="full"), id="full-adamw-foreach"),
    pytest.param(dict(method="full", optimizer="adamw_torch_fused"), id="full-adamw-fused"),
    pytest.param(dict(method="full", optimizer="adamw_8bit"), id="full-adamw-8bit"),
    pytest.param(dict(method="full", optimizer="sgd"), id="full-sgd"),
    pytest.param(dict(method="full", optimizer="adafactor"), id="full-adafactor"),
    pytest.param(dict(method="freeze", freeze_trainable_layers=1, precision="fp16"),
                 id="freeze-fp16"),
    pytest.param(dict(method="full", precision="pure_bf16"), id="full-pure-bf16"),
    pytest.param(dict(precision="fp32"), id="lora-fp32"),
    pytest.param(dict(precision="no_amp"), id="lora-no-amp"),
    pytest.param(dict(gradient_accumulation=2), id="lora-grad-accum"),
    pytest.param(dict(additional_target="embed_tokens,lm_head"), id="lora-modules-to-save"),
]

VLMS = [
    pytest.param(TINY_LLAVA, dict(), id="llava-lora", marks=pytest.mark.slow),
    pytest.param(TINY_LLAVA, dict(method="full", freeze_multi_modal_projector=False),
                 id="llava-full-projector"),
    pytest.param(TINY_LLAVA, dict(method="qlora", quant_bits=4, images_per_sample=2),
                 id="llava-qlora-2-images"),
    pytest.param(TINY_QWEN2_VL, dict(), id="qwen2vl-lora"),
    pytest.param(TINY_QWEN2_VL, dict(method="qlora", quant_bits=4, gradient_checkpointing=False),
                 id="qwen2vl-qlora", marks=pytest.mark.slow),
    pytest.param(TINY_QWEN2_VL, dict(freeze_vision_tower=False, image_resolution=168),
                 id="qwen2vl-lora-vision-tower"),
]


def assert_fake_equals_real(spec):
    from vram_ml.model.simulate.step import run_on_cpu, simulate_step

    fake, real = simulate_step(spec).peak, run_on_cpu(spec).peak
    assert fake.peak_tensor_bytes == real.peak_tensor_bytes
    assert fake.peak_rounded_bytes == real.peak_rounded_bytes
    assert fake.peak_reserved_bytes == real.peak_reserved_bytes
    assert fake.peak_allocated_bytes == real.peak_allocated_bytes
    assert fake.breakdown == real.breakdown
    assert (fake.step, fake.phase, fake.ops) == (real.step, real.phase, real.ops)
    assert fake.peak_tensor_bytes > sum(v for k, v in fake.breakdown.items() if k == "weights")


@pytest.mark.parametrize("fields", LLAMA_GRID)
def test_tiny_llama_lora(fields):
    assert_fake_equals_real(tiny_spec(**fields))


@pytest.mark.parametrize("fields", RECIPES)
def test_tiny_llama_recipes(fields):
    assert_fake_equals_real(tiny_spec(**fields))


@pytest.mark.parametrize("model,fields", VLMS)
def test_tiny_vision_language(model, fields):
    image = dict(seq_len=128, images_per_sample=1, image_resolution=112)
    assert_fake_equals_real(tiny_spec(model, **{**image, **fields}))


@pytest.mark.parametrize("fields", [
    pytest.param(dict(method="full"), id="full"),
    pytest.param(dict(method="qlora", quant_bits=4), id="qlora"),
])
def test_tied_embeddings(fields):
    from vram_ml.spec import build_spec

    spec = build_spec(batch_size=2, seq_len=64, precision="bf16", **TINY_TIED, **fields)
    assert_fake_equals_real(spec)
