"""Each training stage's step runs in the recipe on the CPU, fake == real, and the analytical
estimator agrees with it within 5% on a tiny model (logits-dominated: vocab 1000, hidden 64, so
the stage's logits terms are what is compared)."""

from __future__ import annotations

import pytest

from vram_ml.model.formulas.analytical import analyse

from ..tiny_models import tiny_spec

SLOW = pytest.mark.slow  # the default tier keeps one case per stage (seconds each)
STAGES = [
    pytest.param(dict(stage="pt"), id="pt", marks=SLOW),
    pytest.param(dict(stage="dpo"), id="dpo-lora"),
    pytest.param(dict(stage="dpo", method="full"), id="dpo-full-reference-copy"),
    pytest.param(dict(stage="dpo", pref_loss="orpo"), id="orpo"),
    pytest.param(dict(stage="dpo", pref_loss="simpo", method="qlora", quant_bits=4), id="simpo",
                 marks=SLOW),
    pytest.param(dict(stage="kto"), id="kto"),
    pytest.param(dict(stage="kto", method="full", gradient_checkpointing=True), id="kto-full",
                 marks=SLOW),
    pytest.param(dict(stage="rm"), id="rm"),
    pytest.param(dict(stage="rm", method="full"), id="rm-full", marks=SLOW),
    pytest.param(dict(stage="ppo", seq_len=60, max_new_tokens=4), id="ppo-lora"),
    pytest.param(dict(stage="ppo", seq_len=60, max_new_tokens=4, method="full",
                      reward_model_type="full"), id="ppo-full-reward-model", marks=SLOW),
]


def stage_spec(**fields):
    return tiny_spec(**{"seq_len": 256, "gradient_checkpointing": False, **fields})


@pytest.mark.parametrize("fields", STAGES)
def test_analytical_agrees_with_the_simulated_stage_step(fields):
    from vram_ml.model.simulate.estimator import simulate

    spec = stage_spec(**fields)
    simulated = simulate(spec).peak_tensor_bytes
    assert analyse(spec).peak_tensor_bytes == pytest.approx(simulated, rel=0.05)


@pytest.mark.parametrize("fields", [
    pytest.param(dict(stage="dpo", method="full"), id="dpo-full"),
    pytest.param(dict(stage="kto", method="qlora", quant_bits=4), id="kto-qlora", marks=SLOW),
    pytest.param(dict(stage="rm"), id="rm", marks=SLOW),
    pytest.param(dict(stage="ppo", max_new_tokens=2, gradient_accumulation=2), id="ppo-ga2"),
])
def test_each_stage_runs_for_real_on_the_cpu_as_simulated(fields):
    """The recipe's stage step on real CPU tensors counts what the fake one counts, to the byte."""
    from vram_ml.model.simulate.step import run_on_cpu, simulate_step

    spec = stage_spec(**{"seq_len": 32, **fields})
    real, fake = run_on_cpu(spec).peak, simulate_step(spec).peak
    assert real.peak_tensor_bytes == fake.peak_tensor_bytes
    assert real.breakdown == fake.breakdown


def test_simulated_lora_dpo_is_sft_at_twice_the_sequences_plus_the_log_prob_terms():
    from vram_ml.model.simulate.estimator import simulate

    dpo, sft = simulate(stage_spec(stage="dpo")), simulate(stage_spec(batch_size=4))
    logits = 4 * 256 * 1000
    assert dpo.peak_tensor_bytes - sft.peak_tensor_bytes == pytest.approx(4 * logits, rel=0.1)
    breakdown = dpo.run.peak.breakdown
    assert breakdown["reference_logits"] == pytest.approx(8 * logits, rel=0.01)  # ref's fp32 + ls


def test_simulated_full_dpo_holds_a_frozen_reference_copy():
    from vram_ml.model.simulate.step import simulate_step

    spec = stage_spec(stage="dpo", method="full")
    shape = spec.resolved_model.shape
    inv_freq = 2 * (shape.head_dim // 2) * 4  # the copy's rotary buffers (fp32)
    breakdown = simulate_step(spec).peak.breakdown
    assert breakdown["reference_model"] == 2 * shape.total_params + inv_freq
    assert analyse(spec).breakdown["reference_model"] == 2 * shape.total_params


def test_recipe_refusals_are_one_line():
    from vram_ml.model.simulate.estimator import simulate

    for fields in (dict(method="freeze", reward_model_type="api"),
                   dict(method="qlora", quant_bits=4)):
        with pytest.raises(ValueError) as error:
            simulate(stage_spec(stage="ppo", seq_len=32, max_new_tokens=4, **fields))
        assert "fails in the recipe" in str(error.value) and "\n" not in str(error.value)
