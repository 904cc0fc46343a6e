"""The recipe: the fine-tuning step of a Spec, as the spec's framework would run it.

One recipe, three users: the agent runs it for real on CUDA (and on the CPU for tiny models), and
`simulate` runs it on fake tensors. Every choice that moves memory is made here, once:

- model from its config only (random weights, never `trust_remote_code`), `spec.attention`;
- dtypes: frozen weights in the compute dtype (bf16, fp16 for `fp16`, fp32 for `fp32`), the load
  dtype of both frameworks here; autocast only for bf16/fp16 (accelerate's native AMP, outputs
  converted to fp32);
- method: `full` (all but a frozen vision tower / projector), `freeze` (the last N decoder layers),
  `lora`/`qlora` (peft on the target linears outside frozen vision modules); QLoRA quantizes every
  linear transformers' bitsandbytes integration would (all but the output head) with bitsandbytes;
- the framework (frameworks/, chosen by `spec.framework`): `llamafactory` checkpoints, with its
  own reentrant wrapper, only layers holding trainable parameters, and upcasts trainable
  parameters to fp32; `trl` runs peft's `prepare_model_for_kbit_training` (TRL < 0.25) or TRL's
  own for QLoRA, transformers' checkpointing otherwise, casts nothing, and keeps the fp32 logits
  for its entropy and token accuracy;
- LoRA dropout as configured;
- optimizer as HF Trainer builds it (decay / no-decay groups, AdamW `foreach` as on CUDA) and
  `clip_grad_norm_(1.0)` (Trainer's `max_grad_norm`);
- a batch of `batch_size x seq_len` tokens (LLaMA-Factory: rounded up to 8) with labels = inputs;
  VLMs get their images and image tokens inside `seq_len` (LLaMA-Factory's cutoff counts them).

The recipe executes the installed transformers / peft / bitsandbytes, whatever versions the spec
names; the analytical estimator carries the rules of the others (model/formulas/stack.py).

Where each part lives: model_build.py (config -> model), methods.py (what trains, LoRA,
bitsandbytes), frameworks/ (checkpointing, casts, the forward and loss per framework),
precision.py (dtypes), weights.py (random weights on a device), batch.py, optimizer.py, step.py
(one step, and the loop of N steps). A new framework is a module in frameworks/; nothing outside
this package needs to know.

Deviations, all memory-neutral or noted: 8-bit QLoRA uses `threshold=0` (no outlier columns:
their count depends on the data); fp16 runs without a GradScaler unless the caller passes one.

Example (agent, real CUDA):
    model = build_model(spec, "cuda")
    batch = make_batch(spec, model, "cuda")
    optimizer = make_optimizer(spec, model)
    run_steps(spec, model, batch, optimizer, 2, scaler=make_grad_scaler(spec, "cuda"))
"""

from vram_ml.model.recipe.batch import image_token_count, make_batch, qwen2_vl_grid
from vram_ml.model.recipe.methods import (
    add_lora,
    forbidden_prefixes,
    lora_target_names,
    mark_trainable,
    quantize_linears,
)
from vram_ml.model.recipe.model_build import (
    SUPPORTED_VLMS,
    attention_implementation,
    build_model,
    hf_config,
    is_multimodal,
    model_class,
)
from vram_ml.model.recipe.optimizer import make_grad_scaler, make_optimizer, trainable_parameters
from vram_ml.model.recipe.precision import autocast_dtype, compute_dtype, trainable_dtype
from vram_ml.model.recipe.step import run_steps, train_step
from vram_ml.model.recipe.unsupported import UnsupportedRecipe

__all__ = [
    "SUPPORTED_VLMS", "UnsupportedRecipe", "add_lora", "attention_implementation",
    "autocast_dtype", "build_model", "compute_dtype", "forbidden_prefixes", "hf_config",
    "image_token_count", "is_multimodal", "lora_target_names", "make_batch", "make_grad_scaler",
    "make_optimizer", "mark_trainable", "model_class", "qwen2_vl_grid", "quantize_linears",
    "run_steps", "train_step", "trainable_dtype", "trainable_parameters",
]
