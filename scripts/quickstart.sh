#!/usr/bin/env bash
# Set up vram-ml in ./.venv (CPU-only torch from `pip install torch==2.13.0`, never a CUDA
# download) and answer the embedded example: LLaMA-Factory's llama3_lora_sft.yaml.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
# torch first, pinned: peft and bitsandbytes ask for "torch", which alone would pull a CUDA build.
.venv/bin/python -m pip install -q torch==2.13.0
.venv/bin/python -m pip install -q -c constraints.txt -e ".[dev]"
.venv/bin/vram-ml predict "$@"
