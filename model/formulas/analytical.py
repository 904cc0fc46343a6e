"""The `analytical` estimator: the peak of one training step, moment by moment.

Terms in activations.py (decoder layers), vision.py (the vision tower) and model_states.py
(parameters, quantization, optimizer, ZeRO). The peak is not a sum of terms, each term is alive
during part of a step. In steady state (step >= 2: optimizer states exist;
`zero_grad(set_to_none=True)` freed the gradients) the allocated peak is the largest of these
moments (and of `load`, before training):

- `layer_forward` (MoE): resident + saved activations + what the last layer's routed experts
  hold while they run (experts.py), before the logits exist.
- `forward_end`: the loss forward, still inside autocast: resident state + every activation saved
  for backward + the logits, their fp32 upcast and log-softmax output (10 bytes per logit) + the
  half weight copies autocast caches for checkpointed layers (freed when forward returns).
- `loss_metrics` (trl >= 0.16): resident + saved activations + the fp32 logits the trainer keeps
  for its entropy and token accuracy, their working set, the saved log-softmax.
- `loss_backward`: resident + saved activations + cross-entropy backward, 12 bytes per logit
  (Liger: one chunk of logits and the input gradient, made in forward).
- `head_backward`: resident + saved activations + the logits' gradient in the compute dtype + the
  output head's weight gradient (full fine-tuning).
- `layer_backward` (last decoder layer): resident + saved activations + that layer recomputed
  (checkpointing) and its gradient temporaries + one dequantized weight (QLoRA) + the gradients
  made so far (output head, one layer).
- `backward_end`: resident + all gradients + a tied embedding's second gradient (the input
  embedding's, added into the output head's).
- `vision_forward` (VLMs): resident + the vision tower's working set over all images.
- `vision_backward` (VLMs whose tower is in the graph): resident + all gradients + the tower's
  saved tensors, one block recomputed and its backward working set.
- `optimizer_step`: resident + all gradients + the optimizer's temporaries; activations freed.
- `load` (QLoRA): the weights + what loading holds beside them (transformers 5.0-5.3's
  asynchronous on-the-fly quantization; peft's fp32 casts before TRL's recast).

A training stage (stages.py) runs these moments over its graph with its own logits and models
(reference, reward), plus its own moments (`stage_forward`, `reference_forward`, PPO's).

What the framework and library versions change is asked of `StackRules` (stack.py); the notes
say when one of its rules moved the answer (stack_notes.py). Across GPUs (distributed.py) every
moment is one GPU's: the parameters ZeRO-3 / FSDP keep gathered join the forward and backward
moments (`gathered`), the reduce buckets the backward ones and NCCL the context
(`communication`); `load` holds a QLoRA model whole before ZeRO-3 / FSDP shard it.

Resident = weights (+ quantization constants) + adapters + optimizer states + gradients kept across
micro-batches (gradient_accumulation > 1; ZeRO-3's partition buffer) + DDP / ZeRO-3 gradient
buckets + ZeRO-3's persistent parameters. The peak moment's total is the tensor peak
(`peak_tensor_bytes`, what simulate's live-tensor tracker counts); the allocated peak
(`peak_allocated_bytes`, what `torch.cuda.max_memory_allocated` reports) adds the cuBLAS
workspace; peak_reserved = peak_allocated x (1 + ALLOCATOR_FRAGMENTATION) and peak_vram =
sample.peak_vram(CUDA_CONTEXT_BYTES + NCCL, peak_reserved, paged optimizer states), the measured
target's definition (vram_ml/sample.py): a paged optimizer's states of tensors of at least 1e5
elements are in CUDA managed memory, outside PyTorch's allocator, the rest in it
(model_states.paged_state_bytes). The breakdown is the peak moment's composition (it adds up to
peak_vram_bytes); `analytical_terms` gives every term at its own size and each moment's total, for
the learned model's features.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from vram_ml.distributed import describe
from vram_ml.model.estimate import BREAKDOWN_TERMS, Estimate
from vram_ml.model.formulas import activations as terms
from vram_ml.model.formulas import experts, stages, vision
from vram_ml.model.formulas.distributed import layout
from vram_ml.model.formulas.model_states import Dtypes, ModelStates, load_extra, model_states
from vram_ml.model.formulas.parameters import autocast_weight_params
from vram_ml.model.formulas.stack import ENTROPY_CHUNK_ROWS, ENTROPY_FROM, StackRules
from vram_ml.model.formulas.stack_notes import stack_notes
from vram_ml.sample import peak_vram

if TYPE_CHECKING:
    from vram_ml.architectures import ModelShape
    from vram_ml.spec import Spec

MIB = 1024**2
# Assumption: a torch CUDA context on an H100 with lazy module loading, after a warm-up step
# (kernels loaded, cuBLAS / cuDNN handles: NVML shows it, no tensor holds it), as the target's
# cuda_context_bytes; the agent measures it per device and GPU samples should replace this number.
CUDA_CONTEXT_BYTES = 500 * MIB
# Assumption: the caching allocator reserves this fraction above the allocated peak (block
# rounding, segments split by transient tensors); to be fitted on GPU samples.
ALLOCATOR_FRAGMENTATION = 0.05
# Upper bound = peak x (1 + UPPER_MARGIN): room for fragmentation and kernel workspaces beyond the
# model, until GPU samples calibrate it. Lower bound = context + allocated peak (no fragmentation).
UPPER_MARGIN = 0.15
UPPER_BASIS = f"assumed margin: peak + {UPPER_MARGIN:.0%}, not calibrated on GPU measurements"
# torch's cuBLAS workspace on sm90 (4096 KiB x 8): allocated through the caching allocator at the
# first matmul and kept, so it is part of the allocated peak (simulate replays it too).
CUBLAS_WORKSPACE_BYTES = 32 * MIB
MOMENTS = ("layer_forward", "forward_end", "loss_metrics", "loss_backward", "head_backward",
           "layer_backward", "backward_end", "vision_forward", "vision_backward", "optimizer_step",
           "load")


# --- analytical: what is alive when -----------------------------------------------------------


@dataclass(frozen=True)
class Analysis:
    """Every term (bytes, each at its own size), the moments, and the peak."""

    states: ModelStates
    activations: int  # saved for backward at the end of forward
    logits: int  # the loss working set at its largest
    layer_backward: int  # recompute + gradient temporaries of one layer
    moments: dict[str, dict[str, int]]
    peak_moment: str
    peak_tensor_bytes: int  # the peak moment's tensors
    peak_allocated_bytes: int  # + the cuBLAS workspace (torch.cuda.max_memory_allocated)
    peak_reserved_bytes: int
    peak_vram_bytes: int
    notes: tuple[str, ...]

    @property
    def breakdown(self) -> dict[str, int]:
        """The peak moment's composition; adds up to peak_vram_bytes (overhead = CUDA context,
        cuBLAS workspace, allocator fragmentation)."""
        parts = dict(self.moments[self.peak_moment])
        parts["optimizer"] = parts.get("optimizer", 0) + self.states.paged_optimizer
        parts["overhead"] = CUDA_CONTEXT_BYTES + self.peak_reserved_bytes - self.peak_tensor_bytes
        parts["communication"] = parts.get("communication", 0) + self.states.distributed.nccl
        return {term: parts.get(term, 0) for term in BREAKDOWN_TERMS}


def logits_bytes(spec: Spec, tokens: int, dt: Dtypes) -> tuple[int, int]:
    """(loss working set, extra during lm_head backward).

    Without Liger: LOSS_BYTES_PER_LOGIT per logit at the loss (models with their own loss code:
    `model_loss_bytes_per_logit`); during lm_head backward the logits' gradient in the compute
    dtype + the gradient into the final norm. With Liger's fused linear cross-entropy only a
    chunk of next_pow2(ceil(BT / ceil(V / H))) rows of logits exists, and the input gradient
    (BT x H) is made in forward.
    """
    shape = spec.resolved_model.shape
    vocab, hidden = shape.vocab_size, shape.hidden_size
    if terms.liger_applies(spec):
        chunk = 1 << (max(1, -(-tokens // -(-vocab // hidden))) - 1).bit_length()
        return tokens * hidden * dt.compute + chunk * vocab * dt.compute + tokens * 4, 0
    logits = tokens * vocab
    own = terms.model_loss_bytes_per_logit(spec, dt)
    backward = own[1] if own else terms.LOSS_BYTES_PER_LOGIT
    return backward * logits, logits * dt.compute + tokens * hidden * dt.hidden


def forward_logits_bytes(spec: Spec, tokens: int, dt: Dtypes) -> int:
    """Cross-entropy forward: the logits, their fp32 upcast (none when already fp32), the fp32
    log-softmax output, and before transformers 4.49 the shifted fp32 copy
    (StackRules.forward_logit_bytes; models with their own loss code:
    `model_loss_bytes_per_logit`, whatever the transformers version; Liger: its chunk, as in
    `logits_bytes`)."""
    if terms.liger_applies(spec):
        return logits_bytes(spec, tokens, dt)[0]
    own = terms.model_loss_bytes_per_logit(spec, dt)
    per_logit = own[0] if own else StackRules.of(spec).forward_logit_bytes(dt.compute)
    return tokens * spec.resolved_model.shape.vocab_size * per_logit


def metrics_logits_bytes(spec: Spec, tokens: int) -> int:
    """TRL's compute_loss after the forward (StackRules.trl_accuracy): the fp32 logits and the
    saved log-softmax, with the larger of its entropy chunk (log-softmax, exp and product of
    128 rows, fp32) and the accuracy's shifted fp32 copy + its int64 argmax. 0 for the others."""
    rules = StackRules.of(spec)
    if not rules.trl_accuracy or terms.liger_applies(spec):
        return 0
    vocab = spec.resolved_model.shape.vocab_size
    entropy = 3 * min(ENTROPY_CHUNK_ROWS, tokens) * vocab * 4 if rules.trl >= ENTROPY_FROM else 0
    return 8 * tokens * vocab + max(entropy, 4 * tokens * vocab + 8 * tokens)


