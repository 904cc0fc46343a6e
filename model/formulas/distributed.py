"""Multi-GPU: what each GPU holds under DDP, DeepSpeed ZeRO-0/1/2/3 (± CPU offload) and FSDP
(1 and 2; FULL_SHARD, SHARD_GRAD_OP, HYBRID_SHARD, NO_SHARD; CPU offload), and the host RAM an
offload needs. The one definition of every distributed term; model_states.py and analytical.py
call it. Pure Python, no torch.

Read from DeepSpeed@v0.18.9 (deepspeed/runtime/), torch 2.13 FSDP (torch/distributed/fsdp/),
accelerate 0.30-1.15 (src/accelerate/), transformers 5.24 (integrations/deepspeed.py):

- DeepSpeed casts the whole module to bf16/fp16, frozen parameters too (engine.py:1456-1469);
  fp32 master copies and Adam states exist for trainable parameters only (stage_1_and_2.py:
  355-366, stage3.py:576-592: `requires_grad`), unlike DeepSpeed's own estimators (DeepSpeed
  issue 5304). ZeRO-0 is not DDP: master + states unpartitioned, bf16 gradients all-reduced in
  flattened buckets of MEMORY_OPT_ALLREDUCE_SIZE elements (engine.py:132, 3007-3051), an fp32
  gradient copy at the step (fp16/unfused_optimizer.py:214-233).
- ZeRO-1/2: the reduce bucket `torch.empty(reduce_bucket_size)` in the parameter dtype, twice
  with overlap_comm, allocated at the first gradient hook of a backward and freed at its end
  (stage_1_and_2.py:2302-2323, 788-795), whatever the trainable count; the gradient partition
  buffer (l.1519-1529); stage 1 keeps every full bf16 gradient to the boundary.
- ZeRO-3: parameters partitioned, frozen ones too (parameter_offload.py:205-226); those of at
  most stage3_param_persistence_threshold elements stay gathered (l.264-279); the reduce bucket
  and the bf16 gradient partition persist (stage3.py:620-641); after a module runs, its
  parameters stay gathered when they are used again within stage3_max_reuse_distance elements
  of the trace (partitioned_param_coordinator.py:574-604), and up to
  min(stage3_prefetch_bucket_size, stage3_max_live_parameters) are prefetched (l.427-446).
- Offload: ZeRO-1/2 `offload_optimizer` keeps fp32 master, fp32 gradients, Adam and a bf16
  staging partition on the CPU (18 bytes per trainable parameter / N, stage_1_and_2.py:470-487,
  797-804); ZeRO-3 the same (stage3.py:1020-1024, 1200-1205, 633-637), `offload_param` the
  parameter partitions too (l.762-783).
- FSDP1 (accelerate): trainable flat parameters upcast to fp32 under mixed precision (accelerate
  >= 0.30, accelerator.py:1503-1540 in 0.32.1); FULL_SHARD gathers at most two units at a time
  (limit_all_gathers, torch _limiter_utils.py:15) and keeps the root unit (embeddings, head,
  final norm) gathered from forward into backward (_runtime_utils.py:486-495); SHARD_GRAD_OP keeps
  every unit gathered from forward to backward; CPU offload keeps the shards, their gradients and
  the optimizer step on the CPU (_flat_param.py:1257-1265).
- FSDP2 (`fully_shard`, per parameter): frozen parameters get no gradient memory; one unit's
  unsharded parameters + one or two all-gather buffers (probe: staging/multigpu/probes
  RESULTS.md section 2); accelerate < 1.13 casts the whole model to fp32 first (StackRules).
- NCCL: one communicator per GPU, outside PyTorch's allocator: 544 MiB for 2 GPUs, 688 MiB for
  more (NVIDIA/nccl issue 964, A100 NVLink; the agent's GPU samples should replace these).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from vram_ml.distributed import shard_group

if TYPE_CHECKING:
    from vram_ml.spec import Spec

MIB = 1024**2
# LLaMA-Factory examples/deepspeed/ds_z{0,2}_config.json reduce_bucket_size; DeepSpeed's default
ZERO_BUCKET_ELEMENTS = 500_000_000
# DeepSpeed engine.py:132 MEMORY_OPT_ALLREDUCE_SIZE: ZeRO-0's flattened all-reduce bucket
ZERO0_ALLREDUCE_ELEMENTS = 500_000_000
# transformers integrations/deepspeed.py:194-241 (v5.24.0): "auto" from the hidden size H
AUTO_PREFETCH_FRACTION = 0.9  # stage3_prefetch_bucket_size = 0.9 H^2
AUTO_PERSISTENCE_PER_HIDDEN = 10  # stage3_param_persistence_threshold = 10 H
FSDP1_UNITS_IN_FLIGHT = 2  # limit_all_gathers: the current unit and the next
FSDP2_UNITS_IN_FLIGHT = 3  # one unsharded + up to two all-gather buffers
NCCL_TWO_GPUS = 544 * MIB
NCCL_MORE_GPUS = 688 * MIB


@dataclass(frozen=True)
class Layout:
    """Where each model state lives and over how many GPUs it is sharded."""

    kind: str  # none | ddp | deepspeed | fsdp
    gpus: int
    weight_shards: int
    gradient_shards: int
    optimizer_shards: int
    weights_on_cpu: bool = False
    optimizer_on_cpu: bool = False  # states, master copies, the step (and gradients, ZeRO/FSDP)


def layout(spec: Spec) -> Layout:
    """The sharding of `spec`: ZeRO (Rajbhandari et al. 2020, section 5.1) divides optimizer
    states (stage 1), + gradients (2), + parameters (3); FSDP FULL_SHARD / SHARD_GRAD_OP /
    HYBRID_SHARD all three (over a node for HYBRID_SHARD), NO_SHARD none."""
    kind, gpus = spec.distributed, spec.num_gpus
    cpu_optimizer = "optimizer" in spec.offload
    if kind == "deepspeed":
        stage = spec.zero_stage
        shard = [gpus if stage >= level else 1 for level in (3, 2, 1)]
        return Layout(kind, gpus, *shard, weights_on_cpu="params" in spec.offload,
                      optimizer_on_cpu=cpu_optimizer)
    if kind == "fsdp":
        group = 1 if spec.fsdp_sharding == "NO_SHARD" else shard_group(spec)
        return Layout(kind, gpus, group, group, group, weights_on_cpu=cpu_optimizer,
                      optimizer_on_cpu=cpu_optimizer)
    return Layout(kind, gpus, 1, 1, 1)


@dataclass(frozen=True)
class Counts:
    """The model's parameters as the distributed terms need them (model_states.py fills it)."""

    trainable: int  # base parameters that train + adapters
    largest_trainable: int  # the largest trainable tensor
    weights_bytes: int  # every parameter but the adapters, as stored on one GPU, unsharded
    adapter_bytes: int
    gathered_bytes: int  # the whole model gathered for compute (4-bit weights packed)
    layer_gathered_bytes: int  # one decoder layer gathered (its adapters included)
    leaf_gathered_bytes: int  # the largest leaf module gathered
    root_gathered_bytes: int  # embeddings + output head + final norm gathered (FSDP's root)
    head_gathered_bytes: int  # the output head (or the tied embedding) gathered
    head_elements: int  # the output head (the tied embedding), elements as stored
    layer_elements: int  # one decoder layer, elements as stored (4-bit: packed)
    num_layers: int
    persistent_bytes: int  # ZeRO-3: parameters under the persistence threshold, gathered
    trainable_layer_bytes: int  # one decoder layer's trainable parameters in the compute dtype
    quantized: bool


