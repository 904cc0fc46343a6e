"""Spec validation, spec_id stability, and one-line errors for bad input."""

from __future__ import annotations

import pytest

from vram_ml.spec import SpecError, build_spec

LLAMA = "meta-llama/Meta-Llama-3-8B"


def test_defaults_are_llamafactory_defaults():
    spec = build_spec(model=LLAMA)
    assert (spec.method, spec.lora_rank, spec.batch_size, spec.seq_len) == ("lora", 8, 8, 2048)
    assert spec.gradient_checkpointing and spec.attention == "sdpa"
    assert spec.effective_lora_alpha == 16


def test_spec_id_is_stable_and_ignores_spelling():
    a = build_spec(model=LLAMA, lora_target="v_proj,q_proj", batch_size=2)
    b = build_spec(model=LLAMA.lower(), lora_target=["q_proj", "v_proj"], batch_size=2)
    c = build_spec(
        model="Meta-Llama-3-8B", lora_target="q_proj, v_proj", batch_size=2, lora_alpha=64
    )
    assert a.spec_id == b.spec_id == c.spec_id
    assert len(a.spec_id) == 16


def test_spec_id_changes_with_every_memory_knob():
    base = build_spec(model=LLAMA, precision="bf16")
    variants = [
        dict(batch_size=2),
        dict(seq_len=1024),
        dict(lora_rank=16),
        dict(lora_dropout=0.1),
        dict(lora_target="q_proj"),
        dict(gradient_checkpointing=False),
        dict(attention="eager"),
        dict(optimizer="adamw_8bit"),
        dict(precision="fp32"),
        dict(method="full"),
        dict(method="qlora", quant_bits=4),
        dict(liger_kernel=True),
        dict(num_gpus=2),
        dict(model_overrides={"num_hidden_layers": 4}),
        dict(freeze_vision_tower=False),
        dict(freeze_multi_modal_projector=False),
        dict(additional_target="embed_tokens"),
        dict(additional_target="lm_head,embed_tokens"),
    ]
    ids = {base.spec_id}
    for change in variants:
        ids.add(build_spec(**{"model": LLAMA, "precision": "bf16", **change}).spec_id)
    assert len(ids) == len(variants) + 1


def test_all_targets_expand_to_every_layer_linear():
    spec = build_spec(model=LLAMA)
    assert spec.target_modules == (
        "q_proj",
        "k_proj",
        "v_proj",
        "o_proj",
        "gate_proj",
        "up_proj",
        "down_proj",
    )


BAD_INPUTS = [
    (dict(lora_rank=0), "lora_rank"),
    (dict(lora_rank=-3), "lora_rank"),
    (dict(batch_size=-1), "batch_size"),
    (dict(batch_size=0), "batch_size"),
    (dict(batch_size="two"), "batch_size"),
    (dict(method="qlora", quant_bits=3), "quant_bits"),
    (dict(method="qlora"), "quant_bits"),
    (dict(method="lora", quant_bits=4), "quant_bits"),
    (dict(optimizer="lion"), "optimizer"),
    (dict(seq_len=10_000_000), "seq_len"),
    (dict(seq_len=0), "seq_len"),
    (dict(method="dpo"), "method"),
    (dict(precision="int8"), "precision"),
    (dict(attention="xformers"), "attention"),
    (dict(lora_target="not_a_module"), "lora_target"),
    (dict(lora_target=""), "lora_target"),
    (dict(lora_dropout=1.0), "lora_dropout"),
    (dict(lora_dropout=-0.1), "lora_dropout"),
    (dict(zero_stage=3, distributed="fsdp", num_gpus=2), "zero_stage"),
    (dict(distributed="none", num_gpus=2), "distributed"),
    (dict(distributed="ddp"), "distributed"),
    (dict(distributed="fsdp", num_gpus=2, offload="optimizer"), "offload"),
    (dict(zero_stage=2, num_gpus=2, offload="params"), "offload"),
    (dict(distributed="deepspeed", zero_stage=0, offload="optimizer"), "offload"),
    (dict(num_gpus=2, fsdp_sharding="SHARD_GRAD_OP"), "fsdp_sharding"),
    (dict(num_gpus=6, num_nodes=4), "num_nodes"),
    (dict(distributed="fsdp", num_gpus=2, zero_reduce_bucket_size=10), "zero_reduce_bucket_size"),
    (dict(method="qlora", quant_bits=8, zero_stage=3, num_gpus=2), "quant_bits"),
    (dict(method="qlora", quant_bits=4, distributed="fsdp", fsdp_version=2, num_gpus=2,
          accelerate_version="1.11.0"), "fsdp_version"),
    (dict(distributed="fsdp", fsdp_version=2, num_gpus=2, accelerate_version="1.5.0"),
     "fsdp_version"),
    (dict(zero_stage=5, num_gpus=8), "zero_stage"),
    (dict(num_gpus=0), "num_gpus"),
    (dict(gradient_accumulation=0), "gradient_accumulation"),
    (dict(images_per_sample=2), "images_per_sample"),
    (dict(quant_type="int3", method="qlora", quant_bits=4), "quant_type"),
    (dict(method="freeze", freeze_trainable_layers=999), "freeze_trainable_layers"),
    (dict(model_overrides={"num_hidden_layers": -2}), "model_overrides"),
    (dict(model_overrides={"no_such_key": 2}), "model_overrides"),
    (dict(unknown_field=1), "unknown_field"),
    (dict(precision="pure_bf16", zero_stage=3, num_gpus=8), "precision"),
    (dict(additional_target="wte"), "additional_target"),  # Llama's embeddings: embed_tokens
    (dict(additional_target="lm_head", method="full"), "additional_target"),
]


