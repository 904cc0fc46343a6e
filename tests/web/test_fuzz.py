"""Fuzz the JSON API: whatever the body, the answer is JSON, never a 500, and an error is one
line. Near-valid bodies (real fields, real catalog models, wild values) reach deep into the
estimators; `-m slow` runs many more examples."""

from __future__ import annotations

import json
import math

import pytest
import yaml
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vram_ml.cards import CARDS
from vram_ml.model_source import load_catalog
from vram_ml.spec import Spec
from vram_ml.web.app import create_app
from vram_ml.web.form import form_description

FIELDS = list(Spec.model_fields)
MODELS = sorted(load_catalog())
LLAMAFACTORY_KEYS = ["model_name_or_path", "finetuning_type", "quantization_bit", "lora_rank",
                     "lora_target", "per_device_train_batch_size", "cutoff_len", "bf16", "fp16",
                     "flash_attn", "deepspeed", "image_max_pixels", "num_gpus", "optim",
                     "learning_rate", "unknown_key"]
CONFIG_KEYS = ["hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
               "intermediate_size", "vocab_size", "max_position_embeddings", "head_dim"]

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.integers(0, 5000),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=20),
    st.sampled_from(["lora", "qlora", "full", "freeze", "bf16", "fp16", "pure_bf16", "sdpa",
                     "eager", "adamw_8bit", "all", "q_proj,v_proj", "nf4", *MODELS]),
)
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                      | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=8)
spec_fields = st.dictionaries(st.sampled_from(FIELDS) | st.text(max_size=10), values, max_size=8)


def _valid_values(field: dict) -> st.SearchStrategy:
    """Values the form would send for this Spec field (from its schema), in and near bounds."""
    kind = field["kind"]
    if kind == "choice":
        return st.sampled_from(field["choices"])
    if kind == "integer":
        low = field.get("minimum", 0)
        return st.integers(low - 1, field.get("maximum", low + 8192) + 1)
    if kind == "number":
        return st.floats(field.get("minimum", 0.0), field.get("exclusiveMaximum", 1.0))
    if kind == "boolean":
        return st.booleans()
    if kind == "list":
        return st.sampled_from(["all", "q_proj,v_proj", "q_proj", "gate_proj,up_proj,down_proj",
                                "query_key_value", ["q_proj", "k_proj"]])
    if kind == "mapping":
        return st.dictionaries(st.sampled_from(CONFIG_KEYS), st.integers(1, 64), max_size=3)
    return st.sampled_from(MODELS)


FORM = {field["name"]: field for field in form_description()["fields"]}
field_values = {name: st.one_of(_valid_values(field), _valid_values(field), scalars)
                for name, field in FORM.items() if name != "model"}
form_spec = st.builds(
    lambda model, rest: {"model": model, **rest},
    st.sampled_from(MODELS),
    st.fixed_dictionaries({}, optional=field_values),
)
yaml_text = st.one_of(
    st.text(max_size=200),
    st.dictionaries(st.sampled_from(LLAMAFACTORY_KEYS), scalars, max_size=8).map(
        lambda mapping: yaml.safe_dump(mapping)),
    st.builds(lambda model, rest: yaml.safe_dump({"model_name_or_path": model, **rest}),
              st.sampled_from(MODELS),
              st.dictionaries(st.sampled_from(LLAMAFACTORY_KEYS[1:]), scalars, max_size=6)),
)
config_text = st.one_of(
    st.text(max_size=100),
    st.builds(lambda numbers, kind: json.dumps({"model_type": kind, **numbers}),
              st.dictionaries(st.sampled_from(CONFIG_KEYS),
                              st.integers(-5, 2**40) | st.floats(allow_nan=True), max_size=8),
              st.sampled_from(["llama", "qwen2", "gemma2", "gpt_neox", "llava", "nonesuch"])),
)
CARD_KEYS = [card.key for card in CARDS]
near_valid = {
    "/api/predict": {"cards": st.lists(st.sampled_from(CARD_KEYS), max_size=4),
                     "gpu_memory_gib": st.lists(st.floats(0.5, 200), max_size=3)},
    "/api/fit": {"card": st.sampled_from(CARD_KEYS), "gpu_memory_gib": st.floats(0.5, 200),
                 "target_batch": st.integers(1, 512)},
    "/api/estimate": {"estimators": st.lists(
        st.sampled_from(["seed-formula", "analytical", "learned"]), min_size=1, max_size=3)},
}
wild = st.fixed_dictionaries({}, optional={
    "spec": form_spec | spec_fields | values, "yaml": yaml_text, "config_json": config_text,
    "gpu_memory_gib": values, "cards": values, "card": values, "target_batch": values,
    "estimators": values,
})


@st.composite
def requests(draw) -> tuple[str, dict]:
    """(route, body): mostly what the page sends with wild values inside, sometimes anything."""
    route = draw(st.sampled_from(list(near_valid)))
    if draw(st.integers(0, 4)) == 0:
        return route, draw(wild)
    source = draw(st.sampled_from(["form", "form", "yaml", "config"]))
    body = {"form": lambda: {"spec": draw(form_spec)},
            "yaml": lambda: {"yaml": draw(yaml_text)},
            "config": lambda: {"config_json": draw(config_text),
                               "spec": {"seq_len": draw(st.integers(1, 4096))}}}[source]()
    body.update(draw(st.fixed_dictionaries({}, optional=near_valid[route])))
    return route, body




@pytest.fixture(scope="module")
def fuzz_client():
    with TestClient(create_app(), base_url="http://127.0.0.1") as test_client:
        yield test_client


def _check(client: TestClient, route: str, body: object) -> None:
    answer = client.post(route, json=body)
    assert answer.status_code < 500, (route, body, answer.text)
    payload = answer.json()
    if answer.status_code >= 400:
        assert isinstance(payload["error"], str) and "\n" not in payload["error"], payload


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow,
          HealthCheck.function_scoped_fixture])
@given(request=requests())
def test_any_body_gets_json_and_never_a_500(fuzz_client, request):
    _check(fuzz_client, request[0], _jsonable(request[1]))


@pytest.mark.slow
@settings(max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.too_slow,
          HealthCheck.function_scoped_fixture])
@given(request=requests())
def test_any_body_gets_json_and_never_a_500_at_scale(fuzz_client, request):
    _check(fuzz_client, request[0], _jsonable(request[1]))


def _jsonable(value: object) -> object:
    """NaN and infinities are not JSON; send them as the strings a client would."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {str(key): _jsonable(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_jsonable(item) for item in value]
    return value
