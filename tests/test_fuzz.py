"""Fuzzing the entry points: every input is either accepted or refused with one line.

Default tier: a few hundred generated cases per entry point. Slow tier (`-m slow`): 1,000+ each.
"""

from __future__ import annotations

import string

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from vram_ml.cli import app
from vram_ml.llamafactory import spec_from_llamafactory
from vram_ml.sample import COLUMNS, SampleError, row_to_sample
from vram_ml.spec import Spec, SpecError, build_spec

MODEL = "meta-llama/Meta-Llama-3-8B"
FAST = settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SLOW = settings(max_examples=1200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

junk = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-10, 10**7),
    st.floats(allow_nan=True),
    st.text(max_size=12),
    st.lists(st.text(string.ascii_lowercase + "_", max_size=8), max_size=3),
)
field_values = {
    "method": st.sampled_from(["full", "freeze", "lora", "qlora", "dpo", ""]),
    "quant_bits": st.sampled_from([None, 2, 3, 4, 8, 16]),
    "lora_rank": st.integers(-2, 5000),
    "lora_dropout": st.one_of(st.floats(-1, 2), st.just(float("nan"))),
    "lora_target": st.sampled_from(["all", "q_proj,v_proj", "nope", "", "q_proj,,k_proj"]),
    "batch_size": st.integers(-3, 5000),
    "seq_len": st.integers(-3, 20000),
    "precision": st.sampled_from(["bf16", "fp16", "fp32", "pure_bf16", "no_amp", "int8"]),
    "attention": st.sampled_from(["eager", "sdpa", "flash_attention_2", "xformers"]),
    "optimizer": st.sampled_from(["adamw_torch", "adamw_8bit", "sgd", "adafactor", "lion"]),
    "num_gpus": st.integers(-1, 16),
    "zero_stage": st.integers(-1, 4),
    "images_per_sample": st.integers(-1, 3),
    "model_overrides": st.dictionaries(
        st.sampled_from(["num_hidden_layers", "hidden_size", "nope"]),
        st.integers(-2, 64),
        max_size=2,
    ),
}
spec_fields = st.fixed_dictionaries({}, optional={**field_values, "junk_field": junk})
mixed_fields = st.fixed_dictionaries(
    {}, optional={name: st.one_of(values, junk) for name, values in field_values.items()}
)


def _check_spec(fields):
    try:
        spec = build_spec(model=MODEL, **fields)
    except SpecError as error:
        assert "\n" not in str(error) and str(error)
        return
    assert isinstance(spec, Spec) and len(spec.spec_id) == 16


@FAST
@given(st.one_of(spec_fields, mixed_fields))
def test_fuzz_spec(fields):
    _check_spec(fields)


@pytest.mark.slow
@SLOW
@given(st.one_of(spec_fields, mixed_fields))
def test_fuzz_spec_slow(fields):
    _check_spec(fields)


yaml_keys = st.sampled_from(
    [
        "finetuning_type",
        "lora_rank",
        "lora_target",
        "quantization_bit",
        "quantization_type",
        "double_quantization",
        "per_device_train_batch_size",
        "cutoff_len",
        "bf16",
        "fp16",
        "pure_bf16",
        "flash_attn",
        "disable_gradient_checkpointing",
        "enable_liger_kernel",
        "optim",
        "deepspeed",
        "image_max_pixels",
        "learning_rate",
        "whatever",
        "num_gpus",
    ]
)
yaml_docs = st.dictionaries(yaml_keys, junk, max_size=8).map(
    lambda d: {"model_name_or_path": MODEL, **d}
)


def _check_yaml(raw):
    text = yaml.safe_dump(raw)
    try:
        spec_from_llamafactory(yaml.safe_load(text))
    except SpecError as error:
        assert "\n" not in str(error)


@FAST
@given(yaml_docs)
def test_fuzz_llamafactory_yaml(raw):
    _check_yaml(raw)


@pytest.mark.slow
@SLOW
@given(yaml_docs)
def test_fuzz_llamafactory_yaml_slow(raw):
    _check_yaml(raw)


rows = st.dictionaries(st.sampled_from(COLUMNS), junk, max_size=12).map(
    lambda d: {
        "model": MODEL,
        "status": "ok",
        "backend": "cuda",
        "agent_version": "0",
        "created_at": "2026-01-01T00:00:00Z",
        "peak_vram_bytes": 1,
        **d,
    }
)


def _check_row(row):
    try:
        row_to_sample(row)
    except SampleError as error:
        assert "\n" not in str(error) and str(error)


@FAST
@given(rows)
def test_fuzz_dataset_rows(row):
    _check_row(row)


@pytest.mark.slow
@SLOW
@given(rows)
def test_fuzz_dataset_rows_slow(row):
    _check_row(row)


flags = st.lists(
    st.sampled_from(
        [
            "--batch-size",
            "--seq-len",
            "--lora-rank",
            "--method",
            "--quant-bits",
            "--precision",
            "--attention",
            "--optimizer",
            "--num-gpus",
            "--zero-stage",
            "--override",
            "--lora-target",
        ]
    ).flatmap(lambda flag: st.tuples(st.just(flag), st.text(string.printable.strip(), max_size=6))),
    max_size=4,
)


def _check_cli(pairs):
    args = ["estimate", "--model", MODEL, "--json"] + [part for pair in pairs for part in pair]
    result = CliRunner().invoke(app, args)
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(
        result.exception
    )
    assert result.exit_code in (0, 2)


@FAST
@given(flags)
def test_fuzz_cli_arguments(pairs):
    _check_cli(pairs)


@pytest.mark.slow
@SLOW
@given(flags)
def test_fuzz_cli_arguments_slow(pairs):
    _check_cli(pairs)
