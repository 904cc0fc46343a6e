"""Fixtures for the agent's tests: tiny specs (catalog models scaled down to 2 layers, hidden 64,
vocab 1000: real modules that train on the CPU in about a second), plan files, the child's
test hook (`VRAM_ML_AGENT_TEST_HOOK`, see agent/child.py: oom | error | sleep:S | exit:N | stub),
and a real shared tracking server: `tracking_server` starts PostgreSQL + `mlflow server`
(scripts/tracking_server.sh) once per session on free loopback ports and always stops it.

Without PostgreSQL (/usr/lib/postgresql/*/bin) the tests that need the server fail with a clear
message (.ci/run installs it); VRAM_ML_TESTS_WITHOUT_POSTGRES=1 skips them instead.

The fault and multi-agent tests add a line to a summary printed at the end of the run (no -s
needed): faults injected, samples expected, samples stored, duplicates.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).parents[2]
FIGURES = pytest.StashKey[list]()

TINY = {"num_hidden_layers": 2, "hidden_size": 64, "intermediate_size": 128,
        "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 1000}
TINY_QWEN = {**TINY, "bos_token_id": 1, "eos_token_id": 2}


@pytest.fixture
def tiny_specs() -> list[dict]:
    """Three small, different specs (lora fp32, full bf16 + sgd, freeze eager)."""
    return [
        {"model": "Qwen/Qwen2.5-0.5B", "model_overrides": TINY_QWEN, "method": "lora",
         "batch_size": 2, "seq_len": 32, "precision": "fp32"},
        {"model": "HuggingFaceTB/SmolLM2-135M", "model_overrides": TINY, "method": "full",
         "batch_size": 1, "seq_len": 16, "precision": "bf16", "optimizer": "sgd"},
        {"model": "HuggingFaceTB/SmolLM2-135M", "model_overrides": TINY, "method": "freeze",
         "freeze_trainable_layers": 1, "batch_size": 2, "seq_len": 16, "precision": "fp32",
         "attention": "eager", "gradient_checkpointing": False},
    ]


@pytest.fixture
def many_tiny_specs(tiny_specs) -> list[dict]:
    """n distinct cheap specs (for stub-hook runner tests): vary the batch size."""
    def make(n: int) -> list[dict]:
        return [{**tiny_specs[1], "batch_size": b} for b in range(1, n + 1)]
    return make


@pytest.fixture
def write_plan(tmp_path):
    def write(specs: list[dict], name: str = "plan.yaml") -> Path:
        path = tmp_path / name
        if name.endswith(".jsonl"):
            path.write_text("".join(json.dumps(s) + "\n" for s in specs))
        else:
            path.write_text(yaml.safe_dump(specs))
        return path
    return write


@pytest.fixture
def hooks(monkeypatch):
    """Set the child's test hook: hooks({spec_id or "*": "stub"}, preload=False)."""
    def set_hooks(mapping: dict[str, str], preload: bool = False) -> None:
        monkeypatch.setenv("VRAM_ML_AGENT_TEST_HOOK", json.dumps(mapping))
        monkeypatch.setenv("VRAM_ML_AGENT_PRELOAD", "1" if preload else "0")
    return set_hooks


@pytest.fixture
def make_sample():
    """make_sample(spec_fields, status="ok", torch_version=..., device=...) -> a cuda Sample with
    full provenance (made up: for schema and store tests only, never written to datasets/)."""
    from vram_ml.sample import Measurement, Provenance, Sample
    from vram_ml.spec import build_spec

    def make(spec_fields: dict, status: str = "ok", torch_version: str = "2.11.0",
             device: str = "NVIDIA H100 80GB HBM3") -> Sample:
        measurement = Measurement(status, "" if status == "ok" else "CUDA out of memory",
                                  peak_allocated_bytes=900, peak_reserved_bytes=1000,
                                  cuda_context_bytes=500, peak_vram_bytes=1500, steps=3,
                                  step_seconds=0.1)
        provenance = Provenance("cuda", "0.1.0", "2026-01-01T00:00:00+00:00", host="gpu-host",
                                device_name=device, device_total_bytes=80 * 2**30,
                                driver_version="580.1", cuda_version="13.0",
                                torch_version=torch_version,
                                installed_transformers_version="5.24.0",
                                installed_peft_version="0.21.2",
                                installed_bitsandbytes_version="0.50.2")
        return Sample(build_spec(**spec_fields), measurement, provenance)
    return make


