#!/usr/bin/env bash
# One GPU session for vram-ml (see GPU.md): install the carried wheels (or stop), print versions
# and nvidia-smi, run the `gpu` test tier, run the agent inside a time budget, re-measure a few
# specs in fresh processes (repeatability), and leave everything in one folder as it goes.
#
#   bash scripts/device_session.sh prepare        # here: wheels for the GPU machine into .whl/
#   bash scripts/device_session.sh run [OUT]      # there: OUT defaults to $OUT, else ./device-out
#   bash scripts/device_session.sh import OUT     # here: OUT/samples.jsonl -> store + datasets/
#
# The device call (one call, about 7 minutes of work, well inside its 10-minute limit; the
# machine's start takes a minute or two of the 15 device minutes on top):
#   run(command='bash scripts/device_session.sh run "$OUT"', carry=[".whl"], timeout_s=480)
# `.whl/` is git-ignored: it travels only because `carry` names it. `prepare` says whether the
# working tree and the wheels together stay under the 64 MiB that can travel.
#
# Phases (SESSION_SECONDS=400 in all; each phase has its own time limit):
#   set-up        wheel install, import check of every carried module and its requirements, one
#                 recipe step on the CPU (any failure stops the session with one line, in
#                 seconds: no silent fallback to the machine's own copy), versions, nvidia-smi
#   gpu tier      pytest -m gpu tests/agent (measurements in child processes)   GPU_TESTS_SECONDS
#   sim vs cuda   pytest -m gpu tests/model/simulate, in a process of its own: its CUDA context
#                 must be gone before the agent looks for a spare GPU           SIM_TESTS_SECONDS
#   agent         what is left, less the repeat reserve
#   repeat        REPEAT ok specs again in fresh processes
# After each phase (and every COPY_EVERY seconds during the agent) the spools and the child logs
# are copied into OUT, and session.log is written as it goes: a call killed at its limit loses at
# most the last COPY_EVERY seconds.
#
# `run` leaves in OUT (flat; at most 7 files, the device returns 8): samples.jsonl (the agent's
# spool: one sample per line), repeat.jsonl (the repeatability re-runs), summary.json (agent run
# --json), versions.json, session.log (everything printed: nvidia-smi, test output, phase
# times), child_logs.tar.gz, and at most one *.tmp of a copy in progress.
#
# Knobs (environment):
#   SESSION_SECONDS=400   wall time `run` plans for in all
#   GPU_TESTS_SECONDS=150, SIM_TESTS_SECONDS=60   the test phases' limits
#   REPEAT=3              ok specs measured a second time in fresh processes
#   MAX_USED_GIB=16       a GPU using more is busy (a dedicated card: only a stray process
#                         would; the agent's own default, 2, is for shared machines)
#   SAMPLE_TIMEOUT=120s   one sample's limit (a hung sample must not take the whole budget)
#   COPY_EVERY=20         seconds between copies of the spool into OUT during the agent
#   PLAN=file             an explicit plan (YAML/JSONL of spec dicts) instead of agent/space.yaml
#   STRATEGY=coverage     or active
#   BACKEND=cuda          cpu: a rehearsal of the whole session on the CPU (tests do this)
#   PYTHON=python3        the interpreter that holds torch
#   WHEELS=.whl           the carried wheels; SKIP_WHEELS=1 uses the machine's libraries as
#                         they are (rehearsals only: its transformers lacks what the recipe needs)
#   WHEEL_PYTHON=3.12     `prepare`: the Python the wheels are for
#   DATASET=datasets/samples.csv, INCLUDE_BACKEND=cpu, STORE=dir   (for `import`)
set -uo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
python=${PYTHON:-python3}
wheel_dir=$(realpath -m "${WHEELS:-$repo/.whl}")
travel_limit=$(( 64 * 2**20 ))
# What the GPU machine lacks or has at another version (KINDS.md: transformers 5.17, no pydantic,
# no bitsandbytes); versions from constraints.txt. Its torch, accelerate, huggingface_hub,
# tokenizers, safetensors, typer, numpy are used as they are (the import check verifies the
# carried ones' requirements against them).
carried=(bitsandbytes transformers peft pydantic pydantic_core annotated-types typing-inspection
         typing_extensions)

