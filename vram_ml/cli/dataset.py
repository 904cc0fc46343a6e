"""`vram-ml dataset export | validate | import`: the samples dataset files."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from vram_ml.cli.display import print_json
from vram_ml.cli.spec_options import fail, fail_to_write
from vram_ml.cli.store_options import (
    BackendsOption,
    ExperimentOption,
    JsonOption,
    NoMlflowOption,
    StoreOption,
    TrackingOption,
    open_store,
)

app = typer.Typer(
    help="The samples dataset: export, validate, import; the published table.\n\n"
         "Example: vram-ml dataset export --output datasets/samples.csv", no_args_is_help=True)


@app.command("export")
def dataset_export(
    output: Annotated[
        Path, typer.Option(help="CSV or .parquet file (DATACARD.md beside it).")
    ] = Path("datasets/samples.csv"),
    source: Annotated[
        str, typer.Option(help="mlflow (all machines logging there + spool) or spool.")
    ] = "mlflow",
    include_backend: BackendsOption = None,
    replace: Annotated[
        bool, typer.Option(help="Overwrite instead of merging with the file.")
    ] = False,
    store: StoreOption = None,
    tracking_uri: TrackingOption = None,
    experiment: ExperimentOption = None,
    as_json: JsonOption = False,
) -> None:
    """Write the store's cuda samples to a dataset file (merged, deduplicated) and its data card.

    Example: vram-ml dataset export --output datasets/samples.csv
    """
    from vram_ml.agent.dataset import DatasetError, export_dataset
    from vram_ml.agent.tracking import TrackingUnavailable

    if source not in ("mlflow", "spool"):
        raise fail(f"source: expected mlflow or spool (got {source!r})")
    backends = ("cuda", *(include_backend or ()))
    try:
        with fail_to_write(output, "output"):
            result = export_dataset(open_store(store, tracking_uri, False, experiment), output,
                                    source, backends, replace)
    except (DatasetError, TrackingUnavailable) as error:
        raise fail(str(error), code=1) from None
    if as_json:
        print_json(result)
        return
    left_out = ", ".join(f"{k} {v}" for k, v in result["left_out_backends"].items())
    typer.echo(f"{result['output']}: {result['rows']} rows ({result['new']} new); data card "
               f"{result['datacard']}" + (f"; left out (not cuda): {left_out}" if left_out else ""))


@app.command("validate")
def dataset_validate(path: Annotated[Path, typer.Argument(help="CSV, Parquet or JSONL.")],
                     as_json: JsonOption = False) -> None:
    """Check every row of a samples file (schema, spec, peaks, provenance, duplicates), or of
    the published table (recognised by its header: provenance, bytes, statistic, outcome, Spec).

    Example: vram-ml dataset validate datasets/samples.csv
    """
    from vram_ml.agent.dataset import DatasetError, validate_file
    from vram_ml.published.validation import is_published_table

    if is_published_table(path):
        _validate_published(path, as_json)
        return
    try:
        result = validate_file(path)
    except DatasetError as error:
        raise fail(str(error), code=1) from None
    if as_json:
        print_json({"rows": result.rows, "valid": len(result.samples), "ok": result.ok,
                     "problems": result.problems, "warnings": result.warnings,
                     "counts": result.counts()})
    else:
        for line in result.warnings:
            typer.echo(f"warning: {line}")
        for line in result.problems:
            typer.echo(f"problem: {line}")
        typer.echo(f"{path}: {result.rows} rows, {len(result.samples)} valid, "
                   f"{len(result.problems)} problem(s)")
    if not result.ok:
        raise typer.Exit(1)


@app.command("import")
def dataset_import(
    file: Annotated[Path, typer.Argument(help="Samples JSONL/CSV/Parquet from a GPU machine.")],
    output: Annotated[
        Path, typer.Option(help="Dataset file to merge into.")
    ] = Path("datasets/samples.csv"),
    include_backend: BackendsOption = None,
    store: StoreOption = None,
    tracking_uri: TrackingOption = None,
    no_mlflow: NoMlflowOption = False,
    experiment: ExperimentOption = None,
    as_json: JsonOption = False,
) -> None:
    """Bring samples from a GPU machine into the store and the dataset (validated, deduplicated).

    Example: vram-ml dataset import samples.jsonl
    """
    from vram_ml.agent.dataset import DatasetError, import_dataset
    from vram_ml.agent.store import SpoolError

    backends = ("cuda", *(include_backend or ()))
    try:
        with fail_to_write(output, "output"):
            result = import_dataset(file, open_store(store, tracking_uri, no_mlflow, experiment),
                                    output, backends)
    except (DatasetError, SpoolError) as error:
        raise fail(str(error), code=1) from None
    if as_json:
        print_json(result)
        return
    for problem in result["rejected"]:
        typer.echo(f"rejected: {problem}")
    typer.echo(f"{result['valid']}/{result['rows']} valid; {result['new_in_store']} new in the "
               f"store, {result['logged_to_mlflow']} logged to MLflow; {result['output']}: "
               f"{result['rows_in_output']} rows ({result['new_in_output']} new)")


def _validate_published(path: Path, as_json: bool) -> None:
    from vram_ml.dataset_files import DataFileError
    from vram_ml.published.validation import validate_published_file

    try:
        result = validate_published_file(path)
    except DataFileError as error:
        raise fail(str(error), code=1) from None
    if as_json:
        print_json({"rows": result.rows, "valid": result.valid, "ok": result.ok,
                    "problems": result.problems, "counts": result.counts})
    else:
        for line in result.problems:
            typer.echo(f"problem: {line}")
        typer.echo(f"{path}: published table, {result.rows} rows, {result.valid} valid, "
                   f"{len(result.problems)} problem(s)")
    if not result.ok:
        raise typer.Exit(1)


@app.command("import-published")
def dataset_import_published(
    source_dir: Annotated[Path, typer.Argument(
        help="Folder with one git clone or bare mirror per source repository (owner+name).")],
    output: Annotated[Path, typer.Option(help="The published table (DATACARD.md beside it).")]
    = Path("datasets/published/measurements.parquet"),
    manifest: Annotated[Path, typer.Option(help="The pinned file versions to read.")]
    = Path("datasets/published/sources.yaml"),
    quoted: Annotated[Path, typer.Option(
        help="Quoted lines of sources too large to clone (read when SOURCE_DIR lacks them).")]
    = Path("datasets/published/quoted"),
    as_json: JsonOption = False,
) -> None:
    """Rebuild the published measurements table from the sources' own files, and its data card.

    Example: vram-ml dataset import-published /work/.mirror
    """
    from vram_ml.published.build import PublishedImportError, import_published
    from vram_ml.published.git_files import SourceError
    from vram_ml.published.manifest import ManifestError

    try:
        summary = import_published(source_dir, output, manifest, quoted)
    except (SourceError, ManifestError, PublishedImportError) as error:
        raise fail(str(error), code=1) from None
    counts = summary.counts("source", "mapping")
    if as_json:
        print_json({"output": str(summary.output), "datacard": str(summary.datacard),
                    "rows": len(summary.rows), "read_from": summary.read_from,
                    "versions_read": summary.versions_read,
                    "mapped": {s: counts[(s, "mapped")] for s in summary.versions_read}})
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{summary.output}: {len(summary.rows)} published rows")
    for column in ("source", "file versions", "rows", "mapped", "read from"):
        table.add_column(column, justify="left" if column in ("source", "read from") else "right")
    for source, versions in summary.versions_read.items():
        rows = counts[(source, "mapped")] + counts[(source, "unmapped")]
        table.add_row(source, str(versions), str(rows), str(counts[(source, "mapped")]),
                      summary.read_from.get(source, ""))
    Console().print(table)
    for line in summary.log:
        typer.echo(f"warning: {line}")
    typer.echo(f"data card: {summary.datacard}")
