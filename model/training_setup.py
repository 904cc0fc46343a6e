"""The micro-training recipe: one training step of a Spec, as LLaMA-Factory would run it.

One recipe, three users: the agent runs it for real on CUDA (and on the CPU for tiny models), and
`simulate` runs it on fake tensors. Every choice that moves memory is made here, once:

- model from its config only (random weights, never `trust_remote_code`), `spec.attention`;
- dtypes as LLaMA-Factory: frozen weights in the compute dtype (bf16, fp16 for `fp16`, fp32 for
  `fp32`); trainable parameters upcast to fp32 unless `pure_bf16`; autocast only for bf16/fp16;
- method: `full` (all but a frozen vision tower / projector), `freeze` (the last N decoder layers),
  `lora`/`qlora` (peft on the target linears outside frozen vision modules); QLoRA quantizes every
  linear transformers' bitsandbytes integration would (all but the output head) with bitsandbytes;
- gradient checkpointing through transformers' own API with `use_reentrant=False` (LLaMA-Factory
  defaults to reentrant, same saved tensors). With transformers 5 this checkpoints every layer and
  (with peft) hooks every sub-model's input embeddings, so a frozen vision tower keeps its block
  inputs; LLaMA-Factory's own wrapper checkpoints only layers with trainable parameters;
- LoRA dropout as configured;
- optimizer as HF Trainer builds it (decay / no-decay groups, AdamW `foreach` as on CUDA) and
  `clip_grad_norm_(1.0)` (Trainer's `max_grad_norm`);
- a batch of `batch_size x seq_len` tokens with labels = inputs; VLMs get their images and image
  tokens inside `seq_len` (LLaMA-Factory's cutoff counts them): model/training_batch.py,
  re-exported here (`make_batch`, `image_token_count`, `qwen2_vl_grid`).

Deviations, all memory-neutral or noted: 8-bit QLoRA uses `threshold=0` (no outlier columns:
their count depends on the data); fp16 runs without a GradScaler unless the caller passes one.

Example (agent, real CUDA):
    model = build_model(spec, "cuda")
    batch = make_batch(spec, model, "cuda")
    optimizer = make_optimizer(spec, model)
    for _ in range(2):
        train_step(spec, model, batch, optimizer, scaler=make_grad_scaler(spec, "cuda"))
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from vram_ml.model.training_batch import image_token_count, make_batch, qwen2_vl_grid  # noqa: F401

if TYPE_CHECKING:
    from vram_ml.spec import Spec

INIT_STD = 0.02  # random weights: small normals keep fp16 finite (values never move memory)
MAX_GRAD_NORM = 1.0  # HF TrainingArguments.max_grad_norm
QUANT_BLOCKSIZE_4BIT = 64  # bitsandbytes' default for 4-bit weights
SUPPORTED_VLMS = ("llava", "qwen2_vl", "qwen2_5_vl")
# Name components of vision towers and projectors (LLaMA-Factory's visual.py, per model family).
VISION_MODULES = ("vision_tower", "visual", "vision_model")
PROJECTOR_MODULES = ("multi_modal_projector", "merger", "mm_projector")


class UnsupportedRecipe(ValueError):
    """The recipe cannot build this spec; the message is one line."""


# --- dtypes ---------------------------------------------------------------------------------


def compute_dtype(spec: Spec) -> torch.dtype:
    """The dtype of frozen weights and of compute (LLaMA-Factory's `compute_dtype`)."""
    return {"fp16": torch.float16, "fp32": torch.float32}.get(spec.precision, torch.bfloat16)


def autocast_dtype(spec: Spec) -> torch.dtype | None:
    """The autocast dtype, or None when the step runs without autocast."""
    return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(spec.precision)


def trainable_dtype(spec: Spec) -> torch.dtype:
    """Trainable parameters are upcast to fp32 unless the spec is pure bf16."""
    return torch.bfloat16 if spec.precision == "pure_bf16" else torch.float32


# --- model ----------------------------------------------------------------------------------


def hf_config(spec: Spec) -> Any:
    """The transformers config of the spec's model (from its config numbers; no remote code)."""
    from transformers import AutoConfig

    config = dict(spec.resolved_model.config)
    model_type = config.pop("model_type")
    for key in ("transformers_version", "_name_or_path", "auto_map"):
        config.pop(key, None)
    hf = AutoConfig.for_model(model_type, **config)
    for sub in {id(c): c for c in (hf, hf.get_text_config())}.values():
        sub.use_cache = False  # training keeps no KV cache (LLaMA-Factory sets it off)
    return hf


def model_class(config: Any) -> type:
    """The transformers class that trains this config (its `architectures`, else an Auto class)."""
    import transformers

    for name in config.architectures or ():
        cls = getattr(transformers, name, None)
        if cls is not None and name.endswith(("ForCausalLM", "ForConditionalGeneration")):
            return cls
    if is_multimodal(config):
        return transformers.AutoModelForImageTextToText
    return transformers.AutoModelForCausalLM


def attention_implementation(spec: Spec, config: Any) -> str:
    """`spec.attention`, except that `sdpa` (LLaMA-Factory's `flash_attn: auto`) falls back to
    eager for models transformers has no SDPA path for (as `auto` does)."""
    cls = model_class(config)
    mapping = getattr(cls, "_model_mapping", None)
    if mapping is not None and type(config) in mapping:
        cls = mapping[type(config)]
    if spec.attention == "sdpa" and not getattr(cls, "_supports_sdpa", True):
        return "eager"
    return spec.attention


def is_multimodal(config: Any) -> bool:
    return getattr(config, "vision_config", None) is not None


def build_model(spec: Spec, device: str | torch.device = "cpu") -> nn.Module:
    """Build the model of `spec`, ready to train: dtypes, quantization, frozen parts, checkpointing
    and LoRA as the recipe says.

    Args:
        spec: the configuration.
        device: "cuda" or "cpu" (random weights, really allocated) or "meta" (no storage: what
            `simulate` turns into fake tensors). QLoRA weights are quantized by bitsandbytes on
            the device (on "meta", bitsandbytes' shape functions give the packed layout).

    Returns:
        The model in train mode; a peft model for lora/qlora.

    Raises:
        UnsupportedRecipe: liger kernels, an unsupported vision-language family, or a method the
            recipe does not build.
    """
    from accelerate import init_empty_weights

    device = torch.device(device)
    config = hf_config(spec)
    if spec.liger_kernel:
        raise UnsupportedRecipe("liger_kernel: Liger kernels are not part of this recipe")
    if is_multimodal(config) and config.model_type not in SUPPORTED_VLMS:
        raise UnsupportedRecipe(
            f"model: vision-language family {config.model_type!r} is not in the recipe "
            f"(supported: {', '.join(SUPPORTED_VLMS)})"
        )
    with init_empty_weights(include_buffers=False):  # parameters on meta, small buffers real
        cls = model_class(config)
        build = getattr(cls, "from_config", None) or cls._from_config  # Auto classes / concrete
        model = build(config, dtype=compute_dtype(spec),
                      attn_implementation=attention_implementation(spec, config))
    model.tie_weights()  # init_empty_weights unties them (tie_word_embeddings models)
    if spec.method == "qlora":
        quantize_linears(model, spec, device)
    mark_trainable(model, spec)
    if spec.gradient_checkpointing:
        model.activation_checkpointing_enable({"use_reentrant": False})
    if spec.method in ("lora", "qlora"):
        model = add_lora(model, spec)
    for param in model.parameters():
        if param.requires_grad and param.dtype != trainable_dtype(spec):
            param.data = param.data.to(trainable_dtype(spec))
    if device.type != "meta":
        materialize(model, device)
    model.train()
    return model


def forbidden_prefixes(model: nn.Module, spec: Spec) -> tuple[str, ...]:
    """Module names that stay frozen: the vision tower and projector unless the spec trains them.

    A projector may sit inside the vision module (Qwen2-VL's `visual.merger`): the vision part is
    then its other children (`visual.patch_embed`, `visual.blocks`), as in LLaMA-Factory.
    """
    names = [name for name, _ in model.named_modules()]

    def projector(name: str) -> bool:
        return any(part in PROJECTOR_MODULES for part in name.split("."))

    def vision(name: str) -> bool:
        return any(part in VISION_MODULES for part in name.split(".")) and not projector(name)

    projectors = [name for name in names if projector(name)]
    prefixes: list[str] = []
    for name in names:
        holds_projector = any(p.startswith(name + ".") for p in projectors)
        frozen = (projector(name) and not spec.train_projector) or (
            vision(name) and not spec.train_vision_tower and not holds_projector)
        if frozen and not _inside(name, tuple(prefixes)):
            prefixes.append(name)
    return tuple(prefixes)


def _inside(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == prefix or name.startswith(prefix + ".") for prefix in prefixes)


def mark_trainable(model: nn.Module, spec: Spec) -> None:
    """Set requires_grad per method (LoRA parameters are added later by peft)."""
    forbidden = forbidden_prefixes(model, spec)
    layer_ids = None
    if spec.method == "freeze":
        layers = spec.resolved_model.shape.num_layers
        layer_ids = set(range(max(0, layers - spec.freeze_trainable_layers), layers))
    for name, param in model.named_parameters():
        if spec.method in ("lora", "qlora") or _inside(name, forbidden):
            param.requires_grad_(False)
        elif layer_ids is not None:
            match = re.search(r"(?:^|\.)layers\.(\d+)\.", name)
            param.requires_grad_(bool(match) and int(match.group(1)) in layer_ids)
        else:
            param.requires_grad_(param.is_floating_point())


def lora_target_names(model: nn.Module, spec: Spec) -> list[str]:
    """Full names of the linears LoRA wraps: LLaMA-Factory's targets, outside frozen vision
    modules, never the output head."""
    from peft.tuners.lora import LoraLayer

    wanted = set(spec.lora_target)
    forbidden = forbidden_prefixes(model, spec)
    head = model.get_output_embeddings()
    names = []
    for name, module in model.named_modules():
        linear = isinstance(module, nn.Linear) and not isinstance(module, LoraLayer)
        if not linear or module is head or _inside(name, forbidden):
            continue
        if "all" in wanted or name.rsplit(".", 1)[-1] in wanted:
            names.append(name)
    return names


def add_lora(model: nn.Module, spec: Spec) -> nn.Module:
    """Wrap the target linears with peft LoRA (rank, alpha, dropout from the spec)."""
    import peft

    targets = lora_target_names(model, spec)
    if not targets:
        raise UnsupportedRecipe(f"lora_target: no linear named {', '.join(spec.lora_target)}")
    config = peft.LoraConfig(
        r=spec.lora_rank,
        lora_alpha=spec.effective_lora_alpha,
        lora_dropout=spec.lora_dropout,
        target_modules=targets,
        task_type=peft.TaskType.CAUSAL_LM,
    )
    return peft.get_peft_model(model, config)


def quantize_linears(model: nn.Module, spec: Spec, device: torch.device) -> None:
    """Replace the linears transformers' bitsandbytes integration would quantize by bitsandbytes
    4-bit / 8-bit modules holding quantized random weights on `device`."""
    import bitsandbytes as bnb
    from transformers import BitsAndBytesConfig
    from transformers.integrations.bitsandbytes import replace_with_bnb_linear
    from transformers.quantizers.base import get_keys_to_not_convert

    quant_config = BitsAndBytesConfig(
        load_in_4bit=spec.quant_bits == 4,
        load_in_8bit=spec.quant_bits == 8,
        bnb_4bit_compute_dtype=compute_dtype(spec),
        bnb_4bit_use_double_quant=spec.double_quant,
        bnb_4bit_quant_type=spec.quant_type,
        llm_int8_threshold=0.0,
    )
    # bitsandbytes caches its 8-bit code on the device of the first call: keep that one real.
    bnb.functional.name2qmap.setdefault("dynamic", bnb.functional.create_dynamic_map())
    skip = get_keys_to_not_convert(model) + list(model._keep_in_fp32_modules or [])
    replace_with_bnb_linear(model, modules_to_not_convert=skip, quantization_config=quant_config)
    for module in model.modules():
        if isinstance(module, bnb.nn.Linear4bit):
            weight = _random_weight(module, compute_dtype(spec), device)
            packed, state = bnb.functional.quantize_4bit(
                weight, blocksize=QUANT_BLOCKSIZE_4BIT, compress_statistics=spec.double_quant,
                quant_type=spec.quant_type, quant_storage=torch.uint8,
            )
            module.weight = bnb.nn.Params4bit(
                packed, requires_grad=False, quant_state=state, blocksize=QUANT_BLOCKSIZE_4BIT,
                compress_statistics=spec.double_quant, quant_type=spec.quant_type,
                quant_storage=torch.uint8, bnb_quantized=True, module=module,
            )
            module.quant_state = state
        elif isinstance(module, bnb.nn.Linear8bitLt):
            weight = _random_weight(module, compute_dtype(spec), device)
            int8_weight, row_scales, _ = bnb.functional.int8_vectorwise_quant(weight)
            module.weight = bnb.nn.Int8Params(
                int8_weight, requires_grad=False, has_fp16_weights=False, CB=int8_weight,
                SCB=row_scales,
            )
        else:
            continue
        if module.bias is not None:
            module.bias = nn.Parameter(torch.zeros_like(module.bias, device=device), False)
    model.is_loaded_in_4bit = spec.quant_bits == 4
    model.is_loaded_in_8bit = spec.quant_bits == 8


def _random_weight(module: nn.Module, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    weight = torch.empty(module.out_features, module.in_features, dtype=dtype, device=device)
    return weight if device.type == "meta" else weight.normal_(0.0, INIT_STD)


def materialize(model: nn.Module, device: torch.device) -> None:
    """Give every meta parameter random values on `device` (tied parameters stay one tensor);
    move buffers there."""
    made: dict[int, nn.Parameter] = {}
    for module in model.modules():
        for name, param in list(module._parameters.items()):
            if param is None:
                continue
            if param.device.type == "meta":
                if id(param) not in made:
                    made[id(param)] = nn.Parameter(_random_like(param, name, device),
                                                   requires_grad=param.requires_grad)
                module._parameters[name] = made[id(param)]
            elif param.device != device:
                param.data = param.data.to(device)
        for name, buffer in list(module._buffers.items()):
            if buffer is not None and buffer.device != device:
                module._buffers[name] = buffer.to(device)


def _random_like(param: torch.Tensor, name: str, device: torch.device) -> torch.Tensor:
    data = torch.empty(param.shape, dtype=param.dtype, device=device)
    if name == "bias":
        return data.zero_()
    return data.fill_(1.0) if data.dim() == 1 else data.normal_(0.0, INIT_STD)


# --- optimizer and step ---------------------------------------------------------------------


def trainable_parameters(model: nn.Module) -> Iterator[tuple[str, nn.Parameter]]:
    return ((name, p) for name, p in model.named_parameters() if p.requires_grad)


def make_optimizer(spec: Spec, model: nn.Module) -> torch.optim.Optimizer:
    """The optimizer HF Trainer builds for `spec.optimizer`: decay / no-decay groups (weight
    decay 0, LLaMA-Factory's default), AdamW with `foreach=True` as on CUDA.

    Raises:
        UnsupportedRecipe: an optimizer name the recipe does not know.
    """
    from transformers.trainer_pt_utils import get_parameter_names

    patterns = [r"bias", r"layernorm", r"rmsnorm", r"(?:^|\.)norm(?:$|\.)", r"_norm(?:$|\.)"]
    decay = set(get_parameter_names(model, [nn.LayerNorm], patterns))
    params = list(trainable_parameters(model))
    groups = [
        {"params": [p for n, p in params if n in decay], "weight_decay": 0.0},
        {"params": [p for n, p in params if n not in decay], "weight_decay": 0.0},
    ]
    groups = [group for group in groups if group["params"]]
    lr = 1e-4
    name = spec.optimizer
    if name == "adamw_torch":
        return torch.optim.AdamW(groups, lr=lr, foreach=True)
    if name == "adamw_torch_fused":
        return torch.optim.AdamW(groups, lr=lr, fused=True)
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr)
    if name == "adafactor":
        from transformers.optimization import Adafactor

        return Adafactor(groups, lr=lr, scale_parameter=False, relative_step=False)
    import bitsandbytes as bnb

    classes = {
        "adamw_8bit": bnb.optim.AdamW8bit,
        "paged_adamw_8bit": bnb.optim.PagedAdamW8bit,
        "paged_adamw_32bit": bnb.optim.PagedAdamW32bit,
    }
    if name not in classes:
        raise UnsupportedRecipe(f"optimizer: {name!r} is not in the recipe")
    return classes[name](groups, lr=lr)


def make_grad_scaler(spec: Spec, device: str | torch.device) -> torch.amp.GradScaler | None:
    """HF Trainer's GradScaler for fp16 AMP on CUDA; None otherwise."""
    if spec.precision != "fp16" or torch.device(device).type != "cuda":
        return None
    return torch.amp.GradScaler("cuda")


def train_step(
    spec: Spec,
    model: nn.Module,
    batch: dict,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler | None = None,
) -> torch.Tensor:
    """One optimizer step: `gradient_accumulation` x (forward with labels + backward), gradient
    clipping, `optimizer.step()`, `zero_grad(set_to_none=True)`.

    Returns:
        The last micro-batch's loss, detached.
    """
    device_type = next(model.parameters()).device.type
    amp = autocast_dtype(spec)
    for _ in range(spec.gradient_accumulation):
        with torch.autocast(device_type, dtype=amp or torch.float32, enabled=amp is not None):
            loss = model(**batch).loss / spec.gradient_accumulation
        (scaler.scale(loss) if scaler else loss).backward()
        loss = loss.detach()
    if scaler:
        scaler.unscale_(optimizer)
    params = [p for group in optimizer.param_groups for p in group["params"]]
    torch.nn.utils.clip_grad_norm_(params, MAX_GRAD_NORM, foreach=True)
    if scaler:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return loss
