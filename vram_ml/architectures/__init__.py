"""Model architectures as plain numbers: `ModelShape` from a config dict, without torch.

- shape.py: the dataclasses every estimator reads (ModelShape, LinearShape, VisionShape);
- registry.py: model_type -> builder, and `shape_from_config`;
- decoders*.py (dense, MoE, MLA), vision*.py: the builders, one per family of model_types;
  importing them registers them. Imports run one way (this package -> builders -> registry ->
  shape), with no cycle;
- remote_code.py: models that exist only as remote code (Qwen v1 / Qwen-VL, ChatGLM / GLM-4),
  shapes from their own modeling files; `REMOTE_CODE_MODEL_TYPES` is what the recipe refuses.
"""

from vram_ml.architectures import (  # noqa: F401 - importing registers the builders
    decoders,
    decoders_dense,
    decoders_mla,
    decoders_moe,
    remote_code,
    vision,
    vision_native,
)
from vram_ml.architectures.registry import (
    IncompleteConfig,
    check_size_keys,
    register,
    shape_from_config,
    supported_model_types,
)
from vram_ml.architectures.remote_code import (
    REMOTE_CODE_MODEL_TYPES,
    remote_code_family,
    remote_code_refusal,
)
from vram_ml.architectures.shape import (
    AttentionShape,
    LayerVariant,
    LinearShape,
    ModelShape,
    UnsupportedArchitecture,
    VisionShape,
)

__all__ = [
    "REMOTE_CODE_MODEL_TYPES", "AttentionShape", "IncompleteConfig", "LayerVariant",
    "LinearShape", "ModelShape", "UnsupportedArchitecture", "VisionShape", "check_size_keys",
    "register", "remote_code_family", "remote_code_refusal", "shape_from_config",
    "supported_model_types",
]
