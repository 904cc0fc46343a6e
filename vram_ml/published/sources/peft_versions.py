"""huggingface/peft: list the MetaMathQA result versions (with the runner commit each names) and
the docs pages read at HEAD."""

from __future__ import annotations

import json
from typing import Any

from vram_ml.published.git_files import GitRepository, SourceDir

REPOSITORY = "huggingface/peft"
RESULTS = "method_comparison/MetaMathQA/results"
RUNNER_UTILS = "method_comparison/MetaMathQA/utils.py"
DOCS = ["docs/source/accelerate/deepspeed.md", "docs/source/accelerate/fsdp.md", "README.md"]


def list_result_versions(sources: SourceDir, repo: GitRepository) -> dict[str, Any]:
    """Every result JSON version on HEAD's history, oldest first, with its runner's commit: the
    result's own `peft-commit-hash` when the mirror has it (and the runner there), else the
    results commit."""
    from vram_ml.published.history import path_history

    versions = []
    for commit, date, status, path, _ in path_history(repo, [RESULTS], renames=False):
        if status == "D" or not path.endswith(".json"):
            continue
        text = repo.read(commit, path)
        if text is None:
            continue
        runner, how = commit, "results-commit"
        named = _peft_commit_hash(text)
        if named and repo.git("rev-parse", "--verify", "--quiet", named + "^{commit}").strip():
            full = repo.git("rev-parse", named + "^{commit}").strip()
            if repo.exists(full, RUNNER_UTILS):
                runner, how = full, "peft-commit-hash"
        versions.append({"commit": commit, "path": path, "date": date,
                         "blob": repo.blob_id(commit, path), "status": status,
                         "runner_commit": runner, "runner_source": how})
    return {"versions": versions}


def _peft_commit_hash(text: str) -> str | None:
    try:
        meta = json.loads(text).get("meta_info", {})
    except (json.JSONDecodeError, AttributeError):
        return None
    named = (meta.get("package_info") or {}).get("peft-commit-hash")
    return named if isinstance(named, str) and named else None


def list_doc_versions(sources: SourceDir, repo: GitRepository) -> dict[str, Any]:
    """The three docs pages at HEAD (their history is not walked)."""
    from vram_ml.published.history import commit_date

    head = repo.git("rev-parse", "HEAD").strip()
    date = commit_date(repo, head)
    return {"versions": [{"commit": head, "path": path, "date": date,
                          "blob": repo.blob_id(head, path)}
                         for path in DOCS if repo.exists(head, path)]}
