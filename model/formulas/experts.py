"""Mixture-of-experts terms of the analytical estimator: what routed experts keep for backward and
what they hold while they run, per token, in bytes. Pure Python, no torch.

transformers 5.24 runs fused 3-D experts through `grouped_mm_experts_forward`
(integrations/moe.py:424-537, the default `experts_implementation`): per token, `k` (token,
expert) pairs are gathered (`hidden_states[perm // top_k]`, [S, H] with S = tokens x k), sent
through one grouped matmul to [S, 2I], gated (silu(gate) * up), sent through a second grouped
matmul to [S, H], scaled by the routing weights, put back in token order (`[inv_perm]`) and
summed over the k. With frozen experts (LoRA: `target_modules` never reach fused parameters)
`torch._grouped_mm` saves only its weight (checked: its autograd saves `self` only when the
weight needs a gradient), so what stays for backward per pair is the gate/up output (2 I), the
activation (I) and the down output (H, saved by the multiply with the routing weight). What does
not stay but is alive while the block runs: the gathered input (a local of the function until it
returns) and the scaled output before and after the permutation, 3 x [S, H]; backward holds
the same 3 x [S, H] at the multiply's backward (the incoming gradient permuted back, the
gradient of the down output, the temporary for the routing weights' gradient).

Llama 4 (`moe_routing == "all"`, modeling_llama4.py:156-176) repeats every token for every
expert (`hidden_states.repeat(E, 1) * router_scores`) and runs dense bmm's over all of them: the
same terms with E in place of k, plus the repeated input that the multiply by the scores saves.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from vram_ml.model.formulas.stack import StackRules

if TYPE_CHECKING:
    from vram_ml.architectures import ModelShape
    from vram_ml.model.formulas.model_states import Dtypes
    from vram_ml.spec import Spec

INDEX_BYTES = 8  # int64 indices (perm // k, perm, inv_perm) the gathers and scatters keep
PAIR_INDICES = 3
# routers whose scores are a softmax over all experts (the rest use a sigmoid per expert, or, in
# gpt-oss, a softmax over the top-k logits only)
SIGMOID_ROUTERS = frozenset({"deepseek_v3", "glm4_moe", "minimax_m2", "llama4_text"})
# intermediate-width tensors the gate keeps per pair: silu(gate) * up keeps the gate/up output
# (2 I) and silu's output (I); gpt-oss's clamped GLU (modeling_gpt_oss.py GptOssExperts
# _apply_gate) also keeps the clamped gate, its sigmoid, up + 1 and the GLU (6 I in all)
GATE_SAVED_WIDTHS = {"gpt_oss": 6}
# routers whose top-k weights are fp32, so that the routed block's scaled and permuted outputs
# are fp32 too: MiniMax-M2's sigmoid runs on `router_logits.float()`, DeepSeek-V2's softmax has
# `dtype=torch.float32`, neither is cast back; DeepSeek-V3's and GLM-4.5's fp32 router linear
# (`hidden_states.type(torch.float32)`, an fp32 weight) is cast down by autocast, so their
# weights are fp32 only without autocast
FP32_ROUTING_WEIGHTS = frozenset({"minimax_m2", "deepseek_v2"})
FP32_ROUTERS = frozenset({"deepseek_v3", "glm4_moe"})


def routed_pairs(shape: ModelShape) -> int:
    """(token, expert) pairs per token: top-k, or every expert for Llama 4."""
    if not shape.num_experts:
        return 0
    return shape.num_experts if shape.moe_routing == "all" else shape.num_experts_per_tok


def expert_saved_per_token(shape: ModelShape, inter: int, gated: bool, dt: Dtypes,
                           trainable: bool) -> float:
    """What the routed experts keep for backward, per token. Trainable experts (full / freeze)
    also keep each grouped matmul's input (the gathered tokens, the gated product)."""
    pairs, hidden, c = routed_pairs(shape), shape.hidden_size, dt.compute
    widths = GATE_SAVED_WIDTHS.get(shape.model_type, 3) if gated else 1
    # the down output (saved by the multiply with the routing weight); Llama 4 scales the
    # repeated input instead, which that multiply saves
    per_pair = (widths * inter + hidden) * c
    if shape.moe_routing != "all":
        per_pair += PAIR_INDICES * INDEX_BYTES
    if trainable:
        per_pair += (hidden + inter) * c
    return pairs * per_pair + router_saved_per_token(shape, dt)


