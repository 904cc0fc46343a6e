"""Library versions for rows whose file version pins none exactly.

A memory rule depends on the transformers / peft / trl / bitsandbytes versions that ran, and a
Spec left to its defaults would claim the newest LLaMA-Factory stack for a run measured years
earlier. So a row without exact pins takes, in this order, and says so in its assumptions:
1. the versions of the same source's nearest pinned row: the first one published after it (what
   the benchmark's environment was when the source first wrote its pins down), else the last
   one before it; a library that row leaves open, but this row states a range for, is the
   newest release before this row's commit that the range allows;
2. for a source whose numbers first appeared in the commit the row names (`DATED_BY_COMMIT`: a
   benchmark file added with its numbers), per library, the newest release published before
   that commit that the source's stated range allows (release dates from PyPI,
   datasets/published/release_dates.yaml);
3. otherwise the row stays unmapped: a document read only at a late version (peft's docs) says
   nothing of when its numbers were measured.
"""

from __future__ import annotations

from typing import Any

from vram_ml.published.mapping_common import VERSION_FIELDS
from vram_ml.published.requirement_pins import exact_version

# Sources whose rows' commit dates their numbers: fsdp_qlora's benchmarks_03_2024.md was created
# with them on 2024-05-03 and its rows name the 2024-06-13 snapshot (the releases current at
# either date follow the same rules).
DATED_BY_COMMIT = frozenset({"fsdp_qlora"})


def fill_missing_versions(rows: list[dict[str, Any]],
                          context: list[dict[str, Any]] | None = None) -> None:
    """Give every row without an exact transformers version assumed versions (in place, in
    `_assumed_<library>_version` + `_version_assumption`), or `_version_blocker`; pins are
    looked up among `context` (default: the rows themselves)."""
    pinned: dict[str, list[dict[str, Any]]] = {}
    for row in context if context is not None else rows:
        if exact_version(row.get("transformers_version")):
            pinned.setdefault(row["source"], []).append(row)
    for candidates in pinned.values():
        candidates.sort(key=lambda row: row["commit_date"] or "")
    for row in rows:
        if exact_version(row.get("transformers_version")):
            continue
        nearest = _nearest(pinned.get(row["source"], []), row["commit_date"] or "")
        if nearest is not None:
            _assume_from_row(row, nearest)
            _assume_stated_ranges(row)
        elif row["source"] in DATED_BY_COMMIT and row.get("commit_date"):
            _assume_from_release_dates(row)
        else:
            row["_version_blocker"] = ("library versions unknown (the source pins none and does "
                                       "not date its numbers), and the memory rules depend on them")


def _assume_from_row(row: dict[str, Any], nearest: dict[str, Any]) -> None:
    for library in VERSION_FIELDS:
        row[f"_assumed_{library}_version"] = nearest.get(f"{library}_version") or ""
    versions = ", ".join(f"{library} {nearest[f'{library}_version']}"
                         for library in VERSION_FIELDS if nearest.get(f"{library}_version"))
    row["_version_assumption"] = (
        f"library versions ({versions}): this file version pins none; the source's nearest "
        f"pinned row, {nearest['path']}@{nearest['commit'][:7]} ({nearest['commit_date'][:10]})")


def _assume_stated_ranges(row: dict[str, Any]) -> None:
    """A library the pinned row leaves open but this row states a range for (Qwen's README:
    `pip install "peft<0.8.0"`): the newest release before this row's commit in that range."""
    from vram_ml.published.release_dates import release_dates

    chosen = []
    for library in VERSION_FIELDS:
        stated = (row.get(f"{library}_version") or "").strip()
        if row.get(f"_assumed_{library}_version") or not stated:
            continue
        version = newest_before(library, row["commit_date"], stated, release_dates())
        if version:
            row[f"_assumed_{library}_version"] = version
            chosen.append(f"{library} {version} (the newest PyPI release before "
                          f"{row['commit_date'][:10]} that {stated!r} allows)")
    if chosen:
        row["_version_assumption"] += "; " + ", ".join(chosen)


def _assume_from_release_dates(row: dict[str, Any]) -> None:
    from vram_ml.published.release_dates import release_dates

    chosen = {}
    for library in VERSION_FIELDS:
        stated = row.get(f"{library}_version") or ""
        if library == "trl" and not stated:
            continue  # a custom loop (fsdp_qlora's train.py) runs no TRL: nothing to assume
        version = newest_before(library, row["commit_date"], stated, release_dates())
        if version:
            row[f"_assumed_{library}_version"] = version
            chosen[library] = f"{version}{f' (allowed by {stated!r})' if stated else ''}"
    if "transformers" not in chosen:
        row["_version_blocker"] = "transformers version unknown, and the memory rules depend on it"
        return
    row["_version_assumption"] = (
        "library versions (" + ", ".join(f"{k} {v}" for k, v in chosen.items())
        + f"): the source pins none exactly; the newest PyPI release before its commit "
          f"({row['commit_date'][:10]})")


def newest_before(library: str, date: str, stated: str,
                  dates: dict[str, dict[str, str]]) -> str | None:
    """The newest final release of `library` uploaded before `date` that `stated` allows."""
    from packaging.specifiers import InvalidSpecifier, SpecifierSet
    from packaging.version import Version

    try:
        allowed = SpecifierSet(stated.replace(" ", "")) if stated else SpecifierSet()
    except InvalidSpecifier:
        allowed = SpecifierSet()
    cutoff = _utc(date)
    released = [version for version, uploaded in dates.get(library, {}).items()
                if uploaded < cutoff and Version(version) in allowed]
    return max(released, key=Version) if released else None


def _utc(date: str) -> str:
    """An ISO date with any offset, as the UTC 'YYYY-MM-DDTHH:MM:SS' PyPI's dates start with."""
    from datetime import UTC, datetime

    return datetime.fromisoformat(date).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S")


def _nearest(candidates: list[dict[str, Any]], date: str) -> dict[str, Any] | None:
    later = [row for row in candidates if (row["commit_date"] or "") >= date]
    if later:
        return later[0]
    return candidates[-1] if candidates else None
