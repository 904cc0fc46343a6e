"""Paged optimizers, one definition (vram_ml/sample.py): the analytical estimator splits a paged
optimizer's states as bitsandbytes does, managed memory for tensors of at least 1e5 elements and
the caching allocator for the rest, checked against the recipe's real trainable parameters."""

from __future__ import annotations

import inspect
from math import ceil

import pytest

from vram_ml.model.formulas.model_states import BNB_PAGED_MIN_SIZE, Dtypes, model_states

from ..tiny_models import TINY_LLAMA, tiny_spec

# embeddings, output head and MLP matrices above 1e5 elements; attention and norms below
OVERRIDES = {"hidden_size": 128, "intermediate_size": 1024}


def test_bitsandbytes_pages_tensors_of_at_least_1e5_elements():
    bnb = pytest.importorskip("bitsandbytes")
    source = inspect.getsource(bnb.optim.optimizer.Optimizer8bit.get_state_buffer)
    assert "p.numel() < 1e5" in source and BNB_PAGED_MIN_SIZE == 100_000


@pytest.mark.parametrize("optimizer", ["paged_adamw_8bit", "paged_adamw_32bit"])
def test_paged_split_matches_the_recipes_parameters(optimizer):
    pytest.importorskip("bitsandbytes")
    from vram_ml.model import recipe

    spec = tiny_spec(TINY_LLAMA, model_overrides=OVERRIDES, method="full", optimizer=optimizer,
                     precision="fp32")
    sizes = [p.numel() for p in recipe.build_model(spec, "cpu").parameters() if p.requires_grad]
    assert any(n >= BNB_PAGED_MIN_SIZE for n in sizes) and any(n < BNB_PAGED_MIN_SIZE
                                                               for n in sizes)

    def states(n: int) -> tuple[int, int]:  # (managed, allocator) bytes, bitsandbytes 0.50
        if optimizer == "paged_adamw_32bit":
            return (8 * n, 0) if n >= BNB_PAGED_MIN_SIZE else (0, 8 * n)
        if n < 4096:  # min_8bit_size: fp32 states, never paged at this size
            return 0, 8 * n
        absmax = 2 * 4 * ceil(n / 256)  # torch.zeros on the device: the allocator
        return (2 * n, absmax) if n >= BNB_PAGED_MIN_SIZE else (0, 2 * n + absmax)

    managed = sum(states(n)[0] for n in sizes)
    allocator = sum(states(n)[1] for n in sizes)
    counted = model_states(spec, spec.resolved_model.shape, Dtypes.of(spec))
    assert (counted.paged_optimizer, counted.optimizer) == (managed, allocator)
