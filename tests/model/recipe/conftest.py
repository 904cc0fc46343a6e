"""Fixtures of the recipe tests: the libraries the recipe runs (skipped without them)."""

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("peft")
pytest.importorskip("bitsandbytes")
