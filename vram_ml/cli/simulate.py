"""`vram-ml simulate`: run one spec's training steps on fake tensors and print the peak.

torch, transformers, peft and bitsandbytes load inside the command, never at CLI start.
"""

from __future__ import annotations

from typing import Annotated

import typer

from vram_ml.cli.display import print_json
from vram_ml.cli.spec_options import SpecInput, fail, with_spec_options

app = typer.Typer()


@app.command()
@with_spec_options
def simulate(
    spec_input: SpecInput,
    as_json: Annotated[bool, typer.Option("--json", help="JSON output (bytes).")] = False,
) -> None:
    """Simulate the training step on fake tensors (CPU, no GPU) and report its peak memory.

    transformers, peft and bitsandbytes run the real forward, backward and optimizer step of two
    steps on tensors without data; every tensor is counted. A prediction, not a measurement.

    Example: vram-ml simulate --model meta-llama/Meta-Llama-3-8B --precision bf16 --batch-size 2
    """
    from rich.console import Console
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from vram_ml.model.simulate.estimator import simulate as run_simulation

    progress = Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
                        console=Console(stderr=True), transient=True)
    with progress:
        task = progress.add_task("simulating", total=None)
        try:
            simulation = run_simulation(
                spec_input.spec,
                progress=lambda message: progress.update(task, description=message),
            )
        except ValueError as error:
            raise fail(str(error)) from None
    if as_json:
        print_json({**spec_input.to_dict(), **simulation.to_dict()})
        return
    from vram_ml.cli.display import console, echo_spec, estimates_table, print_notes

    echo_spec(spec_input)
    console.print(estimates_table([simulation.estimate], title="Simulated peak VRAM (GiB)"))
    run = simulation.run
    console.print(f"[dim]{run.steps} steps simulated in {run.seconds:.1f} s "
                  f"({run.peak.ops} ops)[/]")
    print_notes([simulation.estimate])
