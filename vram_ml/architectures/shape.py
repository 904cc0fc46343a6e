"""The shape of a model, read from its config numbers alone (no torch).

`ModelShape` is what every estimator sees: parameter counts split the way memory splits them
(embeddings, decoder layers, head, vision tower, projector) and the linear modules of one decoder
layer, which is what LoRA targets. The counts must equal what transformers builds, exactly; a test
builds every catalog model on the meta device to hold us to that.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, replace

# The input embeddings' and output head's module names where they are not transformers' usual
# embed_tokens / lm_head (peft matches `modules_to_save` by the end of a module's name; the
# remote-code ones after modeling_qwen.py / modeling_chatglm.py, the rest as transformers builds
# them: tests/vram_ml/test_architectures.py checks every catalog model's against
# get_input_embeddings / get_output_embeddings).
EMBEDDING_MODULES = {"qwen": "wte", "gpt_bigcode": "wte", "gpt_neox": "embed_in",
                     "bloom": "word_embeddings", "falcon": "word_embeddings",
                     "chatglm": "word_embeddings"}
HEAD_MODULES = {"chatglm": "output_layer"}
HEAD_MODULES_V4 = {"gpt_neox": "embed_out"}  # transformers 5 renamed it lm_head


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
class LayerVariant:
    """Decoder layers built differently from the shape's main layer (`ModelShape.layer_linears`):
    DeepSeek's and GLM-4.5's first dense layers, Llama 4 Maverick's dense layers between MoE ones.
    Attention is the same in every layer; the MLP (and so the experts) differs."""

    indices: tuple[int, ...]  # which decoder layers (0-based)
    linears: tuple[LinearShape, ...]
    other_params: int  # norms, router, biases outside linears: per layer
    num_experts: int = 0
    num_experts_per_tok: int = 0


@dataclass(frozen=True)
class AttentionShape:
    """What a decoder layer's attention keeps that the head counts alone do not say."""

    # MLA (DeepSeek V2/V3): queries and keys have qk_head_dim per head, values v_head_dim; the
    # latent K/V (kv_lora_rank) is expanded to every head before attention. 0: head_dim.
    qk_head_dim: int = 0
    v_head_dim: int = 0
    kv_lora_rank: int = 0
    q_lora_rank: int = 0
    # layers attending within a window (Gemma 3, gpt-oss, OLMo 3) or a chunk (Llama 4), and its size
    sliding_layers: int = 0
    sliding_window: int = 0
    sinks: bool = False  # gpt-oss: a learned sink logit per head, concatenated to the scores
    sdpa: bool = True  # transformers has an SDPA path (gpt-oss does not: `sdpa` runs eager)
    # per-head q/k norms (`head`: Qwen3, Gemma 3, GLM-4.5) or over all heads (`full`: OLMo 2,
    # MiniMax-M2); they keep fp32 copies of q and k
    qk_norm: str = ""


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
    # nn.Linear modules of the tower outside its blocks (Qwen3-VL's DeepStack mergers, counted in
    # tower_params): bitsandbytes quantizes them as it does the blocks'
    outer_linears: tuple[LinearShape, ...] = ()
    # Per image and family: how the processor turns an image into tokens (see
    # model/formulas/vision.image_geometry): `fixed` (CLIP, SigLIP, Gemma 3), `qwen` (smart resize
    # to a multiple of patch x merge), `tiles` (Idefics3), `pixtral` (rows x (cols + 1))
    image_rule: str = "fixed"
    default_image_size: int = 0  # the processor's longest edge where it caps images (Pixtral)
    # whether gradient checkpointing's input-grad hook reaches the tower (its PreTrainedModel
    # exposes get_input_embeddings: CLIP, SigLIP, Qwen2/2.5-VL, Pixtral do; Qwen3-VL, GLM-4.1V
    # do not, so a frozen tower of theirs stays out of the graph)
    hooked_when_checkpointed: bool = True


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
    layer_variants: tuple[LayerVariant, ...] = ()
    attention: AttentionShape = field(default_factory=AttentionShape)
    # parameters transformers creates in fp32 whatever the model's dtype (DeepSeek / GLM-4.5
    # routers: `_keep_in_fp32_modules_strict`; gpt-oss norms: `_keep_in_fp32_modules`)
    fp32_params: int = 0
    # how routed experts run: `grouped` (fused 3-D experts through grouped_mm, top-k tokens per
    # expert) or `all` (Llama 4: every expert runs over every token, scaled by its score)
    moe_routing: str = "grouped"
    # The decoder layer as transformers 4.x builds it, where it differs from 5.x: MoE experts as
    # one nn.Linear each and the router as an nn.Linear (so bitsandbytes quantizes them and LoRA
    # reaches them). None: the same layer in both. Read through `for_transformers`.
    v4_layer_linears: tuple[LinearShape, ...] | None = None
    v4_layer_other_params: int | None = None
    embedding_rows: int = 0  # rows of the input embedding where not vocab_size (Mllama: + 8)
    v4_head_module: str = ""  # set by for_transformers(4) where 4.x named the head otherwise

    @property
    def layer_linear_params(self) -> int:
        return sum(linear.params for linear in self.layer_linears)

    @property
    def layer_params(self) -> int:
        """Parameters of one main decoder layer (see `layer_groups` for the others)."""
        return self.layer_linear_params + self.layer_other_params

    @property
    def decoder_params(self) -> int:
        """Parameters of all decoder layers."""
        return sum(count * group.layer_params for count, group in self.layer_groups)

    @property
    def layer_groups(self) -> tuple[tuple[int, ModelShape], ...]:
        """(layer count, a uniform view of the shape) per kind of decoder layer: the main layer
        first, then each LayerVariant; a view's layer fields are that kind's. Estimators sum
        per-layer terms over these."""
        if not self.layer_variants:
            return ((self.num_layers, self),)
        return _layer_groups(self)

    @property
    def main_layer_indices(self) -> frozenset[int]:
        taken = {index for variant in self.layer_variants for index in variant.indices}
        return frozenset(set(range(self.num_layers)) - taken)

    def groups_of_layers(self, indices: set[int] | range) -> list[tuple[int, ModelShape]]:
        """(how many of `indices` are of the kind, the kind's view) per layer group: what the
        last N layers (freeze) or the last layer (backward) are made of."""
        wanted = set(indices)
        kinds = [self.main_layer_indices] if self.main_layer_indices else []
        kinds += [frozenset(variant.indices) for variant in self.layer_variants]
        return [(len(wanted & kind), group) for kind, (_, group) in
                zip(kinds, self.layer_groups, strict=True) if wanted & kind]

    @property
    def last_layer(self) -> ModelShape:
        """The view of the last decoder layer's kind (backward starts there)."""
        return self.groups_of_layers({self.num_layers - 1})[0][1]

    @property
    def text_params(self) -> int:
        """Language model parameters: embeddings, all decoder layers, final norm, head."""
        return (
            self.embedding_params
            + self.decoder_params
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
        linears = [*self.layer_linears,
                   *(lin for variant in self.layer_variants for lin in variant.linears)]
        names = (linear.name for linear in linears if not linear.fused)
        return tuple(dict.fromkeys(names))

    @property
    def embedding_module(self) -> str:
        return EMBEDDING_MODULES.get(self.model_type, "embed_tokens")

    @property
    def head_module(self) -> str:
        return self.v4_head_module or HEAD_MODULES.get(self.model_type, "lm_head")

    @property
    def input_embedding_params(self) -> int:
        """The input embedding's weight (embedding_params less position tables and norms)."""
        return (self.embedding_rows or self.vocab_size) * self.hidden_size

    @property
    def head_module_params(self) -> int:
        """The output head module's parameters (a tied head: the shared embedding weight)."""
        tied = self.input_embedding_params if self.tie_word_embeddings else 0
        return self.lm_head_params + tied  # lm_head_params: a tied head's bias alone (Phi)

    @property
    def is_multimodal(self) -> bool:
        return self.vision is not None

    @property
    def has_fused_experts(self) -> bool:
        return any(linear.fused for linear in self.layer_linears)

    def for_transformers(self, major: int) -> ModelShape:
        """The shape as that transformers major version builds the model (same parameters)."""
        if major >= 5:
            return self
        if self.v4_layer_linears is None:
            head = HEAD_MODULES_V4.get(self.model_type, "")
            return replace(self, v4_head_module=head) if head else self
        return replace(self, layer_linears=self.v4_layer_linears,
                       layer_other_params=self.v4_layer_other_params, v4_layer_linears=None,
                       v4_layer_other_params=None)


_GROUPS: dict[int, tuple[ModelShape, tuple[tuple[int, ModelShape], ...]]] = {}


def _layer_groups(shape: ModelShape) -> tuple[tuple[int, ModelShape], ...]:
    """The uniform views of a shape with layer variants, made once per shape."""
    cached = _GROUPS.get(id(shape))
    if cached is not None and cached[0] is shape:
        return cached[1]
    main = len(shape.main_layer_indices)
    groups = [(main, dataclasses.replace(shape, layer_variants=()))] if main else []
    for variant in shape.layer_variants:
        groups.append((len(variant.indices), dataclasses.replace(
            shape, layer_linears=variant.linears, layer_other_params=variant.other_params,
            num_experts=variant.num_experts, num_experts_per_tok=variant.num_experts_per_tok,
            layer_variants=(), v4_layer_linears=None, v4_layer_other_params=None)))
    if len(_GROUPS) > 1024:
        _GROUPS.clear()
    _GROUPS[id(shape)] = (shape, tuple(groups))
    return _GROUPS[id(shape)][1]
