"""Output paths a command will write, checked before it does any work.

A command that would only fail at its last step (after measuring, importing into the store or
training) checks its `--output` first: the folder is created (as the command would) and a probe
file is written and removed there, so a path under a regular file, inside /proc or on a read-only
disk fails at once, in one line, with nothing written or stored.
"""

from __future__ import annotations

import os
from pathlib import Path


class OutputPathError(ValueError):
    """An output path that cannot be written; the message is one line."""


def writable_file(path: str | Path, what: str = "output") -> Path:
    """`path` as a file this process can write (its folder is created if missing).

    Raises:
        OutputPathError: a folder where the file should be, or a folder that cannot hold it.
    """
    path = Path(path)
    if path.is_dir():
        raise OutputPathError(f"{what}: {path} is a folder, not a file")
    if path.exists() and not path.is_file():
        raise OutputPathError(f"{what}: {path} is not a regular file")
    _probe(path.parent, what, path)
    return path


def writable_dir(path: str | Path, what: str = "output") -> Path:
    """`path` as a folder this process can write files in (created if missing).

    Raises:
        OutputPathError: a file where the folder should be, or a folder that cannot be written.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OutputPathError(f"{what}: {path} is not a folder")
    _probe(path, what, path)
    return path


def _probe(folder: Path, what: str, target: Path) -> None:
    for ancestor in (folder, *folder.parents):
        if ancestor.exists():
            if not ancestor.is_dir():
                raise OutputPathError(f"{what}: cannot write {target} ({ancestor} is a file, "
                                      "not a folder)")
            break
    probe = folder / f".vram-ml-write-probe-{os.getpid()}"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with open(probe, "x", encoding="utf-8"):
            pass
        probe.unlink()
    except OSError as error:
        reason = error.strerror or type(error).__name__
        raise OutputPathError(f"{what}: cannot write {target} ({reason})") from None
