"""DeepSpeed JSONs and accelerate configs as users write them: LLaMA-Factory's examples by name,
a custom JSON with "auto" values, --zero-stage winning, and one-line errors for the rest."""

from __future__ import annotations

import json

import pytest
import yaml
from typer.testing import CliRunner

from vram_ml.cli import app
from vram_ml.deepspeed_config import llamafactory_launch_configs, read_deepspeed_config
from vram_ml.llamafactory import read_llamafactory_yaml, spec_from_llamafactory
from vram_ml.spec import SpecError, build_spec
from vram_ml.spec_input import spec_input_from_fields

LLAMA = "meta-llama/Meta-Llama-3-8B"  # hidden size 4096
runner = CliRunner()

EXAMPLES = {  # LLaMA-Factory v0.9.5 examples/deepspeed/*.json -> (stage, offload, overlap)
    "ds_z0_config.json": (0, "none", False),
    "ds_z2_config.json": (2, "none", False),
    "ds_z2_offload_config.json": (2, "optimizer", False),
    "ds_z3_config.json": (3, "none", False),
    "ds_z3_offload_config.json": (3, "optimizer+params", False),
}


@pytest.mark.parametrize("name", EXAMPLES)
def test_llamafactory_examples_are_known_by_name(name):
    read = spec_from_llamafactory({"model_name_or_path": LLAMA, "bf16": True,
                                   "deepspeed": f"examples/deepspeed/{name}"})
    spec = read.spec
    assert (spec.zero_stage, spec.offload, spec.zero_overlap_comm) == EXAMPLES[name]
    assert spec.distributed == "deepspeed" and spec.num_gpus == 8
    assert "LLaMA-Factory's examples/deepspeed/" + name in read.assumed["deepspeed"]
    assert "pass --num-gpus" in read.assumed["num_gpus"]
    # the example and the Spec's defaults for its stage are one configuration
    same = build_spec(model=LLAMA, precision="bf16", num_gpus=8, distributed="deepspeed",
                      zero_stage=EXAMPLES[name][0], offload=EXAMPLES[name][1])
    assert spec.spec_id == same.spec_id


def test_the_examples_are_llamafactorys_files_verbatim():
    examples = llamafactory_launch_configs()
    assert examples["commit"] == "7af909522a951e3ad9f022ea6f88b6755257eaa5"
    z3 = examples["deepspeed"]["ds_z3_config.json"]["zero_optimization"]
    assert z3["reduce_bucket_size"] == "auto" and z3["stage3_max_reuse_distance"] == 1e9
    assert examples["accelerate"]["fsdp2_config.yaml"]["fsdp_config"]["fsdp_version"] == 2


def test_a_custom_json_is_read_and_auto_resolved_from_the_hidden_size(tmp_path):
    config = tmp_path / "my_ds.json"
    config.write_text(json.dumps({"bf16": {"enabled": "auto"}, "zero_optimization": {
        "stage": 2, "overlap_comm": True, "reduce_bucket_size": "auto"}}))
    train = tmp_path / "train.yaml"
    train.write_text(yaml.safe_dump({"model_name_or_path": LLAMA, "bf16": True,
                                     "deepspeed": "my_ds.json", "num_gpus": 4}))
    read = read_llamafactory_yaml(train)  # found beside the YAML
    spec = read.spec
    assert (spec.zero_stage, spec.zero_overlap_comm, spec.num_gpus) == (2, True, 4)
    assert spec.zero_reduce_bucket_size == 4096**2  # "auto" = H^2, as transformers resolves it
    assert "hidden size 4096" in read.assumed["reduce_bucket_size"]
    overridden = read_llamafactory_yaml(train, {"zero_stage": 3}).spec
    assert overridden.zero_stage == 3
    # under ZeRO-3 "auto" is the Spec's own default for the stage
    assert overridden.zero_reduce_bucket_size is None


def test_absent_keys_take_deepspeeds_defaults():
    read = read_deepspeed_config({"zero_optimization": {"stage": 3}}, 4096)
    assert read.fields["zero_overlap_comm"] is True  # DeepSpeed: on for ZeRO-3
    assert read.fields["zero_reduce_bucket_size"] == 500_000_000
    assert read.fields["zero_prefetch_bucket_size"] == 50_000_000
    assert read.fields["zero_persistence_threshold"] == 100_000


@pytest.mark.parametrize("content,message", [
    ("{not json", "not valid JSON"),
    (json.dumps({"model_name_or_path": "x", "lora_rank": 8}), "not a DeepSpeed config"),
    (json.dumps({"zero_optimization": {"stage": 4}}), "stage must be 0, 1, 2 or 3"),
    (json.dumps({"zero_optimization": {"stage": 2, "offload_optimizer": {"device": "gpu"}}}),
     "device must be cpu, nvme or none"),
    (json.dumps({"zero_optimization": {"stage": 2, "reduce_bucket_size": "big"}}),
     "reduce_bucket_size must be"),
])
def test_a_file_that_is_not_a_deepspeed_config_is_one_line(tmp_path, content, message):
    path = tmp_path / "ds.json"
    path.write_text(content)
    result = runner.invoke(app, ["predict", "--model", LLAMA, "--deepspeed", str(path)])
    assert result.exit_code == 2 and message in result.output
    assert "Traceback" not in result.output


