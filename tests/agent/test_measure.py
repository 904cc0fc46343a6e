"""The measurement around the shared recipe, on the CPU (cuda: tests/agent/test_gpu.py)."""

from __future__ import annotations

import pytest

from vram_ml.agent.measure import measure
from vram_ml.spec import build_spec


def test_cpu_measurement_is_consistent(tiny_specs):
    spec = build_spec(**tiny_specs[0])
    m = measure(spec, "cpu", steps=2)
    assert m.status == "ok" and m.steps == 2 and m.step_seconds > 0
    assert 0 < m.setup_peak_allocated_bytes <= m.setup_peak_reserved_bytes
    assert 0 < m.peak_allocated_bytes <= m.peak_reserved_bytes
    assert m.peak_allocated_bytes > m.setup_peak_allocated_bytes  # activations, logits, states
    assert m.cuda_context_bytes == 0 and m.nvml_peak_bytes is None
    assert m.peak_vram_bytes == m.peak_reserved_bytes
    logits = spec.batch_size * spec.seq_len * 1000 * 4
    assert m.peak_allocated_bytes > logits  # the fp32 logits alone



def test_cpu_backend_counts_what_simulate_counts(tiny_specs):
    """One tracker, two uses: the cpu backend's peaks are simulate's figures for the same spec and
    steps, to the byte, including the bitsandbytes quantization state of a QLoRA model."""
    pytest.importorskip("bitsandbytes")
    from vram_ml.model.simulate.step import simulate_step

    spec = build_spec(**{**tiny_specs[1], "method": "qlora", "quant_bits": 4, "optimizer":
                         "adamw_torch", "batch_size": 2, "seq_len": 32})
    m = measure(spec, "cpu", steps=2)
    fake = simulate_step(spec, steps=2).peak
    assert fake.breakdown.get("quantization_constants", 0) > 0
    assert m.status == "ok"
    assert m.peak_allocated_bytes == fake.peak_allocated_bytes
    assert m.peak_reserved_bytes == fake.peak_reserved_bytes


def test_simulated_oom_keeps_lower_bounds_and_error_raises(tiny_specs):
    spec = build_spec(**tiny_specs[1])
    oom = measure(spec, "cpu", fail_at_step="oom")
    assert oom.status == "oom" and "lower bounds" in oom.message
    assert oom.setup_peak_reserved_bytes > 0
    assert oom.peak_vram_bytes >= oom.setup_peak_reserved_bytes
    with pytest.raises(RuntimeError, match="simulated failure"):
        measure(spec, "cpu", fail_at_step="error")


class FakeCuda:
    """torch.cuda's memory counters, driven by the fake recipe below (no GPU needed)."""

    def __init__(self):
        self.reserved = self.allocated = self.max_reserved = self.max_allocated = 0

    def grow(self, n_bytes: int) -> None:
        self.allocated += n_bytes
        self.reserved = max(self.reserved, self.allocated + 2**20)
        self.max_allocated = max(self.max_allocated, self.allocated)
        self.max_reserved = max(self.max_reserved, self.reserved)

    def reset_peak_memory_stats(self):
        self.max_allocated, self.max_reserved = self.allocated, self.reserved

    def install(self, monkeypatch):
        import torch

        for name, value in {
            "init": lambda: None, "synchronize": lambda: None,
            "empty_cache": lambda: None, "memory_reserved": lambda: 0,
            "max_memory_allocated": lambda: self.max_allocated,
            "max_memory_reserved": lambda: self.max_reserved,
            "reset_peak_memory_stats": self.reset_peak_memory_stats,
        }.items():
            monkeypatch.setattr(torch.cuda, name, value)
        real_empty = torch.empty
        monkeypatch.setattr(torch, "empty", lambda *a, device=None, **k: real_empty(*a, **k))


@pytest.mark.parametrize("fail", ["", "oom", "setup-oom"])
def test_cuda_bookkeeping_with_a_fake_device(monkeypatch, tiny_specs, fail):
    import torch

    from vram_ml.agent import measure
    from vram_ml.model import recipe
    from vram_ml.model.recipe import step as recipe_step

    cuda = FakeCuda()
    cuda.install(monkeypatch)
    context = 500 * 2**20

    class Memory:  # NVML: the context, plus whatever torch has reserved
        def __init__(self, index):
            pass

        def read(self):
            return context + cuda.reserved

    def build_model(spec, device):
        cuda.grow(100 * 2**20)
        if fail == "setup-oom":
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 80 GiB")
        return "model"

    def train_step(spec, model, batch, optimizer, scaler=None):
        cuda.grow(50 * 2**20)  # activations come and go, states stay
        cuda.allocated -= 40 * 2**20

    monkeypatch.setattr(measure, "ProcessMemory", Memory)
    monkeypatch.setattr(recipe, "build_model", build_model)
    monkeypatch.setattr(recipe, "make_batch", lambda *a: cuda.grow(2**20))
    monkeypatch.setattr(recipe, "make_optimizer", lambda *a: "optimizer")
    monkeypatch.setattr(recipe, "make_grad_scaler", lambda *a: None)
    monkeypatch.setattr(recipe_step, "train_step", train_step)
    m = measure.measure(build_spec(**tiny_specs[0]), "cuda", steps=3,
                       fail_at_step="oom" if fail == "oom" else "")
    assert m.cuda_context_bytes == context
    assert m.setup_peak_allocated_bytes >= 100 * 2**20
    if fail == "setup-oom":
        assert m.status == "oom" and m.peak_vram_bytes == context + m.setup_peak_reserved_bytes
        return
    assert m.peak_vram_bytes == context + m.peak_reserved_bytes
    if fail == "oom":
        assert m.status == "oom" and m.steps == 0
        return
    assert m.status == "ok" and m.steps == 3
    assert m.peak_allocated_bytes == 101 * 2**20 + 3 * 10 * 2**20 + 40 * 2**20
    assert m.peak_reserved_bytes == m.peak_allocated_bytes + 2**20
    assert m.nvml_peak_bytes == context + m.peak_reserved_bytes  # sampled after the last step
