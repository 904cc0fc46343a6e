"""Real-size catalog models on fake tensors: exact model-state bytes, sane peaks, every catalog
model either simulates or is refused in one line.

Model-state bytes are exact invariants (parameter counts from ModelShape x dtype sizes); the
peaks are only bounded loosely around the prototype's figures (bf16, batch 2 x 1024, r=8 q,v:
Llama-3-8B ~28 GiB, ~18.4 GiB with checkpointing), never pinned.
"""

from __future__ import annotations

import pytest

from ..tiny_models import tiny_spec

GIB = 1024**3
QV = dict(batch_size=2, seq_len=1024, precision="bf16", lora_target="q_proj,v_proj")


def _lora_bytes(shape, targets, rank, dtype_bytes=4):
    linears = {linear.name: linear for linear in shape.layer_linears}
    per_layer = sum(rank * (linears[t].in_features + linears[t].out_features) for t in targets)
    return shape.num_layers * per_layer * dtype_bytes


def test_tiny_model_state_bytes_are_exact():
    from vram_ml.model.simulate.step import simulate_step

    spec = tiny_spec(lora_target="q_proj,v_proj", lora_rank=4)
    breakdown = simulate_step(spec).peak.breakdown
    shape = spec.resolved_model.shape
    inv_freq = 2 * (shape.head_dim // 2) * 4  # rotary inv_freq + original_inv_freq (fp32)
    assert breakdown["weights"] == 2 * shape.total_params + inv_freq
    assert breakdown["adapters"] == _lora_bytes(shape, ("q_proj", "v_proj"), 4)


@pytest.mark.slow
@pytest.mark.parametrize("checkpointing,low,high", [(False, 24, 32), (True, 16.5, 20.5)])
def test_llama3_8b_lora(checkpointing, low, high):
    from vram_ml.model.simulate.estimator import simulate
    from vram_ml.spec import build_spec

    spec = build_spec(model="meta-llama/Meta-Llama-3-8B", gradient_checkpointing=checkpointing,
                      **QV)
    simulation = simulate(spec)
    shape = spec.resolved_model.shape
    breakdown = simulation.estimate.breakdown
    assert breakdown["weights"] - 2 * shape.total_params < 1024**2
    assert breakdown["adapters"] == _lora_bytes(shape, ("q_proj", "v_proj"), 8)
    assert low * GIB < simulation.peak_tensor_bytes < high * GIB
    assert simulation.run.seconds < 60


@pytest.mark.slow
def test_llama3_8b_qlora_weights_are_4bit():
    from vram_ml.model.simulate.estimator import simulate
    from vram_ml.spec import build_spec

    spec = build_spec(model="meta-llama/Meta-Llama-3-8B", method="qlora", quant_bits=4, **QV)
    simulation = simulate(spec)
    shape = spec.resolved_model.shape
    linear = shape.num_layers * shape.layer_linear_params
    unquantized = shape.total_params - linear
    weights = simulation.estimate.breakdown["weights"]
    assert abs(weights - (linear // 2 + 2 * unquantized)) < 1024**2
    assert 0 < simulation.estimate.breakdown["quantization_constants"] < linear // 32


@pytest.mark.slow
def test_qwen2_vl_7b_with_an_image():
    from vram_ml.model.simulate.estimator import simulate
    from vram_ml.spec import build_spec

    spec = build_spec(model="Qwen/Qwen2-VL-7B-Instruct", images_per_sample=1,
                      image_resolution=768, **QV)
    simulation = simulate(spec)
    assert simulation.estimate.breakdown["weights"] > 2 * spec.resolved_model.shape.total_params
    assert 16 * GIB < simulation.peak_tensor_bytes < 32 * GIB


@pytest.mark.slow
def test_every_catalog_model_simulates_or_is_refused_in_one_line():
    from vram_ml.architectures import REMOTE_CODE_MODEL_TYPES
    from vram_ml.model.simulate.estimator import simulate
    from vram_ml.model_source import load_catalog
    from vram_ml.spec import build_spec

    refused = {}
    for hf_id in sorted(load_catalog()):
        spec = build_spec(model=hf_id, batch_size=1, seq_len=256, precision="bf16")
        try:
            simulation = simulate(spec)
        except ValueError as error:
            assert "\n" not in str(error)
            refused[hf_id] = str(error)
            continue
        assert simulation.estimate.breakdown["weights"] >= spec.resolved_model.shape.total_params
    remote = {hf_id for hf_id, reason in refused.items() if "remote code only" in reason}
    assert remote == {hf_id for hf_id, entry in load_catalog().items()
                      if entry.config["model_type"] in REMOTE_CODE_MODEL_TYPES}
    assert len(refused) - len(remote) <= 5, refused
