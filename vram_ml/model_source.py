"""Model sources: how a spec names its model, and how that name becomes config numbers.

Three kinds, tried in this order:
1. catalog: a Hugging Face id (or alias) of a real model whose config ships in vram_ml/catalog/;
2. path: a `config.json` file, or a model folder that holds one (only that file is read);
3. hub: any other `owner/name` id, fetched with transformers' `AutoConfig` when the hub is
   reachable (never with `trust_remote_code`); a clear error offline.

Catalog files are small JSON: {"hf_id", "family", "aliases", "source", "config": {the real
config.json's numbers}}; `source` names where the config was copied from (repo@commit:path) and
`source_note` any edit made to it. `model_overrides` (dotted keys for nested configs, e.g.
`text_config.num_hidden_layers`) turn a real config into a scaled-down variant, which is how the
agent covers many shapes cheaply.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import socket
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

from vram_ml.architectures import (
    IncompleteConfig,
    ModelShape,
    UnsupportedArchitecture,
    check_size_keys,
    shape_from_config,
)

CATALOG_PACKAGE = "vram_ml.catalog"
MAX_CONFIG_BYTES = 1_000_000  # a real config.json is a few KB; refuse to read anything large


class ModelSourceError(ValueError):
    """The model could not be resolved; the message is one line for the user."""


@dataclass(frozen=True)
class CatalogEntry:
    hf_id: str
    family: str
    aliases: tuple[str, ...]
    config: dict[str, Any]
    source: str = ""  # repo@commit:path of the copied config.json ("" for the first catalog)


@dataclass(frozen=True)
class ResolvedModel:
    """A model source turned into numbers."""

    name: str  # canonical: the catalog hf_id, or `config:<hash>` for files and hub configs
    source_kind: str  # catalog | path | hub
    family: str
    config: dict[str, Any]
    shape: ModelShape


@cache
def load_catalog() -> dict[str, CatalogEntry]:
    """All catalog entries by canonical hf_id."""
    entries: dict[str, CatalogEntry] = {}
    for item in resources.files(CATALOG_PACKAGE).iterdir():
        if not item.name.endswith(".json"):
            continue
        raw = json.loads(item.read_text())
        entry = CatalogEntry(
            hf_id=raw["hf_id"],
            family=raw["family"],
            aliases=tuple(raw.get("aliases", ())),
            config=raw["config"],
            source=raw.get("source", ""),
        )
        entries[entry.hf_id] = entry
    return entries


@cache
def _catalog_index() -> dict[str, str]:
    """Lower-cased id, alias or bare name (after the `/`) -> canonical hf_id."""
    index: dict[str, str] = {}
    for hf_id, entry in load_catalog().items():
        for key in (hf_id, *entry.aliases):
            index.setdefault(key.lower(), hf_id)
            index.setdefault(key.split("/")[-1].lower(), hf_id)
    return index


def find_in_catalog(source: str) -> CatalogEntry | None:
    hf_id = _catalog_index().get(source.strip().lower())
    return None if hf_id is None else load_catalog()[hf_id]


def resolve_model(source: str, overrides: dict[str, Any] | None = None) -> ResolvedModel:
    """Resolve a model source (catalog id, config path, hub id) to its config and shape.

    Raises:
        ModelSourceError: unknown model, unreadable config, or unsupported architecture.
    """
    source = source.strip()
    if not source:
        raise ModelSourceError("model: empty model name")
    entry = find_in_catalog(source)
    if entry is not None:
        name, kind, family, config = entry.hf_id, "catalog", entry.family, entry.config
    elif _looks_like_path(source):
        config, kind = read_config_file(Path(source)), "path"
        name, family = _config_name(config), config.get("model_type", "unknown")
    else:
        config, kind = fetch_hub_config(source), "hub"
        name, family = _config_name(config), config.get("model_type", "unknown")
    config = apply_overrides(config, overrides or {})
    try:
        shape = _shape(config)
    except (UnsupportedArchitecture, IncompleteConfig) as error:
        raise ModelSourceError(f"model {source!r}: {error}") from None
    except (KeyError, TypeError, ValueError, ArithmeticError) as error:
        raise ModelSourceError(f"model {source!r}: config lacks or mangles field {error}") from None
    _check_shape(source, shape)
    return ResolvedModel(name=name, source_kind=kind, family=family, config=config, shape=shape)


def _shape(config: dict[str, Any]) -> ModelShape:
    """The builder's shape, refused when the config sets none of the numbers that decide memory.
    The builder runs first so that an unknown model_type, or a variant a builder refuses by name,
    says so; a builder that failed on a missing key gets the missing numbers' reason if any."""
    try:
        shape = shape_from_config(config)
    except UnsupportedArchitecture:
        raise
    except (KeyError, TypeError, ValueError, ArithmeticError):
        check_size_keys(config)
        raise
    check_size_keys(config)
    return shape


# A config's sizes must be positive whole numbers of a plausible magnitude: every estimator
# divides by them, and a pasted or overridden config can hold anything.
_SHAPE_SIZES = ("num_layers", "hidden_size", "intermediate_size", "num_attention_heads",
                "num_key_value_heads", "head_dim", "vocab_size", "max_position_embeddings")
