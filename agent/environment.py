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


def gpu_device_facts(index: int) -> dict[str, Any]:
    """Name, total memory and driver of NVML device `index` (CUDA version comes from torch)."""
    lib = nvml()
    if lib is None:
        return {"device_name": "", "device_total_bytes": None, "driver_version": ""}
    handle = lib.nvmlDeviceGetHandleByIndex(index)
    return {
        "device_name": _text(lib.nvmlDeviceGetName(handle)),
        "device_total_bytes": int(lib.nvmlDeviceGetMemoryInfo(handle).total),
        "driver_version": _text(lib.nvmlSystemGetDriverVersion()),
    }


def compute_processes(index: int) -> dict[int, int]:
    """pid -> used bytes of the compute processes NVML sees on device `index`."""
    lib = nvml()
    if lib is None:
        return {}
    handle = lib.nvmlDeviceGetHandleByIndex(index)
    processes = {}
    for process in lib.nvmlDeviceGetComputeRunningProcesses(handle):
        used = process.usedGpuMemory
        processes[int(process.pid)] = int(used) if isinstance(used, int) else 0
    return processes


def device_used_bytes(index: int) -> int | None:
    lib = nvml()
    if lib is None:
        return None
    return int(lib.nvmlDeviceGetMemoryInfo(lib.nvmlDeviceGetHandleByIndex(index)).used)


class ProcessMemory:
    """This process's GPU memory as NVML reports it.

    Per process where NVML lists our pid; where it cannot (a container's pid namespace hides the
    host pid), the device's used memory minus what was used before this process touched the GPU
    (the pool only hands out otherwise idle GPUs, so the difference is ours).
    """

    def __init__(self, index: int):
        self.index = index
        self.pid = os.getpid()
        self.baseline = device_used_bytes(index) or 0
        self.per_process = None  # decided on the first reading that finds a CUDA context

    def read(self) -> int | None:
        processes = compute_processes(self.index)
        if self.pid in processes and processes[self.pid]:
            self.per_process = True
            return processes[self.pid]
        used = device_used_bytes(self.index)
        return None if used is None else max(0, used - self.baseline)


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
