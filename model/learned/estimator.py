"""The learned estimator: the bundled XGBoost artifact, evaluated with numpy (no xgboost import).

An artifact is a folder: `metadata.json` (feature names, data hash, metrics, how each target is
built) and one XGBoost JSON model per target: `peak` (point), `upper` (q0.95 bound), `allocated`
and `reserved` (targets.py). Every target is `analytical figure * exp(trees(features) + margin)`,
its analytical figure being the peak for peak and upper, the allocated and reserved peaks for
the other two.

Which artifact: the `artifact_dir` argument, else `$VRAM_ML_LEARNED_MODEL`, else the one bundled
in the package (`model/bundled/`). With none, the answer is the analytical estimator's, and the
Estimate says so (`estimator="analytical"` and a note): a fallback is never passed off as learned.

Example:
    learned = LearnedEstimator()
    estimate = learned.estimate(spec)              # one spec
    batch = learned.predict_batch(specs)           # arrays, >= 10,000 specs/s
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, replace
from functools import cached_property, lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from vram_ml.model.estimate import Estimate, gib
from vram_ml.model.learned.features import FEATURE_NAMES, analytical_estimates, feature_matrix
from vram_ml.model.learned.targets import TARGETS
from vram_ml.model.learned.trained_range import outside_note
from vram_ml.model.learned.tree_eval import TreeEnsemble

if TYPE_CHECKING:
    from collections.abc import Sequence

    from vram_ml.spec import Spec

ARTIFACT_FORMAT = "vram-ml-learned/2"  # 2: each target over its own analytical base
BUNDLED_DIR = Path(__file__).parents[1] / "bundled"
ENV_ARTIFACT = "VRAM_ML_LEARNED_MODEL"
LEARNED_UPPER_BASIS = "q0.95 of the learned model (quantile trees + conformal margin)"
FALLBACK_NOTE = (
    "no learned model is bundled yet (it is trained only on real GPU measurements): "
    "this is the analytical estimate"
)


class ArtifactError(ValueError):
    """An unreadable or incompatible artifact; the message is one line."""


@dataclass(frozen=True)
class LearnedArtifact:
    """A loaded artifact: metadata plus one tree ensemble per target."""

    directory: Path
    metadata: dict[str, Any]
    ensembles: dict[str, TreeEnsemble]

    @classmethod
    def load(cls, directory: Path) -> LearnedArtifact:
        """Read an artifact folder.

        Raises:
            ArtifactError: missing files, another format, or features that do not match.
        """
        directory = Path(directory)
        try:
            metadata = json.loads((directory / "metadata.json").read_text())
        except (OSError, json.JSONDecodeError) as error:
            raise ArtifactError(
                f"learned model {directory}: unreadable metadata ({error})"
            ) from None
        if metadata.get("format") != ARTIFACT_FORMAT:
            raise ArtifactError(
                f"learned model {directory}: format {metadata.get('format')!r} "
                f"is not {ARTIFACT_FORMAT}"
            )
        if tuple(metadata.get("feature_names", ())) != FEATURE_NAMES:
            raise ArtifactError(
                f"learned model {directory}: trained on other features; retrain "
                "with `vram-ml train`"
            )
        ensembles = {}
        for name, target in metadata["targets"].items():
            try:
                ensembles[name] = TreeEnsemble.from_json_file(directory / target["file"])
            except (OSError, ValueError, KeyError) as error:
                raise ArtifactError(f"learned model {directory}: target {name}: {error}") from None
        return cls(directory, metadata, ensembles)

    def predict_log(self, target: str, matrix: np.ndarray) -> np.ndarray:
        """Natural log of the predicted bytes for one target."""
        base = matrix[:, FEATURE_NAMES.index(self.metadata["targets"][target]["base_feature"])]
        return (
            base
            + self.ensembles[target].predict(matrix)
            + self.metadata["targets"][target]["margin"]
        )

    @property
    def summary(self) -> str:
        """`learned (N published + M cuda samples)`, the data hash and the training date."""
        data = self.metadata["data"]
        counts = " + ".join(f"{n} {backend}" for backend, n in sorted(data["backends"].items()))
        return (
            f"learned ({counts} samples), data {data['hash']}, "
            f"trained {self.metadata['trained_at'][:10]}"
        )


@dataclass
class BatchPrediction:
    """Predictions for many specs (bytes as float arrays); `estimator` says who answered."""

    estimator: str  # "learned" | "analytical"
    peak_vram_bytes: np.ndarray
    upper_vram_bytes: np.ndarray | None
    peak_allocated_bytes: np.ndarray | None
    peak_reserved_bytes: np.ndarray | None
    analytical: list[Estimate]


def load_artifact(directory: Path) -> LearnedArtifact:
    """`LearnedArtifact.load`, once per folder and version of its files: a sweep, the Python API
    or the web server builds an estimator per spec, and reading the trees takes ~0.1 s."""
    stamp = tuple(sorted((path.name, path.stat().st_mtime_ns, path.stat().st_size)
                         for path in directory.iterdir() if path.is_file()))
    return _load_artifact(str(directory.resolve()), stamp)


@lru_cache(maxsize=8)
def _load_artifact(directory: str, stamp: tuple) -> LearnedArtifact:
    return LearnedArtifact.load(Path(directory))


def find_artifact_dir(artifact_dir: str | Path | None = None) -> Path | None:
    """The artifact folder to use, or None when there is none anywhere."""
    for candidate in (artifact_dir, os.environ.get(ENV_ARTIFACT), BUNDLED_DIR):
        if candidate and (Path(candidate) / "metadata.json").is_file():
            return Path(candidate)
        if candidate and candidate is not BUNDLED_DIR:
            raise ArtifactError(f"learned model: no metadata.json in {candidate}")
    return None


class LearnedEstimator:
    """XGBoost residual over the analytical estimate; analytical when no model is bundled."""

    name = "learned"

    def __init__(self, artifact_dir: str | Path | None = None) -> None:
        self.artifact_dir = artifact_dir

    @cached_property
    def artifact(self) -> LearnedArtifact | None:
        directory = find_artifact_dir(self.artifact_dir)
        return None if directory is None else load_artifact(directory)

    def estimate(self, spec: Spec) -> Estimate:
        return self.estimate_many([spec])[0]

    def estimate_many(self, specs: Sequence[Spec]) -> list[Estimate]:
        """One Estimate per spec, with every target (point, upper, allocated, reserved)."""
        batch = self.predict_batch(specs, targets=TARGETS)
        if batch.estimator != "learned":
            return [_fallback(estimate) for estimate in batch.analytical]
        notes = [self.artifact.summary, *self.stale_notes]
        ranges = outside_note(specs, self.artifact.metadata.get("trained_range", {}))
        return [
            _learned_estimate(
                estimate,
                peak=round(batch.peak_vram_bytes[i]),
                upper=_item(batch.upper_vram_bytes, i),
                allocated=_item(batch.peak_allocated_bytes, i),
                reserved=_item(batch.peak_reserved_bytes, i),
                notes=[*notes, *([ranges[i]] if ranges[i] else [])],
            )
            for i, estimate in enumerate(batch.analytical)
        ]

    def predict_batch(
        self, specs: Sequence[Spec], targets: Sequence[str] = ("peak", "upper")
    ) -> BatchPrediction:
        """Vectorised predictions for many specs: features once, then each target's trees."""
        if self.artifact is None:
            analytical = analytical_estimates(specs)
            peak = np.array([e.peak_vram_bytes for e in analytical], dtype=float)
            upper = [e.upper_vram_bytes for e in analytical]
            return BatchPrediction(
                "analytical",
                peak,
                None if any(u is None for u in upper) else np.array(upper, dtype=float),
                _field(analytical, "peak_allocated_bytes"),
                _field(analytical, "peak_reserved_bytes"),
                analytical,
            )
        matrix, analytical = feature_matrix(specs)
        values = {
            t: np.exp(self.artifact.predict_log(t, matrix))
            for t in dict.fromkeys(("peak", *targets))
            if t in self.artifact.ensembles
        }
        if "upper" in values:
            values["upper"] = np.maximum(values["upper"], values["peak"])
        return BatchPrediction(
            "learned",
            values["peak"],
            values.get("upper"),
            values.get("allocated"),
            values.get("reserved"),
            analytical,
        )

    @cached_property
    def stale_notes(self) -> list[str]:
        """A note when the analytical estimator no longer gives what it gave at training time:
        the residuals were learned on top of the old numbers."""
        probes = self.artifact.metadata.get("analytical_probe", []) if self.artifact else []
        if not probes:
            return []
        from vram_ml.spec import build_spec

        now = analytical_estimates([build_spec(**probe["spec"]) for probe in probes])
        if all(
            math.isclose(e.peak_vram_bytes, p["peak_vram_bytes"], rel_tol=1e-6)
            for e, p in zip(now, probes, strict=True)
        ):
            return []
        return [
            "the analytical estimator changed since this model was trained: "
            "retrain it (`vram-ml train`)"
        ]


