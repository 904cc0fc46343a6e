"""Print, per family added with the 2026 catalog, the analytical estimator's tensor peak beside
the fake-tensor simulation of the recipe's step, on each family's scaled-down model.

Run: .venv/bin/python scripts/family_agreement.py                 (every family, ~2 min, 2 cores)
     .venv/bin/python scripts/family_agreement.py qwen3_moe gemma3  (some families)

The scaled models and specs are the tests' (tests/model/scaled_families.py,
tests/model/formulas/test_families.py: LoRA on all linears, bf16, batch 2 x 512 for text, one
896 px image in 2048 tokens for vision-language); both checkpointing settings. Figures are
`simulated` (fake tensors on the CPU), not GPU measurements.
"""

from __future__ import annotations

import importlib.util
import sys
import time
from pathlib import Path

ROOT = Path(__file__).parents[1]
MIB = 2**20


def _scaled() -> tuple[dict, dict, dict]:
    spec = importlib.util.spec_from_file_location(
        "scaled_families", ROOT / "tests" / "model" / "scaled_families.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.SCALED, module.SCALED_VLM, module.PEFT_HERE


def main(families: list[str]) -> None:
    from vram_ml.model.formulas.analytical import analyse
    from vram_ml.model.simulate.estimator import simulate
    from vram_ml.spec import build_spec

    text, vision, peft_here = _scaled()
    models = {**text, **vision}
    print("| family | model (scaled) | checkpointing | analytical MiB | simulated MiB | gap | s |")
    print("|---|---|---|---:|---:|---:|---:|")
    for family in families or sorted(models):
        hf_id, overrides = models[family]
        base = (dict(batch_size=1, seq_len=2048, images_per_sample=1, image_resolution=896)
                if family in vision else dict(batch_size=2, seq_len=512))
        for checkpointing in (True, False):
            spec = build_spec(model=hf_id, model_overrides=overrides, precision="bf16",
                              method="lora", gradient_checkpointing=checkpointing, **base,
                              **peft_here)
            start = time.perf_counter()
            simulated = simulate(spec).peak_tensor_bytes
            seconds = time.perf_counter() - start
            analytical = analyse(spec).peak_tensor_bytes
            print(f"| {family} | {hf_id} | {checkpointing} | {analytical / MIB:.1f} | "
                  f"{simulated / MIB:.1f} | {analytical / simulated - 1:+.2%} | {seconds:.1f} |",
                  flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
