"""sources.yaml from git history: every version of a document, newest first, each with its blob;
and a manifest that is not one fails in one line."""

from __future__ import annotations

import subprocess

import pytest

from vram_ml.published.git_files import SourceDir
from vram_ml.published.history import document_versions, dump_manifest
from vram_ml.published.manifest import ManifestError, load_manifest
from vram_ml.published.sources import PublishedSource, source_named

from .test_git_files import git


def test_document_versions_lists_each_change_up_to_the_pinned_commit(tmp_path):
    folder = tmp_path / "o+n"
    folder.mkdir()
    git(folder, "init", "-q")
    commits = []
    for number, text in enumerate(["a\n", "b\n", None, "c\n"]):
        readme = folder / "README.md"
        if text is None:
            readme.unlink()
        else:
            readme.write_text(text)
        (folder / f"other{number}").write_text("x")
        git(folder, "add", "-A"), git(folder, "commit", "-qm", str(number),
                                      f"--date=2024-0{number + 1}-01T00:00:00+00:00")
        commits.append(git(folder, "rev-parse", "HEAD"))
    source = PublishedSource("s", "o/n", source_named("qwen").parser, "documents",
                             targets=({"doc": "README.md", "paths": ["README.md"],
                                       "commit": commits[3]},), pinned=commits[3])
    with SourceDir(tmp_path) as sources:
        versions = document_versions(sources.repository("o/n"), source)
    assert [v["commit"] for v in versions] == [commits[3], commits[1], commits[0]]
    blob = subprocess.run(["git", "-C", str(folder), "rev-parse", f"{commits[1]}:README.md"],
                          capture_output=True, text=True).stdout.strip()
    assert versions[1]["blob"] == blob and all(v["document"] == "README.md" for v in versions)


def test_a_manifest_round_trips_and_bad_ones_fail_in_one_line(tmp_path):
    path = tmp_path / "sources.yaml"
    path.write_text(dump_manifest({"format": 1, "sources": [
        {"name": "qwen", "repository": "QwenLM/Qwen", "pinned": "a" * 40,
         "versions": [{"commit": "a" * 40, "path": "README.md"}]}]}))
    assert load_manifest(path)["qwen"].versions[0]["path"] == "README.md"
    for text, expected in (("format: 2\n", "not a sources manifest"), ("[", "unreadable"),
                           ("format: 1\nsources:\n- name: q\n  repository: o/n\n  versions:\n"
                            "  - {commit: " + "a" * 40 + ", path: ../x}\n", "bad path")):
        path.write_text(text)
        with pytest.raises(ManifestError, match=expected) as error:
            load_manifest(path)
        assert "\n" not in str(error.value)
    with pytest.raises(ManifestError, match="no such file"):
        load_manifest(tmp_path / "absent.yaml")
