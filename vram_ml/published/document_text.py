"""Reading published documents faithfully: line lookups, citations, pipe and HTML tables.

Everything keeps the source's own text: a table cell is the stripped text of the cell, a row's
quote is the verbatim source line (or `<tr>` block), and a citation is `path@commit:LINE: line`.
"""

from __future__ import annotations

import html
import re
from typing import Any


def line_no(text: str, needle: str, start: int = 0) -> int | None:
    """1-based line number of the first occurrence of `needle` at or after offset `start`."""
    index = text.find(needle, start)
    return None if index < 0 else text.count("\n", 0, index) + 1


def find_line(text: str, pattern: str, regex: bool = False) -> tuple[int | None, str | None]:
    """(1-based number, line) of the first line holding `pattern` (or matching the regex)."""
    for number, line in enumerate(text.splitlines(), start=1):
        if re.search(pattern, line) if regex else pattern in line:
            return number, line
    return None, None


def cite_text(path: str, commit: str, text: str, needle: str) -> str | None:
    """'path@commit:LINE: <stripped line>' for the line where `needle` first occurs."""
    number = line_no(text, needle)
    if number is None:
        return None
    return f"{path}@{commit}:{number}: {text.splitlines()[number - 1].strip()}"


def load_yaml(text: str | None) -> Any:
    """yaml.safe_load of a published config, or None when it is not valid YAML."""
    import yaml

    if text is None:
        return None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return None


def md_split_row(line: str) -> list[str]:
    """The stripped cells of one pipe-table line."""
    stripped = line.strip()
    stripped = stripped[1:] if stripped.startswith("|") else stripped
    stripped = stripped[:-1] if stripped.endswith("|") else stripped
    return [cell.strip() for cell in stripped.split("|")]


def md_tables(text: str) -> list[dict[str, Any]]:
    """Pipe tables: a header line, a `|---|` separator, then the lines that start with `|`.

    Each table: {start_line, header_line, header, separator_line, rows: [{line_no, line, cells}]}.
    """
    lines = text.splitlines()
    tables = []
    i = 0
    while i < len(lines) - 1:
        head, separator = lines[i], lines[i + 1]
        if (
            head.strip().startswith("|")
            and "|" in separator
            and re.match(r"^\|?\s*:?-+:?\s*(\||$)", separator.strip())
        ):
            table = {
                "start_line": i + 1,
                "header_line": head,
                "header": md_split_row(head),
                "separator_line": separator,
                "rows": [],
            }
            j = i + 2
            while j < len(lines) and lines[j].strip().startswith("|"):
                table["rows"].append(
                    {"line_no": j + 1, "line": lines[j], "cells": md_split_row(lines[j])}
                )
                j += 1
            tables.append(table)
            i = j
        else:
            i += 1
    return tables


def strip_tags(fragment: str) -> str:
    """The text of an HTML fragment (tags dropped, entities decoded, <br> as a space)."""
    fragment = re.sub(r"<br\s*/?>", " ", fragment)
    fragment = re.sub(r"<[^>]+>", "", fragment)
    return html.unescape(fragment).strip()


def html_span(table: dict[str, Any], first: int, last: int) -> str:
    """Verbatim source from the start of row `first` to the end of row `last` of a table."""
    rows = table["rows"]
    return table["text"][rows[first]["start"] : rows[last]["end"]]


def html_tables(text: str) -> list[dict[str, Any]]:
    """The `<table>`s of a README, with rowspan/colspan expanded into `grid`.

    Each table: {start_line, rows: [{tr_source, line_no, cells, start, end}], grid, text}; a row's
    `tr_source` is its `<tr>` block verbatim, without the closing `</tr>`.
    """
    tables = []
    for table_match in re.finditer(r"<table[^>]*>(.*?)</table>", text, flags=re.S | re.I):
        rows = _html_rows(text, table_match)
        tables.append(
            {
                "start_line": text.count("\n", 0, table_match.start()) + 1,
                "rows": rows,
                "grid": _expand_spans(rows),
                "text": text,
            }
        )
    return tables


def _html_rows(text: str, table_match: re.Match) -> list[dict[str, Any]]:
    body, base = table_match.group(1), table_match.start(1)
    rows = []
    for row_match in re.finditer(
        r"<tr[^>]*>(.*?)(?=<tr[^>]*>|</table>|$)", body, flags=re.S | re.I
    ):
        cells = []
        for cell in re.finditer(
            r"<(t[hd])([^>]*)>(.*?)</t[hd]>", row_match.group(1), flags=re.S | re.I
        ):
            rowspan = re.search(r'rowspan="?(\d+)', cell.group(2))
            colspan = re.search(r'colspan="?(\d+)', cell.group(2))
            cells.append(
                {
                    "text": strip_tags(cell.group(3)),
                    "raw": cell.group(0),
                    "tag": cell.group(1).lower(),
                    "rowspan": int(rowspan.group(1)) if rowspan else 1,
                    "colspan": int(colspan.group(1)) if colspan else 1,
                }
            )
        if not cells:
            continue
        source = re.sub(r"\s*</tr>\s*$", "", row_match.group(0).rstrip())
        start = base + row_match.start()
        rows.append(
            {
                "tr_source": source,
                "line_no": text.count("\n", 0, start) + 1,
                "cells": cells,
                "start": start,
                "end": start + len(source),
            }
        )
    return rows


def _expand_spans(rows: list[dict[str, Any]]) -> list[list[str]]:
    grid = []
    pending: dict[int, tuple[str, int]] = {}  # column -> (text, rows still spanned)
    for row in rows:
        line: list[str] = []
        column = cell_index = 0
        cells = row["cells"]
        while cell_index < len(cells) or column in pending:
            if column in pending:
                cell_text, remaining = pending.pop(column)
                line.append(cell_text)
                if remaining > 1:
                    pending[column] = (cell_text, remaining - 1)
                column += 1
                continue
            cell = cells[cell_index]
            cell_index += 1
            for _ in range(cell["colspan"]):
                line.append(cell["text"])
                if cell["rowspan"] > 1:
                    pending[column] = (cell["text"], cell["rowspan"] - 1)
                column += 1
        grid.append(line)
    return grid
