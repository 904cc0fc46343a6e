"""Dataset files: validate, CSV/Parquet round trips, merge without loss, import from a GPU run."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from vram_ml.agent.datacard import COLUMN_DOCS
from vram_ml.agent.dataset import (
    DatasetError,
    merge,
    read_rows,
    update_file,
    validate_file,
    validate_rows,
    write_samples,
)
from vram_ml.agent.store import Spool
from vram_ml.cli import app
from vram_ml.sample import COLUMNS, sample_to_row

runner = CliRunner()


def test_every_column_is_documented():
    assert set(COLUMN_DOCS) == set(COLUMNS)


def test_rows_written_before_the_rename_load_with_their_spec_id(make_sample):
    """train_vision_tower / train_projector became LLaMA-Factory's freeze_* keys: an old row (its
    old columns, inverted values) loads, and its stored spec_id still matches."""
    sample = make_sample({"model": "Qwen/Qwen2-VL-2B-Instruct", "freeze_vision_tower": False,
                          "images_per_sample": 1, "seq_len": 1024})
    old = sample_to_row(sample)
    old["train_vision_tower"] = str(not old.pop("freeze_vision_tower"))  # CSV text: "True"
    old["train_projector"] = str(not old.pop("freeze_multi_modal_projector"))
    result = validate_rows([old])
    assert result.ok, result.problems
    loaded = result.samples[0]
    assert loaded.spec_id == sample.spec_id == old["spec_id"]
    assert not loaded.spec.freeze_vision_tower and loaded.spec.freeze_multi_modal_projector


def test_validate_finds_each_problem(tiny_specs, make_sample):
    samples = [make_sample(s) for s in tiny_specs]
    good = [sample_to_row(s) for s in samples]
    mismatch = {**good[0], "peak_vram_bytes": 1}
    no_driver = {**good[1], "driver_version": ""}
    corrupt = {**good[2], "batch_size": "many"}
    result = validate_rows([good[0], good[0], mismatch, no_driver, corrupt, good[1]])
    assert len(result.samples) == 2
    assert [p.split(":")[0] for p in result.problems] == ["row 2", "row 3", "row 4", "row 5"]
    assert "duplicate" in result.problems[0]
    assert "peak_vram_bytes !=" in result.problems[1]
    assert "driver_version" in result.problems[2]
    assert "batch_size" in result.problems[3]


@pytest.mark.parametrize("suffix", ["csv", "parquet"])
def test_round_trip(tmp_path, tiny_specs, make_sample, suffix):
    samples = [make_sample(s) for s in tiny_specs]
    path = tmp_path / f"samples.{suffix}"
    write_samples(samples, path)
    result = validate_file(path)
    assert result.ok and not result.warnings
    by_key = {s.sample_key: s for s in result.samples}
    for sample in samples:
        again = by_key[sample.sample_key]
        assert again.measurement == sample.measurement and again.provenance == sample.provenance


def test_merge_never_drops_and_fills_run_ids(tmp_path, tiny_specs, make_sample):
    samples = [make_sample(s) for s in tiny_specs]
    output = tmp_path / "samples.csv"
    update_file(output, samples[:2], ("cuda",))
    copy = make_sample(tiny_specs[1])
    copy.provenance.mlflow_run_id = "abc"
    merged, new = update_file(output, [copy, samples[2]], ("cuda",))
    assert new == 1 and len(merged) == 3
    assert {s.provenance.mlflow_run_id for s in merge(merged)} == {"", "abc"}
    output.write_text(output.read_text().replace("NVIDIA", "", 1).replace(",580.1,", ",,", 1))
    with pytest.raises(DatasetError, match="fix it or pass --replace"):
        update_file(output, samples, ("cuda",))


def test_import_jsonl_into_store_and_dataset(tmp_path, tiny_specs, make_sample):
    samples = [make_sample(s) for s in tiny_specs]
    brought = tmp_path / "samples.jsonl"
    rows = [sample_to_row(s) for s in samples] + [{**sample_to_row(samples[0]), "status": "?"}]
    brought.write_text("".join(json.dumps(r) + "\n" for r in rows))
    output, store = tmp_path / "datasets" / "samples.csv", tmp_path / "store"
    args = ["dataset", "import", str(brought), "--output", str(output), "--store", str(store),
            "--no-mlflow", "--json"]
    result = json.loads(runner.invoke(app, args).stdout)
    assert result["valid"] == 3 and len(result["rejected"]) == 1
    assert result["new_in_store"] == 3 and result["rows_in_output"] == 3
    again = json.loads(runner.invoke(app, args).stdout)  # importing twice adds nothing
    assert again["new_in_store"] == 0 and again["new_in_output"] == 0
    assert len(Spool(store).path.read_text().splitlines()) == 3
    assert len(read_rows(output)) == 3
    assert (output.parent / "DATACARD.md").exists()


def test_cpu_samples_stay_out_unless_asked(tmp_path, tiny_specs, make_sample):
    samples = [make_sample(s) for s in tiny_specs]
    samples[0].provenance.backend = "cpu"
    merged, _ = update_file(tmp_path / "a.csv", samples, ("cuda",))
    assert {s.provenance.backend for s in merged} == {"cuda"} and len(merged) == 2
    merged, _ = update_file(tmp_path / "b.csv", samples, ("cuda", "cpu"))
    assert len(merged) == 3


def test_validate_cli_exit_codes(tmp_path, tiny_specs, make_sample):
    samples = [make_sample(s) for s in tiny_specs]
    path = tmp_path / "samples.csv"
    write_samples(samples, path)
    assert runner.invoke(app, ["dataset", "validate", str(path)]).exit_code == 0
    path.write_text(path.read_text().replace(",ok,", ",maybe,", 1))
    result = runner.invoke(app, ["dataset", "validate", str(path)])
    assert result.exit_code == 1 and "problem: row 1: status" in result.output
    missing = runner.invoke(app, ["dataset", "validate", str(tmp_path / "none.csv")])
    assert missing.exit_code == 1
    (tmp_path / "empty.csv").write_text("")
    empty = runner.invoke(app, ["dataset", "validate", str(tmp_path / "empty.csv")])
    assert empty.exit_code == 1 and "empty file" in empty.stderr
    header_only = tmp_path / "header.csv"
    write_samples([], header_only)  # the committed dataset before its first GPU sample
    assert runner.invoke(app, ["dataset", "validate", str(header_only)]).exit_code == 0


def _one_line_error(result) -> str:
    assert result.exit_code != 0 and isinstance(result.exception, SystemExit), result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


@pytest.mark.parametrize("where", ["/proc/vram-ml-test/samples.csv", "{file}/samples.csv",
                                   "{folder}"])
def test_unwritable_outputs_fail_in_one_line_and_store_nothing(tmp_path, tiny_specs,
                                                               make_sample, where):
    samples = [make_sample(s) for s in tiny_specs]
    brought = tmp_path / "samples.jsonl"
    brought.write_text("".join(json.dumps(sample_to_row(s)) + "\n" for s in samples))
    (tmp_path / "a_file").write_text("not a folder")
    (tmp_path / "a_folder").mkdir()
    output = where.format(file=tmp_path / "a_file", folder=tmp_path / "a_folder")
    store = tmp_path / "store"
    imported = runner.invoke(app, ["dataset", "import", str(brought), "--output", output,
                                   "--store", str(store), "--no-mlflow"])
    assert "output: " in _one_line_error(imported)
    assert not store.exists()  # refused before anything reached the store
    Spool(store).append_many(samples)
    exported = runner.invoke(app, ["dataset", "export", "--source", "spool", "--output", output,
                                   "--store", str(store)])
    assert "output: " in _one_line_error(exported)
    assert len(Spool(store).samples()) == len(samples)  # the store keeps every sample


def test_special_or_huge_files_are_refused_in_one_line(tmp_path, monkeypatch):
    import os

    from vram_ml import dataset_files

    os.mkfifo(tmp_path / "pipe.csv")  # reading it would block for ever
    with pytest.raises(DatasetError, match="not a regular file"):
        read_rows(tmp_path / "pipe.csv")
    with pytest.raises(DatasetError, match="no such file"):
        read_rows(tmp_path / "absent.csv")
    (tmp_path / "big.jsonl").write_text('{"a": 1}\n' * 10)
    monkeypatch.setattr(dataset_files, "MAX_DATA_FILE_BYTES", 50)
    with pytest.raises(DatasetError, match="larger than"):
        read_rows(tmp_path / "big.jsonl")
