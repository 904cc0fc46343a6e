"""The store: a local spool that never loses a sample, then MLflow.

Every sample is first appended to the spool (`<store>/spool.jsonl`, one flat dataset row per
line, `vram_ml.sample.sample_to_row`), flushed and fsynced, under an exclusive file lock; only
then is it logged to MLflow (agent/tracking.py). The spool refuses a second sample with the same
`Sample.sample_key` (spec_id + backend + device + library versions), so re-running, replaying or
importing never doubles a sample. A torn last line (a crash mid-write) is dropped on the next
append; a corrupt line elsewhere is skipped and counted, never fatal.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from vram_ml.sample import Provenance, Sample, SampleError, row_to_sample, sample_to_row

DEFAULT_STORE_ENV = "VRAM_ML_STORE"
SPOOL_NAME = "spool.jsonl"


def default_store_dir() -> Path:
    """`$VRAM_ML_STORE`, else `~/.vram-ml/store`."""
    return Path(os.environ.get(DEFAULT_STORE_ENV) or Path.home() / ".vram-ml" / "store")


def default_tracking_uri(store_dir: Path) -> str:
    """MLflow's default here: an embedded SQLite file inside the store."""
    return f"sqlite:///{store_dir.resolve() / 'mlflow.db'}"


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
        self.dir.mkdir(parents=True, exist_ok=True)
        with open(self._lock_path, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

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
        """Append the samples whose sample_key is new (one fsync); returns how many were new."""
        with self._locked():
            self._drop_torn_tail()
            known = self.keys()
            lines = []
            for sample in samples:
                if sample.sample_key in known:
                    continue
                known.add(sample.sample_key)
                lines.append(json.dumps(sample_to_row(sample), sort_keys=True) + "\n")
            if lines:
                with open(self.path, "a", encoding="utf-8") as handle:
                    handle.writelines(lines)
                    handle.flush()
                    os.fsync(handle.fileno())
                _fsync_dir(self.dir)
            return len(lines)

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


_DEVICE_KEY_FIELDS = ("device_name", "torch_version", "transformers_version", "peft_version",
                      "bitsandbytes_version")


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def spool_summary(samples: list[Sample]) -> dict[str, dict[str, int]]:
    """Counts by backend, status and device, for `agent status`."""
    return {
        "backend": dict(Counter(s.provenance.backend for s in samples)),
        "status": dict(Counter(s.measurement.status for s in samples)),
        "device": dict(Counter(s.provenance.device_name or "?" for s in samples)),
    }


@dataclass
class Recorded:
    """What happened to one sample: written to the spool (new), logged to MLflow (run_id)."""

    new: bool
    run_id: str = ""
    tracking_error: str = ""


class SampleStore:
    """The spool, then MLflow (optional): what the agent, `sync` and `dataset import` write to.

    Args:
        store_dir: the spool's folder (and the default SQLite MLflow store's).
        tracking_uri: MLflow URI; None = the SQLite file in `store_dir`; "" = spool only.
        experiment: MLflow experiment name.
        retry_s: after MLflow fails, samples go to the spool only for this long before the next
            try (a down server must not slow every sample by its timeout).
    """

    def __init__(self, store_dir: Path, tracking_uri: str | None = None,
                 experiment: str | None = None, retry_s: float = 60.0):
        from vram_ml.agent.tracking import DEFAULT_EXPERIMENT, Tracking

        self.dir = Path(store_dir)
        self.spool = Spool(self.dir)
        uri = default_tracking_uri(self.dir) if tracking_uri is None else tracking_uri
        self.tracking = Tracking(uri, experiment or DEFAULT_EXPERIMENT, self.dir / "artifacts") \
            if uri else None
        self.retry_s = retry_s
        self._down_until = 0.0
        self.tracking_error = ""

    def record(self, sample: Sample) -> Recorded:
        """Spool first (durable), then MLflow if it answers; never raises for MLflow."""
        new = self.spool.append(sample)
        return Recorded(new, *self._log(sample))

    def _tracking_up(self) -> bool:
        return self.tracking is not None and time.monotonic() >= self._down_until

    def _log(self, sample: Sample) -> tuple[str, str]:
        from vram_ml.agent.tracking import TrackingUnavailable

        if not self._tracking_up():
            return "", self.tracking_error
        try:
            run_id = self.tracking.log(sample)
        except TrackingUnavailable as error:
            self._down_until = time.monotonic() + self.retry_s
            self.tracking_error = str(error)
            return "", self.tracking_error
        self.tracking_error = ""
        return run_id, ""

    def sync(self) -> dict[str, int]:
        """Replay the spool into MLflow: every sample without a finished run is logged.

        Returns:
            {"spooled", "already", "logged"} counts.

        Raises:
            TrackingUnavailable: MLflow disabled, not installed or not answering.
        """
        from vram_ml.agent.tracking import TrackingUnavailable

        if self.tracking is None:
            raise TrackingUnavailable("MLflow disabled: nothing to sync to")
        samples = self.spool.samples()
        try:
            logged = self.tracking.logged_keys()
            missing = [sample for sample in samples if sample.sample_key not in logged]
            for sample in missing:
                self.tracking.log(sample)
        except TrackingUnavailable as error:
            self._down_until = time.monotonic() + self.retry_s
            self.tracking_error = str(error)
            raise
        self._down_until, self.tracking_error = 0.0, ""
        return {"spooled": len(samples), "already": len(samples) - len(missing),
                "logged": len(missing)}

    def measured(self, include_tracking: bool = True) -> list[tuple[str, str, str]]:
        """(spec_id, backend, device_name) of every sample in the spool and, if it answers,
        MLflow (a shared server holds other machines' samples: the planner skips those too)."""
        from vram_ml.agent.tracking import TrackingUnavailable

        done = {(s.spec_id, s.provenance.backend, s.provenance.device_name)
                for s in self.spool.samples()}
        if include_tracking and self._tracking_up():
            try:
                for run in self.tracking.finished_runs():
                    tags = run.data.tags
                    done.add((tags.get("spec_id", ""), tags.get("backend", ""),
                              tags.get("device_name", "")))
            except TrackingUnavailable as error:
                self.tracking_error = str(error)
        return sorted(done)



def store_status(store: SampleStore) -> dict:
    """`vram-ml agent status`: what the spool holds and how much of it MLflow has."""
    from vram_ml.agent.tracking import TrackingUnavailable

    scan = store.spool.scan()
    status = {"store": str(store.dir), "spool": str(store.spool.path),
              "samples": len(scan.samples), "corrupt_lines": scan.corrupt_lines,
              **spool_summary(scan.samples), "tracking_uri": "", "logged": None, "pending": None,
              "tracking_error": "", "running": running_now(store.dir)}
    if store.tracking is None:
        return status
    status["tracking_uri"] = store.tracking.uri
    try:
        logged = store.tracking.logged_keys()
    except TrackingUnavailable as error:
        status["tracking_error"] = str(error)
        return status
    status["logged"] = len(logged)
    status["pending"] = sum(s.sample_key not in logged for s in scan.samples)
    return status


def running_now(store_dir: Path) -> dict:
    """What a live agent on this store measures now ({} when none runs)."""
    path = Path(store_dir) / "running.json"
    try:
        running = json.loads(path.read_text())
        os.kill(int(running["agent_pid"]), 0)
    except (OSError, ValueError, KeyError, TypeError):
        return {}  # no file, or a stale one from a killed agent
    return running.get("slots", {})
