"""The Python API: the same answers as `vram-ml predict`, `fit` and `estimate`, for notebooks and
sweep scripts. Import it from the package root:

    from vram_ml import Spec, fit, predict, read_llamafactory_yaml

    spec = Spec(model="Qwen/Qwen2.5-7B", method="qlora", quant_bits=4, batch_size=2,
                seq_len=1024, precision="bf16")
    prediction = predict(spec)                    # peak and upper bound, breakdown, cards
    prediction.peak_vram_bytes / 2**30            # GiB
    [predict(spec, batch_size=b).upper_vram_bytes for b in (1, 2, 4, 8)]   # a sweep
    fit(spec, gpu_memory_gib=24).max_batch_size   # the largest batch a 24 GiB card takes
    predict(read_llamafactory_yaml("train.yaml").spec)

Every function takes a `Spec`, a model source (catalog id, config.json path or hub id) with Spec
fields as keywords, or a Spec plus keywords that replace its fields (validated again). Bad input
raises `SpecError` (a ValueError, one line naming the field); nothing here imports torch.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vram_ml.spec import Spec, SpecError, build_spec

if TYPE_CHECKING:
    from vram_ml.model.answers.card_fit import FitReport
    from vram_ml.model.answers.prediction import Prediction
    from vram_ml.model.estimate import Estimate

__all__ = ["estimate", "fit", "predict"]
GIB = 1024**3


def predict(
    spec: Spec | str | None = None,
    /,
    *,
    gpu_memory_gib: Sequence[float] | None = None,
    artifact_dir: str | Path | None = None,
    **fields: Any,
) -> Prediction:
    """Predict the peak VRAM of a fine-tuning run, as `vram-ml predict` does.

    Args:
        spec: a Spec, or a model source (`"Qwen/Qwen2.5-7B"`, a config.json path, a hub id).
        gpu_memory_gib: cards to judge (GiB); default 24, 40, 48 and 80.
        artifact_dir: a learned-model folder; default `$VRAM_ML_LEARNED_MODEL`, else the
            bundled one, else the analytical estimator (the answer says which).
        **fields: Spec fields (`batch_size=4`, `method="qlora"`, ...), over `spec`'s.

    Returns:
        A Prediction: `peak_vram_bytes`, `upper_vram_bytes`, `answer.breakdown` (bytes per
        term), `cards` (a verdict per card), `beside` (the other estimators' figures);
        `to_dict()` is the CLI's `--json` without the spec echo.

    Raises:
        SpecError: an invalid configuration (one line).
        ValueError: an unreadable learned-model artifact.
    """
    from vram_ml.model.answers.prediction import predict as predict_spec

    return predict_spec(as_spec(spec, **fields), gpu_memory_gib, artifact_dir)


def fit(
    spec: Spec | str | None = None,
    /,
    *,
    gpu_memory_gib: float = 24.0,
    target_effective_batch: int | None = None,
    artifact_dir: str | Path | None = None,
    **fields: Any,
) -> FitReport:
    """What fits a card, as `vram-ml fit` answers: the largest batch size and cutoff length, the
    accumulation that keeps the effective batch, and the cheapest change when it does not fit.

    Args:
        spec: a Spec or a model source, as for `predict`.
        gpu_memory_gib: the card's memory in GiB (see `vram_ml.cards` for named cards).
        target_effective_batch: batch x accumulation x GPUs to keep (None: the spec's own).
        artifact_dir: a learned-model folder, as for `predict`.
        **fields: Spec fields over `spec`'s.

    Returns:
        A FitReport: `verdict` (predict's), `fits`, `max_batch_size`, `max_seq_len` (None when
        not even the smallest fits), `batch_size` and `gradient_accumulation` for the target,
        `changes` (single changes that fit, cheapest first) or `combination`; `to_dict()` is the
        CLI's `--json`.

    Raises:
        SpecError: an invalid configuration, or a card size that is not positive.
    """
    from vram_ml.model.answers.card_fit import find_fit
    from vram_ml.model.learned.estimator import LearnedEstimator

    if not gpu_memory_gib > 0:
        raise SpecError(f"gpu_memory_gib: must be positive (got {gpu_memory_gib!r})")
    return find_fit(
        as_spec(spec, **fields),
        int(gpu_memory_gib * GIB),
        target_effective_batch,
        LearnedEstimator(artifact_dir),
    )


def estimate(
    spec: Spec | str | None = None,
    /,
    estimators: Sequence[str] = ("seed-formula", "analytical"),
    **fields: Any,
) -> list[Estimate]:
    """Several estimators on one spec, side by side, as `vram-ml estimate` answers.

    Args:
        spec: a Spec or a model source, as for `predict`.
        estimators: names among seed-formula, analytical, simulate (needs the `sim` extra and
            takes seconds), learned.
        **fields: Spec fields over `spec`'s.

    Raises:
        SpecError: an invalid configuration.
        KeyError: an unknown estimator name.
        ValueError: an estimator refuses the spec (e.g. simulate without transformers).
    """
    from vram_ml.model.answers.comparison import estimate_all

    return estimate_all(as_spec(spec, **fields), list(estimators))


def as_spec(spec: Spec | str | None = None, /, **fields: Any) -> Spec:
    """A Spec from a Spec, a model source or fields alone; keywords replace the Spec's fields.

    Raises:
        SpecError: an invalid configuration (one line).
    """
    if isinstance(spec, Spec):
        return build_spec(**{**spec.model_dump(), **fields}) if fields else spec
    if isinstance(spec, str):
        return build_spec(**{**fields, "model": spec})
    if spec is None:
        if "model" not in fields:
            raise SpecError("model: give a Spec, a model source or model=...")
        return build_spec(**fields)
    raise SpecError(f"spec: expected a Spec or a model source (got {type(spec).__name__})")
