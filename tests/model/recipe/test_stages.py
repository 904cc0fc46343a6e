"""The recipe's training stages: what each builds beside the policy, its batch, its step."""

from __future__ import annotations

import pytest
import torch

from vram_ml.model import recipe
from vram_ml.model.recipe.stages.common import companions

from ..tiny_models import tiny_spec


def built(**fields):
    spec = tiny_spec(**{"seq_len": 30, **fields})
    return spec, recipe.build_model(spec, "cpu")


def test_full_dpo_loads_a_frozen_reference_beside_the_policy():
    spec, model = built(stage="dpo", method="full")
    reference = companions(model)["reference"]
    assert not reference.training and not any(p.requires_grad for p in reference.parameters())
    assert {p.dtype for p in reference.parameters()} == {torch.bfloat16}  # the checkpoint dtype
    assert {p.dtype for p in model.parameters() if p.requires_grad} == {torch.float32}
    policy = {id(p) for p in model.parameters()}
    assert not policy & {id(p) for p in reference.parameters()}
    optimizer = recipe.make_optimizer(spec, model)
    optimized = {id(p) for group in optimizer.param_groups for p in group["params"]}
    assert not optimized & {id(p) for p in reference.parameters()}
    assert all(m.p == 0 for m in model.modules() if isinstance(m, torch.nn.Dropout))


def test_lora_dpo_and_orpo_load_no_reference():
    for fields in (dict(stage="dpo"), dict(stage="dpo", pref_loss="orpo", method="full")):
        _, model = built(**fields)
        assert companions(model) == {}


def test_pairwise_kto_and_ppo_batches():
    spec, model = built(stage="dpo", batch_size=3)
    assert recipe.make_batch(spec, model)["input_ids"].shape == (6, 32)  # 2B, padded to 8
    spec, model = built(stage="kto", batch_size=2)
    batch = recipe.make_batch(spec, model)
    assert batch["kl_input_ids"].shape == batch["input_ids"].shape == (2, 32)
    assert batch["kto_chosen_index"].tolist() == [0] and batch["kto_rejected_index"].tolist() == [1]
    for stage, extra in (("ppo", {"max_new_tokens": 4}), ("pt", {})):
        spec, model = built(stage=stage, **extra)
        assert recipe.make_batch(spec, model)["input_ids"].shape == (2, 30)  # no padding to 8


def test_reward_modelling_trains_a_value_head():
    spec, model = built(stage="rm")
    assert model.v_head.summary.weight.requires_grad
    assert model.v_head.summary.weight.dtype == torch.float32
    optimizer = recipe.make_optimizer(spec, model)
    batch = recipe.make_batch(spec, model)
    loss = recipe.train_step(spec, model, batch, optimizer)
    assert torch.isfinite(loss)


def test_ppo_lora_has_a_frozen_fp32_reward_adapter_and_generates_max_new_tokens():
    from vram_ml.model.recipe.stages.ppo import rollout

    spec, model = built(stage="ppo", max_new_tokens=3)
    reward = [p for name, p in model.named_parameters() if ".reward." in name]
    default = [p for name, p in model.named_parameters() if ".default." in name]
    assert reward and not any(p.requires_grad for p in reward)
    assert {p.dtype for p in reward} == {torch.float32}
    assert default and all(p.requires_grad for p in default)
    experience = rollout(model, recipe.make_batch(spec, model), spec)
    assert experience["input_ids"].shape == (2, 33) and model.training
    assert all(p.requires_grad for p in default)  # the reward adapter was swapped back out
    optimizer = recipe.make_optimizer(spec, model)
    assert torch.isfinite(recipe.train_step(spec, model, recipe.make_batch(spec, model),
                                            optimizer))


@pytest.mark.parametrize("stage", ["dpo", "kto"])
def test_preference_steps_run_on_the_cpu(stage):
    spec, model = built(stage=stage, method="full")
    optimizer = recipe.make_optimizer(spec, model)
    loss = recipe.train_step(spec, model, recipe.make_batch(spec, model), optimizer)
    assert torch.isfinite(loss)
