"""The `vram-ml` command line: `main.py` is the root, one typer sub-app per file beside it."""

from vram_ml.cli.main import app

__all__ = ["app"]
