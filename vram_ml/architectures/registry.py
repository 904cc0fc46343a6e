"""The registry of shape builders: model_type -> closed-form builder.

Builder modules (decoders.py, vision.py) register into it when the package is imported; this
module imports nothing of theirs, so the imports run one way: package -> builders -> registry.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from vram_ml.architectures.shape import ModelShape, UnsupportedArchitecture

ShapeBuilder = Callable[[Mapping[str, Any]], ModelShape]
_BUILDERS: dict[str, ShapeBuilder] = {}
_VISION_TYPES: set[str] = set()
# The numbers that decide a model's size, by the names configuration classes accept. A config
# may leave some to its class's defaults (Gemma 3's minimal config.json does), but one that sets
# none of them describes no particular model: its memory would be transformers' defaults'.
TEXT_SIZE_KEYS = ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                  "vocab_size", "n_embd", "n_layer", "n_head", "n_embed")
VISION_SIZE_KEYS = ("hidden_size", "num_hidden_layers", "depth", "embed_dim", "intermediate_size",
                    "num_attention_heads", "num_heads")


class IncompleteConfig(ValueError):
    """The config lacks the numbers that decide memory."""


def register(*model_types: str, vision: bool = False) -> Callable[[ShapeBuilder], ShapeBuilder]:
    """Register a closed-form shape builder for one or more HF `model_type`s (`vision`: the
    types are vision-language composites, whose vision_config must be present)."""

    def wrap(builder: ShapeBuilder) -> ShapeBuilder:
        for model_type in model_types:
            _BUILDERS[model_type] = builder
            if vision:
                _VISION_TYPES.add(model_type)
        return builder

    return wrap


def check_size_keys(config: Mapping[str, Any]) -> None:
    """Refuse a config that sets none of the numbers that decide memory (in its text part, and in
    its vision_config for a vision-language type).

    Raises:
        IncompleteConfig: one line naming the keys looked for.
    """
    text = config.get("text_config")
    text = text if isinstance(text, Mapping) else config
    if not any(text.get(key) is not None for key in TEXT_SIZE_KEYS):
        where = "text_config" if text is not config else "the config"
        raise IncompleteConfig(
            f"{where} sets none of {', '.join(TEXT_SIZE_KEYS[:5])}: transformers' defaults would "
            "stand in for the real model; pass the model's full config.json")
    if config.get("model_type") in _VISION_TYPES:
        vision = config.get("vision_config")
        if not isinstance(vision, Mapping) or not any(
                vision.get(key) is not None for key in VISION_SIZE_KEYS):
            raise IncompleteConfig(
                f"vision_config missing or without any of {', '.join(VISION_SIZE_KEYS[:4])}: "
                "the vision tower would be transformers' default one; pass the full config.json")


def supported_model_types() -> tuple[str, ...]:
    return tuple(sorted(_BUILDERS))


def shape_from_config(config: Mapping[str, Any]) -> ModelShape:
    """Build the ModelShape of an HF config dict.

    Raises:
        UnsupportedArchitecture: the model_type has no builder.
    """
    model_type = config.get("model_type")
    if model_type not in _BUILDERS:
        known = ", ".join(sorted(_BUILDERS))
        raise UnsupportedArchitecture(
            f"model_type {model_type!r} is not supported (known: {known})"
        )
    return _BUILDERS[model_type](config)
