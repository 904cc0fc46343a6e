"""Closed-form shape builders for mixture-of-experts decoders: Qwen3-MoE, Qwen2-MoE (Qwen1.5-MoE),
GLM-4.5 (glm4_moe), MiniMax-M2, gpt-oss, Llama 4 (text), and DeepSeek V2 / V3 with MLA.

transformers 5 stores every routed expert set as fused 3-D parameters (`experts.gate_up_proj`,
`experts.down_proj`; `LinearShape.fused`), routers as bare parameters (not nn.Linear), shared
experts as ordinary nn.Linear MLPs. Layers whose MLP is dense (DeepSeek's and GLM-4.5's first
`first_k_dense_replace`, Qwen's `mlp_only_layers`, Llama 4's non-MoE layers) are LayerVariants.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from vram_ml.architectures.decoders import (
    ALIASES,
    DEFAULTS,
    decoder_shape,
    gated_mlp,
    head_dim,
    kv_heads,
    qkvo,
    with_defaults,
)
from vram_ml.architectures.decoders_dense import sliding_layers
from vram_ml.architectures.registry import register
from vram_ml.architectures.shape import AttentionShape, LayerVariant, LinearShape, ModelShape

_QWEN_MOE = {"vocab_size": 151936, "hidden_size": 2048, "num_hidden_layers": 24,
             "max_position_embeddings": 32768, "tie_word_embeddings": False,
             "decoder_sparse_step": 1, "moe_intermediate_size": 1408, "num_experts_per_tok": 4,
             "num_experts": 60, "mlp_only_layers": None}
DEFAULTS.update({
    "qwen3_moe": {**_QWEN_MOE, "intermediate_size": 6144, "num_attention_heads": 32,
                  "num_key_value_heads": 4, "head_dim": None, "attention_bias": False,
                  "moe_intermediate_size": 768, "num_experts_per_tok": 8, "num_experts": 128},
    "qwen2_moe": {**_QWEN_MOE, "intermediate_size": 5632, "num_attention_heads": 16,
                  "num_key_value_heads": 16, "shared_expert_intermediate_size": 5632,
                  "qkv_bias": True},
    "glm4_moe": {"vocab_size": 151552, "hidden_size": 4096, "intermediate_size": 10944,
                 "num_hidden_layers": 46, "num_attention_heads": 96, "num_key_value_heads": 8,
                 "head_dim": None, "max_position_embeddings": 131072,
                 "tie_word_embeddings": False, "attention_bias": False,
                 "moe_intermediate_size": 1408, "num_experts_per_tok": 8, "n_shared_experts": 1,
                 "n_routed_experts": 128, "first_k_dense_replace": 1, "use_qk_norm": False},
    "minimax_m2": {"vocab_size": 200064, "hidden_size": 3072, "intermediate_size": 1536,
                   "num_hidden_layers": 62, "num_attention_heads": 48, "num_key_value_heads": 8,
                   "head_dim": 128, "max_position_embeddings": 196608,
                   "tie_word_embeddings": False, "num_experts_per_tok": 8,
                   "num_local_experts": 256},
    "gpt_oss": {"num_hidden_layers": 36, "num_local_experts": 128, "vocab_size": 201088,
                "hidden_size": 2880, "intermediate_size": 2880, "head_dim": 64,
                "num_attention_heads": 64, "num_key_value_heads": 8, "sliding_window": 128,
                "tie_word_embeddings": False, "max_position_embeddings": 131072,
                "num_experts_per_tok": 4, "layer_types": None, "attention_bias": True},
    "llama4_text": {"vocab_size": 202048, "hidden_size": 5120, "intermediate_size": 8192,
                    "intermediate_size_mlp": 16384, "num_hidden_layers": 48,
                    "num_attention_heads": 40, "num_key_value_heads": 8, "head_dim": 128,
                    "max_position_embeddings": 131072, "tie_word_embeddings": False,
                    "num_experts_per_tok": 1, "num_local_experts": 16, "moe_layers": None,
                    "interleave_moe_layer_step": 1, "attention_chunk_size": 8192,
                    "no_rope_layers": None, "no_rope_layer_interval": 4, "layer_types": None,
                    "attention_bias": False},
})

# transformers' attribute_map names for the expert count: a config saved by transformers
# (`to_dict`, what a hub fetch returns) spells it the other way
ALIASES.update({
    **{t: {"num_local_experts": "num_experts"} for t in ("qwen3_moe", "qwen3_vl_moe_text")},
    **{t: {"num_experts": "num_local_experts"} for t in ("minimax_m2", "gpt_oss", "mixtral")},
    **{t: {"num_local_experts": "n_routed_experts"} for t in ("glm4_moe", "deepseek_v3")},
    "deepseek_v2": {"num_experts": "n_routed_experts"},
})


def fused_experts(hidden: int, inter: int, experts: int, bias: bool = False,
                  gated: bool = True) -> tuple[LinearShape, ...]:
    """The routed experts as transformers 5 stores them: gate and up fused, one 3-D tensor each."""
    up = "experts.gate_up_proj" if gated else "experts.up_proj"
    return (LinearShape(up, hidden, (2 if gated else 1) * inter, bias, experts, fused=True),
            LinearShape("experts.down_proj", inter, hidden, bias, experts, fused=True))


def _dense_variant(indices: list[int], attention: tuple[LinearShape, ...], hidden: int, inter: int,
                   other: int) -> tuple[LayerVariant, ...]:
    if not indices:
        return ()
    return (LayerVariant(tuple(indices), attention + gated_mlp(hidden, inter), other),)


@register("qwen3_moe", "qwen2_moe", "qwen3_vl_moe_text")
def qwen_moe(config: Mapping[str, Any]) -> ModelShape:
    """Qwen3-MoE (per-head q/k RMSNorms, no shared expert) and Qwen2-MoE (q/k/v biases, a shared
    expert MLP gated by a 1-output nn.Linear). A layer is dense when it is in `mlp_only_layers`
    or off the `decoder_sparse_step` grid; the router is a bare [E, H] parameter."""
    c = with_defaults(config)
    qwen3 = c["model_type"] in ("qwen3_moe", "qwen3_vl_moe_text")
    hidden, heads, layers = c["hidden_size"], c["num_attention_heads"], c["num_hidden_layers"]
    kv, hd, experts = kv_heads(c, heads), head_dim(c, heads), c["num_experts"]
    bias = bool(c.get("attention_bias")) if qwen3 else bool(c.get("qkv_bias"))
    attention = qkvo(hidden, heads, kv, hd, bias, qwen3 and bias)
    norms = 2 * hidden + (2 * hd if qwen3 else 0)
    moe = attention + fused_experts(hidden, c["moe_intermediate_size"], experts)
    if not qwen3:
        moe += (*gated_mlp(hidden, c["shared_expert_intermediate_size"]),
                LinearShape("shared_expert_gate", hidden, 1))
    only = set(c.get("mlp_only_layers") or ())
    step = c.get("decoder_sparse_step") or 1
    dense = [i for i in range(layers) if i in only or not (experts > 0 and (i + 1) % step == 0)]
    window = c.get("sliding_window") if c.get("use_sliding_window") else 0
    return decoder_shape(
        c, linears=moe, other=norms + experts * hidden, embedding=c["vocab_size"] * hidden,
        final_norm=hidden, kv=kv, hd=hd, num_experts=experts,
        num_experts_per_tok=c["num_experts_per_tok"],
        layer_variants=_dense_variant(dense, attention, hidden, c["intermediate_size"], norms),
        attention=AttentionShape(qk_norm="head" if qwen3 else "",
                                 sliding_layers=layers if window else 0,
                                 sliding_window=window or 0))


@register("glm4_moe")
def glm4_moe(config: Mapping[str, Any]) -> ModelShape:
    """GLM-4.5: q/k/v biases (`attention_bias`), optional per-head q/k norms, the first
    `first_k_dense_replace` layers dense, then fused experts + shared experts and a sigmoid
    router whose [E, H] weight stays fp32 (plus an fp32 e_score_correction_bias buffer)."""
    c = with_defaults(config)
    return deepseek_style_moe(c, qkvo(
        c["hidden_size"], c["num_attention_heads"], kv_heads(c, c["num_attention_heads"]),
        head_dim(c, c["num_attention_heads"]), bool(c.get("attention_bias")), False),
        qk_norm=bool(c.get("use_qk_norm")))


def deepseek_style_moe(c: Mapping[str, Any], attention_linears: tuple[LinearShape, ...],
                       attention_norms: int = 0, qk_norm: bool = False,
                       **fields: Any) -> ModelShape:
    """Dense first layers, then routed (fused) + shared experts with an fp32 router (DeepSeek
    V2/V3, GLM-4.5)."""
    hidden, heads, layers = c["hidden_size"], c["num_attention_heads"], c["num_hidden_layers"]
    hd = head_dim(c, heads)
    experts, shared = c["n_routed_experts"], c.get("n_shared_experts") or 0
    moe_inter = c["moe_intermediate_size"]
    norms = 2 * hidden + attention_norms + (2 * hd if qk_norm else 0)
    moe = attention_linears + fused_experts(hidden, moe_inter, experts)
    if shared:
        moe += gated_mlp(hidden, moe_inter * shared)  # shared_experts.{gate,up,down}_proj
    first_dense = min(layers, c.get("first_k_dense_replace") or 0)
    moe_layers = layers - first_dense
    fields.setdefault("attention", AttentionShape(qk_norm="head" if qk_norm else ""))
    return decoder_shape(
        c, linears=moe, other=norms + experts * hidden, embedding=c["vocab_size"] * hidden,
        final_norm=hidden, num_experts=experts, num_experts_per_tok=c["num_experts_per_tok"],
        layer_variants=_dense_variant(list(range(first_dense)), attention_linears, hidden,
                                      c["intermediate_size"], norms),
        fp32_params=moe_layers * experts * hidden, **fields)


@register("minimax_m2")
def minimax_m2(config: Mapping[str, Any]) -> ModelShape:
    """MiniMax-M2: q/k RMSNorms over all heads, fused experts, a sigmoid router (bare [E, H]
    parameter) with an e_score_correction_bias buffer; every layer is MoE."""
    c = with_defaults(config)
    hidden, heads = c["hidden_size"], c["num_attention_heads"]
    kv, hd, experts = kv_heads(c, heads), head_dim(c, heads), c["num_local_experts"]
    linears = qkvo(hidden, heads, kv, hd, False, False) + fused_experts(
        hidden, c["intermediate_size"], experts)
    return decoder_shape(
        c, linears=linears, other=2 * hidden + (heads + kv) * hd + experts * hidden,
        embedding=c["vocab_size"] * hidden, final_norm=hidden, kv=kv, hd=hd,
        num_experts=experts, num_experts_per_tok=c["num_experts_per_tok"],
        attention=AttentionShape(qk_norm="full"))


@register("gpt_oss")
def gpt_oss(config: Mapping[str, Any]) -> ModelShape:
    """gpt-oss: biased q/k/v/o, a learned sink logit per head, sliding-window layers alternating
    with full ones, experts with biases (gate and up interleaved in one [E, H, 2I] tensor), a
    biased router; no SDPA path in transformers (`_supports_sdpa = False`), and its norms are
    `_keep_in_fp32_modules`."""
    c = with_defaults(config)
    hidden, heads, layers = c["hidden_size"], c["num_attention_heads"], c["num_hidden_layers"]
    kv, hd, experts = kv_heads(c, heads), head_dim(c, heads), c["num_local_experts"]
    bias = bool(c.get("attention_bias"))
    linears = qkvo(hidden, heads, kv, hd, bias, bias) + fused_experts(
        hidden, c["intermediate_size"], experts, bias=True)
    types = c.get("layer_types") or ["sliding_attention" if bool((i + 1) % 2) else
                                     "full_attention" for i in range(layers)]
    attention = sliding_layers({**c, "layer_types": types})
    return decoder_shape(
        c, linears=linears, other=2 * hidden + heads + experts * (hidden + 1),
        embedding=c["vocab_size"] * hidden, final_norm=hidden, kv=kv, hd=hd,
        num_experts=experts, num_experts_per_tok=c["num_experts_per_tok"],
        fp32_params=(2 * layers + 1) * hidden,
        attention=AttentionShape(sliding_layers=attention.sliding_layers,
                                 sliding_window=attention.sliding_window, sinks=True, sdpa=False),
        notes=("gpt-oss ships MXFP4 experts, which transformers cannot train: fine-tuning loads "
               "them dequantized (Mxfp4Config(dequantize=True)), so weights are counted in the "
               "compute dtype",))


@register("llama4_text")
def llama4_text(config: Mapping[str, Any]) -> ModelShape:
    """Llama 4 text: MoE layers (`moe_layers`, else every `interleave_moe_layer_step`-th) hold
    fused experts that every token passes through (scaled by its sigmoid router score), a
    shared expert and an nn.Linear router; other layers a dense MLP of `intermediate_size_mlp`.
    RoPE layers attend within `attention_chunk_size` chunks, every 4th layer is NoPE."""
    c = with_defaults(config)
    hidden, heads, layers = c["hidden_size"], c["num_attention_heads"], c["num_hidden_layers"]
    kv, hd, experts = kv_heads(c, heads), head_dim(c, heads), c["num_local_experts"]
    inter = c["intermediate_size"]
    attention = qkvo(hidden, heads, kv, hd, bool(c.get("attention_bias")),
                     bool(c.get("attention_bias")))
    step = c.get("interleave_moe_layer_step") or 1
    moe_layers = c.get("moe_layers")
    moe_layers = set(moe_layers if moe_layers is not None else range(step - 1, layers, step))
    moe = attention + fused_experts(hidden, inter, experts) + gated_mlp(hidden, inter)
    dense = [i for i in range(layers) if i not in moe_layers]
    rope = c.get("no_rope_layers") or [int((i + 1) % (c.get("no_rope_layer_interval") or 4) != 0)
                                       for i in range(layers)]
    chunked = sum(1 for flag in rope[:layers] if flag)
    return decoder_shape(
        c, linears=moe, other=2 * hidden + experts * hidden, embedding=c["vocab_size"] * hidden,
        final_norm=hidden, kv=kv, hd=hd, num_experts=experts,
        num_experts_per_tok=c["num_experts_per_tok"], moe_routing="all",
        layer_variants=_dense_variant(dense, attention, hidden, c["intermediate_size_mlp"],
                                      2 * hidden),
        attention=AttentionShape(sliding_layers=chunked,
                                 sliding_window=c.get("attention_chunk_size") or 0))
