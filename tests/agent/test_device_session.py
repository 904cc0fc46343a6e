"""scripts/device_session.sh rehearsed on the CPU: `run` (BACKEND=cpu, stub samples) leaves the
session folder a GPU run would, and `import` brings it into a store and a dataset file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).parents[2] / "scripts" / "device_session.sh"


def test_session_rehearsal_then_import(tmp_path, many_tiny_specs, write_plan, hooks):
    hooks({"*": "stub"})
    plan, out = write_plan(many_tiny_specs(3)), tmp_path / "out"
    env = {**os.environ, "BACKEND": "cpu", "PYTHON": sys.executable, "SKIP_WHEELS": "1",
           "PLAN": str(plan), "SESSION_SECONDS": "240", "GPU_TESTS_SECONDS": "120",
           "REPEAT": "2"}
    run = subprocess.run(["bash", str(SCRIPT), "run", str(out)], env=env, capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert {p.name for p in out.iterdir()} == {
        "samples.jsonl", "repeat.jsonl", "summary.json", "versions.json", "session.log",
        "child_logs.tar.gz"}
    assert len((out / "samples.jsonl").read_text().splitlines()) == 3
    assert len((out / "repeat.jsonl").read_text().splitlines()) == 2
    assert json.loads((out / "summary.json").read_text())["stored"] == 3
    assert json.loads((out / "versions.json").read_text())["torch"]
    log = (out / "session.log").read_text()
    assert "gpu tests exit code: 0" in log and "agent exit code: 0" in log

    dataset = tmp_path / "datasets" / "samples.csv"
    env = {**os.environ, "PYTHON": sys.executable, "DATASET": str(dataset),
           "INCLUDE_BACKEND": "cpu", "STORE": str(tmp_path / "store")}
    imported = subprocess.run(["bash", str(SCRIPT), "import", str(out)], env=env,
                              capture_output=True, text=True, timeout=300)
    assert imported.returncode == 0, imported.stdout[-3000:] + imported.stderr[-3000:]
    assert "3/3 valid; 3 new in the store, 3 logged to MLflow" in imported.stdout
    assert "repeatability: max spread 0.00% over 2 spec(s)" in imported.stdout
    assert len(dataset.read_text().splitlines()) == 4  # header + 3
    assert (dataset.parent / "DATACARD.md").exists()


def test_usage():
    result = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True)
    assert result.returncode == 2 and "usage" in result.stderr
