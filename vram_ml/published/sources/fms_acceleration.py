"""foundation-model-stack/fms-acceleration benchmark CSVs (`scripts/benchmarks/refs*/*.csv`).

One row per published memory cell of a CSV line (fms_columns.MEM_COLUMNS). A line without
train_loss and train_runtime is a failed run: `oom` (censored at the card; its nvidia reading is
a lower bound), or `failed` when that reading is under half the card. A failed line with no
memory cell gives one label row. The settings come from fms_settings.py; the context (files at
the same commit) from fms_context.py.
"""

from __future__ import annotations

import csv
import json
from typing import Any

from vram_ml.published.requirement_pins import OTHER_KEYS, requirement_pins
from vram_ml.published.sources.fms_columns import (
    KEY_COLUMNS,
    MEM_COLUMNS,
    memory_caveats,
    ref,
    ref_line,
    stage_note,
    statistic_evidence,
)
from vram_ml.published.sources.fms_settings import (
    LineSettings,
    VersionFacts,
    cell,
    match_scenario,
    plugin_flags,
    stack_of,
)
from vram_ml.published.units import (
    MIB,
    is_exact_bytes,
    normalised_number,
    parse_number,
    value_bytes,
)

SOURCE = "fms-acceleration"
REPOSITORY = "foundation-model-stack/fms-acceleration"
OOM_EVIDENCE = (
    "train_loss and train_runtime are empty: the run produced no final Trainer metrics. The CSVs "
    "carry no explicit error label (display_bench_results.py drops error_messages); treated as "
    "OOM following fms-acceleration commit f1895b7 ('fix to keyerror due to empty output dict "
    "from OOM') and because recorded nvidia-smi peaks of such rows sit at the card limit. Cause "
    "not verifiable per row.")
VERSION_KEYS = ("torch", "transformers", "peft", "trl", "bitsandbytes", "accelerate", "flash_attn")


def parse(text: str, *, repository: str, path: str, commit: str, commit_date: str | None,
          context: dict[str, Any]) -> list[dict[str, Any]]:
    lines = text.splitlines()
    if not lines:
        return []
    header = next(csv.reader([lines[0]]))
    facts = VersionFacts.read(context)
    evidence = statistic_evidence(context.get("benchmark_py"), context.get("bench_readme"))
    place = {"repository": repository, "path": path, "commit": commit,
             "commit_date": commit_date, "header_quote": lines[0]}
    versions, versions_evidence = _versions(context.get("requirements"))
    rows = []
    for number in range(2, len(lines) + 1):
        raw = lines[number - 1]
        if not raw.strip():
            continue
        cells = next(csv.reader([raw]))
        cells += [""] * (len(header) - len(cells))
        line = dict(zip(header, cells))
        base = _line_row(line, header, facts, context)
        base.update(place, quote=raw, versions=versions, versions_evidence=versions_evidence)
        rows += _memory_rows(base, line, header, number, evidence, context.get("benchmark_py"))
    return rows


def _versions(requirements: dict[str, Any] | None) -> tuple[dict[str, Any], str | None]:
    versions: dict[str, Any] = {key: None for key in VERSION_KEYS}
    if not requirements:
        return versions, None
    pins = requirement_pins(requirements["text"])
    versions.update({key: pins[key] for key in (*VERSION_KEYS, *OTHER_KEYS) if key in pins})
    rule = f" ({requirements['rule']})" if requirements.get("rule") else ""
    return versions, f"{requirements['path']}@{requirements['commit']}{rule}"


def _outcome(line: dict[str, str], header: list[str], gpu: dict[str, Any]
             ) -> tuple[str, str | None]:
    if cell(line.get("train_loss")) is not None or cell(line.get("train_runtime")) is not None:
        return "ok", None
    evidence = OOM_EVIDENCE
    error = cell(line.get("error_messages")) if "error_messages" in header else None
    if error:
        evidence += f" error_messages cell: {error[:200]}"
    device = [c for c in header if c in MEM_COLUMNS and MEM_COLUMNS[c][1] == "device"
              and cell(line.get(c)) is not None]
    reading = parse_number(line.get(device[0])) if device else None
    card = gpu.get("card_memory_bytes")
    if reading is not None and card and reading * MIB < card / 2:
        return "failed", (
            f"train_loss/train_runtime empty (run failed) but the recorded nvidia-smi peak "
            f"{line.get(device[0])} MiB is below half of the card: not treated as OOM (cause "
            "unknown; e.g. a plugin/FSDP error or a crash before GPU allocation). Not a "
            "censored-at-card observation.")
    return "oom", evidence


