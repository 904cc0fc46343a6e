"""The agent's multi-GPU path: torchrun over N processes (agent/ranks.py), each rank measuring
its own device, gathered per GPU and in total.

Default tier: the gathering, the launch environment, and one rank's step under torch's fake
process group on real tensors (in this process, seconds) equal to simulate's fake-tensor FSDP2.
Slow tier (`-m slow`): the real rehearsal on the CPU, two gloo processes under torchrun (FSDP2,
FSDP1, DeepSpeed ZeRO-2 / ZeRO-3 with DS_ACCELERATOR=cpu), ~30-60 s each on two cores.
GPU tier (`-m gpu`, needs 2 CUDA GPUs): the same launches over NCCL on two GPUs.
"""

from __future__ import annotations

import json

import pytest

from tests.model.tiny_models import TINY_LLAMA
from vram_ml.agent.ranks import gather, rank_env
from vram_ml.agent.worker import Slot, measure_isolated
from vram_ml.sample import Measurement
from vram_ml.spec import build_spec

FSDP2 = {"distributed": "fsdp", "fsdp_version": 2, "accelerate_version": "1.13.0"}


def tiny(**fields):
    return build_spec(model=TINY_LLAMA, batch_size=2, seq_len=64, precision="bf16", num_gpus=2,
                      **fields)


def test_ranks_are_gathered_per_gpu_and_in_total():
    ranks = [Measurement("ok", peak_allocated_bytes=9, peak_reserved_bytes=10, peak_vram_bytes=12,
                         cuda_context_bytes=2, steps=3),
             Measurement("ok", peak_allocated_bytes=7, peak_reserved_bytes=8, peak_vram_bytes=11,
                         cuda_context_bytes=3, steps=3)]
    both = gather(ranks)
    assert (both.status, both.peak_vram_bytes, both.peak_reserved_bytes) == ("ok", 12, 10)
    assert both.total_vram_bytes == 23 and json.loads(both.per_gpu_peak_vram) == [12, 11]
    oom = gather([ranks[0], Measurement("oom", "out of memory", peak_vram_bytes=20)])
    assert oom.status == "oom" and oom.peak_vram_bytes == 20 and "memory" in oom.message
    error = gather([ranks[0], Measurement("error", "rank 1: boom")])
    assert error.status == "error" and error.peak_vram_bytes is None and "boom" in error.message


