"""Reading samples: only backend=cuda ever trains; other rows are counted, bad rows reported.

The rows written here are fixtures for the reader only (a handful, in tmp_path, marked
`device_name="FAKE (pytest)"`), never a dataset."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from vram_ml.model.learned.training_set import SIMULATE_COLUMN, load_training_set
from vram_ml.sample import Measurement, Provenance, Sample
from vram_ml.spec import build_spec

GIB = 1024**3


def _row(backend: str, status: str = "ok", seq_len: int = 256, **extra) -> dict:
    spec = build_spec(model="Qwen/Qwen2.5-0.5B", seq_len=seq_len, precision="bf16")
    peak = 3 * GIB if status == "ok" else None
    measurement = Measurement(
        status=status,
        peak_vram_bytes=peak,
        peak_reserved_bytes=peak and peak - GIB // 2,
        peak_allocated_bytes=peak and peak - GIB,
    )
    provenance = Provenance(
        backend=backend,
        agent_version="test",
        created_at=f"2026-01-0{seq_len % 9 + 1}",
        device_name="FAKE (pytest)",
        device_total_bytes=24 * GIB,
    )
    return {**Sample(spec, measurement, provenance).to_row(), **extra}


@pytest.fixture
def rows() -> list[dict]:
    return [
        _row("cuda", seq_len=256, **{SIMULATE_COLUMN: 2.5 * GIB}),
        _row("cuda", status="oom", seq_len=512),
        _row("cuda", status="error", seq_len=1024),
        _row("cpu", seq_len=128),
        _row("simulated", seq_len=64),
    ]


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".parquet"])
def test_keeps_only_cuda_ok_and_oom(tmp_path, rows, suffix):
    path = tmp_path / f"samples{suffix}"
    if suffix == ".jsonl":
        path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    elif suffix == ".csv":
        pd.DataFrame(rows).to_csv(path, index=False)
    else:
        pd.DataFrame(rows).to_parquet(path)
    data, report = load_training_set([tmp_path])
    assert len(data) == 2 and list(data.status) == ["ok", "oom"]
    assert report.skipped_backend == {"cpu": 1, "simulated": 1}
    assert report.skipped_status == {"error": 1}
    assert data.peak_vram_bytes[0] == 3 * GIB and np.isnan(data.peak_vram_bytes[1])
    assert data.simulate_peak_vram_bytes[0] == 2.5 * GIB
    assert data.oom.tolist() == [False, True] and set(data.backend) == {"cuda"}


def test_duplicates_and_corrupt_rows_are_reported(tmp_path, rows):
    corrupt = {**rows[0], "spec_id": "0000000000000000"}
    path = tmp_path / "samples.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in [rows[0], rows[0], corrupt]))
    data, report = load_training_set([path])
    assert len(data) == 1 and report.duplicates == 1
    assert len(report.invalid) == 1 and "spec_id" in report.invalid[0]



def test_a_broken_line_is_invalid_and_special_files_are_refused(tmp_path, rows, monkeypatch):
    import os

    from vram_ml import dataset_files

    path = tmp_path / "samples.jsonl"
    path.write_text(json.dumps(rows[0]) + "\n{not json\n[1, 2]\n")
    data, report = load_training_set([path])
    assert len(data) == 1 and report.rows == 3 and len(report.invalid) == 2
    assert "not valid JSON" in report.invalid[0] and "not a JSON object" in report.invalid[1]
    os.mkfifo(tmp_path / "pipe.csv")  # reading it would block for ever
    (tmp_path / "folder.csv").mkdir()  # a folder's data files are its regular files
    assert len(load_training_set([tmp_path])[0]) == 1
    with pytest.raises(ValueError, match="not a regular file"):
        load_training_set([tmp_path / "pipe.csv"])
    monkeypatch.setattr(dataset_files, "MAX_DATA_FILE_BYTES", 10)
    with pytest.raises(ValueError, match="larger than"):
        load_training_set([path])

def test_synthetic_rows_never_load_even_if_written(tmp_path, rows):
    (tmp_path / "s.jsonl").write_text(json.dumps({**rows[0], "backend": "synthetic"}) + "\n")
    data, report = load_training_set([tmp_path])
    assert len(data) == 0 and report.skipped_backend == {"synthetic": 1}


def test_missing_source_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_training_set([tmp_path / "nope.csv"])


def test_data_hash_ignores_row_order(synthetic_set):
    reordered = synthetic_set.subset(np.arange(len(synthetic_set))[::-1])
    assert reordered.data_hash() == synthetic_set.data_hash()
    assert synthetic_set.subset(np.arange(10)).data_hash() != synthetic_set.data_hash()


def test_reads_one_run_per_sample_from_mlflow(tmp_path, rows):
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'store.db'}"
    client = MlflowClient(tracking_uri=uri)
    experiment = client.create_experiment("samples", artifact_location=(tmp_path / "a").as_uri())
    spec_fields = set(build_spec(model="Qwen/Qwen2.5-0.5B").model_dump())
    for row in rows[:2]:
        run = client.create_run(experiment)
        for key, value in row.items():
            if value is None:
                continue
            if key in spec_fields:
                client.log_param(run.info.run_id, key, value)
            elif isinstance(value, int | float) and not isinstance(value, bool):
                client.log_metric(run.info.run_id, key, value)
            else:
                client.set_tag(run.info.run_id, key, value)
        client.set_terminated(run.info.run_id)
    data, report = load_training_set([uri], experiment="samples")
    assert sorted(data.status) == ["ok", "oom"] and report.rows == 2
