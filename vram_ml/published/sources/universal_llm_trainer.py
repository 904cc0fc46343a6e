"""ljm565/universal-llm-trainer docs/gpu_test.md: "Peak Mem. (Model Mem.)" per model x method x GPU.

Each row links the YAML config used (../config/llm_*.yaml).  The project's own code never calls
torch.cuda.max_memory_*; its only GPU-memory readouts are torch.cuda.memory_reserved() on rank 0
(progress bar each step, and after model load), printed in 1E9 'G'.
"""
from __future__ import annotations

import posixpath
import re

from vram_ml.published.document_text import load_yaml, md_tables
from vram_ml.published.parsed_row import CARD_BASIS, make_row, mem_value, new_run, new_stack
from vram_ml.published.requirement_pins import versions_from_files
from vram_ml.published.units import card_bytes, value_bytes

SOURCE = "universal-llm-trainer"
REPOSITORY = "ljm565/universal-llm-trainer"
TARGETS = [{
    "doc": "docs/gpu_test.md", "paths": ["docs/gpu_test.md"],
    "commit": "aefdc4a4982c8e9e186d4169aa5b902db1067a52"
}]

GPU_INFO = {  # heading / cell name -> (gpu_model, nominal GB, note)
    "H100": ("NVIDIA H100", 80, "section heading 'NVIDIA H100' (80GB variant assumed; H100 NVL "
                                "would be 94GB)"),
    "Pro 6000": ("NVIDIA RTX PRO 6000", 96, "section heading 'NVIDIA RTX Pro 6000' (96GB)"),
    "A100": ("NVIDIA A100 80GB", 80, "section heading 'NVIDIA A100'; 80GB variant because "
                                     "single-GPU rows reach "
                                     "78-80 GiB"),
}


def _model_id(model, size):
    """Mirror of choose_proper_model() in src/utils/training_utils.py (nearest size in a fixed
    list)."""
    m = (model or "").lower()
    try:
        sz = float(str(size).lower().rstrip("b"))
    except ValueError:
        sz = None
    if m == "llama3":
        return "meta-llama/Meta-Llama-3-8B-Instruct"
    if m == "llama3.1":
        return "meta-llama/Llama-3.1-70B-Instruct" if sz and abs(sz - 70) < abs(sz - 8) else \
            "meta-llama/Llama-3.1-8B-Instruct"
    if m == "llama2":
        return "meta-llama/Llama-2-13b-hf"
    if m in ("gemma", "gemma1"):
        return "google/gemma-7b" if sz and abs(sz - 7) < abs(sz - 2) else "google/gemma-2b"
    if m == "gemma2":
        return "google/gemma-2-9b-it"
    if m == "phi3":
        return ("microsoft/Phi-3-medium-4k-instruct" if sz and sz >= 10
                else "microsoft/Phi-3-mini-128k-instruct")
    if m == "qwen3":
        cands = [(8, "Qwen/Qwen3-8B"), (14, "Qwen/Qwen3-14B"),
                 (30, "Qwen/Qwen3-30B-A3B-Instruct-2507")]
        return min(cands, key=lambda c: abs(c[0] - (sz or 0)))[1]
    return None


def build_context(repo, commit, path, first_published=None):
    ctx = {"commit": commit, "configs": {}}
    ctx["ev_mem"] = [
        repo.cite(commit, "src/trainer/trainer.py", "torch.cuda.memory_reserved() / 1E9"),
        repo.cite(commit, "src/utils/__init__.py", "torch.cuda.memory_reserved() / 1E9")
    ]
    ctx["ev_rank0"] = repo.cite(commit, "src/trainer/trainer.py", "if self.is_rank_zero:")
    ctx["ev_choose"] = repo.cite(commit, "src/utils/training_utils.py", "def choose_proper_model")
    ctx["ev_fsdp_off"] = repo.cite(commit, "src/trainer/build.py",
                                   "cpu_offload=CPUOffload(offload_params=True)")
    ctx["versions"], ctx["versions_evidence"] = versions_from_files(
        repo, commit, ["docker/requirements.txt", "requirements.txt"])
    ctx["_repo"] = repo
    return ctx


