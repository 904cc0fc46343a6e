"""The LLaMA-Factory YAML reader: mapping, defaults echoed, ignored and unknown keys reported."""

from __future__ import annotations

import pytest

from vram_ml.llamafactory import read_llamafactory_yaml, spec_from_llamafactory
from vram_ml.spec import SpecError, build_spec


def test_qlora_yaml_maps_every_memory_key(assets):
    read = read_llamafactory_yaml(assets / "llamafactory_qwen_qlora.yaml", allow_unknown=True)
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


def test_unknown_keys_are_refused_with_a_did_you_mean(assets):
    """LLaMA-Factory refuses keys it does not know; so does vram-ml, unless told to go on."""
    with pytest.raises(SpecError, match="'my_custom_key'.*--allow-unknown") as error:
        read_llamafactory_yaml(assets / "llamafactory_qwen_qlora.yaml")
    assert "\n" not in str(error.value)
    raw = {"model_name_or_path": "meta-llama/Meta-Llama-3-8B", "lora_rnak": 16,
           "per_device_train_batchsize": 2}
    with pytest.raises(SpecError, match="'lora_rnak' \\(did you mean 'lora_rank'\\?\\)") as error:
        spec_from_llamafactory(raw)
    assert "did you mean 'per_device_train_batch_size'?" in str(error.value)
    allowed = spec_from_llamafactory(raw, allow_unknown=True)
    assert allowed.unknown == ["lora_rnak", "per_device_train_batchsize"]
    assert allowed.spec.lora_rank == 8  # the typo changed nothing: said, not hidden


def test_keys_llamafactory_accepts_are_never_unknown():
    read = spec_from_llamafactory({"model_name_or_path": "meta-llama/Meta-Llama-3-8B",
                                   "logging_first_step": True, "ddp_find_unused_parameters": False})
    assert read.unknown == []
    assert read.unassessed == ["ddp_find_unused_parameters", "logging_first_step"]


def test_a_vlm_yaml_reads_its_image_keys_and_says_the_image_count_is_unknown():
    raw = {"model_name_or_path": "Qwen/Qwen2-VL-2B-Instruct", "image_max_pixels": 262144,
           "image_min_pixels": 1024, "video_max_pixels": 16384, "cutoff_len": 1024}
    read = spec_from_llamafactory(raw)
    assert read.spec.image_resolution == 512 and read.spec.images_per_sample == 1
    assert "unknown" in read.assumed["images_per_sample"]
    assert read.unmodelled == ["video_max_pixels"]  # videos are not modelled, never "ignored"
    given = spec_from_llamafactory(raw, {"images_per_sample": 3})
    assert given.spec.images_per_sample == 3 and "images_per_sample" not in given.assumed
    with pytest.raises(SpecError, match="image_min_pixels: .* exceeds image_max_pixels"):
        spec_from_llamafactory({**raw, "image_min_pixels": 600_000})


@pytest.mark.parametrize("method, fragment", [
    ("hqq", "hqq is not modelled"), ("eetq", "eetq is not modelled"),
    ("gptq", "pre-quantized checkpoint"), ("awq", "pre-quantized checkpoint")])
def test_quantization_methods_other_than_bitsandbytes_are_refused(method, fragment):
    raw = {"model_name_or_path": "meta-llama/Meta-Llama-3-8B", "quantization_bit": 4,
           "quantization_method": method}
    with pytest.raises(SpecError, match=fragment):
        spec_from_llamafactory(raw)
    unquantized = spec_from_llamafactory({**raw, "quantization_bit": None})  # nothing quantized
    assert unquantized.spec.method == "lora"
    bnb = spec_from_llamafactory({**raw, "quantization_method": "bnb"})
    assert bnb.spec.quant_bits == 4


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


def test_additional_target_and_resize_vocab_train_the_embedding_copies():
    raw = {"model_name_or_path": "meta-llama/Meta-Llama-3-8B", "bf16": True,
           "additional_target": "embed_tokens,lm_head"}
    read = spec_from_llamafactory(raw)
    assert read.spec.additional_target == ("embed_tokens", "lm_head")
    assert "additional_target" not in read.unmodelled
    resized = spec_from_llamafactory({**raw, "additional_target": None, "resize_vocab": True})
    assert resized.spec.additional_target == ("embed_tokens", "lm_head")
    assert "resize_vocab" in resized.assumed["additional_target"]
    assert "resize_vocab" not in resized.unassessed
    full = spec_from_llamafactory({**raw, "additional_target": None, "resize_vocab": True,
                                   "finetuning_type": "full"})
    assert full.spec.additional_target == ()
