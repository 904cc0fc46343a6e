"""Per-source readers: a row's `run` (the settings as its source states them) -> SpecRequest.

Each reader states which Spec fields the source gives, which it implies (an assumption naming
where it comes from) and what the Spec cannot express. Values arrive as the source wrote them
("4", "TRUE", "16.0"), so every number and flag goes through `as_int` / `as_flag`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from vram_ml.published.mapping import SpecRequest
from vram_ml.published.mapping_common import (
    adamw,
    as_flag,
    as_float,
    as_int,
    lora_targets,
    readme_request,
    stack_settings,
    wanted_stack,
)
from vram_ml.published.model_ids import catalog_entry

Reader = Callable[[dict[str, Any], dict[str, Any]], SpecRequest]
BNB_PLUGIN = ("plugins/accelerated-peft/src/fms_acceleration_peft/framework_plugin_bnb.py: "
              "BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_use_double_quant=True, "
              "bnb_4bit_quant_type=<config quant_type>, bnb_4bit_compute_dtype=torch_dtype)")


def fms_acceleration(row: dict[str, Any], run: dict[str, Any]) -> SpecRequest:
    request = wanted_stack(row, run)
    method, plugins = run.get("method"), run.get("framework_config") or "none"
    if run.get("quant") == "gptq" or method == "gptq-lora":
        request.block("GPTQ 4-bit base through the AutoGPTQ plugin: not in the Spec")
        method = "gptq"
    if run.get("fused_ops_and_kernels"):
        request.block("fms fused-ops-and-kernels plugin (fused LoRA, cross-entropy, RMSNorm, RoPE"
                      + (", Liger fused CE" if run.get("liger") else "") + "): not modelled")
    if run.get("padding_free"):
        request.block("fms padding-free plugin: not modelled")
    if run.get("multipack"):
        request.block("fms multipack sampler: not modelled")
    if run.get("moe_scattermoe_ep_degree"):
        request.block(f"ScatterMoE expert-parallel plugin (ep_degree "
                      f"{run['moe_scattermoe_ep_degree']}): not modelled")
    if run.get("packing") is False and not run.get("padding_free"):
        request.block("no packing: sample lengths vary (max_seq_len 4096 caps them)")
    dtype = run.get("torch_dtype")
    fp16, bf16 = as_flag(run.get("fp16_amp")), as_flag(run.get("bf16_amp"))
    if method == "full":
        request.set("method", "full")
        if dtype == "bfloat16":
            request.set("precision", "pure_bf16",
                        "torch_dtype bfloat16 with no fp32 copy (HF Trainer, accelerate "
                        "mixed_precision 'no'): weights, gradients and AdamW states in bf16")
        else:  # the Spec's no_amp: half-precision weights as loaded, nothing upcast (TRL)
            request.set("precision", "no_amp",
                        f"torch_dtype {dtype} with no AMP flag (HF Trainer, accelerate "
                        "mixed_precision 'no'): weights, gradients and AdamW states in fp16, "
                        "what no_amp trains under the HF Trainer / TRL")
    elif method in ("lora", "qlora"):
        request.set("method", method)
        precision = "bf16" if bf16 else ("fp16" if fp16 else "no_amp")
        request.set("precision", precision, f"torch_dtype {dtype} with the CSV's fp16/bf16 "
                    "flags (HF Trainer AMP); LoRA adapters trainable")
        request.stated("lora_rank", as_int(run.get("lora_rank")))
        request.stated("lora_alpha", as_int(run.get("lora_alpha")))
        request.stated("lora_dropout", as_float(run.get("lora_dropout")))
        lora_targets(request, run.get("model"), str(run.get("lora_target") or "").split())
        if method == "qlora":
            request.set("quant_bits", 4)
            request.set("quant_type", "nf4", f"sample config quant_type nf4 ({plugins})")
            request.set("double_quant", True, BNB_PLUGIN)
            if plugins == "baseline-peft-bnb":
                request.assumptions.append(
                    "framework path: baseline-peft-bnb loads through the plugin, then TRL's "
                    "prepare_model_for_kbit_training upcasts non-quantized weights to fp32")
            else:
                request.assumptions.append(
                    "framework path: accelerated-peft-bnb prepares the model without the fp32 "
                    "upcast of non-quantized weights (framework_plugin_bnb.py)")
    elif method != "gptq":
        request.block(f"method {method}: not in the Spec")
    request.set("batch_size", as_int(run.get("per_device_batch_size")))
    request.stated("gradient_accumulation", as_int(run.get("gradient_accumulation_steps")))
    _fms_seq_len(request, run)
    request.set("gradient_checkpointing", bool(as_flag(run.get("gradient_checkpointing"))))
    request.set("attention", "flash_attention_2")
    request.set("optimizer", "adamw_torch")
    request.set("liger_kernel", False)
    return request


def _fms_seq_len(request: SpecRequest, run: dict[str, Any]) -> None:
    """fms-hf-tuning caps max_seq_length at the tokenizer's model_max_length."""
    seq_len = as_int(run.get("seq_len"))
    entry = catalog_entry(run.get("model"))
    if entry is not None and seq_len is not None:
        from vram_ml.model_source import resolve_model

        positions = resolve_model(entry.hf_id).shape.max_position_embeddings
        if seq_len > positions:
            request.set("seq_len", positions, f"fms-hf-tuning uses min(max_seq_len {seq_len}, "
                        "tokenizer.model_max_length) (tuning/sft_trainer.py); the runs completed, "
                        f"so at most the model's {positions} positions, assumed equal to them")
            return
    request.set("seq_len", seq_len)


