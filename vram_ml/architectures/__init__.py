"""Model architectures as plain numbers: `ModelShape` from a config dict, without torch.

- shape.py: the dataclasses every estimator reads (ModelShape, LinearShape, VisionShape);
- registry.py: model_type -> builder, and `shape_from_config`;
- decoders.py, vision.py: the builders, one per family of model_types; importing them registers
  them. Imports run one way (this package -> builders -> registry -> shape), with no cycle.
"""

from vram_ml.architectures import decoders, vision  # noqa: F401 - registers the builders
from vram_ml.architectures.registry import register, shape_from_config, supported_model_types
from vram_ml.architectures.shape import (
    LinearShape,
    ModelShape,
    UnsupportedArchitecture,
    VisionShape,
)

__all__ = [
    "LinearShape", "ModelShape", "UnsupportedArchitecture", "VisionShape", "register",
    "shape_from_config", "supported_model_types",
]
