"""The stack a Spec runs on: the framework that wraps the model and the library versions whose
code changes memory. Which versions the memory rules were read from (model/formulas/stack.py
names the file and line of each), and the one-line errors for the others. Pure Python.

A version is kept as its release numbers ("5.6", "5.6.0" and "5.6.0.dev0" are the same stack
for memory), so the same run typed two ways gets one spec_id.
"""

from __future__ import annotations

import re

Version = tuple[int, int, int]

FRAMEWORKS = {
    "llamafactory": "LLaMA-Factory 0.9.5 (llamafactory-cli train)",
    "trl": "Hugging Face Trainer / TRL SFTTrainer + peft",
    "hf_trainer": "Hugging Face Trainer + peft, no TRL (a model's own finetune.py)",
}
LIBRARIES = ("transformers", "peft", "trl", "bitsandbytes", "accelerate")

# [lowest, first unsupported): the versions whose memory-relevant code was read. transformers:
# 4.32.0, 4.39.3, 4.45.2, 4.48, 4.52.4, 4.57.6, 5.0.0, 5.3.0, 5.4.0, 5.6, 5.24.0 (newest on
# PyPI); peft: 0.7.1, 0.11.1 through 0.21.2; trl: 0.9.6 through 0.26.0; bitsandbytes: 0.43
# through 0.50.2 (4.32.0 and 0.7.1 behave as the oldest rules say: model/formulas/stack.py);
# accelerate (its FSDP preparation): 0.30.0, 0.32.1, 1.6.0, 1.11.0-1.14.0, 1.15.0 (installed).
SUPPORTED: dict[str, tuple[Version, Version]] = {
    "transformers": ((4, 32, 0), (5, 25, 0)),
    "peft": ((0, 7, 0), (0, 22, 0)),
    "trl": ((0, 9, 6), (0, 27, 0)),
    "bitsandbytes": ((0, 43, 0), (0, 51, 0)),
    "accelerate": ((0, 30, 0), (1, 16, 0)),
}
# What a framework accepts at run time, when it is narrower: LLaMA-Factory 0.9.5
# `check_dependencies` (src/llamafactory/extras/misc.py:95-101) refuses anything else.
FRAMEWORK_SUPPORTED: dict[str, dict[str, tuple[Version, Version]]] = {
    "llamafactory": {
        "transformers": ((4, 55, 0), (5, 6, 1)),
        "peft": ((0, 18, 0), (0, 20, 1)),
        "trl": ((0, 18, 0), (0, 24, 1)),
        "accelerate": ((1, 3, 0), (1, 15, 1)),
    },
    "trl": {},
    "hf_trainer": {},
}

_RELEASE = re.compile(r"^v?(\d+)(?:\.(\d+))?(?:\.(\d+))?(?:[.+\-]?[A-Za-z0-9.+\-]*)?$")


def parse_version(text: str) -> Version:
    """Release numbers of a version string ("5.6" -> (5, 6, 0); "0.15.2.dev0" -> (0, 15, 2)).

    Raises:
        ValueError: not a version (one line).
    """
    match = _RELEASE.match(str(text).strip())
    if not match:
        raise ValueError(f"{text!r} is not a version (like 5.6.0)")
    major, minor, patch = (int(part or 0) for part in match.groups())
    return major, minor, patch


def format_version(version: Version) -> str:
    return ".".join(str(part) for part in version)


def _range_text(low: Version, high: Version) -> str:
    """[low, high) as people write it: 4.39.0–5.24.x, or 4.55.0–5.6.0 for an inclusive bound."""
    if high[2]:
        top = format_version((high[0], high[1], high[2] - 1))
    elif high[1]:
        top = f"{high[0]}.{high[1] - 1}.x"
    else:
        top = f"below {high[0]}.0"
    return f"{format_version(low)}–{top}"


def supported_range(library: str, framework: str) -> tuple[Version, Version]:
    """The versions of `library` the rules cover under `framework`."""
    low, high = SUPPORTED[library]
    narrow = FRAMEWORK_SUPPORTED.get(framework, {}).get(library)
    if narrow:
        low, high = max(low, narrow[0]), min(high, narrow[1])
    return low, high


def check_version(library: str, text: str, framework: str) -> str:
    """The normalized version of `library`, if the rules cover it under `framework`.

    Raises:
        ValueError: not a version, or one outside the supported range (one line that lists it).
    """
    version = parse_version(text)
    low, high = supported_range(library, framework)
    if not low <= version < high:
        where = f" under {framework}" if FRAMEWORK_SUPPORTED.get(framework, {}).get(library) else ""
        raise ValueError(
            f"{format_version(version)} is not supported{where} "
            f"(supported: {library} {_range_text(low, high)})"
        )
    return format_version(version)


def supported_text() -> str:
    """Every framework and version range, for help texts and errors."""
    ranges = ", ".join(f"{lib} {_range_text(*SUPPORTED[lib])}" for lib in LIBRARIES)
    return f"frameworks {', '.join(FRAMEWORKS)}; {ranges}"
