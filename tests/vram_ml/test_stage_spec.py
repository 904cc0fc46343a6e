"""Training stages in the Spec and in the YAML reader: fields, their rules, spec ids, YAML keys."""

from __future__ import annotations

from importlib import resources

import pytest

from vram_ml.llamafactory import read_llamafactory_yaml, spec_from_llamafactory
from vram_ml.spec import SpecError, build_spec

LLAMA3 = "meta-llama/Meta-Llama-3-8B"
EXAMPLES = resources.files("vram_ml") / "examples"


def test_an_sft_spec_keeps_the_id_it_had_before_stages():
    """spec_ids of stored samples must not move: an sft spec hashes without the stage fields
    (the id below is what the code before stages gave this spec)."""
    spec = build_spec(model=LLAMA3)
    assert spec.stage == "sft" and "stage" not in spec.canonical()
    assert spec.spec_id == "3a3ad1d6ee6b255e"


def test_stages_get_their_own_ids_and_memory_equal_losses_share_one():
    ids = {stage: build_spec(model=LLAMA3, stage=stage).spec_id
           for stage in ("sft", "pt", "dpo", "kto", "rm")}
    assert len(set(ids.values())) == 5
    sigmoid = build_spec(model=LLAMA3, stage="dpo")
    assert build_spec(model=LLAMA3, stage="dpo", pref_loss="hinge").spec_id == sigmoid.spec_id
    assert build_spec(model=LLAMA3, stage="dpo", pref_loss="orpo").spec_id != sigmoid.spec_id


@pytest.mark.parametrize("fields,field", [
    ({"stage": "kto", "pref_loss": "orpo"}, "pref_loss"),
    ({"stage": "dpo", "pref_loss": "simpo", "ref_model": LLAMA3}, "ref_model"),
    ({"stage": "dpo", "ref_model_quantization_bit": 4}, "ref_model_quantization_bit"),
    ({"stage": "sft", "max_new_tokens": 64}, "max_new_tokens"),
    ({"stage": "ppo", "method": "full", "precision": "bf16"}, "reward_model_type"),
    ({"stage": "ppo", "precision": "fp32"}, "precision"),
    ({"stage": "ppo", "precision": "bf16", "max_new_tokens": 8000}, "max_new_tokens"),
    ({"stage": "ppo", "precision": "bf16", "reward_model": LLAMA3}, "reward_model"),
    ({"stage": "dpo", "framework": "trl"}, "stage"),
    ({"stage": "dpo", "ref_model": "meta-llama/Llama-2-7b-hf"}, "ref_model"),  # other vocab
    ({"stage": "grpo"}, "stage"),
])
def test_stage_rules_fail_in_one_line_naming_the_field(fields, field):
    with pytest.raises(SpecError) as error:
        build_spec(model=LLAMA3, **fields)
    message = str(error.value)
    assert message.startswith(f"{field}:") and "\n" not in message


def test_companion_models_resolve_and_keep_the_policy_overrides():
    from vram_ml.stages import companion_model

    scaled = {"num_hidden_layers": 2}
    spec = build_spec(model=LLAMA3, model_overrides=scaled, stage="dpo", ref_model=LLAMA3,
                      ref_model_quantization_bit=8)
    assert companion_model(spec, "ref_model").shape.num_layers == 2  # the same, scaled, model
    assert spec.canonical()["ref_model"] == LLAMA3


@pytest.mark.parametrize("name,stage,pref_loss", [
    ("dpo", "dpo", "sigmoid"), ("orpo", "dpo", "orpo"), ("kto", "kto", "sigmoid"),
    ("reward", "rm", "sigmoid"), ("pretrain", "pt", "sigmoid"), ("ppo", "ppo", "sigmoid"),
])
def test_example_yamls_read_their_stage(name, stage, pref_loss):
    read = read_llamafactory_yaml(EXAMPLES / f"llama3_lora_{name}.yaml")
    assert (read.spec.stage, read.spec.pref_loss) == (stage, pref_loss)
    assert read.unknown == [] and "stage" not in read.ignored
    if stage in ("dpo", "kto"):
        assert "pref_beta" in read.ignored  # a loss weight: no memory effect, said so


def test_ppo_yaml_maps_generation_and_reward_keys():
    read = read_llamafactory_yaml(EXAMPLES / "llama3_lora_ppo.yaml")
    spec = read.spec
    assert (spec.max_new_tokens, spec.reward_model_type, spec.reward_model) == (512, "lora", None)
    assert "sized like the policy" in read.assumed["reward_model"]
    assert {"top_k", "top_p"} <= set(read.ignored)


def test_stage_keys_that_do_not_apply_are_ignored_not_mapped():
    read = spec_from_llamafactory({"model_name_or_path": LLAMA3, "stage": "kto",
                                   "pref_loss": "orpo", "max_new_tokens": 64,
                                   "ppo_epochs": 4})
    assert read.spec.pref_loss == "sigmoid" and read.spec.max_new_tokens == 1024
    assert {"pref_loss", "max_new_tokens", "ppo_epochs"} <= set(read.ignored)


def test_an_unreadable_ref_model_path_takes_the_policy_architecture():
    read = spec_from_llamafactory({"model_name_or_path": LLAMA3, "stage": "dpo",
                                   "finetuning_type": "full", "bf16": True,
                                   "ref_model": "saves/llama3-8b/full/sft",
                                   "ref_model_quantization_bit": 4})
    assert read.spec.ref_model == LLAMA3 and read.spec.ref_model_quantization_bit == 4
    assert "not readable here" in read.assumed["ref_model"]


def test_pt_with_packing_written_packs_one_token_less():
    base = {"model_name_or_path": LLAMA3, "stage": "pt", "cutoff_len": 1024}
    assert spec_from_llamafactory(base).spec.seq_len == 1024
    assert spec_from_llamafactory({**base, "packing": True}).spec.seq_len == 1023
    assert spec_from_llamafactory({**base, "stage": "sft", "packing": True}).spec.seq_len == 1024


def test_stage_flags_override_the_yaml_and_bad_ones_are_one_line():
    read = read_llamafactory_yaml(EXAMPLES / "llama3_lora_dpo.yaml", {"stage": "rm"})
    assert read.spec.stage == "rm" and "pref_loss" in read.ignored
    with pytest.raises(SpecError, match="^stage: 'grpo' is not one of"):
        spec_from_llamafactory({"model_name_or_path": LLAMA3, "stage": "grpo"})


def test_stage_defaults_are_echoed_only_where_they_apply():
    sft = spec_from_llamafactory({"model_name_or_path": LLAMA3})
    assert "pref_loss" not in sft.assumed and "max_new_tokens" not in sft.assumed
    ppo = spec_from_llamafactory({"model_name_or_path": LLAMA3, "stage": "ppo", "bf16": True})
    assert "max_new_tokens" in ppo.assumed and "ref_model" in ppo.assumed
