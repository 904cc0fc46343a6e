"""Training stages: LLaMA-Factory's `stage: sft | pt | dpo | kto | rm | ppo`, as Spec fields.

Which stage fields apply to which stage, their checks, and the models a stage loads beside the
one it trains (a reference model, a reward model), read from hiyouga/LLaMA-Factory@v0.9.5
src/llamafactory/ (line numbers at that tag):

- hparams/finetuning_args.py:183-250 (the fields), :574 (`use_ref_model = stage == "dpo" and
  pref_loss not in ["orpo", "simpo"]`), :577-584 (4/8-bit only; PPO needs `reward_model`;
  `reward_model_type: lora` only for LoRA);
- train/trainer_utils.py:116-190 `create_ref_model` / `create_reward_model`: a `ref_model` path is
  loaded with `ref_model_quantization_bit`; without one, LoRA uses the policy with its adapter
  disabled and full / freeze load a frozen copy; KTO always has a reference
  (train/kto/workflow.py:57-60), PPO too (train/ppo/workflow.py:52);
- hparams/generating_args.py:54-57: `max_new_tokens: 1024`, PPO's generation length.

What each stage costs in memory is the analytical estimator's (model/formulas/stages.py) and the
recipe's (model/recipe/stages/). Pure Python: the Spec imports this.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from vram_ml.defaults import STAGE_FIELDS, default
from vram_ml.model_source import ModelSourceError, ResolvedModel, resolve_model

if TYPE_CHECKING:
    from vram_ml.spec import Spec

Stage = Literal["sft", "pt", "dpo", "kto", "rm", "ppo"]
PrefLoss = Literal["sigmoid", "hinge", "ipo", "kto_pair", "orpo", "simpo"]
RewardModelType = Literal["lora", "full", "api"]
STAGES = ("sft", "pt", "dpo", "kto", "rm", "ppo")
# pref_loss values with no reference model (finetuning_args.py:574); the others cost the same.
REFERENCE_FREE_LOSSES = ("orpo", "simpo")
PAIRWISE_STAGES = ("dpo", "rm")  # chosen and rejected in one forward (data/collator.py:545-564)
# PPO's forwards run under `torch.autocast(device.type)`, fp16 on CUDA (ppo/trainer.py:176)
PPO_PRECISIONS = ("bf16", "fp16")
# LLaMA-Factory 0.9.5's CustomPPOTrainer requires trl 0.8.6-0.9.6 (train/ppo/trainer.py:86-97),
# outside the trl 0.18-0.24 its pyproject.toml pins: every PPO answer says so.
PPO_TRL_NOTE = ("ppo: LLaMA-Factory 0.9.5's PPO trainer requires trl 0.8.6-0.9.6 (ppo/"
                "trainer.py:86-97), outside the trl 0.18-0.24 it pins, so it does not start as "
                "pip installs it; estimated from its trainer code on trl 0.9.6's PPOTrainer.step")


def stage_fields_that_apply(fields: dict[str, Any]) -> set[str]:
    """The stage fields that change memory for these Spec fields (the rest keep defaults)."""
    stage = fields.get("stage") or default("stage")
    applies = {"stage"}
    if stage == "dpo":
        applies.add("pref_loss")
    if uses_reference(stage, fields.get("pref_loss") or default("pref_loss")):
        applies.add("ref_model")
        if fields.get("ref_model"):
            applies.add("ref_model_quantization_bit")
    if stage == "ppo":
        applies |= {"reward_model_type", "max_new_tokens"}
        if (fields.get("reward_model_type") or default("reward_model_type")) == "full":
            applies |= {"reward_model", "reward_model_quantization_bit"}
    return applies


def uses_reference(stage: str, pref_loss: str) -> bool:
    """A reference model's log-probabilities enter the loss: DPO (but ORPO / SimPO), KTO, PPO."""
    return stage in ("kto", "ppo") or (stage == "dpo" and pref_loss not in REFERENCE_FREE_LOSSES)


def quantized_under_bf16(spec: Spec) -> bool:
    """PPO with a bitsandbytes model (the policy, a quantized reference or reward model) and
    bf16 weights: PPO's fp16 autocast meets bitsandbytes' bf16 outputs (model/recipe/stages/
    ppo.py AUTOCAST_CONFLICT)."""
    quantized = (spec.method == "qlora" or spec.ref_model_quantization_bit is not None
                 or spec.reward_model_quantization_bit is not None)
    return spec.stage == "ppo" and spec.precision == "bf16" and quantized


def stage_refusal(spec: Spec) -> str:
    """Why the recipe cannot run this stage's step (one line), or "": PPO's generation with
    freeze's mixed dtypes, its fp16 autocast with bitsandbytes under bf16 (both would fail in
    LLaMA-Factory as read; model/recipe/stages/ppo.py). The analytical estimate still answers.
    Part of model/recipe_support.recipe_refusal (everything the recipe refuses)."""
    if spec.stage != "ppo":
        return ""
    if spec.method == "freeze":
        return ("method: ppo with freeze fails in the recipe: generation runs without autocast "
                "and the fp32 trainable layers meet the frozen half-precision output head")
    if quantized_under_bf16(spec):
        return ("precision: ppo with a 4/8-bit model under bf16 fails in the recipe: fp16 "
                "autocast (PPO's amp_context) meets bitsandbytes' bf16 outputs in torch.cat "
                "(autocast 'prioritize'); use fp16")
    return ""


