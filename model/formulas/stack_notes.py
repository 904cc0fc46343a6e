"""The notes an answer carries when a stack rule (stack.py) changes it: what the framework or
the library version did, and how much it moved. Pure Python, no torch."""

from __future__ import annotations

from typing import TYPE_CHECKING

from vram_ml.model.formulas.model_states import frozen_kind_params, load_extra
from vram_ml.model.formulas.parameters import trainable_parameters
from vram_ml.model.formulas.stack import StackRules

if TYPE_CHECKING:
    from vram_ml.architectures import ModelShape
    from vram_ml.model.formulas.model_states import Dtypes
    from vram_ml.spec import Spec

GIB, MIB = 1024**3, 1024**2


def _gib(n_bytes: float) -> str:
    return f"{n_bytes / GIB:.2f} GiB" if n_bytes >= GIB / 10 else f"{n_bytes / MIB:.1f} MiB"


def stack_notes(spec: Spec, shape: ModelShape, dt: Dtypes, padded: int) -> list[str]:
    """One line per rule that changed this answer (`spec` as given; `padded`: the batch's
    sequence length)."""
    rules = StackRules.of(spec)
    notes: list[str] = []
    if padded != spec.seq_len:
        notes.append(f"llamafactory pads batches to a multiple of 8: estimated at {padded} tokens "
                     f"per sample (cutoff {spec.seq_len}); the padded positions' mask is not "
                     "counted")
    notes += _moe_notes(spec, shape, rules, dt)
    if spec.method == "qlora":
        notes += _qlora_notes(spec, shape, rules, dt)
    if rules.shifted_logits_copy and not spec.liger_kernel:
        notes.append(f"transformers {spec.transformers_version} keeps a shifted fp32 copy of the "
                     "logits in the loss (4 more bytes per logit than >= 4.49)")
    if spec.method == "freeze" and spec.gradient_checkpointing and rules.llamafactory:
        notes.append(f"llamafactory checkpoints only the {spec.freeze_trainable_layers} "
                     "trainable layers; the frozen layers before them keep nothing")
    if (shape.vision is not None and spec.images_per_sample
            and not trainable_parameters(spec).vision
            and rules.hooks_every_input_embedding and not rules.checkpoints_frozen_layers):
        notes.append("llamafactory leaves the frozen vision tower un-checkpointed and peft's "
                     "input hook (transformers 5) puts it in the graph: its blocks keep all "
                     "their activations")
    if spec.optimizer == "adamw_torch" and rules.transformers < (4, 54, 0):
        notes.append(f"transformers {spec.transformers_version}'s default optimizer is "
                     "adamw_torch (foreach): its step holds a copy of every trainable state "
                     "(adamw_torch_fused from 4.54 holds none)")
    if spec.method == "full" and not rules.llamafactory and spec.precision in ("bf16", "fp16"):
        notes.append(f"{spec.framework} trains the half-precision weights as loaded, with no "
                     "fp32 copy "
                     "(llamafactory upcasts them: 16 instead of 8 bytes per parameter)")
    if not rules.fp32_adapters and spec.method == "lora":
        notes.append(f"peft {spec.peft_version} keeps LoRA adapters in the base weights' dtype "
                     "(fp32 from 0.12)")
    return notes


def _moe_notes(spec: Spec, shape: ModelShape, rules: StackRules, dt: Dtypes) -> list[str]:
    if not shape.num_experts or spec.method not in ("lora", "qlora"):
        return []
    experts = shape.num_experts
    if rules.fused_experts:
        fused = shape.num_layers * sum(lin.params for lin in shape.layer_linears if lin.fused)
        width = rules.frozen_bytes("other", dt.frozen)
        stored = ("bitsandbytes leaves them unquantized, "
                  f"{'fp32' if width == 4 else 'bf16' if width == 2 else 'fp8'}: "
                  f"{_gib(fused * width)}, " if spec.method == "qlora" else "")
        return [f"transformers {spec.transformers_version} stores the {experts} experts fused: "
                f"{stored}LoRA `all` does not reach them"]
    lora = ", LoRA `all` adds adapters to every expert and the router" if (
        spec.lora_target == ("all",)) else ""
    quant = "bitsandbytes quantizes the experts and the router" if spec.method == "qlora" else ""
    return [f"transformers {spec.transformers_version} builds one nn.Linear per expert: "
            + ", ".join(part for part in (quant, lora.lstrip(", ")) if part)]


def _qlora_notes(spec: Spec, shape: ModelShape, rules: StackRules, dt: Dtypes) -> list[str]:
    notes = []
    kinds = frozen_kind_params(shape)
    upcast = {kind: params * (rules.frozen_bytes(kind, dt.frozen) - dt.frozen)
              for kind, params in kinds.items()}
    if rules.peft_kbit_prepare:
        parts = [name for kind, name in (("norm", "norms"), ("embedding", "embeddings and head"),
                                         ("other", "experts, routers and biases"))
                 if upcast[kind]]
        notes.append(f"trl {spec.trl_version} runs peft's prepare_model_for_kbit_training: every "
                     f"unquantized parameter to fp32 (+{_gib(sum(upcast.values()))}: "
                     f"{', '.join(parts)} stay fp32)")
    elif rules.norms_fp32:
        notes.append(f"trl {spec.trl_version} casts the norms to fp32 (+{_gib(upcast['norm'])})")
    if rules.norms_fp32 and dt.hidden == 4:
        notes.append("fp32 norms make the residual stream fp32: every saved layer input and "
                     "quantized projection output takes 4 bytes per element")
    extra = load_extra(spec, shape, dt)
    if rules.async_quantized_load and extra:
        notes.append(f"transformers {spec.transformers_version} loads asynchronously while "
                     f"quantizing: up to {_gib(extra)} of unquantized weights on the GPU at load "
                     "(transformers issue 43032; fixed in 5.4)")
    return notes
