"""A spec and how it was read, from Spec fields or a LLaMA-Factory YAML: what the CLI, the web
app and the Python API all build before they answer.

`SpecInput.to_dict()` is the head of every `--json` answer (and of the web API's): the spec, its
id, where it came from, and every default that was assumed or key that was ignored, not
modelled or unknown.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from vram_ml.defaults import assumed_defaults
from vram_ml.spec import Spec, build_spec

if TYPE_CHECKING:
    from vram_ml.llamafactory import LlamaFactoryRead


@dataclass
class SpecInput:
    """A spec and how it was read: what was assumed, ignored, not modelled or unknown."""

    spec: Spec
    source: str  # flags | config path | example | form | posted YAML
    assumed: dict[str, str] = field(default_factory=dict)
    ignored: list[str] = field(default_factory=list)
    unmodelled: list[str] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)  # LLaMA-Factory refuses them (allowed here)
    unassessed: list[str] = field(default_factory=list)  # its keys vram-ml has not classified

    @classmethod
    def from_read(cls, read: LlamaFactoryRead, source: str) -> SpecInput:
        """The SpecInput of a read LLaMA-Factory YAML."""
        return cls(read.spec, source, read.assumed, read.ignored, read.unmodelled, read.unknown,
                   read.unassessed)

    def to_dict(self) -> dict[str, Any]:
        return {
            "spec_id": self.spec.spec_id,
            "spec": self.spec.model_dump(mode="json"),
            "source": self.source,
            "assumed": self.assumed,
            "ignored": self.ignored,
            "unmodelled": self.unmodelled,
            "unknown": self.unknown,
            "unassessed": self.unassessed,
        }


def spec_input_from_fields(fields: dict[str, Any], source: str = "flags",
                           launch: dict[str, Any] | None = None,
                           read_files: bool = False) -> SpecInput:
    """Build the spec from Spec fields (the rest take LLaMA-Factory's defaults, reported);
    `launch` may name a DeepSpeed JSON (`deepspeed`) or an accelerate config
    (`accelerate_config`), whose settings the fields override.

    Raises:
        SpecError: an invalid configuration, one line naming the field.
    """
    from vram_ml.launch_configs import read_launch_configs
    from vram_ml.llamafactory import IMAGES_ASSUMED, images_assumed_note

    read = read_launch_configs({}, fields, {**fields, **(launch or {})}, None, read_files)
    given = {**read.fields, **fields}
    spec = build_spec(**given)
    multimodal = spec.resolved_model.shape.is_multimodal
    assumed = assumed_defaults(given, multimodal, spec.transformers_version, spec)
    if multimodal and "images_per_sample" not in given:  # as for a YAML: said, not hidden
        spec = build_spec(**{**given, "images_per_sample": IMAGES_ASSUMED})
        assumed["images_per_sample"] = images_assumed_note()
    assumed.update(read.assumed)
    return SpecInput(spec, source, assumed, unmodelled=read.unmodelled)
