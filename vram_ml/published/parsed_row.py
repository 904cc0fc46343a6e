"""The row a source parser returns, before the import turns it into a table row.

A parser fills what its source states: provenance, the published value (digits as written, its
unit), the statistic and its evidence, the outcome, the GPU, the stack (trainer, distribution),
library versions, the run settings as the source states them (`run`), every assumption and
caveat. `vram_ml.published.table_rows` then adds ids, mapping and the table's column order.
"""

from __future__ import annotations

from typing import Any

from vram_ml.published.units import value_bytes

# settings a parser may state; `run` keeps others too (a source's own knobs, verbatim)
RUN_KEYS = (
    "model",
    "model_label",
    "method",
    "quant_bits",
    "quant_method",
    "lora_rank",
    "lora_alpha",
    "lora_dropout",
    "lora_target",
    "trainable_embeddings",
    "modules_to_save",  # the names a script passes to peft (trainable copies)
    "trainable_vision",
    "per_device_batch_size",
    "gradient_accumulation_steps",
    "seq_len",
    "seq_len_semantics",
    "packing",
    "gradient_checkpointing",
    "precision",
    "attention",
    "optimizer",
    "num_gpus",
    "num_nodes",
    "images_per_sample",
    "image_resolution",
    "image_tokens",
    "config_path",
    "config_settings",
    "fit_semantics",
)
CARD_BASIS = (
    "nominal capacity as marketed (N GB) taken as N x 2^30 bytes; the CUDA-visible "
    "total reported by nvidia-smi can be slightly lower"
)


def new_run(**settings: Any) -> dict[str, Any]:
    run: dict[str, Any] = {key: None for key in RUN_KEYS}
    run.update(settings)
    return run


def new_stack(
    trainer: str | None = None,
    distributed: str | None = None,
    zero_stage: Any = None,
    offload: Any = None,
    evidence: Any = None,
    **extra: Any,
) -> dict[str, Any]:
    stack = {
        "trainer": trainer,
        "distributed": distributed,
        "zero_stage": zero_stage,
        "offload": offload,
        "evidence": evidence or [],
    }
    stack.update(extra)
    return stack


def make_row(**fields: Any) -> dict[str, Any]:
    """A parsed row with every key present (None when not stated)."""
    row: dict[str, Any] = {
        "source": None,
        "repository": None,
        "path": None,
        "commit": None,
        "commit_date": None,
        "row_key": None,
        "locator": None,
        "column": None,
        "quote": None,
        "header_quote": None,
        "value": None,
        "value_written": None,
        "unit": None,
        "unit_basis": None,
        "value_bytes": None,
        "statistic": "unknown",
        "statistic_confidence": None,
        "statistic_evidence": None,
        "is_peak": True,
        "outcome": None,
        "card_memory_bytes": None,
        "card_memory_basis": None,
        "gpu_model": None,
        "gpu_count": None,
        "per_gpu": None,
        "per_gpu_evidence": None,
        "stack": None,
        "versions": None,
        "versions_evidence": None,
        "run": None,
        "assumptions": [],
        "caveats": [],
        "secondary_values": None,
        "vision_language": False,
    }
    row.update(fields)
    if row["run"] is None:
        row["run"] = new_run()
    if row["stack"] is None:
        row["stack"] = new_stack()
    return row


def mem_value(
    row: dict[str, Any],
    written: str,
    number: str,
    unit_written: str | None,
    unit: str,
    basis_note: str,
) -> dict[str, Any]:
    """Fill the published value: `written` as it appears ("6.7G"), `number` its digits, the unit
    as written ("G"), `unit` the unit it is read in (a key of units.UNIT_FACTORS), and why."""
    row["value_written"] = written
    row["value"] = number
    row["unit"] = unit
    row["unit_basis"] = basis_note
    row["value_bytes"] = value_bytes(number, unit)
    return row
