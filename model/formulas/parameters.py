"""Which parameters train, and how many: the one definition of trainable parameters.

The analytical estimator (model_states.py, activations.py, vision.py), the learned model's
features and the planner all count through here; a test builds the recipe's model (tests/model/
recipe/test_parameter_counts.py) and holds the count to what transformers + peft really create.
The rules are LLaMA-Factory's (v0.9.x, src/llamafactory/model/adapter.py and
model_utils/{misc,visual}.py), as the recipe (model/recipe/methods.py) applies them:

- `full`: every parameter but a frozen vision tower and a frozen projector
  (`freeze_vision_tower`, `freeze_multi_modal_projector`: LLaMA-Factory's keys, default true).
- `freeze`: the last `freeze_trainable_layers` decoder layers. LLaMA-Factory selects them by the
  name fragment `.{index}.`, so a tower that is not frozen trains its blocks of the same indices
  too; a projector that is not frozen trains whole.
- `lora` / `qlora`: adapters A (r x in) and B (out x r) on every targeted nn.Linear of the decoder
  layers (`all`: every one but fused experts; peft 0.21 moves gate/up/down targets onto fused
  experts where it converts them, experts.py) and, when the tower is not frozen, on its blocks'
  linears of the targeted names (`all`: every block linear). Never on the output head or the
  projector (`all` leaves projector keys out, find_all_linear_modules); no base weight trains.
  `additional_target` (peft `modules_to_save`, adapter.py:246-273) adds a trainable copy of the
  input embeddings and / or the output head (peft ModulesToSaveWrapper.update deep-copies the
  module and freezes the original, utils/other.py:632-667): new parameters, the originals stay.

Pure Python, no torch: `predict` counts this thousands of times a second.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from vram_ml.model.formulas.experts import lora_expert_ranks, lora_linear_targets

if TYPE_CHECKING:
    from vram_ml.architectures import LinearShape, ModelShape
    from vram_ml.spec import Spec

Tensors = list[tuple[int, int, int]]  # (rows, cols, count); cols 0 = a vector of `rows`


def numel(tensors: Tensors) -> int:
    return sum(rows * max(cols, 1) * count for rows, cols, count in tensors)


def _linear_tensors(linears: tuple[LinearShape, ...], count: int) -> Tensors:
    tensors = [(lin.out_features, lin.in_features, lin.count * count) for lin in linears]
    return tensors + [(lin.out_features, 0, lin.count * count) for lin in linears if lin.bias]


def _rest(tensors: Tensors, params: int) -> Tensors:
    """`tensors` and one vector with what they leave of `params` (norms, embeddings, ...)."""
    rest = params - numel(tensors)
    return tensors + [(rest, 0, 1)] if rest > 0 else tensors


def vision_linear_tensors(shape: ModelShape) -> Tensors:
    """The weights of every linear of the tower, its blocks' and those outside them (no biases):
    what bitsandbytes quantizes."""
    v = shape.vision
    return [(lin.out_features, lin.in_features, lin.count * v.num_layers)
            for lin in v.layer_linears] + [(lin.out_features, lin.in_features, lin.count)
                                           for lin in v.outer_linears]


def vision_tensors(shape: ModelShape) -> Tensors:
    """The whole tower: its block linears (weights, biases) and the rest as one vector."""
    v = shape.vision
    return _rest(_linear_tensors(v.layer_linears, v.num_layers), v.tower_params)


def vision_block_tensors(shape: ModelShape, blocks: int) -> Tensors:
    v = shape.vision
    return _rest(_linear_tensors(v.layer_linears, blocks), blocks * v.layer_params)


def projector_tensors(shape: ModelShape) -> Tensors:
    """The projector as one linear into the text hidden size (+ what does not divide)."""
    hidden, params = shape.hidden_size, shape.projector_params
    return _rest([(hidden, params // hidden, 1)], params)


def layer_tensors(shape: ModelShape, layers: int) -> Tensors:
    """The last `layers` decoder layers, per layer group (dense and MoE layers, ModelShape
    `layer_groups`): linears (weights, biases) and norms / routers as one vector per group."""
    groups = (shape.layer_groups if layers >= shape.num_layers else
              shape.groups_of_layers(range(shape.num_layers - layers, shape.num_layers)))
    tensors: Tensors = []
    for count, group in groups:
        tensors += _rest(_linear_tensors(group.layer_linears, count), count * group.layer_params)
    return tensors


def freeze_vision_blocks(spec: Spec, shape: ModelShape) -> int:
    """Tower blocks `freeze` trains: those whose index is one of the trained decoder layers'."""
    if shape.vision is None or spec.freeze_vision_tower or spec.method != "freeze":
        return 0
    first = max(0, shape.num_layers - spec.freeze_trainable_layers)
    return max(0, min(shape.num_layers, shape.vision.num_layers) - first)