def check_stage(spec: Spec) -> None:
    """The stage fields' rules; raises ValueError naming the field (one line)."""
    given = {name: getattr(spec, name) for name in STAGE_FIELDS}
    applies = stage_fields_that_apply(given)
    for name in STAGE_FIELDS:
        if name not in applies and given[name] != default(name):
            raise ValueError(f"{name}: does not apply to stage {spec.stage}"
                             + _why_not(name, spec))
    if spec.stage != "sft" and spec.framework != "llamafactory":
        raise ValueError(f"stage: {spec.stage} is modelled as LLaMA-Factory runs it; framework "
                         f"{spec.framework} is modelled for stage sft only")
    if spec.stage == "ppo":
        if spec.reward_model_type == "lora" and spec.method not in ("lora", "qlora"):
            raise ValueError("reward_model_type: lora needs a LoRA policy (LLaMA-Factory); use "
                             "full or api for full / freeze PPO")
        if spec.precision not in PPO_PRECISIONS:
            raise ValueError(f"precision: ppo is modelled for bf16 or fp16 (its forwards always "
                             f"autocast; got {spec.precision})")
        if spec.images_per_sample:
            raise ValueError("images_per_sample: ppo with images is not modelled")
        limit = spec.shape.max_position_embeddings
        if spec.seq_len + spec.max_new_tokens > limit:
            raise ValueError(f"max_new_tokens: prompt {spec.seq_len} + {spec.max_new_tokens} "
                             f"generated tokens exceed the model's max positions ({limit})")
    for name in ("ref_model", "reward_model"):
        if getattr(spec, name) is not None:
            try:
                other = companion_model(spec, name).shape
            except ModelSourceError as error:
                raise ValueError(f"{name}: {error}") from None
            if other.vocab_size != spec.shape.vocab_size:  # the same token ids go through both
                raise ValueError(f"{name}: its vocabulary ({other.vocab_size}) is not the "
                                 f"policy's ({spec.shape.vocab_size}); LLaMA-Factory feeds it "
                                 "the policy's tokens")


def _why_not(name: str, spec: Spec) -> str:
    if name == "ref_model_quantization_bit":
        return " without ref_model (LLaMA-Factory quantizes only a separately loaded reference)"
    if name == "ref_model" and spec.stage == "dpo":
        return f" with pref_loss {spec.pref_loss} (no reference model)"
    if name in ("reward_model", "reward_model_quantization_bit") and spec.stage == "ppo":
        return f" with reward_model_type {spec.reward_model_type}"
    return ""


def companion_model(spec: Spec, name: str) -> ResolvedModel:
    """The model `spec.<name>` (ref_model / reward_model) names; the policy's own model
    overrides apply when it is the policy's model (a scaled-down variant's reference)."""
    source = getattr(spec, name) or spec.model
    resolved = resolve_model(source)
    if resolved.name == spec.resolved_model.name:
        return spec.resolved_model
    return resolved


def companion_spec(spec: Spec, name: str, quant_bits: int | None) -> Spec:
    """A spec of the `name` (ref_model / reward_model) model as LLaMA-Factory loads it beside
    the policy: the policy's dtypes, attention and stack, quantized when asked (its quantization
    type and double quantization are the policy's model_args); its method and sequence fields
    only describe how it is built, frozen."""
    from vram_ml.spec import build_spec

    resolved = companion_model(spec, name)
    same = resolved is spec.resolved_model
    return build_spec(
        model=spec.model if same else resolved.name,
        model_overrides=dict(spec.model_overrides) if same else {}, seq_len=1,
        method="qlora" if quant_bits else "lora", quant_bits=quant_bits,
        quant_type=spec.quant_type, double_quant=spec.double_quant, precision=spec.precision,
        attention=spec.attention, framework=spec.framework,
        transformers_version=spec.transformers_version, peft_version=spec.peft_version,
        trl_version=spec.trl_version, bitsandbytes_version=spec.bitsandbytes_version,
    )


def canonical_stage_fields(spec: Spec, fields: dict[str, Any]) -> dict[str, Any]:
    """The stage fields as `spec_id` hashes them: none for sft (ids made before stages existed
    stay valid), memory-equivalent losses as one, companion models named canonically."""
    if spec.stage == "sft":
        for name in STAGE_FIELDS:
            fields.pop(name, None)
        return fields
    if fields["pref_loss"] not in REFERENCE_FREE_LOSSES:
        fields["pref_loss"] = default("pref_loss")  # sigmoid, hinge, ipo, kto_pair: one run
    for name in ("ref_model", "reward_model"):
        if fields.get(name) is not None:
            fields[name] = companion_model(spec, name).name
    return fields