@dataclass(frozen=True)
class DistributedTerms:
    """Per-GPU bytes of the distributed machinery, by when each is alive; host RAM per node."""

    resident: int = 0  # all step long: DDP bucket copies; ZeRO-3 reduce bucket
    resident_gathered: int = 0  # ZeRO-3 persistent parameters
    gathered_forward: int = 0  # gathered at the forward -> backward turnaround (loss)
    gathered_backward: int = 0  # gathered during the last layer's backward, its full gradients
    backward_buffers: int = 0  # ZeRO-1/2 reduce bucket(s), alive during backward
    backward_end: int = 0  # ZeRO-0's flattened all-reduce bucket after backward
    gradient_partition: int = 0  # ZeRO-1/2 gradient partition buffer (made in backward)
    nccl: int = 0  # the communicator, outside PyTorch's allocator
    host_bytes: int = 0  # CPU RAM the offloaded states take on one node
    load_weights: int | None = None  # per-GPU weights at load when not yet sharded (QLoRA)
    terms: tuple[tuple[str, int], ...] = ()  # every term named, for the notes


def nccl_bytes(spec: Spec) -> int:
    """One NCCL communicator per GPU (two under HYBRID_SHARD across nodes); none on one GPU."""
    def one(size: int) -> int:
        return 0 if size < 2 else NCCL_TWO_GPUS if size == 2 else NCCL_MORE_GPUS
    extra = one(spec.num_nodes) if spec.distributed == "fsdp" and (
        spec.fsdp_sharding == "HYBRID_SHARD") else 0
    return one(spec.num_gpus) + extra


