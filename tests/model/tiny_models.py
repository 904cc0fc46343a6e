"""Tiny model configs and a spec builder, shared by the recipe and simulate tests.

The JSON configs are in tests/model/simulate/assets (see its README) and tests/assets.
"""

from __future__ import annotations

from pathlib import Path

SIM_ASSETS = Path(__file__).parent / "simulate" / "assets"
TESTS_ASSETS = Path(__file__).parents[1] / "assets"
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