def saved_activations(spec: Spec, shape: ModelShape, dt: Dtypes, tokens: int) -> int:
    """Activations alive at the end of forward (Korthikanti et al. 2022, section 4).

    Layers in the autograd graph: all of them, but for `freeze` without checkpointing only the
    trainable last ones (nothing before them requires grad; transformers' checkpointing makes the
    embeddings' output require grad). Checkpointing keeps each layer's input. Shared: the output
    norm's fp32 copy (+ lm_head's input when it trains), RoPE cos/sin, eager's B x 1 x S x S float
    mask, an embedding dropout mask; half copies of trainable fp32 weights under autocast (the
    output head's only, with checkpointing); the vision tower's when it trains.
    """
    seq, hidden = spec.seq_len, shape.hidden_size
    if spec.gradient_checkpointing:
        if spec.method == "freeze" and not StackRules.of(spec).checkpoints_frozen_layers:
            last = range(shape.num_layers - spec.freeze_trainable_layers, shape.num_layers)
            groups = shape.groups_of_layers(last)  # LLaMA-Factory: only trainable layers
        else:
            groups = shape.layer_groups
        per_token = sum(count * terms.checkpoint_kept_per_token(spec, group, dt)
                        for count, group in groups)
    elif spec.method == "freeze":
        last = range(shape.num_layers - spec.freeze_trainable_layers, shape.num_layers)
        per_token = sum(count * terms.layer_activation_per_token(spec, group, dt, seq, True)
                        for count, group in shape.groups_of_layers(last))
    else:
        per_token = sum(count * terms.layer_activation_per_token(
            spec, group, dt, seq, spec.method == "full") for count, group in shape.layer_groups)
    liger = terms.liger_applies(spec)
    per_token += hidden * (dt.hidden if liger else 4)
    if spec.method == "full" and not liger:
        per_token += 2 * hidden * dt.compute  # the norm's output (weight grad), lm_head's input
    copy_per_token, copy_cast = terms.head_copy_terms(spec, shape, dt, liger)  # modules_to_save
    per_token += 2 * shape.head_dim * dt.hidden + copy_per_token
    if terms.attention_kind(spec, shape) == "eager":  # the float mask, one per kind of layer
        windowed = 0 < shape.attention.sliding_layers < shape.num_layers
        per_token += seq * dt.hidden * (2 if windowed else 1)
    per_token += hidden if terms.dropout_rates(spec)[1] else 0
    cast, head = autocast_weight_params(spec, shape) if dt.casts_trainable else (0, 0)
    cast_saved = (head if spec.gradient_checkpointing else cast) + copy_cast
    merged = 0 if spec.gradient_checkpointing else sum(
        count * experts.merged_expert_bytes(spec, group, dt) for count, group in shape.layer_groups)
    return (int(tokens * per_token) + 2 * cast_saved // layout(spec).weight_shards + merged
            + vision.vision_activation_bytes(spec, dt))


