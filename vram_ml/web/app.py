"""The web calculator: one FastAPI app serving the page (static HTML + JS, no build step), the
JSON API (routes.py) and its OpenAPI docs (/docs, with Swagger UI's files served locally).

Safe by default: `vram-ml serve` binds 127.0.0.1; only Host headers naming this machine are
answered (a page elsewhere cannot reach it through DNS rebinding); request bodies are bounded;
YAML goes through safe_load; no path a request names is read; every error is JSON with one line.
"""

from __future__ import annotations

import json
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.trustedhost import TrustedHostMiddleware

import vram_ml
from vram_ml.web.routes import BadInput, router
from vram_ml.web.simulation_jobs import Simulations
from vram_ml.web.spec_reading import PastedConfigs

STATIC = resources.files("vram_ml.web") / "static"
SECURITY_HEADERS = {
    "content-security-policy": "default-src 'self'; img-src 'self' data:; "
    "style-src 'self' 'unsafe-inline'; object-src 'none'; frame-ancestors 'none'",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
}


@dataclass
class WebSettings:
    max_body_bytes: int = 256 * 1024  # a YAML plus a config.json are a few KB
    simulate_timeout_s: float = 300.0
    simulate_max_params: float = 80e9  # fake tensors: time grows with layers, not bytes
    allowed_hosts: list[str] = field(
        default_factory=lambda: ["127.0.0.1", "localhost", "[::1]", "::1"]
    )


def create_app(settings: WebSettings | None = None) -> FastAPI:
    """The app; `vram-ml serve` runs it under uvicorn, the tests drive it in-process."""
    settings = settings or WebSettings()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        app.state.simulations.close()
        app.state.pasted_configs.close()

    app = FastAPI(
        title="vram-ml",
        version=vram_ml.__version__,
        summary="Peak GPU memory of a LoRA / QLoRA / full fine-tuning run, before you start it.",
        docs_url=None,
        redoc_url=None,
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.pasted_configs = PastedConfigs()
    app.state.simulations = Simulations(settings.simulate_timeout_s, settings.simulate_max_params)
    app.include_router(router)
    _add_errors(app)
    _add_pages(app)
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(TrustedHostMiddleware, allowed_hosts=settings.allowed_hosts)

    @app.middleware("http")
    async def security_headers(request: Request, call_next):
        response = await call_next(request)
        response.headers.update(SECURITY_HEADERS)
        return response

    return app


def _add_pages(app: FastAPI) -> None:
    app.mount("/static", StaticFiles(directory=str(STATIC)), name="static")
    try:
        from swagger_ui_bundle import swagger_ui_path

        app.mount("/swagger-ui", StaticFiles(directory=str(swagger_ui_path)), name="swagger-ui")
    except ImportError:  # the page works without it; /docs says how to get it
        pass

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(str(STATIC / "index.html"))

    @app.get("/docs", include_in_schema=False)
    def docs() -> FileResponse:
        return FileResponse(str(STATIC / "docs.html"))


def _error(status_code: int, message: str) -> JSONResponse:
    lines = str(message).strip().splitlines()
    return JSONResponse({"error": lines[0] if lines else "failed"}, status_code=status_code)


def _add_errors(app: FastAPI) -> None:
    @app.exception_handler(BadInput)
    async def bad_input(request: Request, error: BadInput) -> JSONResponse:
        return _error(error.status_code, str(error))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
        return _error(error.status_code, str(error.detail))

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, error: RequestValidationError) -> JSONResponse:
        return _error(422, request_error_line(error.errors()))


def request_error_line(errors: Any) -> str:
    """FastAPI's validation errors as one line: `where: what` for the first."""
    first = list(errors)[0] if errors else {}
    if first.get("type") == "json_invalid":
        return "request: the body is not valid JSON"
    location = ".".join(str(part) for part in first.get("loc", ()) if part != "body")
    message = str(first.get("msg", "invalid request")).removeprefix("Value error, ")
    return f"{location}: {message}" if location else message


class BodyLimit:
    """ASGI middleware: refuse bodies over `max_bytes` (declared or streamed) with 413."""

    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            await _too_large(send, self.max_bytes)
            return
        received = 0

        async def bounded_receive() -> dict:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.max_bytes:
                raise HTTPException(413, _too_large_line(self.max_bytes))
            return message

        await self.app(scope, bounded_receive, send)


def _too_large_line(max_bytes: int) -> str:
    return f"request: body over {max_bytes // 1024} KiB (a YAML and a config.json are a few KB)"


async def _too_large(send: Any, max_bytes: int) -> None:
    body = json.dumps({"error": _too_large_line(max_bytes)}).encode()
    await send({"type": "http.response.start", "status": 413,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
