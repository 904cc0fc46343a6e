"""Fake tensors for a model built on `meta`, and the mode that keeps integer metadata real.

The model is built on `meta` (peft and bitsandbytes modules included), then every parameter and
quantization-state tensor becomes a `FakeTensor` on device `cpu`: shapes, dtypes and strides
without storage. Buffers (rotary frequencies, position ids) stay real: they are small.

Why `cpu` fake tensors: CPU SDPA keeps what CUDA flash attention keeps (output + logsumexp);
`meta` alone falls back to the math kernel (the full attention matrix), and fake `cuda` aborts
autograd on a machine without CUDA.

Why real metadata: transformers branches on values (attention mask all ones -> no mask, Qwen2-VL's
grid sizes via `.tolist()`); with fake integers it takes its tracing path and builds an explicit
causal mask that CUDA training never builds. `RealMetadataMode` runs an op for real when none of
its inputs is fake and it is small; a real boolean mask indexing a fake tensor (Qwen3-VL's
DeepStack rows `hidden_states[visual_pos_masks, :]`) becomes the integer indices it stands for,
so the output's shape is known without data.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch._subclasses.fake_tensor import FakeTensor, FakeTensorMode
from torch.utils._python_dispatch import TorchDispatchMode

from vram_ml.model.simulate.tracker import tensors_in

REAL_LIMIT = 1 << 24  # elements: real inputs larger than this go to the fake path
REAL_FACTORY_LIMIT = 1 << 20  # floating factory outputs larger than this are made fake


class RealMetadataMode(TorchDispatchMode):
    """Run ops without fake inputs for real (integer metadata); the rest goes to fake mode."""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if _runs_real(func, args, kwargs):
            with torch._C._DisableTorchDispatch():
                return func(*args, **kwargs)
        if func in _INDEX_OPS and len(args) > 1:
            args = (args[0], _integer_indices(args[1]), *args[2:])
        return func(*args, **kwargs)


_INDEX_OPS = {torch.ops.aten.index.Tensor, torch.ops.aten.index_put.default,
              torch.ops.aten.index_put_.default, torch.ops.aten._unsafe_index_put.default}


def _integer_indices(indices):
    """Real boolean masks among `indices` as the integer indices they select (nonzero)."""
    result = []
    for index in indices:
        if (isinstance(index, torch.Tensor) and not isinstance(index, FakeTensor)
                and index.dtype == torch.bool and index.device.type != "meta"):
            with torch._C._DisableTorchDispatch():
                result.extend(index.nonzero(as_tuple=True))
        else:
            result.append(index)
    return result


def _runs_real(func, args, kwargs) -> bool:
    tensors = tensors_in((args, kwargs))
    if any(isinstance(t, FakeTensor) or t.device.type == "meta" for t in tensors):
        return False
    if any(type(t) not in (torch.Tensor, nn.Parameter) for t in tensors):
        return False  # a subclass (FSDP2's DTensor) dispatches itself
    if tensors:
        return all(t.numel() <= REAL_LIMIT for t in tensors)
    dtype = kwargs.get("dtype")
    size = args[0] if args and isinstance(args[0], list | tuple) else None
    if size is None or (dtype is not None and not dtype.is_floating_point):
        return True
    return math.prod(int(s) for s in size) <= REAL_FACTORY_LIMIT


def fake_like(tensor: torch.Tensor, mode: FakeTensorMode) -> torch.Tensor:
    """A fake `cpu` tensor with `tensor`'s shape, stride and dtype."""
    with mode:
        return torch.empty_strided(tensor.shape, tensor.stride(), dtype=tensor.dtype, device="cpu")


def make_fake(model: nn.Module, mode: FakeTensorMode) -> None:
    """Replace every meta parameter (and bitsandbytes quantization state) by a fake `cpu` tensor.

    bitsandbytes' `Params4bit` / `Int8Params` cannot wrap a FakeTensor: 4-bit weights become plain
    uint8 parameters carrying their quant state (what `Linear4bit.forward` reads), 8-bit weights
    plain int8 parameters with `CB` / `SCB` in the module's matmul state.
    """
    import bitsandbytes as bnb

    made: dict[int, nn.Parameter] = {}  # tied parameters (embeddings = head) stay one tensor
    for module in model.modules():
        for name, param in list(module._parameters.items()):
            if param is None or param.device.type != "meta":
                continue
            if id(param) not in made:
                made[id(param)] = _fake_parameter(module, param, mode, bnb)
            module._parameters[name] = made[id(param)]


def _fake_parameter(module: nn.Module, param: nn.Parameter, mode: FakeTensorMode, bnb):
    fake = nn.Parameter(fake_like(param, mode), requires_grad=param.requires_grad)
    quant_state = getattr(param, "quant_state", None)
    if quant_state is not None:
        fake.quant_state = module.quant_state = fake_quant_state(quant_state, mode)
    if isinstance(param, bnb.nn.Int8Params):
        module.state.CB = fake
        module.state.SCB = fake_like(param.SCB, mode)
        fake.CB = fake.SCB = None
    return fake


def fake_quant_state(state, mode: FakeTensorMode):
    """A copy of a bitsandbytes QuantState whose tensors are fake."""
    import copy

    state = copy.copy(state)
    for attr in ("absmax", "code", "offset"):
        value = getattr(state, attr, None)
        if isinstance(value, torch.Tensor):
            setattr(state, attr, fake_like(value, mode))
    if getattr(state, "state2", None) is not None:
        state.state2 = fake_quant_state(state.state2, mode)
    return state


def quantization_tensors(model: nn.Module) -> list[torch.Tensor]:
    """The tensors of every bitsandbytes quantization state in `model` (not parameters)."""
    tensors = []
    for module in model.modules():
        weight = getattr(module, "weight", None)
        state = getattr(weight, "quant_state", None)
        while state is not None:
            tensors += [getattr(state, a) for a in ("absmax", "code", "offset")
                        if isinstance(getattr(state, a, None), torch.Tensor)]
            state = getattr(state, "state2", None)
        matmul_state = getattr(module, "state", None)
        for attr in ("SCB",):
            value = getattr(matmul_state, attr, None) if matmul_state is not None else None
            if value is None and weight is not None:
                value = getattr(weight, attr, None)
            if isinstance(value, torch.Tensor):
                tensors.append(value)
    return tensors
