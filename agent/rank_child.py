"""One rank of a multi-GPU measurement: `python -m torch.distributed.run --nproc_per_node N -m
vram_ml.agent.rank_child REQUEST.json` (agent/worker.py starts it).

The request file holds {"spec", "backend", "steps", "nvml_indices", "result"}; each rank writes
`<result>.rank<R>.json` atomically, {"measurement", "cuda_version"}, and exits 0 (an OOM is a
measurement). A crash leaves no file for that rank: the parent reports the rank's log. The test
hook of agent/child.py applies (VRAM_ML_AGENT_TEST_HOOK: oom, error, exit:N).
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from dataclasses import asdict
from pathlib import Path


def main(argv: list[str]) -> int:
    from vram_ml.agent.child import _cuda_version, hook_actions, write_atomically
    from vram_ml.agent.measure import one_line
    from vram_ml.agent.measure_ranks import measure_rank
    from vram_ml.sample import Measurement
    from vram_ml.spec import build_spec

    request = json.loads(Path(argv[0]).read_text(encoding="utf-8"))
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", 0))
    spec = build_spec(**request["spec"])
    hook = ""
    for action in hook_actions(spec.spec_id).split(";"):
        if action.startswith("exit:") and rank == 0:
            os._exit(int(action.split(":", 1)[1]))
        hook = action if action in ("oom", "error") else hook
    indices = request.get("nvml_indices") or [0]
    try:
        measurement = measure_rank(spec, request["backend"], request["steps"],
                                   indices[local % len(indices)], fail_at_step=hook)
    except Exception as error:  # noqa: BLE001 - any failure is a measurement with its message
        traceback.print_exc()
        measurement = Measurement("error", f"rank {rank}: {one_line(error)}")
    write_atomically(Path(f"{request['result']}.rank{rank}.json"),
                     {"measurement": asdict(measurement), "cuda_version": _cuda_version()})
    try:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()
    except Exception:  # noqa: BLE001 - teardown after the result is written
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
