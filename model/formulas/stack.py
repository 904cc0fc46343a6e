"""The stack's rules: what the framework and the library versions of a Spec do to memory.

`StackRules.of(spec)` reads the spec's stack once; the analytical estimator (model_states.py,
activations.py, vision.py, analytical.py) asks it, and the recipe (model/recipe/frameworks/)
builds the same thing. Each rule names the code it was read from, as `repo@version:file:line`
(transformers paths under src/transformers/, read from the PyPI wheels). Pure Python, no torch.

What moves with the stack:
- the padded sequence length (LLaMA-Factory rounds to 8);
- parameter dtypes per kind: trainable parameters, LoRA adapters, norms, embeddings and output
  head, and everything else left unquantized (transformers 5's fused MoE experts, routers, biases)
  under QLoRA: peft's `prepare_model_for_kbit_training` (TRL < 0.25) casts them to fp32;
- MoE experts: fused 3-D parameters in transformers 5 (bitsandbytes leaves them in the load
  dtype, LoRA `all` does not reach them), one nn.Linear per expert in 4.x (`ModelShape`);
- the logits: 4.x loss code keeps a shifted fp32 copy; TRL >= 0.16 keeps the fp32 logits and a
  shifted copy for its token accuracy;
- gradient checkpointing: reentrant or not, which layers, which sub-models' inputs need grad;
- the load-time peak of transformers 5.0-5.3's asynchronous on-the-fly quantization;
- the HF Trainer's default optimizer (resolved into the Spec when it is built: defaults.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from vram_ml.stack import Version, parse_version

if TYPE_CHECKING:
    from vram_ml.spec import Spec

# LLaMA-Factory@v0.9.5:src/llamafactory/train/sft/workflow.py:65: the SFT collator pads each
# batch to its longest sample, rounded up to `pad_to_multiple_of=8` when training. TRL 0.24 pads
# to the longest with no rounding (trl@v0.24.0:trl/trainer/sft_config.py pad_to_multiple_of None).
LLAMAFACTORY_PAD_MULTIPLE = 8
# The pairwise (dpo/workflow.py:48-54, rm/workflow.py:47-49) and KTO (kto/workflow.py:48-54)
# collators pad to 8 as well; pt's DataCollatorForLanguageModeling (pt/workflow.py:48) and PPO's
# prompt collator (ppo/workflow.py:48) do not.
UNPADDED_STAGES = ("pt", "ppo")
# Bytes per logit of transformers' causal-LM loss under autocast (bf16 logits, fp32 loss):
# the fp32 upcast and log-softmax output (its saved tensor) beside the half logits. <= 4.45 the
# model upcasts in forward and frees the half logits (modeling_llama.py:828 in 4.32.0, 1216 in
# 4.39.3, 1219 in 4.45.2); 4.46-4.48 ForCausalLMLoss upcasts them (loss/loss_utils.py:36 in
# 4.48.1). Both make `shift_logits = logits[..., :-1, :].contiguous()`, a second fp32 copy (4.39.3
# modeling_llama.py:1221; 4.48.1 loss_utils.py:39); >= 4.49 shifts the labels instead
# (loss_utils.py:55-59 in 4.57.6).
SHIFTED_COPY_UNTIL: Version = (4, 49, 0)
UPCAST_IN_MODEL_UNTIL: Version = (4, 46, 0)
# trl@v0.16.0:trl/trainer/sft_trainer.py:490-535 (and 0.24.0:1083-1180): compute_loss keeps
# `outputs.logits` (fp32: accelerate's convert_outputs_to_fp32, accelerate@v1.11.0
# src/accelerate/accelerator.py:1750-1761) and computes the token accuracy from
# `outputs.logits[..., :-1, :].contiguous()`, another fp32 copy, beside the saved log-softmax.
TRL_ACCURACY_FROM: Version = (0, 16, 0)
# trl@v0.22.0 sft_trainer.py: compute_loss also computes `entropy_from_logits` under no_grad, in
# chunks of 128 rows (trl@v0.24.0:trl/trainer/utils.py:1521-1551): log-softmax, exp, product.
ENTROPY_FROM: Version = (0, 22, 0)
ENTROPY_CHUNK_ROWS = 128
# trl@v0.25.1:trl/models/utils.py:475-517: TRL's own prepare_model_for_kbit_training (upcasts
# only "norm" parameters); 0.9.6-0.24 call peft's (trl@v0.24.0:trl/models/utils.py:537-544,
# trl@v0.9.6:trl/trainer/sft_trainer.py:229-240).
TRL_OWN_KBIT_PREPARE_FROM: Version = (0, 25, 0)
# peft@v0.12.0:src/peft/tuners/tuners_utils.py:316-350 `_cast_adapter_dtype`: fp16/bf16 adapter
# weights to fp32 (autocast_adapter_dtype=True, the default). peft 0.7-0.11 create them in the
# base weight's dtype when it is floating (peft@v0.11.1:src/peft/tuners/lora/layer.py:128-129;
# v0.7.1 lora/layer.py:99-100).
ADAPTER_FP32_FROM: Version = (0, 12, 0)
# transformers 5.0: MoE experts as fused 3-D nn.Parameters (v5.0.0 models/mixtral/
# modeling_mixtral.py:62-126, MixtralExperts / MixtralTopKRouter); 4.x: one nn.Linear per
# expert and an nn.Linear router (v4.57.6 modeling_mixtral.py:57-97). Also from 5.0:
# `gradient_checkpointing_enable` defaults to non-reentrant (v5.0.0 modeling_utils.py:3098-3099;
# 4.x: reentrant, v4.57.6:3691-3692, v4.39.3:2115) and `enable_input_require_grads` hooks the
# input embeddings of every PreTrainedModel inside the model (v5.0.0 modeling_utils.py:2135;
# 4.x only the top model's, v4.57.6:2858).
FUSED_EXPERTS_FROM: Version = (5, 0, 0)
# transformers 5.0-5.3 load checkpoint tensors on a thread pool that materializes them in full
# precision on the device ahead of the quantizer (v5.3.0 core_model_loading.py:782, :794-808,
# :1105-1110; issue 43032); PR 44576 (5.4.0) disables it when quantizing on the fly (v5.6.0
# core_model_loading.py:1270-1278).
# peft 0.19.0 added `_convert_peft_config_moe` (src/peft/utils/transformers_weight_conversion.py:
# 349 at v0.19.0, :402 at v0.20.0), which moves gate/up/down targets onto fused 3-D experts;
# peft 0.18.1 has no such module: its LoRA never reaches fused experts.
PEFT_EXPERT_LORA_FROM: Version = (0, 19, 0)
ASYNC_LOAD_FROM: Version = (5, 0, 0)
ASYNC_LOAD_FIXED: Version = (5, 4, 0)
# accelerate's FSDP2 preparation casts the whole model to fp32 under mixed precision, frozen
# parameters too (accelerate@v1.11.0:src/accelerate/utils/fsdp_utils.py:700-707, v1.12.0:
# 709-712); from 1.13 only the parameters that require grad (v1.13.0:733-740, PR 3848). FSDP1
# upcasts only flat parameters that require grad (accelerator.py:1503-1540 in v0.32.1, from
# v0.30.0): frozen units stay in the load dtype.
FSDP2_TRAINABLE_UPCAST_FROM: Version = (1, 13, 0)


@dataclass(frozen=True)
class StackRules:
    """What one spec's stack does to memory (see the module docstring for the sources)."""

    framework: str
    transformers: Version
    peft: Version
    trl: Version
    bitsandbytes: Version
    accelerate: Version
    method: str
    quant_bits: int | None
    precision: str
    gradient_checkpointing: bool
    stage: str = "sft"

    @classmethod
    def of(cls, spec: Spec) -> StackRules:
        return cls(spec.framework, parse_version(spec.transformers_version),
                   parse_version(spec.peft_version), parse_version(spec.trl_version),
                   parse_version(spec.bitsandbytes_version),
                   parse_version(spec.accelerate_version), spec.method, spec.quant_bits,
                   spec.precision, spec.gradient_checkpointing, spec.stage)

    @property
    def llamafactory(self) -> bool:
        return self.framework == "llamafactory"

    @property
    def uses_trl(self) -> bool:
        """TRL's SFTTrainer wraps the step (framework trl); hf_trainer is the plain Trainer."""
        return self.framework == "trl"

    # --- sequence --------------------------------------------------------------------------

    def padded_seq_len(self, seq_len: int) -> int:
        """The batch's length for samples of `seq_len` tokens (LLAMAFACTORY_PAD_MULTIPLE;
        not for UNPADDED_STAGES)."""
        if not self.llamafactory or self.stage in UNPADDED_STAGES:
            return seq_len
        return -(-seq_len // LLAMAFACTORY_PAD_MULTIPLE) * LLAMAFACTORY_PAD_MULTIPLE

    # --- parameter dtypes ------------------------------------------------------------------

    @property
    def fp32_trainable(self) -> bool:
        """Base parameters that train are upcast to fp32: LLaMA-Factory's
        cast_trainable_params_to_fp32 (LLaMA-Factory@v0.9.5:src/llamafactory/model/adapter.py:
        313-325, :49-54, :129-136; not under pure_bf16). TRL trains them in the load dtype: the
        Trainer never casts (the spec's precision is the load dtype, as `model_init_kwargs`
        dtype / fms-hf-tuning's torch_dtype give it)."""
        return self.llamafactory and self.precision != "pure_bf16"

    @property
    def fp32_adapters(self) -> bool:
        """LoRA A/B in fp32: peft >= 0.12 upcasts adapters itself (ADAPTER_FP32_FROM; LLaMA-Factory
        needs peft >= 0.18 and casts every trainable parameter too, adapter.py:286-288, but under
        pure_bf16 casts nothing back); peft 0.11 leaves them in a floating base weight's dtype,
        fp32 beside 4/8-bit ones."""
        return self.peft >= ADAPTER_FP32_FROM or self.method == "qlora" or self.llamafactory

    @property
    def peft_kbit_prepare(self) -> bool:
        """peft's prepare_model_for_kbit_training runs: TRL < 0.25 on a bitsandbytes model, and
        the plain Trainer's scripts call it themselves (Qwen@2df8e8a finetune.py:344-347).
        It casts every fp16/bf16 parameter that is not Params4bit to fp32
        (peft@v0.18.1:src/peft/utils/other.py:170-175; the same loop in 0.7.1 other.py:100-103
        and 0.11.1-0.21.2). LLaMA-Factory 0.9.5 never calls it (no call in src/)."""
        if self.llamafactory or self.method != "qlora":
            return False
        return not self.uses_trl or self.trl < TRL_OWN_KBIT_PREPARE_FROM

    @property
    def norms_fp32(self) -> bool:
        """Frozen norm weights in fp32 under QLoRA: every TRL and plain-Trainer path (peft's
        prepare; TRL >= 0.25's
        own, "norm" parameters only; then peft_module_casting_to_bf16 sends modules named "norm"
        to fp32, trl@v0.24.0:trl/models/utils.py:503-510). LLaMA-Factory: only with
        `upcast_layernorm` (default False, hparams/model_args.py:153)."""
        return not self.llamafactory and self.method == "qlora" and self.precision != "fp32"

    @property
    def bf16_recast(self) -> bool:
        """TRL's peft_module_casting_to_bf16 after get_peft_model, for 4-bit with bf16: the
        embeddings and lm_head go back to bf16 (trl@v0.24.0:trl/models/utils.py:559-561)."""
        return self.uses_trl and self.quant_bits == 4 and self.precision == "bf16"

    def frozen_bytes(self, kind: str, compute: int) -> int:
        """Bytes per element of a frozen, unquantized parameter of `kind` under this stack:
        "norm", "embedding" (input embeddings and lm_head) or "other" (fused experts, routers,
        biases, vision parameters that are not nn.Linear weights)."""
        if self.method != "qlora" or compute == 4:
            return compute
        if kind == "norm":
            return 4 if self.norms_fp32 else compute
        if not self.peft_kbit_prepare:
            return compute
        if kind == "embedding" and self.bf16_recast:
            return compute
        return 4

    def fsdp_frozen_bytes(self, spec: Spec, compute: int) -> int:
        """Bytes per element of a frozen, unquantized parameter as FSDP shards it: accelerate
        < FSDP2_TRAINABLE_UPCAST_FROM casts the whole model to fp32 before FSDP2 shards it
        (under mixed precision); otherwise the load dtype."""
        if (spec.distributed == "fsdp" and spec.fsdp_version == 2
                and spec.precision in ("bf16", "fp16")
                and self.accelerate < FSDP2_TRAINABLE_UPCAST_FROM):
            return 4
        return compute

    # --- MoE -------------------------------------------------------------------------------

    @property
    def fused_experts(self) -> bool:
        """Experts as fused 3-D parameters (FUSED_EXPERTS_FROM): bitsandbytes replaces only
        exact nn.Linear / Conv1D (transformers@v5.6.2 integrations/bitsandbytes.py:184) and
        has no fused-experts module up to 0.50 (bitsandbytes issue 1849), so they stay
        unquantized; LoRA `all` (LLaMA-Factory find_all_linear_modules, model_utils/misc.py:
        28-52: class names holding "Linear"; peft all-linear) does not reach them."""
        return self.transformers >= FUSED_EXPERTS_FROM

    @property
    def peft_expert_lora(self) -> bool:
        """peft converts LoRA targets onto fused experts (PEFT_EXPERT_LORA_FROM), which exist
        only from transformers 5 (FUSED_EXPERTS_FROM); experts.lora_expert_ranks says which."""
        return self.fused_experts and self.peft >= PEFT_EXPERT_LORA_FROM

    # --- logits ----------------------------------------------------------------------------

    def forward_logit_bytes(self, compute: int) -> int:
        """Bytes per logit at the loss forward's largest moment, inside autocast (no Liger;
        TRL's metrics come after it: analytical.metrics_logits_bytes)."""
        upcast = 4 if compute < 4 else 0
        if self.transformers < UPCAST_IN_MODEL_UNTIL:  # half logits freed by the upcast
            loss = max(compute + upcast, (upcast or compute) + 4 + 4)
        elif self.transformers < SHIFTED_COPY_UNTIL:
            loss = compute + upcast + 4 + 4
        else:
            loss = compute + upcast + 4
        return loss

    @property
    def shifted_logits_copy(self) -> bool:
        return self.transformers < SHIFTED_COPY_UNTIL

    @property
    def trl_accuracy(self) -> bool:
        """TRL_ACCURACY_FROM: TRL's compute_loss keeps fp32 logits and a shifted copy."""
        return self.uses_trl and self.trl >= TRL_ACCURACY_FROM

    # --- gradient checkpointing ------------------------------------------------------------

    @property
    def reentrant_checkpoint(self) -> bool:
        """LLaMA-Factory: `use_reentrant_gc` True (hparams/model_args.py:149; its wrapper,
        model_utils/checkpointing.py:120-121, :174-176). TRL QLoRA: peft's (or TRL >= 0.25's)
        prepare passes `gradient_checkpointing_kwargs or {}`, which transformers does not replace,
        so torch's default applies: reentrant (torch 2.13 utils/checkpoint.py:486-496). TRL
        otherwise: transformers' default (FUSED_EXPERTS_FROM: non-reentrant from 5.0)."""
        if self.llamafactory or self.method == "qlora":
            return True
        return self.transformers < FUSED_EXPERTS_FROM

    @property
    def checkpoints_frozen_layers(self) -> bool:
        """LLaMA-Factory checkpoints only layers holding a trainable parameter and calls the
        others directly (get_custom_gradient_checkpointing_func, model_utils/checkpointing.py:
        80-103); transformers checkpoints every GradientCheckpointingLayer."""
        return not self.llamafactory

    @property
    def hooks_input_embeddings(self) -> bool:
        """Whether the input embeddings are hooked to output tensors that require grad
        (`enable_input_require_grads`): under checkpointing, by peft for non-quantized models
        (peft@v0.18.1 peft_model.py:136, `_prepare_model_for_gradient_checkpointing`), by peft's /
        TRL's kbit prepare, by TRL's enable_gradient_checkpointing and transformers' own
        gradient_checkpointing_enable. LLaMA-Factory replaces the latter and calls no kbit
        prepare, so only its (non-quantized) LoRA gets the hook."""
        if not self.gradient_checkpointing:
            return False
        return self.method == "lora" if self.llamafactory else True

    @property
    def hooks_every_input_embedding(self) -> bool:
        """The hook reaches every sub-model's input embeddings (a VLM's vision patch embedding
        too) from transformers 5.0 (FUSED_EXPERTS_FROM), only the top model's before."""
        return self.hooks_input_embeddings and self.transformers >= FUSED_EXPERTS_FROM

    # --- loading ---------------------------------------------------------------------------

    @property
    def async_quantized_load(self) -> bool:
        """ASYNC_LOAD_FROM-ASYNC_LOAD_FIXED with on-the-fly bitsandbytes quantization: the
        load can hold the whole checkpoint of the quantized layers in full precision."""
        return (self.method == "qlora"
                and ASYNC_LOAD_FROM <= self.transformers < ASYNC_LOAD_FIXED)
