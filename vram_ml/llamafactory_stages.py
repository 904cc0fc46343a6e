"""The stage keys of a LLaMA-Factory YAML (`stage`, `pref_loss`, `ref_model`, `reward_model`, PPO's
generation settings, `packing`) as Spec fields; the YAML reader (llamafactory.py) calls this.

A key that does not apply to the YAML's stage is memory-irrelevant there (LLaMA-Factory reads
`pref_loss` only under DPO, `max_new_tokens` only under PPO's generation) and is reported as
ignored. A `ref_model` / `reward_model` path vram-ml cannot read here (a local checkpoint on the
training machine) is taken to have the policy's architecture, and the answer says so.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from vram_ml.model_source import ModelSourceError, resolve_model
from vram_ml.spec import SpecError
from vram_ml.stages import STAGES, stage_fields_that_apply

# Stage keys with no effect on peak memory (LLaMA-Factory@v0.9.5 hparams/finetuning_args.py,
# generating_args.py): loss weights and PPO's schedule / sampling knobs. `ppo_epochs` repeats the
# same mini-batches; `ppo_buffer_size` adds only token ids and per-token floats. The adapters of a
# frozen reference / reward model are merged into its weights when it loads (model/adapter.py).
STAGE_IGNORED_KEYS = frozenset({
    "pref_beta", "pref_ftx", "pref_bco_weight", "dpo_label_smoothing", "simpo_gamma", "ld_alpha",
    "kto_chosen_weight", "kto_rejected_weight", "ppo_buffer_size", "ppo_epochs", "ppo_score_norm",
    "ppo_target", "ppo_whiten_rewards", "top_k", "top_p", "temperature", "do_sample",
    "repetition_penalty", "length_penalty", "max_length", "skip_special_tokens",
    "ref_model_adapters", "reward_model_adapters",
})
STAGE_KEYS = ("stage", "pref_loss", "ref_model", "ref_model_quantization_bit", "reward_model",
              "reward_model_type", "reward_model_quantization_bit", "max_new_tokens")


@dataclass
class StageRead:
    """What the stage keys became."""

    fields: dict[str, Any] = field(default_factory=dict)
    consumed: set[str] = field(default_factory=set)
    assumed: dict[str, str] = field(default_factory=dict)
    unmodelled: list[str] = field(default_factory=list)


def read_stage_keys(raw: dict[str, Any], overrides: dict[str, Any], policy: str) -> StageRead:
    """Map the stage keys of `raw` (a YAML) for the stage the run ends up with.

    Raises:
        SpecError: an unknown stage (one line).
    """
    read = StageRead()
    stage = overrides.get("stage") or raw.get("stage") or "sft"
    if str(stage) not in STAGES:
        raise SpecError(f"stage: {stage!r} is not one of {', '.join(STAGES)}")
    stage = str(stage)
    if "stage" in raw:
        read.consumed.add("stage")
    read.fields["stage"] = stage
    given = {key: raw[key] for key in STAGE_KEYS if raw.get(key) is not None}
    applies = stage_fields_that_apply({**given, **overrides, "stage": stage})
    for key in STAGE_KEYS[1:]:
        if key in given and key in applies:
            read.consumed.add(key)
            read.fields[key] = given[key]
    for key in ("ref_model", "reward_model"):
        if key in read.fields:
            _companion(read, key, str(read.fields[key]), policy)
    if stage == "ppo":
        _ppo_keys(raw, read, applies)
    if stage == "pt" and raw.get("packing") is True and raw.get("cutoff_len"):
        # DataArguments.__post_init__ (data_args.py:185-189) takes one token off cutoff_len when
        # `packing: true` is written; left unset, the pt default packs blocks of exactly cutoff_len.
        read.consumed.add("packing")
        read.fields["seq_len"] = int(raw["cutoff_len"]) - 1
        read.assumed["seq_len"] = (f"packing: true: blocks of cutoff_len - 1 = "
                                   f"{read.fields['seq_len']} tokens (data_args.py:185-189)")
    return read


def _companion(read: StageRead, key: str, source: str, policy: str) -> None:
    """A reference / reward model path: its own architecture if vram-ml can read it, else the
    policy's."""
    if key == "reward_model" and read.fields.get("reward_model_type", "lora") != "full":
        return
    try:
        resolve_model(source)
    except ModelSourceError:
        read.fields[key] = policy
        read.assumed[key] = (f"{key}: {source!r} is not readable here; taken to have the "
                             "policy's architecture (model_name_or_path)")


def _ppo_keys(raw: dict[str, Any], read: StageRead, applies: set[str]) -> None:
    if raw.get("reward_model") is not None and "reward_model" not in applies:
        read.consumed.add("reward_model")  # the reward adapter's path (reward_model_type lora)
        read.assumed["reward_model"] = ("reward_model: a LoRA adapter sized like the policy's "
                                        "(lora_rank, lora_target), loaded frozen in fp32")
    beams = raw.get("num_beams")
    if beams is not None:
        read.consumed.add("num_beams")
        if beams != 1:
            read.unmodelled.append("num_beams")  # generation is modelled as sampling, 1 beam
