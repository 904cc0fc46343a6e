#!/usr/bin/env bash
# One GPU session for vram-ml (see GPU.md): install the brought wheels, print versions and
# nvidia-smi, run the `gpu` test tier, run the agent on spare GPUs inside a time budget,
# re-measure a few specs in fresh processes (repeatability), and leave everything in one folder.
#
#   bash scripts/device_session.sh prepare        # here: wheels for the GPU machine into .whl/
#   bash scripts/device_session.sh run [OUT]      # there: OUT defaults to $OUT, else ./device-out
#   bash scripts/device_session.sh import OUT     # here: OUT/samples.jsonl -> store + datasets/
#
# `run` leaves in OUT (flat, at most 6 files): samples.jsonl (the agent's spool: one sample per
# line), repeat.jsonl (the repeatability re-runs), summary.json (agent run --json), versions.json,
# session.log (everything printed, nvidia-smi and test output included), child_logs.tar.gz.
#
# Knobs (environment):
#   SESSION_SECONDS=540   wall time `run` may take in all (the device allows 600 per command)
#   GPU_TESTS_SECONDS=150 the gpu test tier's share
#   REPEAT=3              ok specs measured a second time in fresh processes
#   PLAN=file             an explicit plan (YAML/JSONL of spec dicts) instead of agent/space.yaml
#   STRATEGY=coverage     or active
#   BACKEND=cuda          cpu: a rehearsal of the whole session on the CPU (tests do this)
#   PYTHON=python3        the interpreter that holds torch
#   SKIP_WHEELS=1         do not install .whl/*.whl (the machine's own libraries are used)
#   DATASET=datasets/samples.csv, INCLUDE_BACKEND=cpu, STORE=dir   (for `import`)
set -uo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
python=${PYTHON:-python3}
# bitsandbytes/transformers/peft as this project pins them; pydantic (+ its deps) is not on the
# GPU image. Its torch, accelerate, huggingface_hub, tokenizers, safetensors are used as they are.
wheels=(bitsandbytes==0.50.2 transformers==5.24.0 peft==0.21.2 pydantic==2.14.4
        pydantic_core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5)

