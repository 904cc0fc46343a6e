"""Fuzzing `vram-ml dataset import` with generated files: CSV and JSONL mixing good sample rows
with junk (bad values, unknown columns, broken lines, non-objects, stray text).

Every run must end with exit 0 (the good rows stored, each bad row refused with one `rejected:`
line) or exit 1 (one `error:` line, nothing stored); never a traceback, never a partial row: every
spool line is a whole sample and the dataset file written validates. Default tier: a few hundred
files; slow tier (`-m slow`): 1,000+.
"""

from __future__ import annotations

import csv
import io
import json
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from vram_ml.agent.dataset import validate_file
from vram_ml.agent.store import Spool
from vram_ml.cli import app
from vram_ml.sample import COLUMNS, Measurement, Provenance, Sample, sample_to_row
from vram_ml.spec import build_spec

FAST = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SLOW = settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
TINY = {"num_hidden_layers": 2, "hidden_size": 64, "intermediate_size": 128,
        "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 1000}
LINE_BREAKS = "\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"


def good_sample(batch_size: int, backend: str) -> Sample:
    """A complete, consistent sample (made up: for this test only)."""
    spec = build_spec(model="HuggingFaceTB/SmolLM2-135M", model_overrides=TINY, method="lora",
                      batch_size=batch_size, seq_len=32)
    measurement = Measurement("ok", peak_allocated_bytes=900, peak_reserved_bytes=1000,
                              cuda_context_bytes=500, peak_vram_bytes=1500, steps=3,
                              step_seconds=0.1)
    provenance = Provenance(backend, "0.1.0", "2026-01-01T00:00:00+00:00", host="gpu-host",
                            device_name="NVIDIA H100 80GB HBM3", device_total_bytes=80 * 2**30,
                            driver_version="580.1", cuda_version="13.0", torch_version="2.11.0",
                            installed_transformers_version="5.24.0",
                            installed_peft_version="0.21.2")
    return Sample(spec, measurement, provenance)


GOOD = [good_sample(b, backend) for b in (1, 2, 3, 4) for backend in ("cuda", "cpu")]
GOOD_ROWS = [sample_to_row(s) for s in GOOD]

junk_value = st.one_of(
    st.none(), st.booleans(), st.integers(-(10**20), 10**20), st.floats(allow_nan=True),
    st.text(max_size=20), st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=4), st.integers(), max_size=2),
)
column = st.one_of(st.sampled_from(COLUMNS), st.text(min_size=1, max_size=8))
spoiled_rows = st.tuples(st.sampled_from(GOOD_ROWS), st.dictionaries(
    st.sampled_from(COLUMNS), junk_value, min_size=1, max_size=3)).map(lambda t: {**t[0], **t[1]})
random_rows = st.dictionaries(column, junk_value, max_size=8)
stray = st.text(st.characters(blacklist_categories=("Cs",),
                              blacklist_characters=LINE_BREAKS + '"'), max_size=60)
# ("good", row) | ("row", dict that may be bad) | ("json", non-object value) | ("text", line)
entries = st.lists(st.one_of(
    st.tuples(st.just("good"), st.sampled_from(GOOD_ROWS)),
    st.tuples(st.just("row"), st.one_of(spoiled_rows, random_rows)),
    st.tuples(st.just("json"), st.one_of(st.integers(), st.text(max_size=10),
                                         st.lists(st.integers(), max_size=3))),
    st.tuples(st.just("text"), stray),
), max_size=12)
files = st.tuples(st.sampled_from(["csv", "jsonl"]), entries,
                  st.lists(st.sampled_from(COLUMNS), max_size=4, unique=True))


def cell(value: object) -> str:
    if value is None:
        return ""
    return json.dumps(value) if isinstance(value, list | dict) else str(value)


