"""fms-acceleration: the settings of one benchmark CSV line, and where each comes from.

A CSV drops the columns that are constant within it, so a setting is read from the line, else
from the scenario the line's (framework_config, model, peft_method, learning rate) matches in
the scenarios file of that CSV at the same commit, else from defaults.yaml, else from the
benchmark's argparse default; every value not in the line is recorded as an assumption. The
sample acceleration config named by `framework_config` says which plugins run.
"""

from __future__ import annotations

import ast
import json
import re
from dataclasses import dataclass, field
from typing import Any

from vram_ml.published.document_text import load_yaml
from vram_ml.published.sources.fms_columns import ref, ref_line
from vram_ml.published.units import parse_number

TRAINER_DETAIL = ("fms-hf-tuning `python -m tuning.sft_trainer` (trl.SFTTrainer subclass of "
                  "transformers.Trainer) with fms-acceleration plugins")
SHARDING = {1: "FULL_SHARD", 2: "SHARD_GRAD_OP", 3: "NO_SHARD"}


def cell(value: str | None) -> str | None:
    """A CSV cell, None when empty."""
    value = (value or "").strip()
    return value or None


@dataclass
class VersionFacts:
    """What the files beside one CSV version say (same commit)."""

    context: dict[str, Any]
    scenarios: Any = None
    defaults: dict[str, Any] = field(default_factory=dict)
    accelerate: dict[str, Any] = field(default_factory=dict)
    configs: dict[str, tuple] = field(default_factory=dict)
    seq_default: tuple[str | None, int | None] = (None, None)
    pack_default: tuple[str | None, int | None] = (None, None)
    dataset_default: str | None = None

    @classmethod
    def read(cls, context: dict[str, Any]) -> VersionFacts:
        bench = context.get("benchmark_py")
        text = bench["text"] if bench else None
        dataset = re.search(r'dataset_name: str = "([^"]+)"', text) if text else None
        return cls(context=context, scenarios=_yaml(context.get("scenarios")),
                   defaults=_yaml(context.get("defaults_yaml")) or {},
                   accelerate=_yaml(context.get("accelerate_yaml")) or {},
                   configs=framework_map(context),
                   seq_default=bench_default(text, "max_seq_len_matrix"),
                   pack_default=bench_default(text, "packing_matrix"),
                   dataset_default=dataset.group(1) if dataset else None)


def _yaml(item: dict[str, Any] | None) -> Any:
    return load_yaml(item["text"]) if item else None


def framework_map(context: dict[str, Any]) -> dict[str, tuple]:
    """shortname -> (file name, plugins, parsed sample config or None), from CONTENTS.yaml."""
    contents = _yaml(context.get("contents_yaml"))
    if not contents:
        return {}
    texts = context.get("framework_configs") or {}
    found = {}
    for entry in contents.get("framework_configs", []) or []:
        name = entry.get("filename")
        found[entry.get("shortname")] = (name, entry.get("plugins"),
                                         load_yaml(texts[name]) if name in texts else None)
    return found


def _walk(tree: Any, path: tuple = ()):
    if isinstance(tree, dict):
        for key, value in tree.items():
            yield from _walk(value, (*path, key))
    else:
        yield path, tree


def plugin_flags(config_name: str | None, configs: dict[str, tuple]
                 ) -> tuple[dict[str, Any], str | None]:
    """Memory-relevant flags of a sample acceleration config, and a note when it is missing."""
    info: dict[str, Any] = {
        "framework_config": config_name, "framework_config_file": None, "framework_plugins": None,
        "quant": "none", "fused_ops_and_kernels": None, "liger": False, "padding_free": False,
        "multipack": False, "moe_scattermoe_ep_degree": None, "peft_plugin_no_peft_model": None}
    if config_name in (None, "", "none"):
        return info, None
    if config_name not in configs:
        return info, (f"framework_config '{config_name}' not found in "
                      "sample-configurations/CONTENTS.yaml at this commit")
    name, plugins, parsed = configs[config_name]
    info["framework_config_file"] = f"sample-configurations/{name}"
    info["framework_plugins"] = plugins
    if parsed is None:
        return info, f"sample config {name} not readable at this commit"
    flat = {"/".join(map(str, path)): value for path, value in _walk(parsed)}
    info["framework_config_settings"] = flat
    for key, value in flat.items():
        if "quantization/bitsandbytes/quant_type" in key:
            info["quant"] = f"bnb_{value}"
        if "quantization/auto_gptq" in key:
            info["quant"] = "gptq"
        if key.endswith("no_peft_model"):
            info["peft_plugin_no_peft_model"] = value
        if "fused_ops_and_kernels" in key:
            info["fused_ops_and_kernels"] = info["fused_ops_and_kernels"] or {}
            info["fused_ops_and_kernels"][key.split("/")[-1]] = value
            info["liger"] = info["liger"] or (isinstance(value, str) and "liger" in value)
        info["padding_free"] = info["padding_free"] or "padding_free" in key
        info["multipack"] = info["multipack"] or "multipack" in key
        if key.endswith("scattermoe/ep_degree"):
            info["moe_scattermoe_ep_degree"] = value
    return info, None


