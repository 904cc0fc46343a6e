"""Closed-form shape builders for DeepSeek V2 / V3 (and R1): multi-head latent attention (MLA) and
DeepSeek-MoE (dense first layers, fused routed experts, shared experts, an fp32 router).

MLA in transformers 5.24 (modeling_deepseek_v3.py DeepseekV3Attention): queries through a
low-rank `q_a_proj` -> RMSNorm -> `q_b_proj` (or one `q_proj` when `q_lora_rank` is None, as in
V2-Lite), keys and values through `kv_a_proj_with_mqa` (the latent plus one shared rope key) ->
RMSNorm -> `kv_b_proj`, expanded to every head before attention (`expand_kv`). Multi-token
prediction layers (`num_nextn_predict_layers`) are not built by transformers' ForCausalLM.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from vram_ml.architectures.decoders import DEFAULTS, with_defaults
from vram_ml.architectures.decoders_moe import deepseek_style_moe
from vram_ml.architectures.registry import register
from vram_ml.architectures.shape import AttentionShape, LinearShape, ModelShape

_MLA = {"kv_lora_rank": 512, "q_lora_rank": 1536, "qk_nope_head_dim": 128, "qk_rope_head_dim": 64,
        "v_head_dim": 128, "attention_bias": False, "tie_word_embeddings": False}
DEFAULTS.update({
    "deepseek_v2": {**_MLA, "vocab_size": 102400, "hidden_size": 4096, "intermediate_size": 11008,
                    "num_hidden_layers": 32, "num_attention_heads": 32,
                    "num_key_value_heads": None, "max_position_embeddings": 2048,
                    "first_k_dense_replace": 0, "n_routed_experts": 64, "n_shared_experts": 2,
                    "num_experts_per_tok": None, "moe_intermediate_size": 1407},
    "deepseek_v3": {**_MLA, "vocab_size": 129280, "hidden_size": 7168, "intermediate_size": 18432,
                    "moe_intermediate_size": 2048, "num_hidden_layers": 61,
                    "num_attention_heads": 128, "num_key_value_heads": 128,
                    "n_shared_experts": 1, "n_routed_experts": 256, "num_experts_per_tok": 8,
                    "first_k_dense_replace": 3, "max_position_embeddings": 4096},
})


def mla_linears(c: Mapping[str, Any]) -> tuple[tuple[LinearShape, ...], int, AttentionShape]:
    """MLA's linears, its norms' parameters, and its AttentionShape."""
    hidden, heads = c["hidden_size"], c["num_attention_heads"]
    nope, rope, v = c["qk_nope_head_dim"], c["qk_rope_head_dim"], c["v_head_dim"]
    kv_rank, q_rank = c["kv_lora_rank"], c.get("q_lora_rank")
    bias, qk = bool(c.get("attention_bias")), nope + rope
    if q_rank:
        query = (LinearShape("q_a_proj", hidden, q_rank, bias),
                 LinearShape("q_b_proj", q_rank, heads * qk))
    else:
        query = (LinearShape("q_proj", hidden, heads * qk),)
    linears = query + (LinearShape("kv_a_proj_with_mqa", hidden, kv_rank + rope, bias),
                       LinearShape("kv_b_proj", kv_rank, heads * (nope + v)),
                       LinearShape("o_proj", heads * v, hidden, bias))
    attention = AttentionShape(qk_head_dim=qk, v_head_dim=v, kv_lora_rank=kv_rank,
                               q_lora_rank=q_rank or 0)
    return linears, kv_rank + (q_rank or 0), attention


@register("deepseek_v2", "deepseek_v3")
def deepseek(config: Mapping[str, Any]) -> ModelShape:
    """DeepSeek V2 (softmax router) / V3 and R1 (sigmoid router with correction bias): MLA, the
    first `first_k_dense_replace` layers dense, the rest routed + shared experts."""
    c = with_defaults(config)
    heads = c["num_attention_heads"]
    linears, norms, attention = mla_linears(c)
    return deepseek_style_moe(
        {**c, "head_dim": c["qk_rope_head_dim"]}, linears, attention_norms=norms,
        attention=attention, kv=heads, hd=attention.qk_head_dim)
