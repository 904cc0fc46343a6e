"""Shapes of remote-code-only models (Qwen v1 / Qwen-VL, ChatGLM3 / GLM-4) without transformers.

transformers cannot build these, so each test lists the named parameters the model's own modeling
code creates (modeling_qwen.py + visual.py, modeling_chatglm.py; module by module, as
`named_parameters()` would give them), sums them, and holds the closed-form builder to that sum
and to the total the checkpoint itself states: its weight index's `total_size` (bytes of 2-byte
weights, so / 2) where a public copy has one, else the model card's or paper's rounded figure.
"""

from __future__ import annotations

import json
import re
from math import prod

import pytest

from vram_ml.architectures import UnsupportedArchitecture, shape_from_config
from vram_ml.model_source import ModelSourceError, load_catalog, resolve_model

CATALOG = load_catalog()
# weight indexes, total_size in bytes (bf16/fp16 weights): the catalog entries' source notes
QWEN_7B_INDEX_BYTES = 15_442_649_088  # zhangningboo/Qwen-7B@ffe04dd model.safetensors.index.json
QWEN_72B_INDEX_BYTES = 144_575_840_256  # mapengAdam/qianwen-72B@3334bfe same file
CHATGLM3_INDEX_BYTES = 12_487_168_064  # czk1997/chatglm3-copy@456aa87 pytorch_model.bin.index
CHATGLM3_INV_FREQ = 32  # rotary_pos_emb.inv_freq: a buffer saved with the weights, no parameter


