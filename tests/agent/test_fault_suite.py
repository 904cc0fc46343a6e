"""Fault suite against the shared tracking server (PostgreSQL + `mlflow server`): nothing lost,
nothing stored twice, when the server stops mid-run, a worker or an agent is killed, an agent is
stopped by SIGTERM, the spool's disk is full or read-only, or a spool line is corrupt.

The default tier keeps the faults only this suite checks (the spool's disk full or read-only);
the scenarios whose behaviour the default tier already checks on a local store
(tests/agent/test_faults.py, test_store.py) run here with `-m slow`, against the shared server.

Agents are real `vram-ml agent run --backend cpu` processes; the child's test hook (`stub`,
`sleep:S`) keeps each sample short, since the recipe is not what these tests are about. Each test
adds a line to the summary printed at the end of the run.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest

from vram_ml.agent.runner import AgentOptions, run_agent
from vram_ml.agent.store import Spool
from vram_ml.spec import build_spec


def ids(raw: list[dict]) -> list[str]:
    return [build_spec(**spec).spec_id for spec in raw]


def spool_lines(store: Path) -> int:
    path = store / "spool.jsonl"
    return len(path.read_bytes().splitlines()) if path.exists() else 0


def wait_for(condition, timeout_s: float = 60, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def check_exactly_once(agents, spec_ids: list[str]) -> dict[str, int]:
    exported = agents.exported()
    assert exported == {spec_id: 1 for spec_id in spec_ids}, exported
    state = agents.server_state()
    assert sorted(state["finished"].values()) == [1] * len(spec_ids), state
    assert state["unfinished"] == 0 and state["active_claims"] == [], state
    return exported


def report(figure, scenario: str, faults: int, spec_ids: list[str], exported: dict[str, int],
           **more: object) -> None:
    figure(scenario, faults=faults, expected=len(spec_ids), stored=len(exported),
           duplicates=sum(exported.values()) - len(exported), **more)


def prefill(agents, store: Path, plan: Path, hooks, mlflow: bool = True) -> None:
    """Measure `plan` in this process (stub samples) so a store holds something to protect."""
    hooks({"*": "stub"})
    options = AgentOptions(store, backend="cpu", plan_file=plan, handle_signals=False,
                           tracking_uri=agents.server.uri if mlflow else "",
                           experiment=agents.experiment)
    assert run_agent(options).stored > 0


@pytest.mark.slow  # default tier: tests/agent/test_faults.py: MLflow unreachable, then back
def test_tracking_server_stopped_mid_run_and_restarted(agents, tracking_server, tmp_path,
                                                       write_plan, many_tiny_specs, figure):
    raw = many_tiny_specs(12)
    plan, stores = write_plan(raw), [tmp_path / "a", tmp_path / "b"]
    started = [agents.start(store, plan, {"*": "sleep:0.6;stub"}) for store in stores]
    try:
        wait_for(lambda: sum(map(spool_lines, stores)) >= 3, what="3 samples")
        tracking_server.stop()  # mid-run: the agents go on, into their spools
        before = sum(map(spool_lines, stores))
        wait_for(lambda: sum(map(spool_lines, stores)) >= before + 2, what="samples while down")
    finally:
        tracking_server.start()
    results = [agents.finish(agent) for agent in started]
    assert [code for code, _ in results] == [0, 0], results
    for store in stores:  # what the agents could not log: replayed (idempotent either way)
        code, output = agents.cli("agent", "sync", "--store", str(store), "--json")
        assert code == 0, output
    exported = check_exactly_once(agents, ids(raw))
    measured = sum(map(spool_lines, stores))
    assert measured >= len(raw)  # while the server was down, specs were measured unclaimed
    report(figure, "tracking server stopped mid-run, restarted", 1, ids(raw), exported,
           measured=measured)


@pytest.mark.slow  # default tier: tests/agent/test_faults.py: worker killed, agent killed
def test_worker_and_agent_killed_then_agent_restarted(agents, tmp_path, write_plan,
                                                      many_tiny_specs, wait_running, figure):
    raw = many_tiny_specs(6)
    spec_ids = ids(raw)
    plan, first, second = write_plan(raw), tmp_path / "first", tmp_path / "second"
    quick = "sleep:0.3;stub"
    agent = agents.start(first, plan, {spec_ids[0]: "sleep:60", spec_ids[1]: "sleep:60",
                                       "*": quick})
    os.kill(wait_running(first, spec_ids[0]), signal.SIGKILL)  # the worker measuring spec 0
    wait_running(first, spec_ids[1])
    other = agents.start(second, plan, {"*": quick})  # shares the plan: skips what `first` holds
    wait_for(lambda: spool_lines(second) >= 1, what="the second agent's first sample")
    agent.kill()  # the agent itself, holding its claim on spec 1
    agent.wait()
    code, summary = agents.finish(other)
    assert code == 0 and summary["claimed_elsewhere"] >= 1, summary
    restarted = agents.start(first, plan, {"*": quick})  # same store: takes its dead claim back
    code, summary = agents.finish(restarted)
    assert code == 0 and summary["stored"] == 1, summary
    exported = check_exactly_once(agents, spec_ids)
    killed = [s for s in Spool(first).samples() if s.spec_id == spec_ids[0]]
    assert "worker killed by SIGKILL" in killed[0].measurement.message
    report(figure, "worker SIGKILL; agent SIGKILL + restart", 2, spec_ids, exported, agents=2)


@pytest.mark.slow  # default tier: tests/agent/test_faults.py: SIGTERM then restart
def test_agent_sigterm_then_restart(agents, tmp_path, write_plan, many_tiny_specs,
                                    wait_running, figure):
    raw = many_tiny_specs(4)
    spec_ids = ids(raw)
    plan, store = write_plan(raw), tmp_path / "store"
    agent = agents.start(store, plan, {spec_ids[0]: "sleep:1.5;stub", "*": "stub"})
    wait_running(store, spec_ids[0])
    agent.send_signal(signal.SIGTERM)
    code, summary = agents.finish(agent)
    assert code == 0 and summary["stop_reason"] == "SIGTERM" and summary["stored"] == 1, summary
    assert agents.server_state()["active_claims"] == []  # the finished sample released its claim
    code, summary = agents.finish(agents.start(store, plan, {"*": "stub"}))
    assert code == 0 and summary["planned"] == 3 and summary["stored"] == 3, summary
    exported = check_exactly_once(agents, spec_ids)
    report(figure, "agent SIGTERM, restart", 1, spec_ids, exported)


def test_disk_full_spool_stops_with_a_clear_error_and_no_partial_row(
        agents, tmp_path, write_plan, many_tiny_specs, hooks, figure):
    raw = many_tiny_specs(3)
    spec_ids = ids(raw)
    store = tmp_path / "store"
    prefill(agents, store, write_plan(raw[:1], "first.yaml"), hooks)
    before = (store / "spool.jsonl").read_bytes()
    limit = len(before) + 200  # the next sample's line (~1.5 kB) cannot be written whole

    def file_size_limit() -> None:  # a write past it fails with EFBIG, like a full disk
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    plan = write_plan(raw)
    agent = agents.start(store, plan, {"*": "stub"}, preexec_fn=file_size_limit)
    code, summary = agents.finish(agent)
    errors = [line for line in Path(f"{store}.log").read_text().splitlines()
              if line.startswith("error:")]
    assert code == 1 and summary["spool_error"], summary
    assert len(errors) == 1 and "spool: cannot append to" in errors[0] \
        and "File too large" in errors[0], errors
    assert (store / "spool.jsonl").read_bytes() == before  # no partial row
    state = agents.server_state()
    assert sum(state["finished"].values()) == 1 and state["active_claims"] == [], state
    code, summary = agents.finish(agents.start(store, plan, {"*": "stub"}))  # space again
    assert code == 0 and summary["stored"] == 2, summary
    exported = check_exactly_once(agents, spec_ids)
    report(figure, "disk full (RLIMIT_FSIZE) under the spool", 1, spec_ids, exported)


def read_only(path: Path) -> bool:
    """Make `path` read-only for real (a read-only bind mount; root ignores permissions)."""
    if os.geteuid() != 0:
        path.chmod(0o555)
        return True
    bind = subprocess.run(["mount", "--bind", str(path), str(path)], capture_output=True)
    if bind.returncode != 0:
        return False
    remount = subprocess.run(["mount", "-o", "remount,bind,ro", str(path)], capture_output=True)
    if remount.returncode != 0:
        subprocess.run(["umount", str(path)], check=False)
        return False
    return True


def writable_again(path: Path) -> None:
    if os.geteuid() != 0:
        path.chmod(0o755)
    else:
        subprocess.run(["umount", str(path)], check=True)


def test_read_only_spool_directory_is_a_clear_error(agents, tmp_path, write_plan,
                                                    many_tiny_specs, hooks, figure):
    raw = many_tiny_specs(3)
    spec_ids = ids(raw)
    store, plan = tmp_path / "store", write_plan(raw)
    prefill(agents, store, write_plan(raw[:1], "first.yaml"), hooks)
    before = (store / "spool.jsonl").read_bytes()
    if not read_only(store):
        pytest.skip("a read-only mount is not permitted here (disk full is tested by RLIMIT)")
    try:
        code, summary = agents.finish(agents.start(store, plan, {"*": "stub"}))
        log = Path(f"{store}.log").read_text().strip().splitlines()
    finally:
        writable_again(store)
    assert code == 1 and summary == {}
    assert log[-1].startswith("error: spool: cannot write") and "Read-only" in log[-1], log
    assert "Traceback" not in "\n".join(log)
    assert (store / "spool.jsonl").read_bytes() == before
    code, summary = agents.finish(agents.start(store, plan, {"*": "stub"}))
    assert code == 0 and summary["stored"] == 2, summary
    exported = check_exactly_once(agents, spec_ids)
    report(figure, "read-only spool directory", 1, spec_ids, exported)


@pytest.mark.slow  # default tier: tests/agent/test_store.py: corrupt lines skipped
def test_corrupt_spool_lines_are_skipped_with_a_warning(agents, tmp_path, write_plan,
                                                        many_tiny_specs, hooks, figure):
    raw = many_tiny_specs(4)
    spec_ids = ids(raw)
    store, plan = tmp_path / "store", write_plan(raw)
    prefill(agents, store, write_plan(raw[:3], "first.yaml"), hooks, mlflow=False)
    lines = (store / "spool.jsonl").read_bytes().splitlines(keepends=True)
    damaged = json.loads(lines[1])["spec_id"]
    lines[1] = lines[1][: len(lines[1]) // 2] + b"\n"  # cut in half: not JSON any more
    lines.insert(2, b"\x00\xff not a sample \xfe\n")
    (store / "spool.jsonl").write_bytes(b"".join(lines))
    code, summary = agents.finish(agents.start(store, plan, {"*": "stub"}))
    assert code == 0, summary
    log = Path(f"{store}.log").read_text()
    assert "warning: spool" in log and "2 corrupt line(s) skipped" in log, log
    assert summary["planned"] == 2 and summary["stored"] == 2  # the damaged one and the 4th
    scan = Spool(store).scan()
    assert scan.corrupt_lines == 2 and Counter(s.spec_id for s in scan.samples)[damaged] == 1
    exported = check_exactly_once(agents, spec_ids)
    report(figure, "corrupt spool lines (2)", 1, spec_ids, exported)
