"""GPU tier: the simulated peak against `torch.cuda.max_memory_allocated` of the same recipe.

Run on a CUDA machine: .venv/bin/python -m pytest -m gpu tests/model/simulate -s
The tolerance is loose on purpose (kernel scratch the rules do not know, library versions of the
GPU machine); the printed figures are what to look at.
"""

from __future__ import annotations

import pytest

from ..tiny_models import TINY_QWEN2_VL, tiny_spec

CASES = [
    pytest.param(dict(lora_target="q_proj,v_proj"), id="lora-qv-ckpt"),
    pytest.param(dict(gradient_checkpointing=False, seq_len=512), id="lora-all-nockpt"),
    pytest.param(dict(method="qlora", quant_bits=4, seq_len=512, batch_size=4),
                 id="qlora-2k-rows"),
    pytest.param(dict(method="full", optimizer="adamw_torch"), id="full-adamw"),
    pytest.param(dict(model=TINY_QWEN2_VL, images_per_sample=1, image_resolution=112, seq_len=128),
                 id="qwen2vl-lora"),
    # training stages (model/recipe/stages/): the reference forward, the value head, generation
    pytest.param(dict(stage="dpo", gradient_checkpointing=False), id="dpo-lora"),
    pytest.param(dict(stage="dpo", method="full"), id="dpo-full-reference-copy"),
    pytest.param(dict(stage="kto"), id="kto-lora"),
    pytest.param(dict(stage="rm"), id="rm-lora"),
    pytest.param(dict(stage="ppo", max_new_tokens=32), id="ppo-lora"),
]


@pytest.mark.gpu
@pytest.mark.parametrize("fields", CASES)
def test_simulated_allocated_peak_matches_cuda(fields):
    import torch

    from vram_ml.model import recipe
    from vram_ml.model.simulate.step import simulate_step

    fields = dict(fields)
    model_source = fields.pop("model", None)
    spec = tiny_spec(model_source, **fields) if model_source else tiny_spec(**fields)
    predicted = simulate_step(spec).peak

    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    model = recipe.build_model(spec, "cuda")
    batch = recipe.make_batch(spec, model, "cuda")
    optimizer = recipe.make_optimizer(spec, model)
    for _ in range(2):
        recipe.train_step(spec, model, batch, optimizer,
                          scaler=recipe.make_grad_scaler(spec, "cuda"))
    torch.cuda.synchronize()
    allocated = torch.cuda.max_memory_allocated()
    reserved = torch.cuda.max_memory_reserved()
    print(f"\n{spec.method} {fields}: allocated cuda {allocated} simulated "
          f"{predicted.peak_allocated_bytes} (tensors {predicted.peak_tensor_bytes}); "
          f"reserved cuda {reserved} simulated {predicted.peak_reserved_bytes}")
    assert predicted.peak_allocated_bytes == pytest.approx(allocated, rel=0.15)
