"""The CUDA rules: dropout keeps a bool mask, and the scratch of ops CUDA runs differently."""

from __future__ import annotations

import contextlib

import torch

from vram_ml.model.simulate.cuda_emulation import (
    GEMM_4BIT_CUSTOM_MAX_M,
    cuda_behaviour,
    cuda_hidden_bytes,
)
from vram_ml.model.simulate.tracker import LiveStorageTracker


def _dropout_bytes(emulate: bool) -> int:
    x = torch.ones(1000, requires_grad=True)
    tracker = LiveStorageTracker()
    context = cuda_behaviour() if emulate else contextlib.nullcontext()
    with context, tracker:
        y = torch.nn.functional.dropout(x, 0.1, training=True)
    assert y.shape == x.shape
    return tracker.peak.peak_tensor_bytes


def test_dropout_keeps_a_bool_mask_as_on_cuda():
    assert _dropout_bytes(emulate=True) == 4000 + 1000  # output fp32 + bool mask
    assert _dropout_bytes(emulate=False) == 4000 + 4000  # CPU: output + float noise


def test_dropout_is_restored_after_the_step():
    original = torch.nn.functional.dropout
    with cuda_behaviour():
        assert torch.nn.functional.dropout is not original
    assert torch.nn.functional.dropout is original


def _gemm_args(rows: int, n: int = 256, k: int = 128, nested: bool = True):
    a = torch.empty(rows, k, dtype=torch.bfloat16, device="meta")
    args = (a, None, [n, k], None, 64, "nf4", None, object() if nested else None)
    return args


def test_gemm_4bit_scratch_only_above_the_custom_kernel_rows():
    func = "bitsandbytes.gemm_4bit.default"

    class Op:
        def __str__(self):
            return func

    assert cuda_hidden_bytes(Op(), _gemm_args(GEMM_4BIT_CUSTOM_MAX_M), {}, None) == 0
    rows = GEMM_4BIT_CUSTOM_MAX_M + 1
    weight, absmax = 256 * 128 * 2, 256 * 128 // 64 * 4
    assert cuda_hidden_bytes(Op(), _gemm_args(rows), {}, None) == weight + absmax
    assert cuda_hidden_bytes(Op(), _gemm_args(rows, nested=False), {}, None) == weight


def test_flash_backward_scratch_with_gqa():
    class Op:
        def __str__(self):
            return "aten._scaled_dot_product_flash_attention_for_cpu_backward.default"

    q = torch.empty(2, 8, 100, 64, dtype=torch.bfloat16, device="meta")
    kv = torch.empty(2, 2, 100, 64, dtype=torch.bfloat16, device="meta")
    scratch = cuda_hidden_bytes(Op(), (None, q, kv, kv), {}, None)
    dq_accum, softmax_d = 2 * 128 * 8 * 64 * 4, 2 * 8 * 128 * 4
    expanded_dk_dv = 2 * 2 * 100 * 8 * 64 * 2
    assert scratch == dq_accum + softmax_d + expanded_dk_dv


def test_autocast_queries_answer_for_the_cpu_autocast():
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not torch.is_autocast_enabled()  # the CUDA question, on a CPU
        with cuda_behaviour():
            assert torch.is_autocast_enabled() and torch.is_autocast_enabled("cuda")
    with cuda_behaviour():
        assert not torch.is_autocast_enabled()


def test_layer_norm_runs_in_fp32_under_autocast_as_on_cuda():
    norm = torch.nn.LayerNorm(8).bfloat16()
    x = torch.ones(2, 8, dtype=torch.bfloat16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert norm(x).dtype == torch.bfloat16
        with cuda_behaviour():
            assert norm(x).dtype == torch.float32
            assert torch.softmax(x, -1).dtype == torch.float32
        assert norm(x).dtype == torch.bfloat16
