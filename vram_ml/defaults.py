"""Defaults, in one place: LLaMA-Factory's own, which `Spec` and the YAML reader both use.

Read from LLaMA-Factory's hparams (finetuning_args.py, model_args.py, data_args.py) and
transformers' TrainingArguments. A key a user leaves out gets these values, and vram-ml says so
("assumed: ...").
"""

from __future__ import annotations

# Spec field -> (default, where LLaMA-Factory / transformers sets it)
LLAMAFACTORY_DEFAULTS: dict[str, tuple[object, str]] = {
    "method": ("lora", "finetuning_type: lora"),
    "quant_bits": (None, "quantization_bit: None (no quantization)"),
    "quant_type": ("nf4", "quantization_type: nf4"),
    "double_quant": (True, "double_quantization: true"),
    "lora_rank": (8, "lora_rank: 8"),
    "lora_alpha": (None, "lora_alpha: None (= lora_rank * 2)"),
    "lora_dropout": (0.0, "lora_dropout: 0.0"),
    "lora_target": (("all",), "lora_target: all (every linear except lm_head and vision modules)"),
    "additional_target": ((), "additional_target: None (no module trained beside the adapters)"),
    "freeze_trainable_layers": (2, "freeze_trainable_layers: 2 (the last two layers)"),
    "batch_size": (8, "per_device_train_batch_size: 8 (transformers TrainingArguments)"),
    "gradient_accumulation": (1, "gradient_accumulation_steps: 1"),
    "seq_len": (2048, "cutoff_len: 2048"),
    # Neither bf16 nor fp16: LLaMA-Factory loads weights in half precision (infer_optim_dtype)
    # and trains without autocast; trainable parameters are upcast to fp32.
    "precision": ("no_amp", "bf16: false, fp16: false (half-precision weights, no autocast)"),
    "gradient_checkpointing": (True, "disable_gradient_checkpointing: false"),
    "attention": ("sdpa", "flash_attn: auto (SDPA on torch >= 2.1.1)"),
    # transformers 5 picks the fused AdamW when torch >= 2.8 (TrainingArguments.optim default).
    "optimizer": ("adamw_torch_fused", "optim: adamw_torch_fused (transformers 5, torch >= 2.8)"),
    "liger_kernel": (False, "enable_liger_kernel: false"),
    "images_per_sample": (0, "no images (text-only data)"),
    "image_resolution": (768, "image_max_pixels: 768*768"),
    "freeze_vision_tower": (True, "freeze_vision_tower: true"),
    "freeze_multi_modal_projector": (True, "freeze_multi_modal_projector: true"),
    "num_gpus": (1, "one process / GPU"),
    "zero_stage": (0, "deepspeed: none"),
    # Multi-GPU (vram_ml/distributed.py). Without a config file: LLaMA-Factory's examples,
    # examples/deepspeed/ds_z{0,2,3}_config.json and examples/accelerate/fsdp_config.yaml
    # (LLaMA-Factory@v0.9.5).
    "distributed": ("none", "one process (num_gpus > 1: DDP; a ZeRO stage: DeepSpeed)"),
    "num_nodes": (1, "one node"),
    "offload": ("none", "no CPU offload"),
    "fsdp_sharding": ("FULL_SHARD", "fsdp_sharding_strategy: FULL_SHARD (examples/accelerate/"
                                    "fsdp_config.yaml)"),
    "fsdp_version": (1, "fsdp_version: 1 (accelerate's default; examples/accelerate/"
                        "fsdp_config.yaml)"),
    "zero_reduce_bucket_size": (None, "reduce_bucket_size as examples/deepspeed/"
                                      "ds_z{stage}_config.json: 5e8 (ZeRO-0/1/2), auto = "
                                      "hidden^2 (ZeRO-3)"),
    "zero_overlap_comm": (False, "overlap_comm: false (examples/deepspeed/ds_z*_config.json)"),
    "zero_prefetch_bucket_size": (None, "stage3_prefetch_bucket_size: auto = 0.9 x hidden^2 "
                                        "(ds_z3_config.json)"),
    "zero_persistence_threshold": (None, "stage3_param_persistence_threshold: auto = 10 x "
                                         "hidden (ds_z3_config.json)"),
    "zero_max_live_parameters": (1_000_000_000, "stage3_max_live_parameters: 1e9 "
                                                "(ds_z3_config.json)"),
    "zero_max_reuse_distance": (1_000_000_000, "stage3_max_reuse_distance: 1e9 "
                                               "(ds_z3_config.json)"),
    # The stack (vram_ml/stack.py): what `pip install llamafactory==0.9.5` resolves. Its
    # pyproject.toml pins transformers>=4.55.0,<=5.6.0, peft>=0.18.0,<=0.18.1,
    # trl>=0.18.0,<=0.24.0; requirements/bitsandbytes.txt asks bitsandbytes>=0.39.0 (the newest).
    "framework": ("llamafactory", "framework: llamafactory (llamafactory-cli train)"),
    "transformers_version": ("5.6.0", "transformers 5.6.0 (LLaMA-Factory 0.9.5's newest)"),
    "peft_version": ("0.18.1", "peft 0.18.1 (LLaMA-Factory 0.9.5's newest)"),
    "trl_version": ("0.24.0", "trl 0.24.0 (LLaMA-Factory 0.9.5's newest)"),
    "bitsandbytes_version": ("0.50.2", "bitsandbytes 0.50.2 (the newest on PyPI)"),
    # pyproject.toml pins accelerate>=1.3.0,<=1.11.0 (its FSDP rules: model/formulas/stack.py)
    "accelerate_version": ("1.11.0", "accelerate 1.11.0 (LLaMA-Factory 0.9.5's newest)"),
    # The training stage (vram_ml/stages.py says which of these apply to which stage):
    # LLaMA-Factory@v0.9.5 hparams/finetuning_args.py:183-250, generating_args.py:54-57.
    "stage": ("sft", "stage: sft"),
    "pref_loss": ("sigmoid", "pref_loss: sigmoid (DPO's loss, with a reference model)"),
    "ref_model": (None, "ref_model: None (LoRA: the adapter-disabled base; full / freeze: a "
                        "frozen copy of the model)"),
    "ref_model_quantization_bit": (None, "ref_model_quantization_bit: None"),
    "reward_model_type": ("lora", "reward_model_type: lora (a second adapter on the policy's "
                                  "base, sized like the policy's)"),
    "reward_model": (None, "reward_model: the policy's architecture (reward_model_type full)"),
    "reward_model_quantization_bit": (None, "reward_model_quantization_bit: None"),
    "max_new_tokens": (1024, "max_new_tokens: 1024 (PPO's generation)"),
}
STACK_FIELDS = ("framework", "transformers_version", "peft_version", "trl_version",
                "bitsandbytes_version", "accelerate_version")
