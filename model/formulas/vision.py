"""The vision tower's terms of the analytical estimator: image geometry, pixel values and what a
(usually frozen) tower keeps for backward, in bytes. Pure Python, no torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from math import ceil
from typing import TYPE_CHECKING

from vram_ml.model.formulas.activations import activation_bytes
from vram_ml.model.formulas.model_states import Dtypes
from vram_ml.model.formulas.parameters import trainable_parameters
from vram_ml.model.formulas.stack import StackRules

if TYPE_CHECKING:
    from vram_ml.architectures import ModelShape
    from vram_ml.spec import Spec

# Towers that are plain nn.Modules inside remote-code models (Qwen-VL's VisionTransformer), not
# transformers PreTrainedModels: gradient checkpointing's input hook reaches only the text
# embedding, so a frozen tower records nothing; their attention is always explicit (baddbmm +
# softmax: the scores exist), their MLP is nn.GELU, their LayerNorms run in fp32 under autocast.
PLAIN_MODULE_TOWERS = frozenset({"qwen_vl"})

# --- images -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ImageGeometry:
    """One image, as the model sees it: the one definition of image tokens (the recipe's batch,
    the features, the planner and the estimators all read it)."""

    lm_tokens: int  # tokens one image puts in the text sequence (counted in seq_len)
    encoder_tokens: int  # patch states the vision tower runs for one image
    placeholder_tokens: int  # of lm_tokens, the image-token ids replaced by image features
    grid: int = 0  # patches per side the tower sees (dynamic / Pixtral / Gemma 3)


def image_geometry(spec: Spec) -> ImageGeometry:
    """Qwen2-VL / Qwen2.5-VL / Qwen3-VL / GLM-4.1V: smart_resize to a multiple of patch x merge,
    (side / patch)^2 patches, merged merge^2 to one token (+ vision start/end); Pixtral (Mistral 3):
    the image capped to its longest edge, ceil(side / (patch x merge)) = n rows of n image tokens
    and a break (the last an end token): n (n + 1) tokens (processing_pixtral.py); Idefics3: one
    tile per `image_size` square + a global view; Gemma 3: `mm_tokens_per_image` pooled tokens
    between <boi> and <eoi>, each block wrapped in two newline tokens (processing_gemma3.py);
    Llama 4: n x n tiles of `image_size` (n = ceil(side / tile) up to 4, max_patches 16) and a
    global view when n > 1, each pixel-shuffled to a fixed count, with n^2 separators and
    <|image_start|>, <|image|>, <|image_end|> (processing_llama4.py _prompt_split_image);
    fixed towers (CLIP, SigLIP): the shape's fixed token counts."""
    v = spec.resolved_model.shape.vision
    if v.image_rule == "pixtral":
        factor = v.patch_size * v.spatial_merge_size
        rows = -(-min(spec.image_resolution, v.default_image_size or spec.image_resolution)
                 // factor)
        grid = rows * v.spatial_merge_size
        return ImageGeometry(rows * (rows + 1), grid**2, rows**2, grid)
    if v.kind == "gemma3":
        return ImageGeometry(v.fixed_image_tokens + 4, v.encoder_tokens_per_image,
                             v.fixed_image_tokens, v.image_size // v.patch_size)
    if v.image_rule == "llama4":  # a square image: the smallest n x n canvas of tiles, n <= 4
        side = min(4, max(1, ceil(spec.image_resolution / v.image_size)))
        tiles = side * side + (1 if side > 1 else 0)  # + the global view
        features = tiles * v.fixed_image_tokens
        separators = side * side if side > 1 else 0  # tile_x / tile_y separators
        return ImageGeometry(features + separators + 3, tiles * v.encoder_tokens_per_image,
                             features)
    if v.dynamic_resolution:
        factor = v.patch_size * v.spatial_merge_size
        side = max(factor, round(spec.image_resolution / factor) * factor)
        grid = side // v.patch_size
        placeholders = grid**2 // v.spatial_merge_size**2
        return ImageGeometry(placeholders + 2, grid**2, placeholders, grid)
    tokens = v.fixed_image_tokens or (v.image_size // v.patch_size) ** 2
    encoder = v.encoder_tokens_per_image or tokens
    if v.kind == "idefics3":
        tiles = ceil(spec.image_resolution / v.image_size) ** 2
        tiles += 1 if tiles > 1 else 0
        return ImageGeometry(tiles * tokens, tiles * encoder, tiles * tokens)
    return ImageGeometry(tokens, encoder, tokens)


def _vision_layer_per_patch(spec: Spec, shape: ModelShape, dt: Dtypes, patches: int,
                            frozen: bool = False) -> int:
    """A ViT layer per patch (towers are usually frozen; checked on LLaVA's CLIP and Qwen2-VL):
    two norms' fp32 copies, the attention core, the MLP activation (QuickGELU for CLIP and
    Qwen2-VL, SwiGLU for Qwen2.5-VL, GELU for SigLIP), the linears' inputs. Qwen2-VL's fused qkv
    keeps its whole output alive and its rotary embedding runs in fp32."""
    v = shape.vision
    h, inter, heads = v.hidden_size, v.intermediate_size, v.num_attention_heads
    qwen = v.kind in ("qwen2_vl", "qwen2_5_vl")
    if spec.attention == "eager" or v.kind in PLAIN_MODULE_TOWERS:
        core = 3 * h * dt.compute + heads * patches * (4 + dt.compute)
    else:  # Qwen: qkv's output, q and k after rotary, the output (+ o_proj's input if trained)
        core = ((6 if frozen else 7) if qwen else 4) * h * dt.compute + heads * 4
    # Qwen's fp32 rotary cos / sin: shared by every block (in _vision_shared_bytes) when frozen
    core += 2 * (h // heads) * 4 if qwen and not frozen else 0
    gated, tanh_gelu = 3 * dt.compute, dt.compute  # SwiGLU; F.gelu keeps its input
    act = {"qwen2_5_vl": gated, "glm4v": gated, "pixtral": gated, "siglip": tanh_gelu,
           "gemma3": tanh_gelu, "qwen3_vl": tanh_gelu, "qwen_vl": tanh_gelu,
           "llama4": tanh_gelu}.get(
        v.kind, activation_bytes("quick_gelu", dt))
    # the linears' inputs, kept for their weights' (or LoRA's) gradients: none when frozen
    inputs = 0 if frozen else (3 * h + inter) * dt.compute
    return 2 * h * 4 + core + act * inter + inputs


def pixel_bytes(spec: Spec) -> int:
    """The batch's fp32 `pixel_values` (the processors' dtype; the recipe's make_batch), alive
    through the step: Qwen2-VL flattens each patch to channels x temporal x patch^2 values;
    fixed towers take 3 x side^2 per image (per tile for tiled towers)."""
    v, geometry = spec.resolved_model.shape.vision, image_geometry(spec)
    images = spec.batch_size * spec.images_per_sample
    if v.dynamic_resolution:
        return images * geometry.encoder_tokens * 3 * v.temporal_patch_size * v.patch_size**2 * 4
    if v.image_rule == "pixtral":  # resized to the grid: (grid x patch)^2 pixels
        return images * 3 * (geometry.grid * v.patch_size) ** 2 * 4
    per_image = v.encoder_tokens_per_image or v.fixed_image_tokens or (
        v.image_size // v.patch_size) ** 2
    return images * max(1, geometry.encoder_tokens // per_image) * 3 * v.image_size**2 * 4


def vision_in_graph(spec: Spec) -> bool:
    """Whether the tower's forward is recorded by autograd. A trained tower, or any tower under
    gradient checkpointing: transformers 5.24 `activation_checkpointing_enable` calls
    `enable_input_require_grads` (modeling_utils.py:3190-3198; the top model's main input is
    input_ids, and peft's `prepare_model_for_gradient_checkpointing`, peft_model.py:184/728,
    does the same for lora), which hooks `get_input_embeddings()` of *every* PreTrainedModel
    submodule (modeling_utils.py:2147-2185): Qwen2-VL / Qwen2.5-VL's vision model declares
    `_input_embed_layer = "patch_embed"` (modeling_qwen2_vl.py:647, modeling_qwen2_5_vl.py:389),
    LLaVA's CLIPVisionModel `"patch_embedding"`, found under `self.embeddings`
    (modeling_clip.py:588, modeling_utils.py:983-985). The patch embedding's output then requires
    grad and every frozen block after it is in the graph; without checkpointing nothing installs
    the hook (peft only does when `is_gradient_checkpointing`) and a frozen tower saves nothing.
    transformers 4.x hooks only the top model's embeddings, LLaMA-Factory only for LoRA without
    quantization (StackRules.hooks_every_input_embedding). PLAIN_MODULE_TOWERS are no
    PreTrainedModel: no hook reaches them, only training puts them in the graph; Qwen3-VL's and
    GLM-4.1V's vision models expose no input embedding (VisionShape `hooked_when_checkpointed`):
    frozen, they stay out of the graph even with the hook."""
    trained = trainable_parameters(spec).vision > 0
    v = spec.resolved_model.shape.vision
    if v.kind in PLAIN_MODULE_TOWERS:
        return trained
    return trained or (StackRules.of(spec).hooks_every_input_embedding
                       and v.hooked_when_checkpointed)


def _blocks_feeding_features(spec: Spec) -> int:
    """Blocks whose output reaches the language model: LLaVA takes `vision_feature_layer`'s
    hidden states (-2: the last block runs, but its graph is dropped with the tower's output)."""
    layers = spec.resolved_model.shape.vision.num_layers
    feature_layer = spec.resolved_model.config.get("vision_feature_layer")
    if isinstance(feature_layer, int) and feature_layer < 0:
        return max(1, layers + 1 + feature_layer)
    return layers


def vision_checkpointed(spec: Spec) -> bool:
    """Whether the tower's blocks are checkpointed: transformers checkpoints every block,
    LLaMA-Factory only blocks holding a trainable parameter (a frozen tower in the graph then
    keeps all its activations; StackRules.checkpoints_frozen_layers)."""
    rules = StackRules.of(spec)
    return spec.gradient_checkpointing and (
        rules.checkpoints_frozen_layers or trainable_parameters(spec).vision > 0)


def _vision_stream_bytes(shape: ModelShape, dt: Dtypes) -> int:
    """The tower's residual stream: CLIP's pre_layrnorm is an nn.LayerNorm, fp32 under autocast,
    so its blocks add into fp32 (modeling_clip.py CLIPVisionTransformer); Qwen's patch embedding
    output and blocks stay in the compute dtype."""
    fp32_stream = shape.vision.kind == "clip" or shape.vision.kind in PLAIN_MODULE_TOWERS
    return 4 if fp32_stream and dt.autocast else dt.compute


def _vision_shared_bytes(spec: Spec, shape: ModelShape, dt: Dtypes, patches: int) -> int:
    """What a tower in the graph keeps once (not per block) when its weights are frozen: Qwen's
    fp32 rotary cos and sin (inputs of every checkpointed block), the merger's norm (ln_q: an fp32
    copy under autocast + its statistics) and GELU input; CLIP's pre_layrnorm (fp32 copy +
    mean/rstd) and LLaVA's projector GELU input; the text side's masked_scatter mask (bool)."""
    v = shape.vision
    h, norm_copy = v.hidden_size, 4 if dt.autocast else dt.compute
    mask = spec.batch_size * spec.seq_len  # (B, S, 1) bool, expanded over the hidden size
    images = spec.batch_size * spec.images_per_sample
    if v.kind == "gemma3":
        # the patch embedding (the hooked leaf), SigLIP's post_layernorm fp32 copy, the
        # projector's fp32 transposed copy (avg-pool input) and its pooled fp32 output
        pooled = images * v.fixed_image_tokens * h * 4
        return patches * (h * dt.compute + h * 4 + h * 4) + pooled + mask
    if v.kind == "pixtral":
        # the block-diagonal mask over all patches of the batch (generate_block_attention_mask,
        # [patches, patches] in the compute dtype, fed to every block), the patch conv (the
        # hooked leaf), ln_pre's and the projector norm's fp32 copies, the 2-D rotary table,
        # the projector's GELU input
        tokens = images * image_geometry(spec).placeholder_tokens
        return (patches * patches * dt.compute + patches * (h * dt.compute + 2 * h * 4
                + (h // v.num_attention_heads) * dt.compute)
                + tokens * shape.hidden_size * dt.compute + mask)
    if v.kind in ("qwen2_vl", "qwen2_5_vl"):
        rotary = 2 * (h // v.num_attention_heads) * 4
        stats = 8 if v.kind == "qwen2_vl" else 4  # LayerNorm mean + rstd, RMSNorm rstd
        # Qwen2.5-VL reorders the (leaf) patch embedding into windows: one more copy
        window = h * dt.compute if v.kind == "qwen2_5_vl" else 0
        return patches * (rotary + h * norm_copy + stats + h * dt.compute + window) + mask
    tokens = images * image_geometry(spec).lm_tokens
    # CLIP: one compute-dtype copy of the embeddings (the hooked leaf) + pre_layrnorm's
    # mean/rstd; LLaVA's projector: the GELU input. Measured on simulate: no fp32 copy.
    return patches * (h * dt.compute + 8) + tokens * shape.hidden_size * dt.compute + mask


def vision_activation_bytes(spec: Spec, dt: Dtypes) -> int:
    """Vision activations alive at the end of forward: the batch's pixel values, and when the
    tower is in the graph (`vision_in_graph`) what it saves. Frozen + checkpointed (the usual
    LoRA case): each block's input (kept by non-reentrant checkpoint) + `_vision_shared_bytes`;
    trained: every block's activations (or its input with checkpointing) + the projector's."""
    shape = spec.resolved_model.shape
    if shape.vision is None or not spec.images_per_sample:
        return 0
    v, geometry = shape.vision, image_geometry(spec)
    patches = spec.batch_size * spec.images_per_sample * geometry.encoder_tokens
    total = pixel_bytes(spec)
    if not vision_in_graph(spec):
        if trainable_parameters(spec).projector:
            total += patches * (v.hidden_size + shape.hidden_size) * dt.compute
        return total
    trained = trainable_parameters(spec)
    if vision_checkpointed(spec):
        per_layer = v.hidden_size * _vision_stream_bytes(shape, dt)
    else:
        per_layer = _vision_layer_per_patch(spec, shape, dt, geometry.encoder_tokens,
                                            frozen=not trained.vision)
    if vision_checkpointed(spec):
        total += patches * per_layer * v.num_layers
    else:
        total += patches * per_layer * _blocks_feeding_features(spec)
        if v.kind == "clip" and dt.autocast:  # pre_layrnorm's fp32 input (autocast's cast)
            total += patches * v.hidden_size * 4
    if trained.vision or trained.projector:
        total += patches * (v.hidden_size + shape.hidden_size) * dt.compute
    else:
        total += _vision_shared_bytes(spec, shape, dt, patches)
    if StackRules.of(spec).hooks_input_embeddings and spec.method != "full":
        # the hooked, frozen embedding's output is a leaf that requires grad: masked_scatter's
        # AccumulateGrad node keeps it besides the merged sequence (the first layer's input)
        total += spec.batch_size * spec.seq_len * shape.hidden_size * dt.hidden
    return total


def vision_forward_bytes(spec: Spec, dt: Dtypes) -> int:
    """The tower's forward over all images: its saved activations + one layer's working set
    (residual, normed input, attention output, MLP hidden; eager: scores, fp32 softmax)."""
    shape = spec.resolved_model.shape
    if shape.vision is None or not spec.images_per_sample:
        return 0
    v, geometry = shape.vision, image_geometry(spec)
    images = spec.batch_size * spec.images_per_sample
    patches = images * geometry.encoder_tokens
    working = patches * (3 * v.hidden_size + v.intermediate_size) * dt.compute
    if v.kind == "pixtral" and not vision_in_graph(spec):  # the mask, alive while it runs
        working += patches * patches * dt.compute
    if spec.attention == "eager" or v.kind in PLAIN_MODULE_TOWERS:
        working += images * v.num_attention_heads * geometry.encoder_tokens**2 * (dt.compute + 8)
    return vision_activation_bytes(spec, dt) + working


def vision_backward_bytes(spec: Spec, dt: Dtypes) -> int:
    """A tower in the graph is backpropagated through even when frozen (the hooked patch
    embedding's output needs a gradient): after the text layers' backward, its saved tensors,
    one block recomputed (when checkpointed) and its working set with the gradient in and out."""
    shape = spec.resolved_model.shape
    if shape.vision is None or not spec.images_per_sample or not vision_in_graph(spec):
        return 0
    v, geometry = shape.vision, image_geometry(spec)
    patches = spec.batch_size * spec.images_per_sample * geometry.encoder_tokens
    block = _vision_layer_per_patch(spec, shape, dt, geometry.encoder_tokens,
                                    frozen=not trainable_parameters(spec).vision) if (
        vision_checkpointed(spec)) else 0
    working = (3 * v.hidden_size + v.intermediate_size) * dt.compute
    return (vision_activation_bytes(spec, dt)
            + patches * (block + working + 2 * v.hidden_size * dt.compute))
