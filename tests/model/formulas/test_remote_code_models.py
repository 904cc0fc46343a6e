"""The analytical estimator on remote-code-only models (Qwen v1 / Qwen-VL, ChatGLM3 / GLM-4), and
the recipe's and simulate's one-line refusal of them (they never run trust_remote_code).

Bounds are physical (the weights, plus what a 2048-token step can add), not fitted to any
published figure."""

from __future__ import annotations

import subprocess
import sys

import pytest
from typer.testing import CliRunner

from vram_ml.architectures import REMOTE_CODE_MODEL_TYPES
from vram_ml.model.estimate import GIB
from vram_ml.model.formulas import AnalyticalEstimator, vision
from vram_ml.model.formulas import activations as terms
from vram_ml.model.formulas.analytical import forward_logits_bytes
from vram_ml.model.formulas.model_states import Dtypes
from vram_ml.model_source import load_catalog
from vram_ml.spec import build_spec

REMOTE = sorted(hf_id for hf_id, entry in load_catalog().items()
                if entry.config["model_type"] in REMOTE_CODE_MODEL_TYPES)


def lora(model: str, **fields):
    base = dict(model=model, method="lora", lora_rank=64, batch_size=1, seq_len=2048,
                precision="bf16", gradient_checkpointing=True, attention="sdpa")
    return build_spec(**{**base, **fields})


def test_the_catalog_holds_the_remote_code_models():
    assert REMOTE == ["Qwen/Qwen-14B-Chat", "Qwen/Qwen-1_8B-Chat", "Qwen/Qwen-72B",
                      "Qwen/Qwen-7B", "Qwen/Qwen-7B-Chat", "Qwen/Qwen-VL-Chat",
                      "THUDM/chatglm3-6b", "THUDM/glm-4-9b-chat"]


@pytest.mark.parametrize("hf_id", REMOTE)
def test_lora_estimate_is_the_frozen_weights_plus_a_plausible_step(hf_id):
    spec = lora(hf_id)
    shape = spec.resolved_model.shape
    estimate = AnalyticalEstimator().estimate(spec)
    assert estimate.breakdown["weights"] == 2 * shape.total_params  # frozen bf16
    assert sum(estimate.breakdown.values()) == estimate.peak_vram_bytes
    # a 2048-token LoRA step with checkpointing adds adapters, a vocabulary of logits and
    # checkpoints: more than nothing, less than a third of the weights plus 6 GiB
    extra = estimate.peak_vram_bytes - estimate.breakdown["weights"]
    assert 0.5 * GIB < extra < shape.total_params * 2 / 3 + 6 * GIB
    longer = AnalyticalEstimator().estimate(lora(hf_id, seq_len=4096)).peak_vram_bytes
    assert longer > estimate.peak_vram_bytes


def test_full_fine_tuning_of_chatglm3_under_zero3_shards_the_model_states():
    """DeepSpeed ZeRO-3 over 4 GPUs: bf16 weights and gradients, fp32 master + AdamW states
    (12 bytes per parameter), each a quarter per GPU."""
    spec = build_spec(model="THUDM/chatglm3-6b", method="full", precision="bf16", seq_len=1024,
                      num_gpus=4, zero_stage=3)
    breakdown = AnalyticalEstimator().estimate(spec).breakdown
    params = spec.resolved_model.shape.total_params
    assert breakdown["weights"] == 2 * params // 4
    assert breakdown["optimizer"] == 12 * params // 4


def test_linears_land_in_their_roles_and_the_mlp_is_gated():
    for model, expected in {
        "Qwen/Qwen-7B-Chat": {"c_attn": "attn_in", "attn.c_proj": "attn_out", "w1": "mlp_in",
                              "w2": "mlp_in", "mlp.c_proj": "mlp_out"},
        "THUDM/glm-4-9b-chat": {"query_key_value": "attn_in", "dense": "attn_out",
                                "dense_h_to_4h": "mlp_in", "dense_4h_to_h": "mlp_out"},
    }.items():
        shape = lora(model).resolved_model.shape
        assert {lin.name: terms._role(lin, shape) for lin in shape.layer_linears} == expected
        ((inter, gated, per_token, expert),) = terms._mlp_groups(shape)
        assert (inter, gated, per_token, expert) == (shape.intermediate_size, True, 1, False)


def test_lora_on_c_proj_names_both_modules_and_attn_c_proj_one():
    qwen = lora("Qwen/Qwen-7B-Chat", lora_target="attn.c_proj,mlp.c_proj")
    attention_only = lora("Qwen/Qwen-7B-Chat", lora_target="attn.c_proj")
    both = AnalyticalEstimator().estimate(qwen).breakdown["adapters"]
    one = AnalyticalEstimator().estimate(attention_only).breakdown["adapters"]
    # LoRA A + B in fp32: attn.c_proj 4096 -> 4096, mlp.c_proj 11008 -> 4096, 32 layers, r 64
    assert one == 32 * 64 * (4096 + 4096) * 4
    assert both - one == 32 * 64 * (11008 + 4096) * 4


