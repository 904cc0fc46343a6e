"""`vram-ml catalog`: the models whose real configs ship with vram-ml."""

from __future__ import annotations

from typing import Annotated

import typer

from vram_ml.cli.display import print_json
from vram_ml.cli.spec_options import fail

app = typer.Typer()


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

    from vram_ml.cli.display import console

    table = Table(title=f"Catalog ({len(rows)} models)")
    for column in ("hf_id", "family", "params (B)", "layers", "hidden", "vocab", "vision"):
        table.add_column(column, justify="right" if column not in ("hf_id", "family") else "left")
    for row in rows:
        table.add_row(
            row["hf_id"], row["family"], f"{row['total_params'] / 1e9:.2f}", str(row["num_layers"]),
            str(row["hidden_size"]), str(row["vocab_size"]), "yes" if row["multimodal"] else "",
        )
    console.print(table)
