"""Rendering shared by the commands: estimates side by side, in GiB, with the spec echoed; JSON."""

from __future__ import annotations

import json

import typer
from rich.console import Console
from rich.table import Table

from vram_ml.cli.spec_options import SpecInput
from vram_ml.model.estimate import BREAKDOWN_TERMS, Estimate, gib

console = Console()


def print_json(payload: object) -> None:
    """`--json` output: bytes as integers, anything else as its string."""
    typer.echo(json.dumps(payload, indent=2, default=str))


def echo_spec(spec_input: SpecInput) -> None:
    """Print the spec line and what was assumed, ignored, not modelled or unknown."""
    spec = spec_input.spec
    resolved = spec.resolved_model
    console.print(
        f"[bold]{resolved.name}[/] ({resolved.shape.total_params / 1e9:.2f}B params, "
        f"{resolved.family}) · {spec.method}"
        + (f" {spec.quant_bits}-bit" if spec.quant_bits else "")
        + (f" r={spec.lora_rank}" if spec.method in ("lora", "qlora") else "")
        + (f" + {','.join(spec.additional_target)} trained (modules_to_save)"
           if spec.additional_target else "")
        + f" · batch {spec.batch_size} x seq {spec.seq_len} · {spec.precision}"
        + (" · checkpointing" if spec.gradient_checkpointing else "")
        + f" · {spec.attention} · {spec.optimizer}"
        + (f" · {spec.images_per_sample} image(s) of {spec.image_resolution} px, vision tower "
           f"{'frozen' if spec.freeze_vision_tower else 'not frozen'}"
           if resolved.shape.is_multimodal else "")
        + f" · spec_id {spec.spec_id}"
    )
    if spec.stage != "sft":
        console.print(f"stage: {stage_line(spec)}")
    console.print(f"stack: {spec.framework} · transformers {spec.transformers_version} · peft "
                  f"{spec.peft_version} · trl {spec.trl_version} · bitsandbytes "
                  f"{spec.bitsandbytes_version}"
                  + (f" · accelerate {spec.accelerate_version}" if spec.distributed == "fsdp"
                     else ""))
    if spec.distributed != "none":
        from vram_ml.distributed import describe

        console.print(f"GPUs: {describe(spec)}")
    console.print(f"[dim]from {spec_input.source}[/]")
    if spec_input.assumed:
        console.print("[dim]assumed: " + "; ".join(spec_input.assumed.values()) + "[/]")
    if spec_input.ignored:
        console.print(
            "[dim]ignored (no effect on memory): " + ", ".join(spec_input.ignored) + "[/]"
        )
    if spec_input.unmodelled:
        console.print(
            "[yellow]not modelled (memory effect not counted): "
            + ", ".join(spec_input.unmodelled)
            + "[/]"
        )
    if spec_input.unassessed:
        console.print("[yellow]not assessed (LLaMA-Factory keys whose memory effect vram-ml has "
                      "not classified): " + ", ".join(spec_input.unassessed) + "[/]")
    if spec_input.unknown:
        console.print("[yellow]unknown keys (LLaMA-Factory would refuse them; --allow-unknown): "
                      + ", ".join(spec_input.unknown) + "[/]")
    if "images_per_sample" in spec_input.assumed:
        console.print(f"[yellow]{spec_input.assumed['images_per_sample']}[/]")


def stage_line(spec) -> str:
    """The training stage and what it loads, e.g. `dpo (sigmoid) · reference: ...`."""
    from vram_ml.stages import uses_reference

    parts = [spec.stage + (f" ({spec.pref_loss})" if spec.stage == "dpo" else "")]
    if uses_reference(spec.stage, spec.pref_loss):
        if spec.ref_model:
            bits = spec.ref_model_quantization_bit
            parts.append(f"reference: {spec.ref_model}" + (f" {bits}-bit" if bits else ""))
        elif spec.method in ("lora", "qlora"):
            parts.append("reference: the adapter-disabled base")
        else:
            parts.append("reference: a frozen copy of the model")
    if spec.stage == "ppo":
        reward = spec.reward_model_type + (f" {spec.reward_model}" if spec.reward_model else "")
        parts += [f"reward: {reward}", f"max_new_tokens {spec.max_new_tokens}"]
    return " · ".join(parts)


def estimates_table(estimates: list[Estimate], title: str = "Peak VRAM (GiB)") -> Table:
    table = Table(title=title)
    table.add_column("")
    for estimate in estimates:
        table.add_column(estimate.estimator, justify="right")
    for term in BREAKDOWN_TERMS:
        if any(estimate.breakdown.get(term) for estimate in estimates):
            table.add_row(term, *(gib(estimate.breakdown.get(term)) for estimate in estimates))
    table.add_section()
    table.add_row("[bold]peak[/]", *(f"[bold]{gib(e.peak_vram_bytes)}[/]" for e in estimates))
    if any(e.upper_vram_bytes for e in estimates):
        table.add_row("upper bound", *(gib(e.upper_vram_bytes) for e in estimates))
    return table


def print_notes(estimates: list[Estimate]) -> None:
    for estimate in estimates:
        for note in estimate.notes:
            console.print(f"[dim]{estimate.estimator}: {note}[/]")
