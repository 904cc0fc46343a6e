"""Closed-form shapes against transformers, and model sources (catalog, paths, overrides).

Every catalog model is built by transformers on the meta device (no memory, no download, never
remote code) and its parameter count must equal `ModelShape.total_params` exactly; the nn.Linear
modules of decoder layer 0 must be `ModelShape.linear_names` with the same parameter total.
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest

from vram_ml.architectures import (
    REMOTE_CODE_MODEL_TYPES,
    ModelShape,
    shape_from_config,
    supported_model_types,
)
from vram_ml.model_source import (
    ModelSourceError,
    find_in_catalog,
    load_catalog,
    resolve_model,
)

CATALOG = load_catalog()


def build_on_meta(config: dict[str, Any], multimodal: bool):
    """The model transformers builds for `config`, on the meta device."""
    import torch
    import transformers

    transformers.logging.set_verbosity_error()
    hf_config = transformers.AutoConfig.for_model(**config)
    auto = (transformers.AutoModelForImageTextToText if multimodal
            else transformers.AutoModelForCausalLM)
    with torch.device("meta"):
        return auto.from_config(hf_config, trust_remote_code=False)


def assert_matches_transformers(shape: ModelShape, model) -> None:
    import torch

    assert shape.total_params == sum(p.numel() for p in model.parameters())
    decoder = model.get_decoder()
    layer = (decoder.layers if hasattr(decoder, "layers") else decoder.h)[0]
    linears = {name: module for name, module in layer.named_modules()
               if isinstance(module, torch.nn.Linear)}
    assert {name.rsplit(".", 1)[-1] for name in linears} == set(shape.linear_names)
    linear_params = sum(p.numel() for module in linears.values() for p in module.parameters())
    assert linear_params == sum(lin.params for lin in shape.layer_linears if not lin.fused)
    params = dict(layer.named_parameters())
    for fused in (lin for lin in shape.layer_linears if lin.fused):  # MoE experts as 3-D tensors
        match = [p for name, p in params.items() if name.endswith(fused.name)]
        assert len(match) == 1 and match[0].numel() == fused.params
    assert sum(p.numel() for p in params.values()) == shape.layer_params
    if shape.vision is not None:
        assert_vision_block_matches(shape, model)


def assert_vision_block_matches(shape: ModelShape, model) -> None:
    """The tower's first block: its nn.Linear modules and parameters are VisionShape's."""
    import torch

    block = next(module for name, module in model.named_modules()
                 if ("vision" in name or "visual" in name)
                 and name.endswith((".layers.0", ".blocks.0")))
    linears = {name.rsplit(".", 1)[-1]: module for name, module in block.named_modules()
               if isinstance(module, torch.nn.Linear)}
    expected = {lin.name: lin for lin in shape.vision.layer_linears}
    assert set(linears) == set(expected)
    for name, module in linears.items():
        assert (module.in_features, module.out_features, module.bias is not None) == (
            expected[name].in_features, expected[name].out_features, expected[name].bias)
    assert sum(p.numel() for p in block.parameters()) == shape.vision.layer_params


# Remote-code-only models have no transformers class: tests/vram_ml/test_remote_code.py sums
# their trees by hand against their checkpoints' stated totals instead.
TRANSFORMERS_BUILT = sorted(hf_id for hf_id, entry in CATALOG.items()
                            if entry.config["model_type"] not in REMOTE_CODE_MODEL_TYPES)


@pytest.mark.parametrize("hf_id", TRANSFORMERS_BUILT)
def test_catalog_model_matches_transformers_exactly(hf_id: str) -> None:
    config = CATALOG[hf_id].config
    shape = shape_from_config(config)
    assert_matches_transformers(shape, build_on_meta(config, shape.is_multimodal))


# Variants that exercise branches and transformers' defaults for keys the config leaves out.
TINY = {"hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 2,
        "num_attention_heads": 4, "vocab_size": 128, "pad_token_id": 0, "bos_token_id": 1,
        "eos_token_id": 2}
VARIANTS: dict[str, dict[str, Any]] = {
    "llama-defaults": {"model_type": "llama"},
    "llama-biases": {"model_type": "llama", **TINY, "num_key_value_heads": 2, "head_dim": 32,
                     "attention_bias": True, "mlp_bias": True, "tie_word_embeddings": True},
    "mistral-defaults": {"model_type": "mistral"},
    "mixtral-tiny": {"model_type": "mixtral", **TINY, "num_local_experts": 4},
    "qwen2-defaults": {"model_type": "qwen2"},
    "qwen3-kv-none": {"model_type": "qwen3", **TINY, "num_key_value_heads": None},
    "gemma-defaults": {"model_type": "gemma"},
    "gemma2-tiny": {"model_type": "gemma2", **TINY, "head_dim": 16, "tie_word_embeddings": False},
    "phi-qk-layernorm": {"model_type": "phi", **TINY, "qk_layernorm": True,
                         "tie_word_embeddings": True},
    "phi3-defaults": {"model_type": "phi3"},
    "stablelm-qk-norm-parallel": {"model_type": "stablelm", **TINY, "num_key_value_heads": 2,
                                  "qk_layernorm": True, "use_parallel_residual": True},
    "gpt-neox-no-attention-bias": {"model_type": "gpt_neox", **TINY, "attention_bias": False,
                                   "tie_word_embeddings": True},
    "bloom-n-embed-alias": {"model_type": "bloom", "n_embed": 64, "num_attention_heads": 4,
                            "n_layer": 2, "vocab_size": 128},
    "gpt-bigcode-multi-head": {"model_type": "gpt_bigcode", "n_embd": 64, "n_head": 4,
                               "n_layer": 2, "vocab_size": 128, "multi_query": False},
    "falcon-new-architecture": {"model_type": "falcon", "hidden_size": 64, "num_attention_heads": 8,
                                "num_kv_heads": 2, "num_hidden_layers": 2, "vocab_size": 128,
                                "new_decoder_architecture": True, "bias": True},
    "falcon-sequential-multi-head": {"model_type": "falcon", "hidden_size": 64,
                                     "num_attention_heads": 4, "num_hidden_layers": 2,
                                     "vocab_size": 128, "multi_query": False,
                                     "parallel_attn": False, "ffn_hidden_size": 80},
    "llava-defaults": {"model_type": "llava"},
    "llava-siglip-head-layers": {
        "model_type": "llava", "vision_feature_layer": [-2, -5],
        "vision_feature_select_strategy": "full",
        "text_config": {"model_type": "qwen2", **TINY, "num_key_value_heads": 2},
        "vision_config": {"model_type": "siglip_vision_model", "hidden_size": 32,
                          "intermediate_size": 48, "num_hidden_layers": 6,
                          "num_attention_heads": 2, "image_size": 64, "patch_size": 16}},
    "paligemma-defaults": {"model_type": "paligemma"},
    "idefics3-defaults": {"model_type": "idefics3"},
    "qwen2-vl-nested-text": {"model_type": "qwen2_vl", "tie_word_embeddings": False,
                             "text_config": {**TINY, "num_key_value_heads": 2,
                                             "tie_word_embeddings": True},
                             "vision_config": {"depth": 2, "embed_dim": 32, "num_heads": 2,
                                               "hidden_size": 64}},
    "qwen2-5-vl-defaults": {"model_type": "qwen2_5_vl"},
    "mllama-defaults": {"model_type": "mllama"},
}


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_variant_configs_match_transformers(name: str) -> None:
    shape = shape_from_config(VARIANTS[name])
    assert_matches_transformers(shape, build_on_meta(VARIANTS[name], shape.is_multimodal))


def test_hub_style_configs_give_the_same_shape() -> None:
    """`fetch_hub_config` returns transformers' to_dict(): every default spelled out, Qwen2-VL's
    flat text keys nested under text_config, rope_theta moved into rope_parameters."""
    import transformers

    transformers.logging.set_verbosity_error()
    for hf_id in TRANSFORMERS_BUILT:
        entry = CATALOG[hf_id]
        as_saved = transformers.AutoConfig.for_model(**entry.config).to_dict()
        assert shape_from_config(as_saved) == shape_from_config(entry.config), hf_id


def test_catalog_size_families_and_file_names() -> None:
    from importlib import resources

    assert len(CATALOG) >= 40
    assert len({entry.family for entry in CATALOG.values()}) >= 12
    model_types = {entry.config["model_type"] for entry in CATALOG.values()}
    assert model_types <= set(supported_model_types())
    for item in resources.files("vram_ml.catalog").iterdir():
        if item.name.endswith(".json"):
            raw = json.loads(item.read_text())
            assert item.name == raw["hf_id"].replace("/", "__") + ".json"
            assert raw["family"] == raw["family"].lower()


def test_every_id_and_alias_resolves_to_its_own_entry() -> None:
    for hf_id, entry in CATALOG.items():
        for name in (hf_id, *entry.aliases):
            assert find_in_catalog(name).hf_id == hf_id, name
            assert find_in_catalog(name.split("/")[-1]).hf_id == hf_id, name


def test_resolve_by_id_alias_bare_name_and_case() -> None:
    by_id = resolve_model("meta-llama/Llama-3.1-8B")
    assert (by_id.source_kind, by_id.family) == ("catalog", "llama")
    assert by_id.shape.total_params == 8_030_261_248
    for name in ("meta-llama/Meta-Llama-3.1-8B-Instruct", "Llama-3.1-8B", "META-LLAMA/llama-3.1-8b",
                 "  Meta-Llama-3.1-8B  "):
        assert resolve_model(name).name == "meta-llama/Llama-3.1-8B"


def test_resolve_config_file_and_folder(tmp_path) -> None:
    config = CATALOG["Qwen/Qwen2.5-0.5B"].config
    (tmp_path / "config.json").write_text(json.dumps(config))
    for source in (str(tmp_path / "config.json"), str(tmp_path)):
        resolved = resolve_model(source)
        assert resolved.source_kind == "path" and resolved.name.startswith("config:")
        assert resolved.shape.total_params == 494_032_768


def test_override_halves_layer_parameters() -> None:
    full = resolve_model("Qwen/Qwen2.5-7B").shape
    half = resolve_model("Qwen/Qwen2.5-7B", {"num_hidden_layers": 14}).shape
    assert half.num_layers * 2 == full.num_layers
    assert full.total_params - half.total_params == 14 * full.layer_params
    vlm = resolve_model("llava-hf/llava-1.5-7b-hf", {"vision_config.num_hidden_layers": 12}).shape
    assert vlm.vision.num_layers == 12 and vlm.vision_params < resolve_model(
        "llava-hf/llava-1.5-7b-hf").shape.vision_params


def test_unknown_model_is_one_line_error_offline(monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelSourceError) as error:
        resolve_model("nobody-here/no-such-model-7b")
    assert "\n" not in str(error.value) and "offline" in str(error.value)


def test_non_json_path_is_refused(tmp_path) -> None:
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(b"not a config")
    with pytest.raises(ModelSourceError, match="only a .json config"):
        resolve_model(str(weights))


def test_shape_module_imports_neither_torch_nor_transformers() -> None:
    code = ("import sys, vram_ml.model_source as m; m.resolve_model('google/gemma-2b'); "
            "print(sorted({'torch', 'transformers'} & set(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
