"""The training stages in the analytical estimator: each stage's terms, and the sanity relations
between stages that a wrong model would break (model/formulas/stages.py)."""

from __future__ import annotations

import subprocess
import sys
from importlib import resources

import pytest

from vram_ml.llamafactory import read_llamafactory_yaml
from vram_ml.model.formulas.analytical import AnalyticalEstimator, analyse
from vram_ml.model.formulas.stages import kv_cache_bytes
from vram_ml.spec import build_spec

LLAMA3 = "meta-llama/Meta-Llama-3-8B"
GIB = 1024**3
EXAMPLES = resources.files("vram_ml") / "examples"
BASE = dict(model=LLAMA3, batch_size=2, seq_len=1024, precision="bf16")


def spec(**fields):
    return build_spec(**{**BASE, **fields})


def logits(s, sequences: int) -> int:
    return sequences * s.seq_len * s.resolved_model.shape.vocab_size


@pytest.mark.parametrize("checkpointing", [True, False])
def test_lora_dpo_is_sft_at_twice_the_sequences_plus_the_log_prob_terms(checkpointing):
    """Same graph (2B sequences, dropout off in both): DPO keeps the policy's fp32 logits and
    log-softmax (8 B) through the reference forward's (8 B), 16 B per logit against SFT's 12."""
    dpo = analyse(spec(stage="dpo", gradient_checkpointing=checkpointing))
    sft = analyse(spec(batch_size=4, gradient_checkpointing=checkpointing))
    assert dpo.peak_moment == "reference_forward" and sft.peak_moment == "loss_backward"
    extra = dpo.peak_tensor_bytes - sft.peak_tensor_bytes
    assert extra == 4 * logits(spec(), 4)


def test_full_dpo_adds_a_frozen_reference_in_the_checkpoint_dtype():
    full = analyse(spec(stage="dpo", method="full"))
    lora = analyse(spec(stage="dpo"))
    params = full.states.trainable_params
    assert full.breakdown["reference_model"] == 2 * spec().resolved_model.shape.total_params
    assert lora.breakdown["reference_model"] == 0  # the adapter-disabled base
    sft_full = analyse(spec(method="full", batch_size=4))
    reference = full.breakdown["reference_model"]
    total = {name: sum(parts.values()) for name, parts in full.moments.items()}
    sft_total = {name: sum(parts.values()) for name, parts in sft_full.moments.items()}
    assert total["reference_forward"] - sft_total["loss_backward"] == reference + 4 * logits(
        spec(), 4)
    assert total["optimizer_step"] - sft_total["optimizer_step"] == reference
    assert full.peak_tensor_bytes >= sft_full.peak_tensor_bytes + reference
    assert params > 0
    quantized = analyse(spec(stage="dpo", ref_model=LLAMA3, ref_model_quantization_bit=4))
    assert 0.3 < quantized.breakdown["reference_model"] / full.breakdown["reference_model"] < 0.4


def test_orpo_and_simpo_load_and_run_no_reference():
    for loss in ("orpo", "simpo"):
        result = analyse(spec(stage="dpo", pref_loss=loss, method="full"))
        assert "reference_forward" not in result.moments
        assert result.breakdown["reference_model"] == result.breakdown["reference_logits"] == 0
        assert result.peak_moment != "reference_forward"


def test_kto_holds_twenty_bytes_per_target_logit_at_the_reference_forward():
    kto = analyse(spec(stage="kto"))
    parts = kto.moments["reference_forward"]
    assert parts["logits"] + parts["reference_logits"] == 20 * logits(spec(), 2)
    assert kto.peak_moment == "reference_forward"


def test_reward_modelling_has_no_logits_backward_and_no_head_state():
    rm = analyse(spec(stage="rm"))
    assert rm.moments["loss_backward"]["logits"] == 0
    assert rm.moments["forward_end"]["logits"] == 6 * logits(spec(), 4)  # bf16 + fp32 upcast
    full_rm, full_sft = analyse(spec(stage="rm", method="full")), analyse(spec(method="full"))
    shape = spec().resolved_model.shape
    saved = full_sft.states.optimizer - full_rm.states.optimizer
    assert saved == 2 * 4 * shape.lm_head_params  # untied head: no Adam states
    assert full_sft.states.gradients - full_rm.states.gradients == 4 * shape.lm_head_params


