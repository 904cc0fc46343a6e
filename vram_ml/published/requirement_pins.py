"""Library versions from a source's requirement files (pip freeze, requirements.txt, pyproject).

A pin is kept as its specifier: `torch==2.2.2` gives "2.2.2" (an exact version), a range gives
">=4.32.0,<4.38.0", a direct reference gives "@ git+https://...@<ref>", a bare name
"(unpinned)". Only an exact version says what was installed; the others say what was allowed.
"""

from __future__ import annotations

import re

from vram_ml.published.git_files import RepositoryFiles

# the table's version columns, then the other libraries that change memory, in evidence only
VERSION_KEYS = (
    "torch",
    "transformers",
    "peft",
    "trl",
    "bitsandbytes",
    "accelerate",
    "deepspeed",
    "flash_attn",
)
OTHER_KEYS = (
    "auto_gptq",
    "optimum",
    "xformers",
    "torchao",
    "liger_kernel",
    "triton",
    "fms_hf_tuning",
    "fms_acceleration",
    "fms_acceleration_peft",
    "fms_acceleration_foak",
    "fms_acceleration_aadp",
    "fms_acceleration_moe",
)
UNPINNED = "(unpinned)"
EXACT_VERSION = re.compile(r"\d+(\.\d+)*([.+\-]?[0-9A-Za-z.]+)?")


def package_key(name: str) -> str:
    """One spelling per package: lower case, '-' as '_' (flash-attn -> flash_attn)."""
    return name.strip().lower().replace("-", "_")


def requirement_pins(text: str | None) -> dict[str, str]:
    """{package_key: specifier} of a requirements.txt or pip-freeze text (first mention wins)."""
    pins: dict[str, str] = {}
    for raw in (text or "").splitlines():
        line = raw.split(" #", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        editable = re.match(r"^-e\s+(\S+)#egg=([A-Za-z0-9_.\-]+)", line)
        if editable:
            pins.setdefault(package_key(editable.group(2)), "-e " + editable.group(1))
            continue
        if line.startswith("-"):
            continue
        match = re.match(r"^([A-Za-z0-9_.\-]+)(\[[^\]]*\])?\s*(.*)$", line)
        if not match:
            continue
        rest = match.group(3).split(";", 1)[0].strip()
        if rest.startswith("@"):
            spec = "@ " + rest[1:].strip()
        elif rest.startswith("==") and "," not in rest:
            spec = rest[2:].strip()
        else:
            spec = rest or UNPINNED
        pins.setdefault(package_key(match.group(1)), spec)
    return pins


def pyproject_pins(text: str | None) -> dict[str, str]:
    """{package_key: specifier} of the quoted dependency strings of a pyproject.toml."""
    pins: dict[str, str] = {}
    for match in re.finditer(
        r'"([A-Za-z0-9_.\-]+)(\[[^\]]*\])?\s*([<>=!~][^";]*)?(?:;[^"]*)?"', text or ""
    ):
        spec = (match.group(3) or "").strip()
        if spec.startswith("==") and "," not in spec:
            spec = spec[2:].strip()
        pins.setdefault(package_key(match.group(1)), spec or UNPINNED)
    return pins


def versions_from_files(
    repo: RepositoryFiles, commit: str, files: list[str] | tuple[str, ...]
) -> tuple[dict[str, str | None], str]:
    """The tracked libraries' pins in the first of `files` that lists each, and the evidence.

    Returns:
        ({key: specifier or None for VERSION_KEYS + OTHER_KEYS}, "file@commit: torch 2.2.2, ...")
    """
    versions: dict[str, str | None] = {key: None for key in (*VERSION_KEYS, *OTHER_KEYS)}
    evidence = []
    for file in files:
        text = repo.read(commit, file)
        if text is None:
            continue
        pins = pyproject_pins(text) if file.endswith(".toml") else requirement_pins(text)
        found = []
        for key in versions:
            if key in pins and versions[key] is None:
                versions[key] = pins[key]
                found.append(f"{key} {pins[key]}")
        evidence.append(
            f"{file}@{commit}: "
            + (", ".join(found) if found else "none of the tracked packages listed")
        )
    if not evidence:
        evidence.append(f"no requirements file among {list(files)} at {commit}")
    return versions, "; ".join(evidence)


def exact_version(spec: str | None) -> str | None:
    """The version when `spec` names exactly one ("2.4.1", "2.7.1+cu126"), else None."""
    if spec is None:
        return None
    spec = spec.strip().removeprefix("==").strip()
    return spec if EXACT_VERSION.fullmatch(spec) and not spec.startswith(".") else None