# --- the shared tracking server -----------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class TrackingServer:
    """PostgreSQL + `mlflow server` started by scripts/tracking_server.sh in `directory`."""

    directory: Path
    pg_port: int
    mlflow_port: int

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.mlflow_port}"

    def _script(self, command: str, *ports: int) -> None:
        env = {**os.environ, "VRAM_ML_TRACKING_WORKERS": "1",
               "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}"}
        done = subprocess.run(
            ["bash", str(ROOT / "scripts" / "tracking_server.sh"), command, str(self.directory),
             *map(str, ports)], capture_output=True, text=True, env=env, timeout=180)
        if done.returncode != 0:
            log = self.directory / "mlflow.log"
            tail = log.read_text()[-2000:] if log.exists() else ""
            raise RuntimeError(f"tracking_server.sh {command}: {done.stderr.strip()}\n{tail}")

    def start(self) -> None:
        self._script("start", self.pg_port, self.mlflow_port)

    def stop(self) -> None:
        self._script("stop")

    def experiment(self) -> str:
        """A fresh experiment name: each test sees only its own samples and claims."""
        return f"vram-ml-test-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="session")
def tracking_server():
    """The shared tracking server for this test session (stopped at the end, always)."""
    if not list(Path("/usr/lib/postgresql").glob("*/bin/initdb")):
        message = ("PostgreSQL server binaries not found under /usr/lib/postgresql: install them "
                   "(apt-get install -y postgresql; .ci/run does) to run the shared tracking "
                   "server tests, or set VRAM_ML_TESTS_WITHOUT_POSTGRES=1 to skip them")
        if os.environ.get("VRAM_ML_TESTS_WITHOUT_POSTGRES") == "1":
            pytest.skip(message)
        pytest.fail(message, pytrace=False)
    # Not under pytest's private tmp folder: user postgres must be able to reach it.
    directory = Path(tempfile.mkdtemp(prefix="vram-ml-tracking-"))
    server = TrackingServer(directory, free_port(), free_port())
    try:
        server.start()
        yield server
    finally:
        try:
            server.stop()
        finally:
            shutil.rmtree(directory, ignore_errors=True)


# --- the summary figure ---------------------------------------------------------------------------


@pytest.fixture
def figure(request):
    """figure(scenario, faults=, expected=, stored=, duplicates=, **more): one summary line."""
    def add(scenario: str, faults: int, expected: int, stored: int, duplicates: int,
            **more: object) -> None:
        request.config.stash.setdefault(FIGURES, []).append(
            {"scenario": scenario, "faults": faults, "expected": expected, "stored": stored,
             "duplicates": duplicates, **more})
    return add


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    rows = config.stash.get(FIGURES, [])
    if not rows:
        return
    write = terminalreporter.write_line
    terminalreporter.section("agents: faults and exactly-once")
    write(f"{'scenario':44} {'faults':>6} {'expected':>8} {'stored':>6} {'dupl.':>5}  more")
    for row in rows:
        more = ", ".join(f"{k} {v}" for k, v in row.items()
                         if k not in ("scenario", "faults", "expected", "stored", "duplicates"))
        write(f"{row['scenario'][:44]:44} {row['faults']:>6} {row['expected']:>8} "
              f"{row['stored']:>6} {row['duplicates']:>5}  {more}")
    total = {key: sum(row[key] for row in rows)
             for key in ("faults", "expected", "stored", "duplicates")}
    write(f"{'total':44} {total['faults']:>6} {total['expected']:>8} {total['stored']:>6} "
          f"{total['duplicates']:>5}")


# --- agents against the server ------------------------------------------------------------------


