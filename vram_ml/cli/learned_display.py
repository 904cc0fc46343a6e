"""Rendering of predict, fit, train and evaluate (rich tables; GiB on screen, bytes in JSON)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich import box
from rich.table import Table

from vram_ml.cli.display import console
from vram_ml.model.estimate import BREAKDOWN_TERMS, gib

if TYPE_CHECKING:
    from vram_ml.model.answers.card_fit import FitReport
    from vram_ml.model.answers.prediction import Prediction

VERDICT_STYLE = {
    "fits": "[green]✓ fits[/]",
    "tight": "[yellow]~ tight[/]",
    "does not fit": "[red]✗ does not fit[/]",
}


def prediction_table(prediction: Prediction) -> Table:
    estimates = [prediction.answer, *prediction.beside]
    table = Table(title="Peak VRAM (GiB = 2^30 bytes)", title_justify="left")
    table.add_column("")
    for i, estimate in enumerate(estimates):
        header = f"[bold]{estimate.estimator}[/]" if i == 0 else f"[dim]{estimate.estimator}[/]"
        table.add_column(header, justify="right")
    for term in (*BREAKDOWN_TERMS, "learned_correction"):
        if any(estimate.breakdown.get(term) for estimate in estimates):
            label = term.replace("_", " ")
            table.add_row(label, *(gib(estimate.breakdown.get(term)) for estimate in estimates))
    table.add_section()
    table.add_row("[bold]peak[/]", *(f"[bold]{gib(e.peak_vram_bytes)}[/]" for e in estimates))
    table.add_row("upper bound", *(gib(e.upper_vram_bytes) for e in estimates))
    if prediction.answer.peak_reserved_bytes is not None:
        table.add_row(
            "[dim]reserved / allocated[/]",
            f"[dim]{gib(prediction.answer.peak_reserved_bytes)}"
            f" / {gib(prediction.answer.peak_allocated_bytes)}[/]",
            *([""] * (len(estimates) - 1)),
        )
    return table


def print_prediction(prediction: Prediction) -> None:
    answer = prediction.answer
    console.print(prediction_table(prediction))
    upper = (
        f", upper bound [bold]{gib(answer.upper_vram_bytes)} GiB[/] [dim]({answer.upper_basis})[/]"
        if answer.upper_vram_bytes
        else ""
    )
    per_gpu = " per GPU" if answer.num_gpus > 1 else ""
    console.print(
        f"Peak VRAM{per_gpu}: [bold]{gib(answer.peak_vram_bytes)} GiB[/]{upper} "
        f"[dim](answered by: {answer.estimator})[/]"
    )
    if answer.num_gpus > 1:
        console.print(f"  x {answer.num_gpus} GPUs = [bold]{gib(answer.total_vram_bytes)} GiB[/] "
                      "in total (the sum nvidia-smi shows over the GPUs)")
    if answer.host_memory_bytes:
        console.print(f"  host RAM for the offloaded states: [bold]"
                      f"{gib(answer.host_memory_bytes)} GiB[/] per node")
    if prediction.fallback_reason:
        console.print(f"[yellow]Fallback: {prediction.fallback_reason}.[/]")
    if answer.num_gpus > 1:
        console.print("  [dim]cards judged per GPU:[/]")
    for card in prediction.cards:
        spare = card.spare_bytes
        detail = f"{gib(spare)} GiB spare" if spare >= 0 else f"{gib(-spare)} GiB short"
        console.print(
            f"  {card.gpu_memory_gib:g} GiB card  {VERDICT_STYLE[card.verdict]}  "
            f"[dim]({detail} at the {'upper bound' if answer.upper_vram_bytes else 'peak'})[/]"
        )
    for note in answer.notes:
        if note != prediction.fallback_reason:
            console.print(f"[dim]{answer.estimator}: {note}[/]")


def print_fit(report: FitReport) -> None:
    card = f"{report.gpu_memory_bytes / 1024**3:g} GiB"
    verdict = VERDICT_STYLE[report.verdict]
    console.print(f"On a {card} card, judged on the {report.estimator} {report.bound_name}:")
    console.print(
        f"  this run: peak {gib(report.peak_vram_bytes)} GiB, bound "
        f"{gib(report.bound_vram_bytes)} GiB — {verdict}"
    )
    spec = report.spec
    console.print(
        f"  largest batch size that fits (cutoff {spec.seq_len}): "
        f"[bold]{report.max_batch_size or 'none'}[/]"
    )
    console.print(
        f"  largest cutoff length that fits (batch {spec.batch_size}): "
        f"[bold]{report.max_seq_len or 'none'}[/]"
    )
    if report.max_batch_size:
        console.print(
            f"  effective batch {report.target_effective_batch}: batch {report.batch_size} x "
            f"accumulation {report.gradient_accumulation} x {spec.num_gpus} GPU(s) = "
            f"{report.effective_batch}"
        )
    if report.changes:
        table = Table(title="Cheapest changes that make it fit", title_justify="left")
        for column in ("change", "cost", "peak (GiB)", "bound (GiB)"):
            table.add_column(column, justify="right" if "GiB" in column else "left")
        for change in report.changes:
            cost = change.cost + (f" [yellow]({change.unmeasured})[/]" if change.unmeasured else "")
            table.add_row(
                change.description,
                cost,
                gib(change.peak_vram_bytes),
                gib(change.bound_vram_bytes),
            )
        console.print(table)
    elif report.combination:
        change = report.combination
        console.print(
            f"  no single change fits; together: [bold]{change.description}[/] -> bound "
            f"{gib(change.bound_vram_bytes)} GiB"
            + (f" [yellow]({change.unmeasured})[/]" if change.unmeasured else "")
        )
    elif not report.fits:
        console.print(
            "  [red]no change tried here makes it fit: more GPUs (ZeRO-3) or a bigger card[/]"
        )


def print_training(payload: dict[str, Any], tracking_uri: str | None) -> None:
    for note in payload["notes"]:
        console.print(f"[bold red]{note}[/]")
    data = payload["data"]
    backends = ", ".join(f"{n} {name}" for name, n in sorted(data["backends"].items()))
    console.print(
        f"Trained on {data['samples']} rows ({backends}; {data['ok']} measured, {data['oom']} "
        f"OOM lower bounds, {len(data['families'])} families), data hash {data['hash']}"
    )
    console.print(f"Artifact: {payload['output_dir']}")
    if payload["mlflow_run_id"]:
        console.print(
            f"MLflow: run {payload['mlflow_run_id']} in {tracking_uri}, registered version "
            f"{payload['registered_version']}"
        )
    for split, targets in payload["metrics"].items():
        for target, estimators in targets.items():
            console.print(metrics_table(estimators, f"held out by {split}: {target}"))
    decision = payload.get("bundle_decision")
    if decision:
        verdict = "bundle" if decision["bundle"] else "do not bundle"
        console.print(f"Leave-one-source-out: {verdict} ({decision['pairs']} rows)")
    console.print(f"[dim]{METRIC_LEGEND}[/]")


METRIC_COLUMNS = (
    "estimator",
    "n",
    "med%",
    "p90%",
    "MAPE%",
    "bias%",
    "cov95",
    "OOM✓",
    "OOM✗",
)
METRIC_LEGEND = (
    "med, p90, MAPE: median, 90th percentile, mean absolute % error. bias: median signed % "
    "error. cov95: share of peaks under the upper bound. OOM✓: OOM runs predicted not to fit "
    "their card. OOM✗: runs that fit, predicted not to."
)


def metrics_table(estimators: dict[str, dict[str, Any]], title: str) -> Table:
    """One row per estimator; one table per split keeps it inside 80 columns."""
    table = Table(
        title=title,
        title_justify="left",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        collapse_padding=True,
    )
    for column in METRIC_COLUMNS:
        table.add_column(column, justify="left" if column == "estimator" else "right", no_wrap=True)
    for name, m in estimators.items():
        table.add_row(
            name,
            str(m["n"]),
            _num(m.get("median_ape")),
            _num(m.get("p90_ape")),
            _num(m.get("mape")),
            _num(m.get("bias_pct")),
            _share(m.get("coverage_q95")),
            _share(m.get("oom_caught")),
            _share(m.get("false_oom")),
        )
    return table


def print_evaluation(report: dict[str, Any], paths: list[Path], run_id: str | None) -> None:
    data = report["data"]
    if data["synthetic"]:
        console.print("[bold red]SYNTHETIC DATA: these are not GPU measurements[/]")
    backends = ", ".join(f"{n} {name}" for name, n in sorted(data["backends"].items()))
    console.print(
        f"{data['samples']} rows ({backends}; {data['ok']} measured, {data['oom']} OOM), "
        f"{data['families']} families, data hash {data['hash']}"
    )
    for name, body in report["splits"].items():
        folds = body["folds"]
        detail = folds[0]["label"] if len(folds) == 1 else f"{len(folds)} folds"
        for target, value in body["targets"].items():
            if value["n"]:
                console.print(metrics_table(value["estimators"],
                                            f"split: {name} ({detail}) — {target}"))
    decision = report.get("bundle")
    if decision:
        console.print(f"Bundle decision (leave-one-source-out median APE): learned "
                      f"{_num(decision['learned_median_ape'])}% vs analytical "
                      f"{_num(decision['analytical_median_ape'])}% — "
                      f"{'bundle' if decision['bundle'] else 'do not bundle'}")
    console.print(f"[dim]{METRIC_LEGEND}[/]")
    for note in report["notes"]:
        console.print(f"[yellow]{note}[/]")
    console.print("Wrote " + ", ".join(str(p) for p in paths))
    if run_id:
        console.print(f"MLflow run {run_id}")


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _share(value: float | None) -> str:
    return "-" if value is None else f"{value:.0%}"
