"""What every mapping reader shares: values as sources write them, the stack (framework, GPUs,
DeepSpeed, FSDP, library versions) and the README reader for HF-Trainer READMEs."""

from __future__ import annotations

import json
import re
from typing import Any

from vram_ml.published.mapping import SpecRequest
from vram_ml.published.model_ids import catalog_entry
from vram_ml.published.requirement_pins import exact_version

VERSION_FIELDS = ("torch", "transformers", "peft", "trl", "bitsandbytes")
# The first word of a row's `trainer`; every other trainer (trl_sft, axolotl) runs TRL's
# SFTTrainer: framework trl.
FRAMEWORK_OF_TRAINER = {"llamafactory": "llamafactory", "hf_trainer": "hf_trainer",
                        "custom_loop": "hf_trainer"}
CUSTOM_LOOP_NOTE = ("its loop (model(**batch), loss, backward) is modelled as the "
                    "plain Trainer's step: no TRL metrics; the loop's `outputs` staying alive "
                    "through backward is not modelled")


def as_int(value: Any) -> int | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        number = float(str(value).strip())
    except ValueError:
        return None
    return int(number) if number == int(number) else None


def as_float(value: Any) -> float | None:
    try:
        return None if value is None else float(str(value).strip())
    except ValueError:
        return None


def as_flag(value: Any) -> bool | None:
    """True/False from a flag as written ("TRUE", "True", true, "1"); None when not stated."""
    if value is None or isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    return True if text in ("true", "1", "yes") else (False if text in ("false", "0", "no")
                                                         else None)


def stack_settings(run: dict[str, Any]) -> dict[str, Any]:
    return run.get("stack") or {}


def wanted_stack(row: dict[str, Any], run: dict[str, Any], framework_note: str | None = None
                 ) -> SpecRequest:
    """A request with the run's GPUs, ZeRO stage, and the settings of fields yet to come."""
    request = SpecRequest()
    stack = stack_settings(run)
    trainer = row.get("trainer") or ""
    framework = FRAMEWORK_OF_TRAINER.get(trainer.split(" ")[0], "trl")
    request.wanted["framework"] = framework
    if trainer.startswith("custom_loop"):
        framework_note = "; ".join(filter(None, (framework_note, CUSTOM_LOOP_NOTE)))
    if framework_note:
        request.assumptions.append(f"framework={framework}: {framework_note}")
    for library in VERSION_FIELDS:
        version = (exact_version(row.get(f"{library}_version"))
                   or exact_version(row.get(f"_assumed_{library}_version")))
        if version:
            request.wanted[f"{library}_version"] = version
    if row.get("_version_assumption"):
        request.assumptions.append(row["_version_assumption"])
    if row.get("_version_blocker"):
        request.block(row["_version_blocker"])
    request.wanted["stage"] = "sft"
    gpus = as_int(run.get("num_gpus")) or as_int(row.get("gpu_count"))
    if gpus is None:
        gpus = 1
        request.assumptions.append("num_gpus=1: the source names no GPU count and launches no "
                                   "multi-GPU job")
    request.set("num_gpus", gpus)
    distributed = row.get("distributed") or ""
    sharding = stack.get("fsdp_sharding_strategy") or stack.get("sharding_strategy")
    if "fsdp" in distributed or sharding:
        _fsdp_fields(request, stack, str(sharding or "FULL_SHARD").split(" ")[0])
        accelerate = exact_version(row.get("accelerate_version"))  # its FSDP rules (StackRules)
        if accelerate:
            request.wanted["accelerate_version"] = accelerate
    elif "deepspeed" in distributed:
        _deepspeed_fields(request, stack, run)
    return request


def _fsdp_fields(request: SpecRequest, stack: dict[str, Any], sharding: str) -> None:
    """FSDP as the source's accelerate config / trainer states it (vram_ml/accelerate_config)."""
    from vram_ml.accelerate_config import sharding_of
    from vram_ml.spec import SpecError

    try:
        request.set("fsdp_sharding", sharding_of(sharding))
    except SpecError as error:
        request.block(str(error))
        return
    request.set("distributed", "fsdp")
    version = as_int(stack.get("fsdp_version"))
    if version is not None:
        request.set("fsdp_version", version)
    if as_flag(stack.get("fsdp_offload_params")) or _offloads(stack, "param"):
        request.set("offload", "optimizer+params", "FSDP CPU offload: parameters, gradients and "
                    "the optimizer step on the CPU")


