"""The recipe's batch: one micro-batch of random tokens for a Spec.

`batch_size x seq_len` tokens (LLaMA-Factory: seq_len rounded up to a multiple of 8, as its
collator pads the longest sample; here every position is a real token, so no attention mask is
made for the padding) with labels = inputs; VLMs get their images and image tokens inside
`seq_len` (LLaMA-Factory's cutoff counts them), with the pixel inputs their processor would give
for a square `image_resolution` image (Qwen2-VL: after its smart resize, with `image_grid_thw`).
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


def make_batch(spec: Spec, model: nn.Module, device: str | torch.device = "cpu") -> dict:
    """One micro-batch: `input_ids`, `attention_mask`, `labels` (= inputs, image tokens ignored),
    and for VLMs `pixel_values` (+ `image_grid_thw` for Qwen2-VL).

    Raises:
        UnsupportedRecipe: the images need more tokens than `seq_len`.
    """
    config = model.config
    text_config = config.get_text_config()
    generator = torch.Generator().manual_seed(0)
    special = [getattr(config, key, None) for key in (
        "image_token_index", "image_token_id", "video_token_id", "vision_start_token_id")]
    top = min([text_config.vocab_size, *(s for s in special if isinstance(s, int))])
    shape = (spec.batch_size, StackRules.of(spec).padded_seq_len(spec.seq_len))
    input_ids = torch.randint(0, top, shape, generator=generator)
    batch: dict[str, torch.Tensor] = {}
    if spec.images_per_sample:
        image_ids = _image_prefix(config, spec)
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
        if config.model_type != "llava":  # Qwen2-VL's M-RoPE reads which tokens are images
            batch["mm_token_type_ids"] = (input_ids == config.image_token_id).long()
    batch.update(input_ids=input_ids, attention_mask=torch.ones_like(input_ids), labels=labels)
    return {key: value.to(device) for key, value in batch.items()}


def _image_prefix(config: Any, spec: Spec) -> list[int]:
    tokens = image_token_count(config, spec)
    if config.model_type == "llava":
        return [config.image_token_index] * tokens * spec.images_per_sample
    one_image = [config.vision_start_token_id, *[config.image_token_id] * tokens,
                 config.vision_end_token_id]
    return one_image * spec.images_per_sample


def _pixel_inputs(config: Any, spec: Spec, generator: torch.Generator) -> dict:
    vision = config.vision_config
    images = spec.batch_size * spec.images_per_sample
    if config.model_type == "llava":
        side = vision.image_size
        pixels = torch.randn(images, vision.num_channels, side, side, generator=generator)
        return {"pixel_values": pixels}
    grid_h, grid_w = qwen2_vl_grid(config, spec)
    patch = vision.in_channels * vision.temporal_patch_size * vision.patch_size**2
    pixels = torch.randn(images * grid_h * grid_w, patch, generator=generator)
    grid = torch.tensor([[1, grid_h, grid_w]] * images)
    return {"pixel_values": pixels, "image_grid_thw": grid}
