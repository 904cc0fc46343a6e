"""scripts/device_session.sh rehearsed on the CPU: `run` (BACKEND=cpu) leaves the session folder a
GPU run would, in the shape the device returns (at most 8 files, at most 2 folders down), stops in
seconds with one line when the carried wheels do not install or import, keeps what was measured
when the call is killed at its limit; `import` brings the folder into a store and a dataset file.

The slow test builds a stand-in for the GPU machine (its package versions: transformers 5.17,
huggingface_hub 1.33, typer without pydantic; no pydantic / bitsandbytes / peft / mlflow /
xgboost) from PyPI and runs the whole session on it with the wheels `prepare` downloads.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

from vram_ml.agent.dataset import read_rows, validate_rows

ROOT = Path(__file__).parents[2]
SCRIPT = ROOT / "scripts" / "device_session.sh"
ERROR = "device_session: error: "


def cpu_session(**env: str) -> dict[str, str]:
    return {**os.environ, "BACKEND": "cpu", "PYTHON": sys.executable, "SESSION_SECONDS": "240",
            **env}


def assert_returnable(out: Path) -> None:
    """What the device brings back: at most 8 files, at most 2 folders down, plain names."""
    files = [p for p in out.rglob("*") if p.is_file()]
    assert len(files) <= 8, sorted(p.name for p in files)
    for path in files:
        parts = path.relative_to(out).parts
        assert len(parts) <= 3 and all(re.fullmatch(r"[A-Za-z0-9._-]+", p) for p in parts)


def fake_wheel(directory: Path, name: str, init: str = "", requires: tuple[str, ...] = ()) -> Path:
    """A minimal wheel of one module `name` whose __init__.py is `init`."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}-1.0-py3-none-any.whl"
    info = f"{name}-1.0.dist-info"
    metadata = "".join([f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n",
                        *(f"Requires-Dist: {r}\n" for r in requires)])
    files = {f"{name}/__init__.py": init, f"{info}/METADATA": metadata,
             f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
                              "Tag: py3-none-any\n"}
    files[f"{info}/RECORD"] = "".join(f"{n},,\n" for n in [*files, f"{info}/RECORD"])
    with zipfile.ZipFile(path, "w") as wheel:
        for member, text in files.items():
            wheel.writestr(member, text)
    return path


