"""Where a CPU step differs from a CUDA step in memory, and how we make it behave like CUDA.

The step runs on `cpu` tensors (fake or real). Each difference from CUDA is named here, and every
one is applied the same way to fake and real execution, so `fake == real` still checks the
simulator while these rules carry the CUDA knowledge:

1. dropout: CUDA runs the fused `native_dropout` (saves a bool mask); CPU decomposes dropout into
   a float noise tensor. `dropout_as_on_cuda` routes training-mode dropout to `native_dropout`.
2. bitsandbytes 8-bit matmul: on CPU bitsandbytes takes a dequantize-and-matmul path; on CUDA
   `MatMul8bitLt` (int8 activations). `bnb_matmul_as_on_cuda` forces the CUDA path.
3. scratch memory inside one op, invisible to a tensor tracker, added at that op
   (`cuda_hidden_bytes`):
   - bitsandbytes 4-bit `gemm_4bit` with more than 1536 rows: its CUDA kernel dequantizes the
     whole weight (N x K in the compute dtype) plus, with double quantization, the fp32 absmax;
   - flash-attention backward: fp32 `dq_accum` (B x S/128*128 x H x D) and `softmax_d`
     (B x H x S), and with GQA the expanded dK, dV (B x S x H x D each) before they are summed.
4. autocast: CUDA autocast runs layer_norm, group_norm, pow, exp, log, rsqrt, softplus (and softmax
   without a dtype) in fp32; CPU autocast keeps them in bf16/fp16. `cuda_autocast_policy` gives
   CPU autocast CUDA's policy for those ops (a Python AutocastCPU kernel, removed afterwards).
5. autocast queries: peft's bitsandbytes LoRA layers ask `torch.is_autocast_enabled()`, which
   means CUDA autocast; on the CPU it answers False and peft adds an fp32 copy of every LoRA input.
   `autocast_queries_as_on_cuda` answers for the CPU autocast the step runs under.
6. attention dropout: CUDA's flash kernel applies SDPA's `dropout_p` inside the kernel (it keeps
   only its RNG state); the CPU flash kernel has no dropout and SDPA falls back to the math
   kernel, which saves fp32 scores. `sdpa_as_on_cuda` runs SDPA with dropout_p = 0.
7. unequal head dims (MLA: queries/keys 192, values 128): CUDA's flash kernel refuses them and
   SDPA runs the memory-efficient kernel (output + fp32 logsumexp saved); on the CPU SDPA falls
   back to the math kernel. On fake tensors `sdpa_as_on_cuda` calls the memory-efficient op
   itself (its meta kernel gives the CUDA shapes); its backward gets flash's scratch rule.
Not emulated (documented approximations): the rest of CUDA autocast's fp32 list (losses, norms of
fp16 inputs; the models here reach them with fp32 inputs already); cuDNN attention (SDPA is
assumed to pick flash attention, as on H100 by default).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator

import torch

GEMM_4BIT_CUSTOM_MAX_M = 1536  # bitsandbytes' CUDA gemm_4bit dequantizes above this many rows
FLASH_SEQ_ROUND = 128  # flash-attention rounds the sequence of its backward buffers
FLASH_HEAD_ROUND = 8


@contextlib.contextmanager
def dropout_as_on_cuda() -> Iterator[None]:
    """Training-mode dropout through `native_dropout` (output + bool mask), as CUDA runs it.

    `torch.nn.functional.dropout` is swapped for the duration (a function mode would miss the
    recomputation of checkpointed layers, which runs inside the autograd engine).
    """
    functional = torch.nn.functional
    original = functional.dropout

    def dropout(input, p=0.5, training=True, inplace=False):
        if training and 0.0 < p < 1.0 and not inplace:
            return torch.native_dropout(input, p, True)[0]
        return original(input, p, training, inplace)

    functional.dropout = dropout
    try:
        yield
    finally:
        functional.dropout = original


@contextlib.contextmanager
def bnb_matmul_as_on_cuda() -> Iterator[None]:
    """bitsandbytes' 8-bit `matmul` always through `MatMul8bitLt` (its CUDA path)."""
    try:
        import bitsandbytes as bnb
        from bitsandbytes.autograd._functions import MatMul8bitLt
    except ImportError:
        yield
        return

    def matmul(A, B, out=None, state=None, threshold=0.0, bias=None):
        return MatMul8bitLt.apply(A, B, out, bias, state)

    original = bnb.matmul
    bnb.matmul = matmul
    try:
        yield
    finally:
        bnb.matmul = original


@contextlib.contextmanager
def sdpa_as_on_cuda() -> Iterator[None]:
    """Rules 6 and 7: SDPA keeps what CUDA's fused kernels keep (no scores) with attention
    dropout and with value heads narrower than query heads."""
    from torch._subclasses.fake_tensor import FakeTensor

    functional = torch.nn.functional
    original = functional.scaled_dot_product_attention

    def sdpa(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
             enable_gqa=False):
        if (query.shape[-1] != value.shape[-1] and isinstance(query, FakeTensor)
                and key.shape[1] == query.shape[1]
                and (attn_mask is None or attn_mask.dtype != torch.bool)):
            return torch.ops.aten._scaled_dot_product_efficient_attention(
                query, key, value, attn_mask, True, 0.0, is_causal, scale=scale)[0]
        return original(query, key, value, attn_mask, 0.0, is_causal, scale=scale,
                        enable_gqa=enable_gqa)

    functional.scaled_dot_product_attention = sdpa
    try:
        yield
    finally:
        functional.scaled_dot_product_attention = original


