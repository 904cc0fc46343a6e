"""`vram-ml serve`: the web calculator and its JSON API on a local port.

fastapi and uvicorn load inside the command (the `web` extra), never at CLI start.
"""

from __future__ import annotations

from typing import Annotated

import typer

from vram_ml.cli.spec_options import fail

app = typer.Typer()


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Address to bind (127.0.0.1: this machine only).")] = (
        "127.0.0.1"
    ),
    port: Annotated[int, typer.Option(help="Port.", min=1, max=65535)] = 8000,
    allowed_host: Annotated[
        list[str] | None,
        typer.Option(help="Extra Host header to answer (repeatable), e.g. when binding 0.0.0.0."),
    ] = None,
    simulate_timeout: Annotated[
        float, typer.Option(help="Seconds a simulation may run.", min=1)
    ] = 300.0,
) -> None:
    """Serve the web calculator: one page (every input in its URL) and the JSON API
    (POST /api/predict, /api/fit, /api/estimate, /api/simulate; GET /api/catalog; docs at /docs).

    Example: vram-ml serve --port 8000
    """
    try:
        import uvicorn

        from vram_ml.web.app import WebSettings, create_app
    except ImportError as error:
        missing = error.name or "fastapi"
        raise fail(f"serve needs the web extra: pip install 'vram-ml[web]' ({missing})") from None
    settings = WebSettings(simulate_timeout_s=simulate_timeout)
    extra = [*(allowed_host or []), *([] if host in ("0.0.0.0", "::") else [host])]
    settings.allowed_hosts = sorted({*settings.allowed_hosts, *extra})
    typer.echo(f"vram-ml web calculator on http://{host}:{port}/ (Ctrl-C stops it)", err=True)
    uvicorn.run(create_app(settings), host=host, port=port, log_level="warning",
                limit_concurrency=64, timeout_keep_alive=5)
