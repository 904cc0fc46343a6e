"""The CLI as a user meets it: help everywhere, documented, one-line errors, --json."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import click
import pytest
import typer
from typer.testing import CliRunner

from vram_ml.cli import app

runner = CliRunner()
README = (Path(__file__).parents[1] / "README.md").read_text()
ASSETS = Path(__file__).parent / "assets"


def _commands(group: click.Group, prefix: tuple[str, ...] = ()):
    for name, command in group.commands.items():
        path = (*prefix, name)
        if isinstance(command, click.Group):
            yield from _commands(command, path)
        else:
            yield path, command


ALL_COMMANDS = list(_commands(typer.main.get_command(app)))


def test_there_are_commands():
    names = {" ".join(path) for path, _ in ALL_COMMANDS}
    assert {"estimate", "catalog"} <= names


@pytest.mark.parametrize("path,command", ALL_COMMANDS, ids=[" ".join(p) for p, _ in ALL_COMMANDS])
def test_every_command_has_help_with_an_example_and_is_documented(path, command):
    assert command.help and "Example: vram-ml" in command.help, f"{path}: help needs an example"
    assert f"vram-ml {' '.join(path)}" in README, f"README does not document {path}"
    result = runner.invoke(app, [*path, "--help"])
    assert result.exit_code == 0


def test_estimate_json_from_yaml_and_flags_agree(assets):
    from_yaml = runner.invoke(
        app, ["estimate", "--config", str(assets / "llamafactory_llama_lora_flags.yaml"), "--json"]
    )
    assert from_yaml.exit_code == 0, from_yaml.output
    payload = json.loads(from_yaml.output)
    names = [e["estimator"] for e in payload["estimates"]]
    assert names == ["seed-formula", "analytical"]
    for estimate in payload["estimates"]:
        assert estimate["peak_vram_bytes"] > 2**30
        assert estimate["breakdown"]["weights"] > 0
    from_flags = runner.invoke(
        app,
        [
            "estimate",
            "--model",
            "meta-llama/Meta-Llama-3-8B-Instruct",
            "--lora-rank",
            "8",
            "--lora-target",
            "q_proj,v_proj",
            "--batch-size",
            "2",
            "--seq-len",
            "1024",
            "--precision",
            "bf16",
            "--attention",
            "sdpa",
            "--no-gradient-checkpointing",
            "--json",
        ],
    )
    assert from_flags.exit_code == 0, from_flags.output
    assert json.loads(from_flags.output)["spec_id"] == payload["spec_id"]


def test_estimate_table_echoes_assumptions():
    result = runner.invoke(app, ["estimate", "--model", "meta-llama/Meta-Llama-3-8B"])
    assert result.exit_code == 0, result.output
    assert "assumed:" in result.output and "analytical" in result.output


@pytest.mark.parametrize(
    "args",
    [
        ["estimate", "--model", "nobody/nothing"],
        ["estimate", "--model", "meta-llama/Meta-Llama-3-8B", "--lora-rank", "0"],
        [
            "estimate",
            "--model",
            "meta-llama/Meta-Llama-3-8B",
            "--method",
            "qlora",
            "--quant-bits",
            "3",
        ],
        ["estimate", "--config", "/no/such/train.yaml"],
        ["estimate", "--model", "meta-llama/Meta-Llama-3-8B", "--override", "num_hidden_layers"],
        ["estimate", "--model", "meta-llama/Meta-Llama-3-8B", "--estimators", "oracle"],
        ["catalog", "--family", "no-such-family"],
        ["predict", "--config", str(ASSETS / "llamafactory_typo.yaml")],  # did you mean
        ["predict", "--model", "Qwen/Qwen2.5-0.5B", "--gpu-memory", "0"],
        ["fit", "--model", "Qwen/Qwen2.5-0.5B", "--gpu-memory", "-24"],
        ["predict", "--model", "Qwen/Qwen2.5-0.5B", "--optimizer", "galore_adamw"],
    ],
)
def test_bad_input_exits_nonzero_with_one_line(args):
    result = subprocess.run(
        [sys.executable, "-m", "vram_ml.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr


def test_multi_gpu_predict_and_fit_import_neither_torch_nor_deepspeed():
    code = (
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "from vram_ml.cli import app\n"
        "for args in (['predict', '--model', 'meta-llama/Meta-Llama-3-8B', '--deepspeed',\n"
        "              'ds_z3_offload_config.json', '--json'],\n"
        "             ['fit', '--model', 'meta-llama/Meta-Llama-3-8B', '--accelerate-config',\n"
        "              'fsdp_config.yaml', '--method', 'full', '--json']):\n"
        "    r = CliRunner().invoke(app, args)\n"
        "    assert r.exit_code == 0, r.output\n"
        "names = ('torch', 'transformers', 'deepspeed', 'accelerate', 'mlflow', 'xgboost')\n"
        "heavy = [m for m in names if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr


def test_estimate_does_not_import_torch():
    code = (
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "from vram_ml.cli import app\n"
        "args = ['estimate', '--model', 'meta-llama/Meta-Llama-3-8B', '--json']\n"
        "r = CliRunner().invoke(app, args)\n"
        "assert r.exit_code == 0, r.output\n"
        "names = ('torch', 'transformers', 'mlflow', 'xgboost', 'sklearn')\n"
        "heavy = [m for m in names if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr


def test_predict_answers_a_dpo_yaml_with_its_stage_and_refuses_a_bad_stage():
    from importlib import resources

    dpo = resources.files("vram_ml") / "examples" / "llama3_lora_dpo.yaml"
    result = runner.invoke(app, ["predict", "--config", str(dpo), "--json"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.output)
    assert payload["spec"]["stage"] == "dpo" and payload["breakdown"]["reference_logits"] > 0
    as_sft = json.loads(runner.invoke(app, ["predict", "--config", str(dpo), "--stage", "sft",
                                            "--json"]).output)
    assert as_sft["peak_vram_bytes"] < payload["peak_vram_bytes"]
    text = runner.invoke(app, ["predict", "--config", str(dpo)]).output
    assert "stage: dpo (sigmoid) · reference: the adapter-disabled base" in text
    bad = runner.invoke(app, ["predict", "--model", "meta-llama/Meta-Llama-3-8B", "--stage",
                              "grpo"])
    assert bad.exit_code == 2 and bad.output.count("\n") == 1 and "stage" in bad.output


def test_read_only_commands_create_no_store_and_print_no_mlflow_lines(tmp_path):
    """status, validate, predict, estimate, catalog look; they write nothing anywhere."""
    header_only = tmp_path / "data" / "samples.csv"
    header_only.parent.mkdir()
    header_only.write_text((Path(__file__).parents[1] / "datasets" / "samples.csv").read_text())
    code = (
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "from vram_ml.cli import app\n"
        "for args in (['agent', 'status'], ['agent', 'status', '--json'],\n"
        f"             ['dataset', 'validate', {str(header_only)!r}],\n"
        "             ['predict', '--model', 'Qwen/Qwen2.5-0.5B'], ['estimate'], ['catalog']):\n"
        "    r = CliRunner().invoke(app, args)\n"
        "    assert r.exit_code == 0, (args, r.output)\n"
        "    print(r.output)\n"
    )
    env = {"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin", "HOME": str(tmp_path / "home"),
           "VRAM_ML_STORE": str(tmp_path / "store")}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=180, env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "INFO" not in result.stdout + result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]  # no store, home, mlflow.db


def test_version():
    import vram_ml

    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.stdout.strip() == f"vram-ml {vram_ml.__version__}"
