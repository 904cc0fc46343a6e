"""`vram-ml agent run | status | sync`: micro-trainings on spare GPUs, into the store.

Each command parses, calls one library function in vram_ml.agent, and prints (rich or --json).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated

import typer

from vram_ml.cli.display import print_json
from vram_ml.cli.spec_options import fail
from vram_ml.cli.store_options import (
    ExperimentOption,
    JsonOption,
    NoMlflowOption,
    StoreOption,
    TrackingOption,
    open_store,
)

app = typer.Typer(
    help="Measure peak VRAM of micro-trainings on spare GPUs.\n\n"
         "Example: vram-ml agent run --gpus auto --budget 30m", no_args_is_help=True)

def parse_duration(text: str) -> float:
    """`8m`, `90s`, `1h30m`, `600` -> seconds."""
    text = text.strip().lower()
    if re.fullmatch(r"\d+(\.\d+)?", text):
        return float(text)
    parts = re.findall(r"(\d+(?:\.\d+)?)([hms])", text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ValueError(f"expected a duration like 8m, 90s or 1h30m (got {text!r})")
    return sum(float(n) * {"h": 3600, "m": 60, "s": 1}[u] for n, u in parts)


@app.command("run")
def agent_run(
    backend: Annotated[
        str, typer.Option(help="cuda (real GPUs) or cpu (tiny models; tests).")
    ] = "cuda",
    gpus: Annotated[str, typer.Option(help="auto (every spare GPU) or indices: 0,1.")] = "auto",
    gpus_per_sample: Annotated[int, typer.Option(
        help="GPUs per multi-GPU sample (torchrun; the plan's specs with that num_gpus).",
        min=1)] = 1,
    workers: Annotated[int, typer.Option(help="cpu backend: samples in parallel.")] = 1,
    plan: Annotated[
        Path | None, typer.Option(help="Explicit plan: YAML/JSONL of spec dicts.")
    ] = None,
    space: Annotated[
        Path | None, typer.Option(help="Search space YAML (default agent/space.yaml).")
    ] = None,
    strategy: Annotated[
        str, typer.Option(help="coverage, or active (learned-model uncertainty).")
    ] = "coverage",
    budget: Annotated[
        str | None, typer.Option(help="Time budget: 8m, 1h30m. No new sample after it.")
    ] = None,
    max_samples: Annotated[int | None, typer.Option(help="Stop after this many samples.")] = None,
    steps: Annotated[int, typer.Option(help="Optimizer steps per sample.")] = 3,
    sample_timeout: Annotated[
        str, typer.Option(help="Kill a sample after this long (status error).")
    ] = "10m",
    grace: Annotated[
        str, typer.Option(help="After the budget, abort running samples after this.")
    ] = "60s",
    max_used_gib: Annotated[
        float, typer.Option(help="A GPU using more memory than this is busy.")
    ] = 2.0,
    store: StoreOption = None,
    tracking_uri: TrackingOption = None,
    no_mlflow: NoMlflowOption = False,
    experiment: ExperimentOption = None,
    as_json: JsonOption = False,
) -> None:
    """Measure specs (space.yaml or --plan) in child processes, one per spare GPU; spool + MLflow.

    Ctrl-C / SIGTERM once: finish running samples and stop; twice: abort them (they stay planned).
    Restarting resumes: specs already in the store are skipped. Agents on many machines that share
    one tracking server (--tracking-uri http://HOST:PORT) claim each spec there first: none is
    measured by two of them, none stored twice.

    Example: vram-ml agent run --gpus auto --budget 30m --tracking-uri http://mlflow.lab:5000
    """
    from vram_ml.agent.gpu_pool import PoolError
    from vram_ml.agent.planner import PlanError
    from vram_ml.agent.progress import AgentProgress
    from vram_ml.agent.runner import AgentOptions, run_agent
    from vram_ml.agent.store import SpoolError, default_store_dir

    if backend not in ("cuda", "cpu"):
        raise fail(f"backend: expected cuda or cpu (got {backend!r})")
    if strategy not in ("coverage", "active"):
        raise fail(f"strategy: expected coverage or active (got {strategy!r})")
    try:
        options = AgentOptions(
            store_dir=store or default_store_dir(), tracking_uri="" if no_mlflow else tracking_uri,
            experiment=experiment, backend=backend, gpus=gpus, gpus_per_sample=gpus_per_sample,
            workers=workers, plan_file=plan,
            space_file=space, strategy=strategy,
            budget_s=parse_duration(budget) if budget else None, max_samples=max_samples,
            steps=steps, sample_timeout_s=parse_duration(sample_timeout),
            grace_s=parse_duration(grace), max_used_bytes=int(max_used_gib * 2**30),
        )
        with AgentProgress() as progress:
            summary = run_agent(options, progress)  # progress on stderr, --json on stdout
    except SpoolError as error:
        raise fail(str(error), code=1) from None
    except (ValueError, PoolError, PlanError) as error:
        raise fail(str(error)) from None
    if as_json:
        print_json(summary.to_dict())
    else:
        _print_run_summary(summary)
    if summary.spool_error:
        raise fail(f"{summary.spool_error}; stopped (the specs not stored stay planned)", code=1)


def _print_run_summary(summary) -> None:
    from vram_ml.cli.display import console

    status = summary.status
    left = summary.planned - summary.started - summary.claimed_elsewhere
    elsewhere = f", {summary.claimed_elsewhere} taken by other agents" \
        if summary.claimed_elsewhere else ""
    console.print(
        f"{summary.stored} new sample(s) (ok {status['ok']}, oom {status['oom']}, error "
        f"{status['error']}), {summary.aborted} aborted, {left} left in the plan{elsewhere}; "
        f"{summary.seconds:.0f}s; stopped: {summary.stop_reason}")
    if summary.tracking_error:
        console.print(f"[yellow]MLflow: {summary.tracking_error} — samples are in the spool; "
                      "`vram-ml agent sync` replays them[/]")


@app.command("status")
def agent_status(store: StoreOption = None, tracking_uri: TrackingOption = None,
                 no_mlflow: NoMlflowOption = False, experiment: ExperimentOption = None,
                 as_json: JsonOption = False) -> None:
    """Show the store: samples by backend, status and device; what MLflow has yet to receive.

    Example: vram-ml agent status --store ~/.vram-ml/store
    """
    from vram_ml.agent.store import store_status

    status = store_status(open_store(store, tracking_uri, no_mlflow, experiment, read_only=True))
    if status["tracking_error"]:  # asked about a tracking server that does not answer
        raise fail(status["tracking_error"], code=1)
    if as_json:
        print_json(status)
        return
    from rich.table import Table

    from vram_ml.cli.display import console

    table = Table(title=f"Store {status['store']}", show_header=False)
    table.add_row("samples in spool", str(status["samples"]))
    for key in ("backend", "status", "device"):
        table.add_row(key, ", ".join(f"{k} {v}" for k, v in status[key].items()) or "-")
    for slot, now in status["running"].items():
        table.add_row(f"measuring on {slot}", f"{now['spec_id']} {now['model']} "
                      f"(pid {now['pid']}, since {now['started_at']})")
    if status["corrupt_lines"]:
        table.add_row("corrupt lines (skipped)", str(status["corrupt_lines"]))
    table.add_row("MLflow", status["tracking_uri"] or "disabled")
    if status["logged"] is not None:
        table.add_row("runs in MLflow", str(status["logged"]))
        table.add_row("waiting for sync", str(status["pending"]))
    if status["tracking_error"]:
        table.add_row("MLflow error", status["tracking_error"])
    console.print(table)


@app.command("sync")
def agent_sync(store: StoreOption = None, tracking_uri: TrackingOption = None,
               experiment: ExperimentOption = None, as_json: JsonOption = False) -> None:
    """Replay the spool into MLflow (idempotent: samples already logged are skipped).

    Example: vram-ml agent sync --tracking-uri http://mlflow.lab:5000
    """
    from vram_ml.agent.tracking import TrackingUnavailable

    try:
        result = open_store(store, tracking_uri, False, experiment).sync()
    except TrackingUnavailable as error:
        raise fail(str(error), code=1) from None
    if as_json:
        print_json(result)
        return
    elsewhere = f", {result['elsewhere']} being logged by another agent" \
        if result["elsewhere"] else ""
    typer.echo(f"{result['logged']} sample(s) logged, {result['already']} already in MLflow"
               f"{elsewhere} ({result['spooled']} in the spool)")
    if result["corrupt_lines"]:
        typer.echo(f"warning: {result['corrupt_lines']} corrupt spool line(s) skipped", err=True)