def _line_row(line: dict[str, str], header: list[str], facts: VersionFacts,
              context: dict[str, Any]) -> dict[str, Any]:
    """Everything the rows of one CSV line share: outcome, settings, stack, key."""
    gpu, hf_tuning = context.get("gpu") or {}, context.get("hf_tuning") or {}
    outcome, outcome_evidence = _outcome(line, header, gpu)
    config_name = cell(line.get("framework_config"))
    scenario, scenario_note = match_scenario(line, facts.scenarios, config_name)
    plugins, plugin_note = plugin_flags(config_name, facts.configs)
    settings = LineSettings(line, header, facts, scenario)
    run = _run(settings, plugins)
    gpus_text = run["num_gpus"]
    gpus = parse_number(str(gpus_text))
    count = int(gpus) if gpus is not None else None
    stack = stack_of(count, facts, settings, hf_tuning, gpus_text)
    _run_notes(settings, run, plugins, config_name, hf_tuning)
    if plugins["moe_scattermoe_ep_degree"]:
        stack["expert_parallel_degree"] = plugins["moe_scattermoe_ep_degree"]
    caveats = []
    if scenario_note:
        scenarios = ref(context.get("scenarios")) or "scenarios yaml"
        caveats.append(f"scenario lookup in {scenarios}: {scenario_note}")
    if plugin_note:
        caveats.append(plugin_note)
    caveats += _run_caveats(count, plugins, config_name, context)
    return {"source": SOURCE, "outcome": outcome, "outcome_evidence": outcome_evidence,
            "card_memory_bytes": gpu.get("card_memory_bytes"), "gpu_model": gpu.get("model"),
            "gpu_model_evidence": gpu.get("evidence"), "gpu_count": count, "stack": stack,
            "run": run, "assumptions": settings.assumptions, "caveats": caveats,
            "measurement_key": _measurement_key(line, header, run["model"], gpu, outcome)}


def _run(settings: LineSettings, plugins: dict[str, Any]) -> dict[str, Any]:
    value = settings.value
    model, peft_method = value("model_name_or_path"), value("peft_method")
    run = {"model": model, "peft_method": peft_method or None, "quant": plugins["quant"],
           "lora_rank": value("r"), "lora_alpha": value("lora_alpha"),
           "lora_dropout": value("lora_dropout"), "lora_target": value("target_modules"),
           "torch_dtype": value("torch_dtype"), "fp16_amp": value("fp16"),
           "bf16_amp": value("bf16"), "learning_rate": value("learning_rate"),
           "per_device_batch_size": value("per_device_train_batch_size"),
           "gradient_accumulation_steps": value("gradient_accumulation_steps",
                                                "gradient_accumulation_steps"),
           "num_gpus": value("num_gpus"),
           "gradient_checkpointing": value("gradient_checkpointing", "gradient_checkpointing"),
           "max_steps": value("max_steps", "max_steps")}
    run["use_flash_attn"] = value("use_flash_attn", "use_flash_attn")
    run["adam_epsilon"] = value("adam_epsilon", "adam_epsilon")
    run["packing"], run["seq_len"] = settings.packing(), settings.seq_len()
    if isinstance(run["lora_target"], list):
        run["lora_target"] = " ".join(run["lora_target"])
    if isinstance(model, list):
        run["model"] = model[0] if len(model) == 1 else None
    if peft_method is None:
        run["method"] = "full"
    elif str(peft_method).lower() == "lora":
        run["method"] = {"bnb_nf4": "qlora", "gptq": "gptq-lora"}.get(plugins["quant"], "lora")
    else:
        run["method"] = str(peft_method)
    return run


def _run_notes(settings: LineSettings, run: dict[str, Any], plugins: dict[str, Any],
               config_name: str | None, hf_tuning: dict[str, Any]) -> None:
    """The run's attention, optimizer, plugins and dataset (after the stack's assumptions)."""
    flash = run.pop("use_flash_attn")
    run["attention"] = "flash_attention_2" if str(flash).lower() == "true" else flash
    if flash is not None and "use_flash_attn" not in settings.header:
        settings.assumptions.append(
            "attention=flash_attention_2: fms-hf-tuning loads the model with "
            "attn_implementation='flash_attention_2' when use_flash_attn is true"
            + (f" ({hf_tuning['evidence_attn']})" if hf_tuning.get("evidence_attn") else ""))
    run["optimizer"] = None
    if hf_tuning.get("evidence_optim"):
        run["optimizer"] = "adamw_torch (transformers TrainingArguments default)"
        settings.assumptions.append("optimizer=adamw_torch: no `optim` in scenarios/defaults; "
                                    "fms-hf-tuning leaves the HF default "
                                    f"({hf_tuning['evidence_optim']})")
    for key in ("padding_free", "multipack", "framework_config_file", "framework_plugins",
                "fused_ops_and_kernels", "liger", "moe_scattermoe_ep_degree"):
        run[key] = plugins[key]
    run["framework_config"] = config_name
    run["framework_config_settings"] = plugins.get("framework_config_settings")
    run.update(_dataset(settings))
    run["scenario"] = (settings.scenario or {}).get("name")


def _dataset(settings: LineSettings) -> dict[str, Any]:
    context, facts = settings.facts.context, settings.facts
    data = (facts.scenarios or {}).get("data_processing") or {}
    if data.get("dataset_name"):
        settings.assumptions.append(f"dataset={data.get('dataset_name')}: data_processing stanza "
                                    f"of {ref(context.get('scenarios'))}")
    elif facts.dataset_default:
        settings.assumptions.append(f"dataset={facts.dataset_default}: BenchmarkDataset default "
                                    f"in {ref(context.get('benchmark_py'))}")
    return {"dataset": data.get("dataset_name") or facts.dataset_default,
            "dataset_split": data.get("dataset_split")}


