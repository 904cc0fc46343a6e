"""The learned model's targets, in one place: what each one is, which measured statistic trains
it, and which analytical figure its residual sits on.

- `peak`: what nvidia-smi shows at the peak (our `cuda` samples' `peak_vram_bytes`; published
  `device` readings, nvidia-smi / NVML memory used);
- `allocated`: torch `max_memory_allocated`; `reserved`: torch `max_memory_reserved`;
- `upper`: the q0.95 bound on `peak`, the only target OOM rows (censored: the peak exceeded the
  card) take part in.
A published row whose statistic is `unknown` trains nothing; it is evaluated against `peak`.
"""

from __future__ import annotations

MEASURED_TARGETS = ("peak", "allocated", "reserved")
TARGETS = ("peak", "upper", "allocated", "reserved")
# a published row's statistic -> the target it measured
STATISTIC_TARGET = {"device": "peak", "allocated": "allocated", "reserved": "reserved"}
# target -> the TrainingSet array that holds its measured bytes
MEASURED_FIELD = {
    "peak": "peak_vram_bytes",
    "upper": "peak_vram_bytes",
    "allocated": "peak_allocated_bytes",
    "reserved": "peak_reserved_bytes",
}
# target -> the Estimate field with an estimator's answer for it
ESTIMATE_FIELD = {
    "peak": "peak_vram_bytes",
    "upper": "upper_vram_bytes",
    "allocated": "peak_allocated_bytes",
    "reserved": "peak_reserved_bytes",
}
# target -> the feature holding the log of the analytical figure its residual is learned over
BASE_FEATURE = {
    "peak": "log_analytical_peak",
    "upper": "log_analytical_peak",
    "allocated": "log_analytical_allocated",
    "reserved": "log_analytical_reserved",
}
