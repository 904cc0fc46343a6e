"""axolotl examples: a memory statement -> the Spec of the committed YAML it describes."""

from __future__ import annotations

from typing import Any

from vram_ml.published.mapping import SpecRequest
from vram_ml.published.mapping_common import as_flag, as_int, lora_targets, wanted_stack

# axolotl optimizer names -> Spec optimizers (transformers' OptimizerNames)
OPTIMIZERS = {"adamw_bnb_8bit": "adamw_8bit", "adamw_torch_fused": "adamw_torch_fused",
              "adamw_torch": "adamw_torch", "paged_adamw_8bit": "paged_adamw_8bit",
              "paged_adamw_32bit": "paged_adamw_32bit"}
LIGER_FLAGS = ("liger_rope", "liger_rms_norm", "liger_glu_activation",
               "liger_fused_linear_cross_entropy")


def axolotl(row: dict[str, Any], run: dict[str, Any]) -> SpecRequest:
    config = run.get("config_settings") or {}
    request = wanted_stack(row, run, framework_note="axolotl trains with transformers' Trainer "
                           "(TRL for preference stages), not LLaMA-Factory")
    if not run.get("config_path"):
        request.block("no committed config for this statement")
    _plugins(request, config)
    method = run.get("method")
    request.set("method", method)
    if method in ("lora", "qlora"):
        request.stated("lora_rank", as_int(run.get("lora_rank")))
        request.stated("lora_alpha", as_int(run.get("lora_alpha")))
        if config.get("lora_target_parameters") or config.get("quantize_moe_experts"):
            request.block("LoRA on MoE expert parameters / quantized experts: not in the Spec")
        if config.get("lora_modules_to_save"):
            request.block("LoRA modules_to_save (trainable embeddings / lm_head): not in the Spec")
        target = run.get("lora_target")
        if isinstance(target, str) and target != "all-linear":
            request.block("LoRA target modules given as a regex: not expressible")
        else:
            linear = as_flag(config.get("lora_target_linear"))
            lora_targets(request, run.get("model"), target or linear)
    elif method == "freeze":
        request.block("unfrozen_parameters patterns: not the Spec's last-N-layers freeze")
    if method == "qlora":
        bits = as_int(run.get("quant_bits")) or 4
        request.set("quant_bits", bits)
        if bits == 4:
            request.set("quant_type", "nf4", "axolotl load_in_4bit: bnb_4bit_quant_type nf4")
            request.set("double_quant", True, "axolotl load_in_4bit: bnb_4bit_use_double_quant")
    precision = run.get("precision")
    if precision == "bf16":
        request.set("precision", "bf16", "config bf16 (Trainer autocast)")
    request.set("batch_size", as_int(run.get("per_device_batch_size")))
    request.stated("gradient_accumulation", as_int(run.get("gradient_accumulation_steps")))
    request.set("seq_len", as_int(run.get("seq_len")),
                "sequence_len" + (" with sample_packing (packed to full length)"
                                  if run.get("packing") else " (a cap: samples are not packed)"))
    if not run.get("packing"):
        request.block("no sample packing: sample lengths vary (sequence_len caps them)")
    checkpointing = run.get("gradient_checkpointing")
    if checkpointing == "offload" or as_flag(config.get("activation_offloading")):
        request.block("activation offloading to the CPU: not in the Spec")
    request.set("gradient_checkpointing", bool(as_flag(checkpointing)))
    attention = run.get("attention")
    if attention in ("flash_attention_2", "sdpa", "eager"):
        request.set("attention", attention)
    else:
        request.block(f"attention {attention}: not in the Spec")
    optimizer = run.get("optimizer")
    if optimizer in OPTIMIZERS:
        request.set("optimizer", OPTIMIZERS[optimizer], f"axolotl optimizer {optimizer}")
    else:
        request.block(f"optimizer {optimizer}: not in the Spec")
    return request


def _plugins(request: SpecRequest, config: dict[str, Any]) -> None:
    plugins = [str(p).rsplit(".", 1)[-1] for p in config.get("plugins") or []]
    for plugin in plugins:
        if plugin == "LigerPlugin":
            continue
        request.block(f"axolotl {plugin}: not in the Spec")
    liger = [flag for flag in LIGER_FLAGS if as_flag(config.get(flag))]
    if "LigerPlugin" in plugins and len(liger) == len(LIGER_FLAGS):
        request.set("liger_kernel", True, "LigerPlugin with every liger_* flag on")
    elif "LigerPlugin" in plugins or liger:
        request.block("a partial set of Liger kernels: not the Spec's liger_kernel")
    for flag in ("lora_mlp_kernel", "lora_qkv_kernel", "lora_o_kernel", "use_kernels"):
        if as_flag(config.get(flag)):
            request.block(f"axolotl {flag}: custom kernels not in the Spec")
            break
    if as_flag(config.get("torch_compile")):
        request.block("torch_compile: not in the Spec")
