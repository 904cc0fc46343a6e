"""The GPU pool against a fake NVML: spare = no other compute process and little memory used."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from typer.testing import CliRunner

from vram_ml.agent import environment
from vram_ml.agent.gpu_pool import GpuPool, PoolError, parse_gpus
from vram_ml.cli import app
from vram_ml.cli.agent import parse_duration

GIB = 2**30


class FakeNvml:
    """Three GPUs: 0 idle, 1 with someone's process, 2 with 10 GiB used by an unseen process."""

    def __init__(self):
        self.used = {0: GIB // 2, 1: 30 * GIB, 2: 10 * GIB}
        self.processes = {0: [], 1: [SimpleNamespace(pid=4242, usedGpuMemory=30 * GIB)], 2: []}

    def nvmlDeviceGetCount(self):
        return 3

    def nvmlDeviceGetHandleByIndex(self, index):
        return index

    def nvmlDeviceGetName(self, handle):
        return b"NVIDIA H100 80GB HBM3"

    def nvmlDeviceGetMemoryInfo(self, handle):
        return SimpleNamespace(total=80 * GIB, used=self.used[handle])

    def nvmlDeviceGetComputeRunningProcesses(self, handle):
        return self.processes[handle]

    def nvmlSystemGetDriverVersion(self):
        return "580.65"


@pytest.fixture
def fake_nvml(monkeypatch):
    fake = FakeNvml()
    monkeypatch.setattr(environment, "nvml", lambda: fake)
    return fake


def test_auto_takes_only_spare_gpus(fake_nvml):
    chosen = GpuPool().choose()
    assert [g.index for g in chosen] == [0]
    assert chosen[0].name == "NVIDIA H100 80GB HBM3" and chosen[0].total_bytes == 80 * GIB
    assert GpuPool(max_used_bytes=16 * GIB).choose()[1].index == 2
    with pytest.raises(PoolError, match="gpu1: 1 other compute process"):
        GpuPool([1]).choose()
    with pytest.raises(PoolError, match="no GPU with index 7"):
        GpuPool([7]).choose()


def test_recheck_between_samples_ignores_own_children(fake_nvml):
    pool = GpuPool()
    fake_nvml.processes[0] = [SimpleNamespace(pid=777, usedGpuMemory=GIB // 4)]
    assert pool.is_spare(0) == (False, "1 other compute process(es)")
    assert pool.is_spare(0, frozenset({777})) == (True, "")


def test_device_facts_and_process_memory(fake_nvml):
    facts = environment.gpu_device_facts(0)
    assert facts == {"device_name": "NVIDIA H100 80GB HBM3", "device_total_bytes": 80 * GIB,
                     "driver_version": "580.65"}
    memory = environment.ProcessMemory(0)  # our pid is not listed: device delta
    fake_nvml.used[0] += 3 * GIB
    assert memory.read() == 3 * GIB


def test_without_nvml(monkeypatch, tmp_path):
    monkeypatch.setattr(environment, "nvml", lambda: None)
    with pytest.raises(PoolError, match="no GPU visible"):
        GpuPool().choose()
    result = CliRunner().invoke(app, ["agent", "run", "--store", str(tmp_path)])
    assert result.exit_code == 2 and "no GPU visible to NVML" in result.output


def test_parsing():
    assert parse_gpus("auto") is None and parse_gpus("2,0,2") == [0, 2]
    with pytest.raises(PoolError):
        parse_gpus("first")
    assert parse_duration("8m") == 480 and parse_duration("1h30m") == 5400
    assert parse_duration("90") == 90 and parse_duration("2.5s") == 2.5
    with pytest.raises(ValueError):
        parse_duration("8 minutes")