def _config(ctx, cfg_path):
    if cfg_path in ctx["configs"]:
        return ctx["configs"][cfg_path]
    repo, c = ctx["_repo"], ctx["commit"]
    txt = repo.read(c, cfg_path)
    y = load_yaml(txt) if txt else None
    out = None
    if isinstance(y, dict):
        out = {"yaml": y, "path": cfg_path}
        pc = y.get("peft_config_path")
        if pc:
            t2 = repo.read(c, pc)
            out["lora"] = load_yaml(t2) if t2 else None
            out["lora_path"] = pc
        qc = y.get("quant_config")
        if qc:
            t3 = repo.read(c, qc)
            out["quant"] = load_yaml(t3) if t3 else None
            out["quant_path"] = qc
    ctx["configs"][cfg_path] = out
    return out


def parse(text, *, repository, path, commit, commit_date, context):
    rows = []
    lines = text.splitlines()
    # sections
    heads = [(i, text_line) for i, text_line in enumerate(lines)
             if re.match(r"^### \d+\. NVIDIA ", text_line)]
    tabs = md_tables(text)
    stat_ev = " ; ".join(x for x in context.get("ev_mem", []) if x) + (
        " -- the only GPU-memory readouts in the code are torch.cuda.memory_reserved() (current, "
        "not a peak API) printed on rank 0 in the training progress bar each step and after "
        "model load; no max_memory_*, nvml or nvidia-smi calls. gpu_test.md does not say how "
        "'Peak' was read.")
    for hi, (li, hl) in enumerate(heads):
        end = heads[hi + 1][0] if hi + 1 < len(heads) else len(lines)
        block = lines[li:end]
        note = "\n".join(text_line for text_line in block if text_line.startswith(">"))
        gname = hl.split("NVIDIA", 1)[1].strip()
        env = re.search(r"Environments: ([^\n]*)", note)
        envs = env.group(1) if env else ""
        stated = {}
        for k, pat in (("torch", r"torch==([\w.+]+)"), ("transformers", r"transformers==([\w.]+)"),
                       ("bitsandbytes", r"bitsandbytes==([\w.]+)")):
            m = re.search(pat, envs)
            if m:
                stated[k] = "==" + m.group(1)
        bs = re.search(r"Batch size: (\d+)", note)
        seq = re.search(r"Sequnece length: ([\d,]+)( \([^)]*\))?", note)
        ga_full = re.search(r"Full fine-tuning: (\d+)", note)
        ga_lora = re.search(r"LoRA: (\d+)", note)
        gc = "Gradient checkpointing" in note
        opt = re.search(r"Optimizer: ([^\n]+)", note)
        dtype = re.search(r"Model type: ([^\n]+)", note)
        foot_star = next((text_line for text_line in block if text_line.startswith("*: ")), None)
        foot_2 = next((text_line for text_line in block if text_line.startswith("**: ")), None)
        tab = next((t for t in tabs if li < t["start_line"] <= end), None)
        if not tab:
            continue
        hdr = tab["header"]
        ci_peak = next(k for k, h in enumerate(hdr) if h.startswith("Peak Mem"))
        for r in tab["rows"]:
            c = r["cells"]
            if len(c) < len(hdr):
                continue
            mm = re.match(r"\[(?P<name>[^\]]+)\]\((?P<link>[^)]+)\)\s*(?P<mark>\**)", c[0])
            if not mm:
                continue
            name, link, mark = mm.group("name"), mm.group("link"), mm.group("mark")
            cfg_path = posixpath.normpath(posixpath.join(posixpath.dirname(path), link))
            method_l = c[1].strip()
            gm = re.match(r"(?P<g>.+?) x (?P<n>\d+)$", c[2].strip())
            gkey = gm.group("g").strip() if gm else gname
            ngpu = int(gm.group("n")) if gm else None
            peak = c[ci_peak].strip()
            pm = re.match(r"^(?P<val>(?P<num>\d+(?:\.\d+)?) GiB|OOM)\s*\((?P<model>[^)]*)\)$", peak)
            if not pm:
                continue
            row = make_row(source=SOURCE, repository=repository, path=path, commit=commit,
                           commit_date=commit_date)
            row["row_key"] = f"ult|{gname}|{cfg_path}|{method_l}|{c[2].strip()}"
            row["locator"] = (
                f"table under '{hl.strip()}' ({path} line {r['line_no']}) row '{name}' / "
                f"'{method_l}' / '{c[2].strip()}' column '{hdr[ci_peak]}'")
            row["quote"] = r["line"]
            row["header_quote"] = tab["header_line"]
            a, cav = [], []
            if pm.group("val") == "OOM":
                row["outcome"] = "oom"
            else:
                row["outcome"] = "ok"
                mem_value(
                    row, pm.group("val"), pm.group("num"), "GiB", "GiB",
                    "written 'GiB' in the doc (kept, x2^30) although the code's readout prints "
                    "memory_reserved()/1E9 with a 'G' suffix")
                alt = value_bytes(pm.group("num"), "GB")
                cav.append(
                    "unit conflict: doc says GiB, code prints memory_reserved()/1E9 'G' (GB); if "
                    "the number "
                    f"was copied from the progress bar, value_bytes would be {alt} instead of "
                    f"{row['value_bytes']}")
            row["secondary_values"] = {
                "model_mem": pm.group("model"), "sec_per_step": c[-1].strip()
            }
            row["statistic"] = "reserved"
            row["statistic_confidence"] = "inferred"
            row["statistic_evidence"] = stat_ev
            cav.append(
                "statistic inferred from code (only memory_reserved() readouts exist): 'Peak' is "
                "presumably the "
                "largest progress-bar value seen (sampled once per optimizer step, after the "
                "step), not "
                "torch.cuda.max_memory_reserved(); could also have been read from nvidia-smi")
            gi = GPU_INFO.get(gkey)
            if gi:
                row["gpu_model"], nom, gnote = gi
                row["card_memory_bytes"] = card_bytes(nom)
                row["card_memory_basis"] = CARD_BASIS + "; " + gnote
            row["gpu_count"] = ngpu
            row["per_gpu"] = True
            row["per_gpu_evidence"] = (
                f"rank-0 readout ({context.get('ev_rank0')}); for the 2-GPU FSDP rows the "
                f"number is assumed to be GPU 0's")
            cfg = _config(context, cfg_path) or {}
            y = cfg.get("yaml") or {}
            lora = cfg.get("lora") or {}
            quant = cfg.get("quant") or {}
            fsdp = bool(y.get("fsdp_train"))
            fh = y.get("fsdp_hyperparameters") or {}
            off = bool(fh.get("cpu_offload")) if fsdp else False
            mid = _model_id(y.get("model"), y.get("model_size"))
            method = {"full": "full", "lora": "lora", "qlora": "qlora"}.get(method_l.lower())
            bit = y.get("bit")
            gcfg = y.get("gradient_checkpointing") or {}
            ga_doc = (ga_full.group(1) if method == "full" and not fsdp else
                      (ga_lora.group(1) if ga_lora else None))
            row["stack"] = new_stack(
                trainer="custom_loop", distributed="fsdp" if fsdp else "none", zero_stage=None,
                offload=(["params:cpu"] if off else None), evidence=[
                    x for x in [
                        f"{cfg_path}@{commit}: fsdp_train: {y.get('fsdp_train')}, "
                        f"fsdp_hyperparameters.cpu_offload: {fh.get('cpu_offload')}",
                        context.get("ev_fsdp_off") if off else None, foot_star if mark ==
                        "*" else None
                    ] if x
                ], fsdp_wrap_policy=fh.get("wrap_policy") if fsdp else None,
                fsdp_amp=fh.get("amp_training") if fsdp else None)
            settings = {
                k: y.get(k)
                for k in ("model", "model_size", "device", "bit", "quant_config",
                          "attn_implementation", "fsdp_train", "max_length", "batch_size",
                          "amp_training", "gradient_accumuate_step", "peft_config_path",
                          "del_logits_after_forward")
            }
            settings["gradient_checkpointing"] = gcfg
            if fsdp:
                settings["fsdp_hyperparameters"] = fh
            if lora:
                settings["lora_config"] = {
                    k: lora.get(k)
                    for k in ("type", "r", "lora_alpha", "lora_dropout", "target_modules")
                }
            if quant:
                settings["quant_config_values"] = quant
            run = new_run(
                model=mid, model_label=name, method=method, quant_bits=4 if bit == 4 else
                (8 if bit == 8 else None),
                quant_method=(f"bitsandbytes {quant.get('bnb_4bit_quant_type')} double_quant="
                              f"{quant.get('bnb_4bit_use_double_quant')} compute="
                              f"{quant.get('bnb_4bit_compute_dtype')}") if quant else None,
                lora_rank=lora.get("r") if method != "full" else None,
                lora_alpha=lora.get("lora_alpha") if method != "full" else None,
                lora_target=lora.get("target_modules") if method != "full" else None,
                per_device_batch_size=int(bs.group(1)) if bs else y.get("batch_size"),
                gradient_accumulation_steps=y.get("gradient_accumuate_step"),
                seq_len=int(seq.group(1).replace(",", "")) if seq else y.get("max_length"),
                seq_len_semantics=("fully filled, no padding (doc: '" + seq.group(0).strip() +
                                   "')") if seq else None, packing=None,
                gradient_checkpointing=bool(gcfg.get("activate")) if gcfg else gc,
                precision=("bf16 weights (bit: bfloat16), no AMP" if bit == "bfloat16" else
                           (f"4-bit base, compute {quant.get('bnb_4bit_compute_dtype')}"
                            if bit == 4 else str(bit))),
                attention=("HF default (attn_implementation: null)" if y.get("attn_implementation")
                           is None else y.get("attn_implementation")),
                optimizer=opt.group(1).strip() if opt else None, num_gpus=ngpu, num_nodes=1,
                config_path=f"{cfg_path}@{commit}", config_settings=settings)
            row["run"] = run
            a.append(f"model={mid}: resolved from {cfg_path} (model: {y.get('model')}, model_size: "
                     f"{y.get('model_size')}) with the fixed list in choose_proper_model "
                     f"({context.get('ev_choose')})")
            a.append(f"settings from {cfg_path}@{commit} (linked from the table row)")
            if ga_doc and str(ga_doc) != str(y.get("gradient_accumuate_step")):
                cav.append(
                    f"doc NOTE gives gradient accumulation {ga_doc} for this kind of run but the "
                    "config has "
                    f"gradient_accumuate_step: {y.get('gradient_accumuate_step')}")
            if dtype:
                a.append(f"precision: doc NOTE 'Model type: {dtype.group(1).strip()}'")
            if mark == "**" and foot_2:
                a.append("QLoRA = 4-bit bitsandbytes (footnote '**: 4-bit QLoRA training')")
            if off:
                cav.append(
                    "FSDP with CPU offload of parameters: GPU peak depends on CPU<->GPU traffic; "
                    "'Model Mem.' shows 'CPU Offload'")
            if method == "full" and not fsdp and row["outcome"] == "ok":
                pass
            ver = dict(context.get("versions") or {})
            ver["stated_in_source"] = stated or None
            row["versions"] = ver
            row["versions_evidence"] = (context.get("versions_evidence") or "") + \
                (f"; {path}: 'Environments: {envs}'" if envs else "")
            if stated.get("transformers") and ver.get(
                    "transformers") and stated["transformers"] != ver["transformers"]:
                cav.append(f"doc environment says transformers{stated['transformers']} but "
                           "docker/requirements.txt "
                           f"pins transformers{ver['transformers']}")
            row["assumptions"] = a
            row["caveats"] = cav
            rows.append(row)
    return rows


RUN_DIFF_KEYS = [
    "model", "method", "per_device_batch_size", "seq_len", "num_gpus", "gradient_checkpointing"
]
