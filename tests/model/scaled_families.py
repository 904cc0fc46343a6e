"""One scaled-down real model per family added with the 2026 catalog: few layers, narrower where
the real width would make a CPU simulation slow, a small vocabulary (so logits do not hide the
layers), experts cut to a handful (top-k kept where it fits). The analytical estimator must agree
with the fake-tensor simulation on each (tests/model/formulas/test_families.py), and the agent's
space.yaml measures the same variants on a GPU.
"""

from __future__ import annotations

from importlib.metadata import version

from vram_ml.stack import parse_version

# The spec's peft_version for what the installed peft does (the recipe runs it): peft >= 0.19
# puts LoRA on fused experts (model/formulas/stack.py PEFT_EXPERT_LORA_FROM), so the newest
# version LLaMA-Factory accepts on the same side of 0.19 (CI's oldest stack installs 0.18.1).
_INSTALLED_PEFT = parse_version(version("peft"))
PEFT_HERE = {"peft_version": "0.20.0" if _INSTALLED_PEFT >= (0, 19, 0) else
             ".".join(map(str, _INSTALLED_PEFT))}

_NARROW = {"hidden_size": 1024, "num_attention_heads": 8, "num_key_value_heads": 2,
           "vocab_size": 4096}
SCALED: dict[str, tuple[str, dict[str, int | float]]] = {
    "qwen3_moe": ("Qwen/Qwen3-30B-A3B", {"num_hidden_layers": 2, "num_experts": 16,
                                        "vocab_size": 4096}),
    "qwen2_moe": ("Qwen/Qwen1.5-MoE-A2.7B", {"num_hidden_layers": 2, "num_experts": 8,
                                            "vocab_size": 4096}),
    "deepseek_v2": ("deepseek-ai/DeepSeek-V2-Lite", {"num_hidden_layers": 3, "n_routed_experts": 8,
                                                    "vocab_size": 4096}),
    "deepseek_v3": ("deepseek-ai/DeepSeek-V3", {
        "num_hidden_layers": 3, "first_k_dense_replace": 1, "hidden_size": 1024,
        "num_attention_heads": 16, "num_key_value_heads": 16, "intermediate_size": 2048,
        "moe_intermediate_size": 512, "n_routed_experts": 8, "n_group": 2, "topk_group": 1,
        "num_experts_per_tok": 4, "vocab_size": 4096}),
    "glm4_moe": ("zai-org/GLM-4.5", {
        "num_hidden_layers": 3, "first_k_dense_replace": 1, **_NARROW, "intermediate_size": 2048,
        "moe_intermediate_size": 512, "n_routed_experts": 8, "num_experts_per_tok": 4,
        "pad_token_id": 1}),
    "minimax_m2": ("MiniMaxAI/MiniMax-M2.5", {"num_hidden_layers": 2, **_NARROW,
                                             "intermediate_size": 512, "num_local_experts": 8,
                                             "num_experts_per_tok": 4}),
    "gpt_oss": ("openai/gpt-oss-20b", {"num_hidden_layers": 2, "num_local_experts": 8,
                                      "vocab_size": 4096, "pad_token_id": 1}),
    "llama4": ("meta-llama/Llama-4-Maverick-17B-128E-Instruct", {
        "num_hidden_layers": 2, **_NARROW, "intermediate_size": 1024,
        "intermediate_size_mlp": 2048, "num_local_experts": 4}),
    "qwen3": ("Qwen/Qwen3-32B", {"num_hidden_layers": 2, **_NARROW, "intermediate_size": 2048}),
    "gemma3_text": ("google/gemma-3-1b-it", {"num_hidden_layers": 2, "vocab_size": 4096,
                                            "sliding_window": 256}),
    "olmo2": ("allenai/OLMo-2-1124-7B", {"num_hidden_layers": 2, **_NARROW,
                                        "intermediate_size": 2048}),
    "olmo3": ("allenai/Olmo-3.1-32B-Instruct", {"num_hidden_layers": 4, **_NARROW,
                                               "intermediate_size": 2048,
                                               "sliding_window": 256, "pad_token_id": 1}),
    "starcoder2": ("bigcode/starcoder2-7b", {"num_hidden_layers": 2, **_NARROW,
                                            "intermediate_size": 4096}),
    "cohere": ("CohereForAI/aya-23-8B", {"num_hidden_layers": 2, **_NARROW,
                                        "intermediate_size": 2048}),
}

# Vision-language: two text layers, a small vocabulary (special-token ids moved below it), two
# vision blocks; the towers keep their real widths and patch rules.
_VLM_TEXT = {"text_config.num_hidden_layers": 2, "text_config.vocab_size": 4096}
SCALED_VLM: dict[str, tuple[str, dict[str, int | float]]] = {
    "qwen3_vl": ("Qwen/Qwen3-VL-2B-Instruct", {
        **_VLM_TEXT, "vision_config.depth": 6,
        "image_token_id": 4000, "video_token_id": 4001, "vision_start_token_id": 4002,
        "vision_end_token_id": 4003}),
}
SCALED_VLM.update({
    "qwen3_vl_moe": ("Qwen/Qwen3-VL-30B-A3B-Instruct", {
        **_VLM_TEXT, "text_config.num_experts": 8, "vision_config.depth": 9,
        "image_token_id": 4000, "video_token_id": 4001, "vision_start_token_id": 4002,
        "vision_end_token_id": 4003}),
    "glm4v": ("zai-org/GLM-4.1V-9B-Thinking", {
        **_VLM_TEXT, "text_config.pad_token_id": 1, "vision_config.depth": 2,
        "image_token_id": 4000, "video_token_id": 4001, "image_start_token_id": 4002,
        "image_end_token_id": 4003, "video_start_token_id": 4004, "video_end_token_id": 4005}),
    "gemma3": ("google/gemma-3-4b-it", {
        **_VLM_TEXT, "vision_config.num_hidden_layers": 2, "image_token_index": 4000,
        "boi_token_index": 4001, "eoi_token_index": 4002}),
    "mistral3": ("mistralai/Mistral-Small-3.1-24B-Instruct-2503", {
        **_VLM_TEXT, "text_config.hidden_size": 1024, "text_config.intermediate_size": 2048,
        "vision_config.num_hidden_layers": 2}),
})
