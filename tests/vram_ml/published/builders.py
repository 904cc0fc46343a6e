"""Per source: a minimal document holding the table's quotes, shaped as its parser reads it.

The structure lines (a heading the parser looks for, `<table>` tags, a `|---|` separator, a code
fence) are written here from the parser's own constants; every data line is a committed quote.
"""

from __future__ import annotations

import json
import re

from vram_ml.published.sources import qwen_context

from .excerpts import by_line, pipe_tables, unique


def fms(rows):
    return by_line(rows, {1: rows[0]["header_quote"]})


def peft_metamathqa(rows):
    """A result JSON: the quoted train_info fragments and the run settings the rows carry."""
    run = json.loads(rows[0]["run"])
    info = {}
    for row in rows:
        key, number = re.match(r'"([^"]+)"\s*:\s*(\S+)', row["quote"]).groups()
        info[key] = int(number)
    config = {"model_id": run["model"], "dtype": run["torch_dtype"],
              "batch_size": run["per_device_batch_size"], "max_seq_length": run["seq_len"],
              "optimizer_type": run["optimizer"]}
    document = {"run_info": {"experiment_name": run["experiment_name"], "train_config": config,
                             "peft_config": run.get("peft_config")},
                "train_info": {"status": "success", **info}, "meta_info": {}}
    return json.dumps(document, indent=2) + "\n"


def html_profile(heading):
    def build(rows):
        cells = unique(row["quote"] for row in rows if row["quote"].startswith("<tr>"))
        sentences = unique(row["quote"] for row in rows if not row["quote"].startswith("<tr>"))
        return "\n".join([heading, "", "<table>", rows[0]["header_quote"], *cells, "</table>",
                          "", *sentences]) + "\n"
    return build


def heading_in_locator(row):
    found = re.search(r"'(### [^']+)'", row["locator"])
    return found.group(1) if found else ""


def lines_only(rows):
    return "\n".join(unique(row["quote"] for row in rows)) + "\n"


def minicpm_v(rows):
    return ("### Model Fine-tuning Memory Usage Statistics\n\n" + pipe_tables(rows)
            + "\n### Notes\n")


def universal_llm_trainer(rows):
    """The tables under their GPU headings, with a note block (synthetic: batch and sequence
    from the rows' run, which the parser needs before it reads a table)."""
    run = json.loads(rows[0]["run"])
    note = (f"> Batch size: {run['per_device_batch_size']}\n> Sequnece length: {run['seq_len']}"
            "\n> Full fine-tuning: 1\n> LoRA: 1")
    return pipe_tables(rows, lambda row: heading_in_locator(row) + "\n\n" + note)


def hf_blog_4bit(rows):
    intro = json.loads(rows[0]["caveats"])[-1].removeprefix("context sentence: ")
    return "\n".join([intro, rows[0]["header_quote"], *unique(r["quote"] for r in rows),
                      rows[0]["stack_evidence"]]) + "\n"


def fsdp_qlora_script(rows):
    """The script's header line (cited by the rows) and each quoted comment + command."""
    cited = [re.search(r"sh@\w+:1: (# .*)$", note) for note in json.loads(rows[0]["assumptions"])]
    header = next((found.group(1) for found in cited if found), "#")
    return "\n".join([header, "", *unique(r["quote"] for r in rows)]) + "\n"


def axolotl_comments(rows):
    """Each quoted code-block comment above the `axolotl train` command its locator names."""
    blocks = []
    for row in rows:
        command = re.search(r"comment for '([^']+)'", row["locator"])
        if command:
            blocks += ["```bash", row["quote"], command.group(1), "```", ""]
    return "\n".join(blocks) + "\n"


BUILDERS = {
    "peft-docs": pipe_tables,
    "fsdp_qlora": fsdp_qlora_script,
    "axolotl": axolotl_comments,
    "fms-acceleration": fms,
    "peft-metamathqa": peft_metamathqa,
    "qwen": html_profile(qwen_context.HEADING),
    "qwen-vl": html_profile(qwen_context.HEADING),
    "minicpm-v": minicpm_v,
    "universal-llm-trainer": universal_llm_trainer,
    "glm-4": pipe_tables,
    "chatglm3": lines_only,
    "minicpm": lines_only,
    "cogvlm2": lambda rows: rows[0]["header_quote"] + "\n" + lines_only(rows),
    "hf-blog-4bit": hf_blog_4bit,
}
