"""Read files at pinned commits from SOURCE_DIR: one git clone or bare mirror per repository.

SOURCE_DIR holds each repository under `owner+name` (how the fetch tool names its mirrors, with
the git directory itself or a `repo/` or `.git/` folder inside) or `owner/name`. A repository
too large to clone may instead be a *file snapshot*: `owner+name/<commit>/<path>`, the files
exactly as `https://raw.githubusercontent.com/owner/name/<commit>/<path>` serves them.

Only `commit:path` is ever read (plus a tree listing at a commit): a rebuild reads exactly the
file versions `sources.yaml` pins, whatever else the clone holds. Reads go through one
`git cat-file --batch` process per repository, so thousands of small reads stay fast.

Example:
    with SourceDir(Path("/work/.mirror")) as sources:
        text = sources.repository("huggingface/peft").read(commit, "README.md")
"""

from __future__ import annotations

import hashlib
import re
import subprocess
from pathlib import Path

HEX40 = re.compile(r"[0-9a-f]{40}")


class SourceError(ValueError):
    """SOURCE_DIR, a repository or a pinned commit is missing or unreadable; one line."""


class SourceDir:
    """The folder of clones; `repository(name)` finds one (and fails with one line if absent)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise SourceError(f"SOURCE_DIR {self.root}: no such directory")
        self._open: dict[str, RepositoryFiles] = {}

    def __enter__(self) -> SourceDir:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        for repository in self._open.values():
            repository.close()
        self._open.clear()

    def has(self, repository: str) -> bool:
        return self._locate(repository) is not None

    def repository(self, repository: str) -> RepositoryFiles:
        """The files of `owner/name`.

        Raises:
            SourceError: the repository is not in SOURCE_DIR.
        """
        if repository not in self._open:
            found = self._locate(repository)
            if found is None:
                owner_name = repository.replace("/", "+")
                raise SourceError(
                    f"repository {repository}: not in {self.root} (expected a git clone or bare "
                    f"mirror at {self.root / owner_name} or {self.root / repository})"
                )
            kind, path = found
            self._open[repository] = (
                GitRepository(repository, path)
                if kind == "git"
                else SnapshotRepository(repository, path)
            )
        return self._open[repository]

    def _locate(self, repository: str) -> tuple[str, Path] | None:
        for base in (self.root / repository.replace("/", "+"), self.root / repository):
            for candidate in (base / "repo", base / ".git", base):
                if (candidate / "HEAD").is_file() and (candidate / "objects").is_dir():
                    return "git", candidate
            if base.is_dir() and any(HEX40.fullmatch(p.name) for p in base.iterdir() if p.is_dir()):
                return "snapshot", base
        return None


class RepositoryFiles:
    """Files of one repository at given commits."""

    def __init__(self, repository: str, location: Path) -> None:
        self.name = repository
        self.location = location

    def read(self, commit: str, path: str) -> str | None:
        """The text of `path` at `commit`, or None when the file does not exist there.

        Raises:
            SourceError: the commit is not in this copy of the repository.
        """
        data = self.read_bytes(commit, path)
        return None if data is None else data.decode("utf-8", errors="replace")

    def read_bytes(self, commit: str, path: str) -> bytes | None:
        raise NotImplementedError

    def list_dir(self, commit: str, folder: str) -> list[str]:
        """Paths of the files directly in `folder` at `commit` (repository-relative)."""
        raise NotImplementedError

    def blob_id(self, commit: str, path: str) -> str | None:
        """Git's blob id of the file (sha1 of its bytes), or None when it does not exist."""
        data = self.read_bytes(commit, path)
        if data is None:
            return None
        return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()

    def exists(self, commit: str, path: str) -> bool:
        return self.read_bytes(commit, path) is not None

    def cite(
        self,
        commit: str,
        path: str,
        pattern: str,
        regex: bool = False,
        nth: int = 1,
        after: str | None = None,
    ) -> str | None:
        """'path@commit:LINE: <line>' for the nth line holding `pattern`, or None (not found).

        With `after`, the search starts after the first line holding that text.
        """
        text = self.read(commit, path)
        if text is None:
            return None
        started, seen = after is None, 0
        for number, line in enumerate(text.splitlines(), start=1):
            if not started:
                started = after in line
                continue
            if re.search(pattern, line) if regex else pattern in line:
                seen += 1
                if seen == nth:
                    return f"{path}@{commit}:{number}: {line.strip()}"
        return None

    def close(self) -> None:
        """Release what reading holds (a git process)."""


