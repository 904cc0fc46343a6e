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
    assert shape.total_params == sum(p.numel() for p in model.parameters())
    decoder = model.get_decoder()
    decoder = decoder if hasattr(decoder, "layers") or hasattr(decoder, "h") else decoder.model
    layers = decoder.layers if hasattr(decoder, "layers") else decoder.h
    assert len(layers) == shape.num_layers
    indices = [min(shape.main_layer_indices)] if shape.main_layer_indices else []
    indices += [variant.indices[0] for variant in shape.layer_variants]
    for index, (_, group) in zip(indices, shape.layer_groups, strict=True):
        assert_layer_matches(group, layers[index])
    if shape.vision is not None:
        assert_vision_block_matches(shape, model)
    assert_saved_module_names(shape, model)


def assert_saved_module_names(shape: ModelShape, model) -> None:
    """What additional_target names (peft modules_to_save matches the end of a module's name)
    is the model's input embeddings and output head, and what a copy of each holds."""
    def named(suffix: str) -> list:
        return [module for name, module in model.named_modules()
                if name == suffix or name.endswith("." + suffix)]

    assert named(shape.embedding_module) == [model.get_input_embeddings()]
    assert named(shape.head_module) == [model.get_output_embeddings()]
    assert model.get_input_embeddings().weight.numel() == shape.input_embedding_params
    head = model.get_output_embeddings()
    assert sum(p.numel() for p in head.parameters()) == shape.head_module_params


def assert_layer_matches(group: ModelShape, layer) -> None:
    """One decoder layer: its LoRA-targetable linears (LLaMA-Factory's rule: a module whose class
    name says Linear; Llama 4's nn.Linear router is named Llama4Router and is not one), its fused
    experts and all its parameters are those of the layer group."""
    linears = {name: module for name, module in layer.named_modules()
               if "Linear" in type(module).__name__}
    names = {lin.name for lin in group.layer_linears if not lin.fused}
    assert {name.rsplit(".", 1)[-1] for name in linears} == names
    linear_params = sum(p.numel() for module in linears.values() for p in module.parameters())
    assert linear_params == sum(lin.params for lin in group.layer_linears if not lin.fused)
    params = dict(layer.named_parameters())
    for fused in (lin for lin in group.layer_linears if lin.fused):  # MoE experts as 3-D tensors
        match = [p for name, p in params.items() if name.endswith(fused.name)]
        bias = [p for name, p in params.items() if name.endswith(fused.name + "_bias")]
        assert len(match) == 1 and len(bias) == int(fused.bias)
        assert match[0].numel() + sum(p.numel() for p in bias) == fused.params
    assert sum(p.numel() for p in params.values()) == group.layer_params


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
    # the newer families (transformers 5.24): defaults and the branches their configs take
    "gemma3-text-defaults": {"model_type": "gemma3_text"},
    "olmo2-defaults": {"model_type": "olmo2"},
    "olmo3-tiny-bias": {"model_type": "olmo3", **TINY, "num_key_value_heads": 2,
                        "attention_bias": True},
    "starcoder2-defaults": {"model_type": "starcoder2"},
    "starcoder2-no-bias-untied": {"model_type": "starcoder2", **TINY, "use_bias": False,
                                  "tie_word_embeddings": False},
    "cohere-qk-norm": {"model_type": "cohere", **TINY, "num_key_value_heads": 2,
                       "use_qk_norm": True},
    "qwen3-moe-dense-layers": {"model_type": "qwen3_moe", **TINY, "num_experts": 4,
                               "moe_intermediate_size": 32, "num_experts_per_tok": 2,
                               "mlp_only_layers": [0], "decoder_sparse_step": 1,
                               "num_hidden_layers": 3},
    "qwen2-moe-defaults": {"model_type": "qwen2_moe"},
    "qwen2-moe-sparse-step": {"model_type": "qwen2_moe", **TINY, "num_experts": 4,
                              "moe_intermediate_size": 32, "shared_expert_intermediate_size": 48,
                              "decoder_sparse_step": 2, "num_hidden_layers": 4},
    "glm4-moe-tiny": {"model_type": "glm4_moe", **TINY, "num_key_value_heads": 2,
                      "n_routed_experts": 4, "n_shared_experts": 2, "num_experts_per_tok": 2,
                      "moe_intermediate_size": 32, "first_k_dense_replace": 1,
                      "use_qk_norm": True, "attention_bias": True, "num_hidden_layers": 3},
    "minimax-m2-defaults": {"model_type": "minimax_m2", "num_hidden_layers": 2},
    "gpt-oss-tiny": {"model_type": "gpt_oss", **TINY, "num_key_value_heads": 2, "head_dim": 16,
                     "num_local_experts": 4, "num_experts_per_tok": 2, "num_hidden_layers": 3},
    "llama4-text-interleaved": {"model_type": "llama4_text", **TINY, "num_key_value_heads": 2,
                                "head_dim": 16, "num_local_experts": 4,
                                "intermediate_size_mlp": 80, "interleave_moe_layer_step": 2,
                                "num_hidden_layers": 4},
    "deepseek-v2-q-proj": {"model_type": "deepseek_v2", **TINY, "q_lora_rank": None,
                           "kv_lora_rank": 32, "qk_nope_head_dim": 16, "qk_rope_head_dim": 8,
                           "v_head_dim": 16, "n_routed_experts": 4, "num_experts_per_tok": 2,
                           "moe_intermediate_size": 32, "first_k_dense_replace": 1},
    "deepseek-v3-defaults-two-layers": {"model_type": "deepseek_v3", "num_hidden_layers": 4,
                                        "n_routed_experts": 8, "attention_bias": True},
    "gemma3-defaults": {"model_type": "gemma3"},
    "mistral3-defaults": {"model_type": "mistral3"},
    "mistral3-two-feature-layers": {
        "model_type": "mistral3", "vision_feature_layer": [-1, -2],
        "multimodal_projector_bias": True, "tie_word_embeddings": False,
        "text_config": {"model_type": "ministral3", **TINY, "num_key_value_heads": 2,
                        "head_dim": 16},
        "vision_config": {"model_type": "pixtral", "hidden_size": 32, "intermediate_size": 48,
                          "num_hidden_layers": 2, "num_attention_heads": 2, "head_dim": 16,
                          "image_size": 56, "patch_size": 14}},
    "qwen3-vl-defaults": {"model_type": "qwen3_vl"},
    "qwen3-vl-moe-defaults": {"model_type": "qwen3_vl_moe"},
    "glm4v-defaults": {"model_type": "glm4v"},
    "llama4-defaults": {"model_type": "llama4"},
    "llama4-tiny-vision": {
        "model_type": "llama4", "text_config": {
            "model_type": "llama4_text", **TINY, "num_key_value_heads": 2, "head_dim": 16,
            "num_local_experts": 4, "intermediate_size_mlp": 80, "interleave_moe_layer_step": 2},
        "vision_config": {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
                          "intermediate_size": 128, "image_size": 56, "patch_size": 14,
                          "vision_output_dim": 64, "projector_input_dim": 64,
                          "projector_output_dim": 64}},
}


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_variant_configs_match_transformers(name: str) -> None:
    shape = shape_from_config(VARIANTS[name])
    assert_matches_transformers(shape, build_on_meta(VARIANTS[name], shape.is_multimodal))


