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
    map_rows([fresh])
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
    assert set(MAPPED) == {"fms-acceleration", "peft-metamathqa", "peft-docs",
                           "universal-llm-trainer", "fsdp_qlora", "axolotl"}


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
    again = remapped(row, model="Qwen/Qwen2.5-7B-Instruct", lora_target=["q_proj", "v_proj"])
    assert again["mapping"] == "mapped", again["unmapped_reason"]
    spec = json.loads(again["spec"])
    assert (spec["model"], spec["method"], spec["batch_size"]) == ("Qwen/Qwen2.5-7B", "lora", 1)


@pytest.mark.parametrize("reason", [
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


def test_an_fsdp_row_maps_to_its_sharding():
    """fms-acceleration's FSDP rows (accelerate.yaml: FULL_SHARD, no offload) map to FSDP1 on
    their GPUs; fsdp_qlora's CPU-offload rows to FSDP's offload of everything."""
    row = next(r for r in ROWS if r["source"] == "fms-acceleration" and r["mapping"] == "mapped"
               and r["distributed"] == "fsdp")
    spec = json.loads(remapped(row)["spec"])
    assert (spec["distributed"], spec["fsdp_sharding"], spec["fsdp_version"], spec["offload"]) == (
        "fsdp", "FULL_SHARD", 1, "none") and spec["num_gpus"] == int(row["gpu_count"])
    offloaded = next(r for r in ROWS if r["source"] == "fsdp_qlora" and r["mapping"] == "mapped"
                     and "params:cpu" in r["run"])
    assert json.loads(remapped(offloaded)["spec"])["offload"] == "optimizer+params"


def test_a_deepspeed_row_takes_deepspeeds_defaults_for_what_it_leaves_out():
    row = next(r for r in ROWS if r["source"] == "peft-docs" and r["mapping"] == "mapped"
               and r["distributed"] == "deepspeed")
    again = remapped(row)
    spec = json.loads(again["spec"])
    assert spec["zero_stage"] == 3 and spec["zero_overlap_comm"] is True
    assert spec["zero_reduce_bucket_size"] == 500_000_000
    assert "DeepSpeed 0.18.9's defaults" in again["assumptions"]


def test_a_field_added_to_the_spec_is_filled_with_no_other_change(monkeypatch):
    """Once the Spec has a `stage` field, the run's training stage is passed to build_spec with no
    other change (here build_spec is a stand-in that records its fields)."""
    row = next(r for r in ROWS if r["source"] == "fms-acceleration" and r["mapping"] == "mapped")
    captured = {}

    def fake_build_spec(**fields):
        captured.update(fields)
        raise mapping.SpecError("recorded")

    monkeypatch.setattr(mapping, "spec_fields", lambda: set(mapping.Spec.model_fields) | {"stage"})
    monkeypatch.setattr(mapping, "build_spec", fake_build_spec)
    again = remapped(row)
    assert again["unmapped_reason"] == "the Spec rejects the run: recorded"
    assert captured["stage"] == "sft" and captured["num_gpus"] == int(row["gpu_count"] or 1)
