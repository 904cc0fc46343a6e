"""The GPU pool: which GPUs the agent may measure on, one worker per GPU.

A GPU is spare when NVML shows no compute process on it other than the agent's own children and
its used memory is under a threshold (a process in another container may be invisible to NVML,
its memory is not). `--gpus auto` takes every spare GPU at start; before each sample the worker
re-checks its GPU and waits while someone else uses it. `--gpus 0,2` names GPUs (still checked).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from vram_ml.agent import environment

DEFAULT_MAX_USED_BYTES = 2 * 2**30  # a GPU showing more than this in use is someone's


class PoolError(ValueError):
    """A bad --gpus value or no usable GPU; one line."""


@dataclass
class GpuState:
    index: int
    name: str
    total_bytes: int
    used_bytes: int
    processes: dict[int, int] = field(default_factory=dict)
    spare: bool = True
    reason: str = ""


def parse_gpus(option: str) -> list[int] | None:
    """`auto` -> None (every spare GPU); `0,2` -> [0, 2].

    Raises:
        PoolError: not `auto` nor a comma-separated list of indices.
    """
    if option.strip().lower() == "auto":
        return None
    try:
        indices = [int(part) for part in option.split(",") if part.strip()]
    except ValueError:
        raise PoolError(f"gpus: expected auto or indices like 0,1 (got {option!r})") from None
    if not indices or any(index < 0 for index in indices):
        raise PoolError(f"gpus: expected auto or indices like 0,1 (got {option!r})")
    return sorted(set(indices))


def gpu_states(max_used_bytes: int = DEFAULT_MAX_USED_BYTES,
               own_pids: frozenset[int] = frozenset()) -> list[GpuState]:
    """Every GPU NVML sees, with whether it is spare (empty when NVML is unavailable).

    Memory the agent's own children hold (where NVML lists them) does not count towards the
    threshold; a GPU whose memory NVML will not report is not spare."""
    if environment.nvml() is None:
        return []
    states = []
    for index in range(environment.device_count()):
        memory = environment.device_memory(index)
        processes = environment.compute_processes(index)
        others = {pid: used for pid, used in processes.items() if pid not in own_pids}
        own_used = sum(used for pid, used in processes.items() if pid in own_pids)
        total, used = memory if memory else (0, 0)
        state = GpuState(index, environment.device_name(index), total, used, others)
        if memory is None:
            state.spare, state.reason = False, "NVML does not report its memory"
        elif others:
            state.spare, state.reason = False, f"{len(others)} other compute process(es)"
        elif used - own_used > max_used_bytes:
            state.spare = False
            state.reason = f"{(used - own_used) / 2**30:.1f} GiB in use (threshold " \
                           f"{max_used_bytes / 2**30:.1f} GiB)"
        states.append(state)
    return states


class GpuPool:
    """The GPUs the agent measures on.

    Args:
        selection: None for every spare GPU, or NVML indices.
        max_used_bytes: a GPU with more memory in use is not spare.
    """

    def __init__(self, selection: list[int] | None = None,
                 max_used_bytes: int = DEFAULT_MAX_USED_BYTES):
        self.selection = selection
        self.max_used_bytes = max_used_bytes

    def choose(self, own_pids: frozenset[int] = frozenset()) -> list[GpuState]:
        """The GPUs to start one worker on each (`own_pids`: processes that are the agent's).

        Raises:
            PoolError: NVML unavailable, an unknown index, or no spare GPU.
        """
        states = gpu_states(self.max_used_bytes, own_pids)
        if not states:
            raise PoolError("gpus: no GPU visible to NVML (use --backend cpu to test without one)")
        by_index = {state.index: state for state in states}
        if self.selection is not None:
            unknown = [index for index in self.selection if index not in by_index]
            if unknown:
                raise PoolError(f"gpus: no GPU with index {unknown[0]} (have 0-{len(states) - 1})")
            states = [by_index[index] for index in self.selection]
        spare = [state for state in states if state.spare]
        if not spare:
            reasons = "; ".join(f"gpu{s.index}: {s.reason}" for s in states)
            raise PoolError(f"gpus: no spare GPU ({reasons})")
        return spare

    def is_spare(self, index: int, own_pids: frozenset[int] = frozenset()) -> tuple[bool, str]:
        """Re-check one GPU between samples."""
        for state in gpu_states(self.max_used_bytes, own_pids):
            if state.index == index:
                return state.spare, state.reason
        return False, "not visible to NVML any more"
