"""Features: one row per spec, the analytical base in its column, no torch."""

from __future__ import annotations

import math

import numpy as np

from vram_ml.model.estimate import get_estimator
from vram_ml.model.learned.features import (
    BASE_COLUMN,
    FEATURE_NAMES,
    feature_matrix,
    parameter_counts,
)
from vram_ml.spec import build_spec


def test_matrix_shape_names_and_base(synthetic_set):
    specs = synthetic_set.specs[:25]
    matrix, analytical = feature_matrix(specs)
    assert matrix.shape == (25, len(FEATURE_NAMES)) and len(set(FEATURE_NAMES)) == len(
        FEATURE_NAMES
    )
    assert np.isfinite(matrix).all()
    for row, estimate in zip(matrix, analytical, strict=True):
        assert math.isclose(row[BASE_COLUMN], math.log(estimate.peak_vram_bytes))


def test_knobs_move_their_features():
    base = build_spec(model="Qwen/Qwen2.5-0.5B", batch_size=2, seq_len=512, precision="bf16")
    longer = build_spec(model="Qwen/Qwen2.5-0.5B", batch_size=2, seq_len=1024, precision="bf16")
    matrix, _ = feature_matrix([base, longer])
    column = {name: i for i, name in enumerate(FEATURE_NAMES)}
    assert matrix[1, column["tokens_per_step"]] == 2 * matrix[0, column["tokens_per_step"]]
    assert (
        matrix[1, column["attention_scores_per_step"]]
        == 4 * matrix[0, column["attention_scores_per_step"]]
    )
    assert matrix[0, column["method_lora"]] == 1 and matrix[0, column["precision_bf16"]] == 1


def test_parameter_counts_by_method():
    full = build_spec(model="Qwen/Qwen2.5-0.5B", method="full")
    lora = build_spec(model="Qwen/Qwen2.5-0.5B", method="lora", lora_rank=8)
    total = full.resolved_model.shape.total_params
    assert parameter_counts(full) == (total, 0)
    trainable, frozen = parameter_counts(lora)
    assert frozen == total and 0 < trainable < total / 50


def test_features_take_precomputed_analytical_estimates(synthetic_set):
    specs = synthetic_set.specs[:5]
    analytical = [get_estimator("analytical").estimate(spec) for spec in specs]
    again, _ = feature_matrix(specs, analytical)
    np.testing.assert_array_equal(again, feature_matrix(specs)[0])


def test_the_training_stage_moves_its_features():
    specs = [build_spec(model="Qwen/Qwen2.5-0.5B", precision="bf16", **fields) for fields in (
        {}, {"stage": "dpo"}, {"stage": "dpo", "pref_loss": "orpo", "method": "full"},
        {"stage": "ppo", "method": "full", "reward_model_type": "full", "max_new_tokens": 64})]
    matrix, _ = feature_matrix(specs)
    column = {name: i for i, name in enumerate(FEATURE_NAMES)}
    assert matrix[0, column["stage_sft"]] == 1 and matrix[1, column["stage_dpo"]] == 1
    assert list(matrix[:, column["reference_forward"]]) == [0, 1, 0, 1]
    assert list(matrix[:, column["reference_weights"]]) == [0, 0, 0, 1]
    assert list(matrix[:, column["graph_sequences_per_sample"]]) == [1, 2, 2, 1]
    assert matrix[3, column["max_new_tokens"]] == 64 and matrix[3, column["reward_model_full"]]