def _item(values: np.ndarray | None, index: int) -> int | None:
    return None if values is None else round(values[index])


def _field(estimates: list[Estimate], name: str) -> np.ndarray | None:
    values = [getattr(e, name) for e in estimates]
    return None if any(v is None for v in values) else np.array(values, dtype=float)


def _fallback(analytical: Estimate) -> Estimate:
    return replace(analytical, notes=[*analytical.notes, FALLBACK_NOTE])


def _learned_estimate(
    analytical: Estimate,
    peak: int,
    upper: int | None,
    allocated: int | None,
    reserved: int | None,
    notes: list[str],
) -> Estimate:
    correction = peak - analytical.peak_vram_bytes
    return Estimate(
        estimator="learned",
        peak_vram_bytes=peak,
        breakdown={**analytical.breakdown, "learned_correction": correction},
        upper_vram_bytes=upper,
        upper_basis=LEARNED_UPPER_BASIS if upper is not None else "",
        peak_allocated_bytes=allocated,
        peak_reserved_bytes=reserved,
        notes=[
            *notes,
            f"breakdown: analytical terms, learned correction {'+' if correction >= 0 else ''}"
            f"{gib(correction)} GiB",
            *analytical.notes,  # what the stack's rules did to the base (model/formulas/stack.py)
        ],
        num_gpus=analytical.num_gpus,  # per GPU, as its base
        host_memory_bytes=analytical.host_memory_bytes,
    )