class Agents:
    """Starts `vram-ml agent run --backend cpu` processes and reads what they stored."""

    def __init__(self, server: TrackingServer | None, directory: Path):
        self.server = server
        self.directory = directory
        self.experiment = server.experiment() if server else ""

    def start(self, store: Path, plan: Path, hooks: dict[str, str], *extra: str,
              mlflow: bool = True, **popen: object) -> subprocess.Popen:
        """One agent process; its --json summary on stdout, its progress in <store>.log."""
        env = {**os.environ, "VRAM_ML_AGENT_TEST_HOOK": json.dumps(hooks),
               "VRAM_ML_AGENT_PRELOAD": "0"}
        tracking = ["--tracking-uri", self.server.uri, "--experiment", self.experiment] \
            if mlflow and self.server else ["--no-mlflow"]
        log = open(f"{store}.log", "a")  # noqa: SIM115 - the child holds it; closed with it
        return subprocess.Popen(
            [sys.executable, "-m", "vram_ml.cli", "agent", "run", "--backend", "cpu", "--plan",
             str(plan), "--store", str(store), "--json", *tracking, *extra],
            stdout=subprocess.PIPE, stderr=log, text=True, env=env, **popen)

    @staticmethod
    def finish(agent: subprocess.Popen, timeout_s: float = 180) -> tuple[int, dict]:
        """Wait for an agent; (exit code, its --json summary or {})."""
        output = agent.communicate(timeout=timeout_s)[0]
        try:
            return agent.returncode, json.loads(output)
        except json.JSONDecodeError:
            return agent.returncode, {}

    def cli(self, *args: str, mlflow: bool = True) -> tuple[int, str]:
        """`vram-ml ARGS` in this process (against the server unless mlflow=False)."""
        from typer.testing import CliRunner

        from vram_ml.cli import app

        tracking = ["--tracking-uri", self.server.uri, "--experiment", self.experiment] \
            if mlflow and self.server else []
        result = CliRunner().invoke(app, [*args, *tracking])
        return result.exit_code, result.output

    def exported(self) -> dict[str, int]:
        """spec_id -> rows in `dataset export --source mlflow --include-backend cpu`, from a
        fresh store (so only what the tracking server holds counts)."""
        import csv
        from collections import Counter

        output = self.directory / f"export-{uuid.uuid4().hex[:6]}" / "samples.csv"
        code, text = self.cli("dataset", "export", "--source", "mlflow", "--include-backend",
                              "cpu", "--output", str(output), "--store",
                              str(self.directory / f"fresh-{uuid.uuid4().hex[:6]}"), "--json")
        assert code == 0, text
        with open(output) as handle:
            return dict(Counter(row["spec_id"] for row in csv.DictReader(handle)))

    def server_state(self) -> dict[str, object]:
        """Finished runs per sample_key, unfinished runs, and claims/markers still active."""
        from collections import Counter

        from mlflow.entities import ViewType
        from mlflow.tracking import MlflowClient

        client = MlflowClient(self.server.uri)
        experiment = client.get_experiment_by_name(self.experiment)
        runs = client.search_runs([experiment.experiment_id], "", ViewType.ACTIVE_ONLY, 5000)
        active = client.search_experiments(ViewType.ACTIVE_ONLY,
                                           filter_string=f"name LIKE '{self.experiment}/%'")
        return {"finished": Counter(run.data.tags["sample_key"] for run in runs
                                    if run.info.status == "FINISHED"),
                "unfinished": sum(run.info.status != "FINISHED" for run in runs),
                "active_claims": sorted(e.name for e in active)}


@pytest.fixture
def agents(tracking_server, tmp_path) -> Agents:
    """Agents against the session's tracking server, in a fresh experiment."""
    return Agents(tracking_server, tmp_path)


@pytest.fixture
def lone_agents(tmp_path) -> Agents:
    """Agents with the spool only (no tracking server needed)."""
    return Agents(None, tmp_path)


def running_pid(store: Path, spec_id: str, timeout_s: float = 60) -> int:
    """Wait until the agent on `store` measures `spec_id`; the child's pid."""
    import time

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            for slot in json.loads((store / "running.json").read_text())["slots"].values():
                if slot["spec_id"] == spec_id:
                    return slot["pid"]
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(0.05)
    raise AssertionError(f"{spec_id} never started on {store}")


@pytest.fixture
def wait_running():
    return running_pid
