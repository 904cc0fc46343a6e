"""Fault tests: every planned spec ends as exactly one sample — none lost, none doubled — when a
worker is killed mid-sample, the agent is killed or signalled, or MLflow is down then back.

The children's test hook (agent/child.py) makes samples hang (`sleep:S`) or finish at once
(`stub`) so these tests exercise the agent's bookkeeping in seconds; the real recipe's OOM path
is in test_end_to_end.py.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

from typer.testing import CliRunner

from vram_ml.agent.runner import AgentOptions, run_agent
from vram_ml.agent.store import SampleStore, Spool
from vram_ml.agent.tracking import sample_to_run
from vram_ml.cli import app
from vram_ml.spec import build_spec

runner = CliRunner()


def spool_keys(store: Path) -> list[str]:
    """sample_keys of every line in the spool (duplicates would show up here)."""
    lines = (store / "spool.jsonl").read_text().splitlines()
    return [json.loads(line)["spec_id"] for line in lines]


def assert_exactly_once(store: Path, specs) -> None:
    counts = Counter(spool_keys(store))
    assert counts == {spec.spec_id: 1 for spec in specs}, counts


def start_agent(store: Path, plan: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "vram_ml.cli", "agent", "run", "--backend", "cpu", "--plan",
         str(plan), "--store", str(store), "--no-mlflow", *extra],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )


def wait_running(store: Path, spec_id: str, timeout_s: float = 60) -> int:
    """Wait until the agent reports `spec_id` running; returns the child's pid."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            slots = json.loads((store / "running.json").read_text())["slots"]
            for slot in slots.values():
                if slot["spec_id"] == spec_id:
                    return slot["pid"]
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(0.1)
    raise AssertionError(f"{spec_id} never started")


