"""Security properties as tests: no pickle, safe YAML, no remote code, no arbitrary file reads."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from vram_ml.model_source import ModelSourceError, read_config_file, resolve_model

ROOT = Path(__file__).parents[1]
SOURCES = [
    p for folder in ("vram_ml", "agent", "model", "scripts") for p in (ROOT / folder).rglob("*.py")
]


def _code(path: Path) -> str:
    # Comments may name the forbidden things (to say why they are avoided); code may not.
    return "\n".join(line.split("#", 1)[0] for line in path.read_text().splitlines())


@pytest.mark.parametrize(
    "pattern,why",
    [
        (r"\bimport pickle\b|\bfrom pickle\b|\bcloudpickle\b|\bjoblib\b|\bdill\b", "pickle"),
        (r"yaml\.load\(|yaml\.unsafe_load|yaml\.full_load|Loader=yaml\.Loader", "unsafe YAML"),
        (r"trust_remote_code\s*=\s*True", "remote code"),
        (r"\beval\(|\bexec\(", "eval/exec"),
        (r"torch\.load\((?![^)]*weights_only\s*=\s*True)", "torch.load without weights_only"),
        (
            r"mlflow\.\w+\.load_model|mlflow\.pyfunc\.load_model",
            "pickle-backed MLflow model loading",
        ),
    ],
)
def test_no_unsafe_calls_in_code(pattern, why):
    offenders = [str(p.relative_to(ROOT)) for p in SOURCES if re.search(pattern, _code(p))]
    assert not offenders, f"{why}: {offenders}"


def test_committed_artifacts_are_not_pickles():
    for folder in ("datasets", "model", "vram_ml", "notebooks"):
        for path in (ROOT / folder).rglob("*"):
            if path.is_file():
                assert path.suffix not in {".pkl", ".pickle", ".joblib", ".pt", ".bin"}, path
                assert not path.read_bytes()[:2] == b"\x80\x04", f"{path} looks like a pickle"


@pytest.mark.parametrize(
    "source", ["/etc/passwd", "/etc/hostname", "../../../etc/passwd", "/proc/self/environ"]
)
def test_a_model_path_cannot_read_arbitrary_files(source):
    with pytest.raises(ModelSourceError) as error:
        resolve_model(source)
    assert "root:" not in str(error.value)


def test_only_a_json_config_is_read_and_its_content_is_not_echoed(tmp_path):
    secret = tmp_path / "secret.json"
    secret.write_text('{"api_key": "hunter2"}')
    with pytest.raises(ModelSourceError) as error:
        read_config_file(secret)
    assert "hunter2" not in str(error.value)
    big = tmp_path / "config.json"
    big.write_text('{"model_type": "llama", "pad": "' + "x" * 2_000_000 + '"}')
    with pytest.raises(ModelSourceError, match="too large"):
        read_config_file(big)


def test_a_symlinked_folder_only_yields_its_config_json(tmp_path):
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").symlink_to("/etc/passwd")
    with pytest.raises(ModelSourceError) as error:
        resolve_model(str(folder))
    assert "root:" not in str(error.value)


def test_hub_ids_cannot_traverse():
    for source in ("../x", "a/../../b", "owner/name/../../etc"):
        with pytest.raises(ModelSourceError):
            resolve_model(source)
