"""simulate: the exact tensor-level peak of one training step, run on fake tensors on the CPU.

The recipe (model/recipe/) builds the model on `meta`; fake.py turns it into fake `cpu`
tensors; step.py runs two training steps under tracker.py (live storages and their peak), with
the CUDA rules of cuda_emulation.py and a replay of the CUDA caching allocator (allocator.py);
estimator.py turns the peak into an Estimate. `step.run_on_cpu` runs the same steps for real on
the CPU (the `cpu` backend): fake == real, byte for byte, is what the tests check.

Importing this package is cheap; torch, transformers, peft and bitsandbytes load when an
estimate is asked for.
"""

from vram_ml.model.simulate.estimator import SimulateEstimator

__all__ = ["SimulateEstimator"]
