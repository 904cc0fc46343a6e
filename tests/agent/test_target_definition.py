"""One definition of the target (vram_ml/sample.py `peak_vram`): the same in the measurement
(tests/agent/test_measure.py), the dataset checks, the analytical estimator and the data card."""

from __future__ import annotations

from pathlib import Path

from vram_ml.agent.datacard import datacard
from vram_ml.agent.dataset import check_sample, read_rows, validate_rows
from vram_ml.model.formulas.analytical import CUDA_CONTEXT_BYTES, analyse
from vram_ml.sample import Measurement, peak_vram
from vram_ml.spec import build_spec

ROOT = Path(__file__).parents[2]


def test_dataset_checks_hold_rows_to_the_definition(tiny_specs, make_sample):
    sample = make_sample(tiny_specs[0])
    sample.measurement = Measurement("ok", peak_reserved_bytes=1000, cuda_context_bytes=500,
                                     paged_bytes=300, peak_vram_bytes=1800, steps=3)
    assert check_sample(sample) == ""
    sample.measurement.peak_vram_bytes = 1500  # context + reserved, paged states left out
    assert check_sample(sample).startswith("peak_vram_bytes != cuda_context_bytes")


def test_analytical_peak_is_the_same_sum():
    spec = build_spec(model="Qwen/Qwen2.5-0.5B", method="full", optimizer="paged_adamw_32bit",
                      batch_size=1, seq_len=256)
    analysis = analyse(spec)
    assert analysis.states.paged_optimizer > 0
    assert analysis.peak_vram_bytes == peak_vram(CUDA_CONTEXT_BYTES, analysis.peak_reserved_bytes,
                                                 analysis.states.paged_optimizer)


def test_the_data_card_says_what_the_target_is():
    card = datacard([], "samples.csv")
    assert "`cuda_context_bytes + peak_reserved_bytes + paged_bytes`" in card
    assert "after the first\n  (warm-up) step" in card and "1e5 elements" in card
    samples = validate_rows(read_rows(ROOT / "datasets" / "samples.csv")).samples
    committed = (ROOT / "datasets" / "DATACARD.md").read_text(encoding="utf-8")
    assert committed == datacard(samples, "samples.csv"), \
        "datasets/DATACARD.md is stale: `vram-ml dataset export` regenerates it"
