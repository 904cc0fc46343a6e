"""Source model ids -> catalog entries (exact ids and aliases only), or why there is none.

A published run names its model as its source did (`NousResearch/Llama-2-70b-hf`,
`TheBloke/Mistral-7B-v0.1-GPTQ`). It maps to a catalog entry only by the entry's own id or an
alias recorded with evidence that the config is the same (vram_ml/catalog/*.json): never by a
bare-name match, which would make any re-upload (or a quantized copy) the original. Models whose
architecture exists only as remote code map when vram_ml/architectures/remote_code.py builds their
model_type and the catalog holds their real config; the others stay unmapped, saying which.
"""

from __future__ import annotations

from functools import cache

from vram_ml.architectures import supported_model_types
from vram_ml.model_source import CatalogEntry, load_catalog

# model id prefix -> (model_type, what it is). transformers ships none of these: they load with
# trust_remote_code, which vram-ml never uses; `qwen` and `chatglm` have closed-form builders
# (vram_ml/architectures/remote_code.py), the others none.
REMOTE_CODE = {
    "Qwen/Qwen-VL": ("qwen", "Qwen-VL"),
    "Qwen/Qwen-": ("qwen", "Qwen (v1)"),
    "openbmb/MiniCPM-Llama3-V": ("minicpmv", "MiniCPM-V"),
    "openbmb/MiniCPM-V": ("minicpmv", "MiniCPM-V"),
    "openbmb/MiniCPM-": ("minicpm", "MiniCPM"),
    "THUDM/cogvlm2": ("cogvlm2", "CogVLM2"),
    "THUDM/chatglm": ("chatglm", "ChatGLM"),
    "THUDM/glm-4v": ("chatglm (GLM-4V)", "ChatGLM"),
    "THUDM/glm-4-9b-chat": ("chatglm", "ChatGLM"),
}
# pre-quantized GPTQ checkpoints (their own configs carry quantization_config: not the base)
GPTQ_MARKERS = ("-GPTQ", "-Int4", "-Int8")


@cache
def _exact_index() -> dict[str, str]:
    index: dict[str, str] = {}
    for hf_id, entry in load_catalog().items():
        for name in (hf_id, *entry.aliases):
            index.setdefault(name.lower(), hf_id)
    return index


def catalog_entry(model_id: str | None) -> CatalogEntry | None:
    """The catalog entry whose id or alias is exactly `model_id` (case-insensitive)."""
    if not model_id:
        return None
    hf_id = _exact_index().get(model_id.strip().lower())
    return None if hf_id is None else load_catalog()[hf_id]


def remote_code_family(model_id: str | None) -> tuple[str, str] | None:
    """(model_type, family label) of a remote-code-only model, or None."""
    for prefix, found in REMOTE_CODE.items():
        if model_id and model_id.startswith(prefix):
            return found
    return None


def model_problem(model_id: str | None) -> str | None:
    """Why `model_id` cannot name a Spec's model, or None when the catalog has it."""
    if not model_id:
        return "model not named by the source"
    if catalog_entry(model_id) is not None:
        return None
    if any(marker in model_id for marker in GPTQ_MARKERS):
        return f"{model_id}: pre-quantized GPTQ checkpoint (GPTQ 4-bit is not in the Spec)"
    remote = remote_code_family(model_id)
    if remote and remote[0] not in supported_model_types():
        return (f"{model_id}: remote-code-only model (model_type {remote[0]}), no closed-form "
                "shape builder")
    if remote:
        return (f"{model_id}: remote-code-only model (model_type {remote[0]}): not in the "
                "catalog (no public copy of its real config found)")
    return f"{model_id}: not in the catalog (no real config shipped for it)"