@pytest.mark.parametrize("method,fields", [
    ("lora", {"max_new_tokens": 1024}),  # generating as many tokens as the prompt holds
    ("full", {"reward_model_type": "full"}),  # a reward model beside the reference
    ("full", {"reward_model_type": "full", "max_new_tokens": 256}),
])
def test_ppo_costs_more_than_dpo_which_costs_more_than_sft(method, fields):
    """The same model, method, batch and cutoff. For LoRA PPO only outgrows DPO once its
    sequences (prompt + generated) are at least DPO's two per sample: below that LoRA PPO is
    cheaper, which is why the relation is tested where it holds."""
    sft = analyse(spec(method=method)).peak_vram_bytes
    dpo = analyse(spec(method=method, stage="dpo")).peak_vram_bytes
    ppo = analyse(spec(method=method, stage="ppo", **fields)).peak_vram_bytes
    assert ppo > dpo > sft


def test_ppo_generation_keeps_the_kv_cache_of_prompt_and_response():
    s = spec(stage="ppo", max_new_tokens=512)
    shape = s.resolved_model.shape
    expected = 2 * shape.num_layers * 2 * (1024 + 511) * shape.num_key_value_heads \
        * shape.head_dim * 2
    assert kv_cache_bytes(s, shape, 1024 + 511) == expected
    generation = analyse(s).moments["generation"]
    assert generation["kv_cache"] >= expected and "activations" not in generation
    full = spec(stage="ppo", max_new_tokens=512, method="full", reward_model_type="full")
    assert kv_cache_bytes(full, shape, 1535) == 2 * expected  # fp32 layers: fp32 keys, values


def test_ppo_fp16_autocast_saves_casts_of_the_frozen_bf16_weights():
    """Without checkpointing every LoRA base linear's fp16 cast is saved for backward; fp16
    weights need no cast."""
    shape = spec().resolved_model.shape
    plain = analyse(spec(stage="ppo", gradient_checkpointing=False))
    fp16 = analyse(spec(stage="ppo", gradient_checkpointing=False, precision="fp16"))
    casts = 2 * (shape.num_layers * shape.layer_linear_params + shape.lm_head_params)
    assert plain.activations - fp16.activations == casts


def test_stage_answers_differ_and_name_their_terms():
    """Each example YAML gets its own answer, whose breakdown and notes name the stage's terms."""
    answers = {}
    for name in ("sft", "dpo", "orpo", "kto", "reward", "ppo"):
        estimate = AnalyticalEstimator().estimate(
            read_llamafactory_yaml(EXAMPLES / f"llama3_lora_{name}.yaml").spec)
        answers[name] = estimate
    assert len({estimate.peak_vram_bytes for estimate in answers.values()}) == 6
    assert answers["dpo"].breakdown["reference_logits"] > 0
    assert answers["kto"].breakdown["reference_logits"] > 0
    assert answers["ppo"].breakdown["reward_model"] > 0
    for name, prefix in (("dpo", "dpo:"), ("orpo", "dpo orpo:"), ("kto", "kto:"),
                         ("reward", "rm:"), ("ppo", "ppo:")):
        assert any(note.startswith(prefix) for note in answers[name].notes), name
    assert any("trl 0.8.6-0.9.6" in note for note in answers["ppo"].notes)
    assert any("peak at reference forward" in note for note in answers["dpo"].notes)


def test_refused_recipe_cases_are_still_estimated_with_a_note():
    estimate = AnalyticalEstimator().estimate(spec(stage="ppo", method="qlora", quant_bits=4))
    assert any("may not start" in note for note in estimate.notes)


def test_stage_estimates_do_not_import_torch():
    code = (
        "import sys\n"
        "from vram_ml.model.formulas import AnalyticalEstimator\n"
        "from vram_ml.spec import build_spec\n"
        f"for fields in ({{'stage': 'dpo', 'method': 'full'}}, {{'stage': 'ppo', 'precision': "
        f"'bf16', 'reward_model_type': 'full'}}, {{'stage': 'kto'}}, {{'stage': 'rm'}}):\n"
        f"    AnalyticalEstimator().estimate(build_spec(model={LLAMA3!r}, **fields))\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
