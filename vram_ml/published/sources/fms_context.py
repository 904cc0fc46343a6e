"""fms-acceleration: what a CSV version's parser needs from the same commit (and fms-hf-tuning).

The benchmark script (what each column is), its README, the scenarios and defaults (settings a
CSV drops when constant), the accelerate config (FSDP), the sample acceleration configs (which
plugins a `framework_config` turns on), the requirements file the manifest pins, the GPU named
by the file name, and from fms-hf-tuning the lines that show the trainer and optimizer.
"""

from __future__ import annotations

import os
import re
from typing import Any

from vram_ml.published.git_files import RepositoryFiles, SourceDir
from vram_ml.published.units import GIB

HF_TUNING = "foundation-model-stack/fms-hf-tuning"
REPOSITORY = "foundation-model-stack/fms-acceleration"
CARD_80 = 80 * GIB
A100_EVIDENCE = (
    "file name 'a100_80gb*'; README.md@876e2ed6:193 '- [A100-80GB](./scripts/benchmarks/refs/"
    "a100_80gb.csv)'; plugins/attention-and-distributed-packing/README.md@876e2ed6:32,35 'Padding "
    "Free/MultiPack on A100 80GB'; benchmark.py example device name 'NVIDIA A100-SXM4-80GB' (form "
    "factor not stated for the CSVs). card_memory_bytes = nominal 80 GiB (81920 MiB)")
L40_EVIDENCE = (
    "file name 'l40_40gb.csv'; README.md@8af8fa7:87 '- [L40-40GB](./scripts/benchmarks/refs/"
    "l40_40gb.csv)'. NVIDIA L40 is a 48 GB card, so the '40GB' label is inconsistent; its rows "
    "are all failed runs, and 40 GiB (the smaller reading) is kept as their censoring bound")


def build_context(sources: SourceDir, version: dict[str, Any]) -> dict[str, Any]:
    repo = sources.repository(version.get("repository") or REPOSITORY)
    commit, path = version["commit"], version["path"]
    requirements = _item(repo, commit, version.get("requirements"))
    if requirements and version.get("requirements_rule"):
        requirements["rule"] = version["requirements_rule"]
    configs = {}
    for config in repo.list_dir(commit, "sample-configurations"):
        if config.endswith(".yaml") and not config.endswith("CONTENTS.yaml"):
            configs[os.path.basename(config)] = repo.read(commit, config)
    return {
        "requirements": requirements,
        "benchmark_py": _item(repo, commit, "scripts/benchmarks/benchmark.py"),
        "bench_readme": _item(repo, commit, "scripts/benchmarks/README.md"),
        "scenarios": _item(repo, commit, scenarios_path(path)),
        "defaults_yaml": _item(repo, commit, "scripts/benchmarks/defaults.yaml"),
        "accelerate_yaml": _item(repo, commit, "scripts/benchmarks/accelerate.yaml"),
        "contents_yaml": _item(repo, commit, "sample-configurations/CONTENTS.yaml"),
        "framework_configs": configs,
        "gpu": gpu_of(path, version.get("renamed_to")),
        "hf_tuning": hf_tuning_facts(sources, version),
    }


def _item(repo: RepositoryFiles, commit: str, path: str | None) -> dict[str, Any] | None:
    text = repo.read(commit, path) if path else None
    return None if text is None else {"path": path, "commit": commit, "text": text}


def scenarios_path(path: str) -> str:
    """The scenarios file a CSV's runs come from (a mapping made for this dataset)."""
    if "/refs_orca/" in path:
        return "scripts/benchmarks/scenarios-orca.yaml"
    suffix = re.match(r"^a100_80gb_(\w+)\.csv$", os.path.basename(path))
    if suffix:
        return f"scripts/benchmarks/scenarios-{suffix.group(1)}.yaml"
    return "scripts/benchmarks/scenarios.yaml"


def gpu_of(path: str, renamed_to: dict[str, Any] | None = None) -> dict[str, Any]:
    """The GPU a CSV's file name names (following a later rename when the name has none)."""
    base = os.path.basename(path)
    if base.startswith("a100_80gb"):
        return {"model": "NVIDIA A100 80GB", "card_memory_bytes": CARD_80,
                "evidence": A100_EVIDENCE}
    if base.startswith("l40_40gb"):
        return {"model": "NVIDIA L40 (labelled 'L40-40GB')", "card_memory_bytes": 40 * GIB,
                "evidence": L40_EVIDENCE}
    if renamed_to:
        gpu = gpu_of(renamed_to["path"])
        if gpu.get("model"):
            gpu = dict(gpu)
            gpu["evidence"] = (f"file renamed {renamed_to['status']} to {renamed_to['path']} in "
                               f"{renamed_to['commit'][:9]} (same content); " + gpu["evidence"])
            return gpu
    return {"model": None, "card_memory_bytes": None, "evidence": "not stated"}


def hf_tuning_facts(sources: SourceDir, version: dict[str, Any]) -> dict[str, Any]:
    """Lines of fms-hf-tuning (at the pinned commit) that show the trainer, attention, optimizer."""
    sha, how = version.get("hf_tuning_commit"), version.get("hf_tuning_how")
    if not sha or not sources.has(HF_TUNING):
        return {}
    tuning = sources.repository(HF_TUNING)
    facts: dict[str, Any] = {"ref": sha, "how": how}
    trainer = tuning.read(sha, "tuning/sft_trainer.py") or ""
    configs = tuning.read(sha, "tuning/config/configs.py") or ""
    line = _line_matching(trainer, r"from trl import .*SFTTrainer")
    if line:
        facts["evidence_trainer"] = (f"fms-hf-tuning tuning/sft_trainer.py@{sha[:9]}:{line} "
                                     f"imports trl.SFTTrainer ({how})")
    line = _line_matching(trainer, re.escape('attn_implementation="flash_attention_2"'))
    if line:
        facts["evidence_attn"] = f"fms-hf-tuning tuning/sft_trainer.py@{sha[:9]}:{line}"
    line = _line_matching(configs, r"#\s*optim: str = field")
    if line:
        facts["evidence_optim"] = (f"fms-hf-tuning tuning/config/configs.py@{sha[:9]}:{line} "
                                   "`# optim: ...` override is commented out")
    return facts


def _line_matching(text: str, pattern: str) -> int | None:
    return next((number for number, line in enumerate(text.splitlines(), 1)
                 if re.search(pattern, line)), None)
