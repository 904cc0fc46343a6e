"""The recipe's framework paths (model/recipe/frameworks/) against the behaviour read from
LLaMA-Factory 0.9.5 and TRL's code: dtypes of every parameter kind, which layers are
checkpointed and how, who prepares QLoRA, and what the step keeps."""

from __future__ import annotations

import pytest
import torch

from vram_ml.model import recipe

from ..tiny_models import tiny_spec

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::UserWarning")


def _dtypes(model) -> dict[str, set[torch.dtype]]:
    """Parameter dtypes by kind: quantized, norm, embedding, head, adapter, other."""
    kinds: dict[str, set[torch.dtype]] = {}
    for name, param in model.named_parameters():
        if type(param).__name__ in ("Params4bit", "Int8Params"):
            kind = "quantized"
        elif "lora_" in name:
            kind = "adapter"
        elif "norm" in name:
            kind = "norm"
        elif "embed_tokens" in name:
            kind = "embedding"
        elif "lm_head" in name:
            kind = "head"
        else:
            kind = "other"
        kinds.setdefault(kind, set()).add(param.dtype)
    return kinds


@pytest.mark.parametrize("fields,expected", [
    # LLaMA-Factory: no prepare_model_for_kbit_training, frozen weights in the compute dtype
    (dict(framework="llamafactory", method="qlora", quant_bits=4),
     {"norm": torch.bfloat16, "embedding": torch.bfloat16, "head": torch.bfloat16,
      "adapter": torch.float32}),
    (dict(framework="llamafactory", method="full"),
     {"norm": torch.float32, "embedding": torch.float32, "head": torch.float32,
      "other": torch.float32}),
    # TRL 0.24: peft's prepare (everything unquantized to fp32), then for 4-bit + bf16
    # peft_module_casting_to_bf16 (embeddings and head back to bf16, norms fp32)
    (dict(framework="trl", method="qlora", quant_bits=4),
     {"norm": torch.float32, "embedding": torch.bfloat16, "head": torch.bfloat16,
      "adapter": torch.float32}),
    (dict(framework="trl", method="qlora", quant_bits=8),
     {"norm": torch.float32, "embedding": torch.float32, "head": torch.float32,
      "adapter": torch.float32}),
    # TRL 0.25+: its own prepare upcasts only the norms
    (dict(framework="trl", trl_version="0.25.1", method="qlora", quant_bits=8),
     {"norm": torch.float32, "embedding": torch.bfloat16, "head": torch.bfloat16,
      "adapter": torch.float32}),
    # the plain Trainer (Qwen's finetune.py): peft's prepare and no TRL recast, 4-bit too
    (dict(framework="hf_trainer", method="qlora", quant_bits=4),
     {"norm": torch.float32, "embedding": torch.float32, "head": torch.float32,
      "adapter": torch.float32}),
    # peft 0.7 (Qwen's pin): adapters in the base weights' dtype
    (dict(framework="hf_trainer", method="lora", transformers_version="4.32.0",
          peft_version="0.7.1"),
     {"norm": torch.bfloat16, "embedding": torch.bfloat16, "adapter": torch.bfloat16}),
    # TRL trains a full model in its load dtype
    (dict(framework="trl", method="full"),
     {"norm": torch.bfloat16, "embedding": torch.bfloat16, "head": torch.bfloat16,
      "other": torch.bfloat16}),
])
def test_parameter_dtypes_per_kind(fields, expected):
    model = recipe.build_model(tiny_spec(**fields), "meta")
    kinds = _dtypes(model)
    assert {kind: kinds[kind] for kind in expected} == {k: {v} for k, v in expected.items()}
    if fields.get("method") == "qlora":
        assert kinds["quantized"] == {torch.uint8 if fields["quant_bits"] == 4 else torch.int8}


