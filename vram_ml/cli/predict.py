"""`vram-ml predict` and `vram-ml fit`: one spec's answer, and what fits a card.

Each command parses, calls one library function, and prints (rich, or `--json`). Neither imports
xgboost, scikit-learn, pandas, mlflow or torch: the learned model is evaluated by numpy from its
JSON artifact.

No `from __future__ import annotations` here: `with_spec_options` re-signs these functions, and
typer must see the option annotations as objects, not as names to resolve elsewhere.
"""

from pathlib import Path
from typing import Annotated

import typer

from vram_ml.cli.display import print_json
from vram_ml.cli.spec_options import SpecInput, fail, with_spec_options

app = typer.Typer()
ArtifactOption = Annotated[
    Path | None,
    typer.Option(
        help="Learned model folder (default: $VRAM_ML_LEARNED_MODEL, else the bundled one)."
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="JSON output (bytes).")]


def predict(
    spec_input: SpecInput,
    gpu_memory: Annotated[
        list[float] | None,
        typer.Option(help="Card memory in GiB (repeatable; a '24 GB' card is 24). "
                          "Default: 24, 40, 48 and 80."),
    ] = None,
    artifact: ArtifactOption = None,
    as_json: JsonOption = False,
) -> None:
    """Predict the peak VRAM of a fine-tuning run: point, upper bound, breakdown, what fits.

    Example: vram-ml predict --model Qwen/Qwen2.5-7B --method qlora --quant-bits 4 --gpu-memory 24
    """
    from vram_ml.model.answers.prediction import predict as predict_spec
    from vram_ml.model.learned.estimator import ArtifactError

    for size in gpu_memory or ():
        check_gpu_memory(size)
    try:
        prediction = predict_spec(spec_input.spec, gpu_memory, artifact)
    except (ArtifactError, ValueError) as error:
        raise fail(str(error)) from None
    if as_json:
        print_json({**spec_input.to_dict(), **prediction.to_dict()})
        return
    from vram_ml.cli.display import echo_spec
    from vram_ml.cli.learned_display import print_prediction

    echo_spec(spec_input)
    print_prediction(prediction)


def fit(
    spec_input: SpecInput,
    gpu_memory: Annotated[
        float, typer.Option(help="Card memory in GiB (a '24 GB' card is 24).")
    ] = 24.0,
    target_batch: Annotated[
        int | None,
        typer.Option(help="Effective batch to keep: batch x accumulation x GPUs "
                          "(default: the spec's own).", min=1),
    ] = None,
    artifact: ArtifactOption = None,
    as_json: JsonOption = False,
) -> None:
    """What fits a card: the largest batch size and cutoff length, the accumulation that keeps
    the effective batch, and the cheapest change when the run does not fit.

    Example: vram-ml fit --config train.yaml --gpu-memory 24 --target-batch 64
    """
    from vram_ml.model.answers.card_fit import find_fit
    from vram_ml.model.estimate import GIB
    from vram_ml.model.learned.estimator import ArtifactError, LearnedEstimator

    check_gpu_memory(gpu_memory)
    try:
        report = find_fit(
            spec_input.spec, int(gpu_memory * GIB), target_batch, LearnedEstimator(artifact)
        )
    except (ArtifactError, ValueError) as error:
        raise fail(str(error)) from None
    if as_json:
        print_json({**spec_input.to_dict(), **report.to_dict()})
        return
    from vram_ml.cli.display import echo_spec
    from vram_ml.cli.learned_display import print_fit

    echo_spec(spec_input)
    print_fit(report)


def check_gpu_memory(size: float) -> None:
    """A card's memory must be a positive number of GiB (one-line error otherwise)."""
    if not size > 0 or size == float("inf"):
        raise fail(f"gpu_memory: must be a positive number of GiB (got {size:g})")


app.command()(with_spec_options(predict))
app.command()(with_spec_options(fit))
