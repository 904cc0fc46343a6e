"""The planner: the space is valid, plans cover, skip what is stored, respect the GPU's size."""

from __future__ import annotations

from collections import Counter

import pytest

from vram_ml.agent.planner import (
    PlanError,
    draw_candidates,
    features,
    load_space,
    make_plan,
    make_spec,
    read_plan_file,
    rough_peak_bytes,
)
from vram_ml.spec import SpecError, build_spec

GIB = 2**30


def test_every_model_variant_of_the_space_resolves():
    for backend in ("cuda", "cpu"):
        space = load_space(backend=backend)
        for entry in space["models"]:
            for variant in entry.get("variants", [{}]):
                try:
                    spec = build_spec(model=entry["model"], model_overrides=variant)
                except SpecError as error:
                    pytest.fail(f"{entry['model']} {variant}: {error}")
                for dotted, value in variant.items():  # the override reached the config
                    config = spec.resolved_model.config
                    for key in dotted.split("."):
                        config = config[key]
                    assert config == value, (entry["model"], dotted)


def test_the_space_covers_every_family_the_recipe_builds():
    """A lent GPU measures every catalog family the recipe can build (remote-code models and
    the vision-language families outside the recipe are the ones it cannot)."""
    from vram_ml.architectures import REMOTE_CODE_MODEL_TYPES
    from vram_ml.model.recipe_support import recipe_refusal
    from vram_ml.model_source import load_catalog

    catalog = load_catalog()
    covered = {catalog[entry["model"]].family for entry in load_space()["models"]}
    buildable = {entry.family for hf_id, entry in catalog.items()
                 if entry.config["model_type"] not in REMOTE_CODE_MODEL_TYPES
                 and not recipe_refusal(build_spec(model=hf_id, seq_len=256))}
    assert buildable - covered == set()
    assert len(covered) >= 30


def test_every_knob_is_a_spec_field_with_valid_values():
    space = load_space()
    base = {"model": "Qwen/Qwen2.5-0.5B", "method": "lora"}
    for name, values in space["knobs"].items():
        for value in set(map(str, values)):
            raw = next(v for v in values if str(v) == value)
            fields = {**base, name: raw}
            if name in ("quant_bits", "quant_type", "double_quant") or raw == "qlora":
                fields.update(method="qlora", quant_bits=fields.get("quant_bits", 4))
            if name in ("images_per_sample", "image_resolution", "freeze_vision_tower",
                        "freeze_multi_modal_projector"):
                fields["model"] = "Qwen/Qwen2-VL-2B-Instruct"
            if (name, raw) in (("lora_target", "attention"), ("additional_target", "none"),
                               ("additional_target", "embeddings")):
                continue  # planner aliases, resolved per model (test below)
            if name == "pref_loss":
                fields["stage"] = "dpo"
            if name in ("reward_model_type", "max_new_tokens") or raw == "ppo":
                fields.update(stage="ppo", precision="bf16")
            spec = build_spec(**fields)
            expected = (raw,) if name == "lora_target" else raw
            assert getattr(spec, name) == expected, (name, raw)


def test_additional_target_knob_names_each_models_own_modules():
    """`embeddings`: the model's input embeddings and output head (Qwen's wte, GPT-NeoX 5.x's
    embed_in / lm_head); dropped outside LoRA; LLaMA-Factory no_amp (which the recipe refuses)
    is never planned."""
    drawn = {"method": "lora", "additional_target": "embeddings", "precision": "bf16"}
    assert make_spec("EleutherAI/pythia-1b", {}, drawn).additional_target == ("embed_in",
                                                                               "lm_head")
    assert make_spec("Qwen/Qwen2.5-0.5B", {}, {**drawn, "additional_target": "none"}
                     ).additional_target == ()
    assert make_spec("Qwen/Qwen2.5-0.5B", {}, {**drawn, "method": "full"}).additional_target == ()
    assert make_spec("Qwen/Qwen2.5-0.5B", {}, {**drawn, "precision": "no_amp"}) is None
    spec = make_spec("Qwen/Qwen2.5-0.5B", {}, drawn)
    assert "additional_target=embeddings" in features(spec)


