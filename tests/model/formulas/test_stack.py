"""The stack's rules in the analytical estimator (model/formulas/stack.py): the framework and the
library versions move the terms their code moves, and the answer says which."""

from __future__ import annotations

import pytest

from vram_ml.model.formulas import AnalyticalEstimator
from vram_ml.model.formulas.analytical import analyse
from vram_ml.model.formulas.model_states import frozen_kind_params
from vram_ml.model.formulas.stack import StackRules
from vram_ml.spec import build_spec

from ..tiny_models import TINY_LLAMA

LLAMA3 = "meta-llama/Meta-Llama-3-8B"
MIXTRAL = "mistralai/Mixtral-8x7B-v0.1"
# fms-acceleration's stack (refs/requirements.txt at 24bdadb): transformers 4.48.1, peft 0.13.2,
# trl 0.13.0, bitsandbytes 0.43.3.
FMS_STACK = dict(framework="trl", transformers_version="4.48.1", peft_version="0.13.2",
                 trl_version="0.13.0", bitsandbytes_version="0.43.3")
QLORA = dict(model=LLAMA3, method="qlora", quant_bits=4, batch_size=4, seq_len=1024,
             precision="bf16", lora_target="all")


def qlora(**fields):
    return build_spec(**{**QLORA, **fields})


def breakdown(spec):
    return AnalyticalEstimator().estimate(spec).breakdown


def test_qlora_under_trl_and_llamafactory_differ_in_activations():
    """TRL's fp32 norms turn the residual stream fp32: the checkpointed layer inputs double;
    the 4-bit weights stay (TRL casts the embeddings back to bf16)."""
    factory, trl = qlora(), qlora(framework="trl")
    a, b = breakdown(factory), breakdown(trl)
    assert b["activations"] > 1.5 * a["activations"]
    norms = frozen_kind_params(trl.shape)["norm"]
    assert b["weights"] - a["weights"] == norms * 2  # bf16 -> fp32 norms, nothing else
    assert AnalyticalEstimator().estimate(trl).peak_vram_bytes > AnalyticalEstimator().estimate(
        factory).peak_vram_bytes
    notes = " ".join(AnalyticalEstimator().estimate(trl).notes)
    assert "prepare_model_for_kbit_training" in notes and "residual stream fp32" in notes
    assert "prepare_model_for_kbit_training" not in " ".join(
        AnalyticalEstimator().estimate(factory).notes)


def test_trl_8bit_keeps_embeddings_fp32_until_trl_025():
    """peft's prepare casts the embeddings and head to fp32; TRL recasts only 4-bit models."""
    old, new = qlora(framework="trl", quant_bits=8), qlora(framework="trl", quant_bits=8,
                                                           trl_version="0.25.1")
    shape = old.shape
    embedding = shape.embedding_params + shape.lm_head_params
    assert breakdown(old)["weights"] - breakdown(new)["weights"] == embedding * 2
    assert not StackRules.of(new).peft_kbit_prepare and StackRules.of(old).peft_kbit_prepare


def test_plain_trainer_keeps_4bit_embeddings_fp32_and_computes_no_trl_metrics():
    """hf_trainer (Qwen's finetune.py): peft's prepare at any trl_version, no TRL recast to
    bf16, no token accuracy on kept fp32 logits: more weights, fewer logits than TRL 0.24."""
    plain, trl = qlora(framework="hf_trainer"), qlora(framework="trl")
    shape = plain.shape
    embedding = shape.embedding_params + shape.lm_head_params
    assert breakdown(plain)["weights"] - breakdown(trl)["weights"] == embedding * 2
    assert StackRules.of(qlora(framework="hf_trainer", trl_version="0.26.0")).peft_kbit_prepare
    assert StackRules.of(trl).trl_accuracy and not StackRules.of(plain).trl_accuracy


def test_transformers_4_32_and_peft_0_7_follow_the_oldest_rules():
    """Qwen's pins (transformers 4.32.0, peft < 0.8): the model upcasts the logits itself and
    shifts a contiguous copy, checkpointing is reentrant, adapters stay in the base dtype."""
    old = build_spec(model=LLAMA3, framework="hf_trainer", transformers_version="4.32.0",
                     peft_version="0.7.1", method="lora", batch_size=1, seq_len=512)
    rules = StackRules.of(old)
    assert rules.shifted_logits_copy and rules.reentrant_checkpoint
    assert not rules.fp32_adapters
    assert old.optimizer == "adamw_torch"
    with pytest.raises(ValueError, match="supported: transformers 4.32.0"):
        build_spec(model=LLAMA3, transformers_version="4.31.0", framework="hf_trainer")


