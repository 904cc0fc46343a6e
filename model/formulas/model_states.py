"""Model states: what the parameters, their gradients and the optimizer cost, in bytes.

The analytical estimator's resident terms: dtypes per tensor kind, trainable / adapter /
quantized parameter tensors, 4-bit and 8-bit quantization constants (Dettmers et al. 2023, as
bitsandbytes 0.50 implements them), optimizer states and temporaries, and where they live
across GPUs (DDP, DeepSpeed ZeRO, FSDP: the terms are distributed.py's). Pure Python, no torch.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from math import ceil
from typing import TYPE_CHECKING

from vram_ml.model.formulas.distributed import DistributedTerms, distributed_terms, layout
from vram_ml.model.formulas.parameters import (
    Tensors,
    adapter_tensors,
    base_trainable_tensors,
    head_copy_params,
    numel,
    projector_tensors,
    saved_module_tensors,
    vision_linear_tensors,
)
from vram_ml.model.formulas.stack import StackRules

if TYPE_CHECKING:
    from vram_ml.architectures import ModelShape
    from vram_ml.spec import Spec

# bitsandbytes functional.quantize_4bit: blocksize 64, one fp32 absmax per block; double quant
# stores it as uint8 and adds an fp32 absmax per 256 blocks (quantize_blockwise) + an fp32 offset.
NF4_BLOCKSIZE = 64
NESTED_BLOCKSIZE = 256
NF4_CODE_BYTES = 16 * 4  # the 16-value fp32 code each QuantState keeps
# bitsandbytes optimizers: 8-bit blockwise states (block 256, fp32 absmax) for tensors of at least
# min_8bit_size = 4096 elements, fp32 states below that.
BNB_8BIT_MIN_SIZE = 4096
BNB_8BIT_BLOCKSIZE = 256
# Paged optimizers (Optimizer8bit.get_state_buffer): only the states of tensors of at least 1e5
# elements go to CUDA managed memory; smaller ones, and 8-bit absmax, stay in PyTorch's allocator.
BNB_PAGED_MIN_SIZE = 100_000



@dataclass(frozen=True)
class Dtypes:
    """Bytes per element of each kind of tensor, for one spec (the Spec docstring's semantics)."""

    frozen: int  # frozen, unquantized weights (the compute dtype: LLaMA-Factory's, trl's load)
    trainable: int  # trainable parameters and their gradients
    compute: int  # matmul outputs and most saved activations
    hidden: int  # the residual stream (the embedding's dtype, promoted by the residual adds)
    autocast: bool
    master: int  # DeepSpeed's fp32 master copy per trainable parameter (0 without DeepSpeed)
    norm: int = 0  # frozen norm weights, when not `frozen` (TRL's QLoRA: fp32)
    gathered_half: bool = False  # FSDP mixed precision: matmuls read gathered half copies
    # modules_to_save copies (Spec.additional_target): what a full fine-tuning's trainable
    # parameters get (LLaMA-Factory upcasts every trainable parameter; peft casts only LoRA
    # layers, so under TRL / the plain Trainer the copies keep the load dtype). 0: `trainable`.
    saved: int = 0

    @property
    def saved_bytes(self) -> int:
        return self.saved or self.trainable

    @property
    def gather(self) -> int:
        """Bytes per element of a gathered parameter (ZeRO-3: the module's half dtype; FSDP:
        MixedPrecision param_dtype) and of a gradient bucket."""
        return self.frozen

    @property
    def norm_bytes(self) -> int:
        return self.norm or self.frozen

    @property
    def casts_trainable(self) -> bool:
        """Autocast makes a half copy of each trainable weight a matmul reads (fp32 ones only:
        TRL's bf16 full fine-tuning has none)."""
        return self.autocast and self.trainable > self.compute and not self.gathered_half

    @classmethod
    def of(cls, spec: Spec) -> Dtypes:
        dt = cls._of(spec)
        if not spec.additional_target or spec.method not in ("lora", "qlora"):
            return dt
        full = cls._of(spec.model_copy(update={"method": "full", "quant_bits": None}))
        saved, rules = full.trainable, StackRules.of(spec)
        if spec.method == "qlora" and not rules.llamafactory and saved == dt.frozen:
            # copied after peft's kbit prepare upcast the originals (TRL casts them back)
            saved = rules.frozen_bytes("embedding", dt.frozen)
        # an fp32 embedding copy turns the residual stream fp32, as in full fine-tuning
        embedding = spec.shape.embedding_module in spec.additional_target
        hidden = max(dt.hidden, saved) if embedding else dt.hidden
        return dataclasses.replace(dt, saved=saved, hidden=hidden)

    @classmethod
    def _of(cls, spec: Spec) -> Dtypes:
        if spec.precision == "fp32":
            return cls(4, 4, 4, 4, False, 0)
        if spec.distributed == "deepspeed" and spec.precision != "no_amp":
            # DeepSpeed bf16/fp16 casts the module to half (ZeRO-0 too); fp32 master weights
            # live in the optimizer (ZeRO paper: 2 + 2 + 12 bytes per parameter); no autocast.
            return cls(2, 2, 2, 2, False, 4)
        if spec.distributed == "fsdp" and spec.precision in ("bf16", "fp16"):
            # accelerate under mixed precision: trainable parameters in fp32 (FSDP1 upcasts
            # the flat parameters that require grad, FSDP2 the model: StackRules), matmuls on
            # the half copies FSDP gathers (MixedPrecision param_dtype), no fp32 QLoRA casts
            # (TRL skips its kbit preparation for a sharded QLoRA model).
            return cls(2, 4, 2, 2, True, 0, gathered_half=True)
        rules = StackRules.of(spec)
        adapters = spec.method in ("lora", "qlora")
        if not rules.llamafactory:
            # TRL / the plain Trainer: nothing upcast but the adapters (peft) and, under
            # QLoRA, the norms, whose fp32 outputs turn the residual stream fp32
            # (StackRules.norms_fp32; 8-bit under peft's prepare: the embeddings too).
            # Autocast only with the bf16 / fp16 flags (pure_bf16 and no_amp: a
            # half-precision model trained as loaded).
            trainable = (4 if rules.fp32_adapters else 2) if adapters else 2
            norm = rules.frozen_bytes("norm", 2)
            hidden = max(norm, rules.frozen_bytes("embedding", 2))
            return cls(2, trainable, 2, hidden, spec.precision in ("bf16", "fp16"), 0, norm)
        if spec.precision == "pure_bf16":  # LoRA adapters stay fp32: peft casts them
            return cls(2, 4 if adapters else 2, 2, 2, False, 0)
        # bf16/fp16 AMP and no_amp: half frozen weights, trainable params upcast to fp32
        # (LLaMA-Factory's cast_trainable_params_to_fp32). Full fine-tuning upcasts everything,
        # so without autocast it computes in fp32 and with it the residual stream stays fp32.
        full = spec.method == "full"
        if spec.precision == "no_amp":
            return cls(2, 4, 4 if full else 2, 4 if full else 2, False, 0)
        return cls(2, 4, 2, 4 if full else 2, True, 0)

    def in_layer(self, trainable: bool) -> Dtypes:
        """Without autocast an fp32 trainable layer computes in fp32 (its norm's fp32 weight
        promotes the stream): freeze + no_amp."""
        if trainable and not self.autocast and self.trainable == 4:
            return Dtypes(self.frozen, 4, 4, 4, False, self.master, self.norm)
        return self


# --- parameters (which train: parameters.py) ---------------------------------------------


def layer_norm_params(shape: ModelShape) -> int:
    """Norm weights (and biases) of one decoder layer: its other parameters but the router that
    transformers 5 keeps outside the linears (Mixtral's MixtralTopKRouter.weight)."""
    router = shape.num_experts * shape.hidden_size if shape.has_fused_experts else 0
    return shape.layer_other_params - router


def frozen_kind_params(shape: ModelShape) -> dict[str, int]:
    """QLoRA's unquantized parameters by `StackRules.frozen_bytes` kind: norms (per layer + the
    final one), embeddings + output head, and the rest (fused experts, routers, biases of the
    quantized linears, the vision tower's non-linear parameters, extra glue), per layer group."""
    norms = other = 0
    for count, group in shape.layer_groups:
        per_layer = layer_norm_params(group)
        fused = sum(lin.params for lin in group.layer_linears if lin.fused)
        biases = sum(lin.out_features * lin.count for lin in group.layer_linears
                     if lin.bias and not lin.fused)
        norms += count * per_layer
        other += count * (fused + biases + group.layer_other_params - per_layer)
    if shape.vision is not None:
        other += shape.vision.tower_params - numel(vision_linear_tensors(shape))
    return {"norm": norms + shape.final_norm_params,
            "embedding": shape.embedding_params + shape.lm_head_params,
            "other": other + shape.extra_params}


def upcast_bytes(spec: Spec, shape: ModelShape, dt: Dtypes) -> int:
    """Bytes the stack's QLoRA casts add over keeping frozen unquantized weights in the compute
    dtype (StackRules.frozen_bytes: peft's prepare_model_for_kbit_training, TRL's norm casts)."""
    if spec.method != "qlora" or dt.gathered_half:
        return 0
    rules = StackRules.of(spec)
    return sum(params * (rules.frozen_bytes(kind, dt.frozen) - dt.frozen)
               for kind, params in frozen_kind_params(shape).items())


def fp32_kept_bytes(spec: Spec, shape: ModelShape, dt: Dtypes) -> int:
    """Parameters transformers creates in fp32 whatever the load dtype (DeepSeek / GLM-4.5 routers,
    gpt-oss norms: ModelShape.fp32_params), beyond their dtype's bytes (unless a QLoRA cast
    already made the "other" parameters fp32)."""
    kept = dt.trainable if spec.method == "full" else dt.frozen
    if spec.method == "qlora" and StackRules.of(spec).frozen_bytes("other", dt.frozen) == 4:
        return 0
    return shape.fp32_params * max(0, 4 - kept)


def quantized_tensors(spec: Spec, shape: ModelShape) -> Tensors:
    """What transformers' bitsandbytes integration quantizes: every nn.Linear but the output head
    (get_keys_to_not_convert), so the vision tower and projector too; fused experts are not
    nn.Linear and stay in the compute dtype."""
    if spec.method != "qlora":
        return []
    tensors = [(lin.out_features, lin.in_features, lin.count * layers)
               for layers, group in shape.layer_groups for lin in group.layer_linears
               if not lin.fused]
    if shape.vision is not None:
        tensors += vision_linear_tensors(shape) + projector_tensors(shape)[:1]
    return tensors


def quantization_constant_bytes(spec: Spec, tensors: Tensors) -> int:
    """4-bit: absmax per 64 weights (fp32, or uint8 + fp32 per 256 blocks + offset with double
    quant) + the code; 8-bit (LLM.int8 Int8Params): one fp32 scale (SCB) per output row."""
    total = 0
    for rows, cols, count in tensors:
        if spec.quant_bits == 8:
            total += rows * 4 * count
            continue
        blocks = ceil(rows * cols / NF4_BLOCKSIZE)
        if spec.double_quant:
            per = blocks + ceil(blocks / NESTED_BLOCKSIZE) * 4 + 4 + NF4_CODE_BYTES
        else:
            per = blocks * 4 + NF4_CODE_BYTES
        total += per * count
    return total


# --- optimizer --------------------------------------------------------------------------------


# Optimizer -> (states per parameter, how each is stored): "param" in the parameter's dtype
# (torch, zeros_like), "fp32", "bnb8" (bitsandbytes blockwise uint8 + an fp32 absmax per 256, fp32
# below min_8bit_size elements), "factored" (Adafactor), "none". AdamW / AdEMAMix (bitsandbytes
# keeps its fast and slow EMAs in one double buffer) / Lion / RMSprop / Adagrad, as built by
# transformers 5.24 trainer_optimizer.py (SGD and RMSprop with momentum 0, RMSprop not centered).
OPTIMIZER_STATES: dict[str, tuple[int, str]] = {
    "adamw_torch": (2, "param"), "adamw_torch_fused": (2, "param"),
    "adamw_8bit": (2, "bnb8"), "paged_adamw_8bit": (2, "bnb8"), "paged_adamw_32bit": (2, "fp32"),
    "lion_8bit": (1, "bnb8"), "paged_lion_8bit": (1, "bnb8"),
    "lion_32bit": (1, "fp32"), "paged_lion_32bit": (1, "fp32"),
    "ademamix_8bit": (3, "bnb8"), "paged_ademamix_8bit": (3, "bnb8"),
    "ademamix": (3, "fp32"), "paged_ademamix_32bit": (3, "fp32"),
    "rmsprop": (1, "param"), "rmsprop_bnb_8bit": (1, "bnb8"), "rmsprop_bnb_32bit": (1, "fp32"),
    "adagrad": (1, "param"), "sgd": (0, "none"), "adafactor": (1, "factored"),
}
# torch optimizers whose CUDA default (`foreach`) makes one full copy of a state per step
# (_foreach_sqrt of exp_avg_sq / square_avg / state_sum); fused AdamW makes none.
FOREACH_COPY_OPTIMIZERS = frozenset({"adamw_torch", "rmsprop", "adagrad"})


def optimizer_bytes(optimizer: str, tensors: Tensors, state_bytes: int) -> tuple[int, int]:
    """(states, step temporaries) of `optimizer` over the trainable tensors (OPTIMIZER_STATES).

    Adafactor (HF, beta1 None): fp32 row + column factors per matrix, a full fp32 state per
    vector; its step works one parameter at a time with ~2 fp32 temporaries of it (update,
    grad**2). `foreach` torch optimizers: one state-sized copy (FOREACH_COPY_OPTIMIZERS).
    """
    count_per, kind = OPTIMIZER_STATES[optimizer]
    states = temporaries = 0
    for rows, cols, count in tensors:
        size = rows * max(cols, 1)
        if kind == "param":
            per = size * state_bytes
        elif kind == "bnb8":
            per = (size + 4 * ceil(size / BNB_8BIT_BLOCKSIZE)
                   if size >= BNB_8BIT_MIN_SIZE else 4 * size)
        elif kind == "fp32":
            per = 4 * size
        elif kind == "factored":
            per = (rows + cols) * 4 if cols else size * 4
            temporaries = max(temporaries, 2 * size * 4)
        else:
            per = 0
        states += count_per * per * count
    if optimizer in FOREACH_COPY_OPTIMIZERS:
        temporaries = numel(tensors) * state_bytes
    return states, temporaries


def paged_state_bytes(optimizer: str, tensors: Tensors) -> int:
    """The part of a bitsandbytes paged optimizer's states in CUDA managed memory: the uint8
    (8-bit) or fp32 (32-bit) states of tensors of at least BNB_PAGED_MIN_SIZE elements, the rest
    of `optimizer_bytes` being in the caching allocator (vram_ml/sample.py: the target counts
    the two separately, the measurement reads them separately)."""
    if not optimizer.startswith("paged_"):
        return 0
    count_per, kind = OPTIMIZER_STATES[optimizer]  # paged AdamW, Lion, AdEMAMix: 8 or 32 bit
    per_element = count_per * (1 if kind == "bnb8" else 4)
    return sum(per_element * rows * max(cols, 1) * count for rows, cols, count in tensors
               if rows * max(cols, 1) >= BNB_PAGED_MIN_SIZE)


# --- model states: weights, gradients, optimizer, across GPUs ----------------------------------


@dataclass(frozen=True)
class ModelStates:
    """Per-GPU bytes of the parameters, their gradients and optimizer states."""

    weights: int
    quantization_constants: int
    adapters: int
    trainable_params: int
    gradients: int  # all gradients, once backward is done
    persistent_gradients: int  # alive through forward (gradient accumulation; ZeRO-3's buffer)
    gradient_buffers: int  # DDP buckets / ZeRO-3's reduce bucket (all step long)
    head_gradients: int  # made at lm_head backward (full fine-tuning)
    layer_gradients: int  # one decoder layer's
    optimizer: int  # in PyTorch's allocator (a paged optimizer's small tensors' states too)
    paged_optimizer: int  # bitsandbytes paged states in CUDA managed memory
    optimizer_temporaries: int
    tied_gradient: int  # a tied embedding's input-side gradient before it is added in
    dequantized: int  # one quantized weight dequantized (QLoRA forward/backward)
    distributed: DistributedTerms  # buckets, gathered parameters, NCCL, host RAM


def model_states(spec: Spec, shape: ModelShape, dt: Dtypes) -> ModelStates:
    """Weights by dtype (frozen half, trainable fp32, 4/8-bit packed), gradients in the trainable
    dtype, optimizer states, each divided over the GPUs that shard it and left out where an
    offload puts it on the CPU (distributed.layout); the distributed machinery's own terms."""
    plan = layout(spec)
    base = base_trainable_tensors(spec, shape)
    adapters = adapter_tensors(spec, shape)
    base_params, adapter_params = numel(base), numel(adapters)
    quantized = quantized_tensors(spec, shape)
    packed = numel(quantized)
    frozen = shape.total_params - base_params - packed
    rules = StackRules.of(spec)
    weights = int(packed * (spec.quant_bits or 8) / 8)
    weights += frozen * rules.fsdp_frozen_bytes(spec, dt.frozen)
    weights += base_params * dt.trainable + upcast_bytes(spec, shape, dt)
    weights += fp32_kept_bytes(spec, shape, dt)
    saved = saved_module_tensors(spec, shape)  # modules_to_save copies, beside the originals
    saved_params = numel(saved)
    weights += saved_params * dt.saved_bytes
    trainable = base + adapters + saved
    params = base_params + adapter_params + saved_params
    state_bytes = 4 if dt.master else dt.trainable
    states, temporaries = optimizer_bytes(spec.optimizer, base + adapters, state_bytes)
    saved_states, saved_temporaries = optimizer_bytes(spec.optimizer, saved,
                                                      4 if dt.master else dt.saved_bytes)
    states, temporaries = states + saved_states, temporaries + saved_temporaries
    paged = paged_state_bytes(spec.optimizer, trainable)
    states += params * dt.master
    temporaries += params * dt.master  # DeepSpeed's fp32 copy of the gradient partition
    gpu_states = 0 if plan.optimizer_on_cpu else 1  # offloaded: optimizer and gradients on CPU
    on_gpu = 0 if plan.weights_on_cpu else 1
    shard_w, shard_g, shard_o = plan.weight_shards, plan.gradient_shards, plan.optimizer_shards
    gradient_bytes = (params - saved_params) * dt.trainable + saved_params * dt.saved_bytes
    gradients = gpu_states * gradient_bytes // shard_g
    head = shape.lm_head_params or shape.embedding_params
    head_copy = head_copy_params(spec, shape)
    one_layer = (shape.last_layer.layer_params if spec.method in ("full", "freeze")
                 else adapter_params // max(1, shape.num_layers))
    largest = max((rows * max(cols, 1) for rows, cols, _ in quantized), default=0)
    from vram_ml.model.formulas.distributed_counts import host_bytes, param_counts

    host = host_bytes(plan, weights + adapter_params * dt.trainable, states, params, dt)
    terms = distributed_terms(spec, param_counts(spec, shape, dt, weights, trainable, quantized),
                              dt.gather, shape.hidden_size, host, dt.trainable)
    zero3 = plan.kind == "deepspeed" and spec.zero_stage == 3
    return ModelStates(
        weights=on_gpu * weights // shard_w,
        quantization_constants=quantization_constant_bytes(spec, quantized),
        adapters=on_gpu * adapter_params * dt.trainable // shard_w,
        trainable_params=params,
        gradients=gradients,
        persistent_gradients=gradients if spec.gradient_accumulation > 1 or zero3 else 0,
        gradient_buffers=terms.resident,
        head_gradients=gpu_states * (head + shape.final_norm_params) * dt.trainable // shard_g
        if spec.method == "full" else gpu_states * head_copy * dt.saved_bytes // shard_g,
        layer_gradients=gpu_states * one_layer * dt.trainable // shard_g,
        optimizer=gpu_states * (states - paged) // shard_o,
        paged_optimizer=gpu_states * paged // shard_o,
        optimizer_temporaries=gpu_states * temporaries // shard_o,
        tied_gradient=gpu_states * shape.embedding_params * dt.trainable // shard_g
        if spec.method == "full" and not shape.lm_head_params else 0,
        dequantized=largest * (dt.compute if spec.quant_bits == 8 else dt.frozen)
        + (largest // NF4_BLOCKSIZE * 4 if spec.quant_bits == 4 and spec.double_quant else 0),
        distributed=terms,
    )


def load_extra(spec: Spec, shape: ModelShape, dt: Dtypes) -> int:
    """What loading adds over the loaded weights, at its worst moment (QLoRA only):
    transformers 5.0-5.3's asynchronous loading can hold every quantized layer's checkpoint
    tensor in full precision on the device before the quantizer reaches it
    (StackRules.async_quantized_load); peft's prepare_model_for_kbit_training holds the embeddings
    and head in fp32 until TRL casts them back to bf16 (StackRules.bf16_recast)."""
    if spec.method != "qlora":
        return 0
    rules = StackRules.of(spec)
    loading = numel(quantized_tensors(spec, shape)) * dt.frozen if rules.async_quantized_load else 0
    recast = 0
    if rules.peft_kbit_prepare and rules.bf16_recast:
        recast = frozen_kind_params(shape)["embedding"] * (4 - dt.frozen)
    return max(loading, recast)
