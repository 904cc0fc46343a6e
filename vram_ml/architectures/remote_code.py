"""Closed-form shapes of models that exist only as remote code (no transformers class).

- `qwen`: Qwen (v1) 1.8B-72B and Qwen-VL (the same decoder + a ViT-bigG tower and a
  cross-attention resampler when the config has `visual`), after the models' own modeling_qwen.py
  and visual.py (as published in the Hugging Face repos, e.g. Qwen-7B's mirror
  zhangningboo/Qwen-7B@ffe04dd and Qwen-VL-Chat-Int4's x1ngzai/Qwen-VL-Chat-Int4@1cd721a);
- `chatglm`: ChatGLM2/3 and GLM-4 (text), after modeling_chatglm.py (chatglm3-6b's mirror
  czk1997/chatglm3-copy@456aa87; GLM-4's in XuRui314/GLM4v-Finetune@513b75d).

transformers cannot build these, so the meta-device test does not cover them: tests sum each tree
by hand and compare with the totals the checkpoints' own weight indexes state. vram-ml never runs
their code (no trust_remote_code): the recipe and simulate refuse `REMOTE_CODE_MODEL_TYPES`, the
analytical estimator uses these shapes. Keys a config omits take the model's own configuration
class defaults (configuration_qwen.py / configuration_chatglm.py, copied below).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from vram_ml.architectures.registry import register
from vram_ml.architectures.shape import (
    LinearShape,
    ModelShape,
    UnsupportedArchitecture,
    VisionShape,
)

# model_type -> what it is; the recipe and simulate refuse these in one line.
REMOTE_CODE_MODEL_TYPES = {
    "qwen": "Qwen (v1) / Qwen-VL",
    "chatglm": "ChatGLM2/3 / GLM-4",
}
# configuration_qwen.py QWenConfig defaults (parameter-relevant keys)
_QWEN = {"vocab_size": 151936, "hidden_size": 4096, "num_hidden_layers": 32,
         "num_attention_heads": 32, "max_position_embeddings": 8192, "kv_channels": 128,
         "intermediate_size": 22016, "no_bias": True, "tie_word_embeddings": False}
# visual.py VisionTransformer keyword defaults
_QWEN_VISUAL = {"n_queries": 256, "output_dim": 512}
# visual.py: `self.positional_embedding = nn.Parameter(scale * torch.randn(256, width))`, a fixed
# 256-row table interpolated to the patch grid (get_abs_pos), whatever the image size
QWEN_VL_POSITION_ROWS = 256
# configuration_chatglm.py ChatGLMConfig defaults
_CHATGLM = {"num_layers": 28, "padded_vocab_size": 65024, "hidden_size": 4096,
            "ffn_hidden_size": 13696, "kv_channels": 128, "num_attention_heads": 32,
            "seq_length": 2048, "rmsnorm": True, "post_layer_norm": True,
            "add_bias_linear": False, "add_qkv_bias": False, "multi_query_attention": False,
            "multi_query_group_num": 1, "pre_seq_len": None, "prefix_projection": False}


def remote_code_family(model_type: str | None) -> str | None:
    """What a remote-code-only model_type is ("Qwen (v1) / Qwen-VL"), or None."""
    return REMOTE_CODE_MODEL_TYPES.get(model_type or "")


def remote_code_refusal(model: str, model_type: str | None) -> str | None:
    """The one line with which the recipe and simulate refuse a remote-code-only model."""
    family = remote_code_family(model_type)
    if family is None:
        return None
    return (f"model: {model} ({family}, model_type {model_type!r}) is remote code only, with no "
            "transformers class; the recipe and simulate never run trust_remote_code (use the "
            "analytical estimator)")


@register("qwen")
def qwen(config: Mapping[str, Any]) -> ModelShape:
    """Qwen (v1): fused c_attn (always biased), attn.c_proj, a SwiGLU MLP of two half-width
    branches w1, w2 (`intermediate_size // 2` each) and mlp.c_proj, RMSNorms, untied lm_head.

    The two `c_proj` modules are named by their parent (attn.c_proj, mlp.c_proj): peft matches
    target names as suffixes, so Qwen-VL's `attn.c_proj` reaches the attention's only and a plain
    `c_proj` both (vram_ml/published/mapping_common.lora_targets expands it the same way).
    """
    if "hidden_size" not in config and "n_embd" in config:
        raise UnsupportedArchitecture(
            "model_type 'qwen': a config with the first release's key names (n_embd, n_layer, "
            "ffn_hidden_size) is not supported; use the model's current config.json")
    c = {**_QWEN, **config}
    hidden, heads, vocab = c["hidden_size"], c["num_attention_heads"], c["vocab_size"]
    head_dim = c["kv_channels"]
    if head_dim * heads != hidden:
        raise UnsupportedArchitecture(
            f"model_type 'qwen': kv_channels x heads ({head_dim * heads}) must equal hidden_size "
            f"({hidden}); modeling_qwen.py's c_proj maps hidden_size to that width")
    branch = c["intermediate_size"] // 2  # QWenMLP: w1, w2 = Linear(hidden, intermediate // 2)
    bias = not c["no_bias"]
    linears = (LinearShape("c_attn", hidden, 3 * hidden, True),
               LinearShape("attn.c_proj", hidden, hidden, bias),
               LinearShape("w1", hidden, branch, bias),
               LinearShape("w2", hidden, branch, bias),
               LinearShape("mlp.c_proj", branch, hidden, bias))
    tied = bool(c["tie_word_embeddings"])
    vision = _qwen_visual(c["visual"], hidden) if c.get("visual") else None
    notes = ("remote code only (modeling_qwen.py): analytical estimates only; intermediate_size "
             f"is one MLP branch ({branch} = config intermediate_size {c['intermediate_size']} "
             "// 2)",)
    if vision is not None:
        notes += (f"Qwen-VL: each {vision.image_size}-px image runs "
                  f"{vision.encoder_tokens_per_image} patches through the tower; the resampler's "
                  f"{vision.fixed_image_tokens - 2} queries (+ <img>, </img>) go into the text",)
    return ModelShape(
        model_type="qwen", num_layers=c["num_hidden_layers"], hidden_size=hidden,
        intermediate_size=branch, num_attention_heads=heads, num_key_value_heads=heads,
        head_dim=head_dim, vocab_size=vocab,
        max_position_embeddings=int(c["max_position_embeddings"]), tie_word_embeddings=tied,
        layer_linears=linears, layer_other_params=2 * hidden, embedding_params=vocab * hidden,
        lm_head_params=0 if tied else vocab * hidden, final_norm_params=hidden, vision=vision,
        notes=notes)


def _qwen_visual(visual: Mapping[str, Any], text_hidden: int) -> VisionShape:
    """Qwen-VL's VisionTransformer (visual.py): bias-free patch conv, fixed position table,
    ln_pre, `layers` LayerNorm blocks (in_proj / out_proj attention, c_fc / c_proj GELU MLP), then
    the projector: a Resampler (frozen sin-cos pos_embed and learned queries, kv_proj, one
    nn.MultiheadAttention with output_dim // 128 heads, ln_q, ln_kv), ln_post and `proj`."""
    v = {**_QWEN_VISUAL, **visual}
    width, out, queries = v["width"], v["output_dim"], v["n_queries"]
    patch, image = v["patch_size"], v["image_size"]
    if out != text_hidden:
        raise UnsupportedArchitecture(
            f"model_type 'qwen': visual output_dim {out} must equal hidden_size {text_hidden}")
    mlp = int(width * v["mlp_ratio"])
    block = (4 * width + (width * 3 * width + 3 * width) + (width * width + width)
             + (width * mlp + mlp) + (mlp * width + width))
    tower = (3 * patch * patch * width + QWEN_VL_POSITION_ROWS * width + 2 * width
             + v["layers"] * block)
    kv_proj = width * out if width != out else 0
    resampler = (2 * queries * out + kv_proj + (3 * out * out + 3 * out) + (out * out + out)
                 + 4 * out)
    return VisionShape(
        kind="qwen_vl", num_layers=v["layers"], hidden_size=width, intermediate_size=mlp,
        num_attention_heads=v["heads"], patch_size=patch, image_size=image, tower_params=tower,
        projector_params=resampler + 2 * out + out * out,
        fixed_image_tokens=queries + 2,  # <img> + the resampler's queries + </img>
        encoder_tokens_per_image=(image // patch) ** 2)


@register("chatglm")
def chatglm(config: Mapping[str, Any]) -> ModelShape:
    """ChatGLM2/3, GLM-4: fused query_key_value (multi-query groups: `multi_query_group_num`
    K/V heads), dense, dense_h_to_4h (SwiGLU, 2 x ffn) and dense_4h_to_h; RMSNorm (or LayerNorm)
    x 2 per layer + final; output_layer never tied to the embedding; a P-tuning v2 prefix encoder
    when the config sets pre_seq_len."""
    if "position_encoding_2d" in config or "inner_hidden_size" in config:
        raise UnsupportedArchitecture(
            "model_type 'chatglm': the ChatGLM-6B (v1) / VisualGLM layout is not supported")
    if config.get("vision_config"):
        raise UnsupportedArchitecture(
            "model_type 'chatglm' with a vision_config (GLM-4V): its EVA2-CLIP tower has no "
            "closed-form shape here")
    c = {**_CHATGLM, **config}
    hidden, heads, head_dim = c["hidden_size"], c["num_attention_heads"], c["kv_channels"]
    vocab, ffn, layers = c["padded_vocab_size"], c["ffn_hidden_size"], c["num_layers"]
    kv = c["multi_query_group_num"] if c["multi_query_attention"] else heads
    projection = heads * head_dim
    bias = bool(c["add_bias_linear"])
    linears = (LinearShape("query_key_value", hidden, projection + 2 * kv * head_dim,
                           bias or bool(c["add_qkv_bias"])),
               LinearShape("dense", projection, hidden, bias),
               LinearShape("dense_h_to_4h", hidden, 2 * ffn, bias),
               LinearShape("dense_4h_to_h", ffn, hidden, bias))
    norm = hidden if c["rmsnorm"] else 2 * hidden  # RMSNorm: weight; LayerNorm: weight + bias
    return ModelShape(
        model_type="chatglm", num_layers=layers, hidden_size=hidden, intermediate_size=ffn,
        num_attention_heads=heads, num_key_value_heads=kv, head_dim=head_dim, vocab_size=vocab,
        max_position_embeddings=int(c["seq_length"]), tie_word_embeddings=False,
        layer_linears=linears, layer_other_params=2 * norm, embedding_params=vocab * hidden,
        lm_head_params=vocab * hidden, final_norm_params=norm if c["post_layer_norm"] else 0,
        extra_params=_prefix_encoder(c, layers, head_dim, hidden),
        notes=("remote code only (modeling_chatglm.py): analytical estimates only; the rotary "
               "table covers seq_length positions (max_position_embeddings)",))


def _prefix_encoder(c: Mapping[str, Any], layers: int, head_dim: int, hidden: int) -> int:
    """modeling_chatglm.py PrefixEncoder (P-tuning v2), built only when pre_seq_len is set."""
    if not c.get("pre_seq_len"):
        return 0
    kv_size = layers * head_dim * c["multi_query_group_num"] * 2
    if c.get("prefix_projection"):
        return (c["pre_seq_len"] * kv_size + (kv_size * hidden + hidden)
                + (hidden * kv_size + kv_size))
    return c["pre_seq_len"] * kv_size