def _deepspeed_fields(request: SpecRequest, stack: dict[str, Any], run: dict[str, Any]) -> None:
    """DeepSpeed through the same reader as a user's JSON (vram_ml/deepspeed_config): the
    stage and offload the source states, DeepSpeed's defaults for the keys it leaves out."""
    from vram_ml.deepspeed_config import read_deepspeed_config
    from vram_ml.launch_configs import hidden_size_of
    from vram_ml.spec import SpecError

    stage = as_int(stack.get("zero_stage"))
    if stage is None:  # DeepSpeed's default (0) would be a guess at another run
        request.block("DeepSpeed run whose ZeRO stage the source does not state")
        return
    offload = _offloads(stack, "") or ""
    zero: dict[str, Any] = {"stage": stage}
    for word, key in (("optimizer", "offload_optimizer"), ("params", "offload_param")):
        if word in offload:
            zero[key] = {"device": "cpu"}
    entry = catalog_entry(run.get("model"))
    try:
        read = read_deepspeed_config({"zero_optimization": zero},
                                     hidden_size_of({"model": entry.hf_id}) if entry else 0)
    except SpecError as error:
        request.block(str(error))
        return
    for name, value in read.fields.items():
        request.set(name, value)
    if any(key in stack for key in ("zero_stage", "offload_optimizer_device")):
        request.assumptions.append("DeepSpeed bucket sizes not stated: DeepSpeed 0.18.9's defaults "
                                   "(reduce_bucket_size 5e8, stage3 prefetch 5e7, persistence "
                                   "threshold 1e5, overlap_comm on for ZeRO-3)")


def _offloads(stack: dict[str, Any], kind: str) -> str | None:
    """Where a stack offloads to the CPU ("optimizer+params"), from the parsers' spellings."""
    found = []
    for key, value in stack.items():
        if "offload" not in key:
            continue
        values = value if isinstance(value, list) else [value]
        for item in values:
            text = f"{key}:{item}".lower()
            if "cpu" in text and "none" not in text and kind in text:
                found.append("params" if "param" in text else "optimizer")
            elif item is True and kind in key:
                found.append("params")
    return "+".join(sorted(set(found))) or None


def lora_targets(request: SpecRequest, model: str | None, targets: Any) -> None:
    """LoRA target modules: 'all' for all-linear, else the names the model has."""
    if isinstance(targets, str) and targets.strip().startswith("["):
        targets = json.loads(targets)
    if targets in ("all-linear", "all", ["all-linear"]) or targets is True:
        request.set("lora_target", ["all"])
        return
    if isinstance(targets, str):
        targets = [part.strip() for part in re.split(r"[,\s]+", targets) if part.strip()]
    if not targets:
        request.block("LoRA target modules not stated")
        return
    names = list(dict.fromkeys(str(t) for t in targets))
    entry = catalog_entry(model)
    if entry is not None:
        from vram_ml.model_source import resolve_model

        linear = resolve_model(entry.hf_id).shape.linear_names
        matched = {name: peft_matches(name, linear) for name in names}
        kept = list(dict.fromkeys(m for name in names for m in matched[name]))
        absent = [name for name in names if not matched[name]]
        if kept and absent:
            request.set("lora_target", kept, f"peft targets only the listed names the model has "
                        f"({', '.join(absent)} absent)")
            return
        widened = {name: found for name, found in matched.items() if found != [name]}
        if kept and widened:
            request.set("lora_target", kept, "peft matches a target name as a suffix of the "
                        "module path: " + "; ".join(f"{name} -> {', '.join(found)}"
                                                    for name, found in widened.items()))
            return
    request.set("lora_target", names)


def peft_matches(target: str, linear_names: tuple[str, ...]) -> list[str]:
    """The decoder-layer linears a peft target name reaches: the same name, or a name that ends
    with "." + target (peft's check_target_module_exists: key == target or key ends with
    "." + target), e.g. Qwen's `c_proj` -> attn.c_proj and mlp.c_proj."""
    return [name for name in linear_names if name == target or name.endswith("." + target)]


