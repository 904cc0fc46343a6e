"""Reading pinned files from SOURCE_DIR: clones, bare mirrors, snapshots; one-line errors."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from vram_ml.published.git_files import SourceDir, SourceError


def git(folder: Path, *args: str) -> str:
    done = subprocess.run(["git", "-C", str(folder), *args], capture_output=True, text=True,
                          check=True, env={"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t",
                                           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t",
                                           "GIT_AUTHOR_DATE": "2024-01-01T00:00:00+00:00",
                                           "GIT_COMMITTER_DATE": "2024-01-01T00:00:00+00:00",
                                           "HOME": str(folder)})
    return done.stdout.strip()


@pytest.fixture
def clone(tmp_path: Path) -> tuple[Path, str, str]:
    """owner+name/ holding a clone with two commits of README.md (and docs/a.md in the 2nd)."""
    folder = tmp_path / "sources" / "owner+name"
    folder.mkdir(parents=True)
    git(folder, "init", "-q")
    (folder / "README.md").write_text("first\n")
    git(folder, "add", "."), git(folder, "commit", "-qm", "one")
    first = git(folder, "rev-parse", "HEAD")
    (folder / "README.md").write_text("second\nline two\n")
    (folder / "docs").mkdir()
    (folder / "docs" / "a.md").write_text("doc\n")
    git(folder, "add", "."), git(folder, "commit", "-qm", "two")
    return tmp_path / "sources", first, git(folder, "rev-parse", "HEAD")


def test_reads_each_version_at_its_commit(clone):
    root, first, second = clone
    with SourceDir(root) as sources:
        repo = sources.repository("owner/name")
        assert repo.read(first, "README.md") == "first\n"
        assert repo.read(second, "README.md") == "second\nline two\n"
        assert repo.read(first, "docs/a.md") is None  # not there yet: None, not an error
        assert repo.list_dir(second, "docs") == ["docs/a.md"]
        assert repo.cite(second, "README.md", "two") == f"README.md@{second}:2: line two"


def test_blob_id_is_gits(clone):
    root, first, _ = clone
    expected = git(root / "owner+name", "rev-parse", f"{first}:README.md")
    with SourceDir(root) as sources:
        assert sources.repository("owner/name").blob_id(first, "README.md") == expected


def test_bare_mirror_as_fetch_names_it_and_owner_slash_name(clone, tmp_path):
    root, first, _ = clone
    for target in (tmp_path / "b1" / "owner+name" / "repo", tmp_path / "b2" / "owner" / "name"):
        subprocess.run(["git", "clone", "-q", "--bare", str(root / "owner+name"), str(target)],
                       check=True)
        with SourceDir(target.parents[1] if target.name == "repo" else target.parents[1]) as s:
            assert s.repository("owner/name").read(first, "README.md") == "first\n"


def test_snapshot_layout(tmp_path):
    commit = "a" * 40
    (tmp_path / "owner+name" / commit).mkdir(parents=True)
    (tmp_path / "owner+name" / commit / "f.md").write_text("hello\n")
    with SourceDir(tmp_path) as sources:
        repo = sources.repository("owner/name")
        assert repo.read(commit, "f.md") == "hello\n"
        with pytest.raises(SourceError, match="no snapshot of commit"):
            repo.read("b" * 40, "f.md")


@pytest.mark.parametrize("case", ["no_dir", "no_repo", "no_commit", "short_commit"])
def test_missing_things_are_one_line_errors(clone, tmp_path, case):
    root, first, _ = clone
    with pytest.raises(SourceError) as error:
        if case == "no_dir":
            SourceDir(tmp_path / "absent")
        else:
            with SourceDir(root) as sources:
                if case == "no_repo":
                    sources.repository("other/repo")
                else:
                    commit = "0" * 40 if case == "no_commit" else first[:10]
                    sources.repository("owner/name").read(commit, "README.md")
    message = str(error.value)
    assert "\n" not in message and message
    assert {"no_dir": "no such directory", "no_repo": "not in", "no_commit": "is not in",
            "short_commit": "is not in"}[case] in message
