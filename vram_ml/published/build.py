"""`vram-ml dataset import-published SOURCE_DIR`: rebuild the published table from the sources.

Reads exactly the file versions `sources.yaml` pins (checking each against its blob id), parses
every version with its source's parser, merges repeated publications of one number (dedup.py),
maps each row to a Spec where the Spec describes the run (mapping.py), and writes the table
(CSV, RFC 4180 line ends) and its data card beside it. The same SOURCE_DIR and sources.yaml give
the same bytes: nothing depends on the clock, the machine or the order files are found in.

A source marked `carried` whose repository is not in SOURCE_DIR (huggingface/blog: too large to
clone) is read from `datasets/published/quoted/`: only the lines its rows quote, verbatim, in the
same `owner+name/<commit>/<path>` layout, so its parser runs on them unchanged.
"""

from __future__ import annotations

import csv
import io
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vram_ml.published.dedup import dedup_lines, read_documents
from vram_ml.published.git_files import SourceDir, SourceError
from vram_ml.published.manifest import DEFAULT_MANIFEST, SourceManifest, load_manifest
from vram_ml.published.schema import COLUMNS
from vram_ml.published.sources import SOURCES, PublishedSource
from vram_ml.published.table_rows import to_table_row

# Parquet, not CSV: the table quotes every row's evidence and settings in full (31 MB as CSV,
# under 1 MB as Parquet), and the working tree travels to a lent GPU machine within 64 MiB.
DEFAULT_OUTPUT = Path("datasets/published/measurements.parquet")
DEFAULT_QUOTED = Path("datasets/published/quoted")


class PublishedImportError(ValueError):
    """The import cannot run (unwritable output, inconsistent sources); one line."""


@dataclass
class ImportSummary:
    output: Path
    datacard: Path
    rows: list[dict[str, Any]] = field(default_factory=list)
    versions_read: dict[str, int] = field(default_factory=dict)
    read_from: dict[str, str] = field(default_factory=dict)  # source -> SOURCE_DIR | quoted
    log: list[str] = field(default_factory=list)

    def counts(self, *columns: str) -> Counter:
        return Counter(tuple(row[c] for c in columns) for row in self.rows)


def import_published(source_dir: Path, output: Path = DEFAULT_OUTPUT,
                     manifest: Path = DEFAULT_MANIFEST, quoted: Path = DEFAULT_QUOTED
                     ) -> ImportSummary:
    """Rebuild the published table from `source_dir` and write it (and its data card).

    Raises:
        SourceError: SOURCE_DIR, a repository, a commit or a pinned file is missing or differs.
        ManifestError: sources.yaml is missing or malformed.
        PublishedImportError: the output cannot be written.
    """
    output = Path(output)
    _check_writable(output)
    pinned = load_manifest(manifest)
    summary = ImportSummary(output=output, datacard=output.parent / "DATACARD.md")
    with SourceDir(source_dir) as sources:
        quoted_sources = SourceDir(quoted) if Path(quoted).is_dir() else None
        try:
            unknown = sorted(set(pinned) - {source.name for source in SOURCES})
            if unknown:
                raise SourceError(f"{manifest}: unknown source {unknown[0]}")
            for source in (source for source in SOURCES if source.name in pinned):
                files = sources
                summary.read_from[source.name] = "SOURCE_DIR"
                if source.carried and not sources.has(source.repository):
                    if quoted_sources is None or not quoted_sources.has(source.repository):
                        raise SourceError(f"repository {source.repository}: not in {source_dir} "
                                          f"and no quoted lines in {quoted}")
                    files, summary.read_from[source.name] = quoted_sources, "quoted"
                parsed = read_source(files, source, pinned[source.name], summary.log,
                                     check_blobs=files is sources)
                summary.versions_read[source.name] = len(pinned[source.name].versions)
                summary.rows += [to_table_row(row) for row in parsed]
        finally:
            if quoted_sources is not None:
                quoted_sources.close()
    from vram_ml.published.mapping import map_rows

    map_rows(summary.rows)
    _check_unique(summary.rows)
    write_table(summary.rows, output)
    from vram_ml.published.datacard import write_datacard

    write_datacard(summary)
    return summary


