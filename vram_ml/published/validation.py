"""`vram-ml dataset validate` for the published table: every row checked, one line per problem.

A row must trace to a file and a commit (40 hex), hold its quote, give a value whose bytes are
exactly value x unit, name its statistic with evidence, have an outcome consistent with its
value and its card, and, when mapped, carry a Spec that builds to the same `spec_id`.
"""

from __future__ import annotations

import csv
import json
import re
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from vram_ml.published.schema import (
    COLUMNS,
    JSON_LIST_COLUMNS,
    MAPPINGS,
    OUTCOMES,
    REQUIRED_COLUMNS,
    STATISTICS,
    is_published_header,
    row_id,
)
from vram_ml.published.units import UNIT_FACTORS, parse_number, value_bytes

HEX16 = re.compile(r"[0-9a-f]{16}")
HEX40 = re.compile(r"[0-9a-f]{40}")
SHARE_UNIT = "%"  # a share of the card's memory: no bytes are derived from it


@dataclass
class PublishedValidation:
    rows: int = 0
    valid: int = 0
    problems: list[str] = field(default_factory=list)
    counts: dict[str, dict[str, int]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.problems


def is_published_table(path: Path) -> bool:
    """Whether `path` is a CSV or Parquet file whose columns are the published table's."""
    path = Path(path)
    if path.suffix not in (".csv", ".parquet") or not path.is_file():
        return False
    try:
        if path.suffix == ".parquet":
            import pyarrow.parquet as pq

            header = list(pq.read_schema(path).names)
        else:
            with open(path, newline="", encoding="utf-8") as handle:
                header = next(csv.reader(handle), [])
    except (OSError, UnicodeDecodeError, csv.Error, ValueError, ImportError):
        return False
    return is_published_header(header)


def validate_published_rows(rows: list[dict[str, Any] | str]) -> PublishedValidation:
    """Check every row; a problem is 'row N (row_id): what is wrong'."""
    result = PublishedValidation(rows=len(rows))
    seen: set[str] = set()
    for number, row in enumerate(rows, 1):
        if not isinstance(row, dict):
            result.problems.append(f"row {number}: {row}")
            continue
        found = row_problems(row)
        if row.get("row_id") in seen:
            found.append("duplicate row_id")
        seen.add(row.get("row_id", ""))
        label = f"row {number} ({row.get('row_id') or 'no row_id'})"
        result.problems += [f"{label}: {problem}" for problem in found]
        result.valid += not found
    good = [row for row in rows if isinstance(row, dict)]
    for column in ("source", "statistic", "outcome", "mapping"):
        result.counts[column] = dict(Counter(row.get(column, "") for row in good))
    return result


def validate_published_file(path: Path) -> PublishedValidation:
    from vram_ml.dataset_files import read_rows

    return validate_published_rows(read_rows(path))


def row_problems(row: dict[str, Any]) -> list[str]:
    """Every problem of one row (empty when the row is valid)."""
    missing = [c for c in COLUMNS if c not in row]
    if missing:
        return [f"columns missing: {', '.join(missing)}"]
    problems = [f"{c}: empty" for c in REQUIRED_COLUMNS if not str(row[c]).strip()]
    if problems:
        return problems
    problems += _provenance(row)
    problems += _value(row)
    problems += _statistic_and_outcome(row)
    problems += _json_columns(row)
    problems += _mapping(row)
    return problems


def _provenance(row: dict[str, Any]) -> list[str]:
    problems = []
    if not HEX40.fullmatch(row["commit"]):
        problems.append(f"commit: {row['commit'][:50]!r} is not 40 hex")
    if row["repository"].count("/") != 1:
        problems.append(f"repository: {row['repository']!r} is not owner/name")
    if row["commit_date"]:
        try:
            datetime.fromisoformat(row["commit_date"])
        except ValueError:
            problems.append(f"commit_date: {row['commit_date'][:40]!r} is not ISO 8601")
    expected = row_id(row["repository"], row["path"], row["commit"], row["locator"], row["column"])
    if row["row_id"] != expected:
        problems.append(f"row_id: {row['row_id']} is not sha256(repository|path|commit|locator|"
                        f"column) ({expected})")
    if not HEX16.fullmatch(row["measurement_key"]):
        problems.append("measurement_key: not 16 hex")
    return problems


def _value(row: dict[str, Any]) -> list[str]:
    value, unit, stored = row["value"], row["unit"], row["value_bytes"]
    if not value:
        return ([] if not unit and not stored
                else ["unit / value_bytes given without a value"])
    if parse_number(value) is None:
        return [f"value: {value[:30]!r} is not a number"]
    problems = []
    if value not in row["quote"]:
        problems.append(f"value: {value} does not appear in the quote")
    if unit == SHARE_UNIT:
        return problems + (["value_bytes: given for a share of the card"] if stored else [])
    if unit not in UNIT_FACTORS:
        return problems + [f"unit: {unit!r} is not one of {', '.join(UNIT_FACTORS)} or %"]
    expected = value_bytes(value, unit)
    if stored != str(expected):
        problems.append(f"value_bytes: {stored[:30]!r} != {value} {unit} = {expected}")
    return problems


def _statistic_and_outcome(row: dict[str, Any]) -> list[str]:
    problems = []
    if row["statistic"] not in STATISTICS:
        problems.append(f"statistic: {row['statistic']!r} is not one of {', '.join(STATISTICS)}")
    for name, allowed in (("is_peak", ("true", "false")), ("per_gpu", ("true", "false", ""))):
        if row[name] not in allowed:
            problems.append(f"{name}: {row[name]!r} is not true/false")
    outcome, card = row["outcome"], row["card_memory_bytes"]
    for name in ("card_memory_bytes", "gpu_count", "value_bytes"):
        if row[name] and not row[name].isdigit():
            problems.append(f"{name}: {row[name][:30]!r} is not a whole number")
    if outcome not in OUTCOMES:
        problems.append(f"outcome: {outcome!r} is not one of {', '.join(OUTCOMES)}")
    elif outcome == "fit" and row["value"]:
        problems.append("outcome fit is for label-only rows, but the row has a value")
    elif outcome in ("ok", "failed") and not row["value"]:
        problems.append(f"outcome {outcome} without a value (a label-only fit is 'fit')")
    elif outcome == "oom" and not card:
        problems.append("outcome oom without card_memory_bytes (the censoring bound)")
    if (outcome == "ok" and row["value_bytes"].isdigit() and card.isdigit()
            and row["per_gpu"] != "false" and int(row["value_bytes"]) > int(card)):
        problems.append(f"value_bytes {row['value_bytes']} exceeds the card's {card} bytes on a "
                        "per-GPU value")
    return problems


def _json_columns(row: dict[str, Any]) -> list[str]:
    problems = []
    for name in (*JSON_LIST_COLUMNS, "run"):
        try:
            value = json.loads(row[name])
        except (json.JSONDecodeError, TypeError):
            problems.append(f"{name}: not valid JSON")
            continue
        if name == "run" and not isinstance(value, dict):
            problems.append("run: not a JSON object")
        elif name != "run" and not isinstance(value, list):
            problems.append(f"{name}: not a JSON list")
        elif name == "also_in" and not all(
                isinstance(p, dict) and HEX40.fullmatch(str(p.get("commit"))) and p.get("path")
                and p.get("locator") for p in value):
            problems.append("also_in: each place needs a 40-hex commit, a path and a locator")
        elif name in ("assumptions", "caveats") and not all(isinstance(v, str) for v in value):
            problems.append(f"{name}: not a list of strings")
    return problems


def _mapping(row: dict[str, Any]) -> list[str]:
    from vram_ml.spec import SpecError, build_spec, renamed_fields

    mapping = row["mapping"]
    if mapping not in MAPPINGS:
        return [f"mapping: {mapping!r} is not mapped/unmapped"]
    if mapping == "unmapped":
        if row["spec"] or row["spec_id"]:
            return ["unmapped row with a spec"]
        return [] if row["unmapped_reason"].strip() else ["unmapped row without unmapped_reason"]
    if row["unmapped_reason"]:
        return ["mapped row with an unmapped_reason"]
    try:
        fields = json.loads(row["spec"])
    except json.JSONDecodeError:
        return ["spec: not valid JSON"]
    if not isinstance(fields, dict):
        return ["spec: not a JSON object"]
    try:
        spec = build_spec(**renamed_fields(fields))
    except SpecError as error:
        return [f"spec: does not build a Spec ({error})"]
    if spec.spec_id != row["spec_id"]:
        return [f"spec_id: {row['spec_id'][:20]!r} is not the spec's ({spec.spec_id})"]
    return []