def base_trainable_tensors(spec: Spec, shape: ModelShape) -> Tensors:
    """Model parameters (not adapters) that train (see the module docstring)."""
    hidden, tensors = shape.hidden_size, []
    if spec.method == "full":
        tensors = [(shape.embedding_params // hidden, hidden, 1),
                   (shape.final_norm_params + shape.extra_params, 0, 1)]
        tensors += layer_tensors(shape, shape.num_layers)
        if shape.lm_head_params:
            tensors.append((shape.lm_head_params // hidden, hidden, 1))
        if shape.vision is not None and not spec.freeze_vision_tower:
            tensors += vision_tensors(shape)
    elif spec.method == "freeze":
        tensors = layer_tensors(shape, spec.freeze_trainable_layers)
        blocks = freeze_vision_blocks(spec, shape)
        tensors += vision_block_tensors(shape, blocks) if blocks else []
    if (shape.vision is not None and spec.method in ("full", "freeze")
            and not spec.freeze_multi_modal_projector):
        tensors += projector_tensors(shape)
    return tensors


def _lora_pairs(rank: int, linears: tuple[LinearShape, ...], targets: set[str] | None,
                layers: int) -> Tensors:
    """A (r x in) and B (out x r) per targeted linear (`targets` None: all), in `layers` layers."""
    tensors = []
    for lin in linears:
        if not lin.fused and (targets is None or lin.name in targets):
            count = lin.count * layers
            tensors += [(rank, lin.in_features, count), (lin.out_features, rank, count)]
    return tensors


def adapter_tensors(spec: Spec, shape: ModelShape) -> Tensors:
    """LoRA A and B tensors (peft LoraLayer) on the decoder layers of every layer group and an
    unfrozen tower; on fused experts where peft converts the targets (experts.py: one pair of
    r x E rows per layer, peft's ParamWrapper)."""
    if spec.method not in ("lora", "qlora"):
        return []
    targets, ranks = lora_linear_targets(spec, shape), lora_expert_ranks(spec, shape)
    tensors: Tensors = []
    for layers, group in shape.layer_groups:
        tensors += _lora_pairs(spec.lora_rank, group.layer_linears, targets, layers)
        for lin in group.layer_linears:
            if lin.fused and lin.name in ranks:
                rows = ranks[lin.name] * lin.count
                tensors += [(rows, lin.in_features, layers), (lin.out_features, rows, layers)]
    return tensors + vision_adapter_tensors(spec, shape)


def vision_adapter_tensors(spec: Spec, shape: ModelShape) -> Tensors:
    if (spec.method not in ("lora", "qlora") or shape.vision is None
            or spec.freeze_vision_tower):
        return []
    targets = None if spec.lora_target == ("all",) else set(spec.lora_target)
    v = shape.vision
    return _lora_pairs(spec.lora_rank, v.layer_linears, targets, v.num_layers)


def saved_module_tensors(spec: Spec, shape: ModelShape) -> Tensors:
    """The copies peft's modules_to_save trains (Spec.additional_target): new parameters beside
    the frozen originals (which stay counted where they are)."""
    if spec.method not in ("lora", "qlora"):
        return []
    tensors: Tensors = []
    rows = shape.input_embedding_params // shape.hidden_size
    if shape.embedding_module in spec.additional_target:
        tensors.append((rows, shape.hidden_size, 1))
    if shape.head_module in spec.additional_target:
        head_rows = rows if shape.tie_word_embeddings else shape.vocab_size
        bias = shape.head_module_params - head_rows * shape.hidden_size  # Phi's head bias
        tensors += [(head_rows, shape.hidden_size, 1)] + ([(bias, 0, 1)] if bias else [])
    return tensors


def head_copy_params(spec: Spec, shape: ModelShape) -> int:
    """The output head's modules_to_save copy (0 without one): it trains, so its input is saved
    and its gradient made at the head's backward, as in full fine-tuning."""
    if spec.method not in ("lora", "qlora") or shape.head_module not in spec.additional_target:
        return 0
    return shape.head_module_params


@dataclass(frozen=True)
class TrainableParameters:
    """What trains in one spec, in parameters."""

    base: int  # model parameters that train
    adapters: int  # LoRA parameters added by peft
    vision: int  # of base + adapters, those inside the vision tower
    projector: int  # of base, the projector's
    saved: int = 0  # copies of modules_to_save (additional_target): new, trainable

    @property
    def total(self) -> int:
        return self.base + self.adapters + self.saved


def trainable_parameters(spec: Spec) -> TrainableParameters:
    """The trainable parameters of `spec`, split by where they are (the model as the spec's
    transformers version builds it: 4.x MoE experts are nn.Linear modules LoRA reaches)."""
    shape = spec.shape
    base = numel(base_trainable_tensors(spec, shape))
    adapters = numel(adapter_tensors(spec, shape))
    vision = numel(vision_adapter_tensors(spec, shape))
    projector = 0
    if shape.vision is not None and spec.method in ("full", "freeze"):
        if spec.method == "full" and not spec.freeze_vision_tower:
            vision += shape.vision_params
        vision += numel(vision_block_tensors(shape, freeze_vision_blocks(spec, shape)))
        projector = 0 if spec.freeze_multi_modal_projector else shape.projector_params
    return TrainableParameters(base, adapters, vision, projector,
                               numel(saved_module_tensors(spec, shape)))


def autocast_weight_params(spec: Spec, shape: ModelShape) -> tuple[int, int]:
    """(trainable matmul weights, of which the output head): under CUDA autocast each fp32
    trainable weight a matmul reads gets a cached half copy, saved for backward by its op."""
    head = (shape.lm_head_params or shape.embedding_params) if spec.method == "full" else 0
    if spec.method == "full":
        groups = shape.layer_groups
    elif spec.method == "freeze":
        groups = shape.groups_of_layers(range(shape.num_layers - spec.freeze_trainable_layers,
                                              shape.num_layers))
    else:
        return numel(adapter_tensors(spec, shape)), 0
    weights = sum(count * lin.count * lin.in_features * lin.out_features
                  for count, group in groups for lin in group.layer_linears)
    if spec.method == "full" and shape.vision is not None and not spec.freeze_vision_tower:
        weights += numel(vision_linear_tensors(shape))
    blocks = freeze_vision_blocks(spec, shape)
    if blocks:
        weights += blocks * sum(lin.params - (lin.out_features if lin.bias else 0)
                                for lin in shape.vision.layer_linears)
    if trainable_parameters(spec).projector:
        weights += shape.projector_params
    return weights + head, head


def parameter_counts(spec: Spec) -> tuple[int, int]:
    """(trainable, frozen) parameters: adapters and modules_to_save copies count as trainable,
    the weights they wrap or copy as frozen; trainable + frozen = the model's parameters + the
    adapters + the copies."""
    counts = trainable_parameters(spec)
    return counts.total, spec.shape.total_params - counts.base
