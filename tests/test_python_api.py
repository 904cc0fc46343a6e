"""The Python API: `from vram_ml import predict, fit, Spec, read_llamafactory_yaml`, README's
example run as written, and a light `import vram_ml`."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

import vram_ml
from vram_ml import Spec, SpecError, estimate, fit, predict, read_llamafactory_yaml

README = (Path(__file__).parents[1] / "README.md").read_text()


def _readme_python_api_example() -> str:
    section = README.split("## Python API", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_readme_example_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    text = (Path(__file__).parent / "assets" / "llamafactory_qwen_qlora.yaml").read_text()
    (tmp_path / "train.yaml").write_text(text.replace("my_custom_key: 3\n", ""))  # a real YAML
    namespace: dict = {}
    exec(compile(_readme_python_api_example(), "README.md", "exec"), namespace)  # noqa: S102
    assert namespace["prediction"].peak_vram_bytes > 0


def test_the_api_answers_what_the_commands_answer():
    spec = Spec(model="Qwen/Qwen2.5-7B", method="qlora", quant_bits=4, batch_size=2,
                seq_len=1024, precision="bf16")
    prediction = predict(spec)
    assert prediction.peak_vram_bytes == prediction.answer.peak_vram_bytes > 0
    assert prediction.upper_vram_bytes >= prediction.peak_vram_bytes
    assert predict("Qwen/Qwen2.5-7B", method="qlora", quant_bits=4, batch_size=2, seq_len=1024,
                   precision="bf16").to_dict() == prediction.to_dict()
    sweep = [predict(spec, batch_size=b).peak_vram_bytes for b in (1, 2, 4)]
    assert sweep == sorted(sweep) and len(set(sweep)) == 3
    report = fit(spec, gpu_memory_gib=24)
    assert report.fits and report.max_batch_size >= 2
    names = [e.estimator for e in estimate(spec, estimators=["seed-formula", "analytical"])]
    assert names == ["seed-formula", "analytical"]


def test_a_yaml_reads_into_the_same_spec(assets):
    with pytest.raises(SpecError, match="my_custom_key"):  # as LLaMA-Factory refuses it
        read_llamafactory_yaml(assets / "llamafactory_qwen_qlora.yaml")
    read = read_llamafactory_yaml(assets / "llamafactory_qwen_qlora.yaml", allow_unknown=True)
    assert read.spec.method == "qlora" and "my_custom_key" in read.unknown
    assert predict(read.spec).peak_vram_bytes > 0


@pytest.mark.parametrize("call", [
    lambda: predict("Qwen/Qwen2.5-7B", batch_size=0),
    lambda: predict(batch_size=2),
    lambda: fit("Qwen/Qwen2.5-7B", gpu_memory_gib=0),
    lambda: predict(42),
])
def test_bad_input_raises_one_line_spec_errors(call):
    with pytest.raises(SpecError) as error:
        call()
    assert "\n" not in str(error.value)


def test_every_public_name_is_documented():
    for name in ("predict", "fit", "estimate", "Spec", "SpecError", "read_llamafactory_yaml"):
        assert getattr(vram_ml, name).__doc__, name
        assert name in dir(vram_ml)
    with pytest.raises(AttributeError):
        vram_ml.no_such_name  # noqa: B018


def test_import_vram_ml_is_light():
    code = ("import sys, vram_ml\n"
            "from vram_ml import predict, Spec\n"
            "predict(Spec(model='Qwen/Qwen2.5-7B'))\n"
            "heavy = [m for m in ('torch', 'transformers', 'mlflow', 'xgboost', 'sklearn',"
            " 'fastapi', 'uvicorn') if m in sys.modules]\n"
            "assert not heavy, heavy\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
