"""The one conversion of a published number to bytes, and library pins from requirement files."""

from __future__ import annotations

import pytest

from vram_ml.published.requirement_pins import exact_version, pyproject_pins, requirement_pins
from vram_ml.published.units import card_bytes, is_exact_bytes, normalised_number, value_bytes


@pytest.mark.parametrize("value,unit,expected", [
    ("31777.5", "MiB", 31777.5 * 2**20), ("6.7", "GB", 6_700_000_000),
    ("22540189696", "bytes", 22540189696), ("80", "GiB", 80 * 2**30),
    ("31.2", "GiB", 33500744909),  # 33500744908.8: the nearest byte
])
def test_value_bytes(value, unit, expected):
    assert value_bytes(value, unit) == int(expected)


def test_rounding_is_reported_and_missing_values_stay_missing():
    assert is_exact_bytes("31777.5", "MiB") and not is_exact_bytes("31.2", "GiB")
    assert value_bytes(None, "GiB") is None and value_bytes("1", None) is None
    assert card_bytes(80) == 80 * 2**30


def test_normalised_numbers_compare_spellings():
    assert normalised_number("2.00E-05") == normalised_number("2e-5") == "0.00002"
    assert normalised_number("15116.0") == normalised_number("15116") == "15116"


def test_requirement_pins_keep_the_specifier_as_written():
    pins = requirement_pins("torch==2.4.1\n# comment\nflash-attn==2.6.3\ntransformers>=4.32,<4.38\n"
                            "accelerate\n-e git+https://x/y.git@abc#egg=fms-acceleration\n"
                            "trl @ git+https://github.com/huggingface/trl@9af4734\n")
    assert pins == {"torch": "2.4.1", "flash_attn": "2.6.3", "transformers": ">=4.32,<4.38",
                    "accelerate": "(unpinned)", "fms_acceleration": "-e git+https://x/y.git@abc",
                    "trl": "@ git+https://github.com/huggingface/trl@9af4734"}
    assert pyproject_pins('deps = ["peft==0.13.2", "bitsandbytes>=0.43"]') == {
        "peft": "0.13.2", "bitsandbytes": ">=0.43"}


def test_exact_version_only_for_one_version():
    assert exact_version("2.7.1+cu126") == "2.7.1+cu126"
    assert exact_version("==2.5.1") == "2.5.1"
    assert exact_version(">=4.32.0,<4.38.0") is None and exact_version("@ git+x") is None