def test_mixtral_qlora_moves_by_the_expert_weights_between_transformers_4_and_5():
    """4.x: each expert an nn.Linear, quantized to 4 bits; 5.x: fused 3-D parameters that
    bitsandbytes leaves in bf16."""
    fields = dict(model=MIXTRAL, method="qlora", quant_bits=4, batch_size=1, seq_len=512,
                  precision="bf16")
    v4 = build_spec(**fields, **FMS_STACK)
    v5 = build_spec(**fields, framework="trl", trl_version="0.25.1")
    experts = v5.shape.num_layers * sum(lin.params for lin in v5.shape.layer_linears if lin.fused)
    routers = v5.shape.num_layers * v5.shape.num_experts * v5.shape.hidden_size
    unquantized = experts + routers
    diff = analyse(v5).states.weights - analyse(v4).states.weights
    assert diff == pytest.approx(unquantized * (2 - 0.5), abs=64)
    assert AnalyticalEstimator().estimate(v5).peak_vram_bytes > 2.5 * AnalyticalEstimator(
        ).estimate(v4).peak_vram_bytes
    fused_note = [n for n in AnalyticalEstimator().estimate(v5).notes if "fused" in n]
    assert fused_note and "bf16" in fused_note[0] and "does not reach" in fused_note[0]
    assert any("one nn.Linear per expert" in n for n in AnalyticalEstimator().estimate(v4).notes)


def test_lora_all_reaches_every_expert_on_transformers_4_only():
    fields = dict(model=MIXTRAL, method="lora", lora_target="all", seq_len=512, batch_size=1)
    v4 = build_spec(**fields, framework="trl", transformers_version="4.57.6")
    v5 = build_spec(**fields)
    assert set(v4.target_modules) >= {"w1", "w2", "w3", "gate"}
    assert v5.target_modules == ("q_proj", "k_proj", "v_proj", "o_proj")
    assert breakdown(v4)["adapters"] > 10 * breakdown(v5)["adapters"]


def test_peft_kbit_prepare_casts_fused_experts_to_fp32():
    fields = dict(model=MIXTRAL, method="qlora", quant_bits=4, seq_len=512, batch_size=1)
    trl24, trl25 = build_spec(**fields, framework="trl"), build_spec(
        **fields, framework="trl", trl_version="0.25.1")
    experts = trl24.shape.num_layers * sum(
        lin.params for lin in trl24.shape.layer_linears if lin.fused)
    assert analyse(trl24).states.weights - analyse(trl25).states.weights >= experts * 2


def test_logits_before_transformers_4_49_keep_a_shifted_copy():
    old = build_spec(**{**QLORA, **FMS_STACK})
    new = build_spec(**{**QLORA, **FMS_STACK, "transformers_version": "4.52.4"})
    logits = 4 * 1024 * old.shape.vocab_size
    grow = (analyse(old).moments["forward_end"]["logits"]
            - analyse(new).moments["forward_end"]["logits"])
    assert grow == 4 * logits
    assert any("shifted fp32 copy" in n for n in AnalyticalEstimator().estimate(old).notes)


def test_default_optimizer_follows_the_transformers_version():
    """adamw_torch (foreach: a full copy of the trainable states at the step) before 4.54."""
    old = build_spec(model=LLAMA3, method="full", **FMS_STACK)
    new = build_spec(model=LLAMA3, method="full", framework="trl")
    assert (old.optimizer, new.optimizer) == ("adamw_torch", "adamw_torch_fused")
    assert analyse(old).states.optimizer_temporaries == old.shape.total_params * 2  # bf16
    assert analyse(new).states.optimizer_temporaries == 0


def test_trl_full_fine_tuning_has_no_fp32_master_weights():
    factory = analyse(build_spec(model=LLAMA3, method="full", batch_size=1, seq_len=256))
    trl = analyse(build_spec(model=LLAMA3, method="full", batch_size=1, seq_len=256,
                             framework="trl"))
    params = trl.states.trainable_params
    assert factory.states.weights - trl.states.weights == 2 * params
    assert factory.states.optimizer == 2 * trl.states.optimizer


