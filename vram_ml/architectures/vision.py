"""Closed-form shape builders for vision-language models.

A VLM is its language model (built by the decoder builder of its text model_type) plus a
VisionShape: the tower, the projector that maps image features into the text hidden size, and
how many tokens one image adds. Sub-configs follow transformers 5: a missing sub-config takes the
composite class's `init_kwargs`, a present one the defaults of its own configuration class.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from vram_ml.architectures.decoders import gated_mlp, qkvo
from vram_ml.architectures.registry import register, shape_from_config
from vram_ml.architectures.shape import LinearShape, ModelShape, VisionShape

# transformers 5.x defaults of the vision configuration classes (parameter-relevant keys only).
_VIT_DEFAULTS: dict[str, dict[str, Any]] = {
    "clip_vision_model": {"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12,
                          "num_attention_heads": 12, "num_channels": 3, "image_size": 224,
                          "patch_size": 32},
    "siglip_vision_model": {"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12,
                            "num_attention_heads": 12, "num_channels": 3, "image_size": 224,
                            "patch_size": 16, "vision_use_head": True},
    "idefics3_vision": {"hidden_size": 1152, "intermediate_size": 3072, "num_hidden_layers": 12,
                        "num_attention_heads": 16, "num_channels": 3, "image_size": 224,
                        "patch_size": 32},
}
# What LLaVA / PaliGemma build when their config has no vision_config or text_config at all.
_LLAVA_VISION = {"intermediate_size": 4096, "hidden_size": 1024, "patch_size": 14,
                 "image_size": 336, "num_hidden_layers": 24, "num_attention_heads": 16}
_PALIGEMMA_VISION = {"intermediate_size": 4096, "hidden_size": 1152, "patch_size": 14,
                     "image_size": 224, "num_hidden_layers": 27, "num_attention_heads": 16,
                     "vision_use_head": False}
_PALIGEMMA_TEXT = {"hidden_size": 2048, "num_hidden_layers": 18, "intermediate_size": 16384,
                   "num_attention_heads": 8, "num_key_value_heads": 1, "vocab_size": 257152}
_QWEN2_VL_VISION = {"depth": 32, "embed_dim": 1280, "hidden_size": 3584, "mlp_ratio": 4,
                    "num_heads": 16, "in_channels": 3, "patch_size": 14, "spatial_merge_size": 2,
                    "temporal_patch_size": 2}
_QWEN2_5_VL_VISION = {"depth": 32, "hidden_size": 3584, "intermediate_size": 3420, "num_heads": 16,
                      "in_channels": 3, "patch_size": 14, "spatial_merge_size": 2,
                      "temporal_patch_size": 2, "out_hidden_size": 3584}
_MLLAMA_TEXT = {"vocab_size": 128256, "hidden_size": 4096, "num_hidden_layers": 40,
                "num_attention_heads": 32, "num_key_value_heads": 8, "intermediate_size": 14336,
                "max_position_embeddings": 131072, "cross_attention_layers": None}
_MLLAMA_VISION = {"hidden_size": 1280, "num_hidden_layers": 32, "num_global_layers": 8,
                  "attention_heads": 16, "num_channels": 3, "intermediate_size": 5120,
                  "vision_output_dim": 7680, "image_size": 448, "patch_size": 14,
                  "max_num_tiles": 4, "supported_aspect_ratios": None}


def _sub(config: Mapping[str, Any], key: str, model_type: str,
         when_missing: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """A sub-config dict with its model_type set (transformers' SubConfigSpec rules)."""
    sub = config.get(key)
    sub = dict(when_missing or {}) if sub is None else dict(sub)
    sub.setdefault("model_type", model_type)
    return sub


def _vit_block(h: int, inter: int) -> tuple[tuple[LinearShape, ...], int]:
    """A CLIP / SigLIP / Idefics3 encoder layer: (its linears, its parameters with 2 norms)."""
    linears = (*qkvo(h, 1, 1, h, True, True, "out_proj"), LinearShape("fc1", h, inter, True),
               LinearShape("fc2", inter, h, True))
    return linears, sum(lin.params for lin in linears) + 4 * h


def _vit(vision: Mapping[str, Any], kind: str) -> tuple[dict[str, Any], int, int]:
    """A CLIP/SigLIP-style tower: (merged config, parameters, patches per image)."""
    v = {**_VIT_DEFAULTS[kind], **vision}
    h, inter, p = v["hidden_size"], v["intermediate_size"], v["patch_size"]
    patches = (v["image_size"] // p) ** 2
    layer = _vit_block(h, inter)[1]
    conv = v["num_channels"] * p * p * h
    if kind == "clip_vision_model":  # class token, bias-free conv, pre and post LayerNorm
        embeddings, norms = h + conv + (patches + 1) * h, 4 * h
    else:  # SigLIP / Idefics3: biased conv, no class token, post LayerNorm only
        embeddings, norms = conv + h + patches * h, 2 * h
    head = 0
    if kind == "siglip_vision_model" and v.get("vision_use_head", True):
        # attention-pooling head: probe, nn.MultiheadAttention, LayerNorm, MLP
        head = h + (4 * h * h + 4 * h) + 2 * h + (h * inter + inter) + (inter * h + h)
    return v, embeddings + v["num_hidden_layers"] * layer + norms + head, patches


def _block_fields(v: Mapping[str, Any]) -> dict[str, Any]:
    linears, params = _vit_block(v["hidden_size"], v["intermediate_size"])
    return {"layer_linears": linears, "layer_params": params}


def _with_vision(text: ModelShape, config: Mapping[str, Any], tied: bool, vision: VisionShape,
                 extra: int = 0, notes: tuple[str, ...] = ()) -> ModelShape:
    """The VLM's shape: its text shape, re-tied by the top-level config, plus the vision parts."""
    lm_head = 0 if tied else text.vocab_size * text.hidden_size
    return dataclasses.replace(
        text, model_type=config["model_type"], tie_word_embeddings=tied, lm_head_params=lm_head,
        vision=vision, extra_params=text.extra_params + extra, notes=text.notes + notes)


@register("llava", vision=True)
def llava(config: Mapping[str, Any]) -> ModelShape:
    """LLaVA: a CLIP (or SigLIP) tower, a two-layer GELU projector, any decoder."""
    text = shape_from_config(_sub(config, "text_config", "llama"))
    vision = _sub(config, "vision_config", "clip_vision_model", _LLAVA_VISION)
    kind = vision["model_type"] if vision["model_type"] in _VIT_DEFAULTS else "clip_vision_model"
    v, tower, patches = _vit(vision, kind)
    feature_layer = config.get("vision_feature_layer", -2)
    in_dim = v["hidden_size"] * (len(feature_layer) if isinstance(feature_layer, list) else 1)
    th, bias = text.hidden_size, int(config.get("multimodal_projector_bias", True))
    projector = (in_dim * th + bias * th) + (th * th + bias * th)
    positions = patches + (1 if kind == "clip_vision_model" else 0)
    full = config.get("vision_feature_select_strategy", "default") == "full"
    tied = bool(config.get("tie_word_embeddings", False)) or text.tie_word_embeddings
    return _with_vision(text, config, tied, VisionShape(
        kind=kind.removesuffix("_vision_model"), num_layers=v["num_hidden_layers"],
        hidden_size=v["hidden_size"], intermediate_size=v["intermediate_size"],
        num_attention_heads=v["num_attention_heads"], patch_size=v["patch_size"],
        image_size=v["image_size"], tower_params=tower, projector_params=projector,
        fixed_image_tokens=positions if full else positions - 1,
        encoder_tokens_per_image=positions, **_block_fields(v)))


@register("paligemma", vision=True)
def paligemma(config: Mapping[str, Any]) -> ModelShape:
    """PaliGemma: SigLIP tower, one linear projector, Gemma decoder (tied head by default)."""
    text = shape_from_config(_sub(config, "text_config", "gemma", _PALIGEMMA_TEXT))
    vision = _sub(config, "vision_config", "siglip_vision_model", _PALIGEMMA_VISION)
    v, tower, patches = _vit(vision, "siglip_vision_model")
    out = config.get("projection_dim", 2048)
    return _with_vision(text, config, bool(config.get("tie_word_embeddings", True)), VisionShape(
        kind="siglip", num_layers=v["num_hidden_layers"], hidden_size=v["hidden_size"],
        intermediate_size=v["intermediate_size"], num_attention_heads=v["num_attention_heads"],
        patch_size=v["patch_size"], image_size=v["image_size"], tower_params=tower,
        projector_params=v["hidden_size"] * out + out, fixed_image_tokens=patches,
        encoder_tokens_per_image=patches, **_block_fields(v)))


@register("idefics3", vision=True)
def idefics3(config: Mapping[str, Any]) -> ModelShape:
    """Idefics3 / SmolVLM: SigLIP-style tower, pixel shuffle by `scale_factor`, bias-free linear
    connector, Llama decoder. Images are split into `image_size` tiles plus one global view."""
    text = shape_from_config(_sub(config, "text_config", "llama", {"rms_norm_eps": 1e-5}))
    v, tower, patches = _vit(dict(config.get("vision_config") or {}), "idefics3_vision")
    scale = config.get("scale_factor", 2)
    per_tile = patches // (scale * scale)
    return _with_vision(text, config, bool(config.get("tie_word_embeddings", False)), VisionShape(
        kind="idefics3", num_layers=v["num_hidden_layers"], hidden_size=v["hidden_size"],
        intermediate_size=v["intermediate_size"], num_attention_heads=v["num_attention_heads"],
        patch_size=v["patch_size"], image_size=v["image_size"], tower_params=tower,
        projector_params=v["hidden_size"] * scale * scale * text.hidden_size,
        spatial_merge_size=scale, fixed_image_tokens=per_tile, encoder_tokens_per_image=patches,
        **_block_fields(v)),
        notes=(f"an image is split into {v['image_size']}-px tiles plus one global view; "
               f"each tile adds {per_tile} tokens",))


def _qwen_vl_text(config: Mapping[str, Any], text_type: str) -> tuple[ModelShape, bool]:
    """Qwen2-VL text part: hub configs are flat (text keys at top level), v5 saves nest them."""
    nested = config.get("text_config")
    flat = {key: value for key, value in config.items() if key != "vision_config"}
    text_config = dict(nested) if nested else flat
    text_config["model_type"] = text_type
    text = shape_from_config(text_config)
    nested_tie = bool((nested or {}).get("tie_word_embeddings"))
    tied = bool(config.get("tie_word_embeddings")) or nested_tie
    return text, tied


def _qwen_merger(dim: int, merge: int, out: int, norm: int) -> int:
    wide = dim * merge * merge
    return norm + (wide * wide + wide) + (wide * out + out)


@register("qwen2_vl", vision=True)
def qwen2_vl(config: Mapping[str, Any]) -> ModelShape:
    """Qwen2-VL: dynamic-resolution ViT (3-D patch conv, LayerNorm blocks), 2x2 patch merger."""
    text, tied = _qwen_vl_text(config, "qwen2_vl_text")
    v = {**_QWEN2_VL_VISION, **(config.get("vision_config") or {})}
    e, p, t = v["embed_dim"], v["patch_size"], v["temporal_patch_size"]
    merge = v["spatial_merge_size"]
    mlp = int(e * v["mlp_ratio"])
    linears = (LinearShape("qkv", e, 3 * e, True), LinearShape("proj", e, e, True),
               LinearShape("fc1", e, mlp, True), LinearShape("fc2", mlp, e, True))
    block = 4 * e + sum(lin.params for lin in linears)  # two LayerNorms
    tower = v["in_channels"] * t * p * p * e + v["depth"] * block
    return _with_vision(text, config, tied, VisionShape(
        kind="qwen2_vl", num_layers=v["depth"], hidden_size=e, intermediate_size=mlp,
        num_attention_heads=v["num_heads"], patch_size=p, image_size=0, tower_params=tower,
        projector_params=_qwen_merger(e, merge, v["hidden_size"], 2 * e),
        spatial_merge_size=merge, temporal_patch_size=t, dynamic_resolution=True,
        layer_linears=linears, layer_params=block))


@register("qwen2_5_vl", vision=True)
def qwen2_5_vl(config: Mapping[str, Any]) -> ModelShape:
    """Qwen2.5-VL: Qwen2-VL with RMSNorm, SwiGLU vision MLP and windowed attention blocks."""
    text, tied = _qwen_vl_text(config, "qwen2_5_vl_text")
    v = {**_QWEN2_5_VL_VISION, **(config.get("vision_config") or {})}
    h, inter, p = v["hidden_size"], v["intermediate_size"], v["patch_size"]
    t, merge = v["temporal_patch_size"], v["spatial_merge_size"]
    linears = (LinearShape("qkv", h, 3 * h, True), LinearShape("proj", h, h, True),
               *gated_mlp(h, inter, True))
    block = 2 * h + sum(lin.params for lin in linears)  # two RMSNorms
    tower = v["in_channels"] * t * p * p * h + v["depth"] * block
    return _with_vision(text, config, tied, VisionShape(
        kind="qwen2_5_vl", num_layers=v["depth"], hidden_size=h, intermediate_size=inter,
        num_attention_heads=v["num_heads"], patch_size=p, image_size=0, tower_params=tower,
        projector_params=_qwen_merger(h, merge, v["out_hidden_size"], h),
        spatial_merge_size=merge, temporal_patch_size=t, dynamic_resolution=True,
        layer_linears=linears, layer_params=block))


@register("mllama", vision=True)
def mllama(config: Mapping[str, Any]) -> ModelShape:
    """Llama 3.2 Vision: tiled ViT (local + gated global layers) whose states feed cross-attention
    layers interleaved with the Llama decoder; an image adds one token to the text sequence."""
    c = {**_MLLAMA_TEXT, **(config.get("text_config") or {})}
    hidden, heads, layers = c["hidden_size"], c["num_attention_heads"], c["num_hidden_layers"]
    kv, hd, vocab = c["num_key_value_heads"], hidden // heads, c["vocab_size"]
    cross_layers = c["cross_attention_layers"] or [3, 8, 13, 18, 23, 28, 33, 38]
    n_cross = sum(1 for index in cross_layers if index < layers)
    tied = bool(config.get("tie_word_embeddings", False))
    text = ModelShape(
        model_type=config["model_type"], num_layers=layers, hidden_size=hidden,
        intermediate_size=c["intermediate_size"], num_attention_heads=heads,
        num_key_value_heads=kv, head_dim=hd, vocab_size=vocab,
        max_position_embeddings=c["max_position_embeddings"], tie_word_embeddings=tied,
        layer_linears=qkvo(hidden, heads, kv, hd, False, False) + gated_mlp(
            hidden, c["intermediate_size"]),
        layer_other_params=2 * hidden, embedding_params=(vocab + 8) * hidden,
        embedding_rows=vocab + 8,
        lm_head_params=0 if tied else vocab * hidden, final_norm_params=hidden)
    v = {**_MLLAMA_VISION, **(config.get("vision_config") or {})}
    h, inter = v["hidden_size"], v["intermediate_size"]
    p, tiles = v["patch_size"], v["max_num_tiles"]
    ratios = len(v["supported_aspect_ratios"] or [[1, 1], [1, 2], [1, 3], [1, 4], [2, 1], [2, 2],
                                                 [3, 1], [4, 1]])
    positions = (v["image_size"] // p) ** 2 + 1
    linears = (*qkvo(h, 1, 1, h, False, False), LinearShape("fc1", h, inter, True),
               LinearShape("fc2", inter, h, True))
    layer = sum(lin.params for lin in linears) + 4 * h
    tower = (h + v["num_channels"] * p * p * h  # class token, bias-free patch conv
             + 1 + positions * h + (ratios + 1) * tiles * positions * h  # gated position + tile
             + 2 * (1 + (ratios + 1) * tiles * h)  # pre/post tile embeddings
             + 4 * h + v["num_hidden_layers"] * layer + v["num_global_layers"] * (layer + 2))
    return dataclasses.replace(text, vision=VisionShape(
        kind="mllama", num_layers=v["num_hidden_layers"] + v["num_global_layers"], hidden_size=h,
        intermediate_size=inter, num_attention_heads=v["attention_heads"], patch_size=p,
        image_size=v["image_size"], tower_params=tower,
        projector_params=v["vision_output_dim"] * hidden + hidden, fixed_image_tokens=1,
        encoder_tokens_per_image=tiles * positions, layer_linears=linears, layer_params=layer,
    ), extra_params=n_cross * (2 * hd + 2), notes=(
        f"{n_cross} of the {layers} decoder layers are cross-attention layers (same linears; "
        "their q/k norms and gates are in extra_params)",
        "embedding_params hold vocab_size + 8 rows (transformers' Mllama embedding)"))
