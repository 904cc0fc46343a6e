"""axolotl: the documents read, and the YAML configs (with their DeepSpeed files) a statement
points to."""

from __future__ import annotations

import json
import posixpath
import re

from vram_ml.published.document_text import load_yaml
from vram_ml.published.parsed_row import make_row
from vram_ml.published.requirement_pins import versions_from_files

SOURCE = "axolotl"
REPOSITORY = "axolotl-ai-cloud/axolotl"
PIN = "067b021c8b87a9e5e380b9173c704cf7340e30f5"

DOCS = [
    "examples/LiquidAI/README.md",
    "examples/apertus/README.md",
    "examples/arcee/README.md",
    ("examples/archived/code-llama/README.md", ["examples/code-llama/README.md"]),
    ("examples/archived/dbrx/README.md", ["examples/dbrx/README.md"]),
    ("examples/archived/yi-34B-chat/README.md", ["examples/yi-34B-chat/README.md"]),
    "examples/deepseek-v4/README.md",
    "examples/devstral/README.md",
    "examples/gemma4-unified/README.md",
    "examples/gemma4/README.md",
    "examples/glm45/README.md",
    "examples/glm47-flash/README.md",
    "examples/gpt-oss/README.md",
    "examples/granite4/README.md",
    "examples/hunyuan/README.md",
    "examples/internvl3_5/README.md",
    "examples/jamba/README.md",
    "examples/kimi-linear/README.md",
    "examples/llama-2/README.md",
    "examples/llama-3/README.md",
    "examples/llama-4/README.md",
    "examples/magistral/README.md",
    "examples/magistral/think/README.md",
    "examples/magistral/vision/README.md",
    "examples/mimo/README.md",
    "examples/ministral/README.md",
    "examples/ministral3/think/README.md",
    "examples/mistral-medium-3_5/README.md",
    ("examples/mistral-small/README.md", ["examples/mistral/mistral-small/README.md"]),
    "examples/mistral4/README.md",
    "examples/olmo3/README.md",
    "examples/plano/README.md",
    "examples/qwen3-next/README.md",
    "examples/qwen3.5/README.md",
    "examples/qwen3/README.md",
    "examples/seed-oss/README.md",
    "examples/smolvlm2/README.md",
    "examples/trinity/README.md",
    "examples/voxtral/README.md",
]
TARGETS = []
for d in DOCS:
    if isinstance(d, tuple):
        TARGETS.append({"doc": d[0], "paths": [d[0]] + d[1], "commit": PIN})
    else:
        TARGETS.append({"doc": d, "paths": [d], "commit": PIN})

DOC_OF = {p: t["doc"]
          for t in TARGETS
          for p in t["paths"]}  # old path -> current path (row keys use the latter)
NO_CODEBLOCK = {"examples/qwen3.5/README.md"}  # its code-block comments repeat the table values
VISION_HINT = re.compile(r"vision|-vl-|_vl|internvl|smolvlm|lfm2-vl|VLM", re.I)

YAML_KEYS = [
    "base_model", "processor_type", "adapter", "load_in_4bit", "load_in_8bit",
    "quantize_moe_experts", "model_quantization_config", "model_quantization_config_kwargs",
    "lora_r", "lora_alpha", "lora_target_modules", "lora_target_linear", "lora_target_parameters",
    "lora_modules_to_save", "unfrozen_parameters", "sequence_len", "micro_batch_size",
    "gradient_accumulation_steps", "gradient_checkpointing", "gradient_checkpointing_kwargs",
    "activation_offloading", "sample_packing", "pad_to_sequence_len", "flash_attention",
    "sdp_attention", "flex_attention", "xformers_attention", "attn_implementation",
    "gemma4_hybrid_attn_impl", "optimizer", "bf16", "fp16", "tf32", "deepspeed", "fsdp",
    "fsdp_version", "fsdp_config", "plugins", "liger_rope", "liger_rms_norm",
    "liger_glu_activation", "liger_fused_linear_cross_entropy", "cut_cross_entropy",
    "chunked_cross_entropy", "use_kernels", "lora_mlp_kernel", "lora_qkv_kernel", "lora_o_kernel",
    "torch_compile", "context_parallel_size", "tensor_parallel_size", "image_size",
    "image_resize_algorithm", "skip_prepare_dataset", "use_dsv4_kernels",
    "experimental_skip_move_to_device"
]

