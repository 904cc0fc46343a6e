"""Generate `datasets/published/sources.yaml` from the repositories' git history (run once).

The import never walks history: it reads exactly the (commit, path) file versions listed in
sources.yaml. This module lists them, with what history decides for each version (which
requirements file was committed with a CSV, which runner commit a result names, the date), so
that a rebuild is a pure function of those pinned files.

    python -m vram_ml.published.history /work/.mirror > datasets/published/sources.yaml

For a document source, every commit reachable from the source's pinned commit that touched the
document is listed (newest first), plus the pinned commit itself. fms-acceleration and peft
results are listed from each mirror's HEAD (oldest first), as their notes describe.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml

from vram_ml.published.git_files import GitRepository, SourceDir, SourceError
from vram_ml.published.manifest import MANIFEST_FORMAT
from vram_ml.published.sources import SOURCES, PublishedSource


def generate_manifest(source_dir: Path) -> dict[str, Any]:
    """The manifest of every source, read from the clones in `source_dir`.

    Raises:
        SourceError: a repository is missing, or is a snapshot (no history to walk).
    """
    with SourceDir(source_dir) as sources:
        entries = []
        for source in SOURCES:
            if not sources.has(source.repository) and source.carried:
                entries.append(_carried_entry(source))
                continue
            repo = _git(sources, source.repository)
            entry: dict[str, Any] = {"name": source.name, "repository": source.repository,
                                     "head": repo.git("rev-parse", "HEAD").strip()}
            if source.list_versions is not None:
                entry.update(source.list_versions(sources, repo))
            else:
                entry["pinned"] = source.pinned
                entry["prefer"] = list(source.prefer)
                entry["versions"] = document_versions(repo, source)
            entries.append(entry)
    return {"format": MANIFEST_FORMAT, "sources": entries}


def _git(sources: SourceDir, repository: str) -> GitRepository:
    repo = sources.repository(repository)
    if not isinstance(repo, GitRepository):
        raise SourceError(f"repository {repository}: a file snapshot has no history to list")
    return repo


def _carried_entry(source: PublishedSource) -> dict[str, Any]:
    versions = [{"document": target["doc"], "commit": target["commit"], "path": target["paths"][0],
                 "date": None, "blob": None} for target in source.targets]
    return {"name": source.name, "repository": source.repository, "head": None,
            "pinned": source.pinned, "prefer": list(source.prefer), "versions": versions}


def document_versions(repo: GitRepository, source: PublishedSource) -> list[dict[str, Any]]:
    """Every version of each document of a README-type source, newest first per document."""
    versions = []
    for target in source.targets:
        pinned = target["commit"]
        candidates: list[tuple[str, str, str]] = []
        if target.get("history", True):
            for path in target["paths"]:
                log = repo.git("log", "--format=%H %cI", pinned, "--", path)
                candidates += [(*line.split(" ", 1), path) for line in log.splitlines() if line]
            candidates.sort(key=lambda version: version[1], reverse=True)
        if pinned not in {commit for commit, _, _ in candidates}:
            for path in target["paths"]:
                if repo.exists(pinned, path):
                    candidates.insert(0, (pinned, commit_date(repo, pinned), path))
                    break
        seen = set()
        for commit, date, path in candidates:
            blob = repo.blob_id(commit, path) if (commit, path) not in seen else None
            seen.add((commit, path))
            if blob is None:
                continue  # the commit deleted the file
            versions.append({"document": target["doc"], "commit": commit, "path": path,
                             "date": date, "blob": blob})
    return versions


def commit_date(repo: GitRepository, commit: str) -> str:
    return repo.git("log", "-1", "--format=%cI", commit).strip()


def changed_files(repo: GitRepository, commit: str) -> list[tuple[str, str]]:
    """(status, path) of the files a commit changed (renames followed)."""
    listing = repo.git("diff-tree", "--no-commit-id", "-r", "-M", "--name-status", "--root",
                       commit)
    return [(parts[0], parts[-1]) for line in listing.splitlines() if (parts := line.split("\t"))]


def path_history(repo: GitRepository, paths: list[str], renames: bool
                 ) -> list[tuple[str, str, str, str, str | None]]:
    """[(commit, date, status, path, old_path)] of HEAD's history under `paths`, oldest first."""
    log = repo.git("log", "--format=C %H %cI", "--name-status",
                   "-M" if renames else "--no-renames", "HEAD", "--", *paths)
    found: list[tuple[str, str, str, str, str | None]] = []
    current = ("", "")
    for line in log.splitlines():
        if line.startswith("C "):
            _, commit, date = line.split(" ", 2)
            current = (commit, date)
        elif line.strip():
            parts = line.split("\t")
            status = parts[0]
            if status.startswith("R"):
                found.append((*current, status, parts[2], parts[1]))
            else:
                found.append((*current, status[0], parts[1], None))
    found.reverse()
    return found


def dump_manifest(manifest: dict[str, Any]) -> str:
    header = ("# The file versions the published dataset is built from (vram_ml/published).\n"
              "# Generated from git history: python -m vram_ml.published.history SOURCE_DIR\n"
              "# Rebuild: vram-ml dataset import-published SOURCE_DIR\n")
    return header + yaml.safe_dump(manifest, sort_keys=False, allow_unicode=True, width=100)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m vram_ml.published.history SOURCE_DIR > sources.yaml",
              file=sys.stderr)
        return 2
    try:
        manifest = generate_manifest(Path(args[0]))
    except SourceError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    sys.stdout.write(dump_manifest(manifest))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
