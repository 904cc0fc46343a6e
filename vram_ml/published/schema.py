"""The published table: its columns, in order, and what each value may be.

`datasets/published/measurements.parquet` has one row per published number (a source line with
several memory columns gives several rows sharing `measurement_key`). Lists and objects are
JSON; booleans are `true` / `false`; an unknown value is empty. The learned model reads this
table (vram_ml.model may not import vram_ml.agent), so the schema lives in the trunk.
"""

from __future__ import annotations

import hashlib

COLUMNS: tuple[str, ...] = (
    "row_id", "measurement_key", "source", "repository", "path", "commit", "commit_date",
    "locator", "column", "quote", "header_quote", "also_in", "value", "unit", "value_bytes",
    "statistic", "is_peak", "statistic_evidence", "outcome", "card_memory_bytes", "gpu_model",
    "gpu_count", "per_gpu", "trainer", "distributed", "stack_evidence", "torch_version",
    "transformers_version", "peft_version", "trl_version", "bitsandbytes_version",
    "accelerate_version", "deepspeed_version", "flash_attn_version", "versions_evidence", "run",
    "assumptions", "caveats", "spec", "spec_id", "mapping", "unmapped_reason",
)
# torch.cuda max_memory_allocated | max_memory_reserved | nvidia-smi / NVML memory.used | not known
STATISTICS = ("allocated", "reserved", "device", "unknown")
# fit: a label-only row that says the run fitted, with no number
OUTCOMES = ("ok", "oom", "failed", "fit")
MAPPINGS = ("mapped", "unmapped")
VERSION_COLUMNS = ("torch_version", "transformers_version", "peft_version", "trl_version",
                   "bitsandbytes_version", "accelerate_version", "deepspeed_version",
                   "flash_attn_version")
JSON_LIST_COLUMNS = ("also_in", "assumptions", "caveats")
REQUIRED_COLUMNS = ("row_id", "measurement_key", "source", "repository", "path", "commit",
                    "locator", "quote", "statistic", "statistic_evidence", "outcome", "is_peak",
                    "run", "mapping")


def row_id(repository: str, path: str, commit: str, locator: str, column: str) -> str:
    """16 hex: sha256 of repository|path|commit|locator|column (one published place)."""
    text = "|".join((repository, path, commit, locator, column or ""))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def short_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def is_published_header(header: list[str] | tuple[str, ...]) -> bool:
    """Whether a table's columns are this schema's (how `dataset validate` tells the tables
    apart)."""
    return tuple(header) == COLUMNS
