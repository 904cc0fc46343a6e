"""`simulate` on request: a job per spec, run in a child process off the event loop, one at a
time, with a size limit and a timeout.

The simulated step imports torch and transformers and takes seconds to minutes, so the server
never runs it in its own process: each job spawns a child (fresh interpreter, nothing inherited)
that sends its progress lines and its answer back through a queue; a job past its timeout has
its child killed. Finished jobs are kept (the last few) so a page that polls, or asks again for
the same spec, gets the answer at once.
"""

from __future__ import annotations

import multiprocessing
import queue
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from vram_ml.spec import SpecError
from vram_ml.spec_input import SpecInput

KEPT_JOBS = 32


class SimulationBusy(Exception):
    """Another simulation is running."""


@dataclass
class SimulationJob:
    job_id: str
    spec_id: str
    state: str = "running"  # running | done | error
    progress: str = "starting a fresh Python for torch and transformers"
    started: float = field(default_factory=time.monotonic)
    seconds: float | None = None
    result: dict[str, Any] | None = None
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        elapsed = self.seconds if self.seconds is not None else time.monotonic() - self.started
        return {
            "job_id": self.job_id,
            "spec_id": self.spec_id,
            "state": self.state,
            "progress": self.progress,
            "elapsed_s": round(elapsed, 1),
            "result": self.result,
            "error": self.error,
        }


def simulate_in_child(spec_fields: dict[str, Any], messages: Any) -> None:
    """The child's work: rebuild the spec, simulate it, send ("progress"|"done"|"error", ...)."""
    try:
        from vram_ml.model.simulate.estimator import simulate
        from vram_ml.spec import build_spec

        spec = build_spec(**spec_fields)
        simulation = simulate(spec, progress=lambda line: messages.put(("progress", line)))
        messages.put(("done", simulation.to_dict()))
    except ValueError as error:  # the simulator's own one-line refusals
        messages.put(("error", _first_line(error)))
    except Exception as error:  # noqa: BLE001 - the child reports, never dies silently
        messages.put(("error", f"simulate failed: {type(error).__name__}: {_first_line(error)}"))


class Simulations:
    """The jobs of one server."""

    def __init__(self, timeout_s: float, max_params: float, target: Any = simulate_in_child):
        self.timeout_s = timeout_s
        self.max_params = max_params
        self._target = target
        self._jobs: dict[str, SimulationJob] = {}
        self._running: SimulationJob | None = None
        self._lock = threading.Lock()
        self._context = multiprocessing.get_context("spawn")

    def start(self, spec_input: SpecInput) -> SimulationJob:
        """A running (or already finished) job for this spec.

        Raises:
            SpecError: the model is over the size limit.
            SimulationBusy: another spec is being simulated.
        """
        spec = spec_input.spec
        params = spec.resolved_model.shape.total_params
        if params > self.max_params:
            raise SpecError(
                f"simulate: this server simulates models up to {self.max_params / 1e9:g}B "
                f"parameters (this one has {params / 1e9:.1f}B); run `vram-ml simulate` instead"
            )
        with self._lock:
            for job in self._jobs.values():
                if job.spec_id == spec.spec_id and job.state != "error":
                    return job
            if self._running is not None:
                raise SimulationBusy(
                    f"simulate: another simulation is running (job {self._running.job_id}); "
                    "try again when it is done"
                )
            job = SimulationJob(uuid.uuid4().hex[:12], spec.spec_id)
            self._running = job
            self._keep(job)
        head = spec_input.to_dict()
        threading.Thread(target=self._run, args=(job, spec.model_dump(), head), daemon=True).start()
        return job

    def get(self, job_id: str) -> SimulationJob | None:
        return self._jobs.get(job_id)

    def _keep(self, job: SimulationJob) -> None:
        self._jobs[job.job_id] = job
        for old in list(self._jobs)[: max(0, len(self._jobs) - KEPT_JOBS)]:
            if self._jobs[old].state != "running":
                del self._jobs[old]

    def _run(self, job: SimulationJob, spec_fields: dict[str, Any], head: dict[str, Any]) -> None:
        messages = self._context.Queue()
        child = self._context.Process(target=self._target, args=(spec_fields, messages),
                                      daemon=True)
        child.start()
        deadline = job.started + self.timeout_s
        try:
            while job.state == "running":
                left = deadline - time.monotonic()
                if left <= 0:
                    job.state = "error"
                    job.error = f"simulate: timed out after {self.timeout_s:g} s"
                    break
                try:
                    kind, payload = messages.get(timeout=min(left, 1.0))
                except queue.Empty:
                    if not child.is_alive() and messages.empty():
                        job.state = "error"
                        job.error = f"simulate: the child process died (exit {child.exitcode})"
                    continue
                if kind == "progress":
                    job.progress = str(payload)
                elif kind == "done":
                    job.result, job.state, job.progress = {**head, **payload}, "done", "done"
                else:
                    job.state, job.error = "error", str(payload)
        finally:
            job.seconds = time.monotonic() - job.started
            if child.is_alive():
                child.kill()
            child.join(timeout=5)
            messages.close()
            with self._lock:
                self._running = None

    def close(self) -> None:
        """Stop waiting for the running job (its child is killed by its thread's deadline, or
        with the server as a daemon process)."""
        job = self._running
        if job is not None and job.state == "running":
            job.state, job.error = "error", "simulate: the server is shutting down"


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
