"""Random weights on a device: memory does not depend on weight values, only on their shapes and
dtypes (small normals keep fp16 finite)."""

from __future__ import annotations

import torch
from torch import nn

INIT_STD = 0.02


def random_weight(module: nn.Module, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    weight = torch.empty(module.out_features, module.in_features, dtype=dtype, device=device)
    return weight if device.type == "meta" else weight.normal_(0.0, INIT_STD)


def materialize(model: nn.Module, device: torch.device) -> None:
    """Give every meta parameter random values on `device` (tied parameters stay one tensor);
    move buffers there."""
    made: dict[int, nn.Parameter] = {}
    for module in model.modules():
        for name, param in list(module._parameters.items()):
            if param is None:
                continue
            if param.device.type == "meta":
                if id(param) not in made:
                    made[id(param)] = nn.Parameter(random_like(param, name, device),
                                                   requires_grad=param.requires_grad)
                module._parameters[name] = made[id(param)]
            elif param.device != device:
                param.data = param.data.to(device)
        for name, buffer in list(module._buffers.items()):
            if buffer is not None and buffer.device != device:
                module._buffers[name] = buffer.to(device)


def random_like(param: torch.Tensor, name: str, device: torch.device) -> torch.Tensor:
    data = torch.empty(param.shape, dtype=param.dtype, device=device)
    if name == "bias":
        return data.zero_()
    return data.fill_(1.0) if data.dim() == 1 else data.normal_(0.0, INIT_STD)