def autocast_cache_extra(spec: Spec, shape: ModelShape, dt: Dtypes) -> int:
    """Half weight copies the autocast cache holds until forward ends but no op saved
    (checkpointed layers'); freed when the autocast context exits, before backward."""
    if not dt.casts_trainable or not spec.gradient_checkpointing:
        return 0
    cast, head = autocast_weight_params(spec, shape)
    return 2 * (cast - head) // layout(spec).weight_shards


def analyse(spec: Spec, training_only: bool = False) -> Analysis:
    """Every term of the analytical model for `spec`, and when each is alive; `training_only`:
    the peak over the training moments (`load` left out), what a peak read after
    torch.cuda.reset_peak_memory_stats once the model is loaded measures."""
    given, rules = spec, StackRules.of(spec)
    padded = rules.padded_seq_len(spec.seq_len)
    if padded != spec.seq_len:  # LLaMA-Factory's collator: the batch is `padded` long
        spec = spec.model_copy(update={"seq_len": padded})
    spec = stages.graph_spec(spec)  # the training stage's graph: 2B sequences, prompt + response
    shape = spec.shape  # as the spec's transformers version builds it
    dt = Dtypes.of(spec)
    tokens = spec.batch_size * spec.seq_len
    states = stages.adjust_states(spec, shape, dt, model_states(spec, shape, dt))
    activations = saved_activations(spec, shape, dt, tokens)
    loss_set, head_extra = logits_bytes(spec, tokens, dt)
    trainable_last = spec.method in ("full", "freeze")
    last = shape.last_layer
    layer_extra = int(tokens * terms.layer_backward_per_token(spec, last, dt, spec.seq_len,
                                                              trainable_last))
    layer_extra = experts.with_merged_expert_backward(spec, last, dt, tokens, layer_extra)
    stage = stages.stage_step(given, spec, shape, dt, head_extra)
    activations += stage.extra_activations
    layer_extra += stage.extra_layer_backward
    shared = states.distributed  # buckets, gathered parameters (distributed.py)
    resident = {
        "weights": states.weights, "quantization_constants": states.quantization_constants,
        "adapters": states.adapters, "optimizer": states.optimizer,
        "gradients": states.persistent_gradients, "gathered": shared.resident_gathered,
        "communication": states.gradient_buffers,
        "reference_model": stage.reference_model, "reward_model": stage.reward_model,
    }
    backward = {"gathered": shared.resident_gathered + shared.gathered_backward,
                "communication": states.gradient_buffers + shared.backward_buffers}
    turnaround = {"gathered": shared.resident_gathered + shared.gathered_forward}
    moments = {
        "layer_forward": {**resident, **turnaround, "activations": activations, "temporaries": int(
            tokens * experts.expert_transient_per_token(last, dt)) + (
            experts.merged_expert_bytes(spec, last, dt) if spec.gradient_checkpointing else 0)},
        "forward_end": {**resident, **turnaround, "activations": activations,
                        "logits": forward_logits_bytes(spec, tokens, dt),
                        "temporaries": autocast_cache_extra(spec, shape, dt)},
        "loss_metrics": {**resident, **turnaround, "activations": activations,
                         "logits": metrics_logits_bytes(spec, tokens)},
        "loss_backward": {**resident, **turnaround, "activations": activations,
                          "logits": loss_set},
        "head_backward": {**resident, **turnaround, "communication": backward["communication"],
                          "activations": activations, "logits": head_extra},
        "layer_backward": {**resident, **backward, "activations": activations,
                           "temporaries": layer_extra + states.dequantized},
        "backward_end": {**resident, "temporaries": states.tied_gradient,
                         "communication": states.gradient_buffers + shared.backward_end},
        "vision_forward": {**resident, "activations": vision.vision_forward_bytes(spec, dt)},
        "vision_backward": {**resident, "activations": vision.vision_backward_bytes(spec, dt)},
        "optimizer_step": {**resident, "temporaries": states.optimizer_temporaries},
        "load": {"weights": states.weights if shared.load_weights is None
                 else shared.load_weights,
                 "quantization_constants": states.quantization_constants,
                 "temporaries": load_extra(spec, shape, dt),
                 "reference_model": stage.reference_model, "reward_model": stage.reward_model},
    }
    stages.apply_stage(stage, moments, {**resident, **turnaround}, activations,
                       states.persistent_gradients)
    made = {
        # Liger makes the head's weight gradient inside forward
        "forward_end": states.head_gradients if terms.liger_applies(spec) else 0,
        "loss_metrics": states.head_gradients if terms.liger_applies(spec) else 0,
        "loss_backward": states.head_gradients if terms.liger_applies(spec) else 0,
        "head_backward": states.head_gradients,
        "layer_backward": states.head_gradients + states.layer_gradients,
        "backward_end": states.gradients,
        "vision_backward": states.gradients,
        "optimizer_step": states.gradients,
    }
    for moment, gradients in made.items():
        moments[moment]["gradients"] += max(0, gradients - states.persistent_gradients)
        if moment in ("head_backward", "layer_backward", "backward_end", "optimizer_step"):
            moments[moment]["gradients"] += shared.gradient_partition  # ZeRO-1/2's buffer
    totals = {name: sum(parts.values()) for name, parts in moments.items()}
    counted = [name for name in (*MOMENTS, *stages.STAGE_MOMENTS)
               if name in moments and not (training_only and name == "load")]
    peak_moment = max(counted, key=lambda name: totals[name])
    tensors = totals[peak_moment]
    allocated = tensors + CUBLAS_WORKSPACE_BYTES
    reserved = int(allocated * (1 + ALLOCATOR_FRAGMENTATION))
    when = "before training" if peak_moment == "load" else "steady state: optimizer step >= 2"
    notes = [*_notes(spec, shape), *stack_notes(given, shape, dt, padded), *stage.notes,
             *distributed_notes(spec, shared),
             f"peak at {peak_moment.replace('_', ' ')} ({when})"]
    return Analysis(
        states=states, activations=activations, logits=loss_set, layer_backward=layer_extra,
        moments=moments, peak_moment=peak_moment, peak_tensor_bytes=tensors,
        peak_allocated_bytes=allocated, peak_reserved_bytes=reserved,
        peak_vram_bytes=peak_vram(CUDA_CONTEXT_BYTES + shared.nccl, reserved,
                                  states.paged_optimizer),
        notes=tuple(notes),
    )


