"""The GPU pool against a fake NVML: spare = no other compute process and little memory used."""

from __future__ import annotations

import os
from types import SimpleNamespace

import pytest
from typer.testing import CliRunner

from vram_ml.agent import environment
from vram_ml.agent.gpu_pool import GpuPool, PoolError, parse_gpus
from vram_ml.cli import app
from vram_ml.cli.agent import parse_duration

GIB = 2**30


class FakeNvml:
    """Three GPUs: 0 idle, 1 with someone's process, 2 with 10 GiB used by an unseen process.
    Functions named in `refused` raise NVMLError, as some virtualised GPUs do."""

    class NVMLError(Exception):
        pass

    def __init__(self):
        self.used = {0: GIB // 2, 1: 30 * GIB, 2: 10 * GIB}
        self.processes = {0: [], 1: [SimpleNamespace(pid=4242, usedGpuMemory=30 * GIB)], 2: []}
        self.refused: set[str] = set()

    def __getattribute__(self, name):
        if name.startswith("nvml") and name in object.__getattribute__(self, "refused"):
            def refuse(*_):
                raise FakeNvml.NVMLError(f"{name}: Not Supported")
            return refuse
        return object.__getattribute__(self, name)

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


def test_nvml_errors_fall_back_to_device_memory(fake_nvml):
    """A virtualised GPU refusing per-process queries: no exception, 'used minus baseline'."""
    fake_nvml.refused = {"nvmlDeviceGetComputeRunningProcesses"}
    assert environment.compute_processes(1) == {}
    memory = environment.ProcessMemory(0)
    fake_nvml.used[0] += 2 * GIB
    assert memory.read() == 2 * GIB and not memory.per_process
    assert [g.index for g in GpuPool(max_used_bytes=16 * GIB).choose()] == [0, 2]
    fake_nvml.refused = {"nvmlDeviceGetMemoryInfo", "nvmlSystemGetDriverVersion"}
    assert environment.device_used_bytes(0) is None and environment.ProcessMemory(0).read() is None
    assert environment.gpu_device_facts(0) == {
        "device_name": "NVIDIA H100 80GB HBM3", "device_total_bytes": None, "driver_version": ""}
    with pytest.raises(PoolError, match="gpu0: NVML does not report its memory"):
        GpuPool().choose()


class ChildrenOnGpu(FakeNvml):
    """One GPU on which every live child of this process holds a CUDA context, as a warm child
    does once its preload (peft -> bitsandbytes) has touched CUDA, and so does this process (the
    agent's own, as in a pytest process that ran a CUDA test before the agent's)."""

    def nvmlDeviceGetCount(self):
        return 1

    def nvmlDeviceGetComputeRunningProcesses(self, handle):
        import psutil

        children = [c for c in psutil.Process().children()
                    if c.status() != psutil.STATUS_ZOMBIE]
        pids = [os.getpid(), *(c.pid for c in children)]
        return [SimpleNamespace(pid=pid, usedGpuMemory=GIB // 2) for pid in pids]


@pytest.mark.parametrize("refused", [(), ("nvmlDeviceGetComputeRunningProcesses",)],
                         ids=["per-process", "per-process-refused"])
def test_agent_counts_warm_children_as_its_own(monkeypatch, tmp_path, capfd, write_plan,
                                               many_tiny_specs, hooks, refused):
    from vram_ml.agent import runner

    fake = ChildrenOnGpu()
    fake.refused = set(refused)
    monkeypatch.setattr(environment, "nvml", lambda: fake)
    monkeypatch.setattr(runner, "WAIT_BUSY_S", 0.05)
    hooks({"*": "stub"})
    events = []
    options = runner.AgentOptions(store_dir=tmp_path / "store", tracking_uri="", backend="cuda",
                                  plan_file=write_plan(many_tiny_specs(3)), budget_s=60,
                                  handle_signals=False)
    summary = runner.run_agent(options, lambda kind, **data: events.append((kind, data)))
    waits = [data["reason"] for kind, data in events if kind == "waiting"]
    assert waits == [] and summary.stored == 3 and summary.status["ok"] == 3
    out, err = capfd.readouterr()
    assert "Traceback" not in out + err
