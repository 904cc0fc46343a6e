"""Measurement, Provenance, Sample: what one micro-training observed, and its dataset row.

This module is the schema both halves share: the agent writes samples, the learned model reads
them (and `model` never imports `agent`). One flat row per sample: spec fields, measurement
fields, provenance fields; bytes are integers. `row_to_sample` validates a row and raises
`SampleError` (one line) for a corrupt one.

The target, `peak_vram_bytes` (`peak_vram()`, the one definition the measurement, the dataset
checks and the analytical estimator use): what the GPU holds for the process at its peak, as the
device's used memory (nvidia-smi's Memory-Usage) shows it =
  `cuda_context_bytes`   memory outside PyTorch's caching allocator and outside managed memory,
                         read after a warm-up step: the context, lazily loaded kernels, cuBLAS /
                         cuDNN handles (`cold_context_bytes`: the same before any kernel ran)
+ `peak_reserved_bytes`  the caching allocator's peak (bitsandbytes keeps optimizer states of
                         tensors under 1e5 elements here, paged optimizer or not)
+ `paged_bytes`          optimizer states bitsandbytes put in CUDA managed memory (paged
                         optimizers, tensors of at least 1e5 elements), counted whole: on a card
                         without memory pressure they live on the device (bitsandbytes prefetches
                         them before each update); NVML's per-process figure leaves them out.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal

from vram_ml.spec import STACK_FIELDS, Spec, SpecError, build_spec, renamed_fields

Status = Literal["ok", "oom", "error"]
Backend = Literal["cuda", "published", "cpu", "simulated"]
STATUSES = ("ok", "oom", "error")
BACKENDS = ("cuda", "published", "cpu", "simulated")  # published: datasets/published/


class SampleError(ValueError):
    """A corrupt or inconsistent sample row; the message is one line."""


@dataclass
class Measurement:
    """What one micro-training observed on one device (bytes as integers)."""

    status: Status
    message: str = ""
    peak_allocated_bytes: int | None = None  # torch.cuda.max_memory_allocated over the steps
    peak_reserved_bytes: int | None = None  # torch.cuda.max_memory_reserved over the steps
    setup_peak_allocated_bytes: int | None = None  # model build + peft, before the steps
    setup_peak_reserved_bytes: int | None = None
    cuda_context_bytes: int | None = None  # outside the allocator, after a warm-up step
    cold_context_bytes: int | None = None  # the same with a context and no kernel run yet
    paged_bytes: int | None = None  # optimizer states in CUDA managed memory (paged optimizers)
    nvml_peak_bytes: int | None = None  # NVML process peak sampled during the steps
    peak_vram_bytes: int | None = None  # the target: peak_vram(context, reserved, paged)
    step_seconds: float | None = None
    steps: int | None = None
    # several GPUs (torchrun): the peak_* fields are the largest GPU's; these are the sum of every
    # GPU's peak_vram (what nvidia-smi sums) and each GPU's, by rank, as a JSON list
    total_vram_bytes: int | None = None
    per_gpu_peak_vram: str = ""

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise SampleError(f"status: {self.status!r} is not one of {', '.join(STATUSES)}")
        if self.status == "ok" and self.peak_vram_bytes is None:
            raise SampleError("peak_vram_bytes: an ok sample needs its peak")


def peak_vram(cuda_context_bytes: int, peak_reserved_bytes: int, paged_bytes: int | None) -> int:
    """The target (see the module docstring): context + reserved peak + paged states."""
    return cuda_context_bytes + peak_reserved_bytes + (paged_bytes or 0)


@dataclass
class Provenance:
    """Where and how a sample was made."""

    backend: Backend
    agent_version: str
    created_at: str  # ISO 8601, UTC
    host: str = ""
    device_name: str = ""  # e.g. "NVIDIA H100 80GB HBM3" or "cpu"
    device_total_bytes: int | None = None
    driver_version: str = ""
    cuda_version: str = ""
    torch_version: str = ""
    # the libraries installed where it ran (the spec's *_version fields name the stack it asks)
    installed_transformers_version: str = ""
    installed_peft_version: str = ""
    installed_bitsandbytes_version: str = ""
    mlflow_run_id: str = ""

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise SampleError(f"backend: {self.backend!r} is not one of {', '.join(BACKENDS)}")

    @property
    def device_key(self) -> str:
        """Device + library versions: with spec_id, what makes a sample unique (replay dedup)."""
        return "|".join(
            (
                self.backend,
                self.device_name,
                self.torch_version,
                self.installed_transformers_version,
                self.installed_peft_version,
                self.installed_bitsandbytes_version,
            )
        )


@dataclass
class Sample:
    spec: Spec
    measurement: Measurement
    provenance: Provenance
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def spec_id(self) -> str:
        return self.spec.spec_id

    @property
    def sample_key(self) -> str:
        return f"{self.spec_id}|{self.provenance.device_key}"

    def to_row(self) -> dict[str, Any]:
        return sample_to_row(self)


SPEC_COLUMNS = tuple(name for name in Spec.model_fields)
MEASUREMENT_COLUMNS = tuple(f.name for f in fields(Measurement))
PROVENANCE_COLUMNS = tuple(f.name for f in fields(Provenance))
COLUMNS = ("spec_id", *SPEC_COLUMNS, *MEASUREMENT_COLUMNS, *PROVENANCE_COLUMNS)
_JSON_COLUMNS = {"model_overrides", "lora_target", "additional_target"}


def sample_to_row(sample: Sample) -> dict[str, Any]:
    """One flat row; lists and dicts as JSON strings so CSV and Parquet hold the same thing."""
    spec = sample.spec.model_dump(mode="json")
    row: dict[str, Any] = {"spec_id": sample.spec_id}
    for name in SPEC_COLUMNS:
        value = spec[name]
        row[name] = json.dumps(value, sort_keys=True) if name in _JSON_COLUMNS else value
    row.update(asdict(sample.measurement))
    row.update(asdict(sample.provenance))
    return row


def row_to_sample(row: dict[str, Any]) -> Sample:
    """Validate a flat row and rebuild the Sample.

    Raises:
        SampleError: a missing, corrupt or inconsistent field (one line).
    """
    row = _from_before_stack(renamed_fields({key: _clean(value) for key, value in row.items()},
                                            _as_bool))
    spec_fields: dict[str, Any] = {}
    for name in SPEC_COLUMNS:
        if row.get(name) is None:
            continue
        value = row[name]
        if name in _JSON_COLUMNS and isinstance(value, str):
            try:
                value = json.loads(value)
            except json.JSONDecodeError:
                raise SampleError(f"{name}: not valid JSON ({value[:40]!r})") from None
        spec_fields[name] = value
    if "model" not in spec_fields:
        raise SampleError("model: missing")
    try:
        spec = build_spec(**_coerce_spec(spec_fields))
    except SpecError as error:
        raise SampleError(str(error)) from None
    if row.get("spec_id") and row["spec_id"] != spec.spec_id and not _made_before_stack(row, spec):
        raise SampleError(f"spec_id: {row['spec_id']} does not match its spec ({spec.spec_id})")
    try:
        measurement = Measurement(**_coerce(Measurement, row))
        provenance = Provenance(**_coerce(Provenance, row))
    except TypeError as error:
        raise SampleError(str(error).split("(")[-1].rstrip(")")) from None
    return Sample(spec, measurement, provenance)


# Rows written before the stack was part of the spec (SPEC_VERSION 1) have no `framework`
# column, and their transformers/peft/bitsandbytes_version columns are the installed versions.
_V1_PROVENANCE = ("transformers_version", "peft_version", "bitsandbytes_version")


def _from_before_stack(row: dict[str, Any]) -> dict[str, Any]:
    """A SPEC_VERSION 1 row as a current one: its versions moved to the installed_* columns."""
    if row.get("framework") is not None:
        return row
    row = dict(row)
    for name in _V1_PROVENANCE:
        value = row.pop(name, None)
        if value is not None and row.get(f"installed_{name}") is None:
            row[f"installed_{name}"] = value
    return row


def _made_before_stack(row: dict[str, Any], spec: Spec) -> bool:
    """A SPEC_VERSION 1 row keeps its old spec_id; it loads with the default stack and gets the
    new id."""
    return (not any(row.get(name) is not None for name in STACK_FIELDS)
            and row["spec_id"] == spec.spec_id_v1())


def _clean(value: Any) -> Any:
    # pandas gives NaN for empty cells; CSV gives "".
    if value is None or value == "" or (isinstance(value, float) and value != value):
        return None
    return value


_INT_SPEC = {
    "lora_rank",
    "lora_alpha",
    "freeze_trainable_layers",
    "batch_size",
    "gradient_accumulation",
    "seq_len",
    "images_per_sample",
    "image_resolution",
    "num_gpus",
    "zero_stage",
    "quant_bits",
    "num_nodes",
    "fsdp_version",
    "zero_reduce_bucket_size",
    "zero_prefetch_bucket_size",
    "zero_persistence_threshold",
    "zero_max_live_parameters",
    "zero_max_reuse_distance",
    "ref_model_quantization_bit",
    "reward_model_quantization_bit",
    "max_new_tokens",
}
_BOOL_SPEC = {
    "double_quant",
    "gradient_checkpointing",
    "liger_kernel",
    "freeze_vision_tower",
    "freeze_multi_modal_projector",
    "zero_overlap_comm",
}


def _coerce_spec(values: dict[str, Any]) -> dict[str, Any]:
    result = dict(values)
    for name in _INT_SPEC & result.keys():
        result[name] = _as_int(name, result[name])
    for name in _BOOL_SPEC & result.keys():
        result[name] = _as_bool(name, result[name])
    if "lora_dropout" in result:
        result["lora_dropout"] = _as_float("lora_dropout", result["lora_dropout"])
    return result


def _coerce(cls: type, row: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for f in fields(cls):
        value = row.get(f.name)
        if value is None:
            if f.name in ("status", "backend", "agent_version", "created_at"):
                raise SampleError(f"{f.name}: missing")
            continue
        if f.name.endswith("_bytes") or f.name == "steps":
            value = _as_int(f.name, value)
        elif f.name == "step_seconds":
            value = _as_float(f.name, value)
        else:
            value = str(value)
        result[f.name] = value
    return result


def _as_int(name: str, value: Any) -> int:
    if isinstance(value, bool):
        raise SampleError(f"{name}: expected an integer (got {value!r})")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise SampleError(f"{name}: expected an integer (got {str(value)[:40]!r})") from None
    if not math.isfinite(number) or number != int(number):
        raise SampleError(f"{name}: expected an integer (got {value!r})")
    return int(number)


def _as_float(name: str, value: Any) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise SampleError(f"{name}: expected a number (got {str(value)[:40]!r})") from None
    if not math.isfinite(number):
        raise SampleError(f"{name}: expected a finite number (got {value!r})")
    return number


def _as_bool(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "1", "1.0", "yes"):
        return True
    if text in ("false", "0", "0.0", "no"):
        return False
    raise SampleError(f"{name}: expected true/false (got {str(value)[:40]!r})")
