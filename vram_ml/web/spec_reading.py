"""A request's spec: Spec fields, a LLaMA-Factory YAML posted as text, a config.json posted as
text; read the way the CLI reads flags and `--config`, without ever reading a path a request
names.

A request names its model by catalog id. A config.json is posted as content: the server writes
it, under a name made from its hash, into a folder it created itself (`PastedConfigs`), and the
spec's model is that file, read by the same code as `--model path/config.json`. A request's own
`model` (or a YAML's `model_name_or_path`) that is not in the catalog is refused: it could be a
path on the server, or a hub id the server would fetch.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
import threading
from pathlib import Path
from typing import Any

from vram_ml.llamafactory import parse_llamafactory_text, spec_from_llamafactory
from vram_ml.model_source import find_in_catalog, read_config_file
from vram_ml.spec import SpecError
from vram_ml.spec_input import SpecInput, spec_input_from_fields

MAX_YAML_NODES = 5_000  # a training YAML has ~50 keys; aliases must not expand without bound
MAX_PASTED_CONFIGS = 256  # files kept in the server's folder; the oldest go first
POSTED_YAML = "posted YAML"


class PastedConfigs:
    """config.json texts posted to the server, kept as files in a folder the server owns."""

    def __init__(self) -> None:
        self.directory = Path(tempfile.mkdtemp(prefix="vram-ml-web-configs-"))
        self._lock = threading.Lock()

    def save(self, text: str) -> str:
        """Check that `text` is a model config and return the path of its file.

        Raises:
            SpecError: not JSON, not an object, or no model_type (one line).
        """
        try:
            config = json.loads(text)
        except (ValueError, RecursionError):
            raise SpecError("config_json: not valid JSON") from None
        if not isinstance(config, dict) or "model_type" not in config:
            raise SpecError("config_json: not a model config (no model_type)")
        digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:16]
        path = self.directory / f"{digest}.json"
        with self._lock:
            if not path.exists():
                self._make_room()
                path.write_text(json.dumps(config), encoding="utf-8")
        read_config_file(path)  # the same checks as `--model config.json` (ModelSourceError)
        return str(path)

    def _make_room(self) -> None:
        files = sorted(self.directory.glob("*.json"), key=lambda p: p.stat().st_mtime)
        for old in files[: max(0, len(files) - MAX_PASTED_CONFIGS + 1)]:
            old.unlink(missing_ok=True)

    def close(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)


def read_spec_input(
    fields: dict[str, Any],
    yaml_text: str | None,
    config_json: str | None,
    configs: PastedConfigs,
) -> SpecInput:
    """The SpecInput of a request: `fields` are Spec fields (the CLI's flags), over the YAML's.

    Raises:
        SpecError / ModelSourceError: invalid input, one line (the CLI's message).
    """
    fields = dict(fields)
    if config_json is not None:
        fields["model"] = configs.save(config_json)
    raw = None
    if yaml_text is not None:
        raw = parse_llamafactory_text(yaml_text, POSTED_YAML)
        _check_size(raw)
        if "model" not in fields and "model_name_or_path" in raw:
            _check_catalog(raw["model_name_or_path"], "model_name_or_path")
    if "model" in fields and config_json is None:
        _check_catalog(fields["model"], "model")
    if raw is not None:
        # the page lists keys LLaMA-Factory would refuse (the CLI refuses them unless
        # --allow-unknown): a form being filled in shows its typos rather than failing on them
        return SpecInput.from_read(spec_from_llamafactory(raw, fields, allow_unknown=True),
                                   POSTED_YAML)
    if "model" not in fields:
        raise SpecError("model: pick a catalog model, paste a config.json or a YAML")
    return spec_input_from_fields(fields, "form")


def _check_catalog(model: Any, key: str) -> None:
    if not isinstance(model, str):
        raise SpecError(f"{key}: must be a catalog model id (got {type(model).__name__})")
    if find_in_catalog(model) is None:
        raise SpecError(
            f"{key}: {model!r} is not in the catalog (GET /api/catalog lists it); the web app "
            "reads no paths and fetches nothing: paste the model's config.json instead"
        )


def _check_size(raw: Any) -> None:
    """Refuse YAML whose aliases expand to more than MAX_YAML_NODES values (checked lazily)."""
    pending, seen = [raw], 0
    while pending:
        node = pending.pop()
        seen += 1
        if seen > MAX_YAML_NODES:
            raise SpecError(f"config: {POSTED_YAML} holds more than {MAX_YAML_NODES} values")
        if isinstance(node, dict):
            pending.extend(node.keys())
            pending.extend(node.values())
        elif isinstance(node, list | tuple | set):
            pending.extend(node)
