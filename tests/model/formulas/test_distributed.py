"""Multi-GPU terms (model/formulas/distributed.py): each moves the way DeepSpeed's and FSDP's
code says, and the answer is per GPU with the total and host RAM beside it."""

from __future__ import annotations

import pytest

from vram_ml.model.answers.card_fit import find_fit
from vram_ml.model.estimate import BREAKDOWN_TERMS, GIB
from vram_ml.model.formulas import AnalyticalEstimator
from vram_ml.model.formulas.analytical import analyse
from vram_ml.model.formulas.distributed import NCCL_MORE_GPUS, NCCL_TWO_GPUS, retained_layers
from vram_ml.model.formulas.distributed_counts import persistent_params
from vram_ml.spec import build_spec

LLAMA3 = "meta-llama/Meta-Llama-3-8B"  # hidden 4096, 32 layers, head 128256 x 4096
LLAMA2 = "meta-llama/Llama-2-7b-hf"  # head 32000 x 4096


def spec(**fields):
    base = dict(model=LLAMA3, method="lora", batch_size=2, seq_len=1024, precision="bf16")
    return build_spec(**{**base, **fields})


def states(**fields):
    return analyse(spec(**fields)).states


def test_zero0_is_not_ddp():
    """DeepSpeed casts the whole model to bf16 and keeps fp32 masters + Adam unpartitioned; DDP
    keeps the load dtypes and a bucket copy of every gradient."""
    ddp = states(method="full", num_gpus=8)
    zero0 = states(method="full", num_gpus=8, distributed="deepspeed")
    params = zero0.trainable_params
    assert zero0.weights == 2 * params and ddp.weights == 4 * params
    assert zero0.optimizer == 12 * params and ddp.optimizer == 8 * params
    assert ddp.gradient_buffers == 4 * params and zero0.gradient_buffers == 0
    assert zero0.distributed.backward_end == 2 * 500_000_000  # the flattened all-reduce bucket


def test_zero_stages_shard_optimizer_then_gradients_then_parameters():
    one, two, three = (states(method="full", num_gpus=8, zero_stage=n) for n in (1, 2, 3))
    assert one.weights == two.weights == 8 * three.weights
    assert one.gradients == 8 * two.gradients
    assert one.optimizer == two.optimizer == three.optimizer
    assert one.distributed.gradient_partition == one.gradients // 8  # stage 1's extra buffer


def test_llamafactory_z2_gives_lora_a_1gb_reduce_bucket():
    """ds_z2_config.json: reduce_bucket_size 5e8 elements, allocated whatever the trainable
    count (stage_1_and_2.py:2302-2323): 1 GB of bf16 per GPU during backward."""
    lora = states(num_gpus=2, zero_stage=2)
    assert lora.distributed.backward_buffers == 1_000_000_000
    overlap = states(num_gpus=2, zero_stage=2, zero_overlap_comm=True)
    assert overlap.distributed.backward_buffers == 2_000_000_000
    small = states(num_gpus=2, zero_stage=2, zero_reduce_bucket_size=4096**2)
    assert small.distributed.backward_buffers == 2 * 4096**2


def test_zero3_auto_values_and_persistent_parameters():
    s = spec(num_gpus=8, zero_stage=3)
    z3 = analyse(s).states
    assert z3.gradient_buffers == 2 * 4096**2  # reduce bucket "auto" = H^2, persistent
    # auto persistence threshold 10 H: norms, and LoRA A/B of r x 4096 <= 40960 elements
    small = sum(rows * cols * count for rows, cols, count in _adapters(s)
                if rows * cols <= 10 * 4096)  # A of r x 4096, B of 1024 / 4096 x r
    assert 0 < small < sum(rows * cols * count for rows, cols, count in _adapters(s))
    assert persistent_params(s, s.shape) == (32 * 2 * 4096 + 4096) + small
    assert z3.distributed.resident_gathered == 2 * persistent_params(s, s.shape)


def _adapters(s):
    from vram_ml.model.formulas.model_states import adapter_tensors

    return adapter_tensors(s, s.shape)


def test_zero3_keeps_what_the_reuse_distance_reaches():
    """Llama-3's 0.5 B-element head, used twice across the turnaround, already exceeds half the
    1e9 reuse distance: no layer stays gathered; Llama-2's small head lets two stay."""
    llama3, llama2 = spec(num_gpus=8, zero_stage=3), spec(model=LLAMA2, num_gpus=8, zero_stage=3)
    counts3 = analyse(llama3).states.distributed
    assert retained_layers(llama3, _counts(llama3)) == 0
    assert retained_layers(llama2, _counts(llama2)) == 2  # checkpointing: 3 passes per layer
    assert counts3.gathered_forward >= 2 * 128256 * 4096  # the head stays gathered
    shorter = spec(num_gpus=8, zero_stage=3, zero_max_reuse_distance=0)
    assert analyse(shorter).states.distributed.gathered_forward < counts3.gathered_forward


def _counts(s):
    from vram_ml.model.formulas.distributed_counts import param_counts
    from vram_ml.model.formulas.model_states import (
        Dtypes,
        adapter_tensors,
        base_trainable_tensors,
        quantized_tensors,
    )

    dt = Dtypes.of(s)
    trainable = base_trainable_tensors(s, s.shape) + adapter_tensors(s, s.shape)
    return param_counts(s, s.shape, dt, 0, trainable, quantized_tensors(s, s.shape))