fatal() {  # one line, the last one printed (in `run`, after what `finish` prints)
  failure="device_session: error: $*"
  [ -n "${out:-}" ] || echo "$failure"
  exit 3
}

pins() {
  "$python" - "$repo/constraints.txt" "${carried[@]}" <<'EOF'
import re, sys
norm = lambda name: re.sub(r"[-_.]+", "-", name).lower()
pinned = {}
for line in open(sys.argv[1], encoding="utf-8"):
    name, sep, version = line.strip().partition("==")
    if sep:
        pinned[norm(name)] = version
missing = [name for name in sys.argv[2:] if norm(name) not in pinned]
if missing:
    sys.exit(f"not pinned in constraints.txt: {', '.join(missing)}")
print(" ".join(f"{name}=={pinned[norm(name)]}" for name in sys.argv[2:]))
EOF
}

prepare() {
  cd "$repo" || exit 1
  local specs
  specs=$(pins) || fatal "prepare: $specs"
  rm -rf "$wheel_dir" && mkdir -p "$wheel_dir"  # one version of each: two stop the install
  # shellcheck disable=SC2086  # one word per pinned requirement
  "$python" -m pip download -q --no-deps --only-binary=:all: \
    --python-version "${WHEEL_PYTHON:-3.12}" --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
    --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d "$wheel_dir" $specs \
    || fatal "prepare: pip download failed for $specs"
  travel_size
}

travel_size() {
  # What a device call sends: tracked and untracked-not-ignored files, plus the carried wheels.
  "$python" - "$repo" "$wheel_dir" "$travel_limit" <<'EOF'
import os, subprocess, sys
from pathlib import Path
repo, wheels, limit = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
listed = subprocess.run(["git", "-C", str(repo), "ls-files", "-z", "--cached", "--others",
                         "--exclude-standard"], capture_output=True, check=True).stdout
tree = sum(os.path.getsize(repo / name) for name in listed.decode().split("\0")
           if name and (repo / name).is_file())
files = sorted(wheels.glob("*.whl"), key=lambda p: p.stat().st_size, reverse=True)
carried = sum(p.stat().st_size for p in files)
mib = lambda n: f"{n / 2**20:.1f} MiB"
for path in files:
    print(f"  {mib(path.stat().st_size):>10}  {path.name}")
total = tree + carried
print(f"travels: {mib(total)} of {mib(limit)} (working tree {mib(tree)}, "
      f"{len(files)} wheels {mib(carried)}; carry {wheels.name})")
if total > limit:
    over, cut = total - limit, []
    for path in files:
        if over <= 0:
            break
        cut.append(path.name)
        over -= path.stat().st_size
    sys.exit(f"device_session: error: {mib(total - limit)} too much to travel; does not fit: "
             f"{', '.join(cut)}")
EOF
}

section() {  # a phase ends: its time, and what it measured into OUT
  local now=$SECONDS
  if [ -n "${phase:-}" ]; then
    timings+="$phase $(( now - phase_start ))s, "
    save_results
  fi
  phase=$1 phase_start=$now
  printf '\n=== %s (t=%ss) ===\n' "$1" "$now"
}

