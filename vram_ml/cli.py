"""`vram-ml`: commands parse, call one library function, and print (rich table or --json).

Heavy libraries (torch, transformers, mlflow, xgboost) are imported inside the commands that need
them, never here: `predict` and `estimate` must start fast.
"""

from __future__ import annotations

import json
from importlib import import_module
from typing import Annotated

import typer

from vram_ml.cli_spec import SpecInput, fail, with_spec_options

app = typer.Typer(
    help="Predict the peak GPU memory of a LoRA/QLoRA/full fine-tuning run before you start it.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

# Command modules, each with `register(app)`; listed here so the CLI is wired in one place.
COMMAND_MODULES: tuple[str, ...] = (
    "vram_ml.cli_simulate", "vram_ml.cli_agent", "vram_ml.cli_learned",
)


def print_json(payload: object) -> None:
    typer.echo(json.dumps(payload, indent=2, sort_keys=False, default=str))


@app.command()
def catalog(
    family: Annotated[str | None, typer.Option(help="Only this family.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="JSON output.")] = False,
) -> None:
    """List the models whose real configs ship with vram-ml.

    Example: vram-ml catalog --family qwen2
    """
    from vram_ml.catalog_listing import catalog_rows

    rows = catalog_rows(family)
    if not rows:
        raise fail(f"family: no catalog model in family {family!r}")
    if as_json:
        print_json(rows)
        return
    from rich.table import Table

    from vram_ml.display import console

    table = Table(title=f"Catalog ({len(rows)} models)")
    for column in ("hf_id", "family", "params (B)", "layers", "hidden", "vocab", "vision"):
        table.add_column(column, justify="right" if column not in ("hf_id", "family") else "left")
    for row in rows:
        table.add_row(
            row["hf_id"], row["family"], f"{row['total_params'] / 1e9:.2f}", str(row["num_layers"]),
            str(row["hidden_size"]), str(row["vocab_size"]), "yes" if row["multimodal"] else "",
        )
    console.print(table)


@app.command()
@with_spec_options
def estimate(
    spec_input: SpecInput,
    estimators: Annotated[
        str, typer.Option(help="Comma-separated: seed-formula, analytical, simulate, learned.")
    ] = "seed-formula,analytical",
    as_json: Annotated[bool, typer.Option("--json", help="JSON output (bytes).")] = False,
) -> None:
    """Estimate peak VRAM for one spec with several estimators side by side.

    Example: vram-ml estimate --model Qwen/Qwen2.5-7B --method qlora --quant-bits 4 --batch-size 2
    """
    from vram_ml.model.compare import estimate_all

    names = [name.strip() for name in estimators.split(",") if name.strip()]
    try:
        results = estimate_all(spec_input.spec, names)
    except (KeyError, ValueError) as error:
        raise fail(str(error).strip("'\"")) from None
    if as_json:
        print_json({**spec_input.to_dict(), "estimates": [r.to_dict() for r in results]})
        return
    from vram_ml.display import console, echo_spec, estimates_table, print_notes

    echo_spec(spec_input)
    console.print(estimates_table(results))
    print_notes(results)


for _module in COMMAND_MODULES:
    import_module(_module).register(app)


if __name__ == "__main__":
    app()
