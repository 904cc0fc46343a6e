"""One row per published number: a republished number joins `also_in`, a changed one is new."""

from __future__ import annotations

from types import SimpleNamespace

from vram_ml.published.dedup import dedup_lines, read_documents
from vram_ml.published.parsed_row import make_row


def line_row(commit: str, key: str, line: int, column: str = "mem") -> dict:
    return dict(make_row(source="s", repository="o/n", path="f.csv", commit=commit,
                         locator=f"line {line}", column=column, quote="q", outcome="ok"),
                measurement_key=key)


def test_a_republished_line_is_one_measurement_at_its_first_commit():
    rows = dedup_lines([line_row("c1", "k", 2), line_row("c2", "k", 5), line_row("c2", "k2", 6)])
    assert [(r["commit"], r["measurement_key"]) for r in rows] == [("c1", "k"), ("c2", "k2")]
    assert rows[0]["also_in"] == [{"commit": "c2", "path": "f.csv", "locator": "line 5"}]


def test_columns_of_one_line_stay_separate_rows():
    rows = dedup_lines([line_row("c1", "k", 2, "a"), line_row("c1", "k", 2, "b")])
    assert len(rows) == 2 and all(r["also_in"] == [] for r in rows)


class Versions:
    """A fake repository and parser: each version's text is 'key=value' lines."""

    def __init__(self, texts: dict[str, str]) -> None:
        self.texts = texts

    def read(self, commit, path):
        return self.texts[commit]

    def build_context(self, repo, commit, path, first_published=None):
        return {"first": first_published}

    def parse(self, text, *, repository, path, commit, commit_date, context):
        rows = []
        for number, line in enumerate(text.splitlines(), 1):
            key, value = line.split("=")
            rows.append(make_row(source="s", repository=repository, path=path, commit=commit,
                                 commit_date=commit_date, row_key=key, value=value,
                                 outcome="ok", locator=f"line {number}", quote=line,
                                 run={"config_path": None, "model": "m"}))
        return rows


def documents(texts: dict[str, str], dates: dict[str, str], pinned: str, prefer=()):
    fake = Versions(texts)
    source = SimpleNamespace(name="s", repository="o/n", parser=fake, pinned=pinned,
                             prefer=tuple(prefer), targets=({"paths": ["README.md"]},),
                             run_diff_keys=())
    versions = [{"document": "README.md", "commit": c, "path": "README.md", "date": dates[c],
                 "blob": texts[c]} for c in sorted(texts, key=dates.get, reverse=True)]
    return read_documents(fake, source, versions, [])


DATES = {"old": "2024-01-01", "mid": "2024-02-01", "new": "2024-03-01"}


def test_a_number_still_published_is_kept_at_the_pinned_commit():
    rows = documents({"old": "a=1", "mid": "a=1", "new": "a=1"}, DATES, pinned="new")
    assert len(rows) == 1 and rows[0]["commit"] == "new"
    assert {p["commit"] for p in rows[0]["also_in"]} == {"old", "mid"}
    assert rows[0]["superseded_by"] is None and rows[0]["first_published_commit"] == "old"


def test_a_changed_number_keeps_the_old_one_as_superseded():
    rows = documents({"old": "a=1", "new": "a=2"}, DATES, pinned="new")
    by_value = {row["value"]: row for row in rows}
    assert by_value["1"]["commit"] == "old" and by_value["1"]["superseded_by"] == "2 at new"
    assert any("superseded" in c for c in by_value["1"]["caveats"])
    assert by_value["2"]["superseded_by"] is None


def test_a_preferred_commit_wins_over_the_first_for_a_superseded_number():
    rows = documents({"old": "a=1", "mid": "a=1", "new": "a=2"}, DATES, pinned="new",
                     prefer=["mid"])
    assert next(r for r in rows if r["value"] == "1")["commit"] == "mid"
