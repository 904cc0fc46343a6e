"""`vram-ml dataset import-published`: a rebuild from SOURCE_DIR, and one-line errors that leave
nothing written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from vram_ml.cli import app
from vram_ml.published.build import import_published
from vram_ml.published.validation import validate_published_file

from .builders import BUILDERS
from .excerpts import TABLE, measured
from .test_parsers import version_rows

ROOT = Path(__file__).parents[3]
MANIFEST = ROOT / "datasets" / "published" / "sources.yaml"
QUOTED = ROOT / "datasets" / "published" / "quoted"
runner = CliRunner()


def run(*args: str):
    return runner.invoke(app, ["dataset", "import-published", *args])


def one_error_line(result) -> str:
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code != 0 and len(lines) == 1 and lines[0].startswith("error: "), lines
    return lines[0]


def test_a_missing_source_dir(tmp_path):
    out = tmp_path / "out" / "m.csv"
    line = one_error_line(run(str(tmp_path / "absent"), "--output", str(out)))
    assert "no such directory" in line and not out.exists()


def test_a_source_dir_without_the_repositories(tmp_path):
    out = tmp_path / "m.csv"
    line = one_error_line(run(str(tmp_path), "--output", str(out), "--manifest", str(MANIFEST)))
    assert "repository foundation-model-stack/fms-acceleration: not in" in line
    assert not out.exists() and not (tmp_path / "DATACARD.md").exists()


@pytest.mark.parametrize("kind", ["under_a_file", "a_directory"])
def test_an_unwritable_output(tmp_path, kind):
    (tmp_path / "file").write_text("x")
    out = tmp_path / "file" / "m.csv" if kind == "under_a_file" else tmp_path
    line = one_error_line(run(str(tmp_path), "--output", str(out), "--manifest", str(MANIFEST)))
    assert str(out) in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


def test_a_broken_manifest(tmp_path):
    manifest = tmp_path / "sources.yaml"
    manifest.write_text("format: 1\nsources:\n- name: qwen\n  repository: QwenLM/Qwen\n"
                        "  versions:\n  - {commit: abc, path: README.md}\n")
    line = one_error_line(run(str(tmp_path), "--output", str(tmp_path / "m.csv"),
                              "--manifest", str(manifest)))
    assert "not 40 hex" in line


def test_a_rebuild_from_quotes_gives_back_the_committed_rows(tmp_path):
    """SOURCE_DIR holds the qwen README excerpt (from the table's quotes) and the HF blog comes
    from the committed quoted lines: the import writes a valid table with the same rows."""
    commit, path, expected = version_rows("qwen")
    folder = tmp_path / "src" / "QwenLM+Qwen" / commit
    folder.mkdir(parents=True)
    (folder / path).write_text(BUILDERS["qwen"](expected))
    manifest = tmp_path / "sources.yaml"
    pinned = yaml.safe_load(MANIFEST.read_text())
    keep = []
    for entry in pinned["sources"]:
        if entry["name"] == "qwen":
            entry["versions"] = [dict(v, blob=None) for v in entry["versions"]
                                 if v["commit"] == commit]
            keep.append(entry)
        elif entry["name"] == "hf-blog-4bit":
            keep.append(entry)
    manifest.write_text(yaml.safe_dump({"format": 1, "sources": keep}))
    out = tmp_path / "out" / "m.csv"
    result = run(str(tmp_path / "src"), "--output", str(out), "--manifest", str(manifest),
                 "--quoted", str(QUOTED), "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert summary["read_from"] == {"qwen": "SOURCE_DIR", "hf-blog-4bit": "quoted"}
    assert validate_published_file(out).ok and (out.parent / "DATACARD.md").exists()
    committed = {r["row_id"]: r for r in validate_rows_of(TABLE)}
    rebuilt = validate_rows_of(out)
    blog = [r for r in rebuilt if r["source"] == "hf-blog-4bit"]
    assert len(blog) == 14 and all(r == committed[r["row_id"]] for r in blog)
    qwen = [r for r in rebuilt if r["source"] == "qwen"]
    assert measured(qwen) == measured(expected)  # locators hold the excerpt's line numbers


def validate_rows_of(path: Path) -> list[dict[str, str]]:
    from vram_ml.dataset_files import read_rows

    return [row for row in read_rows(path) if isinstance(row, dict)]


@pytest.mark.slow
def test_the_committed_table_rebuilds_identically(tmp_path):
    """Slow tier, where the mirrors exist (VRAM_ML_SOURCE_DIR or /work/.mirror)."""
    import os

    source_dir = Path(os.environ.get("VRAM_ML_SOURCE_DIR", "/work/.mirror"))
    if not (source_dir / "foundation-model-stack+fms-acceleration").exists():
        pytest.skip(f"no source mirrors in {source_dir}")
    out = tmp_path / "measurements.parquet"
    import_published(source_dir, out, MANIFEST, QUOTED)
    assert validate_rows_of(out) == validate_rows_of(TABLE)  # every row, every cell, in order
    assert out.read_bytes() == TABLE.read_bytes()  # same pyarrow version: the same bytes
    assert (tmp_path / "DATACARD.md").read_bytes() == (TABLE.parent / "DATACARD.md").read_bytes()
