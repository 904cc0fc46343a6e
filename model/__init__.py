"""vram_ml.model: the estimators and the learned model (installed as `vram_ml.model`).

- estimate.py: `Estimate`, the `Estimator` interface, the estimators by name;
- formulas/: the closed forms, `seed-formula` and `analytical` (pure Python);
- recipe/: the fine-tuning step (build model, peft / bitsandbytes, batch, N optimizer steps) that
  the agent measures and `simulate` fakes;
- simulate/: the recipe on fake tensors, with a replay of the CUDA caching allocator;
- learned/: features, the XGBoost residual regressor, its numpy evaluator, training, evaluation;
- answers/: what `predict`, `fit` and `estimate` answer, from the estimators.
"""

if __name__ != "vram_ml.model":
    # setuptools maps this folder to vram_ml.model; imported as `model` it would be a second copy
    # of every module (two Spec classes, two registries).
    raise ImportError(
        f"this folder is the package vram_ml.model: import vram_ml.model, not {__name__} "
        "(pip install -e . installs it)"
    )
