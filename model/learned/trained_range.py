"""What a learned model was trained on, and whether a spec lies inside it.

Trees answer outside their data with what they saw at its edge: a correction learned on 0.5–8B
models is applied to a 70B one unchanged. The analytical base carries the scale, so that is often
right, but not known to be: `predict` says so whenever a spec is outside the trained range (a
number above the largest seen or below the smallest, a family, method or statistic never seen).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from vram_ml.model.learned.training_set import TrainingSet
    from vram_ml.spec import Spec

# name -> how to read it off a spec (a plain number)
NUMBERS = {
    "total_params": lambda spec: spec.resolved_model.shape.total_params,
    "tokens_per_step": lambda spec: spec.batch_size * spec.seq_len,
    "seq_len": lambda spec: spec.seq_len,
    "batch_size": lambda spec: spec.batch_size,
    "num_gpus": lambda spec: spec.num_gpus,
}
CATEGORIES = {
    "family": lambda spec: spec.resolved_model.family,
    "method": lambda spec: spec.method,
}


def trained_range(data: TrainingSet) -> dict[str, Any]:
    """The range of each number and the categories of the rows that measured a peak."""
    specs = [spec for spec, ok in zip(data.specs, data.measured("peak"), strict=True) if ok]
    if not specs:
        return {}
    numbers = {name: [read(spec) for spec in specs] for name, read in NUMBERS.items()}
    return {
        **{name: [min(values), max(values)] for name, values in numbers.items()},
        **{name: sorted({read(spec) for spec in specs}) for name, read in CATEGORIES.items()},
    }


def outside(spec: Spec, trained: dict[str, Any]) -> list[str]:
    """One phrase per way `spec` lies outside `trained` (empty: inside)."""
    found = []
    for name, read in NUMBERS.items():
        if name not in trained:
            continue
        low, high = trained[name]
        value = read(spec)
        if value > high or value < low:
            found.append(f"{name} {_show(value)} (trained {_show(low)}–{_show(high)})")
    for name, read in CATEGORIES.items():
        if name in trained and read(spec) not in trained[name]:
            found.append(f"{name} {read(spec)} (never seen)")
    return found


def outside_note(specs: Sequence[Spec], trained: dict[str, Any]) -> list[str | None]:
    """Per spec, the note `predict` shows when the spec is outside the trained range."""
    notes: list[str | None] = []
    for spec in specs:
        found = outside(spec, trained)
        notes.append(
            "outside the learned model's training range: " + "; ".join(found)
            + " — the correction is extrapolated, the analytical estimate carries the scale"
            if found else None)
    return notes


def _show(value: float) -> str:
    return f"{value / 1e9:.2f}B" if value >= 1e8 else f"{value:g}"
