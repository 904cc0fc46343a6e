"""The training stages' memory, for the analytical estimator: what DPO, ORPO / SimPO, KTO, reward
modelling, PPO and pre-training change in the SFT step of analytical.py.

Each stage is the SFT step over its graph (`graph_spec`: the sequences that carry the autograd
graph, their length, dropout as the trainer leaves it), with its own logits working set at each
moment, the frozen models it loads beside the policy, and the moments only it has (the reference
forward, PPO's generation). Read from hiyouga/LLaMA-Factory@v0.9.5 (its trainers' lines are in
model/recipe/stages/, which runs the same steps) and huggingface/trl (v0.24.0's value head,
v0.9.6's PPOTrainer); the bytes per logit were checked by a CPU probe and by `simulate` on tiny
models (tests/model/formulas/test_stages.py). N = sequences x length x vocabulary logits of the
graph; c = the logits' dtype (the compute dtype).

- sft: unchanged. pt: no padding to 8 (StackRules.padded_seq_len); packed blocks of cutoff_len.
- dpo (sigmoid, hinge, ipo, kto_pair): 2B sequences. The policy's fp32 logits (4 B) and saved
  log-softmax (4 B) stay alive while the reference forward makes its own (4 + 4): 16 B x N at
  `reference_forward`; the loss backward is SFT's 12 B x N. Reference weights: none for LoRA
  (the adapter-disabled base), a frozen copy in the checkpoint dtype for full / freeze, a
  `ref_model` in its dtype or 4 / 8 bits. Dropout off (TRL's disable_dropout_in_model).
- dpo orpo / simpo: 2B sequences, no reference: 8 B x N after the forward, 12 B x N in backward.
- kto: B target sequences with the graph. Policy: fp32 logits + log-softmax (8 B x N), the KL
  batch's no-grad forward (8 B x N_kl), index copies of the target logits kept for metrics;
  reference: its target logits (4 B x N) and KL forward (8 B x N_kl): 12 N + 8 N_kl (20 B x N).
- rm: 2B sequences through TRL's value head. The LM logits are still computed and upcast
  (c + 4 B x N) at the end of forward and never reach the loss: no cross-entropy backward; the
  value head keeps a dropout mask and its input cast; with full fine-tuning the untied output
  head gets no gradient and (torch optimizers) no state.
- ppo: B sequences of prompt + max_new_tokens. Training mini-batch: the logits upcast in the
  value head wrapper, log-softmax saved, the `torch.cat(all_logits)[:, :-1]` copy held through
  backward and the entropy's softmax on the graph: 16 B x N. Every forward but generation runs
  under fp16 autocast (CUDA's default for `torch.autocast(device)`): with bf16 weights each frozen
  matmul weight is cast to fp16 per use, and saved where its input needs grad. Generation: the KV
  cache of B x (prompt + max_new_tokens) positions, no autocast (full / freeze's fp32 layers make
  fp32 keys and values). Reward model: a second fp32 LoRA adapter (`lora`), a frozen model
  (`full`) or nothing (`api`). Reference: as DPO's.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from vram_ml.model.formulas import activations as terms
from vram_ml.model.formulas.model_states import (
    Dtypes,
    ModelStates,
    adapter_tensors,
    numel,
    optimizer_bytes,
    quantization_constant_bytes,
    quantized_tensors,
)
from vram_ml.stages import (
    PPO_TRL_NOTE,
    REFERENCE_FREE_LOSSES,
    companion_spec,
    quantized_under_bf16,
    uses_reference,
)

if TYPE_CHECKING:
    from vram_ml.architectures import ModelShape
    from vram_ml.spec import Spec

GIB, MIB = 1024**3, 1024**2
DROPOUT_OFF_STAGES = ("dpo", "kto")  # dpo/trainer.py:57-60, kto/trainer.py:57-60
FUSED_CE_STAGES = ("sft", "pt")  # model/loader.py:142: Liger's fused CE needs no logits
# Moments only a stage has, after analytical.MOMENTS in the peak's tie order.
STAGE_MOMENTS = ("stage_forward", "reference_forward", "rollout_forward", "generation")


def graph_spec(spec: Spec) -> Spec:
    """The step's graph as an SFT spec: 2B sequences for the pairwise stages, prompt +
    max_new_tokens for PPO, dropout off for DPO / KTO, Liger's fused cross-entropy off outside
    pt / sft (LLaMA-Factory applies Liger with `require_logits`)."""
    update: dict = {}
    if spec.stage in ("dpo", "rm"):
        update["batch_size"] = 2 * spec.batch_size
    if spec.stage == "ppo":
        update["seq_len"] = spec.seq_len + spec.max_new_tokens
    if spec.stage in DROPOUT_OFF_STAGES and spec.lora_dropout:
        update["lora_dropout"] = 0.0
    if spec.stage not in FUSED_CE_STAGES and spec.liger_kernel:
        update["liger_kernel"] = False
    return spec.model_copy(update=update) if update else spec


def dropout_disabled(spec: Spec) -> bool:
    """nn.Dropout modules at p = 0 (residual and embedding dropout; attention's is a float)."""
    return spec.stage in DROPOUT_OFF_STAGES


# --- the frozen models beside the policy -----------------------------------------------------


def frozen_model_bytes(spec: Spec, name: str, bits: int | None, dt: Dtypes) -> int:
    """Weights of a model LLaMA-Factory loads with is_trainable=False: the checkpoint dtype (the
    policy's frozen dtype), 4 / 8-bit linears packed with their constants; ZeRO-3 keeps it
    sharded, other stages a full replica (trl prepare_deepspeed forces stage 0)."""
    other = companion_spec(spec, name, bits)
    shape = other.shape
    packed = numel(quantized_tensors(other, shape))
    total = int(packed * (bits or 8) / 8) + (shape.total_params - packed) * dt.frozen
    total += quantization_constant_bytes(other, quantized_tensors(other, shape))
    if spec.zero_stage == 3 and not bits:
        total //= spec.num_gpus
    return total


def reference_bytes(spec: Spec, dt: Dtypes) -> int:
    """A loaded reference model: `ref_model` (its bits), or a copy of the policy for full /
    freeze (the policy's own quantization); none for LoRA / QLoRA without `ref_model`."""
    if not uses_reference(spec.stage, spec.pref_loss):
        return 0
    if spec.ref_model is None and spec.method in ("lora", "qlora"):
        return 0
    bits = spec.ref_model_quantization_bit if spec.ref_model is not None else spec.quant_bits
    return frozen_model_bytes(spec, "ref_model", bits, dt)


def reward_bytes(spec: Spec, shape: ModelShape, dt: Dtypes) -> int:
    """PPO's reward model: a frozen fp32 LoRA adapter like the policy's on the same base
    (`lora`, trainer_utils.py:158-173, peft load_adapter autocast_adapter_dtype), a frozen
    model (`full`), nothing (`api`)."""
    if spec.stage != "ppo" or spec.reward_model_type == "api":
        return 0
    if spec.reward_model_type == "lora":
        return 4 * numel(adapter_tensors(spec, shape))
    return frozen_model_bytes(spec, "reward_model", spec.reward_model_quantization_bit, dt)


def adjust_states(spec: Spec, shape: ModelShape, dt: Dtypes, states: ModelStates) -> ModelStates:
    """rm with full fine-tuning: the untied output head gets no gradient (nothing in the loss
    reads the logits), so torch's optimizers, which skip `grad is None`, make no state for it.
    DeepSpeed allocates its buffers anyway (not derived here: left as they are)."""
    if spec.stage != "rm" or spec.method != "full" or not shape.lm_head_params or spec.zero_stage:
        return states
    head = [(shape.lm_head_params // shape.hidden_size, shape.hidden_size, 1)]
    head_states, _ = optimizer_bytes(spec.optimizer, head, dt.master and 4 or dt.trainable)
    grad = shape.lm_head_params * dt.trainable
    return replace(
        states, gradients=states.gradients - grad,
        persistent_gradients=max(0, states.persistent_gradients - grad),
        head_gradients=max(0, states.head_gradients - grad),
        optimizer=max(0, states.optimizer - head_states))


# --- the step's logits and moments ------------------------------------------------------------


@dataclass(frozen=True)
class StageStep:
    """What a stage changes in the step: companions' weights, and per moment its logits bytes
    (replacing SFT's), extra saved activations / layer temporaries, the moments only it has."""

    reference_model: int = 0
    reward_model: int = 0
    logits: dict[str, int] | None = None  # moment -> logits bytes (None: SFT's)
    extra_activations: int = 0
    extra_layer_backward: int = 0
    moments: dict[str, dict[str, int]] | None = None  # moment -> its non-resident parts
    notes: tuple[str, ...] = ()


def stage_step(spec: Spec, graph: Spec, shape: ModelShape, dt: Dtypes, head_extra: int
               ) -> StageStep:
    """The stage's terms for `spec` (as given) over `graph` (graph_spec, padded)."""
    vocab = shape.vocab_size
    tokens = graph.batch_size * graph.seq_len
    logits = tokens * vocab
    c = dt.compute
    reference = reference_bytes(spec, dt)
    if spec.stage == "dpo":
        step = _dpo(spec, graph, shape, dt, logits, tokens, head_extra)
    elif spec.stage == "kto":
        step = _kto(graph, shape, dt, logits, tokens, head_extra)
    elif spec.stage == "rm":
        step = _rm(graph, shape, dt, logits, tokens, c)
    elif spec.stage == "ppo":
        step = _ppo(spec, graph, shape, dt, logits, tokens, head_extra)
    else:
        return StageStep(notes=tuple(_pt_notes(spec)))
    notes = (*step.notes, *_reference_notes(spec, reference))
    if spec.liger_kernel and spec.stage not in FUSED_CE_STAGES:
        notes += (f"liger_kernel: LLaMA-Factory turns Liger's fused cross-entropy off for stage "
                  f"{spec.stage} (it needs the logits); estimated without Liger",)
    return replace(step, reference_model=reference,
                   reward_model=reward_bytes(spec, shape, dt), notes=notes)


def _dpo(spec: Spec, graph: Spec, shape: ModelShape, dt: Dtypes, logits: int, tokens: int,
         head_extra: int) -> StageStep:
    policy = 8 * logits  # fp32 logits (kept for the metrics) + saved log-softmax
    moments = {"stage_forward": {"logits": policy}}
    note = (f"dpo: 2 x {spec.batch_size} sequences per forward (chosen + rejected) of "
            f"{graph.seq_len} tokens; policy logits fp32 + log-softmax {_size(policy)}")
    if spec.pref_loss not in REFERENCE_FREE_LOSSES:
        reference = max(8 * logits, no_grad_layer_bytes(graph, shape, dt, tokens))
        moments["reference_forward"] = {"logits": policy, "reference_logits": reference}
        note += f", kept through the reference forward, which makes {_size(reference)} more"
    else:
        note = note.replace("dpo:", f"dpo {spec.pref_loss}:") + "; no reference model"
    return StageStep(logits=_logits_at(dt, logits, head_extra), moments=moments, notes=(note,))


def _kto(graph: Spec, shape: ModelShape, dt: Dtypes, logits: int, tokens: int,
         head_extra: int) -> StageStep:
    kl = logits  # the KL batch: the previous example's response, the target's lengths
    transient = no_grad_layer_bytes(graph, shape, dt, tokens)
    moments = {
        "stage_forward": {"logits": 8 * logits + max(8 * kl, transient)},
        "reference_forward": {"logits": 8 * logits,
                              "reference_logits": 4 * logits + max(8 * kl, 4 * logits, transient)},
    }
    note = (f"kto: {graph.batch_size} target sequences with the graph, a KL batch and the "
            f"reference's target and KL forwards without: logits {_size(8 * logits)} + "
            f"reference {_size(moments['reference_forward']['reference_logits'])}")
    return StageStep(logits=_logits_at(dt, logits, head_extra), moments=moments, notes=(note,))


def _rm(graph: Spec, shape: ModelShape, dt: Dtypes, logits: int, tokens: int, c: int
        ) -> StageStep:
    forward = (c + (4 if c < 4 else 0)) * logits  # the logits and their fp32 upcast
    hidden = shape.hidden_size
    head_saved = tokens * hidden * (1 + (c if dt.autocast else 4))  # dropout mask + input cast
    head_backward = tokens * hidden * (4 + 2 * c)  # the value head's gradient into the stream
    note = (f"rm: 2 x {graph.batch_size // 2} sequences per forward (chosen + rejected); a value "
            f"head on the last hidden state; the LM logits are still computed and upcast "
            f"({_size(forward)} at the end of forward) but reach no loss: no logits backward")
    return StageStep(logits={"forward_end": forward, "loss_metrics": 0, "loss_backward": 0,
                             "head_backward": head_backward},
                     extra_activations=head_saved, notes=(note,))


def _ppo(spec: Spec, graph: Spec, shape: ModelShape, dt: Dtypes, logits: int, tokens: int,
         head_extra: int) -> StageStep:
    c = dt.compute
    saved_casts, layer_casts = ppo_autocast_copies(spec, shape)
    kv = kv_cache_bytes(spec, shape, graph.seq_len - 1)
    prefill = no_grad_layer_bytes(spec, shape, dt, spec.batch_size * spec.seq_len)
    moments = {
        "stage_forward": {"logits": 12 * logits},  # fp32 + saved log-softmax + the cat copy
        "rollout_forward": {"logits": 8 * logits,
                            "temporaries": no_grad_layer_bytes(graph, shape, dt, tokens)},
        "generation": {"kv_cache": max(kv, kv_cache_bytes(spec, shape, spec.seq_len) + prefill)},
    }
    notes = [PPO_TRL_NOTE,
             f"ppo: {spec.batch_size} sequence{'s' * (spec.batch_size > 1)} of {spec.seq_len} "
             f"prompt + {spec.max_new_tokens} "
             f"generated tokens; training logits (upcast, log-softmax, the copy the loss's "
             f"entropy reads) {_size(16 * logits)}; generation KV cache {_size(kv)}"]
    if quantized_under_bf16(spec):
        notes.append("ppo + a 4/8-bit model + bf16: PPO's fp16 autocast meets bitsandbytes' bf16 "
                     "outputs in torch.cat (autocast 'prioritize' refuses it; the recipe fails "
                     "on CPU), so this run may not start; estimated as if it ran")
    if spec.method == "freeze":
        notes.append("ppo + freeze: generation runs without autocast, where the fp32 trainable "
                     "layers meet the frozen half-precision head (a dtype error in the recipe), "
                     "so this run may not start; estimated as if it ran")
    if saved_casts or layer_casts:
        notes.append(f"ppo: its fp16 autocast casts the bf16 frozen weights per use; "
                     f"{_size(saved_casts)} of casts saved for backward")
    return StageStep(
        logits={"forward_end": (c + 4) * logits, "loss_metrics": 0, "loss_backward": 16 * logits,
                "head_backward": head_extra + 4 * logits},
        extra_activations=saved_casts, extra_layer_backward=layer_casts, moments=moments,
        notes=tuple(notes))


def apply_stage(step: StageStep, moments: dict[str, dict[str, int]], resident: dict[str, int],
                activations: int, persistent_gradients: int) -> None:
    """Put the stage's logits into SFT's moments and add its own: the graph's moments keep the
    saved activations; PPO's rollout and generation come before any micro-batch's backward, so
    without its activations and gradients."""
    for moment, logits in (step.logits or {}).items():
        moments[moment]["logits"] = logits
    for moment, parts in (step.moments or {}).items():
        base = dict(resident)
        if moment in ("rollout_forward", "generation"):
            base["gradients"] = max(0, base["gradients"] - persistent_gradients)
        else:
            base["activations"] = activations
        moments[moment] = {**base, **parts}


def _logits_at(dt: Dtypes, logits: int, head_extra: int) -> dict[str, int]:
    """DPO / KTO: the model forward ends with logits in the compute dtype (the fp32 copy and
    log-softmax come after, `stage_forward`); the loss backward is SFT's."""
    return {"forward_end": dt.compute * logits, "loss_metrics": 0,
            "loss_backward": terms.LOSS_BYTES_PER_LOGIT * logits, "head_backward": head_extra}


# --- PPO's generation and autocast -------------------------------------------------------------


def kv_cache_bytes(spec: Spec, shape: ModelShape, positions: int) -> int:
    """Keys and values of every layer for B sequences of `positions`, in the dtype the layer
    computes in without autocast (generate runs outside the amp context): LLaMA-Factory's fp32
    trainable layers (full; freeze's last ones) make fp32 ones."""
    per_layer = 2 * spec.batch_size * positions * shape.num_key_value_heads * shape.head_dim
    fp32_layers = {"full": shape.num_layers, "freeze": spec.freeze_trainable_layers}.get(
        spec.method, 0) if spec.precision != "pure_bf16" else 0
    half = 4 if spec.precision == "fp32" else 2
    return per_layer * (fp32_layers * 4 + (shape.num_layers - fp32_layers) * half)


def ppo_autocast_copies(spec: Spec, shape: ModelShape) -> tuple[int, int]:
    """(saved for backward, recomputed in one layer's backward): fp16 casts of frozen bf16
    matmul weights whose input needs grad, under PPO's fp16 autocast. LoRA's base linears
    (bitsandbytes layers are not autocast ops) and the frozen output head; fp32 trainable
    weights get the cached casts every autocast run has (analytical's autocast cache)."""
    if spec.precision != "bf16":
        return 0, 0
    head = 2 * (shape.lm_head_params or shape.embedding_params) if spec.method != "full" else 0
    layer = 2 * shape.layer_linear_params if spec.method == "lora" else 0
    if spec.gradient_checkpointing:
        return head, layer
    return head + shape.num_layers * layer, 0


def no_grad_layer_bytes(spec: Spec, shape: ModelShape, dt: Dtypes, tokens: int) -> int:
    """A decoder layer's largest transient in a forward without the graph: the residual in and
    out, the norm's fp32 copy, and the larger of attention's q, k, v, output (+ logsumexp; eager:
    the scores, fp32 probabilities and their cast) and the gated MLP's three intermediates."""
    hidden, heads = shape.hidden_size, shape.num_attention_heads
    q, kv = heads * shape.head_dim, shape.num_key_value_heads * shape.head_dim
    attention = (2 * q + 2 * kv) * dt.compute + heads * 4
    if spec.attention == "eager":  # the scores, their fp32 softmax and its cast back
        attention = (2 * q + 2 * kv) * dt.compute + heads * spec.seq_len * (4 + dt.compute)
    mlp = 3 * shape.intermediate_size * dt.compute * max(1, shape.num_experts_per_tok or 1)
    return tokens * (2 * hidden * dt.hidden + 4 * hidden + max(attention, mlp))


# --- notes --------------------------------------------------------------------------------


def _reference_notes(spec: Spec, reference: int) -> list[str]:
    if not uses_reference(spec.stage, spec.pref_loss):
        return []
    if not reference:
        return [f"{spec.stage}: reference = the policy with its LoRA adapter disabled "
                "(no extra weights)"]
    what = f"ref_model {spec.ref_model}" if spec.ref_model else "a frozen copy of the model"
    return [f"{spec.stage}: reference = {what}, {_size(reference)} of weights"]


def _pt_notes(spec: Spec) -> list[str]:
    if spec.stage != "pt":
        return []
    return [f"pt: packed blocks of {spec.seq_len} tokens, no padding (packing is on by default "
            "for pt)"]


def _size(n_bytes: float) -> str:
    return f"{n_bytes / GIB:.2f} GiB" if n_bytes >= GIB / 10 else f"{n_bytes / MIB:.1f} MiB"
