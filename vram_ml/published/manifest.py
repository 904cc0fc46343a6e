"""`datasets/published/sources.yaml`: the pinned file versions every published row is read from.

One entry per source: its repository and every (commit, path) version to parse, each with the
blob id git gives it (so a rebuild can tell it read the very same file), its commit date, and
what history decided for it (see vram_ml/published/history.py, which generates the file).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MANIFEST_FORMAT = 1
DEFAULT_MANIFEST = Path("datasets/published/sources.yaml")
_HEX40 = re.compile(r"[0-9a-f]{40}")


class ManifestError(ValueError):
    """A missing or malformed sources.yaml; one line."""


@dataclass(frozen=True)
class SourceManifest:
    name: str
    repository: str
    versions: tuple[dict[str, Any], ...]
    pinned: str | None = None
    prefer: tuple[str, ...] = ()
    head: str | None = None


def load_manifest(path: Path = DEFAULT_MANIFEST) -> dict[str, SourceManifest]:
    """The sources of a sources.yaml, by name, checked.

    Raises:
        ManifestError: unreadable, not a manifest, or a version without a 40-hex commit and a
            relative path.
    """
    import yaml

    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ManifestError(f"{path}: no such file (the pinned source versions)") from None
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ManifestError(f"{path}: unreadable ({reason})") from None
    if not isinstance(raw, dict) or raw.get("format") != MANIFEST_FORMAT:
        raise ManifestError(f"{path}: not a sources manifest (format {MANIFEST_FORMAT})")
    sources = {}
    for entry in raw.get("sources") or []:
        source = _source(path, entry)
        sources[source.name] = source
    return sources


def _source(path: Path, entry: Any) -> SourceManifest:
    if not isinstance(entry, dict) or not entry.get("name") or not entry.get("repository"):
        raise ManifestError(f"{path}: a source without name and repository")
    versions = entry.get("versions") or []
    for version in versions:
        commit, file = (version or {}).get("commit"), (version or {}).get("path")
        if not isinstance(commit, str) or not _HEX40.fullmatch(commit):
            raise ManifestError(f"{path}: {entry['name']}: version commit {commit!r} is not 40 hex")
        if (not isinstance(file, str) or not file or file.startswith("/")
                or ".." in file.split("/")):
            raise ManifestError(f"{path}: {entry['name']}: bad path {file!r}")
    return SourceManifest(name=entry["name"], repository=entry["repository"],
                          versions=tuple(versions), pinned=entry.get("pinned"),
                          prefer=tuple(entry.get("prefer") or ()), head=entry.get("head"))
