"""What the recipe refuses to build."""

from __future__ import annotations

from typing import TYPE_CHECKING

from vram_ml.architectures import remote_code_refusal

if TYPE_CHECKING:
    from vram_ml.spec import Spec


class UnsupportedRecipe(ValueError):
    """The recipe cannot build this spec; the message is one line."""


def refuse_remote_code(spec: Spec) -> None:
    """Models that exist only as remote code have no transformers class and the recipe never runs
    `trust_remote_code`: refuse them (the analytical estimator still answers for them).

    Raises:
        UnsupportedRecipe: the spec's model is remote code only.
    """
    refusal = remote_code_refusal(spec.resolved_model.name, spec.resolved_model.shape.model_type)
    if refusal:
        raise UnsupportedRecipe(refusal)
