"""fms-acceleration: list every version of the benchmark CSVs, with what history decides for each.

For each CSV version on HEAD's history (oldest first): the requirements file that describes its
environment (the one committed together with the CSV, else the name-matched one), the
fms-hf-tuning commit the benchmark ran (pinned in the requirements, else the nearest main commit
before the CSV's date) and, for a file renamed later, the name it got (the GPU is in the name).
"""

from __future__ import annotations

import os
import re
from typing import Any

from vram_ml.published.git_files import GitRepository, SourceDir

REPOSITORY = "foundation-model-stack/fms-acceleration"
HF_TUNING = "foundation-model-stack/fms-hf-tuning"
CSV_FOLDERS = ["scripts/benchmarks/refs", "scripts/benchmarks/refs_orca"]


def list_versions(sources: SourceDir, repo: GitRepository) -> dict[str, Any]:
    from vram_ml.published.history import path_history

    history = path_history(repo, CSV_FOLDERS, renames=True)
    tuning = sources.repository(HF_TUNING) if sources.has(HF_TUNING) else None
    versions = []
    for commit, date, status, path, old in history:
        if status == "D" or not path.endswith(".csv"):
            continue
        blob = repo.blob_id(commit, path)
        if blob is None:
            continue
        requirements, rule = requirements_file(repo, commit, path)
        version: dict[str, Any] = {"commit": commit, "path": path, "date": date, "blob": blob,
                                   "status": status, "renamed_from": old,
                                   "requirements": requirements, "requirements_rule": rule}
        version.update(hf_tuning_commit(tuning, repo, commit, requirements, date))
        renamed = next(((c, s, p) for c, _, s, p, o in history
                        if o == path and s.startswith("R")), None)
        if renamed:
            version["renamed_to"] = {"commit": renamed[0], "status": renamed[1],
                                     "path": renamed[2]}
        versions.append(version)
    return {"context_repositories": [HF_TUNING], "versions": versions}


def requirements_file(repo: GitRepository, commit: str, path: str
                      ) -> tuple[str | None, str | None]:
    """The requirements file describing a CSV version, and the rule that chose it."""
    from vram_ml.published.history import changed_files

    folder, base = os.path.dirname(path), os.path.basename(path)
    suffix = re.match(r"^a100_80gb_(\w+)\.csv$", base)
    mapped = f"{folder}/requirements" + (f"_{suffix.group(1)}" if suffix else "") + ".txt"
    present = set(repo.list_dir(commit, folder))
    if mapped not in present:
        mapped = f"{folder}/requirements.txt" if f"{folder}/requirements.txt" in present else None
    changed = [p for status, p in changed_files(repo, commit)
               if os.path.dirname(p) == folder and not status.startswith("D")
               and re.match(r"requirements.*\.txt$", os.path.basename(p))]
    if len(changed) == 1:
        chosen, rule = changed[0], f"{changed[0]} was committed together with the CSV"
        if mapped and mapped != chosen:
            rule += f"; ambiguous: name-matched {mapped} also exists at this commit"
    elif len(changed) > 1:
        chosen = mapped if mapped in changed else changed[0]
        rule = (f"several requirements files changed with the CSV ({', '.join(changed)}); "
                f"chose {chosen} by name")
    else:
        chosen = mapped
        rule = (f"not changed with the CSV; name-matched file {chosen} at this commit"
                if chosen else None)
    return (chosen, rule) if chosen else (None, None)


def hf_tuning_commit(tuning: Any, repo: GitRepository, commit: str, requirements: str | None,
                     date: str) -> dict[str, Any]:
    """The fms-hf-tuning commit the benchmark ran, and how it was found."""
    if tuning is None:
        return {"hf_tuning_commit": None, "hf_tuning_how": None}
    ref, how = None, None
    text = repo.read(commit, requirements) if requirements else None
    for line in (text or "").splitlines():
        if "fms-hf-tuning" in line or "fms_hf_tuning" in line:
            pinned = re.search(r"fms-hf-tuning\.git@([0-9a-f]{7,40})", line)
            if pinned:
                ref, how = pinned.group(1), f"pinned in {requirements}@{commit[:9]}"
            release = re.match(r"^fms-hf-tuning==(\S+)", line.strip())
            if release:
                ref = "v" + release.group(1)
                how = f"pinned fms-hf-tuning=={release.group(1)} in {requirements}@{commit[:9]}"
            break
    sha = tuning.git("rev-parse", ref + "^{commit}").strip() if ref else ""
    if not sha:
        sha = tuning.git("rev-list", "-1", f"--before={date}", "HEAD").strip()
        how = ((f"ref {ref} not in the fms-hf-tuning mirror; " if ref else "no fms-hf-tuning pin; ")
               + f"used nearest fms-hf-tuning main commit before {date}")
    return {"hf_tuning_commit": sha or None, "hf_tuning_how": how if sha else None}
