"""What the stages share: the models a stage loads beside the policy, the value head, the
per-sequence log-probabilities, the Trainer's AMP around a forward, and the phase a tensor was
made in (the tracker names the reference forward's logits and PPO's generation by it).

Read from hiyouga/LLaMA-Factory@v0.9.5 src/llamafactory/ and huggingface/trl (v0.24.0 for the
value head, v0.9.6 for PPO), never imported.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from vram_ml.model.recipe.precision import autocast_dtype, compute_dtype

if TYPE_CHECKING:
    from vram_ml.spec import Spec

IGNORE_INDEX = -100
COMPANIONS = "stage_companions"  # attribute of the policy: {"reference" | "reward": model}
# train/trainer_utils.py:608-612 and TRL's value head (modeling_value_head.py:29-46).
VALUE_HEAD_DROPOUT = 0.1  # ValueHead: summary_dropout_prob 0.1 when the config has none
PHASE: contextvars.ContextVar[str] = contextvars.ContextVar("stage_phase", default="")


@contextlib.contextmanager
def phase(name: str) -> Iterator[None]:
    """Mark what runs inside as `name` ("reference", "generation"), for the tracker's terms."""
    token = PHASE.set(name)
    try:
        yield
    finally:
        PHASE.reset(token)


# --- companion models: a frozen reference or reward model beside the policy --------------------


def companions(model: nn.Module) -> dict[str, nn.Module]:
    """The frozen models a stage keeps beside `model` (not its submodules: no optimizer, no
    `.train()`); empty for stages that load none."""
    return model.__dict__.get(COMPANIONS, {})


def attach_companion(model: nn.Module, name: str, companion: nn.Module) -> None:
    model.__dict__.setdefault(COMPANIONS, {})[name] = companion


def build_frozen_model(spec: Spec, device: torch.device, value_head: bool = False) -> nn.Module:
    """A model loaded with `is_trainable=False` (train/trainer_utils.py:123-146): the checkpoint
    dtype (no fp32 upcast: adapter.py:316-325 casts only trainable models), quantized when the
    spec says so, every parameter frozen, no checkpointing (patcher.py:413-420), eval mode
    (loader.py:209-211); with TRL's value head for PPO."""
    from accelerate import init_empty_weights

    from vram_ml.model.recipe.methods import quantize_linears
    from vram_ml.model.recipe.model_build import attention_implementation, hf_config, model_class
    from vram_ml.model.recipe.weights import materialize

    config = hf_config(spec)
    with init_empty_weights(include_buffers=False):
        cls = model_class(config)
        build = getattr(cls, "from_config", None) or cls._from_config
        model = build(config, dtype=compute_dtype(spec),
                      attn_implementation=attention_implementation(spec, config))
    model.tie_weights()
    if spec.method == "qlora":
        quantize_linears(model, spec, device)
    if value_head:
        add_value_head(model)
    model.requires_grad_(False)
    if device.type != "meta":
        materialize(model, device)
    model.train(False)  # eval mode: dropout off, as a frozen reference loads
    return model


# --- the value head (TRL's AutoModelForCausalLMWithValueHead) ----------------------------------


class ValueHead(nn.Module):
    """Dropout, then an fp32 Linear(hidden, 1) (trl@v0.24.0 models/modeling_value_head.py:29-57:
    the input is upcast to the head's dtype "for numerical stability")."""

    def __init__(self, hidden_size: int):
        super().__init__()
        self.dropout = nn.Dropout(VALUE_HEAD_DROPOUT)
        self.summary = nn.Linear(hidden_size, 1)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        output = self.dropout(hidden_states)
        if output.dtype != self.summary.weight.dtype:
            output = output.to(self.summary.weight.dtype)
        return self.summary(output)


