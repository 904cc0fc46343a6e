"""`simulate` on request: a real fake-tensor step in a child process, one at a time, with a
size limit and a timeout (a tiny model: about 10 s here, most of it importing torch)."""

from __future__ import annotations

import time

from fastapi.testclient import TestClient

from vram_ml.web.app import WebSettings, create_app

TINY = {"model": "HuggingFaceTB/SmolLM2-135M", "model_overrides": {"num_hidden_layers": 2},
        "batch_size": 1, "seq_len": 64}


def _wait(client: TestClient, job: dict, limit_s: float = 120) -> dict:
    deadline = time.monotonic() + limit_s
    seen = {job["progress"]}
    while job["state"] == "running":
        assert time.monotonic() < deadline, job
        time.sleep(0.3)
        job = client.get(f"/api/simulate/{job['job_id']}").json()
        seen.add(job["progress"])
    job["seen_progress"] = seen
    return job


def test_a_simulation_runs_as_a_job_with_progress_and_answers_the_cli_json():
    with TestClient(create_app(), base_url="http://127.0.0.1") as client:
        started = client.post("/api/simulate", json={"spec": TINY})
        assert started.status_code == 202 and started.json()["state"] == "running"
        other = client.post("/api/simulate", json={"spec": {**TINY, "batch_size": 2}})
        assert other.status_code == 429 and "another simulation" in other.json()["error"]
        job = _wait(client, started.json())
        assert job["state"] == "done", job
        assert len(job["seen_progress"]) >= 2  # the page shows these lines as they come
        result = job["result"]
        assert result["estimator"] == "simulate" and result["spec_id"] == job["spec_id"]
        assert result["peak_vram_bytes"] > result["peak_tensor_bytes"] > 0
        assert set(result) >= {"spec", "assumed", "breakdown", "simulated_steps", "seconds"}
        again = client.post("/api/simulate", json={"spec": TINY})
        assert again.status_code == 200 and again.json()["job_id"] == job["job_id"]  # kept


def test_a_simulation_past_its_timeout_is_stopped():
    settings = WebSettings(simulate_timeout_s=0.5)
    with TestClient(create_app(settings), base_url="http://127.0.0.1") as client:
        job = _wait(client, client.post("/api/simulate", json={"spec": TINY}).json(), 30)
        assert job["state"] == "error" and "timed out after 0.5 s" in job["error"]
        # the slot is free again
        assert client.post("/api/simulate", json={"spec": {**TINY, "seq_len": 32}}
                           ).status_code == 202


def test_models_over_the_size_limit_are_not_simulated():
    with TestClient(create_app(), base_url="http://127.0.0.1") as client:
        answer = client.post("/api/simulate", json={"spec": {"model": "meta-llama/Llama-3.1-405B"}})
        assert answer.status_code == 400 and "up to 80B parameters" in answer.json()["error"]
