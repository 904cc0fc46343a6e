"""Benchmark `vram-ml predict`: the CLI's cold start and the library's specs per second.

    .venv/bin/python scripts/bench_predict.py                   # trains a throwaway model first
    .venv/bin/python scripts/bench_predict.py --artifact DIR    # a model you have

Cold start: wall time of a fresh `python -m vram_ml.cli predict --json` process (interpreter start
to exit), median of --runs, for the analytical fallback and for the learned model. Specs per
second: one `LearnedEstimator.predict_batch` call (peak + upper bound) over --specs distinct specs
that are already built; building them is timed apart. Without --artifact the learned model is
trained on SYNTHETIC samples into a temporary folder: for timing only, never bundled.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def cold_start(extra: list[str], runs: int) -> list[float]:
    command = [sys.executable, "-m", "vram_ml.cli", "predict", "--json", *extra]
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True)
        times.append(time.perf_counter() - start)
    return times


def many_specs(count: int) -> list:
    from vram_ml.model_source import load_catalog
    from vram_ml.spec import SpecError, build_spec

    models = sorted(load_catalog())
    grid = itertools.product(
        models,
        ("lora", "qlora", "full"),
        (1, 2, 4, 8, 16),
        (256, 512, 1024, 2048),
        (True, False),
        ("sdpa", "eager"),
    )
    specs = []
    for model, method, batch, seq, checkpointing, attention in grid:
        try:
            specs.append(
                build_spec(
                    model=model,
                    method=method,
                    quant_bits=4 if method == "qlora" else None,
                    batch_size=batch,
                    seq_len=seq,
                    precision="bf16",
                    gradient_checkpointing=checkpointing,
                    attention=attention,
                )
            )
        except SpecError:
            continue
        if len(specs) == count:
            break
    return specs


def throughput(specs: list, artifact: Path | None) -> float:
    from vram_ml.model.learned.estimator import LearnedEstimator

    estimator = LearnedEstimator(artifact)
    estimator.predict_batch(specs[:10])  # load the artifact outside the timing
    start = time.perf_counter()
    batch = estimator.predict_batch(specs)
    elapsed = time.perf_counter() - start
    assert batch.estimator == ("learned" if artifact else "analytical")
    return len(specs) / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--artifact", type=Path, help="learned model folder")
    parser.add_argument("--specs", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        artifact = args.artifact
        if artifact is None:
            from vram_ml.model.learned.synthetic import synthetic_training_set
            from vram_ml.model.learned.train import train

            artifact = Path(scratch) / "model"
            print("training a throwaway model on SYNTHETIC data (timing only) ...", flush=True)
            train(synthetic_training_set(300), artifact)
        fallback = cold_start([], args.runs)
        learned = cold_start(["--artifact", str(artifact)], args.runs)
        print(
            f"cold start, analytical fallback: median {statistics.median(fallback):.3f} s "
            f"(min {min(fallback):.3f} s, {args.runs} runs)"
        )
        print(
            f"cold start, learned model:       median {statistics.median(learned):.3f} s "
            f"(min {min(learned):.3f} s, {args.runs} runs)"
        )
        start = time.perf_counter()
        specs = many_specs(args.specs)
        built = time.perf_counter() - start
        print(f"built {len(specs)} specs in {built:.2f} s ({len(specs) / built:,.0f} specs/s)")
        print(f"predict_batch, learned (peak + upper): {throughput(specs, artifact):,.0f} specs/s")
        print(f"predict_batch, analytical fallback:    {throughput(specs, None):,.0f} specs/s")


if __name__ == "__main__":
    main()