def test_hub_style_configs_give_the_same_shape() -> None:
    """`fetch_hub_config` returns transformers' to_dict(): every default spelled out, Qwen2-VL's
    flat text keys nested under text_config, rope_theta moved into rope_parameters, expert counts
    under their attribute_map names. Notes about the config's own spelling may differ."""
    import dataclasses

    import transformers

    transformers.logging.set_verbosity_error()
    for hf_id in TRANSFORMERS_BUILT:
        entry = CATALOG[hf_id]
        as_saved = transformers.AutoConfig.for_model(**entry.config).to_dict()
        saved, raw = shape_from_config(as_saved), shape_from_config(entry.config)
        assert dataclasses.replace(saved, notes=()) == dataclasses.replace(raw, notes=()), hf_id


def test_catalog_size_families_and_file_names() -> None:
    from importlib import resources

    assert len(CATALOG) >= 110
    assert len({entry.family for entry in CATALOG.values()}) >= 30
    shapes = {hf_id: shape_from_config(entry.config) for hf_id, entry in CATALOG.items()}
    vlm = {CATALOG[hf_id].family for hf_id, shape in shapes.items() if shape.is_multimodal}
    moe = {CATALOG[hf_id].family for hf_id, shape in shapes.items() if shape.num_experts}
    assert len(vlm) >= 8 and len(moe) >= 6
    model_types = {entry.config["model_type"] for entry in CATALOG.values()}
    assert model_types <= set(supported_model_types())
    for item in resources.files("vram_ml.catalog").iterdir():
        if item.name.endswith(".json"):
            raw = json.loads(item.read_text())
            assert item.name == raw["hf_id"].replace("/", "__") + ".json"
            assert raw["family"] == raw["family"].lower()
            if "source" in raw:  # every config added since the first catalog names its origin
                repo, _, path = raw["source"].partition(":")
                assert "@" in repo and len(repo.split("@")[1]) == 40 and path, raw["source"]


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


def test_config_without_the_size_numbers_is_refused(tmp_path) -> None:
    """Only a model_type (or a VLM without its vision_config) would silently become transformers'
    default model; the error names what is missing, in one line."""
    cases = {
        "only-type.json": ({"model_type": "qwen3"}, "sets none of hidden_size"),
        "vlm-no-vision.json": ({"model_type": "qwen3_vl", "text_config": {
            "hidden_size": 64, "num_hidden_layers": 2}}, "vision_config missing"),
        "empty-text.json": ({"model_type": "llava", "text_config": {"model_type": "llama"},
                             "vision_config": {"hidden_size": 32}}, "text_config sets none"),
    }
    for name, (config, message) in cases.items():
        (tmp_path / name).write_text(json.dumps(config))
        with pytest.raises(ModelSourceError, match=message) as error:
            resolve_model(str(tmp_path / name))
        assert "\n" not in str(error.value)


def test_unknown_model_type_lists_the_supported_ones(tmp_path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "no_such_arch",
                                                      "hidden_size": 64}))
    with pytest.raises(ModelSourceError) as error:
        resolve_model(str(tmp_path / "config.json"))
    message = str(error.value)
    assert "\n" not in message and "'no_such_arch' is not supported" in message
    assert all(model_type in message for model_type in ("deepseek_v3", "gemma3", "qwen3_vl_moe"))


def test_any_config_of_a_supported_type_works_offline(tmp_path, monkeypatch) -> None:
    """A config.json that is in no catalog entry (a scaled Qwen3-MoE, as a user's fine-tune would
    be) resolves from its numbers alone, with the hub unreachable."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    config = {**CATALOG["Qwen/Qwen3-30B-A3B"].config, "num_hidden_layers": 6, "num_experts": 16}
    (tmp_path / "config.json").write_text(json.dumps(config))
    resolved = resolve_model(str(tmp_path))
    assert resolved.source_kind == "path" and resolved.shape.num_experts == 16
    assert resolved.shape.num_layers == 6