def test_knobs_that_do_not_apply_are_reset():
    spec = make_spec("Qwen/Qwen2.5-0.5B", {}, {"method": "full", "lora_rank": 64,
                                              "quant_bits": 4, "images_per_sample": 2})
    assert spec.lora_rank == 8 and spec.quant_bits is None and spec.images_per_sample == 0
    same = make_spec("Qwen/Qwen2.5-0.5B", {}, {"method": "full", "lora_rank": 256})
    assert same.spec_id == spec.spec_id
    attention = make_spec("EleutherAI/pythia-1b", {}, {"method": "lora",
                                                      "lora_target": "attention"})
    assert attention.lora_target == ("query_key_value",)


def test_stage_knobs_that_do_not_apply_are_reset_and_refused_steps_skipped():
    dpo = make_spec("Qwen/Qwen2.5-0.5B", {}, {"method": "lora", "stage": "dpo",
                                             "pref_loss": "orpo", "max_new_tokens": 64,
                                             "reward_model_type": "full"})
    assert (dpo.pref_loss, dpo.max_new_tokens, dpo.reward_model_type) == ("orpo", 1024, "lora")
    sft = make_spec("Qwen/Qwen2.5-0.5B", {}, {"method": "lora", "pref_loss": "simpo"})
    assert sft.spec_id == make_spec("Qwen/Qwen2.5-0.5B", {}, {"method": "lora"}).spec_id
    ppo = make_spec("Qwen/Qwen2.5-0.5B", {}, {"method": "lora", "stage": "ppo",
                                             "precision": "bf16", "max_new_tokens": 64})
    assert ppo.max_new_tokens == 64
    assert make_spec("Qwen/Qwen2.5-0.5B", {}, {"method": "qlora", "quant_bits": 4, "stage": "ppo",
                                              "precision": "bf16"}) is None  # the recipe refuses


def test_plans_cover_the_training_stages():
    space = load_space()
    plan = make_plan(space, measured=[], done_ids=set(), device_total_bytes=80 * GIB, limit=60)
    stages = Counter(p.spec.stage for p in plan.planned)
    assert set(stages) == {"sft", "pt", "dpo", "kto", "rm", "ppo"}
    cpu = draw_candidates(load_space(backend="cpu"))
    assert {"dpo", "kto", "rm", "ppo"} <= {spec.stage for spec in cpu}


def test_images_that_overflow_seq_len_are_not_planned():
    assert make_spec("Qwen/Qwen2-VL-2B-Instruct", {}, {
        "method": "lora", "images_per_sample": 4, "image_resolution": 1024, "seq_len": 512,
    }) is None


def test_coverage_order_spreads_over_families_and_methods():
    space = load_space()
    plan = make_plan(space, measured=[], done_ids=set(), device_total_bytes=80 * GIB, limit=60)
    assert len(plan.planned) == 60
    families = Counter(p.spec.resolved_model.family for p in plan.planned)
    methods = Counter(p.spec.method for p in plan.planned)
    assert len(families) >= 10 and set(methods) == {"lora", "qlora", "full", "freeze"}
    assert len({p.spec.spec_id for p in plan.planned}) == 60


def test_plan_skips_done_and_predicted_oom_but_probes_the_edge():
    space = {**load_space(), "candidates": 1500}  # the same rules on fewer draws
    everything = make_plan(space, [], set(), 80 * GIB)
    first = everything.planned[0].spec
    again = make_plan(space, [first], {first.spec_id}, 80 * GIB)
    assert first.spec_id not in {p.spec.spec_id for p in again.planned}
    assert again.skipped["already measured"] == 1
    assert everything.skipped["predicted OOM"] > 0
    edge = [p for p in everything.planned if p.reason == "edge"]
    assert edge and all(0.85 * 80 * GIB <= p.estimate_bytes <= 1.15 * 80 * GIB for p in edge)
    share = len(edge) / len(everything.planned)
    assert share < 0.2
    assert all(p.estimate_bytes <= 1.15 * 80 * GIB for p in everything.planned)
    assert all(p.estimate_bytes <= 0.5 * 80 * GIB for p in everything.planned
               if p.spec.optimizer.startswith("paged"))