def gone(pid: int, timeout_s: float = 10) -> bool:
    """The process has exited (a zombie waiting for init to reap it counts as gone)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError):
            return True
        if state in ("Z", "X"):
            return True
        time.sleep(0.1)
    return False


def test_worker_killed_mid_sample(tmp_path, many_tiny_specs, write_plan, hooks):
    raw = many_tiny_specs(3)
    specs = [build_spec(**s) for s in raw]
    hooks({specs[0].spec_id: "sleep:60", "*": "stub"})
    store = tmp_path / "store"

    def kill_first(kind, **data):
        if kind == "started" and data["spec"].spec_id == specs[0].spec_id:
            threading.Timer(0.5, os.kill, (data["pid"], signal.SIGKILL)).start()

    options = AgentOptions(store, tracking_uri="", backend="cpu", plan_file=write_plan(raw))
    summary = run_agent(options, kill_first)
    assert summary.planned == 3 and summary.stored == 3 and summary.duplicates == 0
    samples = {s.spec_id: s for s in Spool(store).samples()}
    assert samples[specs[0].spec_id].measurement.status == "error"
    assert "worker killed by SIGKILL" in samples[specs[0].spec_id].measurement.message
    assert run_agent(options).planned == 0  # a restart finds nothing left
    assert_exactly_once(store, specs)


def test_agent_killed_mid_sample_resumes(tmp_path, many_tiny_specs, write_plan, hooks):
    raw = many_tiny_specs(3)
    specs = [build_spec(**s) for s in raw]
    hooks({specs[0].spec_id: "sleep:60", "*": "stub"})
    store, plan = tmp_path / "store", write_plan(raw)
    agent = start_agent(store, plan)
    child = wait_running(store, specs[0].spec_id)
    agent.kill()  # SIGKILL: no handler, no clean-up
    agent.wait()
    assert gone(child), "the child outlived its agent"
    assert not (store / "spool.jsonl").exists()
    hooks({"*": "stub"})
    agent = start_agent(store, plan)
    assert agent.wait(timeout=120) == 0, agent.stdout.read()
    assert_exactly_once(store, specs)


def test_sigterm_finishes_the_current_sample_then_restart_resumes(
        tmp_path, many_tiny_specs, write_plan, hooks):
    raw = many_tiny_specs(3)
    specs = [build_spec(**s) for s in raw]
    hooks({specs[0].spec_id: "sleep:2;stub", "*": "stub"})
    store, plan = tmp_path / "store", write_plan(raw)
    agent = start_agent(store, plan)
    wait_running(store, specs[0].spec_id)
    agent.send_signal(signal.SIGTERM)
    output = agent.communicate(timeout=120)[0]
    assert agent.returncode == 0, output
    assert "stopped: SIGTERM" in output.replace("\n", " ")
    assert spool_keys(store) == [specs[0].spec_id]  # finished and stored, nothing else started
    agent = start_agent(store, plan)
    assert agent.wait(timeout=120) == 0
    assert_exactly_once(store, specs)


def test_second_signal_aborts_without_a_sample(tmp_path, many_tiny_specs, write_plan, hooks):
    raw = many_tiny_specs(2)
    specs = [build_spec(**s) for s in raw]
    hooks({specs[0].spec_id: "sleep:60", "*": "stub"})
    store, plan = tmp_path / "store", write_plan(raw)
    agent = start_agent(store, plan)
    child = wait_running(store, specs[0].spec_id)
    agent.send_signal(signal.SIGINT)
    time.sleep(0.5)
    agent.send_signal(signal.SIGINT)
    output = agent.communicate(timeout=30)[0]
    assert agent.returncode == 0 and "aborted" in output, output
    assert gone(child)
    assert not (store / "spool.jsonl").exists()  # the aborted spec stays planned
    hooks({"*": "stub"})
    assert start_agent(store, plan).wait(timeout=120) == 0
    assert_exactly_once(store, specs)


def test_mlflow_unreachable_then_back(tmp_path, many_tiny_specs, write_plan, hooks):
    raw = many_tiny_specs(3)
    specs = [build_spec(**s) for s in raw]
    hooks({"*": "stub"})
    store, plan = tmp_path / "store", write_plan(raw)
    later = tmp_path / "not-yet"  # a file where MLflow's folder must be: SQLite cannot open
    later.write_text("in the way")
    common = ["--store", str(store), "--tracking-uri", f"sqlite:///{later}/mlflow.db"]
    result = runner.invoke(app, ["agent", "run", "--backend", "cpu", "--plan", str(plan),
                                 "--json", *common])
    summary = json.loads(result.stdout)
    assert summary["stored"] == 3 and summary["logged"] == 0 and summary["tracking_error"]
    status = json.loads(runner.invoke(app, ["agent", "status", "--json", *common]).stdout)
    # status only looks: a SQLite store that is not there is not created, its samples pending
    assert status["samples"] == 3 and status["pending"] == 3
    assert status["tracking_uri"].endswith("(not created yet)") and not later.is_dir()

    later.unlink()  # MLflow is back
    store_object = SampleStore(store, f"sqlite:///{later}/mlflow.db")
    store_object.tracking.check()
    crashed = store_object.tracking._client.create_run(  # a crash mid-logging: unfinished run
        store_object.tracking._experiment_id,  # (created with the tags a sample's run starts with)
        tags=sample_to_run(Spool(store).samples()[0])[2])
    first = json.loads(runner.invoke(app, ["agent", "sync", "--json", *common]).stdout)
    assert first == {"spooled": 3, "already": 0, "logged": 3, "elsewhere": 0, "corrupt_lines": 0}
    second = json.loads(runner.invoke(app, ["agent", "sync", "--json", *common]).stdout)
    assert second == {"spooled": 3, "already": 3, "logged": 0, "elsewhere": 0, "corrupt_lines": 0}
    again = json.loads(runner.invoke(app, ["agent", "run", "--backend", "cpu", "--plan",
                                           str(plan), "--json", *common]).stdout)
    assert again["planned"] == 0
    runs = store_object.tracking.finished_runs()
    assert sorted(run.data.params["spec_id"] for run in runs) == sorted(s.spec_id for s in specs)
    assert store_object.tracking._client.get_run(crashed.info.run_id).info.lifecycle_stage \
        == "deleted"
    assert_exactly_once(store, specs)


def test_unreachable_server_fails_fast_and_is_not_retried_per_sample(tmp_path, monkeypatch,
                                                                      tiny_specs):
    import socket

    from vram_ml.agent.worker import Slot, provenance
    from vram_ml.sample import Measurement, Sample

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    store = SampleStore(tmp_path, f"http://127.0.0.1:{port}", retry_s=60)
    samples = [Sample(build_spec(**s), Measurement("ok", peak_reserved_bytes=1,
                                                   cuda_context_bytes=0, peak_vram_bytes=1),
                      provenance(Slot("cpu"))) for s in tiny_specs]
    start = time.monotonic()
    first = store.record(samples[0])
    assert first.new and not first.run_id and "127.0.0.1" in first.tracking_error
    assert time.monotonic() - start < 20
    start = time.monotonic()
    assert all(store.record(s).new for s in samples[1:])
    assert time.monotonic() - start < 1  # inside retry_s: spool only, no new timeout
    assert len(Spool(tmp_path).samples()) == 3


def test_status_of_an_unreachable_server_is_one_line_and_creates_nothing(tmp_path):
    import socket

    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    store = tmp_path / "never-created"
    for command in (["agent", "status"], ["agent", "status", "--json"], ["agent", "sync"],
                    ["dataset", "export", "--output", str(tmp_path / "out.csv")]):
        result = runner.invoke(app, [*command, "--store", str(store), "--tracking-uri",
                                     f"http://127.0.0.1:{port}"])
        assert result.exit_code == 1 and isinstance(result.exception, SystemExit), command
        assert result.stderr.strip() == (
            f"error: MLflow at http://127.0.0.1:{port}: not reachable (Connection refused)")
        if command[1] == "status":
            assert not store.exists()  # status looks, never creates
    fresh = tmp_path / "fresh"
    status = runner.invoke(app, ["agent", "status", "--store", str(fresh)])
    assert status.exit_code == 0 and "not created yet" in status.stdout
    assert not fresh.exists()
