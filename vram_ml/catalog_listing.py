"""The catalog as rows for `vram-ml catalog`."""

from __future__ import annotations

from typing import Any

from vram_ml.model_source import load_catalog, resolve_model


def catalog_rows(family: str | None = None) -> list[dict[str, Any]]:
    rows = []
    for hf_id, entry in sorted(load_catalog().items(), key=lambda item: (item[1].family, item[0])):
        if family and entry.family != family.lower():
            continue
        shape = resolve_model(hf_id).shape
        rows.append({
            "hf_id": hf_id,
            "family": entry.family,
            "aliases": list(entry.aliases),
            "model_type": shape.model_type,
            "total_params": shape.total_params,
            "num_layers": shape.num_layers,
            "hidden_size": shape.hidden_size,
            "vocab_size": shape.vocab_size,
            "max_position_embeddings": shape.max_position_embeddings,
            "multimodal": shape.is_multimodal,
            "moe": shape.num_experts > 0,
            "num_experts": shape.num_experts,
            "source": entry.source,
        })
    return rows