@contextlib.contextmanager
def cuda_behaviour() -> Iterator[None]:
    """Rules 1, 2 and 4 to 7 for the duration of a step (rule 3 is the tracker's
    `hidden_bytes`)."""
    with dropout_as_on_cuda(), bnb_matmul_as_on_cuda(), cuda_autocast_policy(), \
            autocast_queries_as_on_cuda(), sdpa_as_on_cuda():
        yield


@contextlib.contextmanager
def autocast_queries_as_on_cuda() -> Iterator[None]:
    """`torch.is_autocast_enabled()` (no device: CUDA's) and `("cuda")` answer for CPU autocast."""
    original = torch.is_autocast_enabled

    def is_autocast_enabled(device_type: str | None = None) -> bool:
        return original("cpu" if device_type in (None, "cuda") else device_type)

    torch.is_autocast_enabled = is_autocast_enabled
    try:
        yield
    finally:
        torch.is_autocast_enabled = original


def cuda_hidden_bytes(func, args, kwargs, out) -> int:
    """Rule 3: bytes CUDA allocates inside `func` beyond its outputs (0 for most ops)."""
    name = str(func)
    if name == "bitsandbytes.gemm_4bit.default":
        return _gemm_4bit_scratch(args, kwargs)
    if name in ("aten._scaled_dot_product_flash_attention_for_cpu_backward.default",
                "aten._scaled_dot_product_efficient_attention_backward.default"):
        return _flash_backward_scratch(args)
    return 0


def _gemm_4bit_scratch(args, kwargs) -> int:
    a, _, shape_b, _, blocksize = args[:5]
    rows = a.numel() // a.shape[-1]
    if rows <= GEMM_4BIT_CUSTOM_MAX_M:
        return 0
    n, k = shape_b
    weight = n * k * a.element_size()
    nested = kwargs.get("absmax_8bit", args[7] if len(args) > 7 else None) is not None
    absmax = math.ceil(n * k / blocksize) * 4 if nested else 0
    return weight + absmax


def _flash_backward_scratch(args) -> int:
    # (grad_out, query, key, value, out, logsumexp, ...): tensors are B x H x S x D.
    query, key = args[1], args[2]
    batch, heads, seq, dim = query.shape
    seq_r = -(-seq // FLASH_SEQ_ROUND) * FLASH_SEQ_ROUND
    dim_r = -(-dim // FLASH_HEAD_ROUND) * FLASH_HEAD_ROUND
    scratch = batch * seq_r * heads * dim_r * 4 + batch * heads * seq_r * 4
    if key.shape[1] != heads:  # GQA: dK, dV expanded to all heads, then summed
        scratch += 2 * batch * key.shape[2] * heads * dim * key.element_size()
    return scratch


# --- rule 4: CUDA autocast's fp32 op list ---------------------------------------------------
# Ops CUDA autocast runs in fp32 that CPU autocast leaves in bf16/fp16 (torch's
# autocast_mode.cpp, KERNEL_CUDA(..., fp32) and fp32_set_opt_dtype), limited to the ones that
# transformers models run on activations: LayerNorm, GELU-tanh's pow, softmax without dtype.
AUTOCAST_FP32_OPS = (
    "layer_norm", "group_norm", "pow.Tensor_Scalar", "pow.Tensor_Tensor", "exp", "log", "rsqrt",
    "reciprocal", "softplus", "logsumexp",
)
AUTOCAST_FP32_DTYPE_OPS = ("softmax.int", "log_softmax.int")


def _autocast_key_excluded():
    return torch._C._ExcludeDispatchKeyGuard(
        torch._C.DispatchKeySet(torch._C.DispatchKey.AutocastCPU)
    )


def _to_fp32(value):
    if isinstance(value, torch.Tensor) and value.dtype in (torch.float16, torch.bfloat16):
        return value.float()
    if isinstance(value, list | tuple):
        return type(value)(_to_fp32(item) for item in value)
    return value


def _fp32_kernel(op):
    def kernel(*args, **kwargs):
        with _autocast_key_excluded():
            return op(*_to_fp32(args), **{k: _to_fp32(v) for k, v in kwargs.items()})

    return kernel


def _fp32_dtype_kernel(op):
    def kernel(input, dim, dtype=None):
        with _autocast_key_excluded():
            if dtype is None and input.dtype in (torch.float16, torch.bfloat16):
                dtype = torch.float32
            return op(input, dim, dtype)

    return kernel


@contextlib.contextmanager
def cuda_autocast_policy() -> Iterator[None]:
    """Give CPU autocast CUDA's fp32 policy for the ops above, for the duration."""
    library = torch.library.Library("aten", "IMPL")
    try:
        for name in AUTOCAST_FP32_OPS:
            op = _aten(name)
            library.impl(name, _fp32_kernel(op), "AutocastCPU")
        for name in AUTOCAST_FP32_DTYPE_OPS:
            library.impl(name, _fp32_dtype_kernel(_aten(name)), "AutocastCPU")
        yield
    finally:
        library._destroy()


def _aten(name: str):
    base, _, overload = name.partition(".")
    return getattr(getattr(torch.ops.aten, base), overload or "default")
