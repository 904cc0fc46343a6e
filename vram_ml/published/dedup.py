"""One row per published number: how repeated publications of the same number are merged.

Lines sources (CSV lines, result JSONs): versions are read oldest first; a row whose
(measurement_key, column) was seen before is the same measurement published again, so the first
keeps it and the later place goes to `also_in`. A line whose numbers changed is a new
measurement (its key holds the numbers).

Documents sources (READMEs): each distinct file version is parsed once; a (row_key, value,
outcome) is one measurement, kept at the pinned commit when still published there (else a
preferred commit, else the first that published it) and re-read with that commit's context.
"""

from __future__ import annotations

import copy
import json
from collections import OrderedDict
from typing import Any

from vram_ml.published.git_files import RepositoryFiles

Row = dict[str, Any]
RUN_DIFF_KEYS = ("model", "method", "seq_len", "per_device_batch_size", "lora_target", "lora_rank",
                 "precision", "attention", "num_gpus", "gradient_checkpointing", "config_path")


def dedup_lines(rows: list[Row]) -> list[Row]:
    """First occurrence of each (measurement_key, column) wins; later ones go to `also_in`."""
    kept: OrderedDict[tuple[str, str], Row] = OrderedDict()
    for row in rows:
        key = (row["measurement_key"], row.get("column_canonical") or row.get("column") or "")
        if key not in kept:
            kept[key] = dict(row, also_in=[])
        else:
            kept[key]["also_in"].append(
                {"commit": row["commit"], "path": row["path"], "locator": row["locator"]})
    return list(kept.values())


def read_documents(repo: RepositoryFiles, source: Any, versions: list[dict[str, Any]],
                   log: list[str]) -> list[Row]:
    """The rows of every version of a documents source's files (see the module docstring)."""
    rows: list[Row] = []
    for document in dict.fromkeys(version["document"] for version in versions):
        document_versions = [v for v in versions if v["document"] == document]
        rows += _read_document(repo, source, document_versions, log)
    return rows


def _read_document(repo: RepositoryFiles, source: Any, versions: list[dict[str, Any]],
                   log: list[str]) -> list[Row]:
    parser, pinned = source.parser, source.pinned
    by_blob: OrderedDict[tuple[str, str], list[str]] = OrderedDict()
    for version in versions:
        blob = version.get("blob") or f"{version['commit']}:{version['path']}"
        by_blob.setdefault((blob, version["path"]), []).append(version["commit"])
    date_of = {v["commit"]: v.get("date") for v in versions}
    path_of = {v["commit"]: v["path"] for v in versions}

    def parse_at(commit: str, first_published: str | None) -> list[Row]:
        path = path_of[commit]
        context = parser.build_context(repo, commit, path, first_published=first_published)
        return parser.parse(repo.read(commit, path), repository=source.repository, path=path,
                            commit=commit, commit_date=date_of.get(commit), context=context)

    # pass 1: what each distinct version publishes
    seen: OrderedDict[tuple, dict[str, Any]] = OrderedDict()
    newest: dict[str, Row] = {}
    for (blob, path), commits in by_blob.items():
        for row in parse_at(commits[0], None):
            key = (row["row_key"], row["value"], row["outcome"])
            entry = seen.setdefault(key, {"commits": [], "rows": OrderedDict()})
            entry["commits"] += [c for c in commits if c not in entry["commits"]]
            entry["rows"][(blob, path)] = row
            if pinned in commits:
                newest[row["row_key"]] = row
    # pass 2: each measurement re-read at its primary commit
    parsed: dict[tuple[str, str], list[Row]] = {}
    rows = []
    for key, entry in seen.items():
        commits = sorted(entry["commits"], key=lambda c: (date_of.get(c) or "", c))
        first = commits[0]
        preferred = [c for c in source.prefer if c in entry["commits"]]
        primary = pinned if pinned in entry["commits"] else (preferred[0] if preferred else first)
        if (primary, first) not in parsed:
            parsed[(primary, first)] = parse_at(primary, first)
        match = [r for r in parsed[(primary, first)]
                 if (r["row_key"], r["value"], r["outcome"]) == key]
        if not match:
            log.append(f"{source.name}: row {key} lost when re-read at {primary}")
            continue
        row = copy.deepcopy(match[0])
        row["also_in"] = _also_in(entry, by_blob, date_of, primary)
        row["first_published_commit"] = first
        _mark_superseded(row, key, entry, newest, pinned, path_of, source)
        _note_different_settings(row, entry, by_blob, date_of, source)
        rows.append(row)
    return rows


def _also_in(entry: dict[str, Any], by_blob: dict, date_of: dict[str, Any], primary: str
             ) -> list[dict[str, str]]:
    places = []
    for (blob, path), row in entry["rows"].items():
        for commit in by_blob[(blob, path)]:
            if commit != primary:
                places.append({"commit": commit, "path": path, "locator": row["locator"]})
    return sorted(places, key=lambda p: (date_of.get(p["commit"]) or "", p["commit"]),
                  reverse=True)


def _mark_superseded(row: Row, key: tuple, entry: dict[str, Any], newest: dict[str, Row],
                     pinned: str, path_of: dict[str, str], source: Any) -> None:
    if pinned in entry["commits"]:
        row["superseded_by"] = None
        return
    current = newest.get(key[0])
    config = (row["run"].get("config_path") or "").split("@")[0]
    duplicate = None
    if current is None and row["value"] is not None and config:
        duplicate = next((r for r in newest.values() if r["value"] == row["value"]
                          and (r["run"].get("config_path") or "").split("@")[0] == config
                          and r["row_key"] != key[0]), None)
    if duplicate is not None:
        row["superseded_by"] = (f"same value still published at {pinned} with other wording "
                                f"(row_key {duplicate['row_key']})")
        row["duplicate_of_row_key"] = duplicate["row_key"]
        row["caveats"].append("duplicate of a newest-version row (same value, same config); "
                              "do not count twice")
    elif current is None:
        target = path_of.get(pinned, source.targets[0]["paths"][0])
        row["superseded_by"] = f"row absent from {target}@{pinned}"
    else:
        shown = current["value"] if current["value"] is not None else current["outcome"]
        row["superseded_by"] = f"{shown} at {pinned}"
    row["caveats"].append("superseded: this value is not in the newest version of the document "
                          f"({row['superseded_by']})")


def _note_different_settings(row: Row, entry: dict[str, Any], by_blob: dict,
                             date_of: dict[str, Any], source: Any) -> None:
    """A caveat when versions publishing the same value imply different run settings."""
    if len(entry["rows"]) <= 1:
        return
    keys = source.run_diff_keys or RUN_DIFF_KEYS
    groups: OrderedDict[str, list[str]] = OrderedDict()
    for (blob, path), other in entry["rows"].items():
        differs = {k: other["run"].get(k) for k in keys if other["run"].get(k) != row["run"].get(k)}
        if differs:
            text = json.dumps(differs, ensure_ascii=False, sort_keys=True)
            groups.setdefault(text, []).extend(by_blob[(blob, path)])
    if groups:
        parts = []
        for text, commits in groups.items():
            commits = sorted(set(commits), key=lambda c: date_of.get(c) or "")
            parts.append(f"{len(commits)} commit(s) {commits[0]}..{commits[-1]}: {text}")
        row["caveats"].append("same value also published with different run settings (as read "
                              "from the text/code of those versions): " + " | ".join(parts))
