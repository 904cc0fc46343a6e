"""Closed-form shape builders for decoder-only language models, one per family of `model_type`s.

Each builder mirrors the module tree transformers 5 builds for that model_type (its modeling_*.py):
which linears exist, their bias, the norms, what is tied. A key missing from the config takes the
default of that model_type's configuration class (copied below into `DEFAULTS`); a key present with
value None is derived the way the configuration class derives it (e.g. num_key_value_heads = heads).
No torch or transformers import here: this runs on the fast predict path. The meta-device test in
tests/vram_ml/test_architectures.py holds every catalog model to transformers' exact count.
Vision-language builders live in vision.py; both register into registry.py.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from vram_ml.architectures.registry import register
from vram_ml.architectures.shape import AttentionShape, LinearShape, ModelShape

_LLAMA = {
    "vocab_size": 32000, "hidden_size": 4096, "intermediate_size": 11008, "num_hidden_layers": 32,
    "num_attention_heads": 32, "num_key_value_heads": None, "head_dim": None,
    "max_position_embeddings": 2048, "tie_word_embeddings": False,
}
_QWEN2_VL_TEXT = {
    "vocab_size": 152064, "hidden_size": 8192, "intermediate_size": 29568, "num_hidden_layers": 80,
    "num_attention_heads": 64, "num_key_value_heads": 8, "max_position_embeddings": 32768,
    "tie_word_embeddings": False,
}
# transformers 5.x configuration-class defaults, only the keys that change parameter counts.
DEFAULTS: dict[str, dict[str, Any]] = {
    "llama": {**_LLAMA, "attention_bias": False, "mlp_bias": False},
    "mistral": {**_LLAMA, "intermediate_size": 14336, "num_key_value_heads": 8,
                "max_position_embeddings": 131072},
    "mixtral": {**_LLAMA, "intermediate_size": 14336, "num_key_value_heads": 8,
                "max_position_embeddings": 131072, "num_local_experts": 8,
                "num_experts_per_tok": 2},
    "qwen2": {**_LLAMA, "vocab_size": 151936, "intermediate_size": 22016, "num_key_value_heads": 32,
              "max_position_embeddings": 32768},
    "qwen3": {**_LLAMA, "vocab_size": 151936, "intermediate_size": 22016, "num_key_value_heads": 32,
              "head_dim": 128, "max_position_embeddings": 32768, "attention_bias": False},
    "qwen2_vl_text": _QWEN2_VL_TEXT,
    "qwen2_5_vl_text": _QWEN2_VL_TEXT,
    "gemma": {**_LLAMA, "vocab_size": 256000, "hidden_size": 3072, "intermediate_size": 24576,
              "num_hidden_layers": 28, "num_attention_heads": 16, "num_key_value_heads": 16,
              "head_dim": 256, "max_position_embeddings": 8192, "tie_word_embeddings": True,
              "attention_bias": False},
    "gemma2": {**_LLAMA, "vocab_size": 256000, "hidden_size": 2304, "intermediate_size": 9216,
               "num_hidden_layers": 26, "num_attention_heads": 8, "num_key_value_heads": 4,
               "head_dim": 256, "max_position_embeddings": 8192, "tie_word_embeddings": True,
               "attention_bias": False},
    "phi": {**_LLAMA, "vocab_size": 51200, "hidden_size": 2048, "intermediate_size": 8192,
            "num_hidden_layers": 24, "qk_layernorm": False},
    "phi3": {**_LLAMA, "vocab_size": 32064, "hidden_size": 3072, "intermediate_size": 8192,
             "max_position_embeddings": 4096},
    "stablelm": {**_LLAMA, "vocab_size": 50304, "hidden_size": 2560, "intermediate_size": 6912,
                 "num_key_value_heads": 32, "max_position_embeddings": 4096, "use_qkv_bias": False,
                 "qk_layernorm": False, "use_parallel_residual": False},
    "gpt_neox": {"vocab_size": 50432, "hidden_size": 6144, "intermediate_size": 24576,
                 "num_hidden_layers": 44, "num_attention_heads": 64,
                 "max_position_embeddings": 2048, "tie_word_embeddings": False,
                 "attention_bias": True},
    "bloom": {"vocab_size": 250880, "hidden_size": 64, "n_layer": 2, "n_head": 8,
              "tie_word_embeddings": True},
    "gpt_bigcode": {"vocab_size": 50257, "n_embd": 768, "n_layer": 12, "n_head": 12,
                    "n_inner": None, "n_positions": 1024, "multi_query": True,
                    "tie_word_embeddings": True},
    "falcon": {"vocab_size": 65024, "hidden_size": 4544, "num_hidden_layers": 32,
               "num_attention_heads": 71, "num_kv_heads": None, "ffn_hidden_size": None,
               "num_ln_in_parallel_attn": None, "new_decoder_architecture": False,
               "multi_query": True, "parallel_attn": True, "bias": False,
               "max_position_embeddings": 2048, "tie_word_embeddings": True},
}
# Old or alternative key names that the configuration classes accept (attribute_map / BC kwargs).
ALIASES: dict[str, dict[str, str]] = {
    "bloom": {"n_embed": "hidden_size", "num_attention_heads": "n_head",
              "num_hidden_layers": "n_layer"},
    "gpt_bigcode": {"hidden_size": "n_embd", "num_attention_heads": "n_head",
                    "num_hidden_layers": "n_layer", "max_position_embeddings": "n_positions"},
    "falcon": {"n_embed": "hidden_size"},
}


def with_defaults(config: Mapping[str, Any], model_type: str | None = None) -> dict[str, Any]:
    """The config with its model_type's transformers defaults filled in for missing keys."""
    model_type = model_type or config["model_type"]
    merged = dict(config)
    for alias, key in ALIASES.get(model_type, {}).items():
        if alias in merged and key not in merged:
            merged[key] = merged.pop(alias)
    return {**DEFAULTS.get(model_type, {}), **merged}