def adamw(request: SpecRequest, optimizer: Any) -> None:
    text = str(optimizer or "").lower()
    if text in ("adamw", "torch.optim.adamw", "adamw_torch") or text.startswith("adamw_torch ("):
        request.set("optimizer", "adamw_torch", f"optimizer {optimizer!r}")
    elif text.startswith("deepspeed") and "adamw" in text:
        request.set("optimizer", "adamw_torch", f"{optimizer}: fp32 AdamW states, as torch's")
    elif text.startswith("hf default") or text.startswith("deepspeed/hf adamw_torch"):
        request.set("optimizer", "adamw_torch", f"{optimizer}")
    elif optimizer is not None:
        request.block(f"optimizer {optimizer}: not in the Spec")
    else:
        request.set("optimizer", "adamw_torch", "not stated; transformers' TrainingArguments "
                    "default optim before transformers 5 (the sources' era)")


def readme_request(row: dict[str, Any], run: dict[str, Any]) -> SpecRequest:
    """The HF-Trainer READMEs (Qwen, Qwen-VL, MiniCPM(-V), ChatGLM3, GLM-4, CogVLM2, HF blog)."""
    request = wanted_stack(row, run)
    method = run.get("method")
    quant = str(run.get("quant_method") or "")
    if "GPTQ" in quant:
        request.block("GPTQ 4-bit base: not in the Spec")
    elif "quantize()" in quant:
        request.block(f"{quant}: not in the Spec")
    elif quant:
        request.set("quant_bits", 8 if "int8" in quant.lower() or "8-bit" in quant else 4)
        if request.fields["quant_bits"] == 4:
            request.set("quant_type", "fp4" if "FP4" in quant else "nf4")
            request.set("double_quant", "nested" in quant or "double" in quant)
        method = "qlora"
    if method in ("full", "lora", "qlora", "freeze"):
        request.set("method", method)
    else:
        request.block(f"method {method}: not in the Spec")
    embeddings_trained(request, run, method)
    if run.get("trainable_vision"):
        request.set("freeze_vision_tower", False)
    for name in ("images_per_sample", "image_resolution"):
        if as_int(run.get(name)) is not None:
            request.set(name, as_int(run[name]))
    if method in ("lora", "qlora"):
        if run.get("lora_rank") is None:
            request.block("LoRA rank not stated")
        request.stated("lora_rank", as_int(run.get("lora_rank")))
        if run.get("lora_alpha") is not None:
            request.stated("lora_alpha", as_int(run.get("lora_alpha")))
        request.stated("lora_dropout", as_float(run.get("lora_dropout")))
        target = run.get("lora_target")
        if isinstance(target, str) and not target.strip().startswith("[") and (
                "\\" in target or "(" in target):
            request.block(f"LoRA target modules given as a regex ({target}): not expressible")
        else:
            lora_targets(request, run.get("model"), target)
    _readme_precision(request, str(run.get("precision") or ""))
    for name, field in (("per_device_batch_size", "batch_size"), ("seq_len", "seq_len")):
        if as_int(run.get(name)) is None:
            request.block(f"{field} not stated")
        request.set(field, as_int(run.get(name)))
    if as_int(run.get("gradient_accumulation_steps")):
        request.set("gradient_accumulation", as_int(run["gradient_accumulation_steps"]))
    if run.get("gradient_checkpointing") is not None:
        request.set("gradient_checkpointing", bool(as_flag(run["gradient_checkpointing"])))
    if run.get("attention") in ("flash_attention_2", "sdpa", "eager"):
        request.set("attention", run["attention"])
    adamw(request, run.get("optimizer"))
    return request


def embeddings_trained(request: SpecRequest, run: dict[str, Any], method: str) -> None:
    """A run that trains the embeddings / head beside LoRA: peft modules_to_save copies are
    Spec.additional_target (the names as the script passes them); a module unfrozen in place
    (requires_grad on the base weight, no copy) is not in the Spec. Full fine-tuning trains them
    anyway."""
    if not run.get("trainable_embeddings") or method not in ("lora", "qlora"):
        return
    saved = run.get("modules_to_save")
    if saved:
        request.set("additional_target", list(saved))
    else:
        request.block("embeddings trained in place beside LoRA (requires_grad on the base "
                      "weights, not a modules_to_save copy): not in the Spec")


def _readme_precision(request: SpecRequest, precision: str) -> None:
    text = precision.lower()
    if text.startswith("bf16") or "compute dtype bf16" in text:
        request.set("precision", "bf16", f"precision as stated: {precision}")
    elif text.startswith("fp16") or "compute dtype fp16" in text or "fp16 compute" in text:
        request.set("precision", "fp16", f"precision as stated: {precision}")
    elif text.startswith("fp32"):
        request.set("precision", "fp32", f"precision as stated: {precision}")
    elif text.startswith("int"):
        request.block(f"precision {precision}: not in the Spec")
