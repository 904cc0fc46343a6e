"""The stack in the Spec: framework and library versions, their defaults, their errors, and
where they travel (spec_id, YAML, CLI flags, dataset rows)."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from vram_ml.cli import app
from vram_ml.defaults import default
from vram_ml.llamafactory import spec_from_llamafactory
from vram_ml.sample import COLUMNS, Measurement, Provenance, Sample, row_to_sample, sample_to_row
from vram_ml.spec import STACK_FIELDS, SpecError, build_spec
from vram_ml.stack import FRAMEWORKS, check_version, parse_version

LLAMA = "meta-llama/Meta-Llama-3-8B"
runner = CliRunner()


def test_defaults_are_what_llamafactory_0_9_5_installs():
    spec = build_spec(model=LLAMA)
    assert (spec.framework, spec.transformers_version, spec.peft_version, spec.trl_version,
            spec.bitsandbytes_version) == ("llamafactory", "5.6.0", "0.18.1", "0.24.0", "0.50.2")


def test_versions_are_release_numbers():
    assert parse_version("5.6") == (5, 6, 0) == parse_version("v5.6.0.dev0")
    a = build_spec(model=LLAMA, framework="trl", transformers_version="4.57")
    b = build_spec(model=LLAMA, framework="trl", transformers_version="4.57.0")
    assert a.transformers_version == "4.57.0" and a.spec_id == b.spec_id


@pytest.mark.parametrize("fields,message", [
    (dict(framework="axolotl"), "framework: Input should be 'llamafactory', 'trl' or 'hf_trainer'"),
    (dict(framework="trl", transformers_version="4.30.1"),
     "transformers_version: 4.30.1 is not supported (supported: transformers 4.32.0–5.24.x)"),
    (dict(transformers_version="4.48.1"),
     "transformers_version: 4.48.1 is not supported under llamafactory (supported: "
     "transformers 4.55.0–5.6.0)"),
    (dict(peft_version="0.21.2"), "peft 0.18.0–0.20.0"),
    (dict(framework="trl", peft_version="0.6.2"), "peft 0.7.0–0.21.x"),
    (dict(framework="trl", trl_version="1.2.0"), "trl 0.9.6–0.26.x"),
    (dict(bitsandbytes_version="0.42.0"), "bitsandbytes 0.43.0–0.50.x"),
    (dict(trl_version="latest"), "trl_version: 'latest' is not a version"),
    (dict(framework="trl", method="freeze"), "method: freeze tuning is LLaMA-Factory's"),
])
def test_unsupported_stacks_are_one_line_errors_that_list_what_is(fields, message):
    with pytest.raises(SpecError) as error:
        build_spec(model=LLAMA, **fields)
    assert message in str(error.value) and "\n" not in str(error.value)


def test_the_stack_is_part_of_the_spec_id():
    base = build_spec(model=LLAMA)
    ids = {base.spec_id}
    for fields in (dict(framework="trl"), dict(transformers_version="4.57.6"),
                   dict(peft_version="0.18.0"), dict(trl_version="0.23.0"),
                   dict(bitsandbytes_version="0.45.5")):
        ids.add(build_spec(model=LLAMA, **fields).spec_id)
    assert len(ids) == 6


def test_the_default_optimizer_is_the_versions_trainer_default():
    assert build_spec(model=LLAMA, framework="trl", transformers_version="4.48.1").optimizer == (
        "adamw_torch")
    assert build_spec(model=LLAMA, transformers_version="4.57.6").optimizer == "adamw_torch_fused"
    given = build_spec(model=LLAMA, framework="trl", transformers_version="4.48.1",
                       optimizer="adamw_torch_fused")
    assert given.optimizer == "adamw_torch_fused"


def test_a_llamafactory_yaml_sets_the_framework_and_reports_the_versions_it_assumed():
    read = spec_from_llamafactory({"model_name_or_path": LLAMA})
    assert read.spec.framework == "llamafactory"
    assert "framework" not in read.assumed
    assert "transformers 5.6.0" in read.assumed["transformers_version"]
    old = spec_from_llamafactory({"model_name_or_path": LLAMA},
                                 {"framework": "trl", "transformers_version": "4.48.1"})
    assert old.spec.framework == "trl" and "< 4.54" in old.assumed["optimizer"]


def test_cli_flags_and_echo():
    args = ["predict", "--model", LLAMA, "--method", "qlora", "--quant-bits", "4",
            "--framework", "trl", "--transformers-version", "4.57.6", "--peft-version", "0.17.1",
            "--trl-version", "0.23.0", "--bitsandbytes-version", "0.48.2"]
    result = runner.invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    spec = json.loads(result.output)["spec"]
    assert {name: spec[name] for name in STACK_FIELDS} == {
        "framework": "trl", "transformers_version": "4.57.6", "peft_version": "0.17.1",
        "trl_version": "0.23.0", "bitsandbytes_version": "0.48.2", "accelerate_version": "1.11.0"}
    text = runner.invoke(app, args)
    assert "stack: trl · transformers 4.57.6 · peft 0.17.1 · trl 0.23.0" in text.output
    bad = runner.invoke(app, ["predict", "--model", LLAMA, "--framework", "unsloth"])
    assert bad.exit_code == 2 and "llamafactory" in bad.output and "Traceback" not in bad.output


def _sample(**fields) -> Sample:
    return Sample(build_spec(model=LLAMA, **fields),
                  Measurement(status="ok", peak_vram_bytes=10**10),
                  Provenance(backend="cuda", agent_version="0", created_at="2026-01-01T00:00:00Z"))


def test_dataset_rows_carry_the_stack_and_old_rows_still_load():
    assert set(STACK_FIELDS) <= set(COLUMNS)
    row = sample_to_row(_sample(framework="trl", transformers_version="4.57.6"))
    assert row_to_sample(row).spec.transformers_version == "4.57.6"
    old = sample_to_row(_sample())
    for name in STACK_FIELDS:  # a row written before the stack was part of the spec: ...
        old.pop(name)
    for name in ("transformers_version", "peft_version", "bitsandbytes_version"):
        old.pop(f"installed_{name}")  # ... its version columns were the installed versions
        old[name] = {"transformers_version": "5.24.0"}.get(name, "0.21.2")
    old["spec_id"] = build_spec(model=LLAMA).spec_id_v1()
    loaded = row_to_sample(old)
    assert loaded.spec.framework == default("framework") and loaded.spec_id != old["spec_id"]
    assert loaded.spec.transformers_version == "5.6.0"
    assert loaded.provenance.installed_transformers_version == "5.24.0"
    old["spec_id"] = "0123456789abcdef"
    with pytest.raises(ValueError, match="spec_id"):
        row_to_sample(old)


def test_every_library_range_is_checked_for_every_framework():
    for framework in FRAMEWORKS:
        assert check_version("transformers", "5.6.0", framework) == "5.6.0"