def head_dim(c: Mapping[str, Any], heads: int) -> int:
    """`head_dim` when the config sets it, else hidden_size // heads (transformers' rule)."""
    return int(c.get("head_dim") or c["hidden_size"] // heads)


def kv_heads(c: Mapping[str, Any], heads: int) -> int:
    kv = c.get("num_key_value_heads")
    return int(kv) if kv else heads


def decoder_shape(
    c: Mapping[str, Any], *, linears: tuple[LinearShape, ...], other: int, embedding: int,
    final_norm: int, lm_head_bias: bool = False, **fields: Any,
) -> ModelShape:
    """A ModelShape from the merged config `c` and one decoder layer's parts."""
    hidden, vocab = c["hidden_size"], c["vocab_size"]
    tied = bool(c.get("tie_word_embeddings"))
    lm_head = (0 if tied else vocab * hidden) + (vocab if lm_head_bias else 0)
    heads = fields.pop("heads", None) or c["num_attention_heads"]
    return ModelShape(
        model_type=c["model_type"],
        num_layers=fields.pop("num_layers", None) or c["num_hidden_layers"],
        hidden_size=hidden,
        intermediate_size=fields.pop("intermediate", None) or c["intermediate_size"],
        num_attention_heads=heads,
        num_key_value_heads=fields.pop("kv", None) or kv_heads(c, heads),
        head_dim=fields.pop("hd", None) or head_dim(c, heads),
        vocab_size=vocab,
        max_position_embeddings=int(fields.pop("max_pos", None) or c["max_position_embeddings"]),
        tie_word_embeddings=tied,
        layer_linears=linears,
        layer_other_params=other,
        embedding_params=embedding,
        lm_head_params=lm_head,
        final_norm_params=final_norm,
        **fields,
    )


def gated_mlp(hidden: int, inter: int, bias: bool = False) -> tuple[LinearShape, ...]:
    return (LinearShape("gate_proj", hidden, inter, bias),
            LinearShape("up_proj", hidden, inter, bias),
            LinearShape("down_proj", inter, hidden, bias))


def qkvo(hidden: int, heads: int, kv: int, hd: int, qkv_bias: bool, o_bias: bool,
         o_name: str = "o_proj") -> tuple[LinearShape, ...]:
    return (LinearShape("q_proj", hidden, heads * hd, qkv_bias),
            LinearShape("k_proj", hidden, kv * hd, qkv_bias),
            LinearShape("v_proj", hidden, kv * hd, qkv_bias),
            LinearShape(o_name, heads * hd, hidden, o_bias))


@register("llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "qwen2_vl_text",
          "qwen2_5_vl_text", "qwen3_vl_text", "ministral3")
def llama_like(config: Mapping[str, Any]) -> ModelShape:
    """Llama-style decoder: q/k/v/o attention, gated MLP, RMSNorm (two per layer + final).

    Qwen2 (and the Qwen2-VL text models) always have q/k/v biases; Llama takes `attention_bias`
    (all four projections) and `mlp_bias`; Qwen3 adds per-head q/k RMSNorms; Gemma 2 has four
    RMSNorms per layer; the Qwen2-VL text models ignore `head_dim`; Qwen3-VL's text model is
    Qwen3; Ministral 3 (Mistral 3's text model) is Mistral with `head_dim`.
    """
    c = with_defaults(config)
    model_type, hidden = c["model_type"], c["hidden_size"]
    heads = c["num_attention_heads"]
    kv = kv_heads(c, heads)
    qwen2_vl = model_type in {"qwen2_vl_text", "qwen2_5_vl_text"}
    qwen3 = model_type in {"qwen3", "qwen3_vl_text"}
    hd = hidden // heads if qwen2_vl else head_dim(c, heads)
    qwen2_bias = model_type == "qwen2" or qwen2_vl
    attention_bias = bool(c.get("attention_bias")) and (
        qwen3 or model_type in {"llama", "gemma", "gemma2"})
    linears = qkvo(hidden, heads, kv, hd, qwen2_bias or attention_bias, attention_bias) + gated_mlp(
        hidden, c["intermediate_size"], model_type == "llama" and bool(c.get("mlp_bias")))
    norms = (4 if model_type == "gemma2" else 2) * hidden + (2 * hd if qwen3 else 0)
    return decoder_shape(c, linears=linears, other=norms, embedding=c["vocab_size"] * hidden,
                         final_norm=hidden, kv=kv, hd=hd,
                         attention=AttentionShape(qk_norm="head" if qwen3 else ""))


@register("mixtral")
def mixtral(config: Mapping[str, Any]) -> ModelShape:
    """Mixtral: Mistral attention, a router and E experts stored as fused 3-D parameters."""
    c = with_defaults(config)
    hidden, inter, heads = c["hidden_size"], c["intermediate_size"], c["num_attention_heads"]
    kv, hd, experts = kv_heads(c, heads), head_dim(c, heads), c["num_local_experts"]
    linears = qkvo(hidden, heads, kv, hd, False, False) + (
        LinearShape("experts.gate_up_proj", hidden, 2 * inter, count=experts, fused=True),
        LinearShape("experts.down_proj", inter, hidden, count=experts, fused=True),
    )
    # transformers 4.x (modeling_mixtral.py in 4.48-4.57): MixtralBlockSparseTop2MLP's w1, w3
    # (H -> I) and w2 (I -> H) per expert, the router `gate = nn.Linear(H, E)`.
    v4_linears = qkvo(hidden, heads, kv, hd, False, False) + (
        LinearShape("w1", hidden, inter, count=experts),
        LinearShape("w3", hidden, inter, count=experts),
        LinearShape("w2", inter, hidden, count=experts),
        LinearShape("gate", hidden, experts),
    )
    return decoder_shape(c, linears=linears, other=2 * hidden + experts * hidden,
                         embedding=c["vocab_size"] * hidden, final_norm=hidden,
                         num_experts=experts, num_experts_per_tok=c["num_experts_per_tok"],
                         v4_layer_linears=v4_linears, v4_layer_other_params=2 * hidden)


@register("phi")
def phi(config: Mapping[str, Any]) -> ModelShape:
    """Phi-1.5/2: biased q/k/v/dense and fc1/fc2, one LayerNorm per layer (parallel block),
    an lm_head with bias."""
    c = with_defaults(config)
    hidden, inter, heads = c["hidden_size"], c["intermediate_size"], c["num_attention_heads"]
    kv, hd = kv_heads(c, heads), head_dim(c, heads)
    linears = qkvo(hidden, heads, kv, hd, True, True, o_name="dense") + (
        LinearShape("fc1", hidden, inter, True), LinearShape("fc2", inter, hidden, True))
    qk_norm = 4 * (hidden // heads) if c.get("qk_layernorm") else 0
    return decoder_shape(c, linears=linears, other=2 * hidden + qk_norm,
                         embedding=c["vocab_size"] * hidden, final_norm=2 * hidden,
                         lm_head_bias=True, kv=kv, hd=hd)


@register("phi3")
def phi3(config: Mapping[str, Any]) -> ModelShape:
    """Phi-3: fused qkv_proj and gate_up_proj (both nn.Linear), no biases, RMSNorm."""
    c = with_defaults(config)
    hidden, inter, heads = c["hidden_size"], c["intermediate_size"], c["num_attention_heads"]
    kv, hd = kv_heads(c, heads), head_dim(c, heads)
    linears = (LinearShape("qkv_proj", hidden, (heads + 2 * kv) * hd),
               LinearShape("o_proj", heads * hd, hidden),
               LinearShape("gate_up_proj", hidden, 2 * inter),
               LinearShape("down_proj", inter, hidden))
    return decoder_shape(c, linears=linears, other=2 * hidden, embedding=c["vocab_size"] * hidden,
                         final_norm=hidden, kv=kv, hd=hd)


@register("stablelm")
def stablelm(config: Mapping[str, Any]) -> ModelShape:
    """StableLM: Llama layout with LayerNorms (weight + bias) and optional q/k/v biases."""
    c = with_defaults(config)
    hidden, heads = c["hidden_size"], c["num_attention_heads"]
    kv, hd = kv_heads(c, heads), hidden // heads
    linears = qkvo(hidden, heads, kv, hd, bool(c.get("use_qkv_bias")), False) + gated_mlp(
        hidden, c["intermediate_size"])
    norms = (2 if c.get("use_parallel_residual") else 4) * hidden
    if c.get("qk_layernorm"):
        norms += (heads + kv) * hd  # one bias-free LayerNorm per head
    return decoder_shape(c, linears=linears, other=norms, embedding=c["vocab_size"] * hidden,
                         final_norm=2 * hidden, kv=kv, hd=hd)


@register("gpt_neox")
def gpt_neox(config: Mapping[str, Any]) -> ModelShape:
    """GPT-NeoX/Pythia: fused query_key_value, dense, dense_h_to_4h/dense_4h_to_h, LayerNorms."""
    c = with_defaults(config)
    hidden, inter, heads = c["hidden_size"], c["intermediate_size"], c["num_attention_heads"]
    attn_bias = bool(c.get("attention_bias"))
    linears = (LinearShape("query_key_value", hidden, 3 * hidden, attn_bias),
               LinearShape("dense", hidden, hidden, attn_bias),
               LinearShape("dense_h_to_4h", hidden, inter, True),
               LinearShape("dense_4h_to_h", inter, hidden, True))
    return decoder_shape(c, linears=linears, other=4 * hidden, embedding=c["vocab_size"] * hidden,
                         final_norm=2 * hidden, kv=heads, hd=hidden // heads)


@register("bloom")
def bloom(config: Mapping[str, Any]) -> ModelShape:
    """BLOOM: ALiBi (no position table), LayerNorm after the embeddings, 4x MLP, all biased."""
    c = with_defaults(config)
    hidden, heads = c["hidden_size"], c["n_head"]
    linears = (LinearShape("query_key_value", hidden, 3 * hidden, True),
               LinearShape("dense", hidden, hidden, True),
               LinearShape("dense_h_to_4h", hidden, 4 * hidden, True),
               LinearShape("dense_4h_to_h", 4 * hidden, hidden, True))
    return decoder_shape(
        c, linears=linears, other=4 * hidden, embedding=c["vocab_size"] * hidden + 2 * hidden,
        final_norm=2 * hidden, num_layers=c["n_layer"], heads=heads, intermediate=4 * hidden,
        kv=heads, hd=hidden // heads, max_pos=c.get("seq_length") or 2048,
        notes=("ALiBi positions: no learned limit; max_position_embeddings is the 2048 training "
               "length", "embedding_params include the LayerNorm after the word embeddings"))


@register("gpt_bigcode")
def gpt_bigcode(config: Mapping[str, Any]) -> ModelShape:
    """GPTBigCode (SantaCoder/StarCoder): multi-query c_attn, learned positions, two `c_proj`."""
    c = with_defaults(config)
    hidden, heads = c["n_embd"], c["n_head"]
    hd = hidden // heads
    kv = 1 if c.get("multi_query") else heads
    inner = c.get("n_inner") or 4 * hidden
    linears = (LinearShape("c_attn", hidden, hidden + 2 * kv * hd, True),
               LinearShape("c_proj", hidden, hidden, True),
               LinearShape("c_fc", hidden, inner, True),
               LinearShape("c_proj", inner, hidden, True))
    c = {**c, "hidden_size": hidden}
    return decoder_shape(
        c, linears=linears, other=4 * hidden,
        embedding=(c["vocab_size"] + c["n_positions"]) * hidden, final_norm=2 * hidden,
        num_layers=c["n_layer"], heads=heads, intermediate=inner, kv=kv, hd=hd,
        max_pos=c["n_positions"],
        notes=("embedding_params include the learned position table (wpe)",))


@register("falcon")
def falcon(config: Mapping[str, Any]) -> ModelShape:
    """Falcon: fused query_key_value (multi-query or grouped in the new architecture), parallel
    attention/MLP with one or two LayerNorms per layer, `bias` for every linear."""
    c = with_defaults(config)
    hidden, heads = c["hidden_size"], c["num_attention_heads"]
    hd, bias = hidden // heads, bool(c.get("bias"))
    new_arch = bool(c.get("new_decoder_architecture"))
    if new_arch:
        kv = c.get("num_kv_heads") or heads
    else:
        kv = 1 if c.get("multi_query") else heads
    qkv_out = (heads + 2 * kv) * hd
    ffn = c.get("ffn_hidden_size") or 4 * hidden
    linears = (LinearShape("query_key_value", hidden, qkv_out, bias),
               LinearShape("dense", hidden, hidden, bias),
               LinearShape("dense_h_to_4h", hidden, ffn, bias),
               LinearShape("dense_4h_to_h", ffn, hidden, bias))
    num_ln = c.get("num_ln_in_parallel_attn") or (2 if new_arch else 1)
    norms = 2 * hidden * (2 if not c.get("parallel_attn") else num_ln)
    return decoder_shape(c, linears=linears, other=norms, embedding=c["vocab_size"] * hidden,
                         final_norm=2 * hidden, intermediate=ffn, kv=kv, hd=hd)
