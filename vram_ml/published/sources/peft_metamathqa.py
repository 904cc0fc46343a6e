"""Parser for huggingface/peft method_comparison/MetaMathQA/results/*.json (every git version).

parse(text, *, repository, path, commit, commit_date, context) -> list[dict]

One output row per train_info memory metric:
  {cuda,accelerator}_memory_max            -> statistic "reserved", is_peak True
  {cuda,accelerator}_memory_reserved_99th  -> statistic "reserved", is_peak False (p99 of per-step
  samples)
  {cuda,accelerator}_memory_reserved_avg   -> statistic "reserved", is_peak False (mean of per-step
  samples)
Per-eval-window averages inside train_info.metrics ("mem allocated avg", "mem reserved avg") are
not emitted.

`context` (built by `build_context` below):
  runner: {"commit","source" ("peft-commit-hash" | "results-commit"), "utils_text","run_py_text",
           "utils_path","run_py_path", "defaults_text","defaults_path"}
"""
from __future__ import annotations

import json
import re

from vram_ml.published.document_text import find_line
from vram_ml.published.units import is_exact_bytes, value_bytes

SOURCE = "peft-metamathqa"
REPOSITORY = "huggingface/peft"

METRICS = [
    # suffix, is_peak, aggregation
    ("memory_max", True, "max_memory_reserved() at end of run minus reserved at init (whole run)"),
    ("memory_reserved_99th", False,
     "99th percentile of memory_reserved()-init sampled after each train step"),
    ("memory_reserved_avg", False, "mean of memory_reserved()-init sampled after each train step"),
]

TRAIN_PAD_RE = r'batch = tokenizer\.pad\(batch, return_tensors="pt"\)\.to'

PEFT_CFG_KEEP = [
    "peft_type",
    "task_type",
    "r",
    "lora_alpha",
    "lora_dropout",
    "target_modules",
    "exclude_modules",
    "modules_to_save",
    "use_dora",
    "use_rslora",
    "init_lora_weights",
    "bias",
    "layers_to_transform",
    "use_qalora",
    "lora_bias",
    "target_parameters",
    "use_bdlora",
    "target_r",
    "init_r",
    "num_virtual_tokens",
    "n_frequency",
    "rank",
    "vector_length",
    "num_vectors",
    "alpha",
    "block_size",
    "boft_block_size",
    "boft_block_num",
    "oft_block_size",
    "feedforward_modules",
    "vera_dropout",
    "projection_prng_key",
]


def _ln(ctx_text, path, commit, pattern, regex=False):
    if not ctx_text:
        return None
    n, _ = find_line(ctx_text, pattern, regex=regex)
    return f"{path}@{commit}:{n}" if n else None


def _quote_line(text, key, value_str):
    """Find the verbatim `"key": value` fragment and its line number."""
    pat = re.compile(r'"' + re.escape(key) + r'"\s*:\s*' + re.escape(value_str) + r"(?![0-9.eE])")
    for i, line in enumerate(text.splitlines(), start=1):
        m = pat.search(line)
        if m:
            return i, m.group(0)
    return None, None


def _raw_number(text, key):
    """The number exactly as written in the JSON text for a unique key."""
    m = re.findall(r'"' + re.escape(key) + r'"\s*:\s*(-?[0-9][0-9.eE+\-]*)', text)
    return m[0] if len(m) == 1 else (m[0] if m else None)


