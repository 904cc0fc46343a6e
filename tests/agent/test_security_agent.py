"""Security of the agent's inputs (tests/test_security.py covers the code base at large): a plan
or space file is a small regular text file read with safe YAML / JSON only, a plan cannot make the
agent read anything but a model's config.json, and text from imported samples cannot steer MLflow
queries."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from vram_ml.agent.planner import MAX_PLAN_BYTES, PlanError, load_space, read_plan_file
from vram_ml.cli import app

runner = CliRunner()


def agent_run(tmp_path, *args: str) -> subprocess.CompletedProcess:
    """`vram-ml agent run --backend cpu ARGS` in a process of its own (a hang cannot hang us)."""
    return subprocess.run(
        [sys.executable, "-m", "vram_ml.cli", "agent", "run", "--backend", "cpu", "--no-mlflow",
         "--store", str(tmp_path / "store"), *args],
        capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("special", ["/dev/zero", "/dev/urandom", "/etc", "fifo"])
def test_a_plan_must_be_a_regular_file(tmp_path, special):
    if special == "fifo":
        special = str(tmp_path / "plan.fifo")
        os.mkfifo(special)  # reading it would block for ever
    done = agent_run(tmp_path, "--plan", special)
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines() == [f"error: plan: {special} is not a regular file"]
    with pytest.raises(PlanError, match="not a regular file"):
        load_space(special)


def test_a_huge_plan_is_refused_before_it_is_read(tmp_path):
    plan = tmp_path / "plan.yaml"
    with open(plan, "wb") as handle:
        handle.truncate(MAX_PLAN_BYTES + 1)  # sparse: no disk used
    with pytest.raises(PlanError, match="larger than"):
        read_plan_file(plan)


@pytest.mark.parametrize("model", ["/etc/passwd", "/etc/shadow", "../../../../etc/passwd",
                                   "/proc/self/environ"])
def test_a_plan_cannot_make_the_agent_read_other_files(tmp_path, model):
    plan = tmp_path / "plan.yaml"
    plan.write_text(f"- model: {model}\n  method: lora\n")
    result = runner.invoke(app, ["agent", "run", "--backend", "cpu", "--plan", str(plan),
                                 "--store", str(tmp_path / "store"), "--no-mlflow"])
    assert result.exit_code == 2
    assert result.output.count("\n") == 1 and "only a .json config file" in result.output
    assert "root:" not in result.output and "PATH=" not in result.output


def test_a_plan_config_json_outside_the_catalog_yields_only_numbers(tmp_path):
    secret = tmp_path / "config.json"
    secret.write_text('{"api_key": "hunter2"}')
    plan = tmp_path / "plan.yaml"
    plan.write_text(f"- model: {secret}\n")
    with pytest.raises(PlanError) as error:
        read_plan_file(plan)
    assert "hunter2" not in str(error.value) and "\n" not in str(error.value)


def test_yaml_tags_in_a_plan_or_space_execute_nothing(tmp_path):
    marker = tmp_path / "pwned"
    payload = f"!!python/object/apply:os.system ['touch {marker}']\n"
    for path, read in ((tmp_path / "plan.yaml", read_plan_file),
                       (tmp_path / "space.yaml", load_space)):
        path.write_text(payload)
        with pytest.raises(PlanError, match="not valid YAML"):
            read(path)
    assert not marker.exists()


def test_imported_text_cannot_steer_mlflow_queries(tmp_path, tiny_specs, make_sample):
    from vram_ml.agent.store import SampleStore

    store = SampleStore(tmp_path / "store", f"sqlite:///{tmp_path}/ml.db")
    honest = make_sample(tiny_specs[0])
    crafted = make_sample(tiny_specs[0], device="x' OR tags.backend != '")
    assert store.record(honest).outcome == "logged"
    recorded = store.record(crafted)  # same spec: a query built from text would match `honest`
    assert recorded.outcome == "logged" and recorded.run_id
    assert store.record(crafted).outcome == "present"
    runs = store.tracking.finished_runs()
    assert sorted(run.data.tags["device_name"] for run in runs) == \
        sorted([honest.provenance.device_name, crafted.provenance.device_name])
