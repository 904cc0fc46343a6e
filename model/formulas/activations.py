"""Activations of the analytical estimator: what a decoder layer's tensors cost, in bytes.

Every term names its source. Activations follow Korthikanti et al. 2022 ("Reducing Activation
Recomputation in Large Transformer Models", section 4: count what each op saves for backward),
done here for transformers 5.x modules, peft 0.21 LoRA layers and bitsandbytes 0.50; sharding
follows Rajbhandari et al. 2020 (ZeRO, section 5); 4-bit storage follows Dettmers et al. 2023
(QLoRA) as bitsandbytes implements it; dtypes follow LLaMA-Factory and the project's recipe
(model/recipe/). Pure Python, no torch. `analytical.py` decides when each term is alive;
parameters, quantization, optimizer and ZeRO terms live in `model_states.py`, the vision tower's in
`vision.py`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from vram_ml.model.formulas import experts
from vram_ml.model.formulas.model_states import Dtypes, layer_norm_params
from vram_ml.model.formulas.parameters import head_copy_params
from vram_ml.model.formulas.stack import StackRules

if TYPE_CHECKING:
    from vram_ml.architectures import LinearShape, ModelShape
    from vram_ml.spec import Spec

# transformers models whose norms are nn.LayerNorm (the rest use an RMSNorm that upcasts to fp32).
LAYERNORM_TYPES = frozenset({"phi", "gpt_neox", "bloom", "gpt_bigcode", "falcon", "stablelm",
                             "starcoder2"})
# CohereLayerNorm: an fp32 copy, `(h - mean)` computed twice (saved by pow and by the mul with
# rsqrt: 8 bytes per element), `weight * h` saves the fp32 normalized h when the weight trains;
# the output is cast back to the input dtype. Its q/k norms (`use_qk_norm`) are the same module.
FP32_LAYERNORM_TYPES = frozenset({"cohere"})
# Liger's kernels (RMSNorm, SwiGLU, fused linear cross-entropy) patch these model types;
# LLaMA-Factory ignores `enable_liger_kernel` for the others.
LIGER_MODEL_TYPES = frozenset({
    "llama", "mistral", "mixtral", "gemma", "gemma2", "qwen2", "qwen3", "phi3", "mllama",
    "qwen2_vl", "qwen2_5_vl", "paligemma", "llava",
})
# transformers' ForCausalLMLoss: logits.float() then cross_entropy. Its largest moment is
# LogSoftmaxBackward: the saved fp32 output + the fp32 gradient from nll_loss + the fp32 gradient
# it returns = 12 bytes per logit (forward holds at most 2 + 4 + 4 = 10).
LOSS_BYTES_PER_LOGIT = 12
# Models whose own forward computes the loss differently from transformers' ForCausalLMLoss
# (which upcasts the logits and shifts the labels): Qwen (v1) runs CrossEntropyLoss on a shifted
# `.contiguous()` copy of the logits as they are (modeling_qwen.py QWenLMHeadModel.forward);
# ChatGLM upcasts the logits to fp32, then takes a shifted fp32 copy (modeling_chatglm.py).
SHIFTED_COPY_LOSS_TYPES = frozenset({"qwen"})
SHIFTED_FP32_LOSS_TYPES = frozenset({"chatglm"})
# Bytes per element that an MLP activation written as pointwise ops saves, (with, without)
# autocast: NewGELU keeps its input (fp32 under autocast: pow), tanh's output, 0.5 * input and
# 1 + tanh; FastGELU six tensors; QuickGELU input and sigmoid. F.gelu / F.silu keep the input.
ACTIVATION_BYTES = {"gelu_new": (14, 4), "gelu_fast": (12, 6), "quick_gelu": (4, 2)}
# Module names by role (the catalog's families); other names are classified by shape.
ROLES = {
    "attn_in": frozenset({"q_proj", "k_proj", "v_proj", "qkv_proj", "query_key_value", "c_attn"}),
    "attn_out": frozenset({"o_proj", "dense", "out_proj"}),
    "mlp_in": frozenset({"gate_proj", "up_proj", "gate_up_proj", "dense_h_to_4h", "fc1", "c_fc"}),
    "mlp_out": frozenset({"down_proj", "dense_4h_to_h", "fc2"}),
}
# SDPA calls that broadcast one K/V head over all query heads without `enable_gqa` (Falcon's own
# attention): flash and memory-efficient kernels refuse them, the math kernel runs in fp32.
MATH_SDPA_TYPES = frozenset({"falcon"})
# Attention that expands its K/V groups to every query head (`.expand(...).contiguous()`) before
# SDPA, which then saves the expanded copies (modeling_chatglm.py SelfAttention.forward).
EXPANDED_KV_TYPES = frozenset({"chatglm"})
# RMSNorms that multiply the input (not an fp32 copy of it) by the fp32 rsqrt, so the input is
# saved too, and whose trainable weight multiplies an fp32 tensor (modeling_chatglm.py RMSNorm).
INPUT_SAVING_RMSNORM_TYPES = frozenset({"chatglm"})
# transformers' configuration defaults for dropout where a config may omit them (GPT-2 style).
DEFAULT_DROPOUT = {"gpt_bigcode": {"resid_pdrop": 0.1, "embd_pdrop": 0.1, "attn_pdrop": 0.1}}

# --- activations ------------------------------------------------------------------------------


def attention_kind(spec: Spec, shape: ModelShape) -> str:
    """The attention that runs: `spec.attention`, but SDPA (LLaMA-Factory's `flash_attn: auto`)
    falls back to eager where transformers has no SDPA path (gpt-oss: `_supports_sdpa = False`,
    its sinks)."""
    if spec.attention == "sdpa" and not shape.attention.sdpa:
        return "eager"
    return spec.attention


def liger_applies(spec: Spec) -> bool:
    return spec.liger_kernel and spec.resolved_model.shape.model_type in LIGER_MODEL_TYPES


def model_loss_bytes_per_logit(spec: Spec, dt: Dtypes) -> tuple[int, int] | None:
    """(at the loss forward's largest, at its largest in backward) bytes per logit of a model
    whose own forward computes the loss (no Liger); None for transformers' loss (its bytes
    depend on the transformers version: StackRules.forward_logit_bytes, LOSS_BYTES_PER_LOGIT).
    SHIFTED_COPY_LOSS_TYPES: the logits and their shifted copy; under CUDA autocast log_softmax
    runs in fp32 (autocast's fp32 list: an fp32 cast of its input, an fp32 output, then backward
    as transformers'), without it all three in the compute dtype. SHIFTED_FP32_LOSS_TYPES: the
    fp32 upcast, its shifted copy and the fp32 log-softmax output."""
    model_type = spec.resolved_model.shape.model_type
    if model_type in SHIFTED_COPY_LOSS_TYPES:
        if dt.autocast:
            return 2 * dt.compute + 4 + 4, LOSS_BYTES_PER_LOGIT
        return 3 * dt.compute, 3 * dt.compute
    if model_type in SHIFTED_FP32_LOSS_TYPES:
        return 4 + 4 + 4, LOSS_BYTES_PER_LOGIT
    return None


def _role(lin: LinearShape, shape: ModelShape) -> str:
    """attn_in | attn_out | mlp_in | mlp_out, by module name, else by shape."""
    name = lin.name.rsplit(".", 1)[-1]
    for role, names in ROLES.items():
        if name in names:
            return role
    hidden, inter = shape.hidden_size, shape.intermediate_size
    if lin.out_features == 1:  # Qwen2-MoE's shared_expert_gate reads the MLP's input
        return "mlp_in"
    if lin.out_features != hidden:
        return "mlp_in" if lin.count > 1 or lin.out_features in (inter, 2 * inter) else "attn_in"
    return "mlp_out" if lin.count > 1 or lin.in_features == inter else "attn_out"


_LAYOUTS: dict[int, tuple[object, dict[tuple[str, bool], list[LinearShape]]]] = {}


def _layout(shape: ModelShape) -> dict[tuple[str, bool], list[LinearShape]]:
    """The layer's linears by (role, expert), computed once per shape (estimates stay fast)."""
    cached = _LAYOUTS.get(id(shape.layer_linears))
    if cached is not None and cached[0] is shape.layer_linears:
        return cached[1]
    layout: dict[tuple[str, bool], list[LinearShape]] = {}
    for lin in shape.layer_linears:
        layout.setdefault((_role(lin, shape), lin.count > 1), []).append(lin)
    if len(_LAYOUTS) > 1024:
        _LAYOUTS.clear()
    _LAYOUTS[id(shape.layer_linears)] = (shape.layer_linears, layout)
    return layout


def _norms(spec: Spec, shape: ModelShape, dt: Dtypes, trainable: bool) -> tuple[int, int, int]:
    """(bytes per token one norm saves, norms per layer, bytes of their output elements).

    RMSNorm (Llama): `.to(float32)` copy saved by pow/mul (4 B), and with a trainable weight the
    `h.to(input_dtype)` it multiplies; output = promote(weight, input). LayerNorm: under CUDA
    autocast runs in fp32 (saves an fp32 copy, outputs fp32), else saves its input. Liger's
    RMSNorm saves its input and the row rstd only.
    """
    hidden = shape.hidden_size
    other = layer_norm_params(shape)
    if shape.model_type in LAYERNORM_TYPES:
        width = 4 if dt.autocast else dt.hidden
        return hidden * width, max(1, other // (2 * hidden)), width
    if shape.model_type in FP32_LAYERNORM_TYPES:  # one norm per layer (parallel block)
        return hidden * (8 + (4 if trainable else 0)), 1, dt.hidden
    count = max(1, other // hidden)
    if liger_applies(spec):
        return hidden * dt.hidden, count, dt.hidden
    weight = dt.trainable if trainable else dt.norm_bytes
    if shape.model_type in INPUT_SAVING_RMSNORM_TYPES:
        return hidden * (4 + dt.hidden + (4 if trainable else 0)), count, dt.hidden
    return hidden * (4 + (dt.hidden if trainable else 0)), count, max(weight, dt.hidden)


def _qk_norms(shape: ModelShape) -> int:
    """q/k norms (per head: Qwen3, Gemma 3; over all heads: OLMo 2, MiniMax-M2) keep fp32 copies
    of q and k, per token."""
    if not shape.attention.qk_norm:
        return 0
    per_element = 8 if shape.model_type in FP32_LAYERNORM_TYPES else 4
    return per_element * (shape.num_attention_heads + shape.num_key_value_heads) * shape.head_dim


def dropout_rates(spec: Spec) -> tuple[float, float, float]:
    """(residual, embedding, attention) dropout probabilities of the model in training mode."""
    config = spec.resolved_model.config
    config = {**DEFAULT_DROPOUT.get(config.get("model_type"), {}), **config,
              **(config.get("text_config") or {})}
    residual = (config.get("resid_pdrop") or config.get("hidden_dropout")
                or config.get("residual_dropout") or 0.0)
    attention = config.get("attn_pdrop") or config.get("attention_dropout") or 0.0
    embedding = config.get("embd_pdrop") or config.get("embedding_dropout") or 0.0
    if spec.stage in ("dpo", "kto"):  # disable_dropout_in_model: nn.Dropout modules to p = 0
        residual = embedding = 0.0
    return float(residual), float(embedding), float(attention)


def _attention_core(spec: Spec, shape: ModelShape, dt: Dtypes, seq: int) -> int:
    """Per token. SDPA/flash (no mask, native GQA): q, k, v, output, fp32 logsumexp (dropout
    inside the kernel keeps only its RNG state). Eager: q and the repeated k, v, softmax's fp32
    output and its cast back (Korthikanti's 5as term), + a bool mask with attention dropout.
    SDPA's math kernel (MATH_SDPA_TYPES with fewer K/V heads): fp32 q, expanded k, v, probs."""
    heads = shape.num_attention_heads
    q = heads * shape.head_dim
    kv = q if shape.model_type in EXPANDED_KV_TYPES else shape.num_key_value_heads * shape.head_dim
    dropout = 1 if dropout_rates(spec)[2] else 0
    if attention_kind(spec, shape) == "eager" and shape.attention.sinks:
        # gpt-oss: a softmax in the compute dtype over the scores + one sink column, and the
        # row max's int64 indices (modeling_gpt_oss.py eager_attention_forward)
        return 3 * q * dt.compute + heads * (seq + 1) * (dt.compute + dropout) + heads * 8
    if attention_kind(spec, shape) == "eager":
        probs = 4 + (dt.compute if dt.compute < 4 else 0) + dropout
        return 3 * q * dt.compute + heads * seq * probs
    if shape.model_type in MATH_SDPA_TYPES and kv < q and spec.attention == "sdpa":
        return 3 * q * 4 + heads * seq * 4
    return (2 * q + 2 * kv) * dt.compute + heads * 4


def _mlp_groups(shape: ModelShape) -> list[tuple[int, bool, int, bool]]:
    """(intermediate, gated, tokens per token, expert) per MLP: the dense one, the experts."""
    groups, layout = [], _layout(shape)
    for expert in (False, True):
        ins, outs = layout.get(("mlp_in", expert)), layout.get(("mlp_out", expert))
        if not ins or not outs:
            continue
        inter = outs[0].in_features
        gated = len(ins) >= 2 or ins[0].out_features == 2 * inter
        groups.append((inter, gated, shape.num_experts_per_tok if expert else 1, expert))
    return groups


def mlp_bytes(spec: Spec, shape: ModelShape, dt: Dtypes, expert: bool) -> int:
    """Bytes per element of an MLP's projections' outputs (and what its activation keeps):
    bitsandbytes layers return their input's dtype (`matmul_4bit(...).to(inp_dtype)`,
    bitsandbytes@0.50.1 nn/modules.py:626-637; MatMul8bitLt, autograd/_functions.py:175), so
    under QLoRA they follow the norm's output (fp32 with TRL's fp32 norms); the rest autocast to
    the compute dtype. Fused experts are not bitsandbytes layers."""
    if spec.method != "qlora" or (expert and shape.has_fused_experts):
        return dt.compute
    return max(dt.compute, _norms(spec, shape, dt, False)[2])


def _mlp_activations(spec: Spec, shape: ModelShape, dt: Dtypes, trainable: bool) -> float:
    """Per token: gated MLP keeps act input, act output, up (3 I; Liger's SwiGLU 2 I); plain MLP
    the activation's saved input(s); routed experts what experts.py says."""
    total = 0
    lora_experts = bool(experts.lora_expert_ranks(spec, shape))
    for inter, gated, _, expert in _mlp_groups(shape):
        if expert and shape.has_fused_experts:  # LoRA on fused experts: their inputs saved
            total += experts.expert_saved_per_token(shape, inter, gated, dt,
                                                    trainable or lora_experts)
            continue
        width = mlp_bytes(spec, shape, dt, expert)
        per_token = shape.num_experts_per_tok if expert else 1
        saved = (2 if liger_applies(spec) and not expert else 3) * width if gated else (
            activation_bytes(spec.resolved_model.config.get("hidden_act"), dt))
        # transformers 4.x experts (one nn.Linear each, StackRules.fused_experts): k expert
        # MLPs per token, their outputs scaled by the routing weight, the router's logits
        total += per_token * (saved * inter + (shape.hidden_size * dt.compute if expert else 0))
    if shape.num_experts and not shape.has_fused_experts:
        total += shape.num_experts * (dt.compute + 8)
    return total


def activation_bytes(name: str | None, dt: Dtypes) -> int:
    """Bytes per intermediate element a non-gated MLP's activation keeps."""
    amp, plain = ACTIVATION_BYTES.get(name or "gelu", (dt.compute, 1))
    return amp if dt.autocast else plain * dt.compute


def lora_input_bytes(x_bytes: int, dt: Dtypes, spec: Spec) -> tuple[bool, int]:
    """What one LoRA module's lora_A keeps of its input, per input feature: (keeps the shared
    input itself, bytes of its own copy). peft casts x to the adapter dtype (bnb layers skip the
    cast under autocast); dropout > 0 keeps a bool mask and a new tensor; autocast recasts to the
    compute dtype what is not already in it."""
    width, fresh, own = x_bytes, False, 0
    if (spec.method == "lora" or not dt.autocast) and x_bytes != dt.trainable:
        width, fresh = dt.trainable, True
    if spec.lora_dropout > 0:
        own, fresh = 1, True
    if dt.autocast and width != dt.compute:
        width, fresh = dt.compute, True
    return (False, own + width) if fresh else (True, own)


def _linear_inputs(spec: Spec, shape: ModelShape, dt: Dtypes, trainable: bool,
                   norm_out: int, roles: tuple[str, ...]) -> float:
    """Per token: inputs the linears keep for backward. A trainable weight needs its input
    (autocast recasts an fp32 input per linear); frozen nn.Linear and 4-bit layers keep nothing,
    8-bit MatMul8bitLt keeps its input; LoRA keeps what `lora_input_bytes` says + lora_A's output.
    Linears of one role read one tensor, kept once; SDPA already keeps o_proj's input."""
    targets = experts.lora_linear_targets(spec, shape)
    lora_out = dt.compute if dt.autocast else dt.trainable
    total = 0
    for (role, expert), members in _layout(shape).items():
        if role not in roles:
            continue
        if role in ("attn_in", "mlp_in"):
            x_bytes = norm_out
        else:  # attention's output (autocast), or the MLP product (mlp_bytes)
            x_bytes = mlp_bytes(spec, shape, dt, expert) if role == "mlp_out" else dt.compute
        per_token = shape.num_experts_per_tok if expert else 1
        shared, own = False, 0
        for lin in members:
            if trainable and (expert or (dt.autocast and x_bytes != dt.compute)):
                own += lin.in_features * dt.compute
            elif trainable or (spec.quant_bits == 8 and not lin.fused):
                shared = True
            if lin.name in targets and not lin.fused:
                keeps_x, copy = lora_input_bytes(x_bytes, dt, spec)
                shared |= keeps_x
                own += lin.in_features * copy + spec.lora_rank * lora_out
        sdpa_out = role == "attn_out" and attention_kind(spec, shape) != "eager"
        total += per_token * (own + (members[0].in_features * x_bytes
                                     if shared and not sdpa_out else 0))
    return total


def _layer_halves(spec: Spec, shape: ModelShape, dt: Dtypes, seq: int,
                  trainable: bool) -> tuple[float, float]:
    """Per token, what one decoder layer saves for backward, split where backward splits it:
    (first norm + attention inputs + attention core, the rest: o_proj's input, second norm, MLP,
    residual dropout masks). Backward frees the second half before it reaches the first."""
    dt = dt.in_layer(trainable)
    one_norm, norms, norm_out = _norms(spec, shape, dt, trainable)
    masks = 2 * shape.hidden_size if dropout_rates(spec)[0] else 0
    first = (one_norm + _qk_norms(shape) + _attention_core(spec, shape, dt, seq)
             + _linear_inputs(spec, shape, dt, trainable, norm_out, ("attn_in",)))
    second = (one_norm * (norms - 1) + _mlp_activations(spec, shape, dt, trainable) + masks
              + _linear_inputs(spec, shape, dt, trainable, norm_out,
                               ("attn_out", "mlp_in", "mlp_out")))
    return first, second


def layer_activation_per_token(spec: Spec, shape: ModelShape, dt: Dtypes, seq: int,
                               trainable: bool) -> float:
    """Bytes one decoder layer saves for backward, per token (no checkpointing): norms, the
    attention core, the MLP's activations, the linears' inputs, residual dropout masks."""
    return sum(_layer_halves(spec, shape, dt, seq, trainable))


def checkpoint_kept_per_token(spec: Spec, shape: ModelShape, dt: Dtypes) -> int:
    """Per token and layer, what checkpointing does not drop: the layer's input, and under a
    non-reentrant checkpoint (StackRules.reentrant_checkpoint) the inputs bitsandbytes'
    MatMul8bitLt keeps in `ctx.tensors` (not saved tensors, so checkpoint's hooks never see them;
    reentrant runs the forward under no_grad, where no ctx survives)."""
    kept = shape.hidden_size * dt.hidden
    reentrant = StackRules.of(spec).reentrant_checkpoint
    if spec.method == "qlora" and spec.quant_bits == 8 and not reentrant:
        for (_, expert), members in _layout(shape).items():
            kept += 0 if expert else members[0].in_features * dt.compute
    return kept


def _lora_backward_transient(spec: Spec, shape: ModelShape, dt: Dtypes) -> int:
    """Per token, LoRA's input-gradient path at the widest targeted linear: peft cast the input
    to the adapter dtype (fp32) and autocast cast it back for lora_A, so backward makes the
    input's gradient in the compute dtype and in fp32 (the cast's backward) at once."""
    targets = experts.lora_linear_targets(spec, shape)
    widths = [lin.in_features for lin in shape.layer_linears if lin.name in targets]
    if not widths or dt.trainable == dt.compute:
        return 0
    return max(widths) * (dt.trainable + dt.compute)


def layer_backward_per_token(spec: Spec, shape: ModelShape, dt: Dtypes, seq: int,
                             trainable: bool) -> float:
    """Per token, during one layer's backward: the layer recomputed (checkpointing), the residual
    gradient in and out, and the larger of the MLP's gradient pair (2 I) and attention's
    backward buffers (eager: softmax backward holds its fp32 output, the fp32 gradient and its
    result, 12 bytes per score, of which the saved probabilities are already counted; flash: dq,
    dk, dv, fp32 dq_accum, dk/dv expanded to all heads under GQA, fp32 softmax_d)."""
    heads, hd, kv = shape.num_attention_heads, shape.head_dim, shape.num_key_value_heads
    dt = dt.in_layer(trainable)
    if attention_kind(spec, shape) == "eager" and shape.attention.sinks:
        # the compute-dtype softmax's backward: its result and the incoming gradient, the
        # gradient of the scores + sink, then of the scores alone
        attention = heads * (seq + 1) * 3 * dt.compute
    elif attention_kind(spec, shape) == "eager":
        attention = heads * seq * (12 - 4 - (dt.compute if dt.compute < 4 else 0))
    else:
        expanded = 2 * heads * hd * dt.compute if kv < heads else 0
        attention = (heads + 2 * kv) * hd * dt.compute + heads * hd * 4 + expanded + heads * 4
    mlp = max([2 * inter * mlp_bytes(spec, shape, dt, expert) * (per if expert else 1)
               for inter, _, per, expert in _mlp_groups(shape)
               if not (expert and shape.has_fused_experts)]
              + [experts.expert_transient_per_token(shape, dt),
                 _lora_backward_transient(spec, shape, dt)
                 + experts.pending_routed_gradient(shape, dt)])
    first, second = _layer_halves(spec, shape, dt, seq, trainable)
    if spec.gradient_checkpointing:  # the recomputed layer, then freed half by half
        worst = max(first + second + mlp, first + attention)
    else:  # the layer's activations are in the saved ones already
        worst = max(mlp, attention - second)
    return 2 * shape.hidden_size * dt.hidden + worst


def head_copy_terms(spec: Spec, shape: ModelShape, dt: Dtypes, liger: bool) -> tuple[int, int]:
    """(bytes per token, bytes once) an output-head modules_to_save copy adds to the saved
    activations: the head's input, kept for the copy's weight gradient (Liger's fused loss
    saves none), and under autocast the half copy of an fp32 copy's weight."""
    copy = head_copy_params(spec, shape)
    if not copy:
        return 0, 0
    per_token = 0 if liger else shape.hidden_size * dt.compute
    return per_token, copy if dt.autocast and dt.saved_bytes > dt.compute else 0
