"""THUDM/CogVLM2 finetune_demo/README.md: nvidia-smi process table pasted under 'GPU memory usage:'.

One row per GPU line ('|    0   N/A  N/A    704914      C   python          72442MiB |').
nvidia-smi's per-process
'GPU Memory Usage' = memory the driver has given the process (CUDA context + PyTorch reserved pool
+ other
allocations), i.e. a device-level reading.  The 'Minimum configuration' sentence ('requires at
least 73GB') is
a requirement and is not extracted.
"""
from __future__ import annotations

import re

from vram_ml.published.document_text import load_yaml
from vram_ml.published.parsed_row import CARD_BASIS, make_row, mem_value, new_run, new_stack
from vram_ml.published.requirement_pins import versions_from_files
from vram_ml.published.units import card_bytes

SOURCE = "cogvlm2"
REPOSITORY = "THUDM/CogVLM2"
TARGETS = [{
    "doc": "finetune_demo/README.md", "paths": ["finetune_demo/README.md"],
    "commit": "6700ae7ca23ba87f13796f3f427cbda64f71aaef"
}]
PROC_RX = re.compile(
    r"^\|\s+(?P<gpu>\d+)\s+N/A\s+N/A\s+(?P<pid>\d+)\s+C\s+(?P<proc>\S+)\s+(?P<val>(?P<num>\d+)(?P<unit>MiB))\s*\|$"
)


def build_context(repo, commit, path, first_published=None):
    ctx = {"commit": commit}
    py = repo.read(commit, "finetune_demo/peft_lora.py") or ""
    m = re.search(r"self\.padding_len = (\d+)", py)
    ctx["padding_len"] = int(m.group(1)) if m else None
    ctx["gc_in_code"] = "gradient_checkpointing" in py
    for k, pat in (("lora_rank", r'"--lora_rank", type=int, default=(\d+)'),
                   ("lora_alpha", r'"--lora_alpha", type=int, default=(\d+)'),
                   ("batch_default", r'"--batch_size", type=int, default=(\d+)')):
        mm = re.search(pat, py)
        ctx[k] = int(mm.group(1)) if mm else None
    mm = re.search(r'"--model_path", type=str,\s*default="([^"]+)"', py)
    ctx["model_default"] = mm.group(1) if mm else None
    ctx["ev"] = {
        "pad": repo.cite(
            commit, "finetune_demo/peft_lora.py",
            "self.max_length = self.input_length + self.output_length + self.padding_len"),
        "padlen": repo.cite(commit, "finetune_demo/peft_lora.py",
                            "self.padding_len ="), "padto": repo.cite(commit,
                                                                      "finetune_demo/peft_lora.py",
                                                                      "self.max_length,"),
        "acc": repo.cite(commit, "finetune_demo/peft_lora.py",
                         "accelerator = Accelerator(deepspeed_plugin=ds_plugin)"),
        "opt": repo.cite(commit, "finetune_demo/peft_lora.py", "optimizer = torch.optim.AdamW("),
        "dtype": repo.cite(commit, "finetune_demo/peft_lora.py",
                           '"--torch_type", type=str, default="torch.bfloat16"'),
        "model": repo.cite(commit, "finetune_demo/peft_lora.py", '"--model_path"')
    }
    dsy = load_yaml(repo.read(commit, "finetune_demo/ds_config.yaml") or "") or {}
    ctx["ds"] = dsy
    ctx["ev"]["ds_stage"] = repo.cite(commit, "finetune_demo/ds_config.yaml", "stage:")
    ctx["ev"]["ds_off"] = repo.cite(commit, "finetune_demo/ds_config.yaml", "offload_optimizer:")
    files = [
        f for f in ("finetune_demo/requirements.txt", "basic_demo/requirements.txt")
        if repo.exists(commit, f)
    ]
    ctx["versions"], ctx["versions_evidence"] = versions_from_files(repo, commit, files)
    return ctx