def router_saved_per_token(shape: ModelShape, dt: Dtypes) -> float:
    """The router's probabilities (softmax or sigmoid, fp32) and top-k indices and weights."""
    experts, k = shape.num_experts, shape.num_experts_per_tok
    return experts * 4 + k * (INDEX_BYTES + 4 + dt.compute)


def expert_transient_per_token(shape: ModelShape, dt: Dtypes) -> float:
    """Bytes the routed experts hold while they run (forward) or while their backward runs,
    beyond what they saved: 3 x [pairs, H] (see the module docstring); gpt-oss also gathers
    its expert biases per pair."""
    pairs = routed_pairs(shape)
    if not pairs:
        return 0
    c = dt.compute
    # the gathered input + the scaled output before and after the permutation (fp32 with fp32
    # routing weights, and so are backward's three gradients of that size)
    fp32 = shape.model_type in FP32_ROUTING_WEIGHTS or (
        shape.model_type in FP32_ROUTERS and not dt.autocast)
    held = shape.hidden_size * (max(3 * c, c + 8) if fp32 else 3 * c)
    if shape.moe_routing == "all":
        # Llama 4: the scaled copy of the repeated input is alive too (the simulated step finds
        # it at the backward peak of a recomputed layer): 4 x [E x tokens, H]
        held += shape.hidden_size * c
    if any(lin.fused and lin.bias for lin in shape.layer_linears):
        held += shape.hidden_size * dt.compute  # the down projection's gathered biases
    return pairs * held


def pending_routed_gradient(shape: ModelShape, dt: Dtypes) -> float:
    """Llama 4 adds the routed output (summed over experts) to the shared expert's last: backward
    materialises the [E x tokens, H] gradient of the experts' output first, and it waits while
    the shared expert's backward runs."""
    if shape.moe_routing != "all":
        return 0
    return routed_pairs(shape) * shape.hidden_size * dt.compute


# --- LoRA on fused experts (peft >= 0.19 with transformers 5) --------------------------------
# peft converts LoRA targets written for transformers 4's per-expert nn.Linear MoE into
# `target_parameters` on the fused 3-D experts (peft/utils/transformers_weight_conversion.py
# `_convert_peft_config_moe`): for the model_types transformers maps to the "qwen2_moe"
# conversion pattern (transformers/conversion_mapping.py _MODEL_TO_CONVERSION_PATTERN), a target
# named gate_proj and up_proj puts LoRA of rank 2r on `experts.gate_up_proj`, down_proj rank r on
# `experts.down_proj` -- and drops those names from the nn.Linear targets, so the dense MLPs and
# shared experts that carry them get no LoRA. `lora_target: all` names them wherever a dense MLP
# or a shared expert has them (DeepSeek's and GLM-4.5's first layers and shared experts);
# Qwen3-MoE has none unless it has dense `mlp_only_layers`. Such a layer (peft ParamWrapper +
# _LoraFactorsProxy) forms the merged weight W + B A (a full [E, out, in] copy in the weight's
# dtype, `torch.baddbmm`) on every forward; the grouped matmul saves it and, since it now needs
# a gradient, its input; backward makes the merged weight's gradient (another full copy) before
# reducing it to the LoRA factors.
PEFT_EXPERT_LORA_TYPES = frozenset({"deepseek_v2", "deepseek_v3", "glm4_moe", "qwen3_moe"})


