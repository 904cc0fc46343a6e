"""Closed-form shape builders, one per family of HF `model_type`s.

Each builder mirrors the module tree transformers builds for that model_type (read its
modeling_*.py): which linears exist, their bias, what is tied. The meta-device test in
tests/vram_ml/test_architecture.py checks every catalog model against transformers.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from vram_ml.architecture import LinearShape, ModelShape, register


def _head_dim(config: Mapping[str, Any]) -> int:
    head_dim = config.get("head_dim")
    return int(head_dim) if head_dim else config["hidden_size"] // config["num_attention_heads"]


@register("llama", "mistral", "qwen2", "qwen3")
def llama_like(config: Mapping[str, Any]) -> ModelShape:
    """Llama-style decoder: q/k/v/o attention, gated MLP, RMSNorm (two per layer + final)."""
    hidden = config["hidden_size"]
    heads = config["num_attention_heads"]
    kv_heads = config.get("num_key_value_heads") or heads
    head_dim = _head_dim(config)
    intermediate = config["intermediate_size"]
    model_type = config["model_type"]
    # Qwen2 has q/k/v biases; Llama/Mistral take `attention_bias` (default False).
    qkv_bias = model_type == "qwen2" or bool(config.get("attention_bias", False))
    o_bias = bool(config.get("attention_bias", False)) and model_type != "qwen2"
    mlp_bias = bool(config.get("mlp_bias", False))
    linears = (
        LinearShape("q_proj", hidden, heads * head_dim, qkv_bias),
        LinearShape("k_proj", hidden, kv_heads * head_dim, qkv_bias),
        LinearShape("v_proj", hidden, kv_heads * head_dim, qkv_bias),
        LinearShape("o_proj", heads * head_dim, hidden, o_bias),
        LinearShape("gate_proj", hidden, intermediate, mlp_bias),
        LinearShape("up_proj", hidden, intermediate, mlp_bias),
        LinearShape("down_proj", intermediate, hidden, mlp_bias),
    )
    # Qwen3 adds per-head RMSNorm on q and k.
    qk_norm = 2 * head_dim if model_type == "qwen3" else 0
    vocab = config["vocab_size"]
    tied = bool(config.get("tie_word_embeddings", False))
    return ModelShape(
        model_type=model_type,
        num_layers=config["num_hidden_layers"],
        hidden_size=hidden,
        intermediate_size=intermediate,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        head_dim=head_dim,
        vocab_size=vocab,
        max_position_embeddings=config.get("max_position_embeddings", 2048),
        tie_word_embeddings=tied,
        layer_linears=linears,
        layer_other_params=2 * hidden + qk_norm,
        embedding_params=vocab * hidden,
        lm_head_params=0 if tied else vocab * hidden,
        final_norm_params=hidden,
    )