def add_value_head(model: nn.Module) -> None:
    """`model.v_head`, made on meta like the model's parameters (fp32: nn.Linear's default, as
    TRL creates it after LLaMA-Factory's casts)."""
    hidden = model.config.get_text_config().hidden_size
    with torch.device("meta"):
        model.v_head = ValueHead(hidden)


def value_head_forward(model: nn.Module, inputs: dict, head: nn.Module | None = None
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """AutoModelForCausalLMWithValueHead.forward (modeling_value_head.py:156-185): the model with
    `output_hidden_states=True`, the value of the last hidden state, and the LM logits upcast to
    fp32 although nothing needs them (a reward model still makes them)."""
    outputs = model(**inputs, output_hidden_states=True, use_cache=False, return_dict=True)
    head = head if head is not None else model.v_head
    value = head(outputs.hidden_states[-1]).squeeze(-1)
    lm_logits = outputs.logits
    if lm_logits.dtype != torch.float32:
        lm_logits = lm_logits.float()
    return lm_logits, value


# --- forwards and log-probabilities ------------------------------------------------------------


def trainer_amp(spec: Spec, model: nn.Module, forward: Callable[[], Any]) -> Any:
    """`forward()` as the HF Trainer runs the model under accelerate's native AMP: inside
    autocast, its half-precision tensors converted to fp32 after (accelerate@v1.11.0
    accelerator.py:1750-1761, operations.py:765-786)."""
    amp = autocast_dtype(spec)
    device_type = next(model.parameters()).device.type
    with torch.autocast(device_type, dtype=amp or torch.float32, enabled=amp is not None):
        output = forward()
    if amp is None:
        return output
    return tuple(t.float() if torch.is_tensor(t) and t.dtype in (torch.float16, torch.bfloat16)
                 else t for t in output)


def batch_logps(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """`get_batch_logps` (train/trainer_utils.py:595-632, no ld_alpha): the sum of the labels'
    log-probabilities per sequence (log-softmax of all but the last position, gathered) and the
    number of label tokens."""
    labels = labels[:, 1:].clone()
    logits = logits[:, :-1, :]
    loss_mask = labels != IGNORE_INDEX
    labels[labels == IGNORE_INDEX] = 0
    per_token = torch.gather(logits.log_softmax(-1), dim=2, index=labels.unsqueeze(2)).squeeze(2)
    return (per_token * loss_mask).sum(-1), loss_mask.sum(-1)


def model_inputs(batch: dict, prefix: str = "") -> dict:
    """The forward's inputs from a batch (no labels: the stage computes its own loss)."""
    skip = {"labels"}
    return {key[len(prefix):]: value for key, value in batch.items()
            if key.startswith(prefix) and key[len(prefix):] not in skip
            and (prefix or not key.startswith(("kl_", "kto_")))}


@contextlib.contextmanager
def reference_model(model: nn.Module) -> Iterator[nn.Module]:
    """The reference: a loaded frozen copy when there is one, else the policy with its LoRA
    adapter disabled (dpo/trainer.py:262-269, kto/trainer.py:202-208; peft's disable_adapter only
    switches the adapter layers off, peft_model.py:937-985)."""
    ref = companions(model).get("reference")
    with phase("reference"):
        if ref is not None:
            yield ref
        else:
            with model.disable_adapter():
                yield model


def disable_dropout(model: nn.Module) -> None:
    """TRL's disable_dropout_in_model (DPO and KTO, dpo/trainer.py:57-60): every nn.Dropout to
    p = 0 (LoRA's dropout too; attention dropout is a float, untouched)."""
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.p = 0.0


def pairwise_batch(spec: Spec, model: nn.Module, device: str | torch.device) -> dict:
    """PairwiseDataCollatorWithPadding (data/collator.py:545-564): the B chosen sequences, then
    the B rejected ones, padded together (2B sequences of the padded length)."""
    from vram_ml.model.recipe.batch import token_batch

    return token_batch(spec.model_copy(update={"batch_size": 2 * spec.batch_size}), model, device)
