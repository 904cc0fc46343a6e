"""fms-acceleration: what each memory column of a benchmark CSV is, and the code that says so.

`mem_nvidia_mem_reserved` (`nvidia_mem_reserved` before 70cdf71) is nvidia-smi memory.used
(MiB): the per-GPU max minus the first reading, averaged over GPUs. The torch columns are the HF
Trainer memory metrics (rank 0): `mem_peak_torch_mem_alloc_in_bytes` a peak of allocated
memory, `mem_torch_mem_alloc_in_bytes` allocated memory at a stage end (not a peak).
"""

from __future__ import annotations

import re
from typing import Any

from vram_ml.published.document_text import find_line

DEVICE_AGGREGATION = ("max over run per GPU (nvidia-smi memory.used, minus first reading), "
                      "mean over GPUs")
PEAK_AGGREGATION = "HF TrainerMemoryTracker stage sums incl. peaked_delta (rank 0)"
END_AGGREGATION = "max over stage ends of memory_allocated() running sum (rank 0); NOT a peak"
# column as published -> (rename-independent name, statistic, unit, is_peak, aggregation)
MEM_COLUMNS = {
    "mem_nvidia_mem_reserved": ("mem_nvidia_mem_reserved", "device", "MiB", True,
                                DEVICE_AGGREGATION),
    "nvidia_mem_reserved": ("mem_nvidia_mem_reserved", "device", "MiB", True, DEVICE_AGGREGATION),
    "mem_peak_torch_mem_alloc_in_bytes": ("mem_peak_torch_mem_alloc_in_bytes", "allocated",
                                          "bytes", True, PEAK_AGGREGATION),
    "peak_torch_mem_alloc_in_bytes": ("mem_peak_torch_mem_alloc_in_bytes", "allocated", "bytes",
                                      True, PEAK_AGGREGATION),
    "mem_torch_mem_alloc_in_bytes": ("mem_torch_mem_alloc_in_bytes", "allocated", "bytes", False,
                                     END_AGGREGATION),
    "torch_mem_alloc_in_bytes": ("mem_torch_mem_alloc_in_bytes", "allocated", "bytes", False,
                                 END_AGGREGATION),
}
# config columns that identify a run (the dedup key, with the line's memory numbers)
KEY_COLUMNS = ["framework_config", "model_name_or_path", "num_gpus",
               "per_device_train_batch_size", "gradient_accumulation_steps", "peft_method", "r",
               "lora_alpha", "lora_dropout", "target_modules", "torch_dtype", "fp16", "bf16",
               "learning_rate"]


def ref(item: dict[str, Any] | None) -> str | None:
    """'path@commit' of a context file."""
    return f"{item['path']}@{item['commit']}" if item else None


def ref_line(item: dict[str, Any] | None, pattern: str, regex: bool = False) -> str | None:
    """'path@commit:LINE' of the first line of a context file holding `pattern`."""
    if not item:
        return None
    number, _ = find_line(item["text"], pattern, regex=regex)
    return None if number is None else f"{item['path']}@{item['commit']}:{number}"


def _joined(parts: list[tuple[str | None, str]]) -> str:
    return "; ".join((place or "") + text for place, text in parts)


def statistic_evidence(bench: dict[str, Any] | None, readme: dict[str, Any] | None
                       ) -> dict[str, str]:
    """Per statistic, the benchmark.py / README lines that define it at this commit."""
    rank0 = (ref_line(readme, "only log the rank 0 memory")
             or ref_line(bench, "only rank 0 is measured"))
    return {
        "device": _joined([
            (ref_line(bench, '"nvidia-smi"'), " benchmark.py runs `nvidia-smi --query-gpu "
             "timestamp,name,index,memory.used --format csv --loop 1` alongside the job"),
            (ref_line(bench, 'GPU_LOG_USED_MEM_COLUMN_NAME = "memory.used [MiB]"'),
             " column read is 'memory.used [MiB]' (unit MiB)"),
            (ref_line(bench, "mem_usage_by_device_id.max()"),
             " per-GPU max minus the first reading (calibration)"),
            (ref_line(bench, r"\.mean\(\)", regex=True),
             " then the mean over GPU devices is reported"),
            (ref_line(readme, "NVML's definition of used memory"),
             " README: NVML used memory = allocated + reserved (i.e. device-level, includes "
             "CUDA context/allocator cache)"),
        ]),
        "allocated": _joined([
            (ref_line(bench, "list_of_peak_running_sums.append"),
             " peak = running sum of HF Trainer `*_mem_gpu_alloc_delta` (+ before_init_mem_gpu) "
             "plus the stage's `*_mem_gpu_peaked_delta`, max over stages"),
            (ref_line(readme, "max_memory_allocated()"),
             " README: HF Trainer probes call torch.cuda.memory_allocated() / "
             "max_memory_allocated()"),
            (rank0, " distributed runs: rank 0 only"),
        ]),
        "allocated_nonpeak": _joined([
            (ref_line(bench, "list_of_alloc_running_sums.append"),
             " value = max over stages of the running sum of alloc deltas = memory_allocated() "
             "at a stage end (NOT a peak); rank 0"),
        ]),
    }


def stage_note(bench: dict[str, Any] | None) -> str | None:
    """At f1895b7 the peak left out the before_init / init stages."""
    if bench and re.search(r"\(HF_TRAINER_LOG_GPU_STAGE_BEFORE_INIT,\s*False\)", bench["text"]):
        return ("benchmark.py at this commit excludes before_init/init stages from the max "
                "(only the train-stage sum is reported)")
    return None


def memory_caveats(statistic: str, is_peak: bool, outcome: str) -> list[str]:
    caveats = []
    if statistic == "device":
        caveats.append("nvidia-smi sampled once per second: short spikes can be missed; "
                       "includes CUDA context")
    if statistic == "allocated" and is_peak:
        caveats.append("allocated peak covers HF Trainer stages (before_init/init/train) only; "
                       "memory outside these stages is not tracked")
    if outcome == "failed":
        caveats.append("failed run (not OOM by the <50%-of-card rule): value is the highest "
                       "reading before the failure")
    if outcome == "oom":
        caveats.append("failed run: the value is the highest reading before the failure (lower "
                       "bound); true demand exceeds the card")
    return caveats