def qwen_parameters(config: dict) -> dict[str, tuple[int, ...]]:
    """QWenLMHeadModel's parameters (modeling_qwen.py: QWenModel, QWenBlock, QWenAttention,
    QWenMLP, RMSNorm; visual.py VisionTransformer when the config has `visual`)."""
    h, v, inter = config["hidden_size"], config["vocab_size"], config["intermediate_size"]
    p = {"transformer.wte.weight": (v, h), "transformer.ln_f.weight": (h,),
         "lm_head.weight": (v, h)}
    for i in range(config["num_hidden_layers"]):
        b = f"transformer.h.{i}."
        p |= {b + "ln_1.weight": (h,), b + "attn.c_attn.weight": (3 * h, h),
              b + "attn.c_attn.bias": (3 * h,), b + "attn.c_proj.weight": (h, h),
              b + "ln_2.weight": (h,), b + "mlp.w1.weight": (inter // 2, h),
              b + "mlp.w2.weight": (inter // 2, h), b + "mlp.c_proj.weight": (h, inter // 2)}
    if "visual" in config:
        p |= qwen_visual_parameters(config["visual"])
    return p


def qwen_visual_parameters(visual: dict) -> dict[str, tuple[int, ...]]:
    w, out, patch = visual["width"], visual["output_dim"], visual["patch_size"]
    mlp, queries = int(w * visual["mlp_ratio"]), 256
    b = "transformer.visual."
    p = {b + "conv1.weight": (w, 3, patch, patch), b + "positional_embedding": (256, w),
         b + "ln_pre.weight": (w,), b + "ln_pre.bias": (w,), b + "ln_post.weight": (out,),
         b + "ln_post.bias": (out,), b + "proj": (out, out)}
    for j in range(visual["layers"]):
        r = f"{b}transformer.resblocks.{j}."
        for norm in ("ln_1", "ln_2"):
            p |= {r + norm + ".weight": (w,), r + norm + ".bias": (w,)}
        p |= {r + "attn.in_proj.weight": (3 * w, w), r + "attn.in_proj.bias": (3 * w,),
              r + "attn.out_proj.weight": (w, w), r + "attn.out_proj.bias": (w,),
              r + "mlp.c_fc.weight": (mlp, w), r + "mlp.c_fc.bias": (mlp,),
              r + "mlp.c_proj.weight": (w, mlp), r + "mlp.c_proj.bias": (w,)}
    a = b + "attn_pool."
    p |= {a + "pos_embed": (queries, out), a + "query": (queries, out),
          a + "kv_proj.weight": (out, w), a + "attn.in_proj_weight": (3 * out, out),
          a + "attn.in_proj_bias": (3 * out,), a + "attn.out_proj.weight": (out, out),
          a + "attn.out_proj.bias": (out,), a + "ln_q.weight": (out,), a + "ln_q.bias": (out,),
          a + "ln_kv.weight": (out,), a + "ln_kv.bias": (out,)}
    return p


def chatglm_parameters(config: dict) -> dict[str, tuple[int, ...]]:
    """ChatGLMForConditionalGeneration's parameters (modeling_chatglm.py: Embedding, GLMBlock,
    SelfAttention with multi-query groups, MLP, RMSNorm, output_layer)."""
    h, v, ffn = config["hidden_size"], config["padded_vocab_size"], config["ffn_hidden_size"]
    heads, hd, groups = (config["num_attention_heads"], config["kv_channels"],
                         config["multi_query_group_num"])
    qkv = heads * hd + 2 * groups * hd
    p = {"transformer.embedding.word_embeddings.weight": (v, h),
         "transformer.encoder.final_layernorm.weight": (h,),
         "transformer.output_layer.weight": (v, h)}
    for i in range(config["num_layers"]):
        b = f"transformer.encoder.layers.{i}."
        p |= {b + "input_layernorm.weight": (h,), b + "post_attention_layernorm.weight": (h,),
              b + "self_attention.query_key_value.weight": (qkv, h),
              b + "self_attention.query_key_value.bias": (qkv,),
              b + "self_attention.dense.weight": (h, heads * hd),
              b + "mlp.dense_h_to_4h.weight": (2 * ffn, h),
              b + "mlp.dense_4h_to_h.weight": (h, ffn)}
    return p


def total(parameters: dict[str, tuple[int, ...]]) -> int:
    return sum(prod(shape) for shape in parameters.values())


@pytest.mark.parametrize("hf_id", ["Qwen/Qwen-1_8B-Chat", "Qwen/Qwen-7B", "Qwen/Qwen-7B-Chat",
                                   "Qwen/Qwen-14B-Chat", "Qwen/Qwen-72B", "Qwen/Qwen-VL-Chat"])
def test_qwen_shapes_equal_the_hand_summed_tree(hf_id):
    config = CATALOG[hf_id].config
    shape = shape_from_config(config)
    parameters = qwen_parameters(config)
    assert shape.total_params == total(parameters)
    layer = {k.split(".", 3)[3]: s for k, s in parameters.items()
             if k.startswith("transformer.h.0.")}
    assert shape.layer_params == total(layer)
    assert shape.layer_linear_params == total({k: s for k, s in layer.items() if "ln_" not in k})
    assert {k.rsplit(".", 1)[0].removeprefix("attn.").removeprefix("mlp.") for k in layer
            if "ln_" not in k} == {n.rsplit(".", 1)[-1] for n in shape.linear_names}


@pytest.mark.parametrize("hf_id", ["THUDM/chatglm3-6b", "THUDM/glm-4-9b-chat"])
def test_chatglm_shapes_equal_the_hand_summed_tree(hf_id):
    config = CATALOG[hf_id].config
    shape = shape_from_config(config)
    parameters = chatglm_parameters(config)
    assert shape.total_params == total(parameters)
    assert shape.layer_params * shape.num_layers == total(
        {k: s for k, s in parameters.items() if ".layers." in k})


def test_counts_equal_the_checkpoints_own_weight_indexes():
    assert resolve_model("Qwen/Qwen-7B").shape.total_params == QWEN_7B_INDEX_BYTES // 2
    assert resolve_model("Qwen/Qwen-7B-Chat").shape.total_params == QWEN_7B_INDEX_BYTES // 2
    assert resolve_model("Qwen/Qwen-72B").shape.total_params == QWEN_72B_INDEX_BYTES // 2
    chatglm3 = resolve_model("THUDM/chatglm3-6b").shape.total_params
    assert chatglm3 + CHATGLM3_INV_FREQ == CHATGLM3_INDEX_BYTES // 2


def test_counts_round_to_the_documented_sizes():
    """Model cards: Qwen-1.8B / 14B, GLM-4-9B; Qwen-VL paper (arXiv 2308.12966, table 1): ViT
    1.9B, VL adapter 0.08B, LLM 7.7B, 9.6B in all."""
    billions = {hf_id: resolve_model(hf_id).shape.total_params / 1e9 for hf_id in (
        "Qwen/Qwen-1_8B-Chat", "Qwen/Qwen-14B-Chat", "THUDM/glm-4-9b-chat")}
    assert round(billions["Qwen/Qwen-1_8B-Chat"], 1) == 1.8
    assert round(billions["Qwen/Qwen-14B-Chat"]) == 14
    assert round(billions["THUDM/glm-4-9b-chat"]) == 9
    vl = resolve_model("Qwen/Qwen-VL-Chat").shape
    assert 9.6e9 <= vl.total_params < 9.7e9  # 9,656,935,168: "9.6B"
    assert round(vl.text_params / 1e9, 1) == 7.7
    assert round((vl.vision_params + vl.projector_params) / 1e9, 1) == 1.9
    resampler = vl.projector_params - 2 * 4096 - 4096 * 4096  # less ln_post and proj
    assert round(resampler / 1e9, 2) == 0.08


def test_qwen_vl_image_tokens_and_tower():
    """An image is 448 px: (448 / 14)^2 = 1024 patches through the tower, the resampler's 256
    queries into the text between <img> and </img> (Qwen-VL README: 'an image ... takes 258
    tokens')."""
    from vram_ml.model.formulas.vision import image_geometry
    from vram_ml.spec import build_spec

    vision = resolve_model("Qwen/Qwen-VL-Chat").shape.vision
    assert (vision.kind, vision.num_layers, vision.hidden_size) == ("qwen_vl", 48, 1664)
    assert vision.intermediate_size == 8192  # int(1664 x 4.9231)
    assert (vision.fixed_image_tokens, vision.encoder_tokens_per_image) == (258, 1024)
    spec = build_spec(model="Qwen/Qwen-VL-Chat", method="lora", seq_len=512, images_per_sample=1,
                      image_resolution=448)
    geometry = image_geometry(spec)
    assert (geometry.lm_tokens, geometry.encoder_tokens) == (258, 1024)


def test_lora_targets_are_the_module_names_peft_matches():
    qwen = resolve_model("Qwen/Qwen-7B-Chat").shape
    assert qwen.linear_names == ("c_attn", "attn.c_proj", "w1", "w2", "mlp.c_proj")
    assert qwen.intermediate_size == 11008  # one SwiGLU branch: config 22016 // 2
    glm = resolve_model("THUDM/glm-4-9b-chat").shape
    assert glm.linear_names == ("query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h")
    assert (glm.num_key_value_heads, glm.head_dim, glm.max_position_embeddings) == (2, 128, 131072)
    assert not glm.tie_word_embeddings and glm.lm_head_params == glm.embedding_params


@pytest.mark.parametrize(("config", "words"), [
    ({"model_type": "qwen", "n_embd": 4096, "n_layer": 32, "n_head": 32}, "first release"),
    ({"model_type": "qwen", "hidden_size": 4096, "num_attention_heads": 32, "kv_channels": 64},
     "kv_channels x heads"),
    ({"model_type": "qwen", "visual": {"width": 64, "layers": 1, "heads": 1, "mlp_ratio": 2,
                                       "patch_size": 14, "image_size": 448, "output_dim": 512}},
     "output_dim 512"),
    ({"model_type": "chatglm", "inner_hidden_size": 16384, "position_encoding_2d": True},
     "ChatGLM-6B (v1)"),
    ({"model_type": "chatglm", "vision_config": {"hidden_size": 1792}}, "GLM-4V"),
])
def test_configs_the_builders_do_not_describe_are_refused_in_one_line(tmp_path, config, words):
    with pytest.raises(UnsupportedArchitecture, match=re.escape(words)):
        shape_from_config(config)
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    with pytest.raises(ModelSourceError) as error:
        resolve_model(str(path))
    assert "\n" not in str(error.value) and words in str(error.value)


def test_chatglm_layernorm_and_prefix_encoder_variants():
    base = {"model_type": "chatglm", "num_layers": 2, "hidden_size": 64, "ffn_hidden_size": 96,
            "kv_channels": 16, "num_attention_heads": 4, "padded_vocab_size": 100,
            "multi_query_attention": True, "multi_query_group_num": 2, "add_qkv_bias": True}
    rms = shape_from_config(base)
    layer_norm = shape_from_config({**base, "rmsnorm": False})
    assert layer_norm.total_params - rms.total_params == (2 * 2 + 1) * 64  # + a bias per norm
    prefix = shape_from_config({**base, "pre_seq_len": 8})
    assert prefix.total_params - rms.total_params == 8 * 2 * 16 * 2 * 2  # Embedding(8, kv size)
