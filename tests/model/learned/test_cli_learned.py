"""predict, fit, train and evaluate as a user meets them (typer's CliRunner)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from vram_ml.cli import app
from vram_ml.model.learned.estimator import ENV_ARTIFACT

runner = CliRunner()
QWEN = [
    "--model",
    "Qwen/Qwen2.5-1.5B",
    "--method",
    "lora",
    "--batch-size",
    "2",
    "--seq-len",
    "1024",
    "--precision",
    "bf16",
]
JSON_KEYS = {
    "peak_vram_bytes",
    "upper_vram_bytes",
    "peak_allocated_bytes",
    "peak_reserved_bytes",
    "breakdown",
    "estimator",
    "fallback_reason",
    "cards",
    "spec_id",
}


@pytest.fixture(autouse=True)
def no_model_from_the_environment(monkeypatch):
    monkeypatch.delenv(ENV_ARTIFACT, raising=False)


def test_predict_json_without_a_model_says_the_analytical_estimator_answered():
    result = runner.invoke(app, ["predict", *QWEN, "--json"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert JSON_KEYS <= set(payload)
    assert payload["estimator"] == "analytical" and "no learned model" in payload["fallback_reason"]
    assert [card["gpu_memory_gib"] for card in payload["cards"]] == [24, 40, 48, 80]
    assert payload["upper_basis"].startswith("assumed margin")
    assert set(payload["beside"]) == {"seed-formula"}


def test_predict_table_with_a_model(artifact_dir):
    result = runner.invoke(
        app,
        [
            "predict",
            *QWEN,
            "--artifact",
            str(artifact_dir),
            "--gpu-memory",
            "12",
            "--gpu-memory",
            "80",
        ],
    )
    assert result.exit_code == 0, result.output
    output = result.stdout
    assert "answered by: learned" in output and "Fallback" not in output
    for text in (
        "learned",
        "analytical",
        "seed-formula",
        "upper bound",
        "learned correction",
        "12 GiB card",
        "80 GiB card",
        "synthetic",
    ):
        assert text in output, text
    assert "24 GiB card" not in output


def test_predict_table_without_a_model_shows_the_fallback_line():
    result = runner.invoke(app, ["predict", *QWEN])
    assert result.exit_code == 0, result.output
    assert "Fallback: no learned model is bundled" in result.stdout
    assert "answered by: analytical" in result.stdout and "24 GiB card" in result.stdout
    assert "(assumed margin: peak + 15%" in " ".join(result.stdout.split())  # said, not implied
    assert "GB card" not in result.stdout  # one unit on screen: GiB


def test_predict_json_with_a_model(artifact_dir):
    result = runner.invoke(app, ["predict", *QWEN, "--artifact", str(artifact_dir), "--json"])
    payload = json.loads(result.stdout)
    assert payload["estimator"] == "learned" and payload["fallback_reason"] is None
    assert payload["peak_vram_bytes"] <= payload["upper_vram_bytes"]
    assert set(payload["beside"]) == {"analytical", "seed-formula"}


def test_fit_json_and_table(artifact_dir):
    args = [
        "fit",
        *QWEN,
        "--gpu-memory",
        "24",
        "--target-batch",
        "64",
        "--artifact",
        str(artifact_dir),
    ]
    result = runner.invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload["estimator"] == "learned" and payload["target_effective_batch"] == 64
    assert payload["max_batch_size"] >= 1  # a 1.5B LoRA fits 24 GiB at some batch
    assert payload["batch_size"] * payload["gradient_accumulation"] == 64
    table = runner.invoke(app, args)
    assert "largest batch size that fits" in table.stdout and "24 GiB card" in table.stdout


def test_train_writes_an_artifact_and_warns_it_is_synthetic(tmp_path):
    output = tmp_path / "model"
    result = runner.invoke(
        app,
        [
            "train",
            "--synthetic",
            "120",
            "--output",
            str(output),
            "--no-mlflow",
            "--n-estimators",
            "30",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "SYNTHETIC DATA" in result.stderr
    payload = json.loads(result.stdout)
    assert payload["data"]["backends"] == {"synthetic": 120} and payload["mlflow_run_id"] is None
    assert (output / "metadata.json").is_file() and (output / "upper.json").is_file()
    predicted = runner.invoke(app, ["predict", *QWEN, "--artifact", str(output), "--json"])
    assert json.loads(predicted.stdout)["estimator"] == "learned"


def test_train_refuses_to_bundle_synthetic_data():
    result = runner.invoke(
        app, ["train", "--synthetic", "40", "--no-mlflow", "--n-estimators", "5"]
    )
    assert result.exit_code == 2 and "only real GPU measurements" in result.stderr


def test_train_and_evaluate_refuse_data_without_measurements(tmp_path):
    for command in ("train", "evaluate"):
        result = runner.invoke(app, [command, "--data", str(tmp_path)])
        assert result.exit_code == 2, result.output
        assert "no measured peak (backend cuda or published)" in result.stderr


def test_evaluate_writes_report_and_plots(tmp_path):
    result = runner.invoke(
        app,
        [
            "evaluate",
            "--synthetic",
            "100",
            "--splits",
            "source,size",
            "--estimators",
            "seed-formula,analytical,learned",
            "--output",
            str(tmp_path),
        ],
    )
    assert result.exit_code == 0, result.output
    for text in ("SYNTHETIC DATA", "split: source", "split: size", "learned", "p90%",
                 "Bundle decision"):
        assert text in result.stdout, text
    report = json.loads((tmp_path / "report.json").read_text())
    assert set(report["splits"]) == {"source", "size"}
    assert (tmp_path / "predicted_vs_measured_size_peak.png").is_file()
    assert (tmp_path / "error_by_family.png").is_file()


@pytest.mark.parametrize("command", [
    ["train", "--synthetic", "40", "--no-mlflow", "--n-estimators", "2"],
    ["evaluate", "--synthetic", "40", "--estimators", "analytical", "--splits", "random"],
])
def test_unwritable_output_folders_fail_in_one_line(tmp_path, command):
    (tmp_path / "a_file").write_text("not a folder")
    for output in ("/proc/vram-ml-test", str(tmp_path / "a_file" / "model"),
                   str(tmp_path / "a_file")):
        result = runner.invoke(app, [*command, "--output", output])
        assert result.exit_code != 0 and isinstance(result.exception, SystemExit), result.output
        lines = [line for line in result.stderr.splitlines() if not line.startswith("WARNING")]
        assert len(lines) == 1 and lines[0].startswith("error: output: "), result.stderr


def test_predict_and_fit_import_no_heavy_library(artifact_dir):
    code = (
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "from vram_ml.cli import app\n"
        f"artifact = {str(artifact_dir)!r}\n"
        "for command in ('predict', 'fit'):\n"
        "    r = CliRunner().invoke(app, [command, '--artifact', artifact, '--json'])\n"
        "    assert r.exit_code == 0, r.output\n"
        "    assert '\"learned\"' in r.stdout\n"
        "heavy = [m for m in ('torch', 'transformers', 'mlflow', 'xgboost', 'sklearn', 'pandas',\n"
        "                     'matplotlib') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