def peft_metamathqa(row: dict[str, Any], run: dict[str, Any]) -> SpecRequest:
    request = wanted_stack(row, run, framework_note="a hand-written PyTorch loop on "
                           "transformers + peft models (no Trainer, no LLaMA-Factory patches)")
    method, config = run.get("method"), run.get("peft_config") or {}
    if method == "full":
        request.set("method", "full")
        request.set("precision", "pure_bf16", "dtype bfloat16, use_amp false: weights, "
                    "gradients and AdamW states in bf16 (run_info.train_config)")
    elif method == "lora":
        request.set("method", "lora")
        upcast = run.get("autocast_adapter_dtype")
        request.set("precision", "no_amp", "dtype bfloat16, use_amp false, "
                    f"autocast_adapter_dtype {str(upcast).lower()} (LoRA weights "
                    + ("fp32)" if upcast else "bf16)"))
        request.stated("lora_rank", as_int(run.get("lora_rank")))
        request.stated("lora_alpha", as_int(run.get("lora_alpha")))
        request.stated("lora_dropout", as_float(config.get("lora_dropout")))
        targets = run.get("lora_target")
        if isinstance(targets, str) and targets != "all-linear":
            request.block(f"LoRA target_modules given as a regex ({targets!r}): not expressible")
        else:
            lora_targets(request, run.get("model"), targets)
        if config.get("modules_to_save") or config.get("layers_to_transform"):
            request.block("LoRA modules_to_save / layers_to_transform: not in the Spec")
        if config.get("bias") not in (None, "none"):
            request.block(f"LoRA bias={config.get('bias')}: not in the Spec")
    elif method == "lora(dora)":
        request.block("DoRA (LoRA with use_dora): not in the Spec")
    else:
        request.block(f"PEFT method {method}: not in the Spec (full, freeze, lora, qlora)")
    optimizer = run.get("optimizer")
    if optimizer == "AdamW":
        request.set("optimizer", "adamw_torch", "optimizer_type AdamW = torch.optim.AdamW")
    else:
        request.block(f"optimizer {optimizer}: not in the Spec")
    request.set("batch_size", as_int(run.get("per_device_batch_size")))
    request.set("seq_len", as_int(run.get("seq_len")),
                "max_seq_length is a cap: batches are padded to their longest sample (samples "
                "over 1300 characters are filtered out), so most batches are shorter")
    request.set("gradient_checkpointing", bool(run.get("gradient_checkpointing")))
    request.set("attention", "sdpa", "attn_implementation null: transformers' default, SDPA")
    request.set("num_gpus", 1)
    return request


def peft_docs(row: dict[str, Any], run: dict[str, Any]) -> SpecRequest:
    request = wanted_stack(row, run)
    if run.get("per_device_batch_size") is None or run.get("seq_len") is None:
        request.block("batch size and sequence length not stated")
    method = run.get("method")
    request.set("method", method)
    if method in ("lora", "qlora"):
        request.stated("lora_rank", as_int(run.get("lora_rank")))
        request.stated("lora_alpha", as_int(run.get("lora_alpha")))
        request.stated("lora_dropout", as_float(run.get("lora_dropout")))
        lora_targets(request, run.get("model"), run.get("lora_target"))
    if method == "qlora":
        request.set("quant_bits", 4)
        request.set("double_quant", True, "the doc's BitsAndBytesConfig uses nested quantization")
    request.set("precision", "bf16" if as_flag(run.get("bf16")) else "no_amp")
    request.set("batch_size", as_int(run.get("per_device_batch_size")))
    request.stated("gradient_accumulation", as_int(run.get("gradient_accumulation_steps")))
    request.set("seq_len", as_int(run.get("seq_len")))
    request.set("gradient_checkpointing", bool(as_flag(run.get("gradient_checkpointing"))))
    if run.get("attention"):
        request.set("attention", run["attention"])
    adamw(request, run.get("optimizer"))
    return request