def test_async_loading_of_transformers_5_0_to_5_3_is_a_peak_of_its_own():
    """The load holds the quantized layers' checkpoint in bf16 (issue 43032; PR 44576 in 5.4)."""
    small = dict(batch_size=1, seq_len=128)
    early = analyse(qlora(framework="trl", transformers_version="5.3.0", **small))
    fixed = analyse(qlora(framework="trl", transformers_version="5.4.0", **small))
    assert early.peak_moment == "load"
    assert early.peak_allocated_bytes > fixed.peak_allocated_bytes
    assert fixed.moments["load"]["temporaries"] < early.moments["load"]["temporaries"]
    assert any("43032" in n for n in early.notes)
    assert analyse(qlora(transformers_version="5.3.0", **small)).peak_moment == "load"


def test_llamafactory_pads_to_a_multiple_of_8():
    factory = analyse(qlora(seq_len=1021))
    trl = analyse(qlora(seq_len=1021, framework="trl"))
    vocab = 128256
    assert factory.logits == 12 * 4 * 1024 * vocab
    assert trl.logits == 12 * 4 * 1021 * vocab
    assert any("multiple of 8" in n for n in factory.notes)


def test_llamafactory_checkpoints_only_trainable_layers_under_freeze():
    spec = build_spec(model=LLAMA3, method="freeze", freeze_trainable_layers=2, batch_size=2,
                      seq_len=1024, precision="bf16")
    kept_two = analyse(spec).activations
    four = build_spec(**{**spec.model_dump(), "freeze_trainable_layers": 4})
    kept_four = analyse(four).activations
    per_layer = 2 * 1024 * 4096 * 2  # one bf16 layer input
    assert kept_four - kept_two == pytest.approx(2 * per_layer, rel=0.01)
    assert kept_two < 32 * per_layer / 4


# --- the analytical rules against the recipe (simulate: fake-tensor execution) ------------------

TINY = TINY_LLAMA
# A tiny Llama where weights and activations, not the logits, carry the peak (vocab 200).
ACTIVATION_HEAVY = {"vocab_size": 200, "hidden_size": 128, "intermediate_size": 384,
                    "num_hidden_layers": 4, "num_attention_heads": 4, "num_key_value_heads": 2}


@pytest.mark.parametrize("overrides,fields", [
    pytest.param({}, dict(framework="llamafactory", method="qlora", quant_bits=4), id="lf-qlora"),
    pytest.param({}, dict(framework="trl", method="qlora", quant_bits=4), id="trl-qlora"),
    pytest.param({}, dict(framework="trl", method="qlora", quant_bits=8), id="trl-qlora-8bit"),
    pytest.param({}, dict(framework="trl", method="full"), id="trl-full"),
    pytest.param(ACTIVATION_HEAVY, dict(framework="trl", method="qlora", quant_bits=4,
                                        gradient_checkpointing=False), id="trl-qlora-fp32-chain"),
    pytest.param(ACTIVATION_HEAVY, dict(framework="trl", method="qlora", quant_bits=8,
                                        gradient_checkpointing=False), id="trl-qlora-8bit-chain"),
    pytest.param(ACTIVATION_HEAVY, dict(framework="llamafactory", method="qlora", quant_bits=4,
                                        gradient_checkpointing=False), id="lf-qlora-nockpt"),
    pytest.param(ACTIVATION_HEAVY, dict(framework="trl", method="full",
                                        gradient_checkpointing=False), id="trl-full-nockpt"),
    pytest.param({}, dict(framework="hf_trainer", method="qlora", quant_bits=4), id="hf-qlora"),
    pytest.param(ACTIVATION_HEAVY, dict(framework="hf_trainer", method="lora",
                                        transformers_version="4.32.0", peft_version="0.7.1",
                                        gradient_checkpointing=False), id="hf-4.32-lora"),
])
def test_analytical_follows_the_recipe_under_both_frameworks(overrides, fields):
    """The closed form and the fake-tensor step of the same recipe, per framework."""
    simulate = pytest.importorskip("vram_ml.model.simulate.estimator").simulate
    spec = build_spec(model=TINY, model_overrides=overrides, batch_size=2,
                      seq_len=128 if overrides else 256, precision="bf16", **fields)
    simulated = simulate(spec).peak_tensor_bytes
    assert analyse(spec).peak_tensor_bytes == pytest.approx(simulated, rel=0.05)
