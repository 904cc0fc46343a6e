"""The parameter counts the distributed terms price (distributed.Counts), and the host RAM an
offload takes, from model_states.py's tensors. Pure Python, no torch."""

from __future__ import annotations

from typing import TYPE_CHECKING

from vram_ml.model.formulas.distributed import Counts, Layout, zero_settings
from vram_ml.model.formulas.model_states import (
    Dtypes,
    Tensors,
    adapter_tensors,
    layer_norm_params,
    numel,
)

if TYPE_CHECKING:
    from vram_ml.architectures import ModelShape
    from vram_ml.spec import Spec


def host_bytes(plan: Layout, weights: int, states: int, params: int, dt: Dtypes) -> int:
    """Per-GPU bytes an offload keeps in CPU RAM: DeepSpeed's optimizer offload the fp32 master
    copies and Adam states (`states`), fp32 gradients and a half staging copy of the partition
    (18 bytes per trainable parameter / N with AdamW); its parameter offload the partitions;
    FSDP's CPU offload the shards, a pinned gradient of each and the optimizer states."""
    if not plan.optimizer_on_cpu and not plan.weights_on_cpu:
        return 0
    if plan.kind == "fsdp":
        return (weights + params * dt.trainable + states) // plan.weight_shards
    host = (states + params * (4 + dt.gather)) // plan.optimizer_shards
    if plan.weights_on_cpu:
        host += weights // plan.weight_shards
    return host


def persistent_params(spec: Spec, shape: ModelShape) -> int:
    """ZeRO-3: parameters of at most stage3_param_persistence_threshold elements, which every
    GPU keeps gathered: norms, biases, small LoRA A / B matrices (r x d <= the threshold)."""
    threshold = zero_settings(spec, shape.hidden_size)["persistence"]
    small = sum(lin.out_features * lin.count for lin in shape.layer_linears
                if lin.bias and lin.out_features <= threshold)
    small += sum(lin.in_features * lin.out_features * lin.count for lin in shape.layer_linears
                 if lin.in_features * lin.out_features <= threshold)
    total = shape.num_layers * small
    total += sum(rows * max(cols, 1) * count for rows, cols, count in adapter_tensors(spec, shape)
                 if rows * max(cols, 1) <= threshold)
    if shape.hidden_size <= threshold:
        total += shape.num_layers * layer_norm_params(shape) + shape.final_norm_params
    return total


def param_counts(spec: Spec, shape: ModelShape, dt: Dtypes, weights: int, trainable: Tensors,
                 quantized: Tensors) -> Counts:
    """The counts of `spec`'s model; gathered sizes in `dt.gather` bytes (4-bit weights packed)."""
    g, layers = dt.gather, max(1, shape.num_layers)
    bits = (spec.quant_bits or 8) / 8 if quantized else 0
    layer_quantized = sum(lin.params for lin in shape.layer_linears
                          if not lin.fused) if quantized else 0
    adapters = numel(adapter_tensors(spec, shape))
    layer = int(layer_quantized * bits) + (shape.layer_params - layer_quantized) * g
    layer += adapters // layers * g
    packed = numel(quantized)
    leaf = max((lin.out_features * lin.in_features for lin in shape.layer_linears), default=0)
    return Counts(
        trainable=numel(trainable),
        largest_trainable=max((rows * max(cols, 1) for rows, cols, _ in trainable), default=0),
        weights_bytes=weights,
        adapter_bytes=adapters * dt.trainable,
        gathered_bytes=int(packed * bits) + (shape.total_params - packed + adapters) * g,
        layer_gathered_bytes=layer,
        leaf_gathered_bytes=int(leaf * (bits if quantized else g)),
        root_gathered_bytes=(shape.embedding_params + shape.lm_head_params
                             + shape.final_norm_params) * g,
        head_gathered_bytes=(shape.lm_head_params or shape.embedding_params) * g,
        head_elements=shape.lm_head_params or shape.embedding_params,
        layer_elements=layer // g,
        num_layers=shape.num_layers,
        persistent_bytes=persistent_params(spec, shape) * g,
        trainable_layer_bytes=(shape.layer_params if spec.method in ("full", "freeze")
                               else adapters // layers) * g,
        quantized=bool(quantized),
    )