def universal_llm_trainer(row: dict[str, Any], run: dict[str, Any]) -> SpecRequest:
    request = wanted_stack(row, run, framework_note="the repository's own PyTorch loop on "
                           "transformers + peft models")
    method = run.get("method")
    request.set("method", method)
    if method == "full":
        request.set("precision", "pure_bf16", "config 'bit: bfloat16', amp_training false")
    else:
        request.set("precision", "no_amp", "config 'bit: bfloat16', amp_training false "
                    "(half-precision weights, no autocast)")
        request.stated("lora_rank", as_int(run.get("lora_rank")))
        request.stated("lora_alpha", as_int(run.get("lora_alpha")))
        lora_targets(request, run.get("model"), run.get("lora_target"))
    if method == "qlora":
        request.set("quant_bits", 4)
        request.set("quant_type", "nf4")
        request.set("double_quant", True)
    request.set("batch_size", as_int(run.get("per_device_batch_size")))
    request.stated("gradient_accumulation", as_int(run.get("gradient_accumulation_steps")))
    request.set("seq_len", as_int(run.get("seq_len")))
    request.set("gradient_checkpointing", bool(run.get("gradient_checkpointing")))
    request.set("attention", "sdpa", "attn_implementation null: transformers' default, SDPA")
    adamw(request, run.get("optimizer"))
    if (run.get("config_settings") or {}).get("del_logits_after_forward"):
        request.assumptions.append("del_logits_after_forward=true: the trainer frees the logits "
                                   "after the loss; the Spec keeps them to the backward pass")
    return request


def fsdp_qlora(row: dict[str, Any], run: dict[str, Any]) -> SpecRequest:
    request = wanted_stack(row, run, framework_note="fsdp_qlora's train.py (its own model "
                           "loading and quantization)")
    stack = stack_settings(run)
    sharding = str(stack.get("sharding_strategy") or "")
    if "use_ddp" in sharding:
        for name in ("fsdp_sharding", "offload"):
            request.fields.pop(name, None)
        request.set("distributed", "ddp" if (request.fields.get("num_gpus") or 1) > 1 else "none")
        request.assumptions.append("distributed=DDP: train.py --use_ddp True wraps the model in "
                                   "DistributedDataParallel (one full copy per GPU)")
    method = run.get("method")
    request.set("method", method)
    request.stated("lora_rank", as_int(run.get("lora_rank")))
    request.stated("lora_alpha", as_int(run.get("lora_alpha")))
    request.set("lora_dropout", 0.1, "train.py default lora_dropout 0.1")
    lora_targets(request, run.get("model"), run.get("lora_target"))
    if method == "qlora":
        request.set("quant_bits", 4)
        request.set("quant_type", "nf4", "train.py replace_linear(..., quant_type='nf4')")
        request.set("double_quant", True, "bitsandbytes Linear4bit default compress_statistics")
    precision = run.get("precision")
    request.set("precision", {"bf16": "pure_bf16", "bf16_buffers_autocast": "bf16"}.get(
        precision, precision), f"train.py precision {precision}")
    request.set("batch_size", as_int(run.get("per_device_batch_size")))
    request.set("seq_len", as_int(run.get("seq_len")))
    request.set("gradient_checkpointing", bool(run.get("gradient_checkpointing")))
    request.set("attention", "sdpa", "train.py loads with transformers' default attention")
    adamw(request, run.get("optimizer"))
    return request


def readers() -> dict[str, Reader]:
    from vram_ml.published.mapping_axolotl import axolotl

    return {"fms-acceleration": fms_acceleration, "peft-metamathqa": peft_metamathqa,
            "peft-docs": peft_docs, "universal-llm-trainer": universal_llm_trainer,
            "fsdp_qlora": fsdp_qlora, "axolotl": axolotl}


def reader_for(source: str) -> Reader:
    """The reader of a source (the README reader for the HF-Trainer READMEs)."""
    return readers().get(source, readme_request)


def dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)