class CheckpointSpy:
    """Records every torch.utils.checkpoint.checkpoint call: the layer and `use_reentrant`."""

    def __init__(self, monkeypatch):
        import torch.utils.checkpoint as checkpoint_module

        self.calls: list[tuple[str, object]] = []
        original = checkpoint_module.checkpoint

        def spy(function, *args, **kwargs):
            owner = getattr(getattr(function, "func", function), "__self__", None)
            if owner is None and getattr(function, "args", None):
                owner = function.args[0]
            self.calls.append((type(owner).__name__ + f"#{id(owner)}",
                               kwargs.get("use_reentrant", "torch default")))
            return original(function, *args, **kwargs)

        monkeypatch.setattr(checkpoint_module, "checkpoint", spy)
        import transformers.modeling_utils as modeling_utils  # binds `checkpoint` at import

        if hasattr(modeling_utils, "checkpoint"):
            monkeypatch.setattr(modeling_utils, "checkpoint", spy)

    @property
    def layers(self) -> int:
        return len({layer for layer, _ in self.calls})

    @property
    def modes(self) -> set:
        return {mode for _, mode in self.calls}


def _one_step(spec):
    model = recipe.build_model(spec, "cpu")
    batch = recipe.make_batch(spec, model, "cpu")
    recipe.train_step(spec, model, batch, recipe.make_optimizer(spec, model))
    return model, batch


@pytest.mark.parametrize("fields,layers,mode", [
    # LLaMA-Factory's wrapper: reentrant, only layers with a trainable parameter
    (dict(framework="llamafactory"), 2, True),
    (dict(framework="llamafactory", method="qlora", quant_bits=4), 2, True),
    (dict(framework="llamafactory", method="freeze", freeze_trainable_layers=1), 1, True),
    # TRL: transformers' default (5.x non-reentrant) for LoRA; peft's prepare passes {} for
    # QLoRA, so torch's default (reentrant) applies
    (dict(framework="trl"), 2, False),
    (dict(framework="trl", method="qlora", quant_bits=4), 2, "torch default"),
    (dict(framework="trl", trl_version="0.25.1", method="qlora", quant_bits=4), 2,
     "torch default"),
])
def test_which_layers_are_checkpointed_and_how(monkeypatch, fields, layers, mode):
    spy = CheckpointSpy(monkeypatch)
    _one_step(tiny_spec(**fields))
    assert spy.layers == layers  # the tiny Llama has 2 decoder layers
    assert spy.modes == {mode}
    assert all(name.startswith("LlamaDecoderLayer") for name, _ in spy.calls)


def test_llamafactory_never_prepares_for_kbit_training(monkeypatch):
    import peft

    called = []
    monkeypatch.setattr(peft, "prepare_model_for_kbit_training",
                        lambda *a, **k: called.append(1))
    recipe.build_model(tiny_spec(framework="llamafactory", method="qlora", quant_bits=4), "meta")
    assert not called


def test_llamafactory_pads_the_batch_to_a_multiple_of_8():
    spec = tiny_spec(seq_len=61)
    model = recipe.build_model(spec, "meta")
    assert recipe.make_batch(spec, model)["input_ids"].shape == (2, 64)
    trl = tiny_spec(seq_len=61, framework="trl")
    assert recipe.make_batch(trl, recipe.build_model(trl, "meta"))["input_ids"].shape == (2, 61)


def test_trl_step_keeps_fp32_logits_for_its_metrics(monkeypatch):
    """SFTTrainer.compute_loss (trl >= 0.22: entropy, >= 0.16: token accuracy) works on the fp32
    logits accelerate converted the output to; older trl computes no metrics."""
    from vram_ml.model.recipe.frameworks import trl as trl_framework

    seen = []
    original = trl_framework._entropy
    monkeypatch.setattr(trl_framework, "_entropy",
                        lambda logits: seen.append(logits.dtype) or original(logits))
    _one_step(tiny_spec(framework="trl"))
    assert seen == [torch.float32]  # one micro-batch
    _one_step(tiny_spec(framework="trl", trl_version="0.15.2"))
    _one_step(tiny_spec(framework="llamafactory"))
    _one_step(tiny_spec(framework="hf_trainer"))  # the plain Trainer: whatever trl_version says
    assert seen == [torch.float32]