def write_file(path: Path, kind: str, items: list, dropped: list[str]) -> None:
    """The entries as CSV (header = COLUMNS less `dropped` + any extra keys) or JSONL."""
    if kind == "jsonl":
        lines = [item if tag == "text" else json.dumps(item) for tag, item in items]
        path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
        return
    extra = sorted({str(k) for tag, item in items if tag in ("good", "row") for k in item}
                   - set(COLUMNS))
    header = [c for c in COLUMNS if c not in dropped] + extra
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n", quoting=csv.QUOTE_ALL)  # "\r" in a name
    writer.writerow(header)
    for tag, item in items:
        if tag in ("good", "row"):
            writer.writerow([cell(item.get(name)) for name in header])
        else:
            out.write(cell(item).replace('"', "") + "\n")  # a stray line, not a CSV row
    path.write_text(out.getvalue(), encoding="utf-8")


def check_import(kind: str, items: list, dropped: list[str]) -> None:
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        path, store, output = root / f"in.{kind}", root / "store", root / "out.csv"
        write_file(path, kind, items, dropped)
        result = CliRunner().invoke(app, [
            "dataset", "import", str(path), "--store", str(store), "--no-mlflow", "--output",
            str(output), "--include-backend", "cpu"])
        assert result.exception is None or isinstance(result.exception, SystemExit), \
            repr(result.exception)
        assert "Traceback" not in result.output
        lines = result.output.splitlines()
        spool = store / "spool.jsonl"
        intact = kind == "jsonl" or not dropped  # a dropped column may spoil every row
        good = {row["spec_id"] + row["backend"] for tag, row in items if tag == "good"} \
            if intact else set()
        event(f"exit {result.exit_code}")
        if result.exit_code == 1:
            assert lines and lines[-1].startswith("error: ") and not good, lines
            assert not spool.exists() and not output.exists()  # nothing partial
            return
        assert result.exit_code == 0, lines
        expected = validate_file(path)
        rejected = [line for line in lines if line.startswith("rejected: ")]
        assert len(rejected) == len(expected.problems)
        assert len(lines) == len(rejected) + 1  # one line per refusal, one summary line
        assert spool.read_bytes().endswith(b"\n") if expected.samples else not spool.exists()
        samples = Spool(store).samples()
        event(f"stored {min(len(samples), 3)}{'+' if len(samples) >= 3 else ''}")
        assert Spool(store).scan().corrupt_lines == 0
        assert {s.sample_key for s in samples} == {s.sample_key for s in expected.samples}
        assert good <= {s.spec_id + s.provenance.backend for s in samples}
        assert validate_file(output).ok


@FAST
@given(files)
def test_fuzz_dataset_import_files(generated):
    check_import(*generated)


@pytest.mark.slow
@SLOW
@given(files)
def test_fuzz_dataset_import_files_slow(generated):
    check_import(*generated)


def test_a_file_of_junk_only_is_one_error_and_stores_nothing(tmp_path):
    path = tmp_path / "junk.jsonl"
    path.write_text("[1]\n{broken\n" + json.dumps({"model": "nope"}) + "\n")
    result = CliRunner().invoke(app, ["dataset", "import", str(path), "--store",
                                      str(tmp_path / "store"), "--no-mlflow", "--output",
                                      str(tmp_path / "out.csv")])
    assert result.exit_code == 1 and result.output.count("\n") == 1, result.output
    assert result.output.startswith("error: ") and "row 1: not a JSON object" in result.output
    assert not (tmp_path / "store" / "spool.jsonl").exists()
    assert not (tmp_path / "out.csv").exists()


def test_a_mixed_file_keeps_the_good_rows(tmp_path):
    path = tmp_path / "mixed.csv"
    write_file(path, "csv", [("good", GOOD_ROWS[0]), ("text", "x,y,z,,,"),
                             ("row", {**GOOD_ROWS[2], "peak_vram_bytes": "lots"}),
                             ("good", GOOD_ROWS[4]), ("good", GOOD_ROWS[0])], [])
    result = CliRunner().invoke(app, ["dataset", "import", str(path), "--store",
                                      str(tmp_path / "store"), "--no-mlflow", "--output",
                                      str(tmp_path / "out.csv")])
    assert result.exit_code == 0, result.output
    assert [line.split(":")[1].strip() for line in result.output.splitlines()[:3]] == \
        ["row 2", "row 3", "row 5"]
    assert "2/5 valid; 2 new in the store" in result.output
    assert {s.sample_key for s in Spool(tmp_path / "store").samples()} == \
        {GOOD[0].sample_key, GOOD[4].sample_key}
