"""Published run settings -> a Spec, only where the Spec describes the run faithfully.

Each source's reader (mapping_runs.py) turns a row's `run` into a `SpecRequest`: the Spec
fields the source states or implies (each one not stated recorded as an assumption, with the
file it comes from), the settings the Spec cannot express (blockers: FSDP, GPTQ, fused-kernel
plugins, sums over GPUs, ...) and the settings that a Spec field will hold once it exists
(`wanted`: framework, library versions, FSDP, training stage). Here those are filled into every
Spec field that exists today (`Spec.model_fields`), so when a field lands, rerunning the import
maps more rows with no other change; a wanted setting with no field yet is either a blocker (it
changes memory a lot: FSDP sharding, DeepSpeed offload) or an assumption (framework, versions).

A row is `mapped` when nothing blocks and `build_spec` accepts the fields; otherwise `unmapped`
with a one-line reason. Rows are never dropped and never forced.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from vram_ml.defaults import IMAGE_FIELDS, LLAMAFACTORY_DEFAULTS
from vram_ml.published.model_ids import catalog_entry, model_problem
from vram_ml.spec import Spec, SpecError, build_spec

# wanted settings that change peak memory a lot: without a Spec field the run is not described
BLOCKING_WANTED: dict[str, str] = {}  # FSDP and DeepSpeed offload are Spec fields now
METHOD_FIELDS = {
    "lora": ("lora_rank", "lora_dropout", "lora_target"),
    "qlora": ("lora_rank", "lora_dropout", "lora_target", "quant_type", "double_quant"),
    "freeze": ("freeze_trainable_layers",),
}
ALWAYS_RELEVANT = ("batch_size", "gradient_accumulation", "seq_len", "precision",
                   "gradient_checkpointing", "attention", "optimizer", "liger_kernel", "num_gpus",
                   "zero_stage")


@dataclass
class SpecRequest:
    """What a reader found for one row: Spec fields, assumptions, blockers, future fields."""

    fields: dict[str, Any] = field(default_factory=dict)
    assumptions: list[str] = field(default_factory=list)
    blockers: list[str] = field(default_factory=list)
    wanted: dict[str, Any] = field(default_factory=dict)

    def set(self, name: str, value: Any, why: str | None = None) -> None:
        """A Spec field; `why` (an assumption) when the source does not state it directly."""
        self.fields[name] = value
        if why:
            self.assumptions.append(f"{name}={json.dumps(value)}: {why}")

    def stated(self, name: str, value: Any) -> None:
        """A Spec field the source states; nothing when it does not (the default is then
        recorded as an assumption by `default_assumptions`)."""
        if value is not None:
            self.fields[name] = value

    def block(self, reason: str) -> None:
        if reason not in self.blockers:
            self.blockers.append(reason)


def spec_fields() -> set[str]:
    return set(Spec.model_fields)


def map_rows(rows: list[dict[str, Any]], context: list[dict[str, Any]] | None = None) -> None:
    """Fill spec, spec_id, mapping, unmapped_reason (and the mapping's assumptions) in place;
    `context`: the whole table, where rows are remapped on their own (library pins are a
    source-wide fact, mapping_versions.py)."""
    from vram_ml.published.mapping_runs import reader_for
    from vram_ml.published.mapping_versions import fill_missing_versions

    fill_missing_versions(rows, context)
    by_row_key = {(row["source"], row.get("_row_key")): row for row in rows if row.get("_row_key")}
    for row in rows:
        run = json.loads(row["run"])
        request = reader_for(row["source"])(row, run)
        duplicate = row.pop("_duplicate_of", None)
        if duplicate:
            kept = by_row_key.get((row["source"], duplicate))
            request.blockers.insert(0, "same measurement as row "
                                    + (kept["row_id"] if kept else duplicate)
                                    + " (relabelled in a later version): not counted twice")
        apply_request(row, request, run)
    for row in rows:
        for key in [key for key in row if key.startswith("_")]:
            row.pop(key)


def apply_request(row: dict[str, Any], request: SpecRequest, run: dict[str, Any]) -> None:
    """Resolve the model, fill the fields that exist, build the Spec (or say why not)."""
    available = spec_fields()
    problem = model_problem(run.get("model"))
    if problem:
        request.blockers.insert(0, problem)
    else:
        request.fields["model"] = catalog_entry(run["model"]).hf_id
    num_gpus = request.fields.get("num_gpus", 1)
    for name, value in request.wanted.items():
        if name in available:
            request.fields[name] = value
        elif name in BLOCKING_WANTED:
            request.block(BLOCKING_WANTED[name].format(value=value, num_gpus=num_gpus))
        else:
            request.assumptions.append(f"{name}={json.dumps(value)}: not yet in the Spec "
                                       "(recorded for when it is)")
    if row["per_gpu"] == "false" and row["value"]:
        request.block("the value is a sum over GPUs, not per GPU")
    if row["outcome"] == "failed":
        request.block("the run failed for another reason than running out of memory")
    assumptions = json.loads(row["assumptions"]) + request.assumptions
    if request.blockers:
        row["unmapped_reason"] = "; ".join(request.blockers)
        row["assumptions"] = json.dumps(assumptions, ensure_ascii=False)
        return
    fields = {name: value for name, value in request.fields.items() if name in available}
    try:
        spec = build_spec(**fields)
    except SpecError as error:
        row["unmapped_reason"] = f"the Spec rejects the run: {error}"
        row["assumptions"] = json.dumps(assumptions, ensure_ascii=False)
        return
    assumptions += default_assumptions(spec, fields, bool(run.get("vision_language")))
    row["assumptions"] = json.dumps(assumptions, ensure_ascii=False)
    row["spec"] = json.dumps(spec.model_dump(mode="json"), sort_keys=True)
    row["spec_id"] = spec.spec_id
    row["mapping"] = "mapped"
    row["unmapped_reason"] = ""


def stack_versions_used(spec: Spec) -> list[str]:
    """The version fields whose library this run's stack loads (peft only with adapters, TRL
    only under framework trl, bitsandbytes only when quantizing)."""
    used = ["transformers_version"]
    if spec.method in ("lora", "qlora"):
        used.append("peft_version")
    if spec.framework == "trl":
        used.append("trl_version")
    if spec.method == "qlora":
        used.append("bitsandbytes_version")
    return used


def default_assumptions(spec: Spec, given: dict[str, Any], multimodal: bool) -> list[str]:
    """'field=value: ...' for every memory-relevant Spec field the source left to the default."""
    relevant = (list(ALWAYS_RELEVANT) + list(METHOD_FIELDS.get(spec.method, ()))
                + stack_versions_used(spec))
    if multimodal:
        relevant += list(IMAGE_FIELDS)
    from vram_ml.distributed import MULTI_GPU_FIELDS
    from vram_ml.distributed import relevant as multi_gpu_relevant

    relevant += [name for name in MULTI_GPU_FIELDS
                 if name != "accelerate_version" and multi_gpu_relevant(name, spec)]
    notes = []
    for name in relevant:
        if name in given:
            continue
        value = getattr(spec, name)
        origin = LLAMAFACTORY_DEFAULTS.get(name, (None, "the Spec's default"))[1]
        notes.append(f"{name}={json.dumps(value if not isinstance(value, tuple) else list(value))}"
                     f": not stated by the source; the Spec's default ({origin})")
    return notes