def _run_caveats(count: int | None, plugins: dict[str, Any], config_name: str | None,
                 context: dict[str, Any]) -> list[str]:
    caveats = []
    if count and count > 1:
        caveats.append("multi-GPU FSDP run: mem_nvidia_mem_reserved is the mean over GPUs of each "
                       "GPU's peak; torch (HF Trainer) values are rank 0 only")
    if plugins["quant"] == "gptq":
        caveats.append("GPTQ pre-quantized base model loaded through the accelerated-peft "
                       "AutoGPTQ plugin")
    if plugins["fused_ops_and_kernels"]:
        caveats.append("fms-acceleration fused-ops-and-kernels (FOAK) plugin active"
                       + (" with Liger fused CE" if plugins["liger"] else ""))
    if plugins["padding_free"]:
        caveats.append("padding-free attention plugin active (no padding; packing=False)")
    if plugins["multipack"]:
        caveats.append("multipack sampler active")
    if plugins["moe_scattermoe_ep_degree"]:
        caveats.append(f"ScatterMoE expert-parallel plugin, "
                       f"ep_degree={plugins['moe_scattermoe_ep_degree']}")
    if config_name == "baseline-peft-bnb" or plugins.get("peft_plugin_no_peft_model"):
        caveats.append("bnb nf4 quantization through the accelerated-peft plugin with "
                       "no_peft_model=true (standard HF PEFT LoRA)")
    note = stage_note(context.get("benchmark_py"))
    if note:
        caveats.append(note)
    requirements = context.get("requirements")
    if requirements is None:
        caveats.append("no requirements file in the repo at this commit: library versions "
                       "unknown")
    elif "ambiguous" in (requirements.get("rule") or ""):
        caveats.append("requirements file choice: " + requirements["rule"])
    caveats.append("max_steps-limited benchmark (default 100 steps) unless scenario overrides; "
                   "memory is over the whole launched job (model load + train)")
    return caveats


def _measurement_key(line: dict[str, str], header: list[str], model: Any, gpu: dict[str, Any],
                     outcome: str) -> str:
    """Config identity + every memory number of the line: a changed number is a new one."""
    config = {c: normalised_number(line.get(c)) for c in KEY_COLUMNS
              if c in header and cell(line.get(c)) is not None}
    if "model_name_or_path" not in config and model:
        config["model_name_or_path"] = model
    memory = {MEM_COLUMNS[c][0]: normalised_number(line.get(c)) for c in header
              if c in MEM_COLUMNS and cell(line.get(c)) is not None}
    return json.dumps({"src": SOURCE, "gpu": gpu.get("model"), "cfg": config, "mem": memory,
                       "outcome": outcome}, sort_keys=True)


def _memory_rows(base: dict[str, Any], line: dict[str, str], header: list[str], number: int,
                 evidence: dict[str, str], bench: dict[str, Any] | None) -> list[dict[str, Any]]:
    columns = [c for c in header if c in MEM_COLUMNS]
    outcome = base["outcome"]
    zeros = [c for c in columns if outcome in ("oom", "failed") and MEM_COLUMNS[c][1] ==
             "allocated" and parse_number(cell(line.get(c)) or "x") == 0]
    if zeros:
        where = ref_line(bench, "output_metrics is empty, return peak=0 and usage=0")
        base["caveats"].append(
            f"columns {', '.join(zeros)} hold 0 for this failed run: benchmark.py returns 0 when "
            f"the Trainer produced no memory metrics ({where or 'benchmark.py'}); not emitted as "
            "measurements")
    rows = []
    for column in columns:
        value = cell(line.get(column))
        if value is None or column in zeros:
            continue
        canonical, statistic, unit, is_peak, aggregation = MEM_COLUMNS[column]
        row = dict(base, locator=f"line {number}, column {column}", column=column,
                   column_canonical=canonical, value=value, unit=unit,
                   value_bytes=value_bytes(value, unit), statistic=statistic, is_peak=is_peak,
                   aggregation=aggregation,
                   statistic_evidence=evidence["allocated_nonpeak" if statistic == "allocated"
                                               and not is_peak else statistic])
        row["caveats"] = list(base["caveats"])
        if not is_exact_bytes(value, unit):
            row["caveats"].append(f"value_bytes rounded: {value} {unit} is not a whole number "
                                  "of bytes")
        row["caveats"] += memory_caveats(statistic, is_peak, outcome)
        rows.append(row)
    if not rows and outcome == "oom":
        row = dict(base, locator=f"line {number}", column=None, column_canonical=None,
                   value=None, unit=None, value_bytes=None, statistic="unknown", is_peak=True,
                   aggregation=None,
                   statistic_evidence=("no memory column in this CSV version" if not columns
                                       else "memory cells empty for this line"))
        row["caveats"] = list(base["caveats"]) + [
            "no memory value published for this failed run (censored: peak > card memory)"]
        rows.append(row)
    return rows
