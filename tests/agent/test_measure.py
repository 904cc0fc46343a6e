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


def test_cpu_backend_measures_a_stage_step_as_simulate_counts_it(tiny_specs):
    """A DPO step with a frozen reference copy: the agent's cpu measurement is simulate's."""
    from vram_ml.model.simulate.step import simulate_step

    spec = build_spec(**{**tiny_specs[1], "stage": "dpo", "seq_len": 32})
    m = measure(spec, "cpu", steps=2)
    fake = simulate_step(spec, steps=2).peak
    assert m.status == "ok" and fake.breakdown["reference_model"] > 0
    assert m.peak_allocated_bytes == fake.peak_allocated_bytes


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
            "empty_cache": lambda: None, "memory_reserved": lambda: self.reserved,
            "max_memory_allocated": lambda: self.max_allocated,
            "max_memory_reserved": lambda: self.max_reserved,
            "reset_peak_memory_stats": self.reset_peak_memory_stats,
        }.items():
            monkeypatch.setattr(torch.cuda, name, value)
        real_empty = torch.empty
        monkeypatch.setattr(torch, "empty", lambda *a, device=None, **k: real_empty(*a, **k))


class PagedOptimizer:
    """bitsandbytes' paged optimizer as the measurement sees it: `is_paged`, and states made at
    the first step, the big one in managed memory (a CPU tensor flagged `is_paged`)."""

    is_paged = True

    def __init__(self):
        self.state = {}

    def first_step(self):
        import torch

        big = torch.zeros(2**18, dtype=torch.uint8)  # 256 KiB "managed"
        big.is_paged = True
        self.state["weight"] = {"state1": big, "absmax1": torch.zeros(4), "step": 1}


MIB = 2**20


@pytest.mark.parametrize("fail", ["", "paged-device", "paged-per-process", "oom", "setup-oom"])
def test_cuda_bookkeeping_with_a_fake_device(monkeypatch, tiny_specs, fail):
    """The target as vram_ml/sample.py defines it: the context read after the warm-up step
    (kernels loaded lazily by step 1 count), the reserved peak, paged states counted once
    whether the NVML reading includes managed memory (device used) or not (per process)."""
    import torch

    from vram_ml.agent import measure
    from vram_ml.model import recipe
    from vram_ml.model.recipe import step as recipe_step

    cuda = FakeCuda()
    cuda.install(monkeypatch)
    context, kernels = 500 * MIB, 60 * MIB
    loaded = {"kernels": 0}
    optimizer = PagedOptimizer() if fail.startswith("paged") else "optimizer"

    class Memory:  # NVML: context + loaded kernels + what torch reserved (+ managed memory)
        per_process = fail == "paged-per-process"

        def __init__(self, index):
            pass

        def read(self):
            managed = 0 if self.per_process else measure.paged_state_bytes(optimizer)
            return context + loaded["kernels"] + cuda.reserved + managed

    def build_model(spec, device):
        cuda.grow(100 * MIB)
        if fail == "setup-oom":
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 80 GiB")
        return "model"

    def train_step(spec, model, batch, optimizer_, scaler=None):
        cuda.grow(50 * MIB)  # activations come and go, states stay
        cuda.allocated -= 40 * MIB
        loaded["kernels"] = kernels  # lazily loaded by the first step
        if isinstance(optimizer, PagedOptimizer) and not optimizer.state:
            optimizer.first_step()

    monkeypatch.setattr(measure, "ProcessMemory", Memory)
    monkeypatch.setattr(recipe, "build_model", build_model)
    monkeypatch.setattr(recipe, "make_batch", lambda *a: cuda.grow(MIB))
    monkeypatch.setattr(recipe, "make_optimizer", lambda *a: optimizer)
    monkeypatch.setattr(recipe, "make_grad_scaler", lambda *a: None)
    monkeypatch.setattr(recipe_step, "train_step", train_step)
    m = measure.measure(build_spec(**tiny_specs[0]), "cuda", steps=3,
                        fail_at_step="oom" if fail == "oom" else "")
    assert m.cold_context_bytes == context
    assert m.setup_peak_allocated_bytes >= 100 * MIB
    if fail in ("setup-oom", "oom"):  # no step ran: the cold context, a lower bound
        assert m.status == "oom" and m.steps == 0 and m.cuda_context_bytes == context
        reserved = m.setup_peak_reserved_bytes if fail == "setup-oom" else m.peak_reserved_bytes
        assert m.peak_vram_bytes == context + reserved
        return
    paged = 2**18 if fail.startswith("paged") else 0
    assert m.cuda_context_bytes == context + kernels and m.paged_bytes == paged
    assert m.peak_vram_bytes == context + kernels + m.peak_reserved_bytes + paged
    assert m.status == "ok" and m.steps == 3
    assert m.peak_allocated_bytes == 101 * MIB + 3 * 10 * MIB + 40 * MIB
    assert m.peak_reserved_bytes == m.peak_allocated_bytes + MIB
    # NVML's own view (sampled after the last step) is the target less what it does not see
    assert m.nvml_peak_bytes == m.peak_vram_bytes - (paged if Memory.per_process else 0)


def test_single_step_reads_the_warm_context_after_it(monkeypatch, tiny_specs):
    from vram_ml.agent import measure
    from vram_ml.model import recipe
    from vram_ml.model.recipe import step as recipe_step

    cuda, loaded = FakeCuda(), {"kernels": 0}
    cuda.install(monkeypatch)

    class Memory:
        per_process = True

        def __init__(self, index):
            pass

        def read(self):
            return 300 * MIB + loaded["kernels"] + cuda.reserved

    monkeypatch.setattr(measure, "ProcessMemory", Memory)
    monkeypatch.setattr(recipe, "build_model", lambda *a: cuda.grow(MIB))
    monkeypatch.setattr(recipe, "make_batch", lambda *a: None)
    monkeypatch.setattr(recipe, "make_optimizer", lambda *a: None)
    monkeypatch.setattr(recipe, "make_grad_scaler", lambda *a: None)
    monkeypatch.setattr(recipe_step, "train_step",
                        lambda *a, **k: loaded.update(kernels=20 * MIB))
    m = measure.measure(build_spec(**tiny_specs[0]), "cuda", steps=1)
    assert (m.cold_context_bytes, m.cuda_context_bytes) == (300 * MIB, 320 * MIB)
