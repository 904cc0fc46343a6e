"""`dataset validate` on the published table: the committed table passes; each corruption gives
one line naming the row and what is wrong, and a non-zero exit."""

from __future__ import annotations

import csv
import json

import pytest
from typer.testing import CliRunner

from vram_ml.cli import app
from vram_ml.published.schema import COLUMNS, row_id
from vram_ml.published.units import value_bytes
from vram_ml.published.validation import row_problems, validate_published_rows

from .excerpts import TABLE, table_rows

ROWS = table_rows()
MAPPED = next(r for r in ROWS if r["mapping"] == "mapped" and r["value"])
UNMAPPED = next(r for r in ROWS if r["mapping"] == "unmapped" and r["value"])
OOM = next(r for r in ROWS if r["outcome"] == "oom" and r["mapping"] == "mapped")


def test_the_committed_table_is_valid():
    result = validate_published_rows(ROWS)
    assert result.ok, result.problems[:5]
    assert result.valid == len(ROWS) > 4000


CORRUPTIONS = {
    "short commit": (MAPPED, {"commit": MAPPED["commit"][:12], "row_id": row_id(
        MAPPED["repository"], MAPPED["path"], MAPPED["commit"][:12], MAPPED["locator"],
        MAPPED["column"])}, "commit"),
    "no quote": (MAPPED, {"quote": ""}, "quote: empty"),
    "bytes off by one": (MAPPED, {"value_bytes": str(int(MAPPED["value_bytes"]) + 1)},
                         "value_bytes"),
    "value not quoted": (MAPPED, {"value": "0.987654321", "value_bytes": str(
        value_bytes("0.987654321", MAPPED["unit"]))}, "does not appear in the quote"),
    "bad statistic": (MAPPED, {"statistic": "peak"}, "statistic"),
    "no evidence": (MAPPED, {"statistic_evidence": ""}, "statistic_evidence: empty"),
    "fit with a value": (MAPPED, {"outcome": "fit"}, "label-only"),
    "oom without card": (OOM, {"card_memory_bytes": ""}, "censoring bound"),
    "over the card": (MAPPED, {"card_memory_bytes": "1", "per_gpu": "true"}, "exceeds the card"),
    "wrong spec_id": (MAPPED, {"spec_id": "0" * 16}, "spec_id"),
    "spec that does not build": (MAPPED, {"spec": json.dumps(
        dict(json.loads(MAPPED["spec"]), batch_size=0))}, "does not build a Spec"),
    "mapped with a reason": (MAPPED, {"unmapped_reason": "x"}, "mapped row with"),
    "unmapped without reason": (UNMAPPED, {"unmapped_reason": ""}, "without unmapped_reason"),
    "unmapped with a spec": (UNMAPPED, {"spec_id": "a" * 16}, "unmapped row with a spec"),
    "assumptions not a list": (MAPPED, {"assumptions": '{"a": 1}'}, "assumptions: not a JSON list"),
    "caveats not JSON": (MAPPED, {"caveats": "[oops"}, "caveats: not valid JSON"),
    "also_in without commit": (MAPPED, {"also_in": '[{"path": "p", "locator": "l"}]'}, "also_in"),
    "row_id not the place's": (MAPPED, {"locator": MAPPED["locator"] + " "}, "row_id"),
}


@pytest.mark.parametrize("name", CORRUPTIONS)
def test_each_corruption_is_one_problem(name):
    row, change, expected = CORRUPTIONS[name]
    problems = row_problems(dict(row, **change))
    assert len(problems) == 1 and expected in problems[0], problems


def write(path, rows):
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(COLUMNS), lineterminator="\r\n")
        writer.writeheader()
        writer.writerows(rows)


def test_the_cli_recognises_the_table_and_exits_nonzero_on_problems(tmp_path):
    good, bad = tmp_path / "good.csv", tmp_path / "bad.csv"
    write(good, [MAPPED, UNMAPPED])
    write(bad, [MAPPED, dict(UNMAPPED, unmapped_reason=""), dict(OOM, statistic="x")])
    result = CliRunner().invoke(app, ["dataset", "validate", str(good)])
    assert result.exit_code == 0 and "published table, 2 rows, 2 valid" in result.output
    result = CliRunner().invoke(app, ["dataset", "validate", str(bad)])
    problems = [line for line in result.output.splitlines() if line.startswith("problem:")]
    assert result.exit_code == 1 and len(problems) == 2
    assert problems[0].startswith("problem: row 2 (") and "row 3 (" in problems[1]
    result = CliRunner().invoke(app, ["dataset", "validate", str(bad), "--json"])
    assert result.exit_code == 1 and json.loads(result.output)["counts"]["source"]


def test_the_committed_file_validates_through_the_cli():
    result = CliRunner().invoke(app, ["dataset", "validate", str(TABLE)])
    assert result.exit_code == 0, result.output[-500:]