def test_an_unknown_name_and_the_web_reading_no_file(tmp_path):
    with pytest.raises(SpecError, match="not one of LLaMA-Factory's examples"):
        spec_input_from_fields({"model": LLAMA}, launch={"deepspeed": "nope.json"},
                               read_files=True)
    path = tmp_path / "ds_custom.json"
    path.write_text(json.dumps({"zero_optimization": {"stage": 2}}))
    with pytest.raises(SpecError, match="reads no files"):  # the web calculator's setting
        spec_from_llamafactory({"model_name_or_path": LLAMA, "deepspeed": str(path)})
    inline = spec_from_llamafactory({"model_name_or_path": LLAMA, "num_gpus": 2, "deepspeed": {
        "zero_optimization": {"stage": 1}}}).spec
    assert inline.zero_stage == 1 and inline.num_gpus == 2


ACCELERATE = {  # LLaMA-Factory v0.9.5 examples/accelerate/*.yaml
    "fsdp_config.yaml": ("FULL_SHARD", 1, "none", 2, 1),
    "fsdp_config_offload.yaml": ("FULL_SHARD", 1, "optimizer+params", 2, 1),
    "fsdp2_config.yaml": ("FULL_SHARD", 2, "none", 2, 1),
    "fsdp_config_multiple_nodes.yaml": ("FULL_SHARD", 1, "none", 16, 2),
}


@pytest.mark.parametrize("name", ACCELERATE)
def test_accelerate_fsdp_examples(name):
    spec = spec_input_from_fields({"model": LLAMA, "precision": "bf16"},
                                  launch={"accelerate_config": name}).spec
    assert spec.distributed == "fsdp"
    assert (spec.fsdp_sharding, spec.fsdp_version, spec.offload, spec.num_gpus,
            spec.num_nodes) == ACCELERATE[name]


def test_accelerate_spellings_and_the_trainers_fsdp_keys(tmp_path):
    config = tmp_path / "acc.yaml"
    config.write_text(yaml.safe_dump({"distributed_type": "FSDP", "num_processes": 4,
                                      "fsdp_config": {"fsdp_sharding_strategy": 2}}))
    spec = spec_input_from_fields({"model": LLAMA}, launch={"accelerate_config": str(config)},
                                  read_files=True).spec
    assert (spec.fsdp_sharding, spec.num_gpus) == ("SHARD_GRAD_OP", 4)  # accelerate's old 2
    deepspeed = tmp_path / "ds_acc.yaml"
    deepspeed.write_text(yaml.safe_dump({"distributed_type": "DEEPSPEED", "num_processes": 2,
                                         "deepspeed_config": {"zero_stage": 3,
                                                              "offload_optimizer_device": "cpu"}}))
    spec = spec_input_from_fields({"model": LLAMA}, launch={"accelerate_config": str(deepspeed)},
                                  read_files=True).spec
    assert (spec.distributed, spec.zero_stage, spec.offload) == ("deepspeed", 3, "optimizer")
    trainer = spec_from_llamafactory({"model_name_or_path": LLAMA, "num_gpus": 2, "bf16": True,
                                      "fsdp": "hybrid_shard auto_wrap offload",
                                      "fsdp_config": {"fsdp_version": 2}}).spec
    assert (trainer.fsdp_sharding, trainer.fsdp_version, trainer.offload) == (
        "HYBRID_SHARD", 2, "optimizer+params")
    with pytest.raises(SpecError, match="not an accelerate config"):
        spec_input_from_fields({"model": LLAMA}, launch={"accelerate_config": {"a": 1}})


def test_the_answer_is_per_gpu_and_in_total_with_host_ram():
    result = runner.invoke(app, ["predict", "--model", LLAMA, "--precision", "bf16",
                                 "--deepspeed", "ds_z3_offload_config.json", "--num-gpus", "4",
                                 "--json"])
    assert result.exit_code == 0, result.output
    answer = json.loads(result.output)
    assert answer["num_gpus"] == 4
    assert answer["total_vram_bytes"] == 4 * answer["peak_vram_bytes"]
    assert answer["host_memory_bytes"] > 0
    assert answer["breakdown"]["gathered"] > 0 and answer["breakdown"]["communication"] > 0
    text = runner.invoke(app, ["predict", "--model", LLAMA, "--precision", "bf16",
                               "--deepspeed", "ds_z3_offload_config.json", "--num-gpus", "4"])
    assert "Peak VRAM per GPU" in text.output and "x 4 GPUs =" in text.output
    assert "host RAM for the offloaded states" in text.output
    assert "DeepSpeed ZeRO-3 + CPU offload (optimizer+params) on 4 GPUs" in text.output
