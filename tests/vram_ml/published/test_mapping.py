"""Mapping decisions: a run maps to a Spec only when the Spec describes it; otherwise one reason.

Rows are taken from the committed table, their mapping cleared and redone, per source: a mapped
row gives back its spec_id, an unmapped row its reason. Sources with no mappable row (remote-code
models) show the reader maps a synthetic variant whose model is a catalog one.
"""

from __future__ import annotations

import json

import pytest

import vram_ml.published.mapping as mapping
from vram_ml.published.mapping import map_rows
from vram_ml.published.sources import SOURCE_NAMES

from .excerpts import table_rows

ROWS = table_rows()


def remapped(row: dict[str, str], **run_changes) -> dict[str, str]:
    fresh = dict(row, spec="", spec_id="", mapping="unmapped", unmapped_reason="",
                 assumptions="[]")
    if run_changes:
        fresh["run"] = json.dumps(dict(json.loads(row["run"]), **run_changes))
    map_rows([fresh], context=ROWS)
    return fresh


def first(source: str, mapped: str, reason: str = "") -> dict[str, str]:
    return next(row for row in ROWS if row["source"] == source and row["mapping"] == mapped
                and reason in row["unmapped_reason"] and "same measurement" not in
                row["unmapped_reason"])


@pytest.mark.parametrize("source", SOURCE_NAMES)
def test_an_unmapped_row_keeps_its_reason(source):
    row = first(source, "unmapped")
    again = remapped(row)
    assert again["mapping"] == "unmapped" and again["unmapped_reason"] == row["unmapped_reason"]
    assert again["spec"] == "" and again["spec_id"] == ""


MAPPED = [s for s in SOURCE_NAMES if any(r["source"] == s and r["mapping"] == "mapped"
                                         for r in ROWS)]


@pytest.mark.parametrize("source", MAPPED)
def test_a_mapped_row_gives_back_its_spec(source):
    row = first(source, "mapped")
    again = remapped(row)
    assert again["mapping"] == "mapped" and again["spec_id"] == row["spec_id"]
    assert json.loads(again["spec"]) == json.loads(row["spec"])
    assert any("not stated by the source" in note or ": " in note
               for note in json.loads(again["assumptions"]))


def test_the_mapped_sources_are_the_expected_ones():
    assert set(MAPPED) == {"fms-acceleration", "peft-metamathqa", "universal-llm-trainer",
                           "fsdp_qlora", "axolotl"}


@pytest.mark.parametrize("source", ["qwen", "qwen-vl", "minicpm-v", "chatglm3", "cogvlm2",
                                    "minicpm"])
def test_remote_code_models_are_unmapped_with_that_reason(source):
    assert all("remote-code-only model" in row["unmapped_reason"] or
               "not in the catalog" in row["unmapped_reason"]
               for row in ROWS if row["source"] == source)


def test_a_qwen_row_with_a_catalog_model_maps_through_the_readme_reader():
    row = first("qwen", "unmapped", "Qwen/Qwen-7B-Chat: remote-code-only model")
    if row["unmapped_reason"].count(";"):
        pytest.fail(f"pick a row whose only reason is the model: {row['unmapped_reason']}")
    # Qwen's README pins transformers 4.32 (2023), older than any stack the rules cover
    assert "4.32" in row["transformers_version"]
    again = remapped(dict(row, transformers_version="4.45.2"), model="Qwen/Qwen2.5-7B-Instruct",
                     lora_target=["q_proj", "v_proj"])
    assert again["mapping"] == "mapped", again["unmapped_reason"]
    spec = json.loads(again["spec"])
    assert (spec["model"], spec["method"], spec["batch_size"]) == ("Qwen/Qwen2.5-7B", "lora", 1)


@pytest.mark.parametrize("reason", [
    "FSDP FULL_SHARD over 2 GPUs: not yet in the Spec",
    "GPTQ 4-bit base through the AutoGPTQ plugin: not in the Spec",
    "fms fused-ops-and-kernels plugin",
    "pure fp16 training",
])
def test_fms_rows_the_spec_cannot_describe(reason):
    assert remapped(first("fms-acceleration", "unmapped", reason))["mapping"] == "unmapped"


def test_a_sum_over_gpus_is_not_a_per_gpu_value():
    row = next(r for r in ROWS if r["per_gpu"] == "false" and r["value"])
    assert "sum over GPUs" in remapped(row)["unmapped_reason"]


def test_a_relabelled_copy_is_not_counted_twice():
    copies = [r for r in ROWS if "same measurement as row" in r["unmapped_reason"]]
    ids = {r["row_id"] for r in ROWS}
    assert copies and all(r["unmapped_reason"].split("row ")[1].split(" ")[0] in ids
                          for r in copies)


def test_a_field_added_to_the_spec_is_filled_with_no_other_change(monkeypatch):
    """Once the Spec has an `fsdp` field, an FSDP row is no longer blocked: the field is passed to
    build_spec with the run's sharding (here build_spec is a stand-in that records its fields)."""
    row = next(r for r in ROWS if r["unmapped_reason"] ==
               "FSDP FULL_SHARD over 2 GPUs: not yet in the Spec")
    captured = {}

    def fake_build_spec(**fields):
        captured.update(fields)
        raise mapping.SpecError("recorded")

    monkeypatch.setattr(mapping, "spec_fields", lambda: set(mapping.Spec.model_fields) | {"fsdp"})
    monkeypatch.setattr(mapping, "build_spec", fake_build_spec)
    again = remapped(row)
    assert again["unmapped_reason"] == "the Spec rejects the run: recorded"
    assert captured["fsdp"] == "FULL_SHARD" and captured["num_gpus"] == 2