prepare() {
  cd "$repo" || exit 1  # .whl/ is in .gitignore: it travels only when `carry` names it
  "$python" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_24_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl "${wheels[@]}"
  du -ch .whl/*.whl | tail -n 1
  echo "carry .whl with the run (the working tree and carried paths must stay under 64 MiB)"
}

section() { printf '\n=== %s (t=%ss) ===\n' "$1" "$SECONDS"; }

install_wheels() {
  if [ -n "${SKIP_WHEELS:-}" ] || ! ls "$repo"/.whl/*.whl >/dev/null 2>&1; then
    echo "no wheels installed (SKIP_WHEELS or no .whl/): using the machine's libraries"
    return
  fi
  "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target "$work/site" "$repo"/.whl/*.whl || echo "warning: wheel install failed"
  export PYTHONPATH="$work/site${PYTHONPATH:+:$PYTHONPATH}"
  for module in pydantic bitsandbytes transformers peft; do
    if ! "$python" -c "import $module" 2>/dev/null; then
      echo "warning: the carried $module does not import here; using the machine's own"
      rm -rf "$work/site/$module" "$work/site/$module"-*.dist-info
    fi
  done
}

source_tree() {
  # vram_ml with agent/ and model/ inside it, as setuptools' package-dir maps them: importable
  # with nothing installed.
  src="$work/src"
  mkdir -p "$src"
  cp -r "$repo/vram_ml" "$src/vram_ml"
  cp -r "$repo/agent" "$src/vram_ml/agent"
  cp -r "$repo/model" "$src/vram_ml/model"
  cp -r "$repo/tests" "$repo/pyproject.toml" "$src/"
  export PYTHONPATH="$src${PYTHONPATH:+:$PYTHONPATH}"
}

versions() {
  "$python" - <<'EOF'
import json, platform, sys
from importlib import metadata
out = {"python": sys.version.split()[0], "platform": platform.platform()}
for name in ("torch", "transformers", "peft", "bitsandbytes", "accelerate", "pydantic",
             "huggingface_hub", "nvidia-ml-py"):
    try:
        out[name] = metadata.version(name)
    except metadata.PackageNotFoundError:
        out[name] = None
try:
    import torch
    out["cuda"] = torch.version.cuda
    out["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
except Exception as error:  # noqa: BLE001
    out["torch_error"] = str(error)
print(json.dumps(out, indent=2))
EOF
}

run() {
  local out
  out=$(realpath -m "${1:-${OUT:-device-out}}")
  mkdir -p "$out"
  exec > >(tee -a "$out/session.log") 2>&1
  local total=${SESSION_SECONDS:-540} tests=${GPU_TESTS_SECONDS:-150} repeat=${REPEAT:-3}
  local backend=${BACKEND:-cuda} plan=""
  [ -n "${PLAN:-}" ] && plan=$(realpath "$PLAN")
  work=$(mktemp -d /tmp/vram-ml-session.XXXXXX)
  local store="$work/store"

  section "set-up"
  install_wheels
  source_tree
  cd "$src" || exit 1
  versions | tee "$out/versions.json"
  command -v nvidia-smi >/dev/null && nvidia-smi

  section "gpu test tier"
  timeout --kill-after=10 "$tests" "$python" -m pytest -m gpu tests/agent -q -p no:cacheprovider
  echo "gpu tests exit code: $?"

  section "agent"
  local reserve=$(( repeat > 0 ? 90 : 20 ))
  local budget=$(( total - SECONDS - reserve ))
  if [ "$budget" -lt 30 ]; then budget=30; fi
  echo "agent budget: ${budget}s (backend $backend)"
  timeout --signal=TERM --kill-after=30 $(( budget + 45 )) \
    "$python" -m vram_ml.cli agent run --backend "$backend" --gpus auto --budget "${budget}s" \
    --grace 20s --strategy "${STRATEGY:-coverage}" --store "$store" --no-mlflow --json \
    ${plan:+--plan "$plan"} > "$out/summary.json"
  echo "agent exit code: $?"
  cat "$out/summary.json"

  if [ "$repeat" -gt 0 ] && [ -f "$store/spool.jsonl" ]; then
    section "repeatability: $repeat spec(s) again, fresh processes"
    "$python" - "$store" "$repeat" > "$work/repeat.jsonl" <<'EOF'
import json, sys
from pathlib import Path
from vram_ml.agent.dataset import repeat_plan
from vram_ml.agent.store import Spool
for spec in repeat_plan(Spool(Path(sys.argv[1])).samples(), int(sys.argv[2])):
    print(json.dumps(spec))
EOF
    local left=$(( total - SECONDS - 15 ))
    if [ -s "$work/repeat.jsonl" ] && [ "$left" -gt 20 ]; then
      timeout --signal=TERM --kill-after=15 "$left" \
        "$python" -m vram_ml.cli agent run --backend "$backend" --gpus auto \
        --budget "$(( left - 10 ))s" --grace 5s --plan "$work/repeat.jsonl" \
        --store "$work/repeat" --no-mlflow > /dev/null
      echo "repeat exit code: $?"
    fi
  fi

  section "pack"
  [ -f "$store/spool.jsonl" ] && cp "$store/spool.jsonl" "$out/samples.jsonl"
  [ -f "$work/repeat/spool.jsonl" ] && cp "$work/repeat/spool.jsonl" "$out/repeat.jsonl"
  [ -d "$store/work" ] && tar czf "$out/child_logs.tar.gz" -C "$store" work
  echo "samples: $(wc -l < "$out/samples.jsonl" 2>/dev/null || echo 0) in $out"
  ls -la "$out"
}

import_samples() {
  local dir=${1:?usage: device_session.sh import OUT}
  cd "$repo" || exit 1
  local samples="$dir/samples.jsonl" py=${PYTHON:-$repo/.venv/bin/python}
  [ -f "$samples" ] || { echo "error: no $samples" >&2; exit 1; }
  "$py" -m vram_ml.cli dataset validate "$samples" || echo "(invalid rows are rejected below)"
  "$py" -m vram_ml.cli dataset import "$samples" --output "${DATASET:-datasets/samples.csv}" \
    ${INCLUDE_BACKEND:+--include-backend "$INCLUDE_BACKEND"} ${STORE:+--store "$STORE"} || exit 1
  if [ -f "$dir/repeat.jsonl" ]; then
    "$py" - "$samples" "$dir/repeat.jsonl" <<'EOF'
import sys
from vram_ml.agent.dataset import read_rows, repeatability, validate_rows
first, second = (validate_rows(read_rows(path)).samples for path in sys.argv[1:3])
rows = repeatability(first, second)
for row in rows:
    print(f"repeat {row['spec_id']}: {row['peak_vram_bytes']} vs {row['repeat_peak_vram_bytes']}"
          f" bytes ({100 * row['relative_difference']:.2f}%)")
if rows:
    print(f"repeatability: max spread {100 * max(r['relative_difference'] for r in rows):.2f}% "
          f"over {len(rows)} spec(s)")
EOF
  fi
}

case "${1:-}" in
  prepare) prepare ;;
  run) shift; run "$@" ;;
  import) shift; import_samples "$@" ;;
  *) echo "usage: device_session.sh prepare | run [OUT] | import OUT" >&2; exit 2 ;;
esac
