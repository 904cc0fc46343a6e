"""A parser's row -> the table's row (ids, outcome label, stack and versions as columns).

What a parser states beside the table's columns is kept, not dropped: the stack's details
(ZeRO stage, offload, FSDP settings, launch script) and secondary values go into `run`; the
evidence for the GPU, the card, per-GPU, the unit and an inferred outcome go into
`assumptions` ("field=value: why"); superseded and duplicate notes are in `caveats`.
"""

from __future__ import annotations

import json
from typing import Any

from vram_ml.published.requirement_pins import UNPINNED, exact_version
from vram_ml.published.schema import COLUMNS, row_id, short_hash

_STACK_COLUMNS = ("trainer", "distributed", "evidence")


def to_table_row(parsed: dict[str, Any]) -> dict[str, Any]:
    """The table row of one parsed row, before mapping (spec columns empty)."""
    column = parsed.get("column") or ""
    locator = parsed["locator"]
    row: dict[str, Any] = {name: "" for name in COLUMNS}
    row.update(
        row_id=row_id(parsed["repository"], parsed["path"], parsed["commit"], locator, column),
        measurement_key=_measurement_key(parsed),
        source=parsed["source"], repository=parsed["repository"], path=parsed["path"],
        commit=parsed["commit"], commit_date=parsed.get("commit_date") or "", locator=locator,
        column=column, quote=parsed["quote"] or "",
        header_quote=parsed.get("header_quote") or parsed.get("table_header_quote") or "",
        also_in=_json(parsed.get("also_in") or []),
        value=_text(parsed.get("value")), unit=_text(parsed.get("unit")),
        value_bytes=_text(parsed.get("value_bytes")),
        statistic=parsed["statistic"], is_peak=_bool(parsed.get("is_peak", True)),
        statistic_evidence=_statistic_evidence(parsed), outcome=_outcome(parsed),
        card_memory_bytes=_text(parsed.get("card_memory_bytes")),
        gpu_model=parsed.get("gpu_model") or "", gpu_count=_text(parsed.get("gpu_count")),
        per_gpu=_bool(parsed.get("per_gpu")),
    )
    stack = parsed.get("stack") or {}
    row["trainer"] = stack.get("trainer") or ""
    row["distributed"] = stack.get("distributed") or ""
    evidence = stack.get("evidence")
    row["stack_evidence"] = "; ".join(e for e in evidence if e) if isinstance(evidence, list) \
        else (evidence or "")
    row.update(_versions(parsed))
    row["run"] = _json(_run(parsed, stack))
    row["assumptions"] = _json(_assumptions(parsed))
    row["caveats"] = _json(list(parsed.get("caveats") or []))
    row["mapping"] = "unmapped"
    if parsed.get("superseded_by") is None and parsed.get("row_key"):
        row["_row_key"] = parsed["row_key"]  # a current row, that a relabelled copy may point to
    if parsed.get("duplicate_of_row_key"):
        row["_duplicate_of"] = parsed["duplicate_of_row_key"]
    return row


def _measurement_key(parsed: dict[str, Any]) -> str:
    if parsed.get("measurement_key"):
        return short_hash(parsed["measurement_key"])
    return short_hash(json.dumps([parsed["source"], parsed["row_key"], parsed.get("value"),
                                  parsed["outcome"]], ensure_ascii=False))


def _outcome(parsed: dict[str, Any]) -> str:
    if parsed["outcome"] == "ok" and parsed.get("value") is None:
        return "fit"
    return parsed["outcome"]


def _statistic_evidence(parsed: dict[str, Any]) -> str:
    evidence = parsed.get("statistic_evidence") or ""
    confidence = parsed.get("statistic_confidence")
    if confidence and confidence not in ("stated", "code"):
        evidence += f" [statistic {confidence}]"
    return evidence


def _versions(parsed: dict[str, Any]) -> dict[str, str]:
    versions = parsed.get("versions") or {}
    stated = versions.get("stated_in_source") or {}
    columns = {}
    for key in ("torch", "transformers", "peft", "trl", "bitsandbytes", "accelerate",
                "deepspeed", "flash_attn"):
        # a version the source says it measured with describes the run better than a pin
        said, pinned = stated.get(key), versions.get(key)
        chosen = said if exact_version(said) else (pinned if pinned not in (None, "", UNPINNED)
                                                  else said)
        chosen = exact_version(chosen) or chosen
        columns[f"{key}_version"] = "" if chosen in (None, UNPINNED) else str(chosen)
    evidence = parsed.get("versions_evidence") or ""
    extra = {k: v for k, v in versions.items()
             if v and k not in ("stated_in_source", "torch", "transformers", "peft", "trl",
                                "bitsandbytes", "accelerate", "deepspeed", "flash_attn")}
    if stated:
        evidence += ("; " if evidence else "") + "stated in the source: " + ", ".join(
            f"{k} {v}" for k, v in stated.items())
    if extra:
        evidence += ("; " if evidence else "") + "other pins: " + ", ".join(
            f"{k} {v}" for k, v in extra.items())
    columns["versions_evidence"] = evidence
    return columns


def _run(parsed: dict[str, Any], stack: dict[str, Any]) -> dict[str, Any]:
    run = {key: value for key, value in (parsed.get("run") or {}).items() if value is not None}
    details = {k: v for k, v in stack.items() if k not in _STACK_COLUMNS and v is not None}
    if details:
        run["stack"] = details
    if parsed.get("secondary_values"):
        run["secondary_values"] = parsed["secondary_values"]
    if parsed.get("aggregation"):
        run["aggregation"] = parsed["aggregation"]
    run["vision_language"] = bool(parsed.get("vision_language"))
    return run


def _assumptions(parsed: dict[str, Any]) -> list[str]:
    found = list(parsed.get("assumptions") or [])
    notes = (
        ("gpu_model", parsed.get("gpu_model"), parsed.get("gpu_model_evidence")),
        ("card_memory_bytes", parsed.get("card_memory_bytes"), parsed.get("card_memory_basis")),
        ("per_gpu", parsed.get("per_gpu"), parsed.get("per_gpu_evidence")),
        ("unit", parsed.get("unit"), parsed.get("unit_basis")),
        ("outcome", parsed.get("outcome"), parsed.get("outcome_evidence")),
    )
    for field, value, why in notes:
        if why:
            found.append(f"{field}={json.dumps(value, ensure_ascii=False)}: {why}")
    return found


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, sort_keys=True)


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def _bool(value: Any) -> str:
    return "" if value is None else ("true" if value else "false")
