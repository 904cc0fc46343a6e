"""Every parser, run on an excerpt rebuilt from the committed table's own quotes, gives back the
table's measurements (value, unit, bytes, statistic, peak, outcome, quote) for that version."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from vram_ml.published.build import read_source
from vram_ml.published.git_files import SourceDir
from vram_ml.published.manifest import SourceManifest
from vram_ml.published.sources import SOURCES, source_named
from vram_ml.published.table_rows import to_table_row

from .builders import BUILDERS
from .excerpts import measured, table_rows, write_snapshot

# the file a source's test rebuilds (default: the one holding most of its rows)
PICK = {"peft-docs": "README.md", "fsdp_qlora": "benchmarking/small_gpu_benchmarking.sh",
        "axolotl": "examples/LiquidAI/README.md"}
FSDP_QLORA_TRAIN = "299f51a98246d77f5e556fe1a27ab29e107530f0"  # its context reads train.py there


def version_rows(name: str) -> tuple[str, str, list[dict[str, str]]]:
    rows = [row for row in table_rows() if row["source"] == name]
    places = Counter((row["commit"], row["path"]) for row in rows
                     if row["path"] == PICK.get(name, row["path"]))
    (commit, path), _ = places.most_common(1)[0]
    chosen = [row for row in rows if (row["commit"], row["path"]) == (commit, path)]
    if name == "peft-metamathqa":  # one result file: one measurement
        chosen = [row for row in chosen if row["measurement_key"] == chosen[0]["measurement_key"]]
    return commit, path, chosen


def parse_excerpt(tmp_path: Path, name: str, commit: str, path: str, text: str
                  ) -> list[dict[str, object]]:
    source = source_named(name)
    write_snapshot(tmp_path, source.repository, commit, path, text)
    (tmp_path / source.repository.replace("/", "+") / FSDP_QLORA_TRAIN).mkdir(exist_ok=True)
    version = {"commit": commit, "path": path, "date": None, "runner_commit": commit,
               "runner_source": "results-commit",
               "document": next((t["doc"] for t in source.targets if path in t["paths"]), path)}
    manifest = SourceManifest(name, source.repository, (version,), pinned=commit)
    with SourceDir(tmp_path) as sources:
        return [to_table_row(row) for row in read_source(sources, source, manifest, [],
                                                          check_blobs=False)]


def test_every_source_has_an_excerpt_builder():
    assert {source.name for source in SOURCES} == set(BUILDERS)


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_parser_gives_back_the_tables_rows_from_their_quotes(tmp_path, name):
    commit, path, expected = version_rows(name)
    parsed = parse_excerpt(tmp_path, name, commit, path, BUILDERS[name](expected))
    assert measured(parsed) == measured(expected)
    assert all(row["source"] == name and row["commit"] == commit for row in parsed)


def test_a_changed_number_is_parsed_as_the_new_number(tmp_path):
    """A synthetic variant: one fms CSV cell edited gives that value, in bytes, nothing else."""
    commit, path, expected = version_rows("fms-acceleration")
    device = next(row for row in expected if row["column"] == "mem_nvidia_mem_reserved"
                  and row["outcome"] == "ok")
    edited = dict(device, quote=device["quote"].replace(device["value"], "12345.5", 1))
    parsed = parse_excerpt(tmp_path, "fms-acceleration", commit, path,
                           BUILDERS["fms-acceleration"]([edited]))
    values = {row["column"]: row for row in parsed}
    assert values["mem_nvidia_mem_reserved"]["value"] == "12345.5"
    assert values["mem_nvidia_mem_reserved"]["value_bytes"] == str(int(12345.5 * 2**20))


def test_a_failed_line_is_oom_or_failed_by_its_device_reading(tmp_path):
    """No train_loss / train_runtime: oom near the card, failed under half of it."""
    commit, path, expected = version_rows("fms-acceleration")
    header = expected[0]["header_quote"].split(",")
    ok = next(row for row in expected if row["column"] == "mem_nvidia_mem_reserved"
              and row["outcome"] == "ok")
    cells = ok["quote"].split(",")
    if len(cells) != len(header):
        pytest.fail("the chosen line has quoted commas; pick another version")
    for column in ("train_loss", "train_runtime"):
        cells[header.index(column)] = ""
    low = list(cells)
    low[header.index("mem_nvidia_mem_reserved")] = "100"
    rows = [dict(ok, quote=",".join(cells), locator="line 2, column x"),
            dict(ok, quote=",".join(low), locator="line 3, column x")]
    parsed = parse_excerpt(tmp_path, "fms-acceleration", commit, path,
                           BUILDERS["fms-acceleration"](rows))
    outcomes = {row["locator"].split(",")[0]: row["outcome"] for row in parsed
                if row["column"] == "mem_nvidia_mem_reserved"}
    assert outcomes == {"line 2": "oom", "line 3": "failed"}