GPU_NAMES = {
    "B200": ("NVIDIA B200", None), "H100": ("NVIDIA H100 80GB", 80), "A100": ("NVIDIA A100", None)
}

MEM_RX = re.compile(
    r"(?<![\dx.\-])(?P<val>~?\s?(?P<num>\d+(?:\.\d+)?)\s?(?P<unit>GiB|GB)(?P<pg>/GPU|/gpu)?)")
GPU_RX = re.compile(r"(?P<n>\d+)x(?:(?P<card>\d+)GB|(?P<name>B200|H100|A100))")


# ---------------------------------------------------------------------------
def _yaml_facts(repo, commit, ypath):
    txt = repo.read(commit, ypath) if ypath else None
    if txt is None:
        return None
    y = load_yaml(txt)
    if not isinstance(y, dict):
        return None
    s = {k: y[k] for k in YAML_KEYS if k in y}
    if isinstance(y.get("datasets"), list):
        s["datasets"] = [{k: d.get(k)
                          for k in ("path", "type") if isinstance(d, dict)}
                         for d in y["datasets"]][:3]
    ds = None
    if y.get("deepspeed"):
        dt = repo.read(commit, y["deepspeed"])
        if dt:
            try:
                j = json.loads(dt)
                z = j.get("zero_optimization", {})
                ds = {
                    "stage": z.get("stage"), "offload": [
                        f"{k}:{(z.get(k) or {}).get('device')}"
                        for k in ("offload_optimizer", "offload_param")
                        if (z.get(k) or {}).get("device") not in (None, "none")
                    ] or None
                }
            except Exception:
                ds = None
    return {"path": ypath, "settings": s, "ds": ds}


def build_context(repo, commit, path, first_published=None):
    vc = first_published or commit
    files = [f for f in ("requirements.txt", "pyproject.toml") if repo.exists(vc, f)]
    versions, vev = versions_from_files(repo, vc, files)
    ver = None
    vt = repo.read(vc, "VERSION")
    if vt:
        ver = vt.strip()
    else:
        it = repo.read(vc, "src/axolotl/__init__.py") or ""
        m = re.search(r'__version__\s*=\s*"([^"]+)"', it)
        ver = m.group(1) if m else None
    versions["axolotl"] = ver
    vev = f"pins at the commit that first published the number ({vc}): " + vev + (
        f"; axolotl version {ver}" if ver else "")
    ev_logger = repo.cite(commit, "src/axolotl/core/trainers/base.py",
                          'logs["memory/device_reserved (GiB)"]')
    ev_bench = repo.cite(commit, "src/axolotl/utils/bench.py",
                         "reserved = torch.cuda.max_memory_reserved(device)")
    return {
        "commit": commit, "measured_at": vc, "versions": versions, "versions_evidence": vev,
        "ev_logger": ev_logger, "ev_bench": ev_bench, "_repo": repo, "_yaml": {}
    }


def _yaml(ctx, ypath, doc_dir):
    """Facts for a YAML named in the README; if missing at the commit, try the README's own
    directory."""
    repo, c = ctx["_repo"], ctx["commit"]
    key = ypath
    if key in ctx["_yaml"]:
        return ctx["_yaml"][key]
    res = None
    note = None
    if ypath:
        res = _yaml_facts(repo, c, ypath)
        if res is None:
            alt = posixpath.join(doc_dir, posixpath.basename(ypath))
            res = _yaml_facts(repo, c, alt)
            if res is not None:
                note = (f"README names {ypath}, which does not exist at {c}; used {alt} (same file "
                        "name in the README's directory)")
    ctx["_yaml"][key] = (res, note)
    return ctx["_yaml"][key]


# ---------------------------------------------------------------------------
def _gpu_from_spec(m):
    if m is None:
        return None, None, None
    n = int(m.group("n"))
    if m.group("card"):
        return None, int(m.group("card")), n
    name, card = GPU_NAMES.get(m.group("name"), (m.group("name"), None))
    return name, card, n


def _norm(s):
    return re.sub(r"\d+(?:\.\d+)?", "#", s.strip())


def _base_row(ctx, repository, path, commit, commit_date):
    return make_row(source=SOURCE, repository=repository, path=path, commit=commit,
                    commit_date=commit_date)
