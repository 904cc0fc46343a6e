"""vram-ml: predict the peak GPU memory of a fine-tuning run before you start it.

The Python API (see `vram_ml.api`):

    from vram_ml import Spec, estimate, fit, predict, read_llamafactory_yaml

Its names load on first use (module `__getattr__`), so `import vram_ml` and the CLI stay light.
"""

from importlib import import_module

__version__ = "0.1.0"

# public name -> the module that defines it
_API = {
    "predict": "vram_ml.api",
    "fit": "vram_ml.api",
    "estimate": "vram_ml.api",
    "Spec": "vram_ml.spec",
    "SpecError": "vram_ml.spec",
    "read_llamafactory_yaml": "vram_ml.llamafactory",
}
__all__ = ["__version__", *_API]


def __getattr__(name: str):
    if name not in _API:
        raise AttributeError(f"module 'vram_ml' has no attribute {name!r}")
    value = getattr(import_module(_API[name]), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_API})