def test_the_launch_sees_the_slots_gpus_or_deepspeeds_cpu_accelerator():
    cuda = rank_env(Slot("cuda", 2, gpu_indices=(2, 3)))
    assert cuda["CUDA_VISIBLE_DEVICES"] == "2,3" and cuda["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID"
    cpu = rank_env(Slot("cpu"))
    assert cpu["CUDA_VISIBLE_DEVICES"] == "" and cpu["DS_ACCELERATOR"] == "cpu"
    assert Slot("cuda", 2, gpu_indices=(2, 3)).label == "gpu2+3"


def test_a_slot_with_too_few_gpus_is_an_error_sample(tmp_path):
    sample = measure_isolated(tiny(**FSDP2), Slot("cuda", 0), tmp_path, steps=1)
    assert sample.measurement.status == "error" and "needs 2 GPUs" in sample.measurement.message


def test_one_rank_on_real_tensors_is_what_simulate_counts_on_fake_ones():
    """Rank 0 of FSDP2 over 2 GPUs, the fake process group with real CPU tensors, against
    simulate's fake-tensor step of the same spec: one tracker, the same bytes."""
    import torch
    import torch.distributed as dist
    from torch.testing._internal.distributed.fake_pg import FakeStore

    from vram_ml.model import recipe
    from vram_ml.model.recipe.distributed import wrap
    from vram_ml.model.simulate.distributed_step import tracked_distributed_steps
    from vram_ml.model.simulate.step import quiet_libraries, simulate_step

    spec = tiny(**FSDP2)
    fake = simulate_step(spec, steps=2).peak
    dist.init_process_group("fake", rank=0, world_size=2, store=FakeStore())
    try:
        with quiet_libraries():
            torch.manual_seed(0)
            model = recipe.build_model(spec, "cpu")
            batch = recipe.make_batch(spec, model, "cpu")
            real = tracked_distributed_steps(spec, wrap(spec, model, torch.device("cpu")), batch,
                                             2)
    finally:
        dist.destroy_process_group()
    assert real.peak_allocated_bytes == fake.peak_allocated_bytes
    assert real.peak_tensor_bytes == fake.peak_tensor_bytes
    # FSDP shards: rank 0 holds half the weights of one GPU's run
    single = simulate_step(build_spec(**{**spec.model_dump(), "num_gpus": 1,
                                         "distributed": "none", "fsdp_version": 1,
                                         "accelerate_version": "1.11.0"}), steps=2).peak
    assert fake.breakdown["weights"] < 0.6 * single.breakdown["weights"]


@pytest.mark.slow
@pytest.mark.parametrize("fields", [FSDP2, {"distributed": "fsdp"}, {"zero_stage": 2},
                                    {"zero_stage": 3}], ids=["fsdp2", "fsdp1", "zero2", "zero3"])
def test_two_gloo_processes_rehearse_the_multi_gpu_path(tmp_path, fields):
    if "zero_stage" in fields:
        pytest.importorskip("deepspeed")
    spec = tiny(**fields)
    sample = measure_isolated(spec, Slot("cpu"), tmp_path, steps=2, timeout_s=300)
    m = sample.measurement
    assert m.status == "ok", m.message
    per_gpu = json.loads(m.per_gpu_peak_vram)
    assert len(per_gpu) == 2 and m.total_vram_bytes == sum(per_gpu)
    assert m.peak_vram_bytes == max(per_gpu) and sample.provenance.backend == "cpu"
    if fields.get("zero_stage") == 2:  # LLaMA-Factory's 5e8-element reduce bucket, even for LoRA
        assert m.peak_allocated_bytes > 1_000_000_000
    if fields is FSDP2:  # the rehearsal counts what simulate counts for rank 0
        from vram_ml.model.simulate.step import simulate_step

        assert m.peak_allocated_bytes == simulate_step(spec, steps=2).peak.peak_allocated_bytes


@pytest.mark.slow
def test_an_out_of_memory_rank_is_an_oom_sample(tmp_path, monkeypatch):
    spec = tiny(**FSDP2)
    monkeypatch.setenv("VRAM_ML_AGENT_TEST_HOOK", json.dumps({spec.spec_id: "oom"}))
    m = measure_isolated(spec, Slot("cpu"), tmp_path, steps=2, timeout_s=300).measurement
    assert m.status == "oom" and "lower bounds" in m.message


@pytest.mark.gpu
@pytest.mark.parametrize("fields", [FSDP2, {"distributed": "fsdp"}, {"zero_stage": 2},
                                    {"zero_stage": 3, "offload": "optimizer+params"}])
def test_two_gpus_under_torchrun(tmp_path, fields):
    import torch

    if torch.cuda.device_count() < 2:
        pytest.skip("needs 2 CUDA GPUs")
    if "zero_stage" in fields:
        pytest.importorskip("deepspeed")
    spec = build_spec(model="Qwen/Qwen2.5-0.5B", model_overrides={"num_hidden_layers": 4},
                      batch_size=2, seq_len=512, precision="bf16", num_gpus=2, **fields)
    sample = measure_isolated(spec, Slot("cuda", 0, gpu_indices=(0, 1)), tmp_path, steps=3)
    m = sample.measurement
    print(f"{spec.spec_id} {fields}: per GPU {m.per_gpu_peak_vram} total {m.total_vram_bytes} "
          f"context {m.cuda_context_bytes}")
    assert m.status == "ok", m.message
    assert m.cuda_context_bytes > 0 and m.total_vram_bytes >= 2 * m.peak_reserved_bytes


def test_each_gpus_peak_is_logged_as_a_tag_and_read_back(tmp_path, tiny_specs, make_sample):
    """per_gpu_peak_vram is JSON text: an MLflow tag (a metric must be a float), read back as is."""
    from dataclasses import replace

    from vram_ml.agent.tracking import Tracking, run_to_row, sample_to_run

    sample = make_sample(tiny_specs[0])
    sample = replace(sample, measurement=replace(
        sample.measurement, total_vram_bytes=3000, per_gpu_peak_vram="[1500, 1500]"))
    _, metrics, tags = sample_to_run(sample)
    assert "per_gpu_peak_vram" not in metrics and tags["per_gpu_peak_vram"] == "[1500, 1500]"
    tracking = Tracking(f"sqlite:///{tmp_path}/mlflow.db", "ranks-test")
    assert tracking.log(sample).outcome == "logged"
    (row,) = [run_to_row(run) for run in tracking.finished_runs()]
    assert json.loads(row["per_gpu_peak_vram"]) == [1500, 1500]
    assert row["total_vram_bytes"] == 3000
