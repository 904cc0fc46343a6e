"""The agent loop: plan, one worker per GPU (or cpu slot), measure, store; signals and budget.

- Resuming: the plan skips every spec_id already stored for this backend and device, so a
  restarted agent goes on where it stopped; the spool's sample_key dedup makes a replay harmless.
- SIGINT / SIGTERM, first: no new sample starts; running samples finish and are stored.
  Second: running samples are aborted (children killed, no sample stored: they stay planned).
- Budget: no sample starts after the deadline, nor when the time left is under the mean seconds
  per sample so far; a sample still running `grace_s` after the deadline is aborted.
- Many agents, one tracking server: each spec is claimed on the server before it is measured
  (agent/claims.py); a spec another agent holds or has stored is skipped. With MLflow down or off,
  specs are measured unclaimed; publishing still stores each sample at most once.
- The spool cannot be written (disk full, read-only): the agent stops at once with that error
  (running samples aborted, their specs stay planned); nothing partial is left in the spool.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections import deque
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vram_ml.agent.gpu_pool import GpuPool, parse_gpus
from vram_ml.agent.planner import Planned, load_space, make_plan, read_plan_file
from vram_ml.agent.store import SampleStore, SpoolError
from vram_ml.agent.tracking import TrackingUnavailable
from vram_ml.agent.worker import DEFAULT_TIMEOUT_S, Children, Slot, measure_isolated, provenance

Events = Callable[..., None]
WAIT_BUSY_S = 30.0  # a busy GPU is re-checked this often
RUNNING_NAME = "running.json"
LEASE_MARGIN_S = 300.0  # a claim's lease = sample timeout + this (storing, clock skew)


@dataclass
class AgentOptions:
    """Everything `vram-ml agent run` takes (see its --help)."""

    store_dir: Path
    tracking_uri: str | None = None  # None: SQLite in store_dir; "": spool only
    experiment: str | None = None
    backend: str = "cuda"
    gpus: str = "auto"
    gpus_per_sample: int = 1  # >1: multi-GPU slots of that many GPUs (torchrun, agent/ranks.py)
    workers: int = 1  # cpu backend: parallel children
    plan_file: Path | None = None
    space_file: Path | None = None
    strategy: str = "coverage"
    budget_s: float | None = None
    max_samples: int | None = None
    steps: int = 3
    sample_timeout_s: float = DEFAULT_TIMEOUT_S
    grace_s: float = 60.0
    max_used_bytes: int = 2 * 2**30
    handle_signals: bool = True


@dataclass
class RunSummary:
    planned: int = 0
    started: int = 0
    stored: int = 0  # new samples in the spool
    duplicates: int = 0  # measured but already in the spool (another agent was faster)
    claimed_elsewhere: int = 0  # skipped: another agent claimed or stored the spec
    status: dict[str, int] = field(default_factory=lambda: {"ok": 0, "oom": 0, "error": 0})
    aborted: int = 0
    logged: int = 0  # samples logged to MLflow during the run
    seconds: float = 0.0
    stop_reason: str = "plan done"
    tracking_error: str = ""
    spool_error: str = ""  # the spool could not be written: the agent stopped
    notes: list[str] = field(default_factory=list)
    synced_at_end: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


class Agent:
    """One agent run (`run()`); `events(kind, **data)` receives planned / started / finished /
    skipped / aborted / waiting / stopping, for the progress display."""

    def __init__(self, options: AgentOptions, events: Events | None = None):
        self.options = options
        self.events = events or (lambda kind, **data: None)
        self.store = SampleStore(options.store_dir, options.tracking_uri, options.experiment)
        self.summary = RunSummary()
        self.stop = threading.Event()
        self.abort = threading.Event()
        self.queue: deque[Planned] = deque()
        self.lock = threading.Lock()
        self.deadline = None if options.budget_s is None else time.monotonic() + options.budget_s
        self.pool = GpuPool(parse_gpus(options.gpus), options.max_used_bytes)
        # this process (a CUDA context in it is ours, e.g. a test's) and every child it started,
        # from its spawn on (NVML may lag)
        self.own_pids: set[int] = {os.getpid()}
        self.running: dict[str, dict[str, Any]] = {}  # slot label -> what it measures now
        self.sample_seconds: list[float] = []

    # --- set-up -------------------------------------------------------------------------------

    def slots(self) -> tuple[list[Slot], str, int | None]:
        """(slots, device name, smallest device memory) for this backend."""
        if self.options.backend == "cpu":
            workers = range(max(1, self.options.workers))
            return [Slot("cpu", worker=n) for n in workers], "cpu", None
        gpus = self.pool.choose(frozenset(self.own_pids))
        size = max(1, self.options.gpus_per_sample)
        if size > 1:  # slots of `size` GPUs each for multi-GPU specs; leftovers stay idle
            groups = [gpus[i:i + size] for i in range(0, len(gpus) - size + 1, size)]
            slots = [Slot("cuda", group[0].index, gpu_indices=tuple(g.index for g in group))
                     for group in groups]
        else:
            slots = [Slot("cuda", g.index) for g in gpus]
        return slots, gpus[0].name, min(g.total_bytes for g in gpus)

    def plan(self, device_name: str, device_total: int | None) -> list[Planned]:
        done = {spec_id for spec_id, backend, device in self.store.measured()
                if backend == self.options.backend and device == device_name}
        if self.options.plan_file:
            specs = read_plan_file(self.options.plan_file)
            self.summary.notes.append(f"plan file: {len(specs)} specs, "
                                      f"{sum(s.spec_id in done for s in specs)} already measured")
            return [Planned(s, "plan") for s in specs if s.spec_id not in done]
        space = load_space(self.options.space_file, self.options.backend)
        scan = self.store.spool.scan()
        measured = [s.spec for s in scan.samples if s.provenance.backend == self.options.backend]
        plan = make_plan(space, measured, done, device_total, self.options.strategy,
                         self.options.max_samples)
        self.summary.notes.extend(plan.notes)
        return plan.planned

    def replay(self) -> None:
        """Replay the spool into MLflow before measuring (what a previous run could not log)."""
        if self.store.tracking is None:
            return
        try:
            result = self.store.sync()
        except TrackingUnavailable:
            return  # the store remembers the error; samples go to the spool meanwhile
        if result["logged"]:
            self.summary.notes.append(f"replayed {result['logged']} spooled sample(s) to MLflow")

    # --- the loop -----------------------------------------------------------------------------

    def run(self) -> RunSummary:
        """Measure the plan. Raises SpoolError when the store cannot be written at all."""
        started = time.monotonic()
        self.store.spool.check_writable()
        corrupt = self.store.spool.scan().corrupt_lines
        if corrupt:
            self.summary.notes.append(f"warning: spool {self.store.spool.path}: {corrupt} corrupt "
                                      "line(s) skipped (kept in the file, not read as samples)")
        restore = self._install_signals()
        try:
            slots, device_name, device_total = self.slots()
            self.replay()
            self.queue.extend(self.plan(device_name, device_total))
            self.summary.planned = len(self.queue)
            self.events("planned", total=self._total(), notes=list(self.summary.notes),
                        slots=[s.label for s in slots])
            threads = [threading.Thread(target=self._work, args=(slot,), name=slot.label,
                                        daemon=True) for slot in slots]
            for thread in threads:
                thread.start()
            while any(thread.is_alive() for thread in threads):
                for thread in threads:
                    thread.join(timeout=0.2)
                if self.deadline and time.monotonic() > self.deadline + self.options.grace_s:
                    self._stop("budget grace over", abort=True)
        finally:
            restore()
        self._sync_at_end()
        self.summary.seconds = time.monotonic() - started
        self.summary.tracking_error = self.store.tracking_error
        return self.summary

    def _total(self) -> int:
        limit = self.options.max_samples
        return min(self.summary.planned, limit) if limit is not None else self.summary.planned

    def _next(self) -> Planned | None:
        with self.lock:
            if self.stop.is_set() or not self.queue:
                return None
            if self.options.max_samples is not None and \
                    self.summary.started >= self.options.max_samples:
                self._stop("max samples reached")
                return None
            if self.deadline is not None:
                left = self.deadline - time.monotonic()
                typical = sum(self.sample_seconds) / len(self.sample_seconds) \
                    if self.sample_seconds else 0.0
                if left <= 0 or left < typical:
                    self._stop("budget spent")
                    return None
            self.summary.started += 1
            return self.queue.popleft()

    def _work(self, slot: Slot) -> None:
        children = Children(slot, self.options.store_dir / "work", warm=True,
                            on_spawn=self._own)
        try:
            self._measure_all(slot, children)
        finally:
            children.close()

    def _claim(self, slot: Slot, planned: Planned, device_key: str):
        """Claim the spec on the tracking server; None = measure unclaimed, False = skip it."""
        lease_s = self.options.sample_timeout_s + LEASE_MARGIN_S
        claim = self.store.claim(f"{planned.spec.spec_id}|{device_key}", lease_s)
        if claim is None or claim.won:
            return claim
        with self.lock:
            self.summary.started -= 1
            self.summary.claimed_elsewhere += 1
        self.events("skipped", slot=slot.label, spec=planned.spec, reason=claim.reason)
        return False

    def _measure_all(self, slot: Slot, children: Children) -> None:
        device_key = provenance(slot).device_key  # what the samples' sample_keys will hold
        while (planned := self._next()) is not None:
            if slot.backend == "cuda" and planned.spec.num_gpus != len(slot.devices):
                with self.lock:  # a multi-GPU spec needs a slot of its size (--gpus-per-sample)
                    self.summary.started -= 1
                self.events("skipped", slot=slot.label, spec=planned.spec,
                            reason=f"needs {planned.spec.num_gpus} GPUs per sample")
                continue
            if slot.backend == "cuda" and not self._wait_until_spare(slot):
                with self.lock:
                    self.queue.appendleft(planned)
                    self.summary.started -= 1
                return
            claim = self._claim(slot, planned, device_key)
            if claim is False:
                continue
            try:
                self._measure_one(slot, children, planned)
            finally:
                self.store.release(claim)

    def _measure_one(self, slot: Slot, children: Children, planned: Planned) -> None:
        """Measure one spec in a child, then record it (spool first, then MLflow)."""
        begin = time.monotonic()
        try:
            sample = measure_isolated(
                planned.spec, slot, self.options.store_dir / "work", self.options.steps,
                self.options.sample_timeout_s, self.abort,
                on_start=lambda pid: self._started(slot, planned, pid), children=children,
                warm_next=self._more_to_come(),
            )
        except OSError as error:  # the work folder (child logs, results) cannot be written
            sample = None
            self._spool_failed(f"store: cannot write {error.filename or 'work files'} "
                               f"({error.strerror or error})")
        with self.lock:
            self.running.pop(slot.label, None)
            write_running(self.options.store_dir, self.running)
        if sample is None:
            with self.lock:
                self.summary.aborted += 1
            self.events("aborted", slot=slot.label, spec=planned.spec)
            return
        try:
            recorded = self.store.record(sample)  # spool first, then MLflow
        except SpoolError as error:
            with self.lock:
                self.summary.aborted += 1
            self._spool_failed(str(error))
            return
        with self.lock:
            self.sample_seconds.append(time.monotonic() - begin)
            self.summary.status[sample.measurement.status] += 1
            self.summary.stored += recorded.new
            self.summary.duplicates += not recorded.new
            self.summary.logged += bool(recorded.run_id)
        self.events("finished", slot=slot.label, sample=sample, recorded=recorded,
                    seconds=time.monotonic() - begin, summary=self.summary, total=self._total())

    def _spool_failed(self, message: str) -> None:
        """Nothing more can be stored: stop now, abort what runs (those specs stay planned)."""
        with self.lock:
            self.summary.spool_error = self.summary.spool_error or message
        self._stop(message, abort=True)

    def _more_to_come(self) -> bool:
        with self.lock:
            limit = self.options.max_samples
            return bool(self.queue) and not self.stop.is_set() and (
                limit is None or self.summary.started < limit)

    def _own(self, pid: int) -> None:
        """A child of this agent, from its spawn on (see Children)."""
        with self.lock:
            self.own_pids.add(pid)

    def _started(self, slot: Slot, planned: Planned, pid: int) -> None:
        with self.lock:
            self.own_pids.add(pid)
            self.running[slot.label] = {
                "spec_id": planned.spec.spec_id, "model": planned.spec.resolved_model.name,
                "pid": pid, "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
            write_running(self.options.store_dir, self.running)
        self.events("started", slot=slot.label, spec=planned.spec, reason=planned.reason, pid=pid)

    def _wait_until_spare(self, slot: Slot) -> bool:
        while not self.stop.is_set():
            with self.lock:
                own = frozenset(self.own_pids)
            spare, reason = self.pool.is_spare(slot.gpu_index, own)
            if spare:
                return True
            self.events("waiting", slot=slot.label, reason=reason)
            if self.deadline is not None and time.monotonic() > self.deadline:
                self._stop("budget spent")
                return False
            self.stop.wait(WAIT_BUSY_S)
        return False

    def _stop(self, reason: str, abort: bool = False) -> None:
        if not self.stop.is_set():
            self.summary.stop_reason = reason
            self.stop.set()
            self.events("stopping", reason=reason, abort=False)
        if abort and not self.abort.is_set():
            self.summary.stop_reason = f"{self.summary.stop_reason}; {reason}: aborted"
            self.abort.set()
            self.events("stopping", reason=reason, abort=True)

    def _install_signals(self) -> Callable[[], None]:
        in_main = threading.current_thread() is threading.main_thread()
        if not self.options.handle_signals or not in_main:
            return lambda: None

        def handle(signum: int, _frame: Any) -> None:
            name = signal.Signals(signum).name
            self._stop(name, abort=self.stop.is_set())

        previous = {sig: signal.signal(sig, handle) for sig in (signal.SIGINT, signal.SIGTERM)}

        def restore() -> None:
            for sig, old in previous.items():
                signal.signal(sig, old)

        return restore

    def _sync_at_end(self) -> None:
        if self.store.tracking is None or not self.store.tracking_error:
            return
        try:
            self.summary.synced_at_end = self.store.sync()
        except TrackingUnavailable:
            pass  # still down: `vram-ml agent sync` (or the next run) replays the spool


def write_running(store_dir: Path, running: dict[str, dict[str, Any]]) -> None:
    """`<store>/running.json`: the agent's pid and what each slot measures now (agent status)."""
    path = Path(store_dir) / RUNNING_NAME
    if not running:
        with suppress(OSError):
            path.unlink(missing_ok=True)
        return
    temporary = path.with_suffix(".tmp")
    try:
        temporary.write_text(json.dumps({"agent_pid": os.getpid(), "slots": running}))
        os.replace(temporary, path)
    except OSError:
        pass  # a status file only: a full disk is reported where samples are written


def run_agent(options: AgentOptions, events: Events | None = None) -> RunSummary:
    """Plan and measure until the plan, the budget or max_samples ends, or a signal stops it."""
    return Agent(options, events).run()