def test_each_model_computes_its_own_loss():
    """Bytes per logit (forward, backward) of the models' own loss code, whatever the
    transformers version: Qwen's CrossEntropyLoss on a shifted copy of the bf16 logits,
    log-softmax in fp32 under autocast: 12 / 12, all bf16 without autocast: 6 / 6; ChatGLM's fp32
    upcast + shifted copy: 12 / 12. transformers' own loss: None (the stack rules decide)."""
    def per_logit(spec):
        return terms.model_loss_bytes_per_logit(spec, Dtypes.of(spec))

    assert per_logit(lora("meta-llama/Meta-Llama-3-8B")) is None
    assert per_logit(lora("Qwen/Qwen-7B-Chat")) == (12, 12)
    assert per_logit(lora("Qwen/Qwen-7B-Chat", method="full", precision="pure_bf16")) == (6, 6)
    assert per_logit(lora("THUDM/glm-4-9b-chat")) == (12, 12)
    tokens, vocab = 2048, 151936
    for version in ("4.45.2", "5.24.0"):  # the stack's loss rules do not reach Qwen's own loss
        spec = lora("Qwen/Qwen-7B-Chat", framework="trl", transformers_version=version)
        assert forward_logits_bytes(spec, tokens, Dtypes.of(spec)) == 12 * tokens * vocab


def test_chatglm_attention_keeps_its_kv_expanded_to_every_head():
    spec = lora("THUDM/glm-4-9b-chat")
    shape, dt = spec.resolved_model.shape, Dtypes.of(spec)
    q = shape.num_attention_heads * shape.head_dim  # 32 heads; K/V: 2 groups expanded to 32
    assert terms._attention_core(spec, shape, dt, 2048) == 4 * q * 2 + 32 * 4


def test_qwen_vl_frozen_tower_records_nothing_and_its_attention_is_explicit():
    frozen = lora("Qwen/Qwen-VL-Chat", seq_len=512, images_per_sample=1, image_resolution=448)
    assert not vision.vision_in_graph(frozen)  # a plain nn.Module: no input hook
    dt = Dtypes.of(frozen)
    assert vision.vision_activation_bytes(frozen, dt) == vision.pixel_bytes(frozen)
    assert vision.pixel_bytes(frozen) == 3 * 448 * 448 * 4
    trained = lora("Qwen/Qwen-VL-Chat", seq_len=512, images_per_sample=1, image_resolution=448,
                   method="full", freeze_vision_tower=False, precision="bf16")
    assert vision.vision_in_graph(trained)
    scores = 16 * 1024 * 1024 * (2 + 8)  # heads x patches^2, eager even under SDPA
    working = vision.vision_forward_bytes(frozen, dt) - vision.vision_activation_bytes(frozen, dt)
    assert working == 1024 * (3 * 1664 + 8192) * 2 + scores
    assert AnalyticalEstimator().estimate(frozen).peak_vram_bytes > 2 * 9_656_935_168


@pytest.mark.parametrize("hf_id", ["Qwen/Qwen-7B-Chat", "Qwen/Qwen-VL-Chat", "THUDM/chatglm3-6b"])
def test_simulate_refuses_in_one_line_before_importing_torch(hf_id):
    code = ("import sys\nfrom vram_ml.spec import build_spec\n"
            "from vram_ml.model.simulate.estimator import simulate\n"
            f"spec = build_spec(model={hf_id!r}, method='lora', seq_len=512)\n"
            "try:\n    simulate(spec)\nexcept ValueError as error:\n    print(error)\n"
            "print('torch' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    refusal, torch_loaded = out.stdout.strip().splitlines()
    assert "remote code only" in refusal and "trust_remote_code" in refusal and hf_id in refusal
    assert torch_loaded == "False"


def test_the_recipe_refuses_them_and_the_cli_says_so_in_one_line():
    pytest.importorskip("torch")
    from vram_ml.cli import app
    from vram_ml.model.recipe import build_model
    from vram_ml.model.recipe.unsupported import UnsupportedRecipe

    with pytest.raises(UnsupportedRecipe, match="remote code only") as error:
        build_model(lora("THUDM/glm-4-9b-chat", seq_len=512), "meta")
    assert "\n" not in str(error.value)
    result = CliRunner().invoke(app, ["simulate", "--model", "Qwen/Qwen-7B-Chat", "--method",
                                      "lora", "--seq-len", "512"])
    assert result.exit_code != 0
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "remote code only" in lines[0]
