"""Done-when test: `vram-ml agent run --backend cpu` on a tiny plan against a temporary SQLite
MLflow store, then `dataset export`: rows, params, metrics and tags checked. The real recipe runs
(warm children, tiny models); one spec gets the simulated OOM through the real step."""

from __future__ import annotations

import csv
import json

from typer.testing import CliRunner

from vram_ml.cli import app
from vram_ml.sample import COLUMNS
from vram_ml.spec import build_spec

runner = CliRunner()


def test_agent_run_then_export(tmp_path, tiny_specs, write_plan, hooks):
    specs = [build_spec(**s) for s in tiny_specs]
    hooks({specs[2].spec_id: "oom"}, preload=True)
    plan, store, uri = write_plan(tiny_specs), tmp_path / "store", f"sqlite:///{tmp_path}/ml.db"
    common = ["--store", str(store), "--tracking-uri", uri]

    result = runner.invoke(app, ["agent", "run", "--backend", "cpu", "--plan", str(plan),
                                 "--steps", "2", "--json", *common])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["planned"] == 3 and summary["stored"] == 3 and summary["logged"] == 3
    assert summary["status"] == {"ok": 2, "oom": 1, "error": 0}
    assert summary["tracking_error"] == ""

    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("vram-ml-samples")
    found = client.search_runs([experiment.experiment_id])
    runs = {run.data.params["spec_id"]: run for run in found}
    assert set(runs) == {spec.spec_id for spec in specs}
    for spec in specs:
        run = runs[spec.spec_id]
        params, metrics, tags = run.data.params, run.data.metrics, run.data.tags
        assert params["model"] == spec.model and params["method"] == spec.method
        assert int(params["batch_size"]) == spec.batch_size
        assert json.loads(params["model_overrides"]) == dict(spec.model_overrides)
        assert tags["backend"] == "cpu" and tags["device_name"] == "cpu"
        assert tags["torch_version"] and tags["installed_transformers_version"]
        assert tags["installed_peft_version"] and params["framework"] == spec.framework
        assert tags["agent_version"] and tags["host"] and tags["created_at"]
        assert tags["sample_key"].startswith(spec.spec_id)
        assert metrics["peak_vram_bytes"] >= metrics["peak_reserved_bytes"] > 0
        assert metrics["setup_peak_reserved_bytes"] > 0
        expected = "oom" if spec is specs[2] else "ok"
        assert tags["status"] == expected
        if expected == "ok":
            assert metrics["steps"] == 2 and metrics["step_seconds"] > 0
        else:
            assert "simulated out of memory" in tags["message"]

    output = tmp_path / "datasets" / "samples.csv"
    result = runner.invoke(app, ["dataset", "export", "--output", str(output), "--json", *common])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["rows"] == 0  # cpu samples are not training data
    result = runner.invoke(app, ["dataset", "export", "--output", str(output),
                                 "--include-backend", "cpu", "--json", *common])
    assert json.loads(result.stdout)["rows"] == 3
    with open(output) as handle:
        reader = csv.DictReader(handle)
        rows = list(reader)
    assert tuple(reader.fieldnames) == COLUMNS
    assert {row["mlflow_run_id"] for row in rows} == {run.info.run_id for run in runs.values()}
    assert {row["status"] for row in rows} == {"ok", "oom"}
    datacard = (output.parent / "DATACARD.md").read_text()
    assert "3 samples" in datacard and "`peak_vram_bytes`" in datacard
    result = runner.invoke(app, ["dataset", "validate", str(output)])
    assert result.exit_code == 0 and "3 valid, 0 problem(s)" in result.output

    again = runner.invoke(app, ["agent", "run", "--backend", "cpu", "--plan", str(plan),
                                "--json", *common])
    assert json.loads(again.stdout)["planned"] == 0  # resumes: everything is stored
    assert len(client.search_runs([experiment.experiment_id])) == 3
    status = runner.invoke(app, ["agent", "status", "--json", *common])
    assert json.loads(status.stdout)["pending"] == 0
