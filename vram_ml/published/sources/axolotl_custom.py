"""axolotl: the per-README wordings (llama-2/code-llama, dbrx, jamba, llama-3/4, yi-34B, gpt-oss,
qwen3.5)."""

from __future__ import annotations

import posixpath
import re

from vram_ml.published.document_text import md_tables
from vram_ml.published.sources.axolotl_context import DOC_OF, MEM_RX, _base_row, _norm
from vram_ml.published.sources.axolotl_rows import _fill


def _custom_rows(text, ctx, repository, path, commit, commit_date):
    rows = []
    lines = text.splitlines()
    doc_dir = posixpath.dirname(path)

    def add(i, key, ypath, mm, **kw):
        row = _base_row(ctx, repository, path, commit, commit_date)
        rows.append(
            _fill(row, ctx, yaml_path=ypath, doc_dir=doc_dir, quote=lines[i].rstrip(),
                  locator=kw.pop("locator", f"{path} line {i + 1}"), key=key, val_m=mm, **kw))

    for i, text_line in enumerate(lines):
        # llama-2 / code-llama
        m = re.search(
            r"take up about (?P<q>\d+ GB) of VRAM during training if using qlora and (?P<l>\d+ GB) "
            r"if using lora", text_line)
        if m:
            base = "examples/llama-2" if "llama-2" in path else posixpath.join(doc_dir, "7b")
            for which, fname in (("q", "qlora.yml"), ("l", "lora.yml")):
                mm = re.match(r"(?P<val>(?P<num>\d+) (?P<unit>GB))", m.group(which))
                add(
                    i, f"axolotl|{DOC_OF.get(path, path)}|7b|{which}", posixpath.join(base, fname),
                    mm, gpu="NVIDIA GeForce RTX 4090", card=24, ngpu=1, per_gpu=True,
                    variant=f"7b {'qlora' if which == 'q' else 'lora'}",
                    locator=f"{path} line {i + 1}, '{'qlora' if which == 'q' else 'lora'}' figure",
                    extra_assump=[
                        "GPU: 'fits on any 24GB VRAM GPU' ... 'On a RTX 4090 it trains ...' -> RTX "
                        "4090 assumed"
                    ])
        # dbrx
        m = re.search(
            r"w/o CPU Offload - (?P<n>\d+)x(?P<card>\d+)GB uses "
            r"(?P<val>~(?P<num>\d+)(?P<unit>GiB))/gpu", text_line)
        if m:
            add(i, f"axolotl|{DOC_OF.get(path, path)}|16bit-lora-fsdp",
                posixpath.join(doc_dir, "16bit-lora.yaml"), m, card=int(m.group("card")),
                ngpu=int(m.group("n")), per_gpu=True,
                variant="16-bit LoRA w/ FSDP, w/o CPU offload")
        m = re.search(
            r"bf16 full finetune w/ FSDP, freezing all but first 8 layers "
            r"\((?P<n>\d+)x(?P<card>\d+)GB uses "
            r"(?P<val>~(?P<num>\d+)(?P<unit>GiB))/gpu\)", text_line)
        if m:
            add(
                i, f"axolotl|{DOC_OF.get(path, path)}|fft-fsdp-freeze", None, m,
                card=int(m.group("card")), ngpu=int(m.group("n")), per_gpu=True,
                variant="bf16 full finetune w/ FSDP, first 8 layers trainable", extra_caveats=[
                    "README says FSDP, but the only full-finetune YAML in the directory "
                    "(fft-ds-zero3.yaml) "
                    "uses DeepSpeed ZeRO-3 with unfrozen_parameters: not mapped"
                ])
            if "dbrx-base-converted-v2" in text:
                rows[-1]["run"]["model"] = "LnL-AI/dbrx-base-converted-v2"
                rows[-1]["run"]["method"] = "freeze"
                rows[-1]["stack"]["distributed"] = "fsdp"
                rows[-1]["assumptions"].append(
                    "model: README 'We've tested using the LnL-AI/dbrx-base-converted-v2 model "
                    "as the base model for FSDP'; method=freeze ('freezing all but first 8 "
                    "layers')")
        # jamba
        m = re.search(
            r"qlora w/ deepspeed needs at least 2x GPUs and (?P<val>(?P<num>\d+)(?P<unit>GiB)) "
            r"VRAM per GPU", text_line)
        if m:
            add(
                i, f"axolotl|{DOC_OF.get(path, path)}|zero2|minimal-context",
                posixpath.join(doc_dir, "qlora_deepspeed.yaml"), m, ngpu=2, per_gpu=True,
                variant="qlora w/ deepspeed, >=2 GPUs", extra_caveats=[
                    "phrased as a requirement ('needs at least'); kept as the observed per-GPU "
                    "usage"
                ])
        m = re.match(
            r"^\s+- (?P<val>(?P<num>\d+)(?P<unit>GiB)) VRAM per GPU (?P<q>w minimal context "
            r"length|\(w multipack enabled\))", text_line)
        if m and any("deepspeed Zero-2" in lines[j] for j in range(max(0, i - 3), i)):
            add(
                i,
                f"axolotl|{DOC_OF.get(path, path)}|zero2|"
                + ("multipack" if "multipack" in m.group("q") else "minimal-context"),
                posixpath.join(doc_dir, "qlora_deepspeed.yaml"), m, ngpu=2, per_gpu=True,
                variant=f"qlora w/ deepspeed Zero-2, {m.group('q')}", extra_caveats=[
                    "phrased as a requirement ('needs at least 2x GPUs and ...'); kept as observed "
                    "per-GPU usage", "'minimal context length' is not a committed setting"
                ])
        m = re.search(
            r"qlora w/ deepspeed Zero-3 needs at least 2x GPUs and "
            r"(?P<val>(?P<num>\d+)(?P<unit>GiB)) VRAM", text_line)
        if m:
            add(
                i, f"axolotl|{DOC_OF.get(path, path)}|zero3", None, m, ngpu=2, per_gpu=None,
                variant="qlora w/ deepspeed Zero-3", extra_caveats=[
                    "phrased as a requirement; no ZeRO-3 YAML committed (qlora_deepspeed.yaml uses "
                    "zero2.json)"
                ])
        m = re.search(r"qlora single-gpu, (?P<val>~(?P<num>\d+)(?P<unit>GiB)) VRAM", text_line)
        if m:
            add(i, f"axolotl|{DOC_OF.get(path, path)}|single",
                posixpath.join(doc_dir,
                               "qlora.yaml"), m, ngpu=1, per_gpu=True, variant="qlora single-gpu")
        # llama-3 list
        m = re.match(r"^\s+- (?P<g>Single|Dual) GPU @ (?P<val>(?P<num>\d+)(?P<unit>GB)) VRAM",
                     text_line)
        if m and "llama-3" in path:
            link = re.search(r"\]\(\./(?P<y>[^)]+)\)", lines[i - 1])
            ypath = posixpath.join(doc_dir, link.group("y")) if link else None
            n = 1 if m.group("g") == "Single" else 2
            add(
                i, f"axolotl|{DOC_OF.get(path, path)}|{ypath}", ypath, m, ngpu=n,
                per_gpu=True if n == 1 else None,
                variant=lines[i - 1].strip() + " / " + text_line.strip(), extra_caveats=[
                    "ambiguous: 'Single GPU @ 48GB VRAM' may name the card size rather than the "
                    "usage"
                ])
        # llama-4
        m = re.search(
            r"Our Single (?:H100|GPU) implementation for Llama 4 Scout uses only "
            r"(?P<val>(?P<num>[\d.]+)(?P<unit>GB)) VRAM", text_line)
        if m:
            link = next(
                (re.search(r"\(\./([^)]+\.yaml)\)", x).group(1) for x in lines
                 if x.startswith("- [Text Single GPU") and re.search(r"\(\./([^)]+\.yaml)\)", x)),
                None)
            add(
                i, f"axolotl|{DOC_OF.get(path, path)}|scout-single",
                posixpath.join(doc_dir, link) if link else None, m, gpu="NVIDIA H100 80GB", card=80,
                ngpu=1, per_gpu=True, variant="Llama 4 Scout, single H100, 4k context",
                extra_assump=[
                    "YAML = the README's 'Text Single GPU (H100) QLoRA' link in the same version"
                ], extra_caveats=["figure from linked WandB logs (GB as written)"])
        m = re.search(
            r"Multi-GPU \((?P<n>\d+)xH100\) for Llama 4 Scout uses "
            r"(?P<val>(?P<num>[\d.]+)(?P<unit>GB)) VRAM/GPU", text_line)
        if m:
            link = next(
                (re.search(r"\(\./([^)]+\.yaml)\)", x).group(1) for x in lines
                 if x.startswith("- [Text Multi GPU") and re.search(r"\(\./([^)]+\.yaml)\)", x)),
                None)
            add(i, f"axolotl|{DOC_OF.get(path, path)}|scout-multi",
                posixpath.join(doc_dir, link) if link else None, m, gpu="NVIDIA H100 80GB", card=80,
                ngpu=int(m.group("n")), per_gpu=True, variant="Llama 4 Scout, 4xH100, 4k context")
        m = re.search(
            r"Our (?P<n>\d+)xH100 implementation for Llama 4 Maverick uses "
            r"(?P<val>(?P<num>[\d.]+)(?P<unit>GB)) VRAM/GPU", text_line)
        if m:
            link = next((re.search(r"\(\./(maverick[^)]+\.yaml)\)", x).group(1)
                         for x in lines if re.search(r"\(\./(maverick[^)]+\.yaml)\)", x)), None)
            add(i, f"axolotl|{DOC_OF.get(path, path)}|maverick-multi",
                posixpath.join(doc_dir, link) if link else None, m, gpu="NVIDIA H100 80GB", card=80,
                ngpu=int(m.group("n")), per_gpu=True,
                variant="Llama 4 Maverick, 4xH100, 4k context")
        # yi-34B
        m = re.search(
            r"Tested on an RTX 4090 with `python -m axolotl\.cli\.train (?P<y>\S+)`.*using "
            r"(?P<pct>\d+%) of available memory", text_line)
        if m:
            row = _base_row(ctx, repository, path, commit, commit_date)
            r = _fill(
                row, ctx, yaml_path=posixpath.join(doc_dir, "qlora.yml"), doc_dir=doc_dir,
                quote=text_line.strip(), locator=f"{path} line {i + 1}",
                key=f"axolotl|{DOC_OF.get(path, path)}|pct", val_m=None, outcome="ok",
                gpu="NVIDIA GeForce RTX 4090", card=24, ngpu=1, per_gpu=True,
                variant="Yi-34B-Chat qlora", extra_caveats=[
                    f"value is a share of the card ('{m.group('pct')} of available memory'); no "
                    "bytes "
                    "computed", f"README runs {m.group('y')} (the Mistral example), apparently a "
                    "copy-paste slip; this directory's qlora.yml is used for the run settings"
                ])
            r["value_written"], r["value"], r["unit"] = m.group("pct"), m.group("pct").rstrip(
                "%"), "%"
            r["value_bytes"] = None
            r["unit_basis"] = "percentage of the RTX 4090's available memory"
            rows.append(r)
        # old gpt-oss bullets ("peak reserved memory @ ...")
        m = re.search(
            r"(?P<what>20B Full Parameter SFT(?: with FSDP2 offloading)?|20B LoRA SFT \(all linear "
            r"layers, and experts in "
            r"last two layers\)) can be trained (?:on|a) (?P<g>(?P<n>\d+)x(?P<card>\d+)GB "
            r"GPUs|single GPU) "
            r"\(peak reserved memory @ (?P<val>~(?P<num>\d+)(?P<unit>GiB))(?P<pg>/GPU)?\)",
            text_line)
        if m:
            link = re.search(r"\[YAML\]\(\./([^)]+)\)", text_line)
            ypath = posixpath.join(doc_dir, link.group(1)) if link else posixpath.join(
                doc_dir, "gpt-oss-20b-sft-lora-singlegpu.yaml")
            n = int(m.group("n")) if m.group("n") else 1
            add(i, f"axolotl|{DOC_OF.get(path, path)}|old-bullet|{_norm(m.group('what'))}|{n}",
                ypath, m, card=int(m.group("card")) if m.group("card") else None, ngpu=n,
                per_gpu=True, stat="reserved",
                stat_ev=f"{path}@{commit}:{i + 1}: '(peak reserved memory @ ...)'",
                variant=m.group("what"))
        m = re.search(
            r"removing the experts from `lora_target_parameters` will allow the model to fit "
            r"around "
            r"(?P<val>~(?P<num>\d+)(?P<unit>GiB)) of VRAM", text_line)
        if m:
            add(
                i, f"axolotl|{DOC_OF.get(path, path)}|old-bullet|lora-no-experts",
                posixpath.join(doc_dir,
                               "gpt-oss-20b-sft-lora-singlegpu.yaml"), m, ngpu=1, per_gpu=True,
                variant="20B LoRA SFT without experts in lora_target_parameters", extra_caveats=[
                    "variant of the committed YAML (experts removed from lora_target_parameters)"
                ])
    # qwen3.5 table
    for t in md_tables(text):
        if "Peak VRAM" not in t["header"]:
            continue
        for r in t["rows"]:
            c = dict(zip(t["header"], r["cells"]))
            mm = MEM_RX.search(c.get("Peak VRAM", ""))
            if not mm:
                continue
            y = c.get("Config", "").strip("`")
            i = r["line_no"] - 1
            row = _base_row(ctx, repository, path, commit, commit_date)
            single = "single GPU" in c.get("Type", "")
            rr = _fill(
                row, ctx, yaml_path=posixpath.join(doc_dir,
                                                   y), doc_dir=doc_dir, quote=r["line"], locator=
                f"table 'Available configs' ({path} line {r['line_no']}) row '{y}' column 'Peak "
                "VRAM'", key=f"axolotl|{DOC_OF.get(path, path)}|table|{y}", val_m=mm,
                ngpu=1 if single else None, per_gpu=True if single else None,
                variant=f"{c.get('Model')} {c.get('Type')}")
            rr["header_quote"] = t["header_line"]
            rr["caveats"].append("column header says 'Peak VRAM'; reserved vs allocated not stated")
            rows.append(rr)
    return rows
