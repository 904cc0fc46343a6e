"""The spool: durable, deduplicated by sample_key, tolerant of torn and corrupt lines."""

from __future__ import annotations

import threading

import pytest

from vram_ml.agent.store import SampleStore, Spool, row_key, store_status
from vram_ml.sample import Sample


@pytest.fixture
def sample(tiny_specs, make_sample) -> Sample:
    return make_sample(tiny_specs[0])


def test_append_is_durable_and_deduplicated(tmp_path, sample, tiny_specs, make_sample):
    spool = Spool(tmp_path)
    assert spool.append(sample) is True
    assert spool.append(sample) is False  # same sample_key
    other_versions = make_sample(tiny_specs[0], torch_version="2.12.0")
    assert spool.append(other_versions) is True  # versions are part of the key
    reread = Spool(tmp_path).samples()
    assert [s.sample_key for s in reread] == [sample.sample_key, other_versions.sample_key]
    assert reread[0].measurement == sample.measurement
    assert reread[0].provenance == sample.provenance


def test_row_key_equals_sample_key(tmp_path, sample):
    spool = Spool(tmp_path)
    spool.append(sample)
    assert row_key(spool.path.read_text().splitlines()[0]) == sample.sample_key


def test_torn_tail_is_dropped_and_corrupt_lines_skipped(tmp_path, sample, tiny_specs, make_sample):
    spool = Spool(tmp_path)
    spool.append(sample)
    with open(spool.path, "a") as handle:
        handle.write("not json at all\n")
        handle.write('{"spec_id": "torn mid-wri')  # a crash mid-write: no newline
    scan = spool.scan()
    assert len(scan.samples) == 1 and scan.corrupt_lines == 1
    second = make_sample(tiny_specs[1])
    assert spool.append(second) is True
    assert "torn mid-wri" not in spool.path.read_text()
    assert [s.sample_key for s in spool.samples()] == [sample.sample_key, second.sample_key]


def test_concurrent_appends_never_double(tmp_path, tiny_specs, make_sample):
    samples = [make_sample(tiny_specs[i % 3]) for i in range(12)]  # 3 distinct keys, 4 copies
    spools = [Spool(tmp_path) for _ in range(4)]  # separate objects, one file, like 4 agents
    threads = [threading.Thread(target=lambda s=spool: [s.append(x) for x in samples])
               for spool in spools]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    lines = Spool(tmp_path).path.read_text().splitlines()
    assert len(lines) == 3


def test_spool_only_store_records_without_mlflow(tmp_path, sample):
    store = SampleStore(tmp_path, tracking_uri="")
    recorded = store.record(sample)
    assert recorded.new and recorded.run_id == "" and recorded.tracking_error == ""
    status = store_status(store)
    assert status["samples"] == 1 and status["status"] == {"ok": 1}
    assert status["tracking_uri"] == "" and status["running"] == {}
