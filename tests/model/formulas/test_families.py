"""The analytical estimator on every family added with the 2026 catalog, against the fake-tensor
simulation of the real training step (tests/model/scaled_families.py has the scaled-down
models): LoRA on all linears, bf16 autocast, with and without gradient checkpointing, the
allocated peak within 5%. Vision-language families run one 896 px image.

The simulations take 1-5 s each on two cores: six cases (one of each kind of physics) are in the
default tier, the rest of the grid in the slow tier (`pytest -m slow
tests/model/formulas/test_families.py`); the default tier also checks that every scaled model
estimates and that the formulas' terms move the way their physics says. The figures:
`scripts/family_agreement.py`.
"""

from __future__ import annotations

import pytest

from vram_ml.model.formulas.analytical import analyse
from vram_ml.spec import build_spec

from ..scaled_families import PEFT_HERE, SCALED, SCALED_VLM

BAND = 0.05
TEXT = dict(batch_size=2, seq_len=512, precision="bf16", method="lora")
VISION = dict(batch_size=1, seq_len=2048, precision="bf16", method="lora", images_per_sample=1,
              image_resolution=896)


def _spec(family: str, checkpointing: bool, **fields):
    hf_id, overrides = {**SCALED, **SCALED_VLM}[family]
    base = VISION if family in SCALED_VLM else TEXT
    return build_spec(model=hf_id, model_overrides=overrides, gradient_checkpointing=checkpointing,
                      **{**base, **PEFT_HERE, **fields})


@pytest.mark.parametrize("family", sorted({**SCALED, **SCALED_VLM}))
def test_every_scaled_family_estimates(family):
    analysis = analyse(_spec(family, True))
    assert analysis.peak_allocated_bytes > analysis.states.weights > 0


def test_moe_experts_hold_their_routed_tokens():
    """Doubling top-k doubles what the routed experts keep and hold (per token)."""
    from vram_ml.model.formulas import experts
    from vram_ml.model.formulas.model_states import Dtypes

    spec = _spec("qwen3_moe", False)
    shape, dt = spec.resolved_model.shape, Dtypes.of(spec)
    wider = shape.__class__(**{**shape.__dict__, "num_experts_per_tok": 16})
    assert experts.expert_transient_per_token(wider, dt) == 2 * (
        experts.expert_transient_per_token(shape, dt))
    inter = 768
    assert (experts.expert_saved_per_token(wider, inter, True, dt, False)
            - experts.router_saved_per_token(wider, dt)) == 2 * (
        experts.expert_saved_per_token(shape, inter, True, dt, False)
        - experts.router_saved_per_token(shape, dt))


def test_lora_on_fused_experts_keeps_merged_weights_without_checkpointing():
    """peft's ParamWrapper merges W + BA per forward; without checkpointing every MoE layer
    keeps its merged copy for backward, with checkpointing only the recomputed one exists."""
    plain, checkpointed = analyse(_spec("glm4_moe", False)), analyse(_spec("glm4_moe", True))
    no_experts = analyse(_spec("glm4_moe", False, lora_target="q_proj,k_proj,v_proj,o_proj"))
    assert plain.activations - no_experts.activations > 2 * 8 * 3 * 512 * 1024 * 2 * 0.99
    assert checkpointed.activations < no_experts.activations


def test_gpt_oss_runs_eager_and_keeps_the_sink_scores():
    sdpa = analyse(_spec("gpt_oss", False))
    eager = analyse(_spec("gpt_oss", False, attention="eager"))
    assert sdpa.peak_allocated_bytes == eager.peak_allocated_bytes  # no SDPA path: eager runs


def test_qwen3_vl_tower_stays_out_of_the_graph_when_frozen():
    """Qwen3-VL's vision model exposes no input embedding for the checkpointing hook: a frozen
    tower saves nothing but the pixels, unlike Qwen2-VL's."""
    from vram_ml.model.formulas.model_states import Dtypes
    from vram_ml.model.formulas.vision import pixel_bytes, vision_activation_bytes

    spec = _spec("qwen3_vl", True)
    assert vision_activation_bytes(spec, Dtypes.of(spec)) == pixel_bytes(spec)


# The default tier's share of the grid (about 1-2 s a case): one of each kind of physics
DEFAULT_TIER = {("deepseek_v3", False), ("gpt_oss", False), ("llama4", False),
                ("qwen3_moe", True), ("gemma3", False), ("mistral3", True)}


