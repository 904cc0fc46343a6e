"""The JSON API. Each route reads the request's spec the way the CLI reads its flags or YAML,
calls the library function the CLI calls, and answers with the CLI's `--json`:

    POST /api/predict    = vram-ml predict --json
    POST /api/fit        = vram-ml fit --json
    POST /api/estimate   = vram-ml estimate --json (simulate excluded: it is a job)
    POST /api/simulate   starts `vram-ml simulate --json` as a job; GET /api/simulate/{id} polls it
    GET  /api/catalog    = vram-ml catalog --json
    GET  /api/form       the page's form, described from the Spec

Bad input answers 400 with {"error": "<the CLI's one-line message>"}. The routes are plain
functions (not coroutines): FastAPI runs them in its thread pool, off the event loop.
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from vram_ml.cards import find_card
from vram_ml.spec_input import SpecInput
from vram_ml.web.simulation_jobs import SimulationBusy
from vram_ml.web.spec_reading import read_spec_input

MAX_TEXT_CHARS = 100_000  # a YAML or config.json; the request body is bounded as well
MAX_CARDS = 32

router = APIRouter(prefix="/api")


class BadInput(Exception):
    """A request the library refused; the message is the CLI's one line."""

    def __init__(self, message: str, status_code: int = 400) -> None:
        super().__init__(message)
        self.status_code = status_code


class SpecRequest(BaseModel):
    """Which run: Spec fields (the CLI's flags), a LLaMA-Factory YAML, or both (fields win)."""

    model_config = ConfigDict(extra="forbid")

    spec: dict[str, Any] = Field(
        default_factory=dict,
        description="Spec fields, as `vram-ml predict` flags take them: model (a catalog id), "
        "method, quant_bits, lora_rank, lora_target, batch_size, seq_len, precision, ... "
        "(GET /api/form lists them with their defaults)",
        examples=[{"model": "Qwen/Qwen2.5-7B", "method": "qlora", "quant_bits": 4,
                   "batch_size": 2, "seq_len": 1024, "precision": "bf16"}],
    )
    yaml: str | None = Field(None, max_length=MAX_TEXT_CHARS,
                             description="A LLaMA-Factory training YAML, as text")
    config_json: str | None = Field(
        None, max_length=MAX_TEXT_CHARS,
        description="A model's config.json, as text (for a model not in the catalog)",
    )


class PredictRequest(SpecRequest):
    gpu_memory_gib: list[float] | None = Field(
        None, max_length=MAX_CARDS, description="Card sizes in GiB (default 24, 40, 48, 80)")
    cards: list[str] | None = Field(
        None, max_length=MAX_CARDS,
        description="Named cards (GET /api/form lists them); their nvidia-smi totals are judged")


class FitRequest(SpecRequest):
    gpu_memory_gib: float | None = Field(None, description="Card memory in GiB (default 24)")
    card: str | None = Field(None, description="A named card instead of gpu_memory_gib")
    target_batch: int | None = Field(
        None, ge=1, le=1_000_000,
        description="Effective batch to keep: batch x accumulation x GPUs (default: the spec's)")


class EstimateRequest(SpecRequest):
    estimators: list[Literal["seed-formula", "analytical", "learned"]] = Field(
        default=["seed-formula", "analytical", "learned"], min_length=1, max_length=3)


def _spec_input(request: Request, body: SpecRequest) -> SpecInput:
    try:
        return read_spec_input(body.spec, body.yaml, body.config_json,
                               request.app.state.pasted_configs)
    except ValueError as error:  # SpecError, ModelSourceError: one line each
        raise BadInput(str(error)) from None


def _card_sizes(body: PredictRequest) -> list[float] | None:
    sizes = list(body.gpu_memory_gib or [])
    try:
        sizes += [find_card(key).memory_gib for key in body.cards or []]
    except ValueError as error:
        raise BadInput(str(error)) from None
    if any(not 0 < size <= 1e6 for size in sizes):
        raise BadInput("gpu_memory_gib: each card size must be above 0 and at most 1e6 GiB")
    return sizes or None


@router.post("/predict", summary="Peak VRAM of one run (vram-ml predict --json)")
def predict(body: PredictRequest, request: Request) -> dict[str, Any]:
    from vram_ml.model.answers.prediction import predict as predict_spec

    spec_input = _spec_input(request, body)
    try:
        prediction = predict_spec(spec_input.spec, _card_sizes(body))
    except ValueError as error:  # ArtifactError and the estimators' refusals
        raise BadInput(str(error)) from None
    return {**spec_input.to_dict(), **prediction.to_dict()}


@router.post("/fit", summary="What fits a card (vram-ml fit --json)")
def fit(body: FitRequest, request: Request) -> dict[str, Any]:
    from vram_ml.model.answers.card_fit import find_fit
    from vram_ml.model.learned.estimator import LearnedEstimator

    spec_input = _spec_input(request, body)
    try:
        size = 24.0 if body.gpu_memory_gib is None else body.gpu_memory_gib
        if body.card:
            size = find_card(body.card).memory_gib
        if not 0 < size <= 1e6:
            raise ValueError("gpu_memory_gib: must be above 0 and at most 1e6 GiB")
        report = find_fit(spec_input.spec, int(size * 1024**3), body.target_batch,
                          LearnedEstimator())
    except ValueError as error:
        raise BadInput(str(error)) from None
    return {**spec_input.to_dict(), **report.to_dict()}


@router.post("/estimate", summary="Estimators side by side (vram-ml estimate --json)")
def estimate(body: EstimateRequest, request: Request) -> dict[str, Any]:
    from vram_ml.model.answers.comparison import estimate_all

    spec_input = _spec_input(request, body)
    try:
        results = estimate_all(spec_input.spec, list(body.estimators))
    except (KeyError, ValueError) as error:
        raise BadInput(str(error).strip("'\"")) from None
    return {**spec_input.to_dict(), "estimates": [result.to_dict() for result in results]}


@router.post("/simulate", status_code=202,
             summary="Start a fake-tensor simulation (vram-ml simulate --json) as a job")
def start_simulation(body: SpecRequest, request: Request) -> JSONResponse:
    spec_input = _spec_input(request, body)
    try:
        job = request.app.state.simulations.start(spec_input)
    except SimulationBusy as busy:
        raise BadInput(str(busy), status_code=429) from None
    except ValueError as error:
        raise BadInput(str(error)) from None
    return JSONResponse(job.to_dict(), status_code=200 if job.state != "running" else 202)


@router.get("/simulate/{job_id}", summary="A simulation job: progress, then the answer")
def simulation(job_id: str, request: Request) -> dict[str, Any]:
    job = request.app.state.simulations.get(job_id)
    if job is None:
        raise HTTPException(404, f"simulate: no job {job_id!r} (jobs live as long as the server)")
    return job.to_dict()


@router.get("/catalog", summary="The catalog (vram-ml catalog --json)")
def catalog(family: str | None = None) -> list[dict[str, Any]]:
    from vram_ml.catalog_listing import catalog_rows

    rows = catalog_rows(family)
    if not rows:
        raise BadInput(f"family: no catalog model in family {family!r}")
    return rows


@router.get("/form", summary="The page's form: every Spec field, its default and bounds; cards")
def form() -> dict[str, Any]:
    from vram_ml.web.form import form_description

    return form_description()
