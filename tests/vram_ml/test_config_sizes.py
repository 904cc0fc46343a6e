"""A config whose sizes are not positive whole numbers is refused with one line, not a crash
deep in an estimator (found by the web API's fuzz test)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from vram_ml.model_source import ModelSourceError, resolve_model


@pytest.mark.parametrize("numbers", [{"hidden_size": 0}, {"num_attention_heads": 0},
                                     {"vocab_size": -3}, {"hidden_size": 2**40}])
def test_bad_sizes_are_refused(tmp_path, assets, numbers):
    config = {**json.loads((assets / "tiny_llama_config.json").read_text()), **numbers}
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    with pytest.raises(ModelSourceError) as error:
        resolve_model(str(path))
    message = str(error.value)
    assert message.startswith(f"model {str(path)!r}: config") and "\n" not in message
    result = subprocess.run([sys.executable, "-m", "vram_ml.cli", "predict", "--model", str(path),
                             "--seq-len", "64"], capture_output=True, text=True, timeout=120)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert result.stderr.strip().count("\n") == 0 and result.stderr.startswith("error: ")