def test_rough_estimate_orders_obvious_cases():
    small = build_spec(model="Qwen/Qwen2.5-0.5B", method="lora", batch_size=1, seq_len=512)
    full_70b = build_spec(model="meta-llama/Llama-3.1-70B", method="full", batch_size=1,
                          seq_len=512)
    qlora_70b = build_spec(model="meta-llama/Llama-3.1-70B", method="qlora", quant_bits=4,
                           batch_size=1, seq_len=512)
    assert rough_peak_bytes(small) < 8 * GIB
    assert rough_peak_bytes(full_70b) > 500 * GIB
    assert 35 * GIB < rough_peak_bytes(qlora_70b) < 80 * GIB


def test_active_strategy_falls_back_to_coverage_without_a_learned_model(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "vram_ml.model.learned.estimator", None)  # import fails
    plan = make_plan(load_space(backend="cpu"), [], set(), None, strategy="active", limit=5)
    assert len(plan.planned) == 5 and all(p.reason == "coverage" for p in plan.planned)
    assert any("learned model unavailable" in note for note in plan.notes)


def test_active_strategy_prefers_uncertain_specs(monkeypatch):
    import types

    import numpy as np

    class Uncertain:  # a learned model unsure about full fine-tuning only
        def predict_batch(self, specs, targets):
            peak = np.full(len(specs), 1e9)
            upper = np.array([3e9 if s.method == "full" else 1.01e9 for s in specs])
            return types.SimpleNamespace(estimator="learned", peak_vram_bytes=peak,
                                         upper_vram_bytes=upper)

    monkeypatch.setattr("vram_ml.model.learned.estimator.LearnedEstimator", Uncertain)
    space = load_space(backend="cpu")
    active = make_plan(space, [], set(), None, strategy="active", limit=10)
    coverage = make_plan(space, [], set(), None, strategy="coverage", limit=10)
    full = [sum(p.spec.method == "full" for p in plan.planned) for plan in (active, coverage)]
    assert full[0] > full[1] and all(p.reason == "active" for p in active.planned)


def test_cpu_space_is_tiny():
    for spec in draw_candidates(load_space(backend="cpu"), 100):
        assert spec.resolved_model.shape.total_params < 1_000_000
        assert spec.method != "qlora"


def test_features_name_every_dimension():
    spec = build_spec(model="Qwen/Qwen2.5-0.5B")
    names = {f.split("=")[0] for f in features(spec)}
    assert {"family", "size", "method", "precision", "optimizer", "seq_len"} <= names


def test_plan_files_yaml_and_jsonl(write_plan, tiny_specs, tmp_path):
    from_yaml = read_plan_file(write_plan(tiny_specs + tiny_specs[:1]))
    from_jsonl = read_plan_file(write_plan(tiny_specs, "plan.jsonl"))
    assert [s.spec_id for s in from_yaml] == [s.spec_id for s in from_jsonl]  # duplicates dropped
    bad = write_plan([{**tiny_specs[0], "lora_rank": 0}], "bad.yaml")
    with pytest.raises(PlanError, match="entry 1: lora_rank"):
        read_plan_file(bad)
    with pytest.raises(PlanError, match="cannot read"):
        read_plan_file(tmp_path / "missing.yaml")


@pytest.mark.parametrize("text, fragment", [
    ("knobs: {method: [lora]}\n", "models: Field required"),
    ("models: [{variants: [{}]}]\nknobs: {method: [lora]}\n", "models.0.model: Field required"),
    ("models: [{model: Qwen/Qwen2.5-0.5B}]\nknobs: {lora_rnak: [8]}\n", "lora_rnak: not a Spec"),
    ("models: [{model: Qwen/Qwen2.5-0.5B}]\nknobs: {method: []}\n", "knobs.method: needs at"),
    ("models: [{model: Qwen/Qwen2.5-0.5B}]\nknobs: {method: [lora]}\nfit: {margin: abc}\n",
     "fit.margin"),
    ("models: [{model: Qwen/Qwen2.5-0.5B}]\nknobs: {method: [lora]}\ncpu: {knobs: {}}\n",
     "cpu.models: Field required"),
    ("- a list\n", "must be a mapping"),
])
def test_a_malformed_space_is_one_line_naming_where(tmp_path, text, fragment):
    path = tmp_path / "space.yaml"
    path.write_text(text)
    with pytest.raises(PlanError) as error:
        load_space(path, backend="cpu")
    assert fragment in str(error.value) and "\n" not in str(error.value)
