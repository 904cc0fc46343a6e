"""The machine a sample is measured on: library versions, device facts, NVML memory readings.

NVML (nvidia-ml-py, imported as `pynvml`) is read here and nowhere else. Every function degrades
to "unknown" (empty string / None) where NVML or a library is missing, so the cpu backend and a
GPU-less CI machine share the code path.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from contextlib import suppress
from functools import cache
from importlib import metadata
from typing import Any

import vram_ml

AGENT_VERSION = vram_ml.__version__
LIBRARIES = {  # Provenance field -> distribution name
    "torch_version": "torch",
    "installed_transformers_version": "transformers",
    "installed_peft_version": "peft",
    "installed_bitsandbytes_version": "bitsandbytes",
}


def library_versions() -> dict[str, str]:
    """Installed versions of the libraries whose memory behaviour a sample depends on."""
    versions = {}
    for field_name, distribution in LIBRARIES.items():
        try:
            versions[field_name] = metadata.version(distribution)
        except metadata.PackageNotFoundError:
            versions[field_name] = ""
    return versions


def cpu_device_facts() -> dict[str, Any]:
    """Provenance device fields for the cpu backend."""
    total = None
    with suppress(ValueError, OSError, AttributeError):
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return {"device_name": "cpu", "device_total_bytes": total, "driver_version": "",
            "cuda_version": ""}


def host_name() -> str:
    return socket.gethostname()


# --- NVML -------------------------------------------------------------------------------------


@cache
def nvml():
    """The initialised pynvml module, or None when NVML (or the driver) is unavailable."""
    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception:  # noqa: BLE001 - no library, no driver, no GPU: all mean "no NVML"
        return None
    return pynvml


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _query(lib, function: str, *args: Any) -> Any:
    """`lib.<function>(*args)`, or None when NVML refuses it: some virtualised GPUs (vGPU, gVisor
    and other sandboxes) answer per-process and other queries with an NVMLError."""
    try:
        return getattr(lib, function)(*args)
    except getattr(lib, "NVMLError", Exception):
        return None


def _handle(lib, index: int) -> Any:
    return _query(lib, "nvmlDeviceGetHandleByIndex", index)


def device_count() -> int:
    """GPUs NVML sees (0 when NVML is unavailable or refuses to count)."""
    lib = nvml()
    return int(_query(lib, "nvmlDeviceGetCount") or 0) if lib is not None else 0


def device_memory(index: int) -> tuple[int, int] | None:
    """(total, used) bytes of device `index`, or None when NVML cannot tell."""
    lib = nvml()
    handle = _handle(lib, index) if lib is not None else None
    memory = _query(lib, "nvmlDeviceGetMemoryInfo", handle) if handle is not None else None
    return None if memory is None else (int(memory.total), int(memory.used))


def device_name(index: int) -> str:
    lib = nvml()
    handle = _handle(lib, index) if lib is not None else None
    name = _query(lib, "nvmlDeviceGetName", handle) if handle is not None else None
    return _text(name) if name is not None else ""


def gpu_device_facts(index: int) -> dict[str, Any]:
    """Name, total memory and driver of NVML device `index` (CUDA version comes from torch)."""
    lib = nvml()
    if lib is None:
        return {"device_name": "", "device_total_bytes": None, "driver_version": ""}
    memory = device_memory(index)
    driver = _query(lib, "nvmlSystemGetDriverVersion")
    return {
        "device_name": device_name(index),
        "device_total_bytes": memory[0] if memory else None,
        "driver_version": _text(driver) if driver is not None else "",
    }


def compute_processes(index: int) -> dict[int, int]:
    """pid -> used bytes of the compute processes NVML sees on device `index`; empty when NVML
    lists none or refuses the per-process query (then only the device's used memory tells: the
    pool's threshold and ProcessMemory's "used minus baseline")."""
    lib = nvml()
    handle = _handle(lib, index) if lib is not None else None
    listed = _query(lib, "nvmlDeviceGetComputeRunningProcesses", handle) \
        if handle is not None else None
    processes = {}
    for process in listed or ():
        used = process.usedGpuMemory
        processes[int(process.pid)] = int(used) if isinstance(used, int) else 0
    return processes


def device_used_bytes(index: int) -> int | None:
    memory = device_memory(index)
    return None if memory is None else memory[1]


class ProcessMemory:
    """This process's GPU memory as NVML reports it.

    Per process where NVML lists our pid; where it cannot (a container's pid namespace hides the
    host pid, or a virtualised GPU refuses per-process queries), the device's used memory minus
    what was used before this process touched the GPU (the pool only hands out otherwise idle
    GPUs, so the difference is ours). The two differ in one thing: CUDA managed memory (paged
    optimizer states) is in the device's used memory, not in NVML's per-process figure
    (pynvml issue 63, nvtop issue 213); `per_process` says which the last reading was.
    """

    def __init__(self, index: int):
        self.index = index
        self.pid = os.getpid()
        self.baseline = device_used_bytes(index) or 0
        self.per_process: bool | None = None  # None until a reading was made

    def read(self) -> int | None:
        processes = compute_processes(self.index)
        if self.pid in processes and processes[self.pid]:
            self.per_process = True
            return processes[self.pid]
        used = device_used_bytes(self.index)
        if used is None:
            return None
        self.per_process = False
        return max(0, used - self.baseline)


class PeakSampler:
    """A thread that polls `read()` every `interval_s` and keeps the maximum (the NVML peak)."""

    def __init__(self, read, interval_s: float = 0.005):
        self.read = read
        self.interval_s = interval_s
        self.peak_bytes: int | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="nvml-peak", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            time.sleep(self.interval_s)

    def sample(self) -> None:
        with suppress(Exception):  # a failed NVML read loses one reading, never the sample
            value = self.read()
            if value is not None and (self.peak_bytes is None or value > self.peak_bytes):
                self.peak_bytes = value

    def __enter__(self) -> PeakSampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.sample()  # one last reading after the final step
