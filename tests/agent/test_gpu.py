"""GPU tier (`pytest -m gpu`, skipped without CUDA): the recipe measured for real on CUDA.

Run by scripts/device_session.sh on a lent GPU before the agent; tiny and scaled-down models, so
the whole tier takes about two minutes. Everything runs in child processes: this process never
creates a CUDA context, which the GPU pool would take for someone else's (so the simulate-vs-CUDA
test, tests/model/simulate/test_against_cuda.py, runs in a pytest process of its own).
Each measurement prints one line of figures (the session log keeps them).
"""

from __future__ import annotations

import json

import pytest

from vram_ml.agent.worker import Slot, measure_isolated
from vram_ml.spec import build_spec

pytestmark = pytest.mark.gpu
GIB = 2**30
SMALL = {"model": "Qwen/Qwen2.5-0.5B", "model_overrides": {"num_hidden_layers": 4},
         "batch_size": 2, "seq_len": 512, "precision": "bf16"}


@pytest.mark.parametrize("fields", [
    {"method": "lora"},
    {"method": "qlora", "quant_bits": 4},
    {"method": "qlora", "quant_bits": 8},
    {"method": "full", "optimizer": "adamw_8bit", "gradient_checkpointing": False},
    {"method": "lora", "attention": "eager", "precision": "fp16"},
    {"method": "full", "optimizer": "paged_adamw_32bit"},
    {"method": "lora", "stage": "dpo"},
    {"method": "lora", "stage": "ppo", "max_new_tokens": 64},
], ids=["lora", "qlora4", "qlora8", "full-8bit-adam", "lora-eager-fp16", "full-paged-32bit",
        "dpo-lora", "ppo-lora"])
def test_cuda_measurement_is_consistent(tmp_path, fields):
    from vram_ml.model.formulas.analytical import analyse

    spec = build_spec(**{**SMALL, **fields})
    sample = measure_isolated(spec, Slot("cuda", 0), tmp_path, steps=3, timeout_s=300)
    m, p = sample.measurement, sample.provenance
    print(f"\n{spec.method} {spec.optimizer}: context {m.cold_context_bytes} -> "
          f"{m.cuda_context_bytes} after warm-up, reserved {m.peak_reserved_bytes}, paged "
          f"{m.paged_bytes}, target {m.peak_vram_bytes}, nvml {m.nvml_peak_bytes} ({m.message})")
    assert m.status == "ok", m.message
    assert 100 * 2**20 < m.cold_context_bytes < 2 * GIB
    assert m.cuda_context_bytes >= m.cold_context_bytes - 8 * 2**20  # kernels only add
    assert 0 < m.setup_peak_allocated_bytes <= m.setup_peak_reserved_bytes
    assert m.setup_peak_allocated_bytes < m.peak_allocated_bytes <= m.peak_reserved_bytes
    assert m.peak_vram_bytes == m.cuda_context_bytes + m.peak_reserved_bytes + m.paged_bytes
    # the managed bytes are the ones the analytical estimator counts as paged, to the byte
    assert m.paged_bytes == analyse(spec).states.paged_optimizer
    if spec.optimizer.startswith("paged_"):
        assert m.paged_bytes > 100 * 2**20
    # NVML sees the process: the target (NVML's per-process figure leaves managed memory out)
    assert 0.9 * (m.peak_vram_bytes - m.paged_bytes) < m.nvml_peak_bytes
    assert m.nvml_peak_bytes < m.peak_vram_bytes + 2 * GIB
    assert p.device_name and p.device_total_bytes and p.driver_version and p.cuda_version
    assert m.steps == 3 and m.step_seconds > 0


def test_real_oom_is_a_sample_with_lower_bounds(tmp_path):
    spec = build_spec(model="Qwen/Qwen2.5-0.5B", method="lora", batch_size=64, seq_len=32768,
                      precision="bf16", gradient_checkpointing=False)
    sample = measure_isolated(spec, Slot("cuda", 0), tmp_path, timeout_s=300)
    m = sample.measurement
    assert m.status == "oom", m.message
    assert m.cold_context_bytes > 0 and m.peak_vram_bytes > m.cuda_context_bytes


def test_agent_on_the_gpu(tmp_path, write_plan):
    from typer.testing import CliRunner

    from vram_ml.cli import app

    plan = write_plan([{**SMALL, "method": "lora"}, {**SMALL, "method": "qlora", "quant_bits": 4}])
    result = CliRunner().invoke(app, ["agent", "run", "--gpus", "auto", "--max-used-gib", "16",
                                      "--plan", str(plan), "--store", str(tmp_path / "store"),
                                      "--no-mlflow", "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["stored"] == 2 and summary["status"]["ok"] == 2
