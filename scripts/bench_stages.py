"""Each training stage: the analytical estimator beside simulate (the recipe's stage step on fake
tensors), on scaled-down models, tensor peak against tensor peak.

Run: .venv/bin/python scripts/bench_stages.py                 (every stage, both scales)
     .venv/bin/python scripts/bench_stages.py --scale wide --stage dpo-full

Two scales of a scaled-down Llama-3 (2 layers): `tiny` (hidden 64, vocab 1000: the stage's
logits terms dominate, as in tests/model/simulate/test_stages.py) and `wide` (hidden 512,
intermediate 1408, vocab 8192: weights, activations and logits all count). Prints the tensor
peaks (analytical `peak_tensor_bytes`, simulate `peak_tensor_bytes`), their difference, and each
side's peak moment. Not a test: the 5% agreement is asserted in tests/model/simulate/
test_stages.py; this prints the figures for every stage and scale.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

MIB = 1024**2
LLAMA3 = "meta-llama/Meta-Llama-3-8B"
SCALES: dict[str, dict] = {
    "tiny": {"num_hidden_layers": 2, "hidden_size": 64, "intermediate_size": 128,
             "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 1000},
    "wide": {"num_hidden_layers": 2, "hidden_size": 512, "intermediate_size": 1408,
             "num_attention_heads": 8, "num_key_value_heads": 2, "vocab_size": 8192},
}
COMMON = dict(batch_size=2, seq_len=256, precision="bf16", gradient_checkpointing=False)
STAGES: dict[str, dict] = {
    "sft": dict(),
    "pt": dict(stage="pt"),
    "dpo-lora": dict(stage="dpo"),
    "dpo-full": dict(stage="dpo", method="full"),
    "orpo": dict(stage="dpo", pref_loss="orpo"),
    "simpo-qlora": dict(stage="dpo", pref_loss="simpo", method="qlora", quant_bits=4),
    "kto-lora": dict(stage="kto"),
    "kto-full-ckpt": dict(stage="kto", method="full", gradient_checkpointing=True),
    "rm-lora": dict(stage="rm"),
    "rm-full": dict(stage="rm", method="full"),
    "ppo-lora": dict(stage="ppo", seq_len=60, max_new_tokens=4),
    "ppo-full-reward": dict(stage="ppo", seq_len=60, max_new_tokens=4, method="full",
                            reward_model_type="full"),
}


def run_case(scale: str, stage: str) -> dict:
    """In the child: one stage at one scale, both estimators."""
    from vram_ml.model.formulas.analytical import analyse
    from vram_ml.model.simulate.estimator import simulate
    from vram_ml.spec import build_spec

    spec = build_spec(model=LLAMA3, model_overrides=SCALES[scale], **{**COMMON, **STAGES[stage]})
    analysis, simulation = analyse(spec), simulate(spec)
    return {"scale": scale, "stage": stage, "analytical": analysis.peak_tensor_bytes,
            "analytical_moment": analysis.peak_moment,
            "simulate": simulation.peak_tensor_bytes,
            "simulate_phase": f"step {simulation.run.peak.step} {simulation.run.peak.phase}"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", choices=list(SCALES), action="append")
    parser.add_argument("--stage", choices=list(STAGES), action="append")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(run_case(args.scale[0], args.stage[0])))
        return
    print(f"{'scale':5} {'stage':16} {'analytical MiB':>14} {'simulate MiB':>12} {'an-sim':>7}  "
          "peak (analytical / simulate)")
    for scale in args.scale or list(SCALES):
        for stage in args.stage or list(STAGES):
            child = subprocess.run([sys.executable, __file__, "--child", "--scale", scale,
                                    "--stage", stage], capture_output=True, text=True)
            if child.returncode != 0:
                print(f"{scale:5} {stage:16} failed: {child.stderr.strip().splitlines()[-1:]}")
                continue
            row = json.loads(child.stdout.strip().splitlines()[-1])
            an, sim = row["analytical"], row["simulate"]
            print(f"{scale:5} {stage:16} {an / MIB:14.2f} {sim / MIB:12.2f} "
                  f"{(an - sim) / sim * 100:+6.1f}%  {row['analytical_moment']} / "
                  f"{row['simulate_phase']}", flush=True)


if __name__ == "__main__":
    main()
