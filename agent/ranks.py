"""A multi-GPU spec measured by torchrun: N processes (one per GPU of the slot; gloo processes on
the CPU), each measuring its own device (agent/rank_child.py, agent/measure_ranks.py), gathered
into one Measurement: every peak is the largest GPU's (what decides an out-of-memory), and
`total_vram_bytes` / `per_gpu_peak_vram` keep the sum and each GPU's.

Like a single-GPU child, the launch runs in its own session and is killed whole on a timeout
or an abort; a rank that leaves no result makes the sample an error with its log's last line.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from vram_ml.sample import Measurement, Sample
from vram_ml.spec import Spec


def gather(parts: list[Measurement]) -> Measurement:
    """One Measurement from every rank's (status: error > oom > ok)."""
    statuses = {part.status for part in parts}
    status = "error" if "error" in statuses else "oom" if "oom" in statuses else "ok"
    message = next((part.message for part in parts if part.status == status and part.message), "")

    def largest(name: str) -> int | float | None:
        values = [getattr(part, name) for part in parts if getattr(part, name) is not None]
        return max(values) if values else None

    peaks = [part.peak_vram_bytes for part in parts]
    fields = {name: largest(name) for name in (
        "peak_allocated_bytes", "peak_reserved_bytes", "setup_peak_allocated_bytes",
        "setup_peak_reserved_bytes", "cuda_context_bytes", "cold_context_bytes", "paged_bytes",
        "nvml_peak_bytes", "step_seconds")}
    complete = all(peak is not None for peak in peaks)
    return Measurement(
        status=status, message=message, **fields,
        peak_vram_bytes=largest("peak_vram_bytes") if status != "error" else None,
        steps=min((part.steps for part in parts if part.steps is not None), default=None),
        total_vram_bytes=sum(peaks) if complete and status != "error" else None,
        per_gpu_peak_vram=json.dumps(peaks) if complete else "",
    )


def measure_ranks(spec: Spec, slot, work_dir: Path, steps: int, timeout_s: float,
                  abort: threading.Event | None = None,
                  on_start: Callable[[int], None] | None = None) -> Sample | None:
    """Measure `spec` over `spec.num_gpus` processes; None when aborted."""
    from vram_ml.agent.worker import _kill, _wait, provenance

    gpus, work_dir = spec.num_gpus, Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    if slot.backend == "cuda" and len(slot.devices) != gpus:
        message = (f"num_gpus: the spec needs {gpus} GPUs, this slot has "
                   f"{len(slot.devices)} ({slot.label})")
        return Sample(spec, Measurement("error", message), provenance(slot))
    stem = work_dir / f"{spec.spec_id}-{os.getpid()}-{time.monotonic_ns()}"
    request = {"spec": spec.model_dump(mode="json"), "backend": slot.backend, "steps": steps,
               "nvml_indices": list(slot.devices), "result": str(stem) + ".result"}
    request_path = Path(str(stem) + ".request.json")
    request_path.write_text(json.dumps(request), encoding="utf-8")
    log_path = work_dir / f"{spec.spec_id}.log"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               f"--nproc_per_node={gpus}", "-m", "vram_ml.agent.rank_child", str(request_path)]
    started = time.monotonic()
    with open(log_path, "ab") as log:
        launch = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                  env=rank_env(slot), start_new_session=True)
    if on_start:
        on_start(launch.pid)
    outcome = _wait(launch, timeout_s, abort)
    request_path.unlink(missing_ok=True)
    results = [Path(f"{request['result']}.rank{rank}.json") for rank in range(gpus)]
    try:
        if outcome == "aborted":
            return None
        measurement, cuda_version = _read(results, outcome, time.monotonic() - started, log_path)
    finally:
        if launch.poll() is None:
            _kill(launch)
        for path in results:
            path.unlink(missing_ok=True)
    return Sample(spec, measurement, provenance(slot, cuda_version))


def _read(results: list[Path], outcome: str, seconds: float, log_path: Path
          ) -> tuple[Measurement, str]:
    from vram_ml.agent.worker import _last_line

    if outcome == "timeout":
        return Measurement("error", f"timeout: no result after {seconds:.0f}s"), ""
    parts, cuda_version = [], ""
    for rank, path in enumerate(results):
        if not path.exists():
            last = _last_line(log_path)
            return Measurement("error", f"rank {rank} left no result: {last}"[:400]), ""
        payload = json.loads(path.read_text(encoding="utf-8"))
        parts.append(Measurement(**payload["measurement"]))
        cuda_version = payload.get("cuda_version", "") or cuda_version
    return gather(parts), cuda_version


def rank_env(slot) -> dict[str, str]:
    """The launch's environment: the slot's GPUs (CUDA numbering = NVML's), or none and
    DeepSpeed's CPU accelerator on the cpu backend."""
    env = dict(os.environ)
    env["PYTHONUNBUFFERED"] = "1"
    if slot.backend == "cuda":
        env["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID"
        env["CUDA_VISIBLE_DEVICES"] = ",".join(str(index) for index in slot.devices)
    else:
        env["CUDA_VISIBLE_DEVICES"] = ""
        env["DS_ACCELERATOR"] = "cpu"
        env.setdefault("OMP_NUM_THREADS", "1")
    return env
