"""Mapping decisions: a run maps to a Spec only when the Spec describes it; otherwise one reason.

Rows are taken from the committed table, their mapping cleared and redone, per source: a mapped
row gives back its spec_id, an unmapped row its reason. Remote-code models map where
vram_ml/architectures/remote_code.py builds them and the catalog holds their real config; the
others keep their reason.
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
                           "fsdp_qlora", "axolotl", "chatglm3", "glm-4", "qwen", "qwen-vl"}


@pytest.mark.parametrize("source", ["minicpm-v", "cogvlm2", "minicpm"])
def test_remote_code_models_without_a_builder_are_unmapped_with_that_reason(source):
    assert all("remote-code-only model" in row["unmapped_reason"] or
               "not in the catalog" in row["unmapped_reason"]
               for row in ROWS if row["source"] == source)


# Rows that only the missing shape builders kept unmapped: the remote-code builders and real
# configs in the catalog map them; Qwen's and Qwen-VL's sources ran transformers 4.32 (the oldest
# the stack rules cover) with the plain HF Trainer (framework hf_trainer).
NOW_MAPPED = {("chatglm3", "THUDM/chatglm3-6b"): 1, ("glm-4", "THUDM/glm-4-9b-chat"): 4,
              ("qwen", "Qwen/Qwen-1_8B-Chat"): 6, ("qwen", "Qwen/Qwen-7B-Chat"): 9,
              ("qwen", "Qwen/Qwen-14B-Chat"): 10, ("qwen-vl", "Qwen/Qwen-VL-Chat"): 8}
QWEN_MODELS = {key for key in NOW_MAPPED if key[0] in ("qwen", "qwen-vl")}


def run_model(row: dict[str, str]) -> tuple[str, str]:
    return row["source"], json.loads(row["run"]).get("model")


def test_remote_code_models_with_a_builder_and_a_real_config_map():
    counts = {}
    for row in ROWS:
        if run_model(row) in NOW_MAPPED and row["mapping"] == "mapped":
            again = remapped(row)
            assert again["mapping"] == "mapped" and again["spec_id"] == row["spec_id"]
            counts[run_model(row)] = counts.get(run_model(row), 0) + 1
    assert counts == NOW_MAPPED


def test_qwen_rows_run_the_plain_trainer_on_the_versions_their_readme_pins():
    """transformers 4.32.0 from the nearest pinned README, peft from `pip install "peft<0.8.0"`
    where that README version says it, TRL not loaded (framework hf_trainer)."""
    rows = [row for row in ROWS if run_model(row) in QWEN_MODELS and row["mapping"] == "mapped"]
    specs = [json.loads(row["spec"]) for row in rows]
    assert {spec["framework"] for spec in specs} == {"hf_trainer"}
    assert {spec["transformers_version"] for spec in specs} == {"4.32.0"}
    stated = {spec["peft_version"] for row, spec in zip(rows, specs, strict=True)
              if row["peft_version"] == "<0.8.0"}
    assert stated == {"0.7.1"}
    for row, spec in zip(rows, specs, strict=True):
        if not row["peft_version"]:  # the Spec's default, and the row says so
            assert any(note.startswith(f'peft_version="{spec["peft_version"]}": not stated')
                       for note in json.loads(row["assumptions"]))


def qwen_spec(source: str) -> dict:
    row = next(r for r in ROWS if r["source"] == source and r["mapping"] == "mapped")
    return json.loads(row["spec"]) | {"assumptions": json.loads(row["assumptions"])}


def test_remote_code_models_missing_from_the_catalog_say_so():
    """Qwen-72B-Chat and GLM-4V have no (usable) real config here: they stay unmapped for that,
    besides any other reason."""
    reasons = {row["unmapped_reason"].split("; ")[0] for row in ROWS if json.loads(
        row["run"]).get("model") in ("Qwen/Qwen-72B-Chat", "THUDM/glm-4v-9b")}
    assert reasons and all("remote-code-only model" in reason for reason in reasons)
    assert any("no closed-form shape builder" in reason for reason in reasons)  # GLM-4V
    assert any("not in the catalog" in reason for reason in reasons)


def test_base_models_map_through_an_evidenced_alias_and_train_modules_to_save_copies():
    """Qwen's base models share their chat model's config (an alias with its evidence); LoRA on
    them trains copies of wte and lm_head (finetune.py's modules_to_save): additional_target.
    MiniCPM-V unfreezes embed_tokens in place, which no Spec field describes."""
    from vram_ml.model_source import load_catalog

    for base, chat in (("Qwen/Qwen-VL", "Qwen/Qwen-VL-Chat"),
                       ("Qwen/Qwen-14B", "Qwen/Qwen-14B-Chat")):
        assert load_catalog()[chat].config and base in load_catalog()[chat].aliases
        rows = [row for row in ROWS if json.loads(row["run"]).get("model") == base
                and json.loads(row["run"]).get("method") == "lora" and row["per_gpu"] == "true"]
        mapped = [json.loads(row["spec"]) for row in rows if row["mapping"] == "mapped"]
        assert mapped and {spec["model"] for spec in mapped} == {chat}
        assert all(spec["additional_target"] == ["lm_head", "wte"] for spec in mapped)
    minicpm = [row for row in ROWS if row["source"] == "minicpm-v"
               and json.loads(row["run"]).get("trainable_embeddings")
               and json.loads(row["run"]).get("method") == "lora"]
    assert minicpm and all("embeddings trained in place" in row["unmapped_reason"]
                           for row in minicpm)


def test_qwen_lora_targets_reach_both_c_proj_modules_and_qwen_vl_only_the_attention_one():
    """peft matches target names as suffixes: Qwen's `c_proj` is attn.c_proj and mlp.c_proj,
    Qwen-VL's `attn.c_proj` the attention's only (finetune.py of each repository)."""
    qwen = qwen_spec("qwen")
    assert qwen["lora_target"] == ["attn.c_proj", "c_attn", "mlp.c_proj", "w1", "w2"]
    assert any("c_proj -> attn.c_proj, mlp.c_proj" in note for note in qwen["assumptions"])
    vl = qwen_spec("qwen-vl")
    assert vl["lora_target"] == ["attn.c_proj", "c_attn", "w1", "w2"]
    assert (vl["images_per_sample"], vl["image_resolution"]) == (1, 448)
    assert vl["lora_dropout"] == 0.05  # finetune.py LoraArguments default


def test_a_qwen_row_maps_to_another_catalog_model_through_the_readme_reader():
    row = first("qwen", "mapped")
    assert "4.32" in row["transformers_version"]  # Qwen's README pins transformers 4.32 (2023)
    again = remapped(dict(row, transformers_version="4.45.2"), model="Qwen/Qwen2.5-7B-Instruct",
                     lora_target=["q_proj", "v_proj"])
    assert again["mapping"] == "mapped", again["unmapped_reason"]
    spec = json.loads(again["spec"])
    assert (spec["model"], spec["method"], spec["batch_size"]) == ("Qwen/Qwen2.5-7B", "lora", 1)
    assert spec["transformers_version"] == "4.45.2"


@pytest.mark.parametrize("reason", [
    "GPTQ 4-bit base through the AutoGPTQ plugin: not in the Spec",
    "fms fused-ops-and-kernels plugin",
])
def test_fms_rows_the_spec_cannot_describe(reason):
    assert remapped(first("fms-acceleration", "unmapped", reason))["mapping"] == "unmapped"


def test_fms_pure_fp16_full_rows_are_no_amp_under_the_hf_trainer():
    """torch_dtype float16 without an AMP flag trains the loaded fp16 weights as they are: what
    the Spec's no_amp means outside LLaMA-Factory (fp16 and bf16 are both 2 bytes)."""
    rows = [r for r in ROWS if r["source"] == "fms-acceleration" and r["mapping"] == "mapped"
            and '"torch_dtype": "float16"' in r["run"]
            and json.loads(r["spec"])["method"] == "full"]
    assert rows
    for row in rows:
        spec = json.loads(row["spec"])
        assert (spec["precision"], spec["framework"]) == ("no_amp", "trl")
        assert any(note.startswith('precision="no_amp": torch_dtype float16 with no AMP flag')
                   for note in json.loads(row["assumptions"]))


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
    row = next(r for r in ROWS if r["source"] == "glm-4" and r["mapping"] == "mapped"
               and "deepspeed" in r["distributed"])
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


def test_a_deepspeed_run_whose_stage_is_not_stated_is_not_mapped_as_plain_ddp():
    row = next(r for r in ROWS if r["source"] == "chatglm3" and r["outcome"] == "fit")
    again = remapped(row)
    assert again["mapping"] == "unmapped"
    assert again["unmapped_reason"] == "DeepSpeed run whose ZeRO stage the source does not state"