def _notes(spec: Spec, shape: ModelShape) -> list[str]:
    notes = [note for note in (experts.grouped_mm_dtype_problem(spec, shape),) if note]
    if spec.liger_kernel and not terms.liger_applies(spec):
        notes.append(f"liger_kernel: not supported for {shape.model_type}; estimated without it")
    if spec.method == "freeze" and spec.precision == "no_amp":
        notes.append("freeze + no_amp: fp32 trainable layers meet half-precision ones without "
                     "autocast; estimated as if it ran")
    if spec.images_per_sample:
        needed = vision.image_geometry(spec).lm_tokens * spec.images_per_sample
        if needed > spec.seq_len:
            notes.append(f"images need {needed} tokens, more than seq_len {spec.seq_len} "
                         "(the recipe refuses; LLaMA-Factory truncates)")
        if shape.vision.kind == "mllama":
            notes.append("mllama: cross-attention over image states not modelled")
    if spec.optimizer.startswith("paged_"):
        notes.append("paged optimizer states: CUDA managed memory, outside PyTorch's allocator "
                     "(tensors of at least 1e5 elements; smaller ones in it)")
    return notes


def distributed_notes(spec: Spec, shared) -> list[str]:
    """How the GPUs share the run and its terms per GPU (GiB), when more than one GPU or
    DeepSpeed / FSDP runs it."""
    if spec.distributed == "none":
        return []
    named = ", ".join(f"{name} {size / 2**30:.2f}" for name, size in shared.terms if size)
    note = f"{describe(spec)}: per GPU" + (f" ({named} GiB)" if named else "")
    if shared.host_bytes:
        note += f"; host RAM for the offloaded states {shared.host_bytes / 2**30:.1f} GiB per node"
    return [note]