install_wheels() {
  if [ -n "${SKIP_WHEELS:-}" ]; then
    echo "SKIP_WHEELS: no wheels installed, the machine's own libraries are used"
    return
  fi
  local wheels=("$wheel_dir"/*.whl)
  [ -e "${wheels[0]}" ] || fatal "no wheels in $wheel_dir: run 'prepare' and carry .whl"
  timeout 180 "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
    --upgrade --target "$work/site" "${wheels[@]}" > "$work/pip.log" 2>&1
  local code=$?
  cat "$work/pip.log"
  [ "$code" -eq 0 ] || fatal "wheel install failed (pip exit $code): $(grep -m1 -i error \
    "$work/pip.log" || tail -n 1 "$work/pip.log")"
  export PYTHONPATH="$work/site${PYTHONPATH:+:$PYTHONPATH}"
  timeout 120 "$python" - "$work/site" 2> "$work/check.err" <<'EOF' \
    || fatal "$(tail -n 1 "$work/check.err")"
# Every module the wheels installed must import from the carried copy (not the machine's own),
# and every carried distribution's requirements must be met by what is here.
import importlib, sys
from importlib import metadata
from pathlib import Path
from packaging.requirements import Requirement
site = Path(sys.argv[1]).resolve()
problems = []
for dist in metadata.distributions(path=[str(site)]):
    name = dist.metadata["Name"]
    tops = {Path(f).parts[0].removesuffix(".py") for f in dist.files or ()
            if not Path(f).parts[0].endswith((".dist-info", ".data")) and
            Path(f).parts[0] not in ("..", "bin", "__pycache__")}
    for top in sorted(tops):
        try:
            module = importlib.import_module(top)
        except Exception as error:  # noqa: BLE001 - any failure stops the session
            problems.append(f"{top} ({name}) does not import: {type(error).__name__}: "
                            f"{str(error).splitlines()[0] if str(error) else ''}")
            continue
        where = Path(getattr(module, "__file__", "") or "").resolve()
        if site not in where.parents:
            problems.append(f"{top} imports from {where}, not from the carried {name}")
    for text in dist.requires or ():
        requirement = Requirement(text)
        if requirement.marker and not requirement.marker.evaluate({"extra": ""}):
            continue
        try:
            have = metadata.version(requirement.name)
        except metadata.PackageNotFoundError:
            problems.append(f"{name} needs {requirement}: not installed")
            continue
        if have not in requirement.specifier:
            problems.append(f"{name} needs {requirement}: {have} here")
    print(f"carried {name} {dist.version}")
if problems:
    sys.exit("; ".join(problems))
EOF
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

check_recipe() {
  # vram_ml imports and one checkpointed LoRA step runs on the CPU with these libraries: a
  # library that lacks what the recipe uses (transformers 5.17: no activation_checkpointing_enable)
  # stops the session here, in seconds, not sample by sample on the GPU.
  timeout 180 "$python" - 2> "$work/smoke.err" <<'EOF' || fatal "$(tail -n 1 "$work/smoke.err")"
import sys
try:
    from vram_ml.agent.measure import measure, one_line
    from vram_ml.spec import build_spec
except Exception as error:  # noqa: BLE001
    sys.exit(f"vram_ml does not import here: {type(error).__name__}: {error}")
tiny = {"num_hidden_layers": 2, "hidden_size": 64, "intermediate_size": 128,
        "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 1000}
spec = build_spec(model="HuggingFaceTB/SmolLM2-135M", model_overrides=tiny, method="lora",
                  gradient_checkpointing=True, batch_size=1, seq_len=16, precision="fp32")
try:
    m = measure(spec, "cpu", steps=1)
except Exception as error:  # noqa: BLE001
    sys.exit(f"the recipe fails here (one checkpointed LoRA step on the CPU): {one_line(error)}")
print(f"recipe check: a checkpointed LoRA step on the CPU: {m.status}")
EOF
}

versions() {
  "$python" - <<'EOF'
import json, platform, sys
from importlib import metadata
out = {"python": sys.version.split()[0], "platform": platform.platform()}
for name in ("torch", "transformers", "peft", "bitsandbytes", "accelerate", "pydantic",
             "huggingface_hub", "tokenizers", "nvidia-ml-py"):
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

copy_file() {  # atomically, so a kill mid-copy leaves the last complete copy
  [ -f "$1" ] || return 0
  cp "$1" "$2.tmp" && mv "$2.tmp" "$2"
}

save_results() {
  copy_file "$store/spool.jsonl" "$out/samples.jsonl"
  copy_file "$work/repeat/spool.jsonl" "$out/repeat.jsonl"
  if [ -d "$store/work" ]; then
    tar czf "$out/child_logs.tar.gz.tmp" -C "$store" work 2>/dev/null \
      && mv "$out/child_logs.tar.gz.tmp" "$out/child_logs.tar.gz"
  fi
}

finish() {
  [ -n "${copier:-}" ] && kill "$copier" 2>/dev/null
  [ -n "${phase:-}" ] && section "end"
  echo "phase times: ${timings%, }"
  echo "samples: $(wc -l < "$out/samples.jsonl" 2>/dev/null || echo 0) in $out"
  ls -la "$out"
  rm -rf "$work"
  [ -n "${failure:-}" ] && echo "$failure"
  exec >&- 2>&-
  wait "$tee_pid" 2>/dev/null
}

run() {
  out=$(realpath -m "${1:-${OUT:-device-out}}")
  mkdir -p "$out"
  exec > >(tee -a "$out/session.log") 2>&1
  tee_pid=$!
  local total=${SESSION_SECONDS:-400} tests=${GPU_TESTS_SECONDS:-150}
  local sim_tests=${SIM_TESTS_SECONDS:-60} repeat=${REPEAT:-3}
  local backend=${BACKEND:-cuda} plan="" code
  [ -n "${PLAN:-}" ] && plan=$(realpath "$PLAN")
  work=$(mktemp -d /tmp/vram-ml-session.XXXXXX)
  store="$work/store" timings="" phase=""
  trap finish EXIT

  section "set-up"
  install_wheels
  source_tree
  cd "$src" || exit 1
  check_recipe
  versions | tee "$out/versions.json"
  command -v nvidia-smi >/dev/null && nvidia-smi

  section "gpu tier"
  timeout --kill-after=10 "$tests" "$python" -m pytest -m gpu tests/agent -q -s \
    -p no:cacheprovider
  echo "gpu tests exit code: $?"

  section "sim vs cuda"
  timeout --kill-after=10 "$sim_tests" "$python" -m pytest -m gpu tests/model/simulate -q -s \
    -p no:cacheprovider
  echo "sim tests exit code: $?"

  section "agent"
  local reserve=$(( repeat > 0 ? 75 : 20 ))
  local budget=$(( total - SECONDS - reserve ))
  if [ "$budget" -lt 30 ]; then budget=30; fi
  echo "agent budget: ${budget}s (backend $backend)"
  # (its output off the log's pipe: a sleeping copier would keep the log open at the end)
  (while sleep "${COPY_EVERY:-20}"; do save_results; done) > /dev/null 2>&1 &
  copier=$!
  timeout --signal=TERM --kill-after=30 $(( budget + 45 )) \
    "$python" -m vram_ml.cli agent run --backend "$backend" --gpus auto --budget "${budget}s" \
    --grace 20s --max-used-gib "${MAX_USED_GIB:-16}" --sample-timeout "${SAMPLE_TIMEOUT:-120s}" \
    --strategy "${STRATEGY:-coverage}" --store "$store" --no-mlflow --json \
    ${plan:+--plan "$plan"} > "$out/summary.json"
  code=$?
  kill "$copier" 2>/dev/null
  copier=""
  save_results
  echo "agent exit code: $code"
  cat "$out/summary.json"

  if [ "$repeat" -gt 0 ] && [ -f "$store/spool.jsonl" ]; then
    section "repeat"
    echo "repeatability: $repeat spec(s) again, fresh processes"
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
        --budget "$(( left - 10 ))s" --grace 5s --max-used-gib "${MAX_USED_GIB:-16}" \
        --sample-timeout "${SAMPLE_TIMEOUT:-120s}" --plan "$work/repeat.jsonl" \
        --store "$work/repeat" --no-mlflow > /dev/null
      echo "repeat exit code: $?"
    fi
  fi
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
  size) travel_size ;;
  run) shift; run "$@" ;;
  import) shift; import_samples "$@" ;;
  *) echo "usage: device_session.sh prepare | size | run [OUT] | import OUT" >&2; exit 2 ;;
esac
