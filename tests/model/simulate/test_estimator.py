"""SimulateEstimator and `vram-ml simulate`: the Estimate contract, refusals, the CLI."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from vram_ml.model.estimate import BREAKDOWN_TERMS
from vram_ml.model.formulas.analytical import CUBLAS_WORKSPACE_BYTES
from vram_ml.model.simulate.estimator import CUDA_CONTEXT_BYTES, SimulateEstimator, simulate

from ..tiny_models import TINY_LLAMA, tiny_spec


@pytest.fixture(scope="module")
def simulation():
    return simulate(tiny_spec(lora_target="q_proj,v_proj", gradient_checkpointing=False))


def test_estimate_is_tensor_peak_plus_named_corrections(simulation):
    estimate = simulation.estimate
    assert estimate.estimator == "simulate"
    assert set(estimate.breakdown) <= set(BREAKDOWN_TERMS)
    assert estimate.peak_vram_bytes == sum(estimate.breakdown.values())
    assert estimate.peak_allocated_bytes == simulation.run.peak.peak_allocated_bytes
    assert estimate.peak_allocated_bytes >= simulation.peak_tensor_bytes + CUBLAS_WORKSPACE_BYTES
    assert estimate.breakdown["overhead"] == sum(simulation.corrections.values())
    assert simulation.corrections["cuda_context"] == CUDA_CONTEXT_BYTES
    assert simulation.corrections["cublas_workspace"] == CUBLAS_WORKSPACE_BYTES
    assert 0 <= simulation.corrections["allocator_rounding"] < 512 * 10_000
    assert simulation.corrections["allocator_cache"] >= 0
    tensors = estimate.peak_vram_bytes - estimate.breakdown["overhead"]
    assert tensors == simulation.peak_tensor_bytes
    assert estimate.peak_vram_bytes == CUDA_CONTEXT_BYTES + estimate.peak_reserved_bytes
    assert any("not a measurement" in note for note in estimate.notes)


def test_registry_builds_the_estimator():
    from vram_ml.model.estimate import get_estimator

    estimator = get_estimator("simulate")
    assert isinstance(estimator, SimulateEstimator) and estimator.name == "simulate"


@pytest.mark.parametrize("fields,message", [
    (dict(liger_kernel=True), "liger_kernel"),
    (dict(num_gpus=2), "ddp is not simulated"),
    # the real CPU step of this recipe fails in a matmul mixing the fp32 copy and bf16 tensors
    (dict(additional_target="lm_head", precision="no_amp"), "additional_target: without bf16"),
    # peft >= 0.19 wraps the fused experts in lora.ParamWrapper, which raises on dropout
    (dict(model="deepseek-ai/DeepSeek-V2-Lite", peft_version="0.20.0", lora_dropout=0.1,
          model_overrides={"num_hidden_layers": 2}), "lora_dropout: peft's LoRA on fused"),
])
def test_refusals_are_one_line(fields, message):
    with pytest.raises(ValueError, match=message) as error:
        simulate(tiny_spec(**fields))
    assert "\n" not in str(error.value)


def test_approximations_are_named_in_the_notes():
    estimate = SimulateEstimator().estimate(
        tiny_spec(attention="flash_attention_2", gradient_accumulation=4,
                  optimizer="paged_adamw_8bit")
    )
    notes = " ".join(estimate.notes)
    assert "flash_attention_2 simulated as SDPA" in notes
    assert "4 micro-steps simulated as 2" in notes
    assert "paged optimizer" in notes


def test_cli_simulate_json():
    from vram_ml.cli import app

    result = CliRunner().invoke(app, [
        "simulate", "--model", TINY_LLAMA, "--batch-size", "2", "--seq-len", "64",
        "--precision", "bf16", "--json",
    ])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload["estimator"] == "simulate"
    assert payload["peak_tensor_bytes"] > 0
    # one name for the allocated peak everywhere (Estimate, Measurement, simulate, analytical)
    assert payload["peak_allocated_bytes"] >= payload["peak_tensor_bytes"]
    assert not any(key.endswith("_cuda_bytes") for key in payload)
    assert payload["peak_vram_bytes"] == sum(payload["breakdown"].values())
    assert payload["spec_id"] and payload["peak_phase"] in ("forward", "backward", "optimizer")
    assert "measured" not in result.stdout.lower()


def test_cli_simulate_table_and_refusal():
    from vram_ml.cli import app

    runner = CliRunner()
    table = runner.invoke(app, ["simulate", "--model", TINY_LLAMA, "--seq-len", "64"])
    assert table.exit_code == 0, table.output
    assert "Simulated peak VRAM" in table.output and "not a measurement" in table.output
    refused = runner.invoke(app, ["simulate", "--model", TINY_LLAMA, "--seq-len", "64",
                                  "--liger-kernel"])
    assert refused.exit_code == 2
    assert "liger_kernel" in refused.output


def test_cli_start_imports_no_torch():
    code = "import sys, vram_ml.cli, vram_ml.model.simulate; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_simulate_says_when_the_installed_libraries_are_not_the_specs(simulation):
    """It executes what is installed; the spec's versions are the analytical estimator's."""
    from importlib.metadata import version

    from vram_ml.model.simulate.step import installed_stack_notes

    installed = version("transformers")
    note = " ".join(simulation.estimate.notes)
    if installed != "5.6.0":  # the spec's default
        assert f"transformers {installed} (spec: 5.6.0)" in note
    same = tiny_spec(framework="trl", transformers_version=installed,
                     peft_version=version("peft"), bitsandbytes_version=version("bitsandbytes"))
    assert installed_stack_notes(same) == []