def parse(text: str, *, repository: str, path: str, commit: str, commit_date: str,
          context: dict) -> list[dict]:
    d = json.loads(text)
    run_info = d.get("run_info", {})
    ti = d.get("train_info", {})
    meta = d.get("meta_info", {})
    tc = run_info.get("train_config", {}) or {}
    pc = run_info.get("peft_config")
    pkg = meta.get("package_info", {}) or {}
    sysi = meta.get("system_info", {}) or {}
    runner = context.get("runner") or {}

    prefix = "accelerator_" if any(k.startswith("accelerator_memory") for k in ti) else "cuda_"
    gpu_key = "accelerator" if "accelerator" in sysi else ("gpu" if "gpu" in sysi else None)
    gpu_model = sysi.get(gpu_key) if gpu_key else None

    # ---------------- statistic evidence from the runner code
    u_txt, u_path, rc = runner.get("utils_text"), runner.get("utils_path"), runner.get("commit")
    r_txt, r_path = runner.get("run_py_text"), runner.get("run_py_path")
    ev_max = "; ".join(x for x in [
        (_ln(u_txt, u_path, rc, r"memory_final = .*max_memory_reserved\(\)", regex=True) or "") +
        " final = torch max_memory_reserved() read after training + test-set evaluation",
        (_ln(u_txt, u_path, rc, r'"(cuda|accelerator)_memory_max": \(', regex=True) or "") +
        " reported value = final - init",
        (_ln(u_txt, u_path, rc, "reset_peak_memory_stats()") or "") +
        " init_accelerator() resets peak stats before the model is loaded; init = "
        "max_memory_reserved() then",
    ] if x)
    ev_samp = "; ".join(x for x in [
        (_ln(r_txt, r_path, rc, r"memory_reserved\(\) - ", regex=True) or "") +
        " memory_reserved() - init appended after every optimizer step",
        (_ln(u_txt, u_path, rc, "np.percentile(") or "") + " 99th percentile of those samples",
        (_ln(u_txt, u_path, rc, r"memory_avg = ", regex=True) or "") + " mean of those samples",
    ] if x)

    # ---------------- run settings (all stated in the result file itself unless noted)
    assumptions, caveats = [], []
    model = tc.get("model_id")
    dtype = tc.get("dtype")
    quant = {
        "int4": "bnb_int4 (BitsAndBytesConfig(load_in_4bit=True))",
        "int8": "bnb_int8 (BitsAndBytesConfig(load_in_8bit=True))"
    }.get(dtype, "none")
    if pc:
        peft_method = str(pc.get("peft_type", "")).lower() or None
        method = peft_method
        if peft_method == "lora" and pc.get("use_dora"):
            method = "lora(dora)"
    else:
        peft_method = None
        method = "full"
    if "use_gc" in tc:
        gc = tc.get("use_gc")
    else:
        gc = False
        assumptions.append(
            "gradient_checkpointing=false: train_config has no use_gc key; the MetaMathQA runner "
            "only "
            "gained a gradient-checkpointing option in peft commit cc8973120 (2026-04-15) and "
            "never enabled it before" + (f" (checked get_base_model in {u_path}@{rc})" if u_txt and
                                         "gradient_checkpointing_enable" not in u_txt else ""))
    opt = tc.get("optimizer_type")
    if opt is None:
        opt = "AdamW"
        ln = _ln(u_txt, u_path, rc, "torch.optim.AdamW(")
        assumptions.append("optimizer=AdamW: train_config has no optimizer_type; runner hard-codes "
                           "torch.optim.AdamW" + (f" ({ln})" if ln else ""))
    pc_sel = None
    if pc:
        pc_sel = {}
        for k in PEFT_CFG_KEEP:
            if k in pc:
                v = pc[k]
                if len(json.dumps(v)) <= 400:
                    pc_sel[k] = v
                else:
                    pc_sel[k] = f"<{type(v).__name__} omitted, {len(json.dumps(v))} chars>"
    run = {
        "model": model,
        "method": method,
        "peft_method": peft_method,
        "quant": quant,
        "lora_rank": (pc or {}).get("r"),
        "lora_alpha": (pc or {}).get("lora_alpha"),
        "lora_target": (pc or {}).get("target_modules"),
        "peft_config": pc_sel,
        "per_device_batch_size": tc.get("batch_size"),
        "batch_size_eval": tc.get("batch_size_eval"),
        "seq_len": tc.get("max_seq_length"),
        "packing": False,
        "padding_free": False,
        "gradient_checkpointing": gc,
        "torch_dtype": dtype,
        "use_amp": tc.get("use_amp"),
        "autocast_adapter_dtype": tc.get("autocast_adapter_dtype"),
        "attention": tc.get("attn_implementation"),
        "optimizer": opt,
        "optimizer_kwargs": tc.get("optimizer_kwargs"),
        "grad_norm_clip": tc.get("grad_norm_clip"),
        "compile": tc.get("compile"),
        "max_steps": tc.get("max_steps"),
        "eval_steps": tc.get("eval_steps"),
        "generation_kwargs": tc.get("generation_kwargs"),
        "num_gpus": 1,
        "num_trainable_params": ti.get("num_trainable_params"),
        "num_total_params": ti.get("num_total_params"),
        "experiment_name": run_info.get("experiment_name"),
        "dataset": "meta-math/MetaMathQA (train) + openai/gsm8k (valid/test)",
    }
    pad_ref = (_ln(r_txt, r_path, rc, TRAIN_PAD_RE, regex=True) or
               _ln(r_txt, r_path, rc, "tokenizer.pad(batch") or "run.py")
    assumptions.append(
        "packing=false/padding_free=false: the runner pads each bucketed batch with tokenizer.pad "
        f"(no packing) -- {pad_ref}")
    assumptions.append(
        "seq_len=max_seq_length: used as tokenizer.model_max_length; samples longer than 1300 "
        "chars are "
        "filtered out in data.py, batches are padded to the longest sample, not to seq_len")
    assumptions.append(
        "num_gpus=1: single-process custom training loop (no accelerate/DDP/FSDP in run.py)")
    if tc.get("attn_implementation") is None:
        assumptions.append(
            "attention=null: attn_implementation not set, transformers picks its default "
            "(typically sdpa)")
    assumptions.append(
        "dataset: from method_comparison/MetaMathQA/data.py and meta_info.dataset_info")

    caveats.append(
        "peak (max_memory_reserved over the whole process) includes model loading, validation "
        "generation every "
        "eval_steps with batch_size_eval, and the final test-set generation" +
        (", plus a wiki-loss forgetting pass before and after training (runner at %s)" %
         (rc[:9] if rc else "?") if runner.get("wiki_forgetting_pass") else ""))
    if runner.get("empty_cache_every"):
        caveats.append(
            f"runner calls empty_cache() every {runner['empty_cache_every']} step(s): affects "
            "reserved avg/p99 samples, not the max")
    caveats.append(
        "init (reserved memory after reset_peak_memory_stats, before model load) is subtracted; "
        "CUDA context is not included")
    caveats.append(
        "status='{}'; cancelled/OOM runs are stored in cancelled_results/ and are not part of "
        "results/".format(ti.get("status")))
    if runner.get("source") == "results-commit":
        caveats.append(
            "runner code read at the results commit (peft-commit-hash of the result not in the "
            "mirror)")
    if ti.get("status") != "success":
        caveats.append(f"train_info.status={ti.get('status')}")

    versions = {
        "torch": pkg.get("torch-version"),
        "transformers": pkg.get("transformers-version"),
        "peft": pkg.get("peft-version"),
        "peft_commit": pkg.get("peft-commit-hash"),
        "trl": None,
        "bitsandbytes": pkg.get("bitsandbytes-version"),
        "accelerate": None,
        "flash_attn": None,
        "datasets": pkg.get("datasets-version"),
    }
    stack = {
        "trainer": "custom_loop",
        "distributed": "none",
        "evidence": (
            f"{r_path}@{rc}: def train(...) runs a hand-written loop (optimizer.zero_grad / "
            "loss.backward / "
            f"optimizer.step) on one device; no transformers.Trainer")
        if r_path else "run.py custom loop",
    }

    exp = run_info.get("experiment_name")
    nums = []
    rows = []
    for suffix, is_peak, agg in METRICS:
        key = prefix + suffix
        if key not in ti:
            continue
        raw = _raw_number(text, key)
        nums.append(raw)
    mkey = json.dumps({"src": SOURCE, "experiment": exp, "mem": nums}, sort_keys=True)

    for suffix, is_peak, agg in METRICS:
        key = prefix + suffix
        if key not in ti:
            continue
        raw = _raw_number(text, key)
        ln, frag = _quote_line(text, key, raw) if raw is not None else (None, None)
        vb, exact = value_bytes(raw, "bytes"), is_exact_bytes(raw, "bytes")
        rows.append({
            "source": SOURCE,
            "repository": repository,
            "path": path,
            "commit": commit,
            "commit_date": commit_date,
            "also_in_commits": [],
            "locator": f"line {ln}, json key train_info.{key}",
            "column": f"train_info.{key}",
            "column_canonical": f"train_info.<cuda|accelerator>_{suffix}",
            "quote": frag,
            "header_quote": None,
            "value": raw,
            "unit": "bytes",
            "value_bytes": vb,
            "statistic": "reserved",
            "is_peak": is_peak,
            "aggregation": agg,
            "statistic_evidence": ev_max if suffix == "memory_max" else ev_samp,
            "outcome": "ok",
            "outcome_evidence": f"train_info.status={ti.get('status')!r}, "
            f"run_info.error_msg={run_info.get('error_msg', '')!r}",
            "card_memory_bytes": None,
            "gpu_model": gpu_model,
            "gpu_model_evidence": f"{path}@{commit}: meta_info.system_info.{gpu_key}",
            "gpu_count": 1,
            "stack": stack,
            "versions": versions,
            "versions_evidence": f"{path}@{commit}: meta_info.package_info",
            "run": run,
            "assumptions": list(assumptions),
            "caveats": list(caveats) + ([] if exact else ["non-integer byte value"]),
            "measurement_key": mkey,
            "result_created_at": run_info.get("created_at"),
        })
    return rows


def build_context(sources, version):
    """The runner code at the commit the result names (utils.py, run.py): what is measured."""
    repo = sources.repository(REPOSITORY)
    commit = version["runner_commit"]
    utils_path = "method_comparison/MetaMathQA/utils.py"
    run_path = "method_comparison/MetaMathQA/run.py"
    utils_text, run_text = repo.read(commit, utils_path), repo.read(commit, run_path)
    every = None
    if run_text:
        schedule = re.search(r"EMPTY_CACHE_SCHEDULE = (\d+)", run_text)
        every = int(schedule.group(1)) if schedule else (1 if "empty_cache()" in run_text else None)
    return {
        "runner": {
            "commit": commit, "source": version["runner_source"], "utils_text": utils_text,
            "utils_path": utils_path, "run_py_text": run_text, "run_py_path": run_path,
            "empty_cache_every": every, "wiki_forgetting_pass": bool(run_text and
                                                                     "wiki_loss_before" in run_text)
        }
    }
