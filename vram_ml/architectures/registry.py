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


def register(*model_types: str) -> Callable[[ShapeBuilder], ShapeBuilder]:
    """Register a closed-form shape builder for one or more HF `model_type`s."""

    def wrap(builder: ShapeBuilder) -> ShapeBuilder:
        for model_type in model_types:
            _BUILDERS[model_type] = builder
        return builder

    return wrap


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