def parse(text, *, repository, path, commit, commit_date, context):
    rows = []
    lines = text.splitlines()
    params = {}
    for text_line in lines:
        m = re.match(
            r"^\+ `(?P<k>max_input_len|max_output_len|batch_size_per_gpus|batch_size|"
            r"lora_target)`: "
            r"(?P<v>\S+)",
            text_line.strip())
        if m:
            params[m.group("k")] = m.group("v")
    hdr_i = next((i for i, text_line in enumerate(lines)
                  if "GPU Memory" in text_line and "Process name" in text_line), None)
    header_quote = "\n".join(lines[hdr_i - 2:hdr_i + 3]) if hdr_i else None
    procs = [(i, text_line, PROC_RX.match(text_line.strip())) for i, text_line in enumerate(lines)]
    procs = [(i, text_line, m) for i, text_line, m in procs if m]
    ng = len(procs)
    ds = context.get("ds") or {}
    z = ds.get("zero_optimization") or {}
    top_off = ds.get("offload_optimizer")
    bs = params.get("batch_size_per_gpus") or params.get("batch_size")
    mi, mo = params.get("max_input_len"), params.get("max_output_len")
    pad = context.get("padding_len")
    seq = (int(mi) + int(mo) + pad) if (mi and mo and pad is not None) else None
    for i, text_line, m in procs:
        row = make_row(source=SOURCE, repository=repository, path=path, commit=commit,
                       commit_date=commit_date, vision_language=True)
        row["row_key"] = f"cogvlm2|nvidia-smi|gpu{m.group('gpu')}"
        row["locator"] = (
            f"nvidia-smi 'Processes' block under 'GPU memory usage:' ({path} line {i + 1}) GPU "
            f"{m.group('gpu')} column 'GPU Memory Usage'")
        row["quote"] = text_line
        row["header_quote"] = header_quote
        row["outcome"] = "ok"
        mem_value(row, m.group("val"), m.group("num"), "MiB", "MiB",
                  "nvidia-smi prints MiB (2^20 bytes)")
        row["statistic"] = "device"
        row["statistic_confidence"] = "stated"
        row["statistic_evidence"] = (
            f"{path}@{commit}:{(hdr_i or 0) + 1}: {lines[hdr_i].strip() if hdr_i else ''} -- "
            "pasted nvidia-smi process table: per-process device memory, a point-in-time "
            "snapshot (not necessarily the peak)")
        row["gpu_model"] = "NVIDIA A100 80GB"
        row["card_memory_bytes"] = card_bytes(80)
        row["card_memory_basis"] = CARD_BASIS + ("; README: 'We Only test A100 GPUs with 80GB "
                                                 "memory'")
        row["gpu_count"] = ng
        row["per_gpu"] = True
        row["per_gpu_evidence"] = "one nvidia-smi line per GPU"
        row["stack"] = new_stack(
            trainer="custom_loop (accelerate + DeepSpeed plugin)", distributed="deepspeed",
            zero_stage=z.get("stage"),
            offload=(["optimizer:cpu (top-level key, see caveat)"] if top_off else None), evidence=[
                x for x in [
                    context["ev"].get("acc"), context["ev"].get("ds_stage"), context["ev"].get(
                        "ds_off")
                ] if x
            ])
        run = new_run(
            model="THUDM/cogvlm2-llama3-chat-19B", model_label="cogvlm2-llama3-chat-19B",
            method="lora", lora_rank=context.get("lora_rank"), lora_alpha=context.get("lora_alpha"),
            lora_target=params.get("lora_target"), trainable_vision=None,
            per_device_batch_size=int(bs) if bs else None,
            gradient_accumulation_steps=ds.get("gradient_accumulation_steps"), seq_len=seq,
            seq_len_semantics=(
                f"every sample padded to max_input_len {mi} + max_output_len {mo} + padding_len "
                f"{pad} (image tokens) = {seq}") if seq else None, packing=False,
            gradient_checkpointing=False if not context.get("gc_in_code") else None,
            precision="bf16 (torch_dtype default torch.bfloat16; DeepSpeed bf16 enabled)",
            optimizer="torch.optim.AdamW", num_gpus=ng, num_nodes=1, images_per_sample=1,
            config_path=f"finetune_demo/ds_config.yaml@{commit}",
            config_settings={"readme_parameters": params, "ds_config": ds})
        row["run"] = run
        row["assumptions"] = [
            "model: README 'fine-tuning examples for the huggingface version model "
            "cogvlm2-llama3-chat-19B'; "
            f"{context['ev'].get('model')}",
            "seq_len computed from the README parameters and peft_lora.py "
            f"({context['ev'].get('padlen')}; "
            f"{context['ev'].get('pad')})",
            "images_per_sample=1: the dataset class opens one image per sample (images=[image])",
            "gradient_checkpointing=False: peft_lora.py never enables it",
            f"optimizer: {context['ev'].get('opt')}",
        ]
        row["caveats"] = [
            "nvidia-smi snapshot: moment of capture unknown; includes CUDA context and allocator "
            "cache",
            "ds_config.yaml puts offload_optimizer at the top level instead of inside "
            "zero_optimization, where "
            "DeepSpeed expects it; the offload may not have been active",
            "image resolution not stated in this repository (the model's vision config lives in "
            "the HF repo)",
        ]
        if True:
            row["caveats"].append(
                "the same nvidia-smi snapshot (identical PIDs and MiB) was first published at "
                "e575540 with the caption "
                "max_input_len 1024 / max_output_len 1024 / batch_size 2; the caption was changed "
                "to 512 / 512 / "
                "batch_size_per_gpus 1 (+ lora_target) at eaddf2e without a new snapshot -- the "
                "figures more likely "
                "belong to the original settings; run.* follows the caption of this version")
        if "batch_size" in params and "batch_size_per_gpus" not in params:
            row["caveats"].append("this README version labels the batch as 'batch_size'")
        row["versions"] = dict(context.get("versions") or {})
        row["versions_evidence"] = context.get("versions_evidence")
        rows.append(row)
    return rows


RUN_DIFF_KEYS = ["per_device_batch_size", "seq_len", "lora_target", "num_gpus"]
