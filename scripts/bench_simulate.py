"""Benchmark the simulate estimator on real-size models, beside the analytical estimator.

Run: .venv/bin/python scripts/bench_simulate.py            (all cases, ~1 minute on 2 cores)
     .venv/bin/python scripts/bench_simulate.py --case llama3-8b-lora

Each case runs in a fresh child process so that its seconds and peak RSS are its own. Prints one
table of seconds / peak RSS / peaks per estimator, then, per case, the breakdown of both
estimators term by term. Not a test: timings depend on the machine.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

GIB = 1024**3
COMMON = dict(batch_size=2, seq_len=1024, precision="bf16", lora_rank=8,
              lora_target="q_proj,v_proj")
CASES: dict[str, dict] = {
    "llama3-8b-lora": dict(model="meta-llama/Meta-Llama-3-8B", gradient_checkpointing=False),
    "llama3-8b-lora-ckpt": dict(model="meta-llama/Meta-Llama-3-8B", gradient_checkpointing=True),
    "llama3-8b-qlora-ckpt": dict(model="meta-llama/Meta-Llama-3-8B", method="qlora", quant_bits=4,
                                 gradient_checkpointing=True),
    "qwen2-vl-7b-lora-ckpt": dict(model="Qwen/Qwen2-VL-7B-Instruct", images_per_sample=1,
                                  image_resolution=768, gradient_checkpointing=True),
}


def run_case(name: str) -> dict:
    """In the child: simulate one case, and the analytical estimate if that estimator exists."""
    start = time.perf_counter()
    from vram_ml.model.estimate import get_estimator
    from vram_ml.model.simulate.estimator import simulate
    from vram_ml.spec import build_spec

    spec = build_spec(**{**COMMON, **CASES[name]})
    simulation = simulate(spec)
    row = {
        "case": name,
        "simulate_seconds": simulation.run.seconds,
        "process_seconds": time.perf_counter() - start,
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "simulate": simulation.estimate.to_dict(),
        "peak_tensor_bytes": simulation.peak_tensor_bytes,
        "peak_step": simulation.run.peak.step,
        "peak_phase": simulation.run.peak.phase,
    }
    try:
        analytical_start = time.perf_counter()
        row["analytical"] = get_estimator("analytical").estimate(spec).to_dict()
        row["analytical_seconds"] = time.perf_counter() - analytical_start
    except (ImportError, AttributeError, KeyError, ValueError) as error:
        row["analytical_error"] = f"{type(error).__name__}: {error}"
    return row


def gib(n_bytes: float | None) -> str:
    return "-" if n_bytes is None else f"{n_bytes / GIB:6.2f}"


def percent(a: float | None, b: float | None) -> str:
    if not a or not b:
        return "-"
    return f"{(a - b) / b * 100:+6.1f}%"


def print_tables(rows: list[dict]) -> None:
    print(f"{'case':24} {'sim s':>6} {'RSS MB':>7} {'tensor':>7} {'sim':>7} {'analyt':>7} "
          f"{'an-sim':>8} {'an ms':>6}")
    for row in rows:
        simulated = row["simulate"]["peak_vram_bytes"]
        analytical = row.get("analytical", {}).get("peak_vram_bytes")
        an_seconds = row.get("analytical_seconds")
        print(f"{row['case']:24} {row['simulate_seconds']:6.1f} "
              f"{row['peak_rss_bytes'] / 1e6:7.0f} {gib(row['peak_tensor_bytes'])} "
              f"{gib(simulated)} {gib(analytical)} {percent(analytical, simulated):>8} "
              f"{'-' if an_seconds is None else f'{an_seconds * 1000:4.1f}ms':>6}")
    print("(GiB; tensor = simulated tensor peak; sim = + CUDA corrections; an-sim = analytical vs "
          "simulate)")
    for row in rows:
        print(f"\n{row['case']}: peak in step {row['peak_step']} ({row['peak_phase']})")
        if "analytical_error" in row:
            print(f"  analytical unavailable: {row['analytical_error']}")
        sim = row["simulate"]["breakdown"]
        ana = row.get("analytical", {}).get("breakdown", {})
        for term in sorted(set(sim) | set(ana), key=lambda t: -(sim.get(t) or 0)):
            print(f"  {term:24} simulate {gib(sim.get(term))}  analytical {gib(ana.get(term))}  "
                  f"{percent(ana.get(term), sim.get(term))}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", choices=list(CASES), action="append")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--json", action="store_true", help="print the rows as JSON")
    args = parser.parse_args()
    if args.child:
        print(json.dumps(run_case(args.case[0])))
        return
    rows = []
    for name in args.case or list(CASES):
        child = subprocess.run([sys.executable, __file__, "--child", "--case", name],
                               capture_output=True, text=True)
        if child.returncode != 0:
            print(f"{name}: failed\n{child.stderr[-2000:]}", file=sys.stderr)
            continue
        rows.append(json.loads(child.stdout.strip().splitlines()[-1]))
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        print_tables(rows)


if __name__ == "__main__":
    main()