def lora_expert_ranks(spec: Spec, shape: ModelShape) -> dict[str, int]:
    """The fused expert parameters LoRA reaches and their rank ({} when none)."""
    if (spec.method not in ("lora", "qlora") or shape.model_type not in PEFT_EXPERT_LORA_TYPES
            or not shape.has_fused_experts  # transformers 4.x: experts are nn.Linear
            or not StackRules.of(spec).peft_expert_lora):  # peft < 0.19 never converts
        return {}
    targets, ranks = set(spec.target_modules), {}
    if {"gate_proj", "up_proj"} <= targets:
        ranks["experts.gate_up_proj"] = 2 * spec.lora_rank
    if "down_proj" in targets:
        ranks["experts.down_proj"] = spec.lora_rank
    return ranks


def lora_linear_targets(spec: Spec, shape: ModelShape) -> set[str]:
    """The nn.Linear names LoRA wraps (`spec.target_modules` after peft's conversion above)."""
    if spec.method not in ("lora", "qlora"):
        return set()
    targets = set(spec.target_modules)
    if lora_expert_ranks(spec, shape):
        targets -= {"gate_proj", "up_proj", "down_proj"}
    return targets


def _fused(shape: ModelShape, spec: Spec) -> list:
    ranks = lora_expert_ranks(spec, shape)
    return [lin for lin in shape.layer_linears if lin.fused and lin.name in ranks]


def merged_expert_bytes(spec: Spec, shape: ModelShape, dt: Dtypes) -> int:
    """One layer's merged expert weights (W + B A), kept for backward by the grouped matmuls."""
    return sum(lin.count * lin.in_features * lin.out_features for lin in _fused(shape, spec)) * (
        dt.frozen)


def merged_expert_gradient_bytes(spec: Spec, shape: ModelShape, dt: Dtypes) -> int:
    """The largest merged weight's gradient, made in backward before the LoRA factors' own."""
    return max((lin.count * lin.in_features * lin.out_features for lin in _fused(shape, spec)),
               default=0) * dt.frozen


def with_merged_expert_backward(spec: Spec, shape: ModelShape, dt: Dtypes, tokens: int,
                                layer_extra: int) -> int:
    """The last layer's backward bytes with LoRA on its fused experts: the larger of the moment
    the routed block's backward starts (its 3 x [S, H] transient, counted in `layer_extra`, with
    the merged weights, recomputed under checkpointing) and the moment the gate/up merged weight's
    gradient exists (that gradient, the [S, 2I] gradient it is made from and, under
    checkpointing, the recomputed gathered input and the gate/up merged weight still saved)."""
    merged = merged_expert_bytes(spec, shape, dt)
    if not merged:
        return layer_extra
    checkpointed = spec.gradient_checkpointing
    gradient = merged_expert_gradient_bytes(spec, shape, dt)
    pairs, c = routed_pairs(shape), dt.compute
    inter = next(lin.in_features for lin in shape.layer_linears if lin.name == "experts.down_proj")
    at_start = layer_extra + (merged if checkpointed else 0)
    at_gradient = gradient + tokens * pairs * 2 * inter * c
    if checkpointed:
        at_gradient += gradient + tokens * pairs * shape.hidden_size * c
    return max(at_start, at_gradient)


def grouped_mm_dtype_problem(spec: Spec, shape: ModelShape) -> str | None:
    """Why the step cannot run, when fused experts through grouped_mm are not bf16 (torch's
    grouped_mm takes bf16 only; the recipe refuses the same spec, model_build.py)."""
    def fused(groups) -> bool:  # some layer of these groups runs fused experts
        return any(count and any(lin.fused for lin in group.layer_linears)
                   for count, group in groups)

    if not fused(shape.layer_groups) or shape.moe_routing != "grouped":
        return None  # (a model cut to its first, dense layers has no experts at all)
    trained = spec.method == "full" or (spec.method == "freeze" and fused(shape.groups_of_layers(
        range(shape.num_layers - spec.freeze_trainable_layers, shape.num_layers))))
    if trained and spec.precision != "pure_bf16":
        dtype = "fp32 (trainable parameters are upcast)"
    elif spec.precision in ("fp16", "fp32"):
        dtype = spec.precision
    else:
        return None
    return (f"fused MoE experts in {dtype}: transformers 5 runs them through torch grouped_mm, "
            "which takes bf16 only; this run fails (estimated as if it ran)")
