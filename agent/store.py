"""The store: a local spool that never loses a sample (agent/spool.py), then MLflow.

Every sample is first appended to the spool, durably; only then is it logged to MLflow
(agent/tracking.py), where agents sharing one tracking server claim specs and publish each sample
at most once (agent/claims.py). MLflow being down never loses a sample: `sync` replays the spool.
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from vram_ml.agent.spool import (  # noqa: F401 - Spool & co. are part of the store's interface
    SPOOL_NAME,
    Spool,
    SpoolError,
    SpoolScan,
    row_key,
)
from vram_ml.sample import Sample

DEFAULT_STORE_ENV = "VRAM_ML_STORE"


def default_store_dir() -> Path:
    """`$VRAM_ML_STORE`, else `~/.vram-ml/store`."""
    return Path(os.environ.get(DEFAULT_STORE_ENV) or Path.home() / ".vram-ml" / "store")


def default_tracking_uri(store_dir: Path) -> str:
    """MLflow's default here: an embedded SQLite file inside the store."""
    return f"sqlite:///{store_dir.resolve() / 'mlflow.db'}"


def spool_summary(samples: list[Sample]) -> dict[str, dict[str, int]]:
    """Counts by backend, status and device, for `agent status`."""
    return {
        "backend": dict(Counter(s.provenance.backend for s in samples)),
        "status": dict(Counter(s.measurement.status for s in samples)),
        "device": dict(Counter(s.provenance.device_name or "?" for s in samples)),
    }


@dataclass
class Recorded:
    """What happened to one sample: written to the spool (new), logged to MLflow (run_id; outcome
    logged | present | elsewhere, see tracking.Published; "" when MLflow was not reached)."""

    new: bool
    run_id: str = ""
    tracking_error: str = ""
    outcome: str = ""


class SampleStore:
    """The spool, then MLflow (optional): what the agent, `sync` and `dataset import` write to.

    Args:
        store_dir: the spool's folder (and the default SQLite MLflow store's).
        tracking_uri: MLflow URI; None = the SQLite file in `store_dir`; "" = spool only.
        experiment: MLflow experiment name.
        retry_s: after MLflow fails, samples go to the spool only for this long before the next
            try (a down server must not slow every sample by its timeout).
        read_only: for commands that only look (`agent status`): nothing is created, neither the
            store's folder and identity nor a SQLite MLflow database that is not there yet.
    """

    def __init__(self, store_dir: Path, tracking_uri: str | None = None,
                 experiment: str | None = None, retry_s: float = 60.0, read_only: bool = False):
        from vram_ml.agent.tracking import DEFAULT_EXPERIMENT, Tracking
        from vram_ml.tracking_uri import sqlite_path

        self.dir = Path(store_dir)
        self.spool = Spool(self.dir)
        uri = default_tracking_uri(self.dir) if tracking_uri is None else tracking_uri
        database = sqlite_path(uri)
        self.unopened_uri = ""  # read-only: a SQLite store not created yet (nothing logged)
        if read_only and database is not None and not database.exists():
            self.unopened_uri, uri = uri, ""
        self.tracking = None
        if uri:
            from vram_ml.agent.claims import ephemeral_identity, load_identity

            try:
                identity = ephemeral_identity() if read_only else load_identity(self.dir)
            except OSError:  # an unwritable store: the spool will say so; never publish as it
                identity = ephemeral_identity()
            self.tracking = Tracking(uri, experiment or DEFAULT_EXPERIMENT, self.dir / "artifacts",
                                     identity, self.dir / "tracking.lock")
        self.retry_s = retry_s
        self._down_until = 0.0
        self.tracking_error = ""

    def record(self, sample: Sample) -> Recorded:
        """Spool first (durable), then MLflow if it answers; never raises for MLflow.

        Raises:
            SpoolError: the spool cannot be written (nothing is logged to MLflow either).
        """
        new = self.spool.append(sample)
        return Recorded(new, *self._log(sample))

    def record_many(self, samples: list[Sample]) -> list[Recorded]:
        """`record` for many samples, spooled all together first (all or none)."""
        before = self.spool.keys()
        self.spool.append_many(samples)
        recorded, seen = [], set()
        for sample in samples:
            new = sample.sample_key not in before and sample.sample_key not in seen
            seen.add(sample.sample_key)
            recorded.append(Recorded(new, *self._log(sample)))
        return recorded

    def _tracking_up(self) -> bool:
        return self.tracking is not None and time.monotonic() >= self._down_until

    def _down(self, error: Exception) -> None:
        self._down_until = time.monotonic() + self.retry_s
        self.tracking_error = str(error)

    def _log(self, sample: Sample) -> tuple[str, str, str]:
        from vram_ml.agent.tracking import TrackingUnavailable

        if not self._tracking_up():
            return "", self.tracking_error, ""
        try:
            published = self.tracking.log(sample)
        except TrackingUnavailable as error:
            self._down(error)
            return "", self.tracking_error, ""
        self.tracking_error = ""
        return published.run_id, "", published.outcome

    def claim(self, sample_key: str, lease_s: float):
        """Claim a sample_key on the tracking server before measuring it (agent/claims.py).

        Returns:
            The Claim (won or not), or None when there is nobody to ask (spool only, or MLflow
            down): then measure unclaimed; publishing still stores the sample at most once.
        """
        from vram_ml.agent.tracking import TrackingUnavailable

        if not self._tracking_up():
            return None
        try:
            return self.tracking.claim(sample_key, lease_s)
        except TrackingUnavailable as error:
            self._down(error)
            return None

    def release(self, won) -> None:
        """Release a won claim (best effort: an unreleased claim runs out with its lease)."""
        from vram_ml.agent.tracking import TrackingUnavailable

        if won is None or not won.won or not self._tracking_up():
            return
        try:
            self.tracking.release(won)
        except TrackingUnavailable as error:
            self._down(error)

    def sync(self) -> dict[str, int]:
        """Replay the spool into MLflow: every sample without a finished run is published.

        Returns:
            {"spooled", "already", "logged", "elsewhere" (owned by another agent that has not
            finished logging it), "corrupt_lines"} counts.

        Raises:
            TrackingUnavailable: MLflow disabled, not installed or not answering.
        """
        from vram_ml.agent.tracking import TrackingUnavailable

        if self.tracking is None:
            raise TrackingUnavailable("MLflow disabled: nothing to sync to")
        scan = self.spool.scan()
        outcomes: Counter[str] = Counter()
        try:
            logged = self.tracking.logged_keys()
            missing = [sample for sample in scan.samples if sample.sample_key not in logged]
            for sample in missing:
                outcomes[self.tracking.log(sample).outcome] += 1
            self.tracking.release_leftovers()
        except TrackingUnavailable as error:
            self._down(error)
            raise
        self._down_until, self.tracking_error = 0.0, ""
        return {"spooled": len(scan.samples),
                "already": len(scan.samples) - len(missing) + outcomes["present"],
                "logged": outcomes["logged"], "elsewhere": outcomes["elsewhere"],
                "corrupt_lines": scan.corrupt_lines}

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
                self._down(error)
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
        if store.unopened_uri:
            status["tracking_uri"] = f"{store.unopened_uri} (not created yet)"
            status["logged"], status["pending"] = 0, len(scan.samples)
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
