"""`datasets/published/DATACARD.md`: the published table's card, written by every import.

Counts are computed from the rows written; the per-source text comes from source_notes.py.
The card is a pure function of the table (no dates, no machine names), so a rebuild that gives
the same table gives the same card.
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

from vram_ml.published.source_notes import SOURCE_NOTES

COLUMN_NOTES = (
    ("row_id", "16 hex: sha256 of repository|path|commit|locator|column (one published place)"),
    ("measurement_key", "16 hex: one measurement; rows of one source line (several memory "
     "columns) share it"),
    ("source, repository, path, commit, commit_date", "where the number is published (commit "
     "40 hex, its committer date)"),
    ("locator, column", "where in the file (line, table row and column, JSON key)"),
    ("quote, header_quote", "the published line / cell and its table header, verbatim"),
    ("also_in", "JSON list of {commit, path, locator}: the same number published again"),
    ("value, unit, value_bytes", "the number as written, its unit (bytes, MiB, GiB, MB, GB = "
     "10^9, or % of the card), and value x unit in bytes (nearest byte); empty when the row is "
     "a label"),
    ("statistic", "allocated (torch max_memory_allocated), reserved (max_memory_reserved), "
     "device (nvidia-smi / NVML memory.used) or unknown, from the measuring code"),
    ("is_peak", "false for a non-peak companion (a stage-end or average reading)"),
    ("statistic_evidence", "the code or text that decides the statistic (file@commit:line)"),
    ("outcome", "ok, oom (censored: the peak exceeded card_memory_bytes), failed (not OOM) or "
     "fit (a label: the run fitted, no number)"),
    ("card_memory_bytes, gpu_model, gpu_count, per_gpu", "the card (nominal N x 2^30), and "
     "whether the value is per GPU (false: a sum over GPUs)"),
    ("trainer, distributed, stack_evidence", "the training stack (trl_sft, hf_trainer, "
     "custom_loop, axolotl, llamafactory; none, ddp, deepspeed, fsdp)"),
    ("*_version, versions_evidence", "library versions from the source's requirement files at "
     "that commit (an exact pin, or the specifier as written)"),
    ("run", "JSON: the settings as the source states them (plus stack details)"),
    ("assumptions", "JSON list of 'field=value: why, file@commit' for every value not stated "
     "by the row itself"),
    ("caveats", "JSON list: what to know before using the number"),
    ("spec, spec_id, mapping, unmapped_reason", "the Spec the run maps to (JSON of its fields) "
     "and its id, or why no Spec describes it"),
)


def write_datacard(summary: Any) -> None:
    summary.datacard.write_text(datacard_text(summary.rows, summary.versions_read,
                                              summary.read_from), encoding="utf-8")


def datacard_text(rows: list[dict[str, Any]], versions_read: dict[str, int],
                  read_from: dict[str, str]) -> str:
    mapped = [row for row in rows if row["mapping"] == "mapped"]
    lines = [
        "# Published measurements (`backend: published`)", "",
        "Peak-memory numbers that others measured on GPUs and published in public repositories, "
        "one row per published number, each traced to a file, a commit and a quoted line. They "
        "are real measurements, not ours: labelled `published` everywhere, kept apart from the "
        "agent's `cuda` samples. Published figures from sources other than these are held out "
        "on purpose as the independent check of the model: they are never imported.", "",
        "Not for: a claim about one library version or one GPU without reading the row's "
        "caveats; `unknown`-statistic rows as training targets without showing they are safe; "
        "non-peak rows (`is_peak` false) as peaks.", "",
        "## Rebuild", "",
        "```bash",
        "vram-ml dataset import-published /work/.mirror      # SOURCE_DIR: one clone per repo",
        "vram-ml dataset validate datasets/published/measurements.parquet",
        "python -m vram_ml.published.history SOURCE_DIR > datasets/published/sources.yaml  "
        "# re-pin",
        "```", "",
        "SOURCE_DIR holds one git clone or bare mirror per repository, named `owner+name` (with "
        "the git directory, `repo/` or `.git/` inside) or `owner/name`. `sources.yaml` pins every "
        "(commit, path) file version read, with its blob id; the import checks each file against "
        "it and reads nothing else (plus, at the same commits, the scripts and configs that say "
        "what was measured). The same SOURCE_DIR gives the same bytes.", "",
        "The table is Parquet (every column a string, as the CSV would hold it): it quotes each "
        "row's evidence and settings in full, 31 MB as CSV and under 1 MB as Parquet, and the "
        "working tree travels to a lent GPU machine within 64 MiB. Read it with "
        "`pandas.read_parquet`; `--output FILE.csv` writes the same rows as CSV.", "",
        "## Columns", "", "| column | meaning |", "|---|---|",
        *[f"| {_cell(name)} | {_cell(meaning)} |" for name, meaning in COLUMN_NOTES], "",
        "## Totals", "",
        f"{len(rows)} rows from {len(versions_read)} sources; {len(mapped)} mapped to a Spec, "
        f"{len(rows) - len(mapped)} unmapped; "
        f"{sum(_vision(row) for row in rows)} vision-language rows "
        f"({sum(_vision(row) for row in mapped)} mapped).", "",
    ]
    lines += _table(("source", "statistic", "outcome", "rows"),
                    Counter((r["source"], r["statistic"], r["outcome"]) for r in rows))
    lines += ["", "Mapped rows by source, statistic, peak and outcome:", ""]
    lines += _table(("source", "statistic", "is_peak", "outcome", "rows"),
                    Counter((r["source"], r["statistic"], r["is_peak"], r["outcome"])
                            for r in mapped))
    lines += ["", "Model families among mapped rows:", ""]
    lines += _table(("family", "rows"), Counter((_family(r),) for r in mapped))
    lines += ["", "## Per source", ""]
    for name in versions_read:
        lines += _source_section(name, [r for r in rows if r["source"] == name],
                                 versions_read[name], read_from.get(name, ""))
    lines += ["## What would map once the Spec can say it", "",
              "Unmapped rows whose every reason is of one kind: once the Spec field or shape "
              "builder exists, a rerun of the import can map them with no other change:", ""]
    lines += _table(("missing in the Spec", "rows", "of which numeric peaks"), _waiting(rows))
    lines += ["", "## Why rows are unmapped", "",
              "Each unmapped row's reason is in its `unmapped_reason`; grouped here (a row with "
              "several reasons counts under each).", ""]
    lines += _table(("source", "reason", "rows"), Counter(
        (r["source"], reason) for r in rows if r["mapping"] == "unmapped"
        for reason in r["unmapped_reason"].split("; ")))
    return "\n".join(lines) + "\n"


def _source_section(name: str, rows: list[dict[str, Any]], versions: int, read_from: str
                    ) -> list[str]:
    notes = SOURCE_NOTES.get(name, {})
    mapped = sum(r["mapping"] == "mapped" for r in rows)
    repository = rows[0]["repository"] if rows else ""
    where = ("the quoted lines in datasets/published/quoted/" if read_from == "quoted"
             else "SOURCE_DIR")
    return [
        f"### {name} ({repository})", "",
        f"- What: {notes.get('what', '')}",
        f"- How it was read: {notes.get('how', '')}",
        f"- Caveats: {notes.get('caveats', '')}",
        f"- Rows: {len(rows)} ({mapped} mapped) from {versions} pinned file versions, read from "
        f"{where}; statistics: {_inline(Counter(r['statistic'] for r in rows))}; outcomes: "
        f"{_inline(Counter(r['outcome'] for r in rows))}.", "",
    ]


WAITING = (("FSDP settings", ("FSDP",)), ("GPTQ quantization", ("GPTQ",)),
           ("FSDP or GPTQ", ("FSDP", "GPTQ")),
           ("a remote-code shape builder", ("no closed-form shape builder",)),
           ("a real config in the catalog", ("not in the catalog",)),
           ("stack rules for an older library version", ("is not supported (supported:",)))


def _waiting(rows: list[dict[str, Any]]) -> Counter:
    """(what is missing, rows waiting for it) -> how many of those rows are numeric peaks."""
    found: Counter = Counter()
    for label, words in WAITING:
        waiting = [row for row in rows if row["mapping"] == "unmapped" and all(
            any(word in reason for word in words) for reason in row["unmapped_reason"].split("; "))]
        found[(label, str(len(waiting)))] = sum(row["is_peak"] == "true" and bool(row["value"])
                                                for row in waiting)
    return found


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _table(header: tuple[str, ...], counts: Counter) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for key, count in sorted(counts.items(), key=lambda item: (-item[1], item[0])):
        cells = [str(part).replace("|", "\\|") for part in key]
        lines.append("| " + " | ".join(cells) + f" | {count} |")
    return lines


def _inline(counts: Counter) -> str:
    return ", ".join(f"{key} {count}" for key, count in sorted(counts.items(),
                                                               key=lambda i: (-i[1], i[0])))


def _vision(row: dict[str, Any]) -> bool:
    return bool(json.loads(row["run"]).get("vision_language"))


def _family(row: dict[str, Any]) -> str:
    from vram_ml.model_source import load_catalog

    model = json.loads(row["spec"])["model"]
    entry = load_catalog().get(model)
    return entry.family if entry else "unknown"
