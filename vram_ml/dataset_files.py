"""Read the rows of one dataset file: CSV, Parquet or JSONL (the flat schema of `vram_ml.sample`).

The one reader of dataset files, shared by the agent (`dataset validate / import / export`,
agent/dataset.py) and the learned model's loader (model/learned/training_set.py), which may
not import the agent. Robust to what a file from another machine can hold:

- only a regular file of at most `MAX_DATA_FILE_BYTES` is read (no device, FIFO or /proc file
  that never ends, no directory);
- a line that cannot be a row (bad JSON, not a JSON object, broken CSV, more fields than the
  header) comes back as a one-line string saying why, in its place: callers count or reject it;
- an unreadable file raises `DataFileError` with one line.

CSV values stay strings (ids are never read as numbers; empty is ""); Parquet's nulls and NaNs
become None. JSONL lines end at "\\n" only (not at U+2028 and kin).

Example:
    rows = read_rows(Path("datasets/samples.csv"))
    samples = [row_to_sample(row) for row in rows if isinstance(row, dict)]
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

DATA_SUFFIXES = (".csv", ".parquet", ".jsonl")
MAX_DATA_FILE_BYTES = 1024 * 2**20  # 1 GiB: millions of samples; never a whole disk in memory

Row = dict[str, Any] | str  # a row, or one line saying why it is not one


class DataFileError(ValueError):
    """A dataset file that cannot be read at all; the message is one line."""


def read_rows(path: str | Path) -> list[Row]:
    """The raw rows of a CSV, JSONL (also `.json`) or Parquet file, by suffix (other suffixes are
    read as CSV); a line that is not a row comes back as a one-line string saying why.

    Raises:
        DataFileError: missing, not a regular file, too large, or unreadable.
    """
    path = Path(path)
    try:
        if not path.exists():
            raise DataFileError(f"{path}: no such file")
        if not path.is_file():
            raise DataFileError(f"{path}: not a regular file")
        size = path.stat().st_size
        if size > MAX_DATA_FILE_BYTES:
            raise DataFileError(
                f"{path}: {size} bytes, larger than {MAX_DATA_FILE_BYTES // 2**20} MiB")
        if path.suffix == ".parquet":
            import pandas as pd

            frame = pd.read_parquet(path)
            return frame.astype(object).where(frame.notna(), None).to_dict("records")
        # bytes, not read_text: universal newlines would turn a quoted "\r" into "\n"
        text = path.read_bytes().decode("utf-8")
    except DataFileError:
        raise
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise DataFileError(f"{path}: unreadable ({first_line(error)})") from None
    if path.suffix in (".jsonl", ".json"):
        return [_json_row(line) for line in text.split("\n") if line.strip()]
    return _csv_rows(text)


def first_line(error: BaseException) -> str:
    """An error's first line, at most 160 characters, printable."""
    line = (str(error).strip().splitlines() or [type(error).__name__])[0][:160]
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in line)


def _json_row(line: str) -> Row:
    try:
        row = json.loads(line)
    except (json.JSONDecodeError, RecursionError) as error:
        return f"not valid JSON ({first_line(error)})"
    return row if isinstance(row, dict) else f"not a JSON object (a {type(row).__name__})"


def _csv_rows(text: str) -> list[Row]:
    reader = csv.DictReader(io.StringIO(text, newline=""))  # csv's own line ends only
    rows: list[Row] = []
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return rows
        except csv.Error as error:  # this line only; the reader goes on with the next one
            rows.append(f"unreadable CSV line ({first_line(error)})")
            continue
        rows.append("more fields than the header" if None in row else row)
