"""Fixtures for the simulator tests: tiny model configs and a spec builder.

Default tier (about a minute on 2 cores): tiny models, fake == real to the byte.
Slow tier (`pytest -m slow tests/model/simulate`): real-size catalog models on fake tensors.
"""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("peft")
pytest.importorskip("bitsandbytes")

SIM_ASSETS = Path(__file__).parent / "assets"
TESTS_ASSETS = Path(__file__).parents[2] / "assets"
TINY_LLAMA = str(TESTS_ASSETS / "tiny_llama_config.json")
TINY_LLAVA = str(SIM_ASSETS / "tiny_llava_config.json")
TINY_QWEN2_VL = str(SIM_ASSETS / "tiny_qwen2_vl_config.json")
# Llama-3.2-1B (tied embeddings) scaled down through model_overrides.
TINY_TIED = dict(model="meta-llama/Llama-3.2-1B", model_overrides={
    "num_hidden_layers": 2, "hidden_size": 64, "intermediate_size": 128, "num_attention_heads": 4,
    "num_key_value_heads": 2, "head_dim": 16, "vocab_size": 1000})


def tiny_spec(model: str = TINY_LLAMA, **fields):
    """A small spec (batch 2 x 64 tokens, bf16 AMP) with `fields` on top."""
    from vram_ml.spec import build_spec

    defaults = dict(batch_size=2, seq_len=64, precision="bf16")
    return build_spec(model=model, **{**defaults, **fields})


@pytest.fixture
def make_spec():
    return tiny_spec
