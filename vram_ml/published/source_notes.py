"""What each published source measures and how it is read: the data card's per-source text.

Written from reading each source's measuring code (cited per row in `statistic_evidence`); the
counts beside this text are computed from the table when the card is written.
"""

from __future__ import annotations

SOURCE_NOTES: dict[str, dict[str, str]] = {
    "fms-acceleration": {
        "what": "benchmark CSVs `scripts/benchmarks/refs/*.csv` and `refs_orca/*.csv`, every "
                "version on the main history: Mistral-7B, Mixtral-8x7B, Llama-2-70B, Llama-3-8B, "
                "santacoder, Granite; full / LoRA / bnb QLoRA / GPTQ-LoRA, fused kernels (FOAK), "
                "Liger, padding-free, multipack, ScatterMoE; 1-8 A100-80GB (FSDP FULL_SHARD).",
        "how": "`mem_nvidia_mem_reserved` (MiB) is `device`: benchmark.py polls `nvidia-smi "
               "memory.used` once a second, takes each GPU's max minus its first reading and "
               "reports the mean over GPUs. `mem_peak_torch_mem_alloc_in_bytes` is `allocated` "
               "(HF Trainer memory metrics: max_memory_allocated, rank 0); "
               "`mem_torch_mem_alloc_in_bytes` is allocated at a stage end (`is_peak` false). A "
               "line without train_loss/train_runtime is a failed run, labelled `oom` (censored; "
               "its nvidia value is a lower bound), or `failed` when its device reading is under "
               "half the card. Settings a CSV drops (constant columns) come from the matching "
               "scenario and defaults.yaml at the same commit; seq_len 4096 and packing are the "
               "benchmark's argparse defaults (assumed).",
        "caveats": "Multi-GPU device values are means over GPUs, torch values rank 0 only. Runs "
                   "are 100 steps, memory covers model load + training. The L40 file is "
                   "labelled 40GB (an L40 has 48 GB): its rows are failed runs kept with a 40 GiB "
                   "bound. Failed lines' zero torch cells are not emitted.",
    },
    "peft-metamathqa": {
        "what": "`method_comparison/MetaMathQA/results/*.json`, every version: Llama-3.2-3B, "
                "batch 4, max 768 tokens, bf16, ~40 PEFT methods, one L40S.",
        "how": "`*_memory_max` is `reserved`: torch max_memory_reserved after the whole run minus "
               "the reserved memory at init (runner utils.py at the commit the result names); "
               "`*_memory_reserved_avg` / `_99th` are per-step samples (`is_peak` false). A "
               "hand-written training loop on one device.",
        "caveats": "The peak includes model loading, validation generation every 250 steps "
                   "(batch 50) and the final test-set generation; the CUDA context is not "
                   "included. max_seq_length is a cap: batches are padded to their longest "
                   "sample. The `cuda_*` -> `accelerator_*` rename is not a new measurement.",
    },
    "peft-docs": {
        "what": "`docs/source/accelerate/deepspeed.md`, `fsdp.md`, `README.md` at the snapshot: "
                "per-GPU figures for Llama-2-70B (DeepSpeed ZeRO-3, FSDP, QLoRA), a "
                "TorchTracemalloc log (bart-large), README tables (T0_3B, mt0-xxl, bloomz-7b1).",
        "how": "Prose and table numbers with their launch commands and accelerate configs from "
               "the same section; the TorchTracemalloc log is `allocated` (the example script's "
               "max_memory_allocated, MiB). Everything else is `unknown`.",
        "caveats": "One figure was read off a screenshot; 72-80 GB is a range (value is its upper "
                   "end); GB is read as 10^9 bytes.",
    },
    "qwen": {
        "what": "README 'Profiling of Memory and Speed': Qwen 1.8B / 7B / 14B / 72B x LoRA, "
                "LoRA (emb), Q-LoRA, full, ZeRO-3, sequence 256-8192, batch 1, A100-80GB; the "
                "current table and the older one without flash attention.",
        "how": "Cells `6.7G / 1.0s/it`; the prose gives the unit (GB) only and no code in the "
               "repository reads memory: `unknown`. Settings from finetune.py and the launch "
               "scripts at each version's commit.",
        "caveats": "Multi-GPU cells are sums (exceed one card). Qwen (v1) is remote code only: "
                   "mapped rows rest on its closed-form shape (vram_ml/architectures/"
                   "remote_code.py); simulate and the recipe refuse it. Base-model rows map to "
                   "the chat model's config (a catalog alias, with its evidence) and LoRA on a "
                   "base model trains copies of wte and lm_head (finetune.py modules_to_save: "
                   "Spec additional_target).",
    },
    "qwen-vl": {
        "what": "README fine-tuning profile: Qwen-VL LoRA (base/chat) and Q-LoRA, sequence "
                "384-2048, one 448x448 image per sample, one A100-80GB (vision-language).",
        "how": "As Qwen: unit stated (GB), statistic `unknown`.",
        "caveats": "Remote code only (closed-form shape as for Qwen: Qwen-7B + ViT-bigG + "
                   "resampler, 258 tokens per image). Images' token count comes from the "
                   "inference section. LoRA (Base) rows: Qwen-VL as an alias of Qwen-VL-Chat's "
                   "config (README: same model, aligned) with wte / lm_head trained as "
                   "modules_to_save copies (additional_target).",
    },
    "minicpm-v": {
        "what": "`finetune/readme.md`: LoRA vs full on 2 / 4 / 8 A100-80GB, max length 2048 "
                "(ZeRO-2 table and the later ZeRO-3 + offload table; vision-language).",
        "how": "The table names no model: MiniCPM-Llama3-V-2_5 from the scripts at the commit "
               "the numbers were first published. Statistic `unknown`, per GPU.",
        "caveats": "The committed DeepSpeed configs do not match the README's description.",
    },
    "universal-llm-trainer": {
        "what": "`docs/gpu_test.md`: 8 models x full / LoRA / QLoRA on H100, RTX Pro 6000, A100, "
                "batch 2, sequence 8192 (fully packed), bf16, AdamW, gradient checkpointing.",
        "how": "Settings from the YAML each row links. The code's only GPU readout is "
               "torch memory_reserved() on rank 0 in the progress bar: `reserved` (inferred).",
        "caveats": "The doc writes GiB, the code prints /1e9 'G' (caveat per row).",
    },
    "fsdp_qlora": {
        "what": "`benchmarks_03_2024.md` peak tables (Llama-2 7B / 70B, Yi-34B, Mistral-7B on "
                "dual 3090/4090) and the largest-batch commands of `benchmarking/*.sh` (labels).",
        "how": "The doc states 'peak reserved memory' (train.py logs max_memory_reserved on rank "
               "0): `reserved`; two `allocated` values from the same sentence. Script commands "
               "are fit labels (the comment above each says ok or OOM).",
        "caveats": "A fit label means 'this batch fitted a 1-step probe'.",
    },
    "axolotl": {
        "what": "`examples/*/README.md` statements ('uses about X GiB') next to the committed "
                "YAML they describe.",
        "how": "Settings from the YAML; `reserved` where the README says it reads "
               "`device_mem_reserved`, else `unknown`; the GPU when the text names one.",
        "caveats": "Most statements name no GPU; wordings that describe variants of a config "
                   "are kept but often cannot be mapped.",
    },
    "chatglm3": {
        "what": "`finetune_demo/README.md`: SFT / P-Tuning v2 / LoRA usage in MiB with the "
                "default configs, and the older 'reference usage' figures.",
        "how": "Configs at the commit the figures were first published. Statistic `unknown`.",
        "caveats": "ChatGLM is remote code only: mapped rows rest on its closed-form shape "
                   "(vram_ml/architectures/remote_code.py).",
    },
    "glm-4": {
        "what": "`finetune_demo/README.md` (to mid 2024) and `finetune/README.md`: GLM-4-9B LoRA "
                "/ SFT / P-Tuning v2 figures, GLM-4V LoRA (vision-language).",
        "how": "Statistic `unknown`; 'G' read as GB.",
        "caveats": "The current table's values equal the earlier A100 table (possibly carried). "
                   "GLM-4-9B-Chat is remote code only (closed-form shape as ChatGLM); GLM-4V's "
                   "vision tower has none.",
    },
    "cogvlm2": {
        "what": "`finetune_demo/README.md`: a pasted nvidia-smi process list during LoRA "
                "training on 8 GPUs (vision-language).",
        "how": "`device` (nvidia-smi per-process memory), a snapshot: `is_peak` false.",
        "caveats": "The caption changed later, the snapshot did not. Remote code only.",
    },
    "minicpm": {
        "what": "`finetune/README.md`: SFT on 4 GPUs, LoRA and QLoRA + offload on one GPU.",
        "how": "Scripts at the commits that published the figures. Statistic `unknown`.",
        "caveats": "MiniCPM is remote code only.",
    },
    "hf-blog-4bit": {
        "what": "`4bit-transformers-bitsandbytes.md`: OOM / No OOM for LLaMA 7B / 13B LoRA and "
                "QLoRA on T4 16GB (labels only).",
        "how": "huggingface/blog is too large to clone: without a clone in SOURCE_DIR the import "
               "reads `datasets/published/quoted/huggingface+blog/<commit>/` (the table's header "
               "and rows and the two sentences the rows cite, transcribed verbatim from the "
               "stored copy of the file at b80f56d and spot-checked; nothing else). With "
               "SOURCE_DIR/huggingface+blog (a clone, or the file saved at "
               "`<commit>/4bit-transformers-bitsandbytes.md`, e.g. from "
               "raw.githubusercontent.com) the same parser reads the real file.",
        "caveats": "LoRA rank and targets are in an external gist: no row maps.",
    },
}
