"""vram_ml.agent: the agent that measures (installed as `vram_ml.agent`).

planner.py (which specs next, from space.yaml), runner.py (the loop, one worker per GPU),
worker.py / child.py (one child process per spec), measure.py (the CUDA and CPU measurement
around the recipe in vram_ml.model.recipe), gpu_pool.py, environment.py (devices, NVML),
spool.py / store.py / tracking.py / claims.py (a sample is never lost: spool first, then MLflow,
many agents through one server), dataset.py / datacard.py (export, validate, import).
"""

if __name__ != "vram_ml.agent":
    # setuptools maps this folder to vram_ml.agent; imported as `agent` it would be a second copy
    # of every module.
    raise ImportError(
        f"this folder is the package vram_ml.agent: import vram_ml.agent, not {__name__} "
        "(pip install -e . installs it)"
    )
