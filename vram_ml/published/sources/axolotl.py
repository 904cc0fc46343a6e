"""axolotl-ai-cloud/axolotl examples/*/README.md memory statements next to committed YAML configs.

Three kinds of statements are read:
  A. code-block comments attached to an `axolotl train <yaml>` line, e.g.
        # LoRA SFT (1x48GB @ 2.7GiB)
        axolotl train examples/LiquidAI/lfm2-vl-lora.yaml
     or inline:  axolotl train examples/mistral4/qlora-text.yml  # no experts ~69 GiB, experts ~93
     GiB
  B. prose "This config uses about 8.7 GiB VRAM." -> the `axolotl train` command(s) of the
     preceding code block;
  C. per-README wordings (llama-2/code-llama, dbrx, jamba, llama-3, llama-4, yi-34B, old gpt-oss
     bullets,
     qwen3.5 table).
Requirement / estimate wording (stablelm-2 'Estimating GPU Requirements', orpheus 'will run on any
GPU with
45GB', code-llama 34b 'does not fit', deepseek '>=180GB', glm47 'Projected ~45-50GiB') is not
extracted.
"""

from __future__ import annotations

import re

from vram_ml.published.sources.axolotl_context import (  # noqa: F401 (the parser's interface)
    NO_CODEBLOCK,
    REPOSITORY,
    SOURCE,
    TARGETS,
    build_context,
)
from vram_ml.published.sources.axolotl_custom import _custom_rows
from vram_ml.published.sources.axolotl_rows import _codeblock_rows, _prose_rows


def parse(text, *, repository, path, commit, commit_date, context):
    stat_note = None
    m = re.search(r"Memory usage taken from `device_mem_reserved\(gib\)` from logs\.", text)
    if m:
        ln = text.count("\n", 0, m.start()) + 1
        stat_note = (
            "reserved",
            f"{path}@{commit}:{ln}: {m.group(0)} (axolotl logs peak reserved memory since the last "
            f"log step: {context.get('ev_bench')})")
    rows = []
    if path not in NO_CODEBLOCK:
        rows += _codeblock_rows(text, context, repository, path, commit, commit_date, stat_note)
    rows += _prose_rows(text, context, repository, path, commit, commit_date, stat_note)
    rows += _custom_rows(text, context, repository, path, commit, commit_date)
    # gemma4 tip: '~25.2 GiB reserved, packing on' for the 31B config
    tip = re.search(r"on 31B \((?P<v>~[\d.]+ GiB) reserved, packing on\)", text)
    if tip:
        ln = text.count("\n", 0, tip.start()) + 1
        for r in rows:
            if "31b" in (r["run"].get("config_path") or
                         "") and r["value_written"] == tip.group("v"):
                r["statistic"], r["statistic_confidence"] = "reserved", "stated"
                r["statistic_evidence"] = (f"{path}@{commit}:{ln}: "
                                           f"{text.splitlines()[ln - 1].strip()}")
    # de-duplicate identical keys (a line can match two patterns)
    seen, out = set(), []
    for r in rows:
        k = (r["row_key"], r["value"], r["outcome"])
        if k in seen:
            continue
        seen.add(k)
        out.append(r)
    return out


RUN_DIFF_KEYS = ["method", "gpu_count", "num_gpus", "model_label"]