# transformers TrainingArguments.optim: adamw_torch up to 4.53 (training_args.py:1281 in
# 4.53.3), adamw_torch_fused from 4.54 when torch >= 2.8 (4.54.1:1286-1291, 5.6.2:811-816).
FUSED_ADAMW_FROM = (4, 54, 0)
OLD_OPTIMIZER_DEFAULT = ("adamw_torch", "optim: adamw_torch (transformers < 4.54 default)")


def optimizer_default(transformers_version: str | None) -> tuple[str, str]:
    """(optimizer, source) the HF Trainer picks when `optim` is not set, for that version."""
    from vram_ml.stack import parse_version

    try:
        old = transformers_version is not None and (
            parse_version(transformers_version) < FUSED_ADAMW_FROM)
    except ValueError:
        old = False  # the Spec reports the bad version itself
    return OLD_OPTIMIZER_DEFAULT if old else LLAMAFACTORY_DEFAULTS["optimizer"]


IMAGE_FIELDS = (
    "images_per_sample", "image_resolution", "freeze_vision_tower", "freeze_multi_modal_projector",
)
STAGE_FIELDS = ("stage", "pref_loss", "ref_model", "ref_model_quantization_bit",
                "reward_model_type", "reward_model", "reward_model_quantization_bit",
                "max_new_tokens")


def default(field: str) -> object:
    return LLAMAFACTORY_DEFAULTS[field][0]


def assumed_defaults(given: set[str] | dict, multimodal: bool,
                     transformers_version: str | None = None,
                     spec: object | None = None) -> dict[str, str]:
    """The defaults a spec took for the fields not given (image ones only for VLMs, multi-GPU
    ones only where `spec`'s run uses them, stage ones only where the stage uses them; the
    optimizer as `transformers_version`'s Trainer picks it)."""
    from vram_ml.distributed import RELEVANT_UNDER, relevant
    from vram_ml.stages import stage_fields_that_apply

    applies = stage_fields_that_apply(given if isinstance(given, dict) else {})
    assumed = {
        name: source
        for name, (_, source) in LLAMAFACTORY_DEFAULTS.items()
        if name not in given and (multimodal or name not in IMAGE_FIELDS)
        and (name not in STAGE_FIELDS or name in applies)
        and (relevant(name, spec) if spec is not None else name not in RELEVANT_UNDER)
    }
    if "optimizer" in assumed:
        assumed["optimizer"] = optimizer_default(transformers_version)[1]
    return assumed


# The example `vram-ml predict` answers with no arguments: LLaMA-Factory's
# examples/train_lora/llama3_lora_sft.yaml, the first run most people try.
EXAMPLE_CONFIG = "llama3_lora_sft.yaml"