def test_offload_moves_states_to_host_ram():
    """ZeRO-3 + optimizer+params offload (ds_z3_offload_config.json): nothing of the model states
    on the GPU; the host holds 18 bytes per trainable parameter / N + the parameter partitions."""
    gpu = states(method="full", num_gpus=8, zero_stage=3, offload="optimizer+params")
    assert gpu.weights == gpu.optimizer == gpu.gradients == gpu.optimizer_temporaries == 0
    params = gpu.trainable_params
    expected = 18 * params // 8 + 2 * params // 8  # + the bf16 parameter partitions
    assert gpu.distributed.host_bytes == pytest.approx(8 * expected, rel=0.01)  # 8 ranks/node
    z2 = states(method="full", num_gpus=4, zero_stage=2, offload="optimizer")
    assert z2.optimizer == 0 and z2.weights == 2 * params  # ZeRO-2 never partitions parameters


def test_fsdp_full_shard_shards_everything_and_gathers_units():
    fsdp = states(method="full", num_gpus=8, distributed="fsdp")
    params = fsdp.trainable_params
    assert fsdp.weights == pytest.approx(4 * params / 8, rel=0.01)  # fp32 after the upcast
    assert fsdp.optimizer == pytest.approx(8 * params / 8, rel=0.01)
    root = 2 * 2 * 128256 * 4096  # embeddings + head gathered in bf16
    assert fsdp.distributed.gathered_forward > root
    grad_op = states(method="full", num_gpus=8, distributed="fsdp", fsdp_sharding="SHARD_GRAD_OP")
    assert grad_op.distributed.gathered_forward == pytest.approx(2 * params, rel=0.01)
    hybrid = states(method="full", num_gpus=16, num_nodes=2, distributed="fsdp",
                    fsdp_sharding="HYBRID_SHARD")
    assert hybrid.weights == fsdp.weights  # sharded within a node of 8
    assert hybrid.distributed.nccl == NCCL_MORE_GPUS + NCCL_TWO_GPUS  # two communicators


def test_fsdp2_under_old_accelerate_holds_the_frozen_base_in_fp32():
    old = states(num_gpus=2, distributed="fsdp", fsdp_version=2, accelerate_version="1.12.0")
    new = states(num_gpus=2, distributed="fsdp", fsdp_version=2, accelerate_version="1.13.0")
    assert old.weights == pytest.approx(2 * new.weights, rel=0.01)
    with pytest.raises(ValueError, match="QLoRA under FSDP2 needs accelerate >= 1.13"):
        spec(method="qlora", quant_bits=4, num_gpus=2, distributed="fsdp", fsdp_version=2)


def test_qlora_under_zero3_and_fsdp_loads_the_whole_4bit_model_first():
    for kind in ({"zero_stage": 3}, {"distributed": "fsdp"}):
        analysis = analyse(spec(method="qlora", quant_bits=4, num_gpus=8, **kind))
        moments = analysis.moments
        assert moments["load"]["weights"] == pytest.approx(8 * analysis.states.weights, rel=0.01)


def test_the_answer_is_per_gpu_with_the_total_and_names_the_terms():
    estimate = AnalyticalEstimator().estimate(spec(num_gpus=4, zero_stage=3,
                                                   offload="optimizer+params"))
    assert set(estimate.breakdown) == set(BREAKDOWN_TERMS)
    assert sum(estimate.breakdown.values()) == estimate.peak_vram_bytes
    assert estimate.num_gpus == 4 and estimate.total_vram_bytes == 4 * estimate.peak_vram_bytes
    assert estimate.host_memory_bytes > 0
    note = next(n for n in estimate.notes if n.startswith("DeepSpeed ZeRO-3"))
    assert "reduce bucket" in note and "NCCL" in note and "host RAM" in note
    single = AnalyticalEstimator().estimate(spec())
    assert single.num_gpus == 1 and single.breakdown["communication"] == 0


def test_single_gpu_specs_keep_their_ids():
    """The multi-GPU block is left out of a single-GPU spec's id (ids from before it stay)."""
    assert spec().spec_id == spec(num_nodes=1, offload="none").spec_id
    assert spec(num_gpus=2).spec_id != spec(num_gpus=2, distributed="fsdp").spec_id


def test_fit_proposes_zero3_on_the_fewest_gpus_or_offload():
    """More hardware comes with a change of method, after the changes within the method: at 80
    GiB pure_bf16 alone fits; at 40 GiB nothing within full fine-tuning does."""
    full = spec(method="full", batch_size=1)
    within = find_fit(full, int(80 * GIB))
    assert within.changes and not any("DeepSpeed" in c.description for c in within.changes)
    report = find_fit(full, int(40 * GIB))
    proposals = [change.description for change in report.changes]
    more_gpus = [text for text in proposals if text.startswith("DeepSpeed ZeRO-3 on")]
    assert more_gpus == ["DeepSpeed ZeRO-3 on 8 GPUs"]  # the fewest that fit: 4 do not
    four = AnalyticalEstimator().estimate(spec(method="full", batch_size=1, num_gpus=4,
                                               distributed="deepspeed", zero_stage=3))
    assert four.upper_vram_bytes > 40 * GIB
    offload = next(c for c in report.changes if "CPU offload" in c.description)
    assert "GiB per node" in offload.cost and offload.fits


def test_a_peak_read_after_loading_leaves_the_load_moment_out():
    """QLoRA under ZeRO-3 + offload holds the 4-bit model whole before sharding it: its peak is
    at load; a peak reset once the model is loaded (fsdp_qlora's train.py) is the training one."""
    qlora = spec(method="qlora", quant_bits=4, batch_size=1, num_gpus=4, distributed="deepspeed",
                 zero_stage=3, offload="optimizer+params")
    whole, training = analyse(qlora), analyse(qlora, training_only=True)
    assert whole.peak_moment == "load" and training.peak_moment != "load"
    assert training.peak_vram_bytes < whole.peak_vram_bytes
    assert training.moments == whole.moments
