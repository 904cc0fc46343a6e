"""The spec options every command shares (flags or `--config train.yaml`), and error exits.

`with_spec_options` appends the spec flags to a typer command's signature and hands the command
a ready `SpecInput`, so each command states only its own options.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import sys
import typing
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import Annotated, Any

import typer

from vram_ml.defaults import EXAMPLE_CONFIG
from vram_ml.model_source import ModelSourceError
from vram_ml.spec import SpecError
from vram_ml.spec_input import SpecInput, spec_input_from_fields


def fail(message: str, code: int = 2) -> typer.Exit:
    """Print one error line to stderr and return the Exit to raise."""
    first_line = str(message).strip().splitlines()[0] if str(message).strip() else "failed"
    print(f"error: {first_line}", file=sys.stderr)
    return typer.Exit(code)


@contextlib.contextmanager
def fail_to_write(path: Path, what: str = "output", folder: bool = False) -> Iterator[None]:
    """Check that `path` (a file, or a folder) can be written before the work, and turn an
    OSError while writing into one line: `error: output: cannot write PATH (why)`, exit 1."""
    from vram_ml.output_paths import OutputPathError, writable_dir, writable_file

    try:
        (writable_dir if folder else writable_file)(path, what)
    except OutputPathError as error:
        raise fail(str(error), code=1) from None
    try:
        yield
    except OSError as error:
        where = error.filename or path
        raise fail(f"{what}: cannot write {where} ({error.strerror or type(error).__name__})",
                   code=1) from None


# name -> (annotation, Spec field). Typer reads these; None means "not given".
_OPTIONS: dict[str, tuple[Any, str | None]] = {
    "config": (Annotated[Path | None, typer.Option(help="LLaMA-Factory training YAML.")], None),
    "allow_unknown": (
        Annotated[
            bool | None,
            typer.Option("--allow-unknown", help="Go on past YAML keys LLaMA-Factory refuses."),
        ],
        None,
    ),
    "model": (
        Annotated[str | None, typer.Option(help="Catalog id, HF id or config.json path.")],
        "model",
    ),
    "method": (Annotated[str | None, typer.Option(help="full | freeze | lora | qlora.")], "method"),
    "quant_bits": (Annotated[int | None, typer.Option(help="4 or 8 (qlora).")], "quant_bits"),
    "quant_type": (Annotated[str | None, typer.Option(help="nf4 | fp4.")], "quant_type"),
    "double_quant": (
        Annotated[bool | None, typer.Option(help="Double quantization (qlora).")],
        "double_quant",
    ),
    "lora_rank": (Annotated[int | None, typer.Option(help="LoRA rank.")], "lora_rank"),
    "lora_alpha": (
        Annotated[int | None, typer.Option(help="LoRA alpha (no memory effect).")],
        "lora_alpha",
    ),
    "lora_dropout": (
        Annotated[float | None, typer.Option(help="LoRA dropout (>0 keeps copies).")],
        "lora_dropout",
    ),
    "lora_target": (
        Annotated[str | None, typer.Option(help="all, or modules: q_proj,v_proj.")],
        "lora_target",
    ),
    "additional_target": (
        Annotated[str | None, typer.Option(
            help="LoRA: modules trained whole beside it (modules_to_save): embed_tokens,lm_head.")],
        "additional_target",
    ),
    "batch_size": (
        Annotated[int | None, typer.Option(help="Per-device batch size.")],
        "batch_size",
    ),
    "grad_accum": (
        Annotated[int | None, typer.Option(help="Gradient accumulation steps.")],
        "gradient_accumulation",
    ),
    "seq_len": (
        Annotated[int | None, typer.Option(help="Sequence length (cutoff_len).")],
        "seq_len",
    ),
    "precision": (
        Annotated[str | None, typer.Option(help="bf16 | fp16 | pure_bf16 | fp32 | no_amp.")],
        "precision",
    ),
    "gradient_checkpointing": (
        Annotated[bool | None, typer.Option(help="Gradient checkpointing.")],
        "gradient_checkpointing",
    ),
    "attention": (
        Annotated[str | None, typer.Option(help="eager | sdpa | flash_attention_2.")],
        "attention",
    ),
    "optimizer": (
        Annotated[
            str | None,
            typer.Option(help="adamw_torch | adamw_8bit | paged_adamw_8bit | sgd | adafactor ..."),
        ],
        "optimizer",
    ),
    "liger_kernel": (Annotated[bool | None, typer.Option(help="Liger kernels.")], "liger_kernel"),
    "images": (
        Annotated[int | None, typer.Option(help="Images per sample (VLMs).")],
        "images_per_sample",
    ),
    "image_resolution": (
        Annotated[int | None, typer.Option(help="Image side in pixels (VLMs).")],
        "image_resolution",
    ),
    "freeze_vision_tower": (
        Annotated[
            bool | None,
            typer.Option(help="Freeze the vision tower (VLMs; LLaMA-Factory's default: yes)."),
        ],
        "freeze_vision_tower",
    ),
    "freeze_multi_modal_projector": (
        Annotated[
            bool | None,
            typer.Option(help="Freeze the projector (VLMs; LLaMA-Factory's default: yes)."),
        ],
        "freeze_multi_modal_projector",
    ),
    "num_gpus": (Annotated[int | None, typer.Option(help="GPUs (data parallel).")], "num_gpus"),
    "zero_stage": (
        Annotated[int | None, typer.Option(help="DeepSpeed ZeRO stage 0-3 (wins over a config).")],
        "zero_stage",
    ),
    "deepspeed": (
        Annotated[str | None, typer.Option(help="DeepSpeed JSON (or ds_z3_config.json & co.).")],
        None,
    ),
    "accelerate_config": (
        Annotated[str | None, typer.Option(help="accelerate config YAML (FSDP, DeepSpeed).")],
        None,
    ),
    "distributed": (
        Annotated[str | None, typer.Option(help="none | ddp | deepspeed | fsdp.")], "distributed",
    ),
    "num_nodes": (Annotated[int | None, typer.Option(help="Nodes the GPUs are on.")], "num_nodes"),
    "offload": (
        Annotated[str | None, typer.Option(help="CPU offload: none | optimizer | params | "
                                                "optimizer+params.")],
        "offload",
    ),
    "fsdp_sharding": (
        Annotated[str | None, typer.Option(help="FULL_SHARD | SHARD_GRAD_OP | HYBRID_SHARD | "
                                                "NO_SHARD.")],
        "fsdp_sharding",
    ),
    "fsdp_version": (Annotated[int | None, typer.Option(help="FSDP 1 or 2.")], "fsdp_version"),
    "framework": (
        Annotated[str | None,
                  typer.Option(help="llamafactory | trl | hf_trainer (who wraps the model).")],
        "framework",
    ),
    "transformers_version": (
        Annotated[str | None, typer.Option(help="transformers version, e.g. 4.57.6.")],
        "transformers_version",
    ),
    "peft_version": (
        Annotated[str | None, typer.Option(help="peft version, e.g. 0.18.1.")], "peft_version",
    ),
    "trl_version": (
        Annotated[str | None, typer.Option(help="trl version, e.g. 0.24.0.")], "trl_version",
    ),
    "bitsandbytes_version": (
        Annotated[str | None, typer.Option(help="bitsandbytes version, e.g. 0.50.2.")],
        "bitsandbytes_version",
    ),
    "accelerate_version": (
        Annotated[str | None, typer.Option(help="accelerate version (FSDP), e.g. 1.11.0.")],
        "accelerate_version",
    ),
    "stage": (
        Annotated[str | None, typer.Option(help="sft | pt | dpo | kto | rm | ppo.")],
        "stage",
    ),
    "pref_loss": (
        Annotated[str | None, typer.Option(help="dpo: sigmoid | hinge | ipo | kto_pair | orpo | "
                                                "simpo (orpo, simpo: no reference).")],
        "pref_loss",
    ),
    "ref_model": (
        Annotated[str | None, typer.Option(help="A separately loaded reference (model id/path).")],
        "ref_model",
    ),
    "ref_model_quantization_bit": (
        Annotated[int | None, typer.Option(help="4 or 8: quantize the ref_model.")],
        "ref_model_quantization_bit",
    ),
    "reward_model_type": (
        Annotated[str | None, typer.Option(help="ppo: lora | full | api.")], "reward_model_type",
    ),
    "reward_model": (
        Annotated[str | None, typer.Option(help="ppo, reward_model_type full: its model.")],
        "reward_model",
    ),
    "reward_model_quantization_bit": (
        Annotated[int | None, typer.Option(help="4 or 8: quantize the full reward model.")],
        "reward_model_quantization_bit",
    ),
    "max_new_tokens": (
        Annotated[int | None, typer.Option(help="ppo: tokens generated per prompt.")],
        "max_new_tokens",
    ),
    "override": (
        Annotated[
            list[str] | None, typer.Option(help="Model config override key=value (repeatable).")
        ],
        None,
    ),
}


def spec_flags() -> dict[str, tuple[str, str]]:
    """Spec field -> (its CLI flag, its help line): the web form labels its inputs with these."""
    flags = {}
    for name, (annotation, spec_field) in _OPTIONS.items():
        if spec_field:
            option = typing.get_args(annotation)[1]
            flags[spec_field] = ("--" + name.replace("_", "-"), option.help or "")
    return flags


def spec_input_from_options(options: dict[str, Any]) -> SpecInput:
    """Turn the shared options into a SpecInput (flags, YAML, or the embedded example).

    Raises:
        SpecError: invalid configuration, one line.
    """
    from vram_ml.llamafactory import read_llamafactory_yaml

    fields = {
        spec_field: options[name]
        for name, (_, spec_field) in _OPTIONS.items()
        if spec_field and options.get(name) is not None
    }
    overrides = _parse_overrides(options.get("override") or [])
    if overrides:
        fields["model_overrides"] = overrides
    launch = {name: options[name] for name in ("deepspeed", "accelerate_config")
              if options.get(name)}
    config, allow_unknown = options.get("config"), bool(options.get("allow_unknown"))
    if config is None and "model" not in fields:
        with resources.as_file(resources.files("vram_ml") / "examples" / EXAMPLE_CONFIG) as example:
            read = read_llamafactory_yaml(example, {**fields, **launch}, allow_unknown)
        source = f"example ({EXAMPLE_CONFIG})"
    elif config is not None:
        read = read_llamafactory_yaml(config, {**fields, **launch}, allow_unknown)
        source = str(config)
    else:
        return spec_input_from_fields(fields, "flags", launch, read_files=True)
    return SpecInput.from_read(read, source)


def _parse_overrides(items: list[str]) -> dict[str, int | float]:
    overrides: dict[str, int | float] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise SpecError(f"override: expected key=value (got {item!r})")
        try:
            number = float(value) if "." in value else int(value)
        except ValueError:
            raise SpecError(f"override: {key!r} must be a number (got {value!r})") from None
        overrides[key.strip()] = number
    return overrides


def with_spec_options(command):
    """Decorator: add the shared spec options to `command`, which receives `spec_input`."""
    signature = inspect.signature(command)
    # Under `from __future__ import annotations` the annotations are strings; typer needs the
    # real Annotated types once the signature is rebuilt.
    hints = typing.get_type_hints(command, include_extras=True)
    own = [
        p.replace(annotation=hints.get(p.name, p.annotation))
        for p in signature.parameters.values()
        if p.name != "spec_input"
    ]
    added = [
        inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=annotation)
        for name, (annotation, _) in _OPTIONS.items()
    ]

    @functools.wraps(command)
    def wrapper(**kwargs: Any) -> Any:
        options = {name: kwargs.pop(name) for name in _OPTIONS}
        try:
            spec_input = spec_input_from_options(options)
        except (SpecError, ModelSourceError) as error:
            raise fail(str(error)) from None
        return command(spec_input=spec_input, **kwargs)

    wrapper.__signature__ = signature.replace(parameters=[*own, *added], return_annotation=None)
    return wrapper