MAX_SHAPE_SIZE = 2**31


def _check_shape(source: str, shape: ModelShape) -> None:
    for name in _SHAPE_SIZES:
        value = getattr(shape, name)
        if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= MAX_SHAPE_SIZE:
            raise ModelSourceError(
                f"model {source!r}: config {name} must be a whole number from 1 to "
                f"{MAX_SHAPE_SIZE} (got {value!r})"
            )


def apply_overrides(config: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """A copy of `config` with dotted-key overrides applied (only existing numeric keys)."""
    if not overrides:
        return config
    result = copy.deepcopy(config)
    for dotted, value in sorted(overrides.items()):
        *parents, key = dotted.split(".")
        node = result
        for parent in parents:
            if not isinstance(node.get(parent), dict):
                raise ModelSourceError(f"model_overrides: {dotted!r} is not a key of the config")
            node = node[parent]
        if key not in node and not _is_optional_numeric_key(key):
            raise ModelSourceError(f"model_overrides: {dotted!r} is not a key of the config")
        if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
            raise ModelSourceError(f"model_overrides: {dotted!r} must be a positive number")
        node[key] = value
        if key == "num_hidden_layers":
            _cut_per_layer_lists(node, int(value))
    return result


# Per-layer lists a config may spell out; fewer layers keep the first ones (transformers checks
# that `layer_types` has one entry per layer).
PER_LAYER_LISTS = ("layer_types", "no_rope_layers")


def _cut_per_layer_lists(node: dict[str, Any], layers: int) -> None:
    for key in PER_LAYER_LISTS:
        if isinstance(node.get(key), list) and len(node[key]) > layers:
            node[key] = node[key][:layers]


def _is_optional_numeric_key(key: str) -> bool:
    # Configs may omit these and rely on transformers' defaults; overriding them is still valid.
    # Special-token ids may need moving below a smaller vocabulary (a scaled-down VLM).
    if key.endswith(("_token_id", "_token_index")):
        return True
    return key in {
        "vocab_size",
        "pad_token_id",
        "head_dim",
        "num_key_value_heads",
        "intermediate_size",
        "num_hidden_layers",
        "hidden_size",
        "num_attention_heads",
    }


def _looks_like_path(source: str) -> bool:
    return source.endswith(".json") or source.startswith((".", "/", "~")) or Path(source).exists()


def read_config_file(path: Path) -> dict[str, Any]:
    """Read a config.json (or the one inside a model folder); nothing else is ever read."""
    path = path.expanduser()
    if path.is_dir():
        path = path / "config.json"
    if path.suffix != ".json":
        raise ModelSourceError(f"model path {str(path)!r}: only a .json config file can be read")
    if not path.is_file():
        raise ModelSourceError(f"model path {str(path)!r}: no such config file")
    if path.stat().st_size > MAX_CONFIG_BYTES:
        raise ModelSourceError(f"model path {str(path)!r}: too large to be a config.json")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ModelSourceError(f"model path {str(path)!r}: not valid JSON") from None
    if not isinstance(config, dict) or "model_type" not in config:
        raise ModelSourceError(f"model path {str(path)!r}: not a model config (no model_type)")
    return config


def fetch_hub_config(model_id: str) -> dict[str, Any]:
    """Fetch a config from the Hugging Face hub with AutoConfig (no remote code)."""
    if model_id.count("/") != 1 or any(part in {"", ".", ".."} for part in model_id.split("/")):
        raise ModelSourceError(
            f"model {model_id!r}: not in the catalog (see `vram-ml catalog`) "
            "and not an owner/name id"
        )
    if not hub_reachable():
        raise ModelSourceError(
            f"model {model_id!r}: not in the catalog (see `vram-ml catalog`) and the Hugging Face "
            "hub is not reachable (offline); pass a path to its config.json instead"
        )
    try:
        from transformers import AutoConfig
    except ImportError:
        raise ModelSourceError(
            f"model {model_id!r}: not in the catalog; fetching it needs transformers "
            "(pip install 'vram-ml[sim]')"
        ) from None
    try:
        config = AutoConfig.from_pretrained(model_id, trust_remote_code=False)
    except Exception as error:  # noqa: BLE001 - any hub failure becomes one line
        reason = (
            str(error).strip().splitlines()[0][:160] if str(error).strip() else type(error).__name__
        )
        raise ModelSourceError(
            f"model {model_id!r}: not in the catalog and its config could not be fetched "
            f"(offline or unknown id: {reason})"
        ) from None
    return config.to_dict()


def hub_reachable(timeout_s: float = 3.0) -> bool:
    """Whether the hub answers at all; checked first so that offline fails at once, not after
    huggingface_hub's retries."""
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in {"1", "true", "yes"}:
        return False
    host = os.environ.get("HF_ENDPOINT", "https://huggingface.co").split("://")[-1].split("/")[0]
    try:
        with socket.create_connection((host, 443), timeout=timeout_s):
            return True
    except OSError:
        return False


def _config_name(config: dict[str, Any]) -> str:
    digest = hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()
    return f"config:{digest[:16]}"
