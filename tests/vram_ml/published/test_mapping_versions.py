"""Rows that pin no exact library version get their source's nearest pins, or the release
current at their commit when the source dates its numbers, or stay unmapped: never the Spec's
defaults (the newest LLaMA-Factory stack) for a run measured years earlier."""

from __future__ import annotations

from vram_ml.published.mapping_versions import fill_missing_versions, newest_before

DATES = {"transformers": {"4.38.2": "2024-03-01T00:00:00", "4.39.3": "2024-04-02T00:00:00",
                          "4.40.2": "2024-05-06T00:00:00", "4.41.2": "2024-05-30T00:00:00"}}


def _row(source: str, date: str, version: str = "", commit: str = "c" * 40) -> dict:
    return {"source": source, "commit_date": date, "commit": commit, "path": "bench.csv",
            "transformers_version": version, "peft_version": "", "trl_version": "",
            "bitsandbytes_version": "", "torch_version": ""}


def test_newest_release_before_the_commit_within_the_stated_range():
    assert newest_before("transformers", "2024-05-20T10:00:00+08:00", "", DATES) == "4.40.2"
    assert newest_before("transformers", "2024-04-10T00:00:00+00:00", "!=4.39.*", DATES) == "4.38.2"
    assert newest_before("transformers", "2024-01-01T00:00:00+00:00", "", DATES) is None


def test_unpinned_rows_take_the_nearest_later_pin_of_their_source():
    rows = [_row("bench", "2024-05-13T00:00:00+00:00"),
            _row("bench", "2024-07-15T00:00:00+00:00", "4.39.3", commit="a" * 40),
            _row("bench", "2024-09-16T00:00:00+00:00", "4.44.2", commit="b" * 40),
            _row("bench", "2024-12-01T00:00:00+00:00", "@ git+https://github.com/x/y")]
    fill_missing_versions(rows)
    assert rows[0]["_assumed_transformers_version"] == "4.39.3"
    assert "nearest pinned row, bench.csv@aaaaaaa (2024-07-15)" in rows[0]["_version_assumption"]
    assert rows[3]["_assumed_transformers_version"] == "4.44.2"  # no later pin: the last before
    assert "_assumed_transformers_version" not in rows[1]


def test_a_source_that_neither_pins_nor_dates_its_numbers_stays_unmapped():
    rows = [_row("peft-docs", "2026-05-01T00:00:00+00:00")]
    fill_missing_versions(rows)
    assert "library versions unknown" in rows[0]["_version_blocker"]
