"""The shape of a model, read from its config numbers alone (no torch).

`ModelShape` is what every estimator sees: parameter counts split the way memory splits them
(embeddings, decoder layers, head, vision tower, projector) and the linear modules of one decoder
layer, which is what LoRA targets. The counts must equal what transformers builds, exactly; a test
builds every catalog model on the meta device to hold us to that.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace


class UnsupportedArchitecture(ValueError):
    """The config's model_type has no closed-form shape here."""


@dataclass(frozen=True)
class LinearShape:
    """One linear module inside a decoder layer (per layer; `count` > 1 for MoE experts)."""

    name: str  # the module name peft matches in `target_modules` (q_proj, query_key_value, ...)
    in_features: int
    out_features: int
    bias: bool = False
    count: int = 1
    # True for MoE experts that transformers 5 stores as one 3-D parameter (Mixtral's
    # `experts.gate_up_proj`), not as nn.Linear modules: LoRA `target_modules` and bitsandbytes
    # (4/8-bit) do not reach them, so they stay in the compute dtype under QLoRA.
    fused: bool = False

    @property
    def params(self) -> int:
        bias = self.out_features if self.bias else 0
        return self.count * (self.in_features * self.out_features + bias)


@dataclass(frozen=True)
class VisionShape:
    """A vision tower and its projector (VLMs only)."""

    kind: str  # clip | siglip | qwen2_vl | mllama ...
    num_layers: int
    hidden_size: int
    intermediate_size: int
    num_attention_heads: int
    patch_size: int
    image_size: int  # native resolution of the tower (fixed-resolution towers); 0 when dynamic
    tower_params: int
    projector_params: int
    spatial_merge_size: int = 1  # Qwen2-VL merges 2x2 patches into one token
    temporal_patch_size: int = 1  # Qwen2-VL patches span 2 frames (an image is repeated)
    dynamic_resolution: bool = False  # Qwen2-VL: tokens grow with the image; CLIP/SigLIP: fixed
    fixed_image_tokens: int | None = None  # tokens one image adds when the resolution is fixed
    # patch states the tower itself runs for one image at its native resolution, where that
    # differs from the tokens it adds (LLaVA: 577 with CLS; Idefics3: 729 before pixel shuffle;
    # Mllama: 4 tiles x 1601, fed to cross-attention, not to the sequence)
    encoder_tokens_per_image: int | None = None
    # One block of the tower: its nn.Linear modules (what LoRA targets in a tower that is not
    # frozen) and all its parameters (what `freeze` trains of a block whose index it trains)
    layer_linears: tuple[LinearShape, ...] = ()
    layer_params: int = 0


@dataclass(frozen=True)
class ModelShape:
    """Everything about a model that moves memory, as plain numbers."""

    model_type: str
    num_layers: int
    hidden_size: int
    intermediate_size: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    vocab_size: int
    max_position_embeddings: int
    tie_word_embeddings: bool
    layer_linears: tuple[LinearShape, ...]
    layer_other_params: int  # norms, router, biases outside linears: per decoder layer
    embedding_params: int  # input embeddings (+ learned position embeddings)
    lm_head_params: int  # 0 when tied to the input embeddings
    final_norm_params: int
    num_experts: int = 0
    num_experts_per_tok: int = 0
    vision: VisionShape | None = None
    extra_params: int = 0  # anything else transformers builds (e.g. multimodal glue)
    notes: tuple[str, ...] = field(default_factory=tuple)
    # The decoder layer as transformers 4.x builds it, where it differs from 5.x: MoE experts as
    # one nn.Linear each and the router as an nn.Linear (so bitsandbytes quantizes them and LoRA
    # reaches them). None: the same layer in both. Read through `for_transformers`.
    v4_layer_linears: tuple[LinearShape, ...] | None = None
    v4_layer_other_params: int | None = None

    @property
    def layer_linear_params(self) -> int:
        return sum(linear.params for linear in self.layer_linears)

    @property
    def layer_params(self) -> int:
        return self.layer_linear_params + self.layer_other_params

    @property
    def text_params(self) -> int:
        """Language model parameters: embeddings, all decoder layers, final norm, head."""
        return (
            self.embedding_params
            + self.num_layers * self.layer_params
            + self.final_norm_params
            + self.lm_head_params
        )

    @property
    def vision_params(self) -> int:
        return 0 if self.vision is None else self.vision.tower_params

    @property
    def projector_params(self) -> int:
        return 0 if self.vision is None else self.vision.projector_params

    @property
    def total_params(self) -> int:
        """All parameters, tied ones counted once (`sum(p.numel() for p in model.parameters())`)."""
        return self.text_params + self.vision_params + self.projector_params + self.extra_params

    @property
    def linear_names(self) -> tuple[str, ...]:
        """The nn.Linear modules of one decoder layer that LoRA can target (fused experts left out;
        a name shared by two modules, like GPTBigCode's two `c_proj`, appears once)."""
        names = (linear.name for linear in self.layer_linears if not linear.fused)
        return tuple(dict.fromkeys(names))

    @property
    def is_multimodal(self) -> bool:
        return self.vision is not None

    @property
    def has_fused_experts(self) -> bool:
        return any(linear.fused for linear in self.layer_linears)

    def for_transformers(self, major: int) -> ModelShape:
        """The shape as that transformers major version builds the model (same parameters)."""
        if major >= 5 or self.v4_layer_linears is None:
            return self
        return replace(self, layer_linears=self.v4_layer_linears,
                       layer_other_params=self.v4_layer_other_params, v4_layer_linears=None,
                       v4_layer_other_params=None)
