"""Fixtures for the simulator tests: tiny model configs and a spec builder.

Default tier (about a minute on 2 cores): tiny models, fake == real to the byte.
Slow tier (`pytest -m slow tests/model/simulate`): real-size catalog models on fake tensors.
"""

from __future__ import annotations

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("peft")
pytest.importorskip("bitsandbytes")

from ..tiny_models import TINY_LLAMA, TINY_LLAVA, TINY_QWEN2_VL, TINY_TIED, tiny_spec  # noqa: F401


@pytest.fixture
def make_spec():
    return tiny_spec