@pytest.mark.parametrize("change,field", BAD_INPUTS, ids=[f for _, f in BAD_INPUTS])
def test_bad_input_gives_one_line_naming_the_field(change, field):
    with pytest.raises(SpecError) as error:
        build_spec(**{"model": LLAMA, **change})
    message = str(error.value)
    assert "\n" not in message
    assert message.startswith(field) or field in message.split(":")[0], message


@pytest.mark.parametrize("model", ["", "no-such-model", "someone/not-a-model", "../../etc/passwd"])
def test_unknown_model_is_one_line(model):
    with pytest.raises(SpecError) as error:
        build_spec(model=model)
    assert "\n" not in str(error.value)
    assert "model" in str(error.value)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch.jit, imported by transformers
def test_every_transformers_optimizer_is_modelled_aliased_or_refused_by_name():
    OptimizerNames = pytest.importorskip("transformers.training_args").OptimizerNames

    from vram_ml.model.formulas.model_states import OPTIMIZER_STATES
    from vram_ml.optimizers import ALIASES, OPTIMIZERS, UNMODELLED

    assert set(OPTIMIZERS) == set(OPTIMIZER_STATES)  # each modelled one has its state sizes
    for name in (member.value for member in OptimizerNames):
        assert name in OPTIMIZERS or name in ALIASES or name in UNMODELLED, name
    assert build_spec(model=LLAMA, optimizer="adamw_bnb_8bit").optimizer == "adamw_8bit"
    with pytest.raises(SpecError, match="'galore_adamw' is a transformers optimizer vram-ml does "
                                        "not model .GaLore") as error:
        build_spec(model=LLAMA, optimizer="galore_adamw")
    assert "\n" not in str(error.value)


def test_additional_target_names_the_models_own_modules_and_keeps_old_ids():
    """modules_to_save names are the model's (Qwen's wte, GPT-NeoX 4.x's embed_out); a spec
    without them hashes as before the field existed."""
    qwen = build_spec(model="Qwen/Qwen-7B", additional_target="wte,lm_head", precision="bf16")
    assert qwen.additional_target == ("lm_head", "wte")
    neox = "EleutherAI/pythia-1b"
    assert build_spec(model=neox, additional_target="embed_out",
                      transformers_version="4.57.1").additional_target == ("embed_out",)
    with pytest.raises(SpecError, match="additional_target: embed_out is not"):
        build_spec(model=neox, additional_target="embed_out")  # transformers 5: lm_head
    plain = build_spec(model=LLAMA)
    assert "additional_target" not in plain.canonical()
    assert build_spec(model=LLAMA, additional_target="").spec_id == plain.spec_id
