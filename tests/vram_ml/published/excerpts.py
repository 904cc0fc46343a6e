"""Excerpts built at test time from the committed table: the lines it quotes, nothing else.

No fetched file is committed (the search tool's rule): a test rebuilds a sparse copy of one
pinned file version from the table's own `header_quote` and `quote` columns (and the
`path@commit:LINE: text` lines its evidence cites), each at its line number, in the snapshot
layout git_files reads (`owner+name/<commit>/<path>`), and runs the importer on it.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

TABLE = Path(__file__).parents[3] / "datasets" / "published" / "measurements.parquet"
MEASURED = ("value", "unit", "value_bytes", "statistic", "is_peak", "outcome", "quote")


def table_rows() -> list[dict[str, str]]:
    from vram_ml.dataset_files import read_rows

    return [row for row in read_rows(TABLE) if isinstance(row, dict)]


def rows_at(rows: list[dict[str, str]], commit: str, path: str) -> list[dict[str, str]]:
    """The table's rows published at (commit, path): kept there, or republished there."""
    found = []
    for row in rows:
        places = [(row["commit"], row["path"])] + [
            (p["commit"], p["path"]) for p in json.loads(row["also_in"])]
        if (commit, path) in places:
            found.append(row)
    return found


def sparse_lines(rows: list[dict[str, str]], commit: str, path: str) -> dict[int, str]:
    """{line number: text} of every line the rows quote or cite at path@commit."""
    lines: dict[int, str] = {}
    cite = re.compile(re.escape(f"{path}@{commit}") + r":(\d+): ([^;\n]*)")
    for row in rows:
        located = re.match(r"line (\d+)", row["locator"])
        if located and row["commit"] == commit and row["path"] == path:
            for offset, text in enumerate(row["quote"].split("\n")):
                lines[int(located.group(1)) + offset] = text
        for column in ("statistic_evidence", "stack_evidence", "versions_evidence",
                       "assumptions", "caveats"):
            for match in cite.finditer(row[column]):
                lines.setdefault(int(match.group(1)), match.group(2))
    return lines


def write_snapshot(root: Path, repository: str, commit: str, path: str, text: str) -> Path:
    file = root / repository.replace("/", "+") / commit / path
    file.parent.mkdir(parents=True, exist_ok=True)
    file.write_text(text, encoding="utf-8")
    return file


def measured(rows: list[dict[str, str]]) -> Counter:
    """The measurement of each row (what a parser must give back), as a multiset."""
    return Counter(tuple(row[c] for c in MEASURED) for row in rows)


def unique(items: list[str]) -> list[str]:
    return list(dict.fromkeys(items))


def separator(header: str) -> str:
    """A pipe table's `|---|` line for a header (markdown syntax, written here, not quoted)."""
    return "|" + "---|" * (header.count("|") - 1)


def by_line(rows: list[dict[str, str]], first: dict[int, str] | None = None) -> str:
    """Each quote at the line its locator names ('line N'), the rest empty."""
    lines = dict(first or {})
    for row in rows:
        located = re.search(r"line (\d+)", row["locator"])
        if located:
            lines[int(located.group(1))] = row["quote"]
    return "\n".join(lines.get(i, "") for i in range(1, max(lines) + 1)) + "\n"


def pipe_tables(rows: list[dict[str, str]], heading_of=lambda row: "") -> str:
    """Each header_quote (with a written separator) followed by its rows' quotes, in order."""
    blocks: dict[tuple[str, str], list[str]] = {}
    for row in rows:
        blocks.setdefault((heading_of(row), row["header_quote"]), []).append(row["quote"])
    parts = []
    for (heading, header), quotes in blocks.items():
        parts += [heading, "", header, separator(header), *unique(quotes), ""]
    return "\n".join(parts) + "\n"
