"""`fit`: the largest batch and cutoff that fit are the edge, and changes are cheapest first."""

from __future__ import annotations

import pytest

from vram_ml.model.answers.card_fit import accumulation_for, candidate_changes, find_fit
from vram_ml.model.learned.estimator import LearnedEstimator
from vram_ml.spec import build_spec

GIB = 1024**3


@pytest.fixture
def learned(artifact_dir):
    return LearnedEstimator(artifact_dir)


def _bound(estimator, spec):
    estimate = estimator.estimate(spec)
    return estimate.upper_vram_bytes or estimate.peak_vram_bytes


def test_largest_batch_and_cutoff_are_the_edge(learned):
    spec = build_spec(
        model="Qwen/Qwen2.5-1.5B",
        method="lora",
        batch_size=4,
        seq_len=1024,
        precision="bf16",
        gradient_checkpointing=False,
    )
    card = 24 * GIB
    report = find_fit(spec, card, estimator=learned)
    assert report.estimator == "learned" and report.bound_name.startswith("upper")
    batch = report.max_batch_size
    assert _bound(learned, spec) == report.bound_vram_bytes
    assert _bound(learned, build_spec(**{**spec.model_dump(), "batch_size": batch})) <= card
    assert _bound(learned, build_spec(**{**spec.model_dump(), "batch_size": batch + 1})) > card
    seq = report.max_seq_len
    assert _bound(learned, build_spec(**{**spec.model_dump(), "seq_len": seq})) <= card
    assert _bound(learned, build_spec(**{**spec.model_dump(), "seq_len": seq + 128})) > card
    assert report.target_effective_batch == 4  # the spec's own: 4 x 1 x 1 GPU
    assert report.batch_size * report.gradient_accumulation == 4
    asked = find_fit(spec, card, target_effective_batch=32, estimator=learned)
    assert asked.batch_size * asked.gradient_accumulation == 32


def test_cheapest_change_first_when_it_does_not_fit(learned):
    spec = build_spec(
        model="meta-llama/Meta-Llama-3-8B",
        method="lora",
        batch_size=8,
        seq_len=2048,
        precision="bf16",
        gradient_checkpointing=False,
        attention="eager",
    )
    report = find_fit(spec, 24 * GIB, estimator=learned)
    assert not report.fits
    order = [change.description for change in candidate_changes(spec)]
    fitting = [change.description for change in report.changes]
    assert fitting == [d for d in order if d in fitting]  # kept in the cost order
    assert report.changes or report.combination
    for change in report.changes:
        assert change.fits and change.bound_vram_bytes <= 24 * GIB


def test_changes_within_the_method_come_before_a_change_of_method(monkeypatch):
    monkeypatch.delenv("VRAM_ML_LEARNED_MODEL", raising=False)
    spec = build_spec(model="meta-llama/Meta-Llama-3-8B", method="full", batch_size=4,
                      seq_len=1024, precision="bf16")
    order = [change.description for change in candidate_changes(spec)]
    assert order.index("optimizer: adamw_8bit") < order.index("method: lora (rank 8)")
    assert order.index("precision: pure_bf16") < order.index("method: lora (rank 8)")
    # 100 GiB: the 8-bit optimizer or pure_bf16 alone fits; no change of method is proposed
    report = find_fit(spec, 100 * GIB, estimator=LearnedEstimator())
    assert report.changes and all("method" not in change.fields for change in report.changes)
    # 64 GiB: no single change within full fine-tuning fits (LoRA would), together they do
    together = find_fit(spec, 64 * GIB, estimator=LearnedEstimator())
    assert not together.changes and "method" not in together.combination.fields


def test_a_change_the_recipe_cannot_measure_says_so(monkeypatch):
    monkeypatch.delenv("VRAM_ML_LEARNED_MODEL", raising=False)
    spec = build_spec(model="meta-llama/Meta-Llama-3-8B", method="full", batch_size=4,
                      seq_len=1024, precision="bf16")
    together = find_fit(spec, 64 * GIB, estimator=LearnedEstimator()).combination
    assert together.fields["liger_kernel"] and together.unmeasured.startswith("unmeasured: liger")
    report = find_fit(spec, 100 * GIB, estimator=LearnedEstimator())
    assert all(change.unmeasured == "" for change in report.changes if
               "liger_kernel" not in change.fields)


def test_fit_and_predict_give_one_verdict(monkeypatch):
    from vram_ml.model.answers.prediction import predict

    monkeypatch.delenv("VRAM_ML_LEARNED_MODEL", raising=False)
    spec = build_spec(model="Qwen/Qwen2.5-7B", batch_size=2, seq_len=1024, precision="bf16")
    bound = predict(spec).answer.upper_vram_bytes
    peak = predict(spec).answer.peak_vram_bytes
    for card_gib in (peak / GIB * 0.9, (peak + bound) / 2 / GIB, bound / GIB * 1.1):
        report = find_fit(spec, int(card_gib * GIB), estimator=LearnedEstimator())
        assert report.verdict == predict(spec, [card_gib]).cards[0].verdict
    assert {find_fit(spec, int(c * GIB)).verdict for c in (
        peak / GIB * 0.9, (peak + bound) / 2 / GIB, bound / GIB * 1.1)} == {
        "does not fit", "tight", "fits"}


def test_fallback_judges_on_the_analytical_answer(monkeypatch, tmp_path):
    monkeypatch.delenv("VRAM_ML_LEARNED_MODEL", raising=False)
    spec = build_spec(model="Qwen/Qwen2.5-0.5B", batch_size=2, seq_len=512, precision="bf16")
    report = find_fit(spec, 80 * GIB, estimator=LearnedEstimator())
    assert report.estimator == "analytical" and report.fits and report.max_batch_size >= 2


@pytest.mark.parametrize(
    "max_batch,gpus,target,expected",
    [
        (16, 1, 32, (16, 2)),
        (6, 1, 32, (4, 8)),
        (3, 2, 32, (2, 8)),
        (64, 1, 32, (32, 1)),
        (5, 1, 7, (1, 7)),
        (4, 3, 32, (4, 3)),
    ],
)
def test_accumulation_keeps_the_effective_batch(max_batch, gpus, target, expected):
    assert accumulation_for(max_batch, gpus, target) == expected
