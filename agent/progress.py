"""The agent's progress display: a rich bar (done / OOM / errors, seconds per sample, ETA) and one
line per sample above it. Without a terminal (a device session's log) only the lines print."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeRemainingColumn,
)

from vram_ml.sample import Sample

GIB = 2**30
STATUS_STYLE = {"ok": "green", "oom": "yellow", "error": "red"}


def size(n_bytes: int) -> str:
    return f"{n_bytes / GIB:.2f} GiB" if n_bytes >= GIB else f"{n_bytes / 2**20:.1f} MiB"


def describe(sample: Sample) -> str:
    """One short line naming the spec."""
    spec = sample.spec
    name = spec.resolved_model.name.split("/")[-1] + (" (scaled)" if spec.model_overrides else "")
    method = spec.method + (f"{spec.quant_bits}b" if spec.quant_bits else "")
    return (f"{name} {method} b{spec.batch_size}x{spec.seq_len} {spec.precision} "
            f"{spec.optimizer}{' ckpt' if spec.gradient_checkpointing else ''}")


class AgentProgress:
    """Event handler for `run_agent(options, events=AgentProgress(console))`."""

    def __init__(self, console: Console | None = None):
        self.console = console or Console(stderr=True)
        self.progress = Progress(
            SpinnerColumn(),
            TextColumn("[bold]samples"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("ok {task.fields[ok]} · [yellow]oom {task.fields[oom]}[/] · "
                       "[red]err {task.fields[error]}[/] · {task.fields[per]} s/sample"),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=self.console,
            transient=False,
            disable=not self.console.is_terminal,
        )
        self.task = None
        self.seconds: list[float] = []

    def __enter__(self) -> AgentProgress:
        self.progress.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.__exit__(*exc)

    def __call__(self, kind: str, **data: Any) -> None:
        getattr(self, f"_{kind}", lambda **_: None)(**data)

    def _planned(self, total: int, notes: list[str], slots: list[str]) -> None:
        for note in notes:
            self.console.print(f"[dim]{note}[/]")
        self.console.print(f"{total} spec(s) to measure on {', '.join(slots)}")
        self.task = self.progress.add_task("samples", total=total, ok=0, oom=0, error=0, per="-")

    def _started(self, slot: str, spec: Any, reason: str, pid: int) -> None:
        pass  # the spinner shows activity; a line per start would double the log

    def _finished(self, slot: str, sample: Sample, recorded: Any, seconds: float,
                  summary: Any, total: int) -> None:
        measurement = sample.measurement
        style = STATUS_STYLE[measurement.status]
        peak = measurement.peak_vram_bytes
        detail = size(peak) if peak is not None else ""
        if measurement.status != "ok":
            detail = f"{detail} {measurement.message[:120]}".strip()
        stored = "" if recorded.new else " [dim](already stored)[/]"
        mlflow = " [dim](spool only: MLflow down)[/]" if recorded.tracking_error else ""
        if recorded.outcome in ("present", "elsewhere"):
            mlflow = " [dim](another agent stored it in MLflow)[/]"
        self.console.print(f"[{style}]{measurement.status:5}[/] {describe(sample)} · {detail} · "
                           f"{seconds:.1f}s [dim]{slot}[/]{stored}{mlflow}", highlight=False,
                           soft_wrap=True)
        self.seconds.append(seconds)
        done = sum(summary.status.values())
        if self.task is not None:
            self.progress.update(self.task, completed=done, ok=summary.status["ok"],
                                 oom=summary.status["oom"], error=summary.status["error"],
                                 per=f"{sum(self.seconds) / len(self.seconds):.1f}")

    def _skipped(self, slot: str, spec: Any, reason: str) -> None:
        self.console.print(f"[dim]skip  {spec.spec_id}: {reason}[/]", highlight=False)

    def _waiting(self, slot: str, reason: str) -> None:
        self.console.print(f"[dim]{slot} busy ({reason}); waiting[/]")

    def _aborted(self, slot: str, spec: Any) -> None:
        self.console.print(f"[yellow]aborted[/] {spec.spec_id} on {slot} (stays planned)")

    def _stopping(self, reason: str, abort: bool) -> None:
        what = "aborting running samples" if abort else "finishing running samples"
        self.console.print(f"[yellow]stopping ({reason}): {what}[/]")