def zero_settings(spec: Spec, hidden: int) -> dict[str, int]:
    """The ZeRO bucket sizes in elements, "auto" (None) resolved as transformers' DeepSpeed
    integration resolves it and the defaults as LLaMA-Factory's example configs set them."""
    auto_bucket = hidden * hidden if spec.zero_stage == 3 else ZERO_BUCKET_ELEMENTS
    return {
        "reduce_bucket": spec.zero_reduce_bucket_size or auto_bucket,
        "prefetch": (spec.zero_prefetch_bucket_size if spec.zero_prefetch_bucket_size is not None
                     else int(AUTO_PREFETCH_FRACTION * hidden * hidden)),
        "persistence": (spec.zero_persistence_threshold
                        if spec.zero_persistence_threshold is not None
                        else AUTO_PERSISTENCE_PER_HIDDEN * hidden),
    }


def retained_layers(spec: Spec, counts: Counts) -> int:
    """ZeRO-3 decoder layers still gathered at the forward -> backward turnaround: layer l is
    kept when its next use comes within stage3_max_reuse_distance elements of the trace, i.e.
    passes x (layers after it) x layer + the head used twice (forward, backward) < the distance;
    passes = 2 (the rest of forward, then backward), 3 with checkpointing (the recompute)."""
    distance = spec.zero_max_reuse_distance - 2 * counts.head_elements
    if distance <= 0 or counts.layer_elements == 0:
        return 0
    passes = 3 if spec.gradient_checkpointing else 2
    return min(counts.num_layers, (distance - 1) // (passes * counts.layer_elements) + 1)


def distributed_terms(spec: Spec, counts: Counts, dt_bytes: int, hidden: int,
                      host_states: int, grad_bytes: int | None = None) -> DistributedTerms:
    """The distributed terms of `spec`; `dt_bytes` = bytes per gathered element (the module's
    half dtype), `grad_bytes` per gradient-bucket element (the trainable dtype; DeepSpeed's is
    the module's half dtype), `host_states` = the per-GPU bytes an offload moves to the CPU."""
    plan = layout(spec)
    nccl = nccl_bytes(spec)
    host = host_states * (spec.num_gpus // spec.num_nodes)
    if plan.kind == "ddp":
        # torch DDP, gradient_as_bucket_view=False (accelerate's default): a bucket copy of
        # every gradient (torch/nn/parallel/distributed.py:731-736)
        bucket = counts.trainable * (grad_bytes or dt_bytes)
        return DistributedTerms(resident=bucket, nccl=nccl,
                                terms=(("DDP gradient buckets", bucket), ("NCCL", nccl)))
    if plan.kind == "deepspeed":
        return _deepspeed(spec, plan, counts, dt_bytes, hidden, nccl, host)
    if plan.kind == "fsdp":
        return _fsdp(spec, plan, counts, dt_bytes, nccl, host)
    return DistributedTerms()


def _deepspeed(spec: Spec, plan: Layout, counts: Counts, b: int, hidden: int, nccl: int,
               host: int) -> DistributedTerms:
    zero = zero_settings(spec, hidden)
    stage, gpus = spec.zero_stage, spec.num_gpus
    terms: list[tuple[str, int]] = []
    if stage == 0:
        flat = min(counts.trainable, ZERO0_ALLREDUCE_ELEMENTS) * b
        terms.append(("ZeRO-0 flattened all-reduce bucket (after backward)", flat))
        return DistributedTerms(backward_end=flat, nccl=nccl, host_bytes=host,
                                terms=(*terms, ("NCCL", nccl)))
    bucket = zero["reduce_bucket"] * b
    if stage in (1, 2):
        buckets = bucket * (2 if spec.zero_overlap_comm else 1)
        terms.append((f"reduce bucket(s) {zero['reduce_bucket']:.3g} elements", buckets))
        partition = 0 if plan.optimizer_on_cpu else -(-counts.trainable // gpus) * b
        if plan.optimizer_on_cpu:  # gradients go straight to the CPU through one buffer
            partition = counts.largest_trainable * b
        terms.append(("gradient partition" if not plan.optimizer_on_cpu
                      else "gradient copy buffer (offload)", partition))
        return DistributedTerms(backward_buffers=buckets, gradient_partition=partition,
                                nccl=nccl, host_bytes=host,
                                terms=(*terms, ("NCCL", nccl), ("host RAM (offload)", host)))
    # ZeRO-3: persistent parameters, the reduce bucket, what the trace keeps gathered
    layers = retained_layers(spec, counts)
    prefetch = min(zero["prefetch"], spec.zero_max_live_parameters) * b
    head = counts.head_gathered_bytes if spec.zero_max_reuse_distance > 0 else 0  # used twice
    retained = head + layers * counts.layer_gathered_bytes
    forward = min(counts.gathered_bytes, retained + prefetch)
    backward = min(counts.gathered_bytes, layers * counts.layer_gathered_bytes
                   + counts.leaf_gathered_bytes + prefetch) + counts.trainable_layer_bytes
    terms += [("reduce bucket", bucket), ("persistent parameters", counts.persistent_bytes),
              (f"gathered at the turnaround: head + {layers} layers + prefetch", forward)]
    load = counts.weights_bytes if counts.quantized else None
    return DistributedTerms(resident=bucket, resident_gathered=counts.persistent_bytes,
                            gathered_forward=forward, gathered_backward=backward, nccl=nccl,
                            host_bytes=host, load_weights=load,
                            terms=(*terms, ("NCCL", nccl), ("host RAM (offload)", host)))


def _fsdp(spec: Spec, plan: Layout, counts: Counts, b: int, nccl: int, host: int
          ) -> DistributedTerms:
    units = FSDP2_UNITS_IN_FLIGHT if spec.fsdp_version == 2 else FSDP1_UNITS_IN_FLIGHT
    if plan.weight_shards == 1:  # NO_SHARD: nothing to gather but the mixed-precision copies
        forward = backward = 0
    elif spec.fsdp_sharding == "SHARD_GRAD_OP":  # every unit kept from forward to backward
        forward = counts.gathered_bytes
        backward = forward + counts.trainable_layer_bytes
    else:
        in_flight = units * counts.layer_gathered_bytes
        forward = min(counts.gathered_bytes, counts.root_gathered_bytes + in_flight)
        backward = forward + counts.trainable_layer_bytes
    load = counts.weights_bytes if counts.quantized else None
    terms = (("gathered: root unit + units in flight", forward), ("NCCL", nccl),
             ("host RAM (offload)", host))
    return DistributedTerms(gathered_forward=forward, gathered_backward=backward, nccl=nccl,
                            host_bytes=host, load_weights=load, terms=terms)