def analytical_terms(spec: Spec) -> dict[str, int]:
    """Every term at its own size plus each moment's total (features for the learned model)."""
    analysis = analyse(spec)
    states = analysis.states
    features = {
        "weights": states.weights, "quantization_constants": states.quantization_constants,
        "adapters": states.adapters, "gradients": states.gradients,
        "gradient_buffers": states.gradient_buffers,
        "optimizer": states.optimizer + states.paged_optimizer,
        "optimizer_temporaries": states.optimizer_temporaries,
        "activations": analysis.activations, "logits": analysis.logits,
        "layer_backward_temporaries": analysis.layer_backward,
        "dequantized_weight": states.dequantized, "trainable_params": states.trainable_params,
        "gathered_parameters": states.distributed.gathered_forward
        + states.distributed.resident_gathered,
        "communication": states.distributed.backward_buffers + states.distributed.nccl,
        "host_memory": states.distributed.host_bytes,
    }
    features.update({f"moment_{name}": sum(parts.values())
                     for name, parts in analysis.moments.items()})
    return features


@dataclass
class AnalyticalEstimator:
    """The refined closed form; see the module docstring for the peak composition."""

    name: str = "analytical"

    def estimate(self, spec: Spec) -> Estimate:
        analysis = analyse(spec)
        return Estimate(
            estimator=self.name,
            peak_vram_bytes=analysis.peak_vram_bytes,
            breakdown=analysis.breakdown,
            lower_vram_bytes=CUDA_CONTEXT_BYTES + analysis.states.distributed.nccl
            + analysis.peak_allocated_bytes + analysis.states.paged_optimizer,
            upper_vram_bytes=int(analysis.peak_vram_bytes * (1 + UPPER_MARGIN)),
            upper_basis=UPPER_BASIS,
            peak_allocated_bytes=analysis.peak_allocated_bytes,
            peak_reserved_bytes=analysis.peak_reserved_bytes,
            notes=list(analysis.notes),
            num_gpus=spec.num_gpus,
            host_memory_bytes=analysis.states.distributed.host_bytes or None,
        )