@pytest.mark.parametrize("family, checkpointing", [
    pytest.param(family, checkpointing,
                 marks=[] if (family, checkpointing) in DEFAULT_TIER else [pytest.mark.slow])
    for family in sorted({**SCALED, **SCALED_VLM}) for checkpointing in (True, False)])
def test_analytical_agrees_with_the_simulated_step(family, checkpointing):
    simulate = pytest.importorskip("vram_ml.model.simulate.estimator").simulate
    spec = _spec(family, checkpointing)
    simulated = simulate(spec).peak_tensor_bytes
    assert analyse(spec).peak_tensor_bytes == pytest.approx(simulated, rel=BAND)


@pytest.mark.parametrize("model, resolution, expected", [
    # Pixtral: n = ceil(side / 28) rows of n image tokens + a break; capped at 1540 px (the
    # config's image_size): 55 x 56 = 3080 tokens, 110 x 110 patches through the tower
    ("mistralai/Mistral-Small-3.1-24B-Instruct-2503", 1024, (37 * 38, 74 * 74, 37 * 37)),
    ("mistralai/Mistral-Small-3.1-24B-Instruct-2503", 2000, (55 * 56, 110 * 110, 55 * 55)),
    # Gemma 3: 4096 SigLIP patches (896 / 14) pooled to 256 tokens + <boi>, <eoi>, 2 newlines
    ("google/gemma-3-4b-it", 768, (260, 4096, 256)),
    # Qwen3-VL: patch 16 x merge 2 = 32 px per token side: 768 px = 24 x 24 tokens + start/end
    ("Qwen/Qwen3-VL-8B-Instruct", 768, (578, 48 * 48, 576)),
    # GLM-4.1V: patch 14 x merge 2: 784 px = 28 x 28 tokens
    ("zai-org/GLM-4.1V-9B-Thinking", 784, (786, 56 * 56, 784)),
])
def test_image_tokens_follow_each_processor(model, resolution, expected):
    from vram_ml.model.formulas.vision import image_geometry

    spec = build_spec(model=model, images_per_sample=1, image_resolution=resolution,
                      seq_len=4096, precision="bf16")
    geometry = image_geometry(spec)
    assert (geometry.lm_tokens, geometry.encoder_tokens, geometry.placeholder_tokens) == expected


@pytest.mark.parametrize("resolution, expected", [
    (300, (3 + 144, 577, 144)),  # one 336-px tile: <|image_start|> <|image|> 144 <|image_end|>
    # 2 x 2 tiles + the global view: 5 x 144 features, 4 separators; 577 patches (+ class) each
    (672, (5 * 144 + 4 + 3, 5 * 577, 5 * 144)),
    (5000, (17 * 144 + 16 + 3, 17 * 577, 17 * 144)),  # capped at 4 x 4 tiles (max_patches 16)
])
def test_llama4_images_are_tiles(tmp_path, resolution, expected):
    """A Llama 4 config.json as shipped (model_type llama4, with its vision_config) predicts:
    the tower and projector are counted and an image is tiles (processing_llama4.py)."""
    import json

    from vram_ml.model.formulas.vision import image_geometry
    from vram_ml.model.recipe_support import recipe_refusal

    path = tmp_path / "config.json"
    vision = {"hidden_size": 1408, "num_hidden_layers": 34, "num_attention_heads": 16,
              "intermediate_size": 5632, "image_size": 336, "patch_size": 14,
              "vision_output_dim": 4096, "projector_input_dim": 4096,
              "projector_output_dim": 4096}
    path.write_text(json.dumps({"model_type": "llama4", "vision_config": vision,
                                "text_config": {"num_hidden_layers": 4, "hidden_size": 5120}}))
    spec = build_spec(model=str(path), images_per_sample=1, image_resolution=resolution,
                      seq_len=4096, precision="bf16")
    geometry = image_geometry(spec)
    assert (geometry.lm_tokens, geometry.encoder_tokens, geometry.placeholder_tokens) == expected
    assert analyse(spec).peak_tensor_bytes > analyse(spec.model_copy(
        update={"images_per_sample": 0})).peak_tensor_bytes
    assert "llama4" in recipe_refusal(spec)  # simulate and the agent refuse it in one line
