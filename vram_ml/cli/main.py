"""`vram-ml`: the root command. One typer sub-app per file in this package, each command parses,
calls one library function, and prints (rich table or --json).

Heavy libraries (torch, transformers, mlflow, xgboost) are imported inside the commands that need
them, never here: `predict` and `estimate` must start fast.
"""

from __future__ import annotations

from typing import Annotated

import typer

import vram_ml
from vram_ml.cli import agent, catalog, dataset, estimate, learn, predict, serve, simulate

app = typer.Typer(
    help="Predict the peak GPU memory of a LoRA/QLoRA/full fine-tuning run before you start it.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"vram-ml {vram_ml.__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[bool, typer.Option(
        "--version", callback=_version, is_eager=True, help="Print the version and exit.")] = False,
) -> None:
    """Predict the peak GPU memory of a LoRA/QLoRA/full fine-tuning run before you start it."""


# Root-level commands (merged: their sub-apps have no name), then the named groups.
for _commands in (predict.app, estimate.app, simulate.app, catalog.app, learn.app, serve.app):
    app.add_typer(_commands)
app.add_typer(agent.app, name="agent")
app.add_typer(dataset.app, name="dataset")


if __name__ == "__main__":
    app()
