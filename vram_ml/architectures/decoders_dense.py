"""Closed-form shape builders for the newer dense decoders: Gemma 3 (text), OLMo 2 / 3,
StarCoder 2, Cohere (Command-R / Aya).

Same conventions as decoders.py (transformers 5.24's module trees, configuration-class defaults
for the keys a config leaves out); the meta-device test holds each to transformers' count.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from vram_ml.architectures.decoders import (
    DEFAULTS,
    decoder_shape,
    gated_mlp,
    head_dim,
    kv_heads,
    qkvo,
    with_defaults,
)
from vram_ml.architectures.registry import register
from vram_ml.architectures.shape import AttentionShape, LinearShape, ModelShape

_OLMO2 = {"vocab_size": 50304, "hidden_size": 4096, "intermediate_size": 11008,
          "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": None,
          "max_position_embeddings": 2048, "tie_word_embeddings": False, "attention_bias": False}
DEFAULTS.update({
    "gemma3_text": {"vocab_size": 262208, "hidden_size": 2304, "intermediate_size": 9216,
                    "num_hidden_layers": 26, "num_attention_heads": 8, "num_key_value_heads": 4,
                    "head_dim": 256, "max_position_embeddings": 131072,
                    "tie_word_embeddings": True, "attention_bias": False, "sliding_window": 4096,
                    "layer_types": None},
    "olmo2": _OLMO2,
    "olmo3": {**_OLMO2, "sliding_window": 4096, "layer_types": None},
    "starcoder2": {"vocab_size": 49152, "hidden_size": 3072, "intermediate_size": 12288,
                   "num_hidden_layers": 30, "num_attention_heads": 24, "num_key_value_heads": 2,
                   "max_position_embeddings": 4096, "use_bias": True, "sliding_window": None,
                   "tie_word_embeddings": True},
    "cohere": {"vocab_size": 256000, "hidden_size": 8192, "intermediate_size": 22528,
               "num_hidden_layers": 40, "num_attention_heads": 64, "num_key_value_heads": None,
               "max_position_embeddings": 8192, "tie_word_embeddings": True,
               "attention_bias": False, "use_qk_norm": False},
})


def sliding_layers(c: Mapping[str, Any], pattern: int | None = None,
                   window_key: str = "sliding_window") -> AttentionShape:
    """How many layers attend within a window: `layer_types` when the config lists them, else
    the configuration class's rule (every `pattern`-th layer full, the others sliding)."""
    window = c.get(window_key) or 0
    layers = c["num_hidden_layers"]
    types = c.get("layer_types")
    if types:
        count = sum(1 for kind in types[:layers]
                    if kind in ("sliding_attention", "chunked_attention"))
    elif pattern and window:
        count = sum(1 for index in range(layers) if (index + 1) % pattern)
    else:
        count = 0
    return AttentionShape(sliding_layers=count if window else 0, sliding_window=window)


@register("gemma3_text")
def gemma3_text(config: Mapping[str, Any]) -> ModelShape:
    """Gemma 3 text: Gemma 2's four norms per layer + per-head q/k RMSNorms; five sliding-window
    layers (`sliding_window`) to one global (Gemma3TextConfig's `sliding_window_pattern` 6)."""
    c = with_defaults(config)
    hidden, heads = c["hidden_size"], c["num_attention_heads"]
    kv, hd = kv_heads(c, heads), head_dim(c, heads)
    bias = bool(c.get("attention_bias"))
    linears = qkvo(hidden, heads, kv, hd, bias, bias) + gated_mlp(hidden, c["intermediate_size"])
    attention = sliding_layers(c, pattern=c.get("sliding_window_pattern") or 6)
    return decoder_shape(c, linears=linears, other=4 * hidden + 2 * hd,
                         embedding=c["vocab_size"] * hidden, final_norm=hidden, kv=kv, hd=hd,
                         attention=dataclasses.replace(attention, qk_norm="head"))


@register("olmo2", "olmo3")
def olmo2(config: Mapping[str, Any]) -> ModelShape:
    """OLMo 2 / 3: norms after attention and after the MLP only (no input norm), q/k RMSNorms over
    all heads (heads x head_dim), no biases; OLMo 3 adds 3 sliding-window layers to 1 full."""
    c = with_defaults(config)
    hidden, heads = c["hidden_size"], c["num_attention_heads"]
    kv, hd = kv_heads(c, heads), head_dim(c, heads)
    bias = bool(c.get("attention_bias"))
    linears = qkvo(hidden, heads, kv, hd, bias, bias) + gated_mlp(hidden, c["intermediate_size"])
    attention = sliding_layers(c, pattern=4) if c["model_type"] == "olmo3" else AttentionShape()
    return decoder_shape(c, linears=linears, other=2 * hidden + (heads + kv) * hd,
                         embedding=c["vocab_size"] * hidden, final_norm=hidden, kv=kv, hd=hd,
                         attention=dataclasses.replace(attention, qk_norm="full"))


@register("starcoder2")
def starcoder2(config: Mapping[str, Any]) -> ModelShape:
    """StarCoder 2: biased q/k/v/o and a plain c_fc/c_proj MLP (`use_bias`), LayerNorms with bias,
    tied head by default."""
    c = with_defaults(config)
    hidden, heads = c["hidden_size"], c["num_attention_heads"]
    kv, hd = kv_heads(c, heads), head_dim(c, heads)
    bias, inter = bool(c.get("use_bias")), c["intermediate_size"]
    linears = qkvo(hidden, heads, kv, hd, bias, bias) + (
        LinearShape("c_fc", hidden, inter, bias), LinearShape("c_proj", inter, hidden, bias))
    window = c.get("sliding_window") or 0
    attention = AttentionShape(sliding_layers=c["num_hidden_layers"] if window else 0,
                               sliding_window=window)
    return decoder_shape(c, linears=linears, other=4 * hidden, embedding=c["vocab_size"] * hidden,
                         final_norm=2 * hidden, kv=kv, hd=hd, attention=attention)


@register("cohere")
def cohere(config: Mapping[str, Any]) -> ModelShape:
    """Cohere: one bias-free LayerNorm per layer feeding attention and MLP in parallel, optional
    q/k LayerNorms per head (`use_qk_norm`), tied head by default."""
    c = with_defaults(config)
    hidden, heads = c["hidden_size"], c["num_attention_heads"]
    kv, hd = kv_heads(c, heads), head_dim(c, heads)
    bias = bool(c.get("attention_bias"))
    linears = qkvo(hidden, heads, kv, hd, bias, bias) + gated_mlp(hidden, c["intermediate_size"])
    qk_norm = (heads + kv) * hd if c.get("use_qk_norm") else 0
    return decoder_shape(c, linears=linears, other=hidden + qk_norm,
                         embedding=c["vocab_size"] * hidden, final_norm=hidden, kv=kv, hd=hd,
                         attention=AttentionShape(qk_norm="full" if qk_norm else ""))
