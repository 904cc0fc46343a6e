"""The JSON API in-process: every endpoint, the same JSON as the CLI's --json, every error path
a one-line 4xx JSON, and the safety properties (no path read, bounded bodies, local hosts)."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from vram_ml.cards import CARDS
from vram_ml.cli import app as cli
from vram_ml.web.app import WebSettings, create_app

QWEN = {"model": "Qwen/Qwen2.5-7B", "method": "qlora", "quant_bits": 4, "batch_size": 2,
        "seq_len": 1024, "precision": "bf16"}
QWEN_FLAGS = ["--model", "Qwen/Qwen2.5-7B", "--method", "qlora", "--quant-bits", "4",
              "--batch-size", "2", "--seq-len", "1024", "--precision", "bf16"]


def _cli_json(*args: str) -> dict:
    result = CliRunner().invoke(cli, [*args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def _without_source(payload: dict) -> dict:
    return {key: value for key, value in payload.items() if key != "source"}


def test_predict_answers_the_cli_json(client):
    answer = client.post("/api/predict", json={"spec": QWEN, "gpu_memory_gib": [24, 80]})
    assert answer.status_code == 200
    expected = _cli_json("predict", *QWEN_FLAGS, "--gpu-memory", "24", "--gpu-memory", "80")
    assert _without_source(answer.json()) == _without_source(expected)
    assert (answer.json()["source"], expected["source"]) == ("form", "flags")


def test_predict_judges_named_cards_by_their_nvidia_smi_total(client):
    keys = [card.key for card in CARDS]
    cards = client.post("/api/predict", json={"spec": QWEN, "cards": keys}).json()["cards"]
    assert [card["gpu_memory_bytes"] for card in cards] == [
        int(card.memory_gib * 1024**3) for card in CARDS
    ]
    by_size = {card["gpu_memory_bytes"]: card["verdict"] for card in cards}
    assert by_size[143771 * 1024**2] == "fits"  # a 7B QLoRA run on an H200


def test_a_bigger_batch_needs_more_memory(client):
    small = client.post("/api/predict", json={"spec": {**QWEN, "batch_size": 1}}).json()
    big = client.post("/api/predict", json={"spec": {**QWEN, "batch_size": 8}}).json()
    assert big["peak_vram_bytes"] > small["peak_vram_bytes"]
    assert big["breakdown"]["activations"] > small["breakdown"]["activations"]


def test_fit_answers_the_cli_json(client):
    answer = client.post("/api/fit", json={"spec": QWEN, "gpu_memory_gib": 24, "target_batch": 64})
    assert answer.status_code == 200
    expected = _cli_json("fit", *QWEN_FLAGS, "--gpu-memory", "24", "--target-batch", "64")
    assert _without_source(answer.json()) == _without_source(expected)


def test_fit_on_a_named_card_suggests_changes_when_it_does_not_fit(client):
    body = {"spec": {"model": "meta-llama/Meta-Llama-3-8B", "method": "full", "batch_size": 8},
            "card": "rtx-4090"}
    report = client.post("/api/fit", json=body).json()
    assert report["gpu_memory_bytes"] == 24564 * 1024**2
    assert report["fits"] is False
    assert report["changes"] or report["combination"]


def test_estimate_answers_the_cli_json(client):
    body = {"spec": QWEN, "estimators": ["seed-formula", "analytical"]}
    answer = client.post("/api/estimate", json=body)
    expected = _cli_json("estimate", *QWEN_FLAGS, "--estimators", "seed-formula,analytical")
    assert _without_source(answer.json()) == _without_source(expected)


def test_catalog_answers_the_cli_json(client):
    assert client.get("/api/catalog").json() == _cli_json("catalog")
    qwen = client.get("/api/catalog", params={"family": "qwen2"}).json()
    assert qwen and {row["family"] for row in qwen} == {"qwen2"}


def test_form_lists_every_spec_field_with_its_default(client):
    from vram_ml.spec import Spec

    form = client.get("/api/form").json()
    names = [field["name"] for field in form["fields"]]
    assert names == list(Spec.model_fields)
    by_name = {field["name"]: field for field in form["fields"]}
    assert by_name["method"]["choices"] == ["full", "freeze", "lora", "qlora"]
    assert by_name["batch_size"] == {**by_name["batch_size"], "kind": "integer", "default": 8,
                                     "minimum": 1, "maximum": 4096, "label": "--batch-size"}
    assert by_name["quant_bits"]["choices"] == [None, 4, 8]
    assert by_name["gradient_checkpointing"]["kind"] == "boolean"
    assert [card["key"] for card in form["cards"]] == [card.key for card in CARDS]


def test_yaml_is_read_with_every_key_accounted_for(client, assets):
    text = (assets / "llamafactory_qwen_qlora.yaml").read_text()
    answer = client.post("/api/predict", json={"yaml": text}).json()
    expected = _cli_json("predict", "--config", str(assets / "llamafactory_qwen_qlora.yaml"),
                         "--allow-unknown")  # the page lists what the CLI refuses by default
    assert answer["spec_id"] == expected["spec_id"]
    for key in ("assumed", "ignored", "unmodelled", "unknown"):
        assert answer[key] == expected[key]
    assert "my_custom_key" in answer["unknown"] and "learning_rate" in answer["ignored"]
    assert answer["source"] == "posted YAML"


def test_fields_override_the_yaml(client, assets):
    text = (assets / "llamafactory_qwen_qlora.yaml").read_text()
    answer = client.post("/api/predict", json={"yaml": text, "spec": {"batch_size": 1}}).json()
    assert answer["spec"]["batch_size"] == 1


def test_a_pasted_config_json_is_read_as_content(client, assets):
    text = (assets / "tiny_llama_config.json").read_text()
    answer = client.post("/api/predict", json={"config_json": text, "spec": {"seq_len": 128}})
    assert answer.status_code == 200, answer.text
    expected = _cli_json("predict", "--model", str(assets / "tiny_llama_config.json"),
                         "--seq-len", "128")
    assert answer.json()["spec_id"] == expected["spec_id"]
    assert answer.json()["peak_vram_bytes"] == expected["peak_vram_bytes"]


@pytest.mark.parametrize(
    "body,status,fragment",
    [
        ({"spec": {"model": "nobody/nothing"}}, 400, "not in the catalog"),
        ({"spec": {**QWEN, "lora_rank": 0}}, 400, "lora_rank"),
        ({"spec": {**QWEN, "quant_bits": 3}}, 400, "quant_bits"),
        ({"spec": {**QWEN, "no_such_field": 1}}, 400, "no_such_field"),
        ({"spec": {**QWEN, "seq_len": 10**7}}, 400, "seq_len"),
        ({"spec": {**QWEN, "model_overrides": {"num_hidden_layers": -1}}}, 400, "model_overrides"),
        ({"spec": {"method": "lora"}}, 400, "model"),
        ({"yaml": "model_name_or_path: [unclosed"}, 400, "not valid YAML"),
        ({"yaml": "- a list"}, 400, "must be a mapping"),
        ({"yaml": "finetuning_type: lora"}, 400, "model_name_or_path is required"),
        ({"yaml": "model_name_or_path: Qwen/Qwen2.5-7B\nfinetuning_type: lora2"}, 400,
         "finetuning_type"),
        ({"config_json": "{not json"}, 400, "not valid JSON"),
        ({"config_json": '{"hidden_size": 8}'}, 400, "no model_type"),
        ({"config_json": '{"model_type": "nonesuch"}'}, 400, "model"),
        ({"spec": "a string"}, 422, "spec"),
        ({"spec": QWEN, "extra": 1}, 422, "extra"),
        ({"spec": QWEN, "cards": ["rtx-9999"]}, 400, "unknown card"),
        ({"spec": QWEN, "gpu_memory_gib": [-1]}, 400, "gpu_memory_gib"),
    ],
)
def test_bad_input_is_a_4xx_json_with_one_line(client, body, status, fragment):
    answer = client.post("/api/predict", json=body)
    assert answer.status_code == status, answer.text
    message = answer.json()["error"]
    assert fragment in message and "\n" not in message


def test_the_message_is_the_clis(client):
    answer = client.post("/api/predict", json={"spec": {**QWEN, "lora_rank": 0}}).json()
    result = CliRunner().invoke(cli, ["predict", *QWEN_FLAGS, "--lora-rank", "0"])
    assert result.exit_code == 2
    assert f"error: {answer['error']}" in result.output


@pytest.mark.parametrize("path", ["/api/fit", "/api/estimate", "/api/simulate"])
def test_every_spec_route_refuses_bad_input_alike(client, path):
    answer = client.post(path, json={"spec": {**QWEN, "batch_size": 0}})
    assert answer.status_code == 400
    assert answer.json()["error"].startswith("batch_size:")


def test_other_errors_are_json_too(client):
    assert client.post("/api/fit", json={"spec": QWEN, "card": "nope"}).status_code == 400
    assert client.post("/api/fit", json={"spec": QWEN, "gpu_memory_gib": 0}).status_code == 400
    assert client.get("/api/catalog", params={"family": "nope"}).status_code == 400
    assert client.post("/api/estimate", json={"spec": QWEN, "estimators": ["simulate"]}
                       ).status_code == 422
    assert client.get("/api/simulate/nope").status_code == 404
    missing = client.get("/no/such/page")
    assert missing.status_code == 404 and missing.json() == {"error": "Not Found"}
    broken = client.post("/api/predict", content=b"{", headers={"content-type": "application/json"})
    assert broken.status_code == 422 and "not valid JSON" in broken.json()["error"]


@pytest.mark.parametrize("model", ["/etc/passwd", "/etc/hostname.json", "../config.json",
                                   "/proc/self/environ", "owner/name"])
def test_no_path_or_hub_id_from_a_request_is_read(client, model):
    for body in ({"spec": {"model": model}}, {"yaml": f"model_name_or_path: {model}\n"}):
        answer = client.post("/api/predict", json=body)
        assert answer.status_code == 400
        assert "root:" not in answer.text and "not in the catalog" in answer.json()["error"]


def test_yaml_aliases_cannot_expand_without_bound(client):
    bomb = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, "
        f"*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}]\n"
        for i in range(8)
    ) + "model_name_or_path: Qwen/Qwen2.5-7B\nlora_target: *i\n"
    answer = client.post("/api/predict", json={"yaml": bomb})
    assert answer.status_code == 400 and "more than" in answer.json()["error"]


def test_bodies_over_the_limit_are_refused():
    settings = WebSettings(max_body_bytes=2048)
    with TestClient(create_app(settings), base_url="http://127.0.0.1") as small:
        big = {"yaml": "model_name_or_path: Qwen/Qwen2.5-7B\n" + "# pad\n" * 1000}
        answer = small.post("/api/predict", json=big)
        assert answer.status_code == 413 and "body over 2 KiB" in answer.json()["error"]

        def chunks():  # no content-length: the streamed size is counted
            yield b'{"yaml": "'
            for _ in range(100):
                yield b"#" * 100
            yield b'"}'

        streamed = small.post("/api/predict", content=chunks(),
                              headers={"content-type": "application/json"})
        assert streamed.status_code == 413


def test_only_local_host_headers_are_answered():
    with TestClient(create_app(), base_url="http://evil.example") as remote:
        assert remote.get("/api/form").status_code == 400
    with TestClient(create_app(), base_url="http://localhost:8000") as local:
        assert local.get("/api/form").status_code == 200


def test_pages_and_docs_are_served_with_a_strict_policy(client):
    page = client.get("/")
    assert page.status_code == 200 and "/static/app.js" in page.text
    assert "script-src" not in page.headers["content-security-policy"]  # default-src 'self'
    assert "default-src 'self'" in page.headers["content-security-policy"]
    for path in ("/static/app.js", "/static/style.css", "/docs", "/static/docs.js",
                 "/swagger-ui/swagger-ui-bundle.js", "/swagger-ui/swagger-ui.css"):
        assert client.get(path).status_code == 200, path
    spec = client.get("/openapi.json").json()
    assert {"/api/predict", "/api/fit", "/api/catalog", "/api/estimate", "/api/simulate",
            "/api/form"} <= set(spec["paths"])


def test_pasted_configs_stay_in_the_servers_own_folder(assets):
    app = create_app()
    with TestClient(app, base_url="http://127.0.0.1") as local:
        text = (assets / "tiny_llama_config.json").read_text()
        answer = local.post("/api/predict", json={"config_json": text,
                                                 "spec": {"seq_len": 128}}).json()
        folder = app.state.pasted_configs.directory
        assert answer["spec"]["model"].startswith(str(folder))
        assert len(list(folder.glob("*.json"))) == 1
    assert not folder.exists()  # removed when the server stops


def test_additional_target_is_a_form_field_the_cli_reads_the_same_way(client):
    spec = {"model": "Qwen/Qwen-7B", "additional_target": "wte,lm_head", "precision": "bf16",
            "batch_size": 1, "seq_len": 1024}
    answer = client.post("/api/predict", json={"spec": spec})
    expected = _cli_json("predict", "--model", "Qwen/Qwen-7B", "--additional-target",
                         "lm_head,wte", "--precision", "bf16", "--batch-size", "1",
                         "--seq-len", "1024")
    assert _without_source(answer.json()) == _without_source(expected)
    assert answer.json()["spec"]["additional_target"] == ["lm_head", "wte"]
    plain = client.post("/api/predict", json={"spec": {**spec, "additional_target": ""}})
    assert plain.json()["peak_vram_bytes"] < answer.json()["peak_vram_bytes"]
    wrong = client.post("/api/predict",
                        json={"spec": {**spec, "additional_target": "embed_tokens"}})
    assert wrong.status_code == 400
    assert wrong.json()["error"].startswith("additional_target: embed_tokens is not this model's")
    groups = client.get("/api/form").json()
    assert "additional_target" in json.dumps(groups)
