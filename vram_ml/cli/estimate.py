"""`vram-ml estimate`: several estimators on one spec, side by side."""

from __future__ import annotations

from typing import Annotated

import typer

from vram_ml.cli.display import print_json
from vram_ml.cli.spec_options import SpecInput, fail, with_spec_options

app = typer.Typer()


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
    from vram_ml.model.answers.comparison import estimate_all

    names = [name.strip() for name in estimators.split(",") if name.strip()]
    try:
        results = estimate_all(spec_input.spec, names)
    except (KeyError, ValueError) as error:
        raise fail(str(error).strip("'\"")) from None
    if as_json:
        print_json({**spec_input.to_dict(), "estimates": [r.to_dict() for r in results]})
        return
    from vram_ml.cli.display import console, echo_spec, estimates_table, print_notes

    echo_spec(spec_input)
    console.print(estimates_table(results))
    print_notes(results)
