"""The recipe's batch: one micro-batch of random tokens for a Spec.

`batch_size x seq_len` tokens (LLaMA-Factory: seq_len rounded up to a multiple of 8, as its
collator pads the longest sample; here every position is a real token, so no attention mask is
made for the padding) with labels = inputs; VLMs get their images and image tokens inside
`seq_len` (LLaMA-Factory's cutoff counts them), with the pixel inputs their processor would give
for a square `image_resolution` image. How many tokens an image becomes is the formulas' one
definition (vram_ml.model.formulas.vision.image_geometry); the ids around them are each family's
processor's: Qwen2/2.5/3-VL vision start/end, GLM-4.1V image begin/end, Gemma 3's newlines and
<boi>/<eoi>, Pixtral's rows ending in [IMG_BREAK] (the last in [IMG_END]).
Tokens come from a fixed seed, so a spec's batch is the same on every device.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from vram_ml.model.formulas.stack import StackRules
from vram_ml.model.recipe.unsupported import UnsupportedRecipe

if TYPE_CHECKING:
    from vram_ml.spec import Spec

# families whose processors flatten patches ([patches, C x T x p^2]) with an image_grid_thw
GRID_FAMILIES = ("qwen2_vl", "qwen2_5_vl", "qwen3_vl", "qwen3_vl_moe", "glm4v")


def image_token_count(config: Any, spec: Spec) -> int:
    """Image-token ids one image puts in the sequence: the formulas' one definition
    (vram_ml.model.formulas.vision.image_geometry); the model refuses a batch where they differ
    from the features its tower makes."""
    from vram_ml.model.formulas.vision import image_geometry

    return image_geometry(spec).placeholder_tokens


def qwen2_vl_grid(config: Any, spec: Spec) -> tuple[int, int]:
    """Patch grid of a square `image_resolution` image after Qwen2-VL's smart resize."""
    from vram_ml.model.formulas.vision import image_geometry

    grid = image_geometry(spec).grid
    return grid, grid


def _special_ids(config: Any) -> list[int]:
    keys = ("image_token_index", "image_token_id", "video_token_id", "vision_start_token_id",
            "vision_end_token_id", "image_start_token_id", "image_end_token_id",
            "boi_token_index", "eoi_token_index")
    return [value for value in (getattr(config, key, None) for key in keys)
            if isinstance(value, int)]


def make_batch(spec: Spec, model: nn.Module, device: str | torch.device = "cpu") -> dict:
    """The spec's micro-batch as its training stage builds it (recipe/stages/: sft and pt take
    `token_batch`, pairwise stages 2B of its sequences, KTO a KL batch beside it, PPO prompts)."""
    from vram_ml.model.recipe.stages import stage_for

    return stage_for(spec).make_batch(spec, model, device)


def token_batch(spec: Spec, model: nn.Module, device: str | torch.device = "cpu") -> dict:
    """One micro-batch: `input_ids`, `attention_mask`, `labels` (= inputs, image tokens ignored),
    and for VLMs the pixel inputs of their family (+ `image_grid_thw` and `mm_token_type_ids`
    for the grid families, `token_type_ids` for Gemma 3, `image_sizes` for Mistral 3).

    Raises:
        UnsupportedRecipe: the images need more tokens than `seq_len`.
    """
    config = model.config
    text_config = config.get_text_config()
    generator = torch.Generator().manual_seed(0)
    top = min([text_config.vocab_size, *_special_ids(config)])
    shape = (spec.batch_size, StackRules.of(spec).padded_seq_len(spec.seq_len))
    input_ids = torch.randint(0, top, shape, generator=generator)
    batch: dict[str, torch.Tensor] = {}
    if spec.images_per_sample:
        image_ids = _image_prefix(config, spec, text_id=top - 1)
        if len(image_ids) > spec.seq_len:
            raise UnsupportedRecipe(
                f"seq_len: {spec.images_per_sample} image(s) need {len(image_ids)} tokens, "
                f"more than seq_len {spec.seq_len}"
            )
        input_ids[:, : len(image_ids)] = torch.tensor(image_ids)
        batch.update(_pixel_inputs(config, spec, generator))
    labels = input_ids.clone()
    if spec.images_per_sample:
        labels[:, : len(image_ids)] = -100
        if config.model_type in GRID_FAMILIES:  # M-RoPE reads which tokens are images
            batch["mm_token_type_ids"] = (input_ids == config.image_token_id).long()
        elif config.model_type == "gemma3":  # images attend to themselves bidirectionally
            batch["token_type_ids"] = (input_ids == config.image_token_index).long()
    batch.update(input_ids=input_ids, attention_mask=torch.ones_like(input_ids), labels=labels)
    return {key: value.to(device) for key, value in batch.items()}


def _image_prefix(config: Any, spec: Spec, text_id: int) -> list[int]:
    """The token ids of the batch's images, one block per image (`text_id`: an ordinary token
    standing for newlines, breaks and the end of a Pixtral image)."""
    from vram_ml.model.formulas.vision import image_geometry

    geometry = image_geometry(spec)
    tokens, model_type = geometry.placeholder_tokens, config.model_type
    if model_type == "llava":
        one_image = [config.image_token_index] * tokens
    elif model_type == "gemma3":
        one_image = [text_id, config.boi_token_index, *[config.image_token_index] * tokens,
                     config.eoi_token_index, text_id]
    elif model_type == "mistral3":
        rows = int(round(tokens**0.5))
        one_image = ([config.image_token_index] * rows + [text_id]) * rows
    else:
        start, end = ((config.image_start_token_id, config.image_end_token_id)
                      if model_type == "glm4v"
                      else (config.vision_start_token_id, config.vision_end_token_id))
        one_image = [start, *[config.image_token_id] * tokens, end]
    return one_image * spec.images_per_sample


def _pixel_inputs(config: Any, spec: Spec, generator: torch.Generator) -> dict:
    from vram_ml.model.formulas.vision import image_geometry

    vision = config.vision_config
    images = spec.batch_size * spec.images_per_sample
    if config.model_type in ("llava", "gemma3"):
        side = vision.image_size
        pixels = torch.randn(images, vision.num_channels, side, side, generator=generator)
        return {"pixel_values": pixels}
    grid = image_geometry(spec).grid
    if config.model_type == "mistral3":
        side = grid * vision.patch_size
        pixels = torch.randn(images, vision.num_channels, side, side, generator=generator)
        return {"pixel_values": pixels, "image_sizes": torch.tensor([[side, side]] * images)}
    patch = vision.in_channels * vision.temporal_patch_size * vision.patch_size**2
    pixels = torch.randn(images * grid * grid, patch, generator=generator)
    return {"pixel_values": pixels, "image_grid_thw": torch.tensor([[1, grid, grid]] * images)}
