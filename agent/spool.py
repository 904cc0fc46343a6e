"""The spool: `<store>/spool.jsonl`, an append-only file that never loses a sample.

One flat dataset row per line (`vram_ml.sample.sample_to_row`), appended under an exclusive file
lock, flushed and fsynced before anything else happens to the sample. A second sample with the
same `Sample.sample_key` (spec_id + backend + device + library versions) is refused, so
re-running, replaying or importing never doubles a sample. A torn last line (a crash mid-write) is
dropped on the next append; a corrupt line elsewhere is skipped and counted, never fatal. A write
that fails (disk full, read-only folder) is cut back to the last whole line and raises
`SpoolError`: the spool never holds part of a row.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

from vram_ml.sample import Provenance, Sample, SampleError, row_to_sample, sample_to_row

SPOOL_NAME = "spool.jsonl"


class SpoolError(OSError):
    """The spool cannot be written (disk full, read-only, no permission); one line."""


def _spool_error(action: str, path: Path, error: OSError) -> SpoolError:
    reason = error.strerror or str(error) or type(error).__name__
    return SpoolError(f"spool: cannot {action} {path} ({reason})")


@dataclass
class SpoolScan:
    samples: list[Sample] = field(default_factory=list)
    corrupt_lines: int = 0


class Spool:
    """Append-only JSONL of samples, deduplicated by sample_key, durable before anything else."""

    def __init__(self, store_dir: Path):
        self.dir = Path(store_dir)
        self.path = self.dir / SPOOL_NAME
        self._lock_path = self.dir / "spool.lock"
        self._known: set[str] = set()
        self._offset = 0

    @contextmanager
    def _locked(self) -> Iterator[None]:
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            lock = open(self._lock_path, "a")
        except OSError as error:
            raise _spool_error("write", self.dir, error) from None
        with lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def check_writable(self) -> None:
        """Raise SpoolError now if the spool's folder cannot be written (before measuring)."""
        with self._locked():
            probe = self.dir / f".probe-{os.getpid()}"
            try:
                probe.write_bytes(b"")
                probe.unlink()
            except OSError as error:
                raise _spool_error("write", self.dir, error) from None

    def scan(self) -> SpoolScan:
        """All readable samples (first of each sample_key) and the count of corrupt lines."""
        scan, seen = SpoolScan(), set()
        for line in self._lines():
            try:
                sample = row_to_sample(json.loads(line))
            except (json.JSONDecodeError, SampleError, TypeError, AttributeError):
                scan.corrupt_lines += 1
                continue
            if sample.sample_key not in seen:
                seen.add(sample.sample_key)
                scan.samples.append(sample)
        return scan

    def samples(self) -> list[Sample]:
        return self.scan().samples

    def keys(self) -> set[str]:
        """sample_keys in the spool, read incrementally (only the bytes added since last time)."""
        if not self.path.exists():
            self._known, self._offset = set(), 0
            return set()
        if self.path.stat().st_size < self._offset:  # rewritten: start over
            self._known, self._offset = set(), 0
        with open(self.path, "rb") as handle:
            handle.seek(self._offset)
            for raw in handle:
                if not raw.endswith(b"\n"):
                    break
                self._offset += len(raw)
                key = row_key(raw)
                if key:
                    self._known.add(key)
        return set(self._known)

    def _lines(self) -> Iterator[str]:
        if not self.path.exists():
            return
        with open(self.path, encoding="utf-8", errors="replace") as handle:
            for line in handle:
                if line.endswith("\n") and line.strip():
                    yield line  # a line without its newline is a torn write: not a sample

    def append(self, sample: Sample) -> bool:
        """Append `sample` durably unless its sample_key is already there.

        Returns:
            True if written, False if the spool already held that sample_key.
        """
        return self.append_many([sample]) == 1

    def append_many(self, samples: list[Sample]) -> int:
        """Append the samples whose sample_key is new (one write, one fsync): all or none.

        Returns:
            How many were new.

        Raises:
            SpoolError: the write failed; the spool is as it was before the call.
        """
        with self._locked():
            try:
                self._drop_torn_tail()
            except OSError as error:
                raise _spool_error("repair", self.path, error) from None
            known = self.keys()
            lines = []
            for sample in samples:
                if sample.sample_key in known:
                    continue
                known.add(sample.sample_key)
                lines.append(json.dumps(sample_to_row(sample), sort_keys=True) + "\n")
            if lines:
                self._write("".join(lines).encode("utf-8"))
            return len(lines)

    def _write(self, data: bytes) -> None:
        """Append `data` durably, or cut the file back to its old size and raise SpoolError."""
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        except OSError as error:
            raise _spool_error("write", self.path, error) from None
        size = os.fstat(fd).st_size
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        except OSError as error:
            with suppress(OSError):
                os.ftruncate(fd, size)  # no partial row stays behind
                os.fsync(fd)
            raise _spool_error("append to", self.path, error) from None
        finally:
            os.close(fd)
        with suppress(OSError):
            _fsync_dir(self.dir)

    def _drop_torn_tail(self) -> None:
        if not self.path.exists() or self.path.stat().st_size == 0:
            return
        with open(self.path, "rb+") as handle:
            handle.seek(-1, os.SEEK_END)
            if handle.read(1) == b"\n":
                return
            handle.seek(0)
            data = handle.read()
            handle.truncate(data.rfind(b"\n") + 1)
            handle.flush()
            os.fsync(handle.fileno())


def row_key(raw: bytes | str) -> str:
    """The sample_key of one spool line without rebuilding its Spec ("" if unreadable)."""
    try:
        row = json.loads(raw)
        device = Provenance(
            backend=row["backend"], agent_version="", created_at="",
            **{name: row.get(name) or "" for name in _DEVICE_KEY_FIELDS},
        ).device_key
        return f"{row['spec_id']}|{device}"
    except (json.JSONDecodeError, KeyError, TypeError, SampleError, UnicodeDecodeError):
        return ""


_DEVICE_KEY_FIELDS = ("device_name", "torch_version", "installed_transformers_version",
                      "installed_peft_version", "installed_bitsandbytes_version")


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
