"""The child process that measures one spec: `python -m vram_ml.agent.child`.

It imports torch, transformers and peft first (a warm child: the parent starts the next one while
the current one measures; importing creates no CUDA context), then reads one request line on
stdin: JSON {"spec": {...}, "backend": "cuda"|"cpu", "steps": N, "nvml_index": i, "result": path}.
The result is written atomically (temporary file + rename) as {"measurement", "cuda_version"}.
A crash leaves no result: the parent (agent/worker.py) turns that into status=error. End of
input without a request = not needed: exit 0. The child dies with its parent (PR_SET_PDEATHSIG),
so a killed agent leaves no orphan on the GPU.

Test hook (tests only; documented here and in tests/agent/): the environment variable
`VRAM_ML_AGENT_TEST_HOOK` holds JSON {spec_id or "*": actions}, actions separated by ";", each
- "oom": raise torch.OutOfMemoryError at the first step (a simulated OOM, through the real path);
- "error": raise RuntimeError at the first step;
- "sleep:S": sleep S seconds before doing anything (a sample long enough to be killed);
- "exit:N": exit at once with code N (a crashing worker);
- "stub": no training at all, a fixed tiny ok measurement (runner tests that need many samples).
`VRAM_ML_AGENT_PRELOAD=0` skips the warm-up imports (tests whose children never train).
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import sys
import time
import traceback
from dataclasses import asdict
from pathlib import Path

HOOK_ENV = "VRAM_ML_AGENT_TEST_HOOK"
PRELOAD_ENV = "VRAM_ML_AGENT_PRELOAD"
PARENT_ENV = "VRAM_ML_AGENT_PARENT_PID"  # set by the parent: a child orphaned at birth exits
PR_SET_PDEATHSIG = 1


def hook_actions(spec_id: str) -> str:
    """The test-hook action for `spec_id` ("" when none is set)."""
    raw = os.environ.get(HOOK_ENV, "")
    if not raw:
        return ""
    hooks = json.loads(raw)
    return str(hooks.get(spec_id, hooks.get("*", "")))


def die_with_parent() -> None:
    """Be killed when the agent dies; exit now if it died before this was armed."""
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL("libc.so.6").prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        except OSError:
            pass
    expected = os.environ.get(PARENT_ENV)
    if expected and os.getppid() != int(expected):
        os._exit(3)


def write_atomically(path: Path, payload: dict) -> None:
    temporary = path.with_suffix(".tmp")
    with open(temporary, "w", encoding="utf-8") as handle:
        json.dump(payload, handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)


def run(request: dict) -> dict:
    """Measure one spec as the request says; returns the RESULT payload."""
    from vram_ml.agent.measure import one_line
    from vram_ml.sample import Measurement
    from vram_ml.spec import build_spec

    spec = build_spec(**request["spec"])
    hook = ""
    for action in hook_actions(spec.spec_id).split(";"):
        if action.startswith("sleep:"):
            time.sleep(float(action.split(":", 1)[1]))
        elif action.startswith("exit:"):
            os._exit(int(action.split(":", 1)[1]))
        else:
            hook = action
    if hook == "stub":
        measurement = Measurement(
            "ok", "test hook: stub", peak_allocated_bytes=1024, peak_reserved_bytes=2048,
            cuda_context_bytes=0, peak_vram_bytes=2048, step_seconds=0.01, steps=request["steps"])
        return {"measurement": asdict(measurement), "cuda_version": ""}
    from vram_ml.agent.measure import measure

    try:
        measurement = measure(spec, request["backend"], request["steps"],
                              request.get("nvml_index", 0), fail_at_step=hook)
    except Exception as error:  # noqa: BLE001 - any failure is a sample with its message
        traceback.print_exc()
        measurement = Measurement("error", one_line(error))
    return {"measurement": asdict(measurement), "cuda_version": _cuda_version()}


def _cuda_version() -> str:
    torch = sys.modules.get("torch")
    return (getattr(torch.version, "cuda", None) or "") if torch else ""


def preload() -> None:
    """Import what every measurement needs before the request arrives (the slow part)."""
    if os.environ.get(PRELOAD_ENV, "1") == "0":
        return
    try:
        import peft  # noqa: F401
        import transformers  # noqa: F401

        import vram_ml.model.recipe  # noqa: F401
    except ImportError:
        pass  # the measurement reports what is missing


def main() -> int:
    die_with_parent()
    preload()
    line = sys.stdin.readline()
    if not line.strip():
        return 0
    request = json.loads(line)
    write_atomically(Path(request["result"]), run(request))
    return 0


if __name__ == "__main__":
    sys.exit(main())
