"""Fixtures for the agent's tests: tiny specs (catalog models scaled down to 2 layers, hidden 64,
vocab 1000: real modules that train on the CPU in about a second), plan files, and the child's
test hook (`VRAM_ML_AGENT_TEST_HOOK`, see agent/child.py: oom | error | sleep:S | exit:N | stub)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

TINY = {"num_hidden_layers": 2, "hidden_size": 64, "intermediate_size": 128,
        "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 1000}
TINY_QWEN = {**TINY, "bos_token_id": 1, "eos_token_id": 2}


@pytest.fixture
def tiny_specs() -> list[dict]:
    """Three small, different specs (lora fp32, full bf16 + sgd, freeze eager)."""
    return [
        {"model": "Qwen/Qwen2.5-0.5B", "model_overrides": TINY_QWEN, "method": "lora",
         "batch_size": 2, "seq_len": 32, "precision": "fp32"},
        {"model": "HuggingFaceTB/SmolLM2-135M", "model_overrides": TINY, "method": "full",
         "batch_size": 1, "seq_len": 16, "precision": "bf16", "optimizer": "sgd"},
        {"model": "HuggingFaceTB/SmolLM2-135M", "model_overrides": TINY, "method": "freeze",
         "freeze_trainable_layers": 1, "batch_size": 2, "seq_len": 16, "precision": "fp32",
         "attention": "eager", "gradient_checkpointing": False},
    ]


@pytest.fixture
def many_tiny_specs(tiny_specs) -> list[dict]:
    """n distinct cheap specs (for stub-hook runner tests): vary the batch size."""
    def make(n: int) -> list[dict]:
        return [{**tiny_specs[1], "batch_size": b} for b in range(1, n + 1)]
    return make


@pytest.fixture
def write_plan(tmp_path):
    def write(specs: list[dict], name: str = "plan.yaml") -> Path:
        path = tmp_path / name
        if name.endswith(".jsonl"):
            path.write_text("".join(json.dumps(s) + "\n" for s in specs))
        else:
            path.write_text(yaml.safe_dump(specs))
        return path
    return write


@pytest.fixture
def hooks(monkeypatch):
    """Set the child's test hook: hooks({spec_id or "*": "stub"}, preload=False)."""
    def set_hooks(mapping: dict[str, str], preload: bool = False) -> None:
        monkeypatch.setenv("VRAM_ML_AGENT_TEST_HOOK", json.dumps(mapping))
        monkeypatch.setenv("VRAM_ML_AGENT_PRELOAD", "1" if preload else "0")
    return set_hooks


@pytest.fixture
def make_sample():
    """make_sample(spec_fields, status="ok", torch_version=..., device=...) -> a cuda Sample with
    full provenance (made up: for schema and store tests only, never written to datasets/)."""
    from vram_ml.sample import Measurement, Provenance, Sample
    from vram_ml.spec import build_spec

    def make(spec_fields: dict, status: str = "ok", torch_version: str = "2.11.0",
             device: str = "NVIDIA H100 80GB HBM3") -> Sample:
        measurement = Measurement(status, "" if status == "ok" else "CUDA out of memory",
                                  peak_allocated_bytes=900, peak_reserved_bytes=1000,
                                  cuda_context_bytes=500, peak_vram_bytes=1500, steps=3,
                                  step_seconds=0.1)
        provenance = Provenance("cuda", "0.1.0", "2026-01-01T00:00:00+00:00", host="gpu-host",
                                device_name=device, device_total_bytes=80 * 2**30,
                                driver_version="580.1", cuda_version="13.0",
                                torch_version=torch_version, transformers_version="5.24.0",
                                peft_version="0.21.2", bitsandbytes_version="0.50.2")
        return Sample(build_spec(**spec_fields), measurement, provenance)
    return make
