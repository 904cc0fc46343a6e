"""Isolation: every spec is measured in its own child process (agent/child.py).

A fresh process per spec means a fresh CUDA context, an empty caching allocator and no state
carried over; a crash, an OOM that poisons the context, or a hang costs one sample, never the
agent. `measure_isolated` always returns a complete Sample (ok | oom | error), or None when the
agent aborts the sample on purpose (second signal, budget grace over): such a spec stays planned
and a restart measures it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from vram_ml.agent.environment import (
    AGENT_VERSION,
    cpu_device_facts,
    gpu_device_facts,
    host_name,
    library_versions,
)
from vram_ml.sample import Measurement, Provenance, Sample, SampleError
from vram_ml.spec import Spec

DEFAULT_TIMEOUT_S = 600.0
POLL_S = 0.1


@dataclass
class Slot:
    """Where a worker measures: the cpu, or GPUs (NVML index = CUDA index): one, or several for
    multi-GPU specs (`gpu_indices`, launched with torchrun, one process per GPU)."""

    backend: str  # cuda | cpu
    gpu_index: int | None = None
    worker: int = 0  # cpu: which of the parallel workers
    gpu_indices: tuple[int, ...] = ()  # a multi-GPU slot's GPUs (gpu_index is the first)

    @property
    def devices(self) -> tuple[int, ...]:
        if self.gpu_indices:
            return self.gpu_indices
        return () if self.gpu_index is None else (self.gpu_index,)

    @property
    def label(self) -> str:
        if self.gpu_index is None:
            return f"cpu{self.worker}"
        return "gpu" + "+".join(str(index) for index in self.devices)


def provenance(slot: Slot, cuda_version: str = "") -> Provenance:
    """Provenance of a sample measured now on `slot` (read by the parent, without torch)."""
    facts = cpu_device_facts() if slot.backend == "cpu" else gpu_device_facts(slot.gpu_index or 0)
    return Provenance(
        backend=slot.backend,
        agent_version=AGENT_VERSION,
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        host=host_name(),
        cuda_version=cuda_version,
        **{key: facts.get(key) for key in ("device_name", "device_total_bytes", "driver_version")},
        **library_versions(),
    )


class Children:
    """Starts the measuring children of one slot; with `warm`, the next child is started (and
    imports torch & co.) while the current one measures, so a sample does not wait for imports.

    `on_spawn(pid)` is called as each child starts, before it imports anything: a warm child's
    preload (peft -> bitsandbytes) may create a CUDA context, and the GPU pool must count it as
    the agent's own from then on, not as someone else's process."""

    def __init__(self, slot: Slot, work_dir: Path, warm: bool = True,
                 on_spawn: Callable[[int], None] | None = None):
        self.slot, self.work_dir, self.warm = slot, Path(work_dir), warm
        self.on_spawn = on_spawn
        self._next: tuple[subprocess.Popen, Path] | None = None

    def _spawn(self) -> tuple[subprocess.Popen, Path]:
        self.work_dir.mkdir(parents=True, exist_ok=True)
        handle, name = tempfile.mkstemp(dir=self.work_dir, prefix=f"{self.slot.label}-",
                                        suffix=".log")
        os.close(handle)
        log_path = Path(name)
        with open(log_path, "ab") as log:
            child = subprocess.Popen(
                [sys.executable, "-m", "vram_ml.agent.child"], stdin=subprocess.PIPE,
                stdout=log, stderr=subprocess.STDOUT, env=_child_env(self.slot),
                start_new_session=True,
            )
        if self.on_spawn is not None:
            self.on_spawn(child.pid)
        return child, log_path

    def take(self, warm_next: bool = True) -> tuple[subprocess.Popen, Path]:
        """A child ready for one request (the warm one if it is still alive); starts the next
        warm child unless `warm_next` is False (nothing left to measure)."""
        child = self._next if self._next and self._next[0].poll() is None else None
        if self._next and child is None:  # the warm child died (its log says why): discard it
            _kill(self._next[0])
            self._next[1].unlink(missing_ok=True)
        self._next = None
        child = child or self._spawn()
        if self.warm and warm_next:
            self._next = self._spawn()
        return child

    def close(self) -> None:
        """Kill the warm child, if any (it has only imported libraries)."""
        if self._next is None:
            return
        child, log_path = self._next
        self._next = None
        _kill(child)
        log_path.unlink(missing_ok=True)


def measure_isolated(
    spec: Spec,
    slot: Slot,
    work_dir: Path,
    steps: int = 3,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    abort: threading.Event | None = None,
    on_start: Callable[[int], None] | None = None,
    children: Children | None = None,
    warm_next: bool = True,
) -> Sample | None:
    """Measure `spec` in a child process on `slot`.

    Args:
        spec: the configuration.
        slot: cpu or one GPU.
        work_dir: result files and the child's log (`<spec_id>.log`) go here.
        steps: optimizer steps.
        timeout_s: the child is killed after this long: status=error.
        abort: when set, the child is killed and None is returned (no sample).
        on_start: called with the child's pid once it has the request.
        children: where the child comes from (a fresh, cold child when None).
        warm_next: let `children` start the next child now (more specs are coming).

    Returns:
        The sample, or None when aborted.
    """
    if spec.num_gpus > 1:  # torchrun: one process per GPU (agent/rank_child.py)
        from vram_ml.agent.ranks import measure_ranks

        return measure_ranks(spec, slot, work_dir, steps, timeout_s, abort, on_start)
    children = children or Children(slot, work_dir, warm=False)
    child, log_path = children.take(warm_next)
    result_path = Path(work_dir) / f"{spec.spec_id}-{child.pid}.result.json"
    request = {"spec": spec.model_dump(mode="json"), "backend": slot.backend, "steps": steps,
               "nvml_index": slot.gpu_index or 0, "result": str(result_path)}
    started = time.monotonic()
    with suppress(OSError):  # a child that died already is reported below
        child.stdin.write((json.dumps(request) + "\n").encode())
        child.stdin.close()
    if on_start:
        on_start(child.pid)
    outcome = _wait(child, timeout_s, abort)
    final_log = Path(work_dir) / f"{spec.spec_id}.log"
    with open(final_log, "ab") as log:
        log.write(log_path.read_bytes())
    log_path.unlink(missing_ok=True)
    if outcome == "aborted":
        result_path.unlink(missing_ok=True)
        return None
    measurement, cuda_version = _read_result(result_path, outcome, child.returncode, final_log,
                                             time.monotonic() - started)
    result_path.unlink(missing_ok=True)
    return Sample(spec, measurement, provenance(slot, cuda_version))


def _child_env(slot: Slot) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONUNBUFFERED"] = "1"
    env["VRAM_ML_AGENT_PARENT_PID"] = str(os.getpid())
    if slot.backend == "cuda":
        env["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID"  # CUDA's numbering = NVML's
        env["CUDA_VISIBLE_DEVICES"] = str(slot.gpu_index)
    else:
        env["CUDA_VISIBLE_DEVICES"] = ""
    return env


def _wait(child: subprocess.Popen, timeout_s: float, abort: threading.Event | None) -> str:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            child.wait(timeout=POLL_S)
            return "exited"
        except subprocess.TimeoutExpired:
            pass
        if abort is not None and abort.is_set():
            _kill(child)
            return "aborted"
        if time.monotonic() > deadline:
            _kill(child)
            return "timeout"


def _kill(child: subprocess.Popen) -> None:
    """Kill the child's whole process group (it runs in its own session) and reap it."""
    try:
        os.killpg(child.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        child.kill()
    child.wait()


def _read_result(result_path: Path, outcome: str, returncode: int | None, log_path: Path,
                 seconds: float) -> tuple[Measurement, str]:
    if outcome == "exited" and result_path.exists():
        try:
            payload = json.loads(result_path.read_text(encoding="utf-8"))
            return Measurement(**payload["measurement"]), payload.get("cuda_version", "")
        except (json.JSONDecodeError, KeyError, TypeError, SampleError) as error:
            return Measurement("error", f"unreadable worker result: {error}"), ""
    if outcome == "timeout":
        return Measurement("error", f"timeout: no result after {seconds:.0f}s"), ""
    if returncode is not None and returncode < 0:
        message = f"worker killed by {signal.Signals(-returncode).name}"
    else:
        message = f"worker exited with code {returncode}"
    last = _last_line(log_path)
    return Measurement("error", f"{message}: {last}" if last else message), ""


def _last_line(log_path: Path) -> str:
    try:
        lines = [line for line in log_path.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return ""
    return lines[-1].strip()[:300] if lines else ""
