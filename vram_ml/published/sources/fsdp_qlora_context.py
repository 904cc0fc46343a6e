"""fsdp_qlora: the documents read, the models and GPUs they name, and train.py's defaults at a
commit."""

from __future__ import annotations

import re

SOURCE = "fsdp_qlora"
REPOSITORY = "AnswerDotAI/fsdp_qlora"
PIN = "05ed9f2a60f96a0795cb082bceab70a9b19fd213"
TARGETS = [
    {"doc": "benchmarks_03_2024.md", "paths": ["benchmarks_03_2024.md"], "commit": PIN},
    # the scripts are working notes: earlier versions hold untested placeholder commands
    # (--batch_size 128)
    # without comments, so only the pinned version is read
    {
        "doc": "benchmarking/small_gpu_benchmarking.sh",
        "paths": ["benchmarking/small_gpu_benchmarking.sh"], "commit": PIN, "history": False
    },
    {
        "doc": "benchmarking/large_gpu_benchmarking.sh",
        "paths": ["benchmarking/large_gpu_benchmarking.sh"], "commit": PIN, "history": False
    },
]
# named in the small_gpu_benchmarking.sh header
SCRIPT_TRAIN_COMMIT = "299f51a98246d77f5e556fe1a27ab29e107530f0"

MODELS = {  # caption / doc label -> (HF id or None, how established)
    "Llama-2 7B": ("meta-llama/Llama-2-7b-hf", "template command in the doc: --model_name "
                                               "meta-llama/Llama-2-7b-hf"),
    "Llama-2 70B": ("meta-llama/Llama-2-70b-hf", "assumed: doc says 'Llama-2 70B' (base model like "
                                                 "the 7B template)"),
    "Yi 34B": ("01-ai/Yi-34B", "assumed: doc says 'Yi 34B' without a repo id"),
    "Mistral 7B v0.2 Base": (None, "doc says 'Mistral 7B v0.2 Base' without a repo id"),
}
GPUS = {
    "3090": ("NVIDIA GeForce RTX 3090", 24, 2),
    "4090": ("NVIDIA GeForce RTX 4090", 24, 2),
    "A5000 24GB": ("NVIDIA RTX A5000", 24, None),
    "A6000 Ada 48GB": ("NVIDIA RTX 6000 Ada Generation ('A6000 Ada')", 48, None),
    "A100 40GB SMX": ("NVIDIA A100-SXM4-40GB", 40, None),
    "H100 80GB SXM": ("NVIDIA H100 SXM 80GB", 80, None),
    "A6000": ("NVIDIA RTX A6000", 48, None),
}


def _defaults(repo, commit):
    """train.py argument defaults (name -> default string) from the fsdp_qlora()/main()
    signature."""
    txt = repo.read(commit, "train.py") or ""
    k0 = txt.rfind("world_size: int = -1")  # the argument signature of the entry point
    txt = txt[k0:] if k0 >= 0 else txt
    d, ev = {}, {}
    for k in [
            "train_type", "batch_size", "context_length", "use_gradient_checkpointing",
            "reentrant_checkpointing", "use_cpu_offload", "use_activation_cpu_offload",
            "sharding_strategy", "use_ddp", "precision", "lora_rank", "lora_alpha",
            "lora_target_modules", "optimizer", "low_memory", "dataset"
    ]:
        m = re.search(r"^[ \t]+" + k + r"[ \t]*(?::.*?)?[ \t]=[ \t]*([^,#\n]+),", txt, flags=re.M)
        if m:
            d[k] = m.group(1).strip().strip('"')
            ev[k] = repo.cite(commit, "train.py", m.group(0).strip()[:40])
    return d, ev


def build_context(repo, commit, path, first_published=None):
    ctx = {"commit": commit}
    ctx["defaults"], ctx["defaults_ev"] = _defaults(repo, commit)
    ctx["script_defaults"], ctx["script_defaults_ev"] = _defaults(repo, SCRIPT_TRAIN_COMMIT)
    ctx["ev_peak"] = [
        repo.cite(commit, "train.py", "torch.cuda.reset_peak_memory_stats(local_rank)"),
        repo.cite(commit, "train.py",
                  "peak_reserved_memory  = torch.cuda.max_memory_reserved(local_rank)"),
        repo.cite(commit, "train.py",
                  "peak_allocated_memory = torch.cuda.max_memory_allocated(local_rank)"),
        repo.cite(commit, "train.py", "if epoch == 0 and (rank == 0 or args['verbose']):")
    ]
    ctx["ev_logger"] = repo.cite(commit, "train.py", "if rank != 0: return")
    rd = repo.read(commit, "README.md") or ""
    st, sev = {}, []
    m = re.search(r'"transformers(!=[^"]+)"', rd)
    if m:
        st["transformers"] = m.group(1)
        sev.append(repo.cite(commit, "README.md", m.group(0)))
    m = re.search(r"pip install bitsandbytes(>=[\d.]+)", rd)
    if m:
        st["bitsandbytes"] = m.group(1)
        sev.append(repo.cite(commit, "README.md", m.group(0)))
    m = re.search(r"Pytorch >= ([\d.]+)\]", rd)
    if m:
        st["torch"] = ">=" + m.group(1) + " (recommended)"
        sev.append(repo.cite(commit, "README.md", m.group(0)))
    ctx["stated"] = st
    ctx["stated_ev"] = [x for x in sev if x]
    return ctx


def _versions(ctx):
    v = {
        k: None
        for k in [
            "torch", "transformers", "peft", "trl", "bitsandbytes", "deepspeed", "flash_attn",
            "accelerate"
        ]
    }
    v["stated_in_source"] = ctx.get("stated") or None
    ev = "no requirements file in the repository; README install instructions: " + " ; ".join(
        ctx.get("stated_ev", []))
    return v, ev


def _truthy(s):
    return str(s).strip().lower() in ("true", "1", "yes")