@pytest.mark.slow
def test_session_rehearsal_then_import(tmp_path, many_tiny_specs, write_plan, hooks):
    """Every phase, repeatability included (about a minute: the test phases' collection)."""
    hooks({"*": "stub"})
    plan, out = write_plan(many_tiny_specs(3)), tmp_path / "out"
    env = cpu_session(SKIP_WHEELS="1", PLAN=str(plan), REPEAT="2")
    run = subprocess.run(["bash", str(SCRIPT), "run", str(out)], env=env, capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert {p.name for p in out.iterdir()} == {
        "samples.jsonl", "repeat.jsonl", "summary.json", "versions.json", "session.log",
        "child_logs.tar.gz"}
    assert_returnable(out)
    assert len((out / "samples.jsonl").read_text().splitlines()) == 3
    assert len((out / "repeat.jsonl").read_text().splitlines()) == 2
    assert json.loads((out / "summary.json").read_text())["stored"] == 3
    assert json.loads((out / "versions.json").read_text())["torch"]
    log = (out / "session.log").read_text()
    assert "gpu tests exit code: 0" in log and "agent exit code: 0" in log
    # the simulate-vs-CUDA test runs in a pytest process of its own, before the agent
    assert log.index("=== gpu tier") < log.index("=== sim vs cuda") < log.index("=== agent")
    assert "sim tests exit code: 0" in log and "recipe check: " in log
    assert re.search(r"phase times: set-up \d+s, gpu tier \d+s, sim vs cuda \d+s, agent \d+s, "
                     r"repeat \d+s", log)

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


@pytest.mark.parametrize("case", ["corrupt-wheel", "import-fails", "unmet-requirement",
                                  "no-wheels"])
def test_a_bad_install_stops_the_session_in_one_line(tmp_path, case):
    wheels = tmp_path / "whl"
    wheels.mkdir()
    if case == "corrupt-wheel":
        (wheels / "broken-1.0-py3-none-any.whl").write_bytes(b"not a zip")
    elif case == "import-fails":
        fake_wheel(wheels, "carriedmod", init="raise ImportError('needs a newer torch')")
    elif case == "unmet-requirement":
        fake_wheel(wheels, "carriedmod", requires=("torch>=99",))
    out = tmp_path / "out"
    start = time.monotonic()
    run = subprocess.run(["bash", str(SCRIPT), "run", str(out)],
                         env=cpu_session(WHEELS=str(wheels)), capture_output=True, text=True,
                         timeout=120)
    last = run.stdout.strip().splitlines()[-1]
    assert run.returncode == 3 and last.startswith(ERROR), run.stdout[-2000:]
    assert {"corrupt-wheel": "wheel install failed",
            "import-fails": "carriedmod (carriedmod) does not import: ImportError: needs a newer",
            "unmet-requirement": "carriedmod needs torch>=99",
            "no-wheels": "no wheels in"}[case] in last
    assert "Traceback" not in last and time.monotonic() - start < 60
    log = (out / "session.log").read_text()
    assert "=== gpu tier" not in log and log.strip().endswith(last)
    assert_returnable(out)


def test_a_call_killed_at_its_limit_keeps_what_was_measured(tmp_path, many_tiny_specs,
                                                            write_plan, hooks):
    """The device kills the whole call at its limit: the spool is in OUT already."""
    hooks({"*": "sleep:1;stub"})
    wheels = tmp_path / "whl"
    fake_wheel(wheels, "carriedmod")  # a stubbed install that works
    out, plan = tmp_path / "out", write_plan(many_tiny_specs(30))
    env = cpu_session(WHEELS=str(wheels), PLAN=str(plan), COPY_EVERY="1", GPU_TESTS_SECONDS="1",
                      SIM_TESTS_SECONDS="1", REPEAT="0")
    with open(tmp_path / "stdout", "w") as stdout:
        session = subprocess.Popen(["bash", str(SCRIPT), "run", str(out)], env=env,
                                   stdout=stdout, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    try:
        deadline = time.monotonic() + 150
        while not (out / "samples.jsonl").exists() and time.monotonic() < deadline:
            assert session.poll() is None, (tmp_path / "stdout").read_text()[-2000:]
            time.sleep(0.2)
        time.sleep(2)
    finally:
        os.killpg(session.pid, signal.SIGKILL)  # everything, as the device does
        session.wait()
    log = (out / "session.log").read_text()
    assert "carried carriedmod 1.0" in log and "recipe check: " in log
    # the simulate-vs-CUDA test has a pytest process of its own, ended before the agent starts
    assert log.index("=== gpu tier") < log.index("=== sim vs cuda") < log.index("=== agent")
    assert "agent exit code" not in log  # killed while the agent measured
    result = validate_rows(read_rows(out / "samples.jsonl"))
    assert len(result.samples) >= 1 and not result.problems
    assert_returnable(out)
    # and what came back imports
    dataset = tmp_path / "datasets" / "samples.csv"
    env = {**os.environ, "PYTHON": sys.executable, "DATASET": str(dataset),
           "INCLUDE_BACKEND": "cpu", "STORE": str(tmp_path / "store")}
    imported = subprocess.run(["bash", str(SCRIPT), "import", str(out)], env=env,
                              capture_output=True, text=True, timeout=300)
    n = len(result.samples)
    assert imported.returncode == 0, imported.stdout[-3000:] + imported.stderr[-3000:]
    assert f"{n}/{n} valid; {n} new in the store" in imported.stdout
    assert len(dataset.read_text().splitlines()) == n + 1
    assert (dataset.parent / "DATACARD.md").exists()


def test_size_says_what_does_not_fit(tmp_path):
    wheels = tmp_path / "whl"
    fake_wheel(wheels, "small")
    with open(wheels / "huge-1.0-py3-none-any.whl", "wb") as huge:
        huge.truncate(70 * 2**20)
    env = {**os.environ, "PYTHON": sys.executable, "WHEELS": str(wheels)}
    result = subprocess.run(["bash", str(SCRIPT), "size"], env=env, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode != 0
    assert re.search(r"travels: 7\d\.\d MiB of 64\.0 MiB \(working tree \d+\.\d MiB, 2 wheels",
                     result.stdout)
    assert "does not fit: huge-1.0-py3-none-any.whl" in result.stderr
    (wheels / "huge-1.0-py3-none-any.whl").unlink()
    fits = subprocess.run(["bash", str(SCRIPT), "size"], env=env, capture_output=True, text=True,
                          timeout=60)
    assert fits.returncode == 0 and "1 wheels" in fits.stdout


def test_usage():
    result = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True)
    assert result.returncode == 2 and "usage" in result.stderr


# --- the stand-in GPU machine (slow: builds a virtualenv from PyPI) ------------------------------

# KINDS.md's pip list of the GPU machine where it names a version; typer 0.24 is the newest
# that does not pull in pydantic (the machine has typer and no pydantic); an older
# typing_extensions than pydantic needs.
STAND_IN = ["transformers==5.17.0", "huggingface_hub==1.33.0", "tokenizers==0.23.2",
            "safetensors==0.8.0", "accelerate==1.15.0", "typer==0.24.2",
            "typing_extensions==4.12.2", "numpy", "pyyaml", "rich", "regex", "tqdm", "packaging",
            "psutil", "pytest", "hypothesis", "nvidia-ml-py", "pandas", "scikit-learn"]
ABSENT = ("pydantic", "bitsandbytes", "peft", "mlflow", "xgboost")


@pytest.fixture(scope="module")
def stand_in(tmp_path_factory) -> Path:
    """A venv with the GPU machine's versions; torch is this venv's CPU build, linked in."""
    import torch

    root = tmp_path_factory.mktemp("stand-in")
    subprocess.run([sys.executable, "-m", "venv", str(root)], check=True)
    python = root / "bin" / "python"
    host = root / "host-torch"
    host.mkdir()
    site = Path(torch.__file__).parents[1]
    for path in [site / "torch", site / "torchgen", *site.glob("torch-*.dist-info")]:
        (host / path.name).symlink_to(path)
    purelib = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_path("
                              "'purelib'))"], capture_output=True, text=True, check=True)
    (Path(purelib.stdout.strip()) / "host_torch.pth").write_text(f"{host}\n")
    install = subprocess.run([python, "-m", "pip", "install", "-q", *STAND_IN],
                             capture_output=True, text=True, timeout=900)
    assert install.returncode == 0, install.stderr[-2000:]
    subprocess.run([python, "-m", "pip", "uninstall", "-q", "-y", "pydantic", "pydantic_core",
                    "annotated-types", "typing-inspection"], capture_output=True, check=True)
    probe = ("import importlib.util as u, transformers; "
             f"print([m for m in {ABSENT!r} if u.find_spec(m)], transformers.__version__)")
    check = subprocess.run([python, "-c", probe], capture_output=True, text=True, check=True)
    assert check.stdout.split() == ["[]", "5.17.0"], check.stdout
    return python


@pytest.fixture(scope="module")
def wheels_311(tmp_path_factory) -> Path:
    """`prepare`'s wheels, for this Python (the GPU machine's are for 3.12)."""
    wheels = tmp_path_factory.mktemp("whl")
    (wheels / "transformers-5.17.0-py3-none-any.whl").write_text("stale")  # prepare empties it
    env = {**os.environ, "PYTHON": sys.executable, "WHEELS": str(wheels),
           "WHEEL_PYTHON": f"{sys.version_info.major}.{sys.version_info.minor}"}
    prepare = subprocess.run(["bash", str(SCRIPT), "prepare"], env=env, capture_output=True,
                             text=True, timeout=600)
    assert prepare.returncode == 0, prepare.stdout[-2000:] + prepare.stderr[-2000:]
    print("\n" + prepare.stdout)
    assert len(list(wheels.glob("*.whl"))) == 8
    return wheels


@pytest.mark.slow
def test_whole_session_on_a_stand_in_gpu_machine(tmp_path, stand_in, wheels_311, tiny_specs,
                                                 write_plan):
    """Real CPU samples (checkpointing, QLoRA, a paged optimizer) with the carried libraries."""
    specs = [{**tiny_specs[0], "gradient_checkpointing": True},
             {**tiny_specs[1], "method": "qlora", "quant_bits": 4, "optimizer": "adamw_torch"},
             {**tiny_specs[1], "optimizer": "paged_adamw_8bit"}]
    out = tmp_path / "out"
    env = cpu_session(PYTHON=str(stand_in), WHEELS=str(wheels_311), PLAN=str(write_plan(specs)),
                      REPEAT="1")
    run = subprocess.run(["bash", str(SCRIPT), "run", str(out)], env=env, capture_output=True,
                         text=True, timeout=900)
    assert run.returncode == 0, run.stdout[-3000:]
    log = (out / "session.log").read_text()
    print("\n" + "\n".join(line for line in log.splitlines()
                           if line.startswith(("phase times", "carried", "==="))))
    versions = json.loads((out / "versions.json").read_text())
    assert (versions["transformers"], versions["pydantic"], versions["bitsandbytes"]) == (
        "5.24.0", "2.14.4", "0.50.2")
    samples = validate_rows(read_rows(out / "samples.jsonl")).samples
    assert [s.measurement.status for s in samples] == ["ok"] * 3
    assert {s.provenance.transformers_version for s in samples} == {"5.24.0"}
    assert "gpu tests exit code: 0" in log and "sim tests exit code: 0" in log
    assert_returnable(out)


@pytest.mark.slow
@pytest.mark.parametrize("carry", ["nothing", "all-but-transformers"])
def test_stand_in_without_the_wheels_stops_at_set_up(tmp_path, stand_in, wheels_311, carry):
    """The machine's own libraries cannot run the recipe: no pydantic (nothing imports), and
    transformers 5.17 has no activation_checkpointing_enable."""
    env = cpu_session(PYTHON=str(stand_in))
    if carry == "nothing":
        env["SKIP_WHEELS"] = "1"
    else:
        some = tmp_path / "whl"
        some.mkdir()
        for wheel in wheels_311.glob("*.whl"):
            if not wheel.name.startswith("transformers-"):
                (some / wheel.name).symlink_to(wheel)
        env["WHEELS"] = str(some)
    run = subprocess.run(["bash", str(SCRIPT), "run", str(tmp_path / "out")], env=env,
                         capture_output=True, text=True, timeout=300)
    last = run.stdout.strip().splitlines()[-1]
    assert run.returncode == 3 and last.startswith(ERROR)
    assert {"nothing": "No module named 'pydantic'",
            "all-but-transformers": "activation_checkpointing_enable"}[carry] in last
