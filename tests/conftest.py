"""Test tiers (markers in pyproject.toml):

- default, fast, no GPU, no network:   .venv/bin/python -m pytest
- slow tier (fuzzing at scale, big simulations):   .venv/bin/python -m pytest -m slow
- GPU tier (real CUDA micro-trainings; skipped without CUDA):   .venv/bin/python -m pytest -m gpu

Every test runs offline: HF_HUB_OFFLINE is set so no test can reach the hub.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")

ASSETS = Path(__file__).parent / "assets"


@pytest.fixture
def assets() -> Path:
    return ASSETS


def pytest_collection_modifyitems(config, items):
    if not any(item.get_closest_marker("gpu") for item in items):
        return
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except ImportError:
        has_cuda = False
    if has_cuda:
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if item.get_closest_marker("gpu"):
            item.add_marker(skip)
