"""Closed-form shape builders for the newer vision-language models: Gemma 3 (SigLIP + pooled
projector), Mistral 3 / Mistral-Small 3.1 (Pixtral + patch merger), Qwen3-VL (dense and MoE text;
learned position embedding, DeepStack mergers) and GLM-4.1V (glm4v).

Conventions as in vision.py: the text part is built by its own text builder, the composite's
top-level `tie_word_embeddings` (with the composite class's default when absent) decides tying,
sub-configs missing from a config take the composite class's defaults.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from vram_ml.architectures import decoders, decoders_moe
from vram_ml.architectures.decoders import DEFAULTS, gated_mlp, kv_heads, qkvo
from vram_ml.architectures.registry import register, shape_from_config
from vram_ml.architectures.shape import LinearShape, ModelShape, VisionShape
from vram_ml.architectures.vision import _qwen_vl_text, _sub, _vit, _with_vision

DEFAULTS.update({
    "qwen3_vl_text": {"vocab_size": 151936, "hidden_size": 4096, "intermediate_size": 22016,
                      "num_hidden_layers": 32, "num_attention_heads": 32,
                      "num_key_value_heads": 32, "head_dim": 128,
                      "max_position_embeddings": 128000, "attention_bias": False},
    "qwen3_vl_moe_text": {**decoders_moe.DEFAULTS["qwen2_moe"], "max_position_embeddings": 128000,
                          "tie_word_embeddings": True, "attention_bias": False,
                          "head_dim": None},
    "ministral3": {"vocab_size": 131072, "hidden_size": 4096, "intermediate_size": 14336,
                   "num_hidden_layers": 34, "num_attention_heads": 32, "num_key_value_heads": 8,
                   "head_dim": 128, "max_position_embeddings": 262144,
                   "tie_word_embeddings": False},
    "glm4v_text": {"vocab_size": 151552, "hidden_size": 4096, "intermediate_size": 13696,
                   "num_hidden_layers": 40, "num_attention_heads": 32, "num_key_value_heads": 2,
                   "max_position_embeddings": 32768, "tie_word_embeddings": False},
})
_PIXTRAL = {"hidden_size": 1024, "intermediate_size": 4096, "num_hidden_layers": 24,
            "num_attention_heads": 16, "num_channels": 3, "image_size": 1024, "patch_size": 16}
# Mistral3Config's sub-config init_kwargs (used when the config has no text / vision config)
_MISTRAL3_TEXT = {"head_dim": 128, "hidden_size": 5120, "intermediate_size": 32768,
                  "max_position_embeddings": 131072, "num_attention_heads": 32,
                  "num_hidden_layers": 40, "num_key_value_heads": 8, "vocab_size": 131072}
_MISTRAL3_VISION = {"intermediate_size": 4096, "hidden_size": 1024, "patch_size": 14,
                    "image_size": 1540, "num_hidden_layers": 24, "num_attention_heads": 16}
_QWEN3_VL_VISION = {"depth": 27, "hidden_size": 1152, "intermediate_size": 4304, "num_heads": 16,
                    "in_channels": 3, "patch_size": 16, "spatial_merge_size": 2,
                    "temporal_patch_size": 2, "out_hidden_size": 3584,
                    "num_position_embeddings": 2304, "deepstack_visual_indexes": [8, 16, 24]}
_GLM4V_VISION = {"depth": 24, "hidden_size": 1536, "attention_bias": False, "num_heads": 12,
                 "in_channels": 3, "image_size": 336, "patch_size": 14, "spatial_merge_size": 2,
                 "temporal_patch_size": 2, "out_hidden_size": 4096, "intermediate_size": 13696}


@register("glm4v_text")
def glm4v_text(config: Mapping[str, Any]) -> ModelShape:
    """GLM-4.1V's text model: q/k/v with bias, o without, a fused gate_up_proj nn.Linear, four
    RMSNorms per layer (input, post-attention, post-self-attn, post-MLP); head_dim = H / heads."""
    c = decoders.with_defaults(config)
    hidden, heads, inter = c["hidden_size"], c["num_attention_heads"], c["intermediate_size"]
    kv, hd = kv_heads(c, heads), hidden // heads
    linears = qkvo(hidden, heads, kv, hd, True, False) + (
        LinearShape("gate_up_proj", hidden, 2 * inter), LinearShape("down_proj", inter, hidden))
    return decoders.decoder_shape(c, linears=linears, other=4 * hidden,
                                  embedding=c["vocab_size"] * hidden, final_norm=hidden,
                                  kv=kv, hd=hd)


def _tied(config: Mapping[str, Any], default: bool) -> bool:
    value = config.get("tie_word_embeddings")
    return default if value is None else bool(value)


@register("gemma3", vision=True)
def gemma3(config: Mapping[str, Any]) -> ModelShape:
    """Gemma 3 (4B-27B): a SigLIP tower without its pooling head, then average pooling to
    `mm_tokens_per_image` (256) and an RMSNorm + [Hv, H] projection weight; Gemma 3 text model.
    Tied head by default (Gemma3Config)."""
    text = shape_from_config(_sub(config, "text_config", "gemma3_text"))
    vision = _sub(config, "vision_config", "siglip_vision_model")
    v, tower, patches = _vit(vision, "siglip_vision_model")
    tokens = config.get("mm_tokens_per_image") or 256
    hv = v["hidden_size"]
    return _with_vision(text, config, _tied(config, True), VisionShape(
        kind="gemma3", num_layers=v["num_hidden_layers"], hidden_size=hv,
        intermediate_size=v["intermediate_size"], num_attention_heads=v["num_attention_heads"],
        patch_size=v["patch_size"], image_size=v["image_size"], tower_params=tower,
        projector_params=hv * text.hidden_size + hv, fixed_image_tokens=tokens,
        encoder_tokens_per_image=patches, **_vit_block(hv, v["intermediate_size"])),
        notes=(f"an image is {patches} SigLIP patches pooled to {tokens} tokens (+ <boi>, <eoi> "
               "and two newline tokens); pan-and-scan crops are off (processor default)",))


def _vit_block(h: int, inter: int) -> dict[str, Any]:
    linears = (*qkvo(h, 1, 1, h, True, True, "out_proj"), LinearShape("fc1", h, inter, True),
               LinearShape("fc2", inter, h, True))
    return {"layer_linears": linears, "layer_params": sum(lin.params for lin in linears) + 4 * h}


@register("mistral3", vision=True)
def mistral3(config: Mapping[str, Any]) -> ModelShape:
    """Mistral 3 (Mistral-Small 3.1, Ministral 3): a Pixtral tower (RMSNorms, gated MLP, 2-D
    RoPE, no biases), a projector of RMSNorm + 2x2 patch merger + two linears; a Mistral or
    Ministral-3 text model. Mistral3Config ties the head by default: a config without a top-level
    `tie_word_embeddings` builds a tied model (released checkpoints may ship a separate head)."""
    text = shape_from_config(_sub(config, "text_config", "mistral", _MISTRAL3_TEXT))
    v = {**_PIXTRAL, **_sub(config, "vision_config", "pixtral", _MISTRAL3_VISION)}
    h, inter, p = v["hidden_size"], v["intermediate_size"], v["patch_size"]
    merge = config.get("spatial_merge_size") or 2
    layer = qkvo(h, 1, 1, h, False, False) + gated_mlp(h, inter)
    block = sum(lin.params for lin in layer) + 2 * h
    tower = v["num_channels"] * p * p * h + h + v["num_hidden_layers"] * block
    feature_layer = config.get("vision_feature_layer", -1)
    layers_in = 1 if isinstance(feature_layer, int) else len(feature_layer)
    th, bias = text.hidden_size, int(bool(config.get("multimodal_projector_bias", False)))
    projector = (h + h * merge * merge * h + (h * layers_in * th + bias * th)
                 + (th * th + bias * th))
    tied, notes = _tied(config, True), ()
    if tied and not text.tie_word_embeddings:
        notes = ("tied as transformers builds it from this config (Mistral3Config's "
                 "tie_word_embeddings defaults to True, the text model's to False); a checkpoint "
                 f"with its own lm_head loads untied: {text.vocab_size * th:,} parameters more",)
    return _with_vision(text, config, tied, VisionShape(
        kind="pixtral", num_layers=v["num_hidden_layers"], hidden_size=h, intermediate_size=inter,
        num_attention_heads=v["num_attention_heads"], patch_size=p, image_size=v["image_size"],
        tower_params=tower, projector_params=projector, spatial_merge_size=merge,
        image_rule="pixtral", default_image_size=v["image_size"], layer_linears=layer,
        layer_params=block), notes=notes)


def _qwen3_vl_block(h: int, inter: int) -> tuple[tuple[LinearShape, ...], int]:
    linears = (LinearShape("qkv", h, 3 * h, True), LinearShape("proj", h, h, True),
               LinearShape("linear_fc1", h, inter, True), LinearShape("linear_fc2", inter, h, True))
    return linears, sum(lin.params for lin in linears) + 4 * h  # two LayerNorms


@register("qwen3_vl", "qwen3_vl_moe", vision=True)
def qwen3_vl(config: Mapping[str, Any]) -> ModelShape:
    """Qwen3-VL: a dynamic-resolution ViT (3-D patch conv, learned position table interpolated
    to the grid, LayerNorm blocks with a plain MLP), the 2x2 merger into the text hidden size
    (the projector) and one DeepStack merger per `deepstack_visual_indexes` whose features are
    added to the first decoder layers' hidden states; Qwen3 or Qwen3-MoE text."""
    moe = config["model_type"] == "qwen3_vl_moe"
    text, _ = _qwen_vl_text(config, "qwen3_vl_moe_text" if moe else "qwen3_vl_text")
    v = {**_QWEN3_VL_VISION, **(config.get("vision_config") or {})}
    h, inter, p = v["hidden_size"], v["intermediate_size"], v["patch_size"]
    t = v["temporal_patch_size"]
    merge, out = v["spatial_merge_size"], v["out_hidden_size"]
    wide = h * merge * merge
    merger = 2 * h + (wide * wide + wide) + (wide * out + out)
    mergers = len(v["deepstack_visual_indexes"])
    outer = (LinearShape("linear_fc1", wide, wide, True, count=mergers),
             LinearShape("linear_fc2", wide, out, True, count=mergers))
    deepstack = mergers * 2 * wide + sum(lin.params for lin in outer)
    linears, block = _qwen3_vl_block(h, inter)
    tower = (v["in_channels"] * t * p * p * h + h + v["num_position_embeddings"] * h
             + v["depth"] * block + deepstack)
    return _with_vision(text, config, _tied(config, False), VisionShape(
        kind="qwen3_vl", num_layers=v["depth"], hidden_size=h, intermediate_size=inter,
        num_attention_heads=v["num_heads"], patch_size=p, image_size=0, tower_params=tower,
        projector_params=merger, spatial_merge_size=merge, temporal_patch_size=t,
        dynamic_resolution=True, image_rule="qwen", layer_linears=linears, layer_params=block,
        outer_linears=outer, hooked_when_checkpointed=False))