class GitRepository(RepositoryFiles):
    """A git clone or bare mirror, read with `git cat-file --batch`."""

    def __init__(self, repository: str, git_dir: Path) -> None:
        super().__init__(repository, git_dir)
        self._batch: subprocess.Popen | None = None
        self._cache: dict[tuple[str, str], bytes | None] = {}
        self._commits: dict[str, bool] = {}

    def read_bytes(self, commit: str, path: str) -> bytes | None:
        key = (commit, path)
        if key not in self._cache:
            self.require_commit(commit)
            self._cache[key] = self._cat(f"{commit}:{path}")
        return self._cache[key]

    def require_commit(self, commit: str) -> None:
        """Raises SourceError unless `commit` is a full commit id present in this copy."""
        if commit not in self._commits:
            self._commits[commit] = bool(HEX40.fullmatch(commit)) and self._is_commit(commit)
        if not self._commits[commit]:
            raise SourceError(
                f"repository {self.name}: commit {commit} is not in {self.location} (the copy "
                "is older than sources.yaml, or another repository; fetch it again)"
            )

    def list_dir(self, commit: str, folder: str) -> list[str]:
        self.require_commit(commit)
        listing = self.git("ls-tree", "--name-only", commit, folder.rstrip("/") + "/")
        return [line for line in listing.splitlines() if line]

    def git(self, *args: str) -> str:
        """Output of one git command on this repository (text; empty on failure)."""
        done = subprocess.run(
            ["git", "--git-dir", str(self.location), *args], capture_output=True, check=False
        )
        return done.stdout.decode("utf-8", errors="replace") if done.returncode == 0 else ""

    def _is_commit(self, commit: str) -> bool:
        done = subprocess.run(
            ["git", "--git-dir", str(self.location), "cat-file", "-e", f"{commit}^{{commit}}"],
            capture_output=True,
            check=False,
        )
        return done.returncode == 0

    def _cat(self, spec: str) -> bytes | None:
        if self._batch is None:
            self._batch = subprocess.Popen(
                ["git", "--git-dir", str(self.location), "cat-file", "--batch"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
            )
        assert self._batch.stdin is not None and self._batch.stdout is not None
        self._batch.stdin.write(spec.encode() + b"\n")
        self._batch.stdin.flush()
        header = self._batch.stdout.readline().decode().split()
        if len(header) != 3 or header[1] not in ("blob", "tree", "commit", "tag"):
            return None  # "<spec> missing": no such path at this commit
        data = self._batch.stdout.read(int(header[2]))
        self._batch.stdout.read(1)  # the newline after the contents
        return data if header[1] == "blob" else None

    def close(self) -> None:
        if self._batch is not None:
            assert self._batch.stdin is not None
            self._batch.stdin.close()
            self._batch.wait()
            self._batch = None


class SnapshotRepository(RepositoryFiles):
    """Files saved as `<commit>/<path>` (a repository too large to clone)."""

    def read_bytes(self, commit: str, path: str) -> bytes | None:
        self.require_commit(commit)
        file = self.location / commit / path
        return file.read_bytes() if file.is_file() else None

    def require_commit(self, commit: str) -> None:
        if not (HEX40.fullmatch(commit) and (self.location / commit).is_dir()):
            raise SourceError(
                f"repository {self.name}: no snapshot of commit {commit} in {self.location}"
            )

    def list_dir(self, commit: str, folder: str) -> list[str]:
        self.require_commit(commit)
        base = self.location / commit / folder
        if not base.is_dir():
            return []
        return sorted(f"{folder.rstrip('/')}/{p.name}" for p in base.iterdir())
