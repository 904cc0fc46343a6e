"""`python -m vram_ml.cli`: the same as the `vram-ml` command."""

from vram_ml.cli.main import app

app()