@register("glm4v", vision=True)
def glm4v(config: Mapping[str, Any]) -> ModelShape:
    """GLM-4.1V: a dynamic-resolution ViT (3-D patch conv, a learned position table, RMSNorm
    blocks with a bias-free SwiGLU MLP of width `out_hidden_size`), a 2x2 conv downsample into
    `out_hidden_size`, then the merger (projection, LayerNorm, SwiGLU of `intermediate_size`)."""
    text = shape_from_config(_sub(config, "text_config", "glm4v_text"))
    notes = ()
    if config.get("text_config") is None and "hidden_size" in config:
        notes = ("the text keys are at the config's top level, which transformers 5.24's "
                 "Glm4vConfig ignores: the text model takes Glm4vTextConfig's defaults",)
    v = {**_GLM4V_VISION, **(config.get("vision_config") or {})}
    h, p, t = v["hidden_size"], v["patch_size"], v["temporal_patch_size"]
    merge = v["spatial_merge_size"]
    out, context = v["out_hidden_size"], v["intermediate_size"]
    bias = bool(v.get("attention_bias"))
    linears = (LinearShape("qkv", h, 3 * h, bias), LinearShape("proj", h, h)) + gated_mlp(h, out)
    block = sum(lin.params for lin in linears) + 2 * h
    positions = (v["image_size"] // p) ** 2
    tower = (positions * h + v["in_channels"] * t * p * p * h + h + v["depth"] * block
             + 2 * h + (h * merge * merge * out + out))  # 2 RMSNorms, the downsample conv
    merger = (out * out) + 2 * out + 3 * out * context
    return _with_vision(text, config, _tied(config, False), VisionShape(
        kind="glm4v", num_layers=v["depth"], hidden_size=h, intermediate_size=out,
        num_attention_heads=v["num_heads"], patch_size=p, image_size=0, tower_params=tower,
        projector_params=merger, spatial_merge_size=merge, temporal_patch_size=t,
        dynamic_resolution=True, image_rule="qwen", layer_linears=linears, layer_params=block,
        hooked_when_checkpointed=False), notes=notes)



# Llama4VisionConfig's defaults (configuration_llama4.py), parameter-relevant keys only
_LLAMA4_VISION = {"hidden_size": 768, "num_hidden_layers": 34, "num_attention_heads": 16,
                  "num_channels": 3, "intermediate_size": 5632, "vision_output_dim": 7680,
                  "image_size": 448, "patch_size": 14, "pixel_shuffle_ratio": 0.5,
                  "projector_input_dim": 4096, "projector_output_dim": 4096}


@register("llama4", vision=True)
def llama4(config: Mapping[str, Any]) -> ModelShape:
    """Llama 4 (Scout, Maverick) as its config.json ships it (modeling_llama4.py): the
    llama4_text model; a ViT of an unfold + bias-free patch linear, class token, learned
    positions, pre / post LayerNorms and LayerNorm blocks (biased q/k/v/o, GELU fc1/fc2); inside
    the tower a pixel-shuffle MLP (two bias-free linears); one bias-free projector linear.
    Llama4Config does not tie the head. Images become `image_size` tiles (image_geometry)."""
    text = shape_from_config(_sub(config, "text_config", "llama4_text"))
    v = {**_LLAMA4_VISION, **_sub(config, "vision_config", "llama4_vision_model")}
    h, inter, p = v["hidden_size"], v["intermediate_size"], v["patch_size"]
    positions = (v["image_size"] // p) ** 2 + 1
    layer = qkvo(h, 1, 1, h, True, True) + (LinearShape("fc1", h, inter, True),
                                             LinearShape("fc2", inter, h, True))
    block = sum(lin.params for lin in layer) + 4 * h
    adapter = inter * v["projector_input_dim"] + v["projector_output_dim"] ** 2
    tower = (v["num_channels"] * p * p * h + h + positions * h + 4 * h
             + v["num_hidden_layers"] * block + adapter)
    ratio = v["pixel_shuffle_ratio"]
    per_tile = int((positions - 1) * ratio * ratio)
    return _with_vision(text, config, _tied(config, False), VisionShape(
        kind="llama4", num_layers=v["num_hidden_layers"], hidden_size=h, intermediate_size=inter,
        num_attention_heads=v["num_attention_heads"], patch_size=p, image_size=v["image_size"],
        tower_params=tower, projector_params=v["vision_output_dim"] * text.hidden_size,
        fixed_image_tokens=per_tile, encoder_tokens_per_image=positions, image_rule="llama4",
        layer_linears=layer, layer_params=block), notes=(
        f"an image is split into up to 4 x 4 {v['image_size']}-px tiles plus one global view "
        f"(processor default max_patches 16); each adds {per_tile} tokens",))