def match_scenario(line: dict[str, str], scenarios: Any, config_name: str | None
                   ) -> tuple[dict[str, Any] | None, str | None]:
    """The one scenario a CSV line belongs to, or (None, why not)."""
    if not scenarios:
        return None, "no scenarios file at this commit"
    want_none = config_name in (None, "", "none")
    found = []
    for scenario in scenarios.get("scenarios") or []:
        configs = scenario.get("framework_config")
        if want_none:
            matches = configs is None or (isinstance(configs, list) and None in configs)
        else:
            matches = isinstance(configs, list) and config_name in configs
        if matches:
            found.append(scenario)
    model = (line.get("model_name_or_path") or "").strip()
    if model:
        found = [s for s in found if model in (s.get("arguments", {}).get("model_name_or_path")
                                               or [])]
    if len(found) > 1 and "peft_method" in line:
        method = (line.get("peft_method") or "").strip() or None
        found = [s for s in found if (s.get("arguments", {}).get("peft_method") or None) == method]
    if len(found) > 1 and (line.get("learning_rate") or "").strip():
        rate = parse_number(line["learning_rate"])
        same = [s for s in found
                if parse_number(str(s.get("arguments", {}).get("learning_rate"))) == rate]
        found = same or found
    if len(found) == 1:
        return found[0], None
    if not found:
        return None, "no scenario matches (framework_config, model, peft_method)"
    return None, "ambiguous scenario match: " + ", ".join(s.get("name", "?") for s in found)


def bench_default(text: str | None, option: str) -> tuple[str | None, int | None]:
    """(`default=[...]` literal, line) of a benchmark.py argparse option."""
    if not text:
        return None, None
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if f'"--{option}"' in line:
            for j in range(i, min(i + 8, len(lines))):
                match = re.search(r"default=(\[.*?\])", lines[j])
                if match:
                    return match.group(1), j + 1
    return None, None


def scalar_default(literal: str) -> Any:
    """'[4096]' -> 4096, '[True]' -> True; a list of several stays a list."""
    try:
        value = ast.literal_eval(literal)
    except (ValueError, SyntaxError):
        return literal
    return value[0] if isinstance(value, list) and len(value) == 1 else value


