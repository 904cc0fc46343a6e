"""The LLaMA-Factory YAML reader: mapping, defaults echoed, ignored and unknown keys reported."""

from __future__ import annotations

import pytest

from vram_ml.llamafactory import read_llamafactory_yaml, spec_from_llamafactory
from vram_ml.spec import SpecError, build_spec


def test_qlora_yaml_maps_every_memory_key(assets):
    read = read_llamafactory_yaml(assets / "llamafactory_qwen_qlora.yaml")
    spec = read.spec
    assert (spec.method, spec.quant_bits, spec.quant_type, spec.double_quant) == (
        "qlora",
        4,
        "nf4",
        True,
    )
    assert (spec.lora_rank, spec.lora_dropout, spec.batch_size, spec.seq_len) == (16, 0.05, 2, 1024)
    assert spec.precision == "bf16" and spec.gradient_accumulation == 8
    assert "learning_rate" in read.ignored and "trust_remote_code" in read.ignored
    assert read.unknown == ["my_custom_key"]
    assert "use_dora" not in read.unmodelled  # false: nothing to model
    assert "gradient_checkpointing" in read.assumed and "attention" in read.assumed
    assert "images_per_sample" not in read.assumed  # a text model: no image defaults echoed


def test_yaml_and_flags_give_the_same_spec_id(assets):
    read = read_llamafactory_yaml(assets / "llamafactory_llama_lora_flags.yaml")
    flags = build_spec(
        model="meta-llama/Meta-Llama-3-8B-Instruct",
        lora_rank=8,
        lora_target="q_proj,v_proj",
        batch_size=2,
        seq_len=1024,
        precision="bf16",
        attention="sdpa",
        gradient_checkpointing=False,
    )
    assert read.spec.spec_id == flags.spec_id


def test_overrides_win_over_the_file(assets):
    read = read_llamafactory_yaml(assets / "llamafactory_llama_lora_flags.yaml", {"batch_size": 4})
    assert read.spec.batch_size == 4


@pytest.mark.parametrize(
    "raw,expected",
    [
        ({"flash_attn": "disabled"}, ("attention", "eager")),
        ({"flash_attn": "fa2"}, ("attention", "flash_attention_2")),
        ({"pure_bf16": True}, ("precision", "pure_bf16")),
        ({"fp16": True}, ("precision", "fp16")),
        ({"bf16": False}, ("precision", "no_amp")),
        ({"finetuning_type": "full"}, ("method", "full")),
        ({"quantization_bit": 8}, ("quant_bits", 8)),
        ({"enable_liger_kernel": True}, ("liger_kernel", True)),
        ({"deepspeed": "examples/deepspeed/ds_z3_config.json"}, ("zero_stage", 3)),
        ({"deepspeed": "ds_z2_offload_config.json", "num_gpus": 4}, ("num_gpus", 4)),
        ({"optim": "paged_adamw_8bit"}, ("optimizer", "paged_adamw_8bit")),
    ],
)
def test_single_keys(raw, expected):
    read = spec_from_llamafactory({"model_name_or_path": "meta-llama/Meta-Llama-3-8B", **raw})
    field, value = expected
    assert getattr(read.spec, field) == value


@pytest.mark.parametrize(
    "text,fragment",
    [
        ("model_name_or_path: [unclosed", "not valid YAML"),
        ("- just\n- a list\n", "mapping"),
        ("finetuning_type: lora\n", "model_name_or_path"),
        (
            "model_name_or_path: meta-llama/Meta-Llama-3-8B\nfinetuning_type: oft\n",
            "finetuning_type",
        ),
        ("model_name_or_path: meta-llama/Meta-Llama-3-8B\nbf16: true\nfp16: true\n", "bf16"),
        ("model_name_or_path: meta-llama/Meta-Llama-3-8B\nflash_attn: turbo\n", "flash_attn"),
        (
            "model_name_or_path: meta-llama/Meta-Llama-3-8B\ndeepspeed: my_config.json\n",
            "deepspeed",
        ),
        ("model_name_or_path: meta-llama/Meta-Llama-3-8B\nquantization_bit: 3\n", "quant_bits"),
        (
            "model_name_or_path: meta-llama/Meta-Llama-3-8B\nfinetuning_type: full\n"
            "quantization_bit: 4\n",
            "quantization_bit",
        ),
        (
            "model_name_or_path: meta-llama/Meta-Llama-3-8B\nimage_max_pixels: -5\n",
            "image_max_pixels",
        ),
        ("model_name_or_path: !!python/object/apply:os.system ['echo hi']\n", "not valid YAML"),
    ],
)
def test_bad_yaml_is_one_line(tmp_path, text, fragment):
    path = tmp_path / "train.yaml"
    path.write_text(text)
    with pytest.raises(SpecError) as error:
        read_llamafactory_yaml(path)
    assert fragment in str(error.value) and "\n" not in str(error.value)


def test_missing_file_is_one_line(tmp_path):
    with pytest.raises(SpecError, match="no such file"):
        read_llamafactory_yaml(tmp_path / "absent.yaml")