def read_source(files: SourceDir, source: PublishedSource, pinned: SourceManifest,
                log: list[str], check_blobs: bool = True) -> list[dict[str, Any]]:
    """The parsed, deduplicated rows of one source's pinned versions."""
    repo = files.repository(source.repository)
    versions = [dict(v, repository=source.repository) for v in pinned.versions]
    for version in versions:
        text = repo.read(version["commit"], version["path"])
        if text is None:
            raise SourceError(f"repository {source.repository}: {version['path']} does not exist "
                              f"at {version['commit']}")
        blob = repo.blob_id(version["commit"], version["path"])
        if check_blobs and version.get("blob") and blob != version["blob"]:
            raise SourceError(f"repository {source.repository}: {version['path']}@"
                              f"{version['commit']} is blob {blob}, sources.yaml pins "
                              f"{version['blob']}")
    if source.kind == "documents":
        document_source = _with_pins(source, pinned)
        return read_documents(repo, document_source, versions, log)
    rows: list[dict[str, Any]] = []
    for version in versions:
        text = repo.read(version["commit"], version["path"])
        context = source.context(files, version)
        rows += source.parser.parse(text, repository=source.repository, path=version["path"],
                                    commit=version["commit"], commit_date=version.get("date"),
                                    context=context)
    return dedup_lines(rows)


def _with_pins(source: PublishedSource, pinned: SourceManifest) -> PublishedSource:
    """The source with the manifest's pinned and preferred commits (the manifest decides)."""
    from dataclasses import replace

    return replace(source, pinned=pinned.pinned or source.pinned,
                   prefer=pinned.prefer or source.prefer)


def _check_writable(output: Path) -> None:
    if output.exists() and not output.is_file():
        raise PublishedImportError(f"{output}: not a regular file")
    folder = output.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise PublishedImportError(
            f"{output}: cannot create its folder ({error.strerror})") from None
    if not os.access(folder, os.W_OK) or (output.exists() and not os.access(output, os.W_OK)):
        raise PublishedImportError(f"{output}: not writable")


def _check_unique(rows: list[dict[str, Any]]) -> None:
    seen: dict[str, dict[str, Any]] = {}
    for row in rows:
        if row["row_id"] in seen:
            raise PublishedImportError(f"two rows share row_id {row['row_id']} ({row['source']} "
                               f"{row['path']}@{row['commit']} {row['locator']})")
        seen[row["row_id"]] = row


def table_text(rows: list[dict[str, Any]]) -> str:
    """The table as CSV text (RFC 4180 line ends, every column, this order)."""
    buffer = io.StringIO(newline="")
    writer = csv.DictWriter(buffer, fieldnames=list(COLUMNS), lineterminator="\r\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def table_bytes(rows: list[dict[str, Any]], suffix: str) -> bytes:
    """The table as `.parquet` (every column a string, as in the CSV) or `.csv` bytes."""
    if suffix != ".parquet":
        return table_text(rows).encode("utf-8")
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({column: pa.array([str(row[column]) for row in rows], pa.string())
                      for column in COLUMNS})
    buffer = pa.BufferOutputStream()
    pq.write_table(table, buffer, compression="zstd")
    return buffer.getvalue().to_pybytes()


def write_table(rows: list[dict[str, Any]], output: Path) -> None:
    """Write atomically (Parquet or CSV by suffix): a failed write leaves the old table."""
    temporary = output.with_name(output.name + ".tmp")
    try:
        temporary.write_bytes(table_bytes(rows, output.suffix))
        os.replace(temporary, output)
    except OSError as error:
        temporary.unlink(missing_ok=True)
        raise PublishedImportError(f"{output}: cannot write ({error.strerror})") from None