@dataclass
class LineSettings:
    """Resolves one CSV line's settings, recording where each not-in-the-line value is from."""

    line: dict[str, str]
    header: list[str]
    facts: VersionFacts
    scenario: dict[str, Any] | None
    assumptions: list[str] = field(default_factory=list)

    @property
    def arguments(self) -> dict[str, Any]:
        return (self.scenario or {}).get("arguments", {})

    def value(self, column: str, default_key: str | None = None) -> Any:
        """line column -> scenario constant -> defaults.yaml."""
        if column in self.header:
            return cell(self.line.get(column))
        scenarios = ref(self.facts.context.get("scenarios"))
        if self.scenario is not None and column in self.arguments:
            value = self.arguments[column]
            self.assumptions.append(
                f"{column}={json.dumps(value)}: column absent from CSV (constant columns are "
                f"dropped by gather_report); taken from scenario '{self.scenario.get('name')}' "
                f"in {scenarios}")
            return value
        if default_key and default_key in self.facts.defaults:
            value = self.facts.defaults[default_key]
            self.assumptions.append(f"{column}={json.dumps(value)}: not in CSV/scenario; from "
                                    f"{ref(self.facts.context.get('defaults_yaml'))}")
            return value
        return None

    def packing(self) -> Any:
        bench = self.facts.context.get("benchmark_py")
        literal, line = self.facts.pack_default
        if "packing" in self.arguments:
            value = self.arguments["packing"]
            self.assumptions.append(
                f"packing={json.dumps(value)}: scenario '{self.scenario.get('name')}' constant in "
                f"{ref(self.facts.context.get('scenarios'))} (scenario constants override the "
                "benchmark --packing_matrix)")
            return value
        if literal is not None:
            self.assumptions.append(
                f"packing={literal}: benchmark.py --packing_matrix default ({bench['path']}@"
                f"{bench['commit']}:{line}); assumes the published run used the default")
            return scalar_default(literal)
        return None

    def seq_len(self) -> Any:
        bench = self.facts.context.get("benchmark_py")
        value = None
        for key in ("max_seq_len", "max_seq_length"):
            if key in self.arguments:
                value = self.arguments[key]
                self.assumptions.append(f"seq_len={value}: scenario '{self.scenario.get('name')}'"
                                        f" in {ref(self.facts.context.get('scenarios'))}")
        literal, line = self.facts.seq_default
        if value is None and literal is not None:
            value = scalar_default(literal)
            self.assumptions.append(
                f"seq_len={literal}: benchmark.py --max_seq_len_matrix default, passed to "
                f"tuning.sft_trainer as --max_seq_len ({bench['path']}@{bench['commit']}:{line}); "
                "assumes the published run used the default")
        return value


def stack_of(num_gpus: int | None, facts: VersionFacts, settings: LineSettings,
             hf_tuning: dict[str, Any], gpus_text: Any) -> dict[str, Any]:
    """Trainer, distribution and FSDP settings of the launch (accelerate.yaml when > 1 GPU)."""
    bench, accelerate_file = facts.context.get("benchmark_py"), facts.context.get("accelerate_yaml")
    accelerate = facts.accelerate
    distributed = "none"
    if num_gpus is not None and num_gpus > 1:
        kind = accelerate.get("distributed_type")
        distributed = "fsdp" if kind == "FSDP" else str(kind).lower()
    evidence = [
        (ref_line(bench, 'FMS_TRAINER = "-m tuning.sft_trainer"') or "") + " trainer entry point",
        hf_tuning.get("evidence_trainer"),
        (ref_line(bench, "COMMAND_ACCELERATE = ") or "") + " multi-GPU runs use `accelerate "
        "launch --config_file accelerate.yaml --num_processes=N`; 1 GPU uses plain python",
        (ref_line(accelerate_file, "distributed_type:") or "") + " accelerate config"]
    stack: dict[str, Any] = {"trainer": "trl_sft", "trainer_detail": TRAINER_DETAIL,
                             "distributed": distributed,
                             "evidence": "; ".join(e for e in evidence if e)}
    if distributed == "fsdp":
        fsdp = accelerate.get("fsdp_config") or {}
        strategy = fsdp.get("fsdp_sharding_strategy")
        stack.update({
            "fsdp_sharding_strategy": SHARDING.get(strategy, strategy),
            "fsdp_offload_params": fsdp.get("fsdp_offload_params"),
            "fsdp_backward_prefetch": fsdp.get("fsdp_backward_prefetch",
                                               fsdp.get("fsdp_backward_prefetch_policy")),
            "fsdp_forward_prefetch": fsdp.get("fsdp_forward_prefetch"),
            "fsdp_auto_wrap_policy": fsdp.get("fsdp_auto_wrap_policy"),
            "fsdp_cpu_ram_efficient_loading": fsdp.get("fsdp_cpu_ram_efficient_loading"),
            "fsdp_state_dict_type": fsdp.get("fsdp_state_dict_type"),
            "fsdp_use_orig_params": fsdp.get("fsdp_use_orig_params"),
            "accelerate_mixed_precision": accelerate.get("mixed_precision"),
            "accelerate_config": ref(accelerate_file)})
        settings.assumptions.append(
            f"distributed=fsdp: num_gpus={gpus_text}>1 -> benchmark.py launches with "
            f"{ref(accelerate_file)} (FSDP, sharding strategy {stack['fsdp_sharding_strategy']})")
    return stack
