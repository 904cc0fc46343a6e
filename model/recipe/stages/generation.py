"""PPO's generation, written as transformers' sampling loop runs it, with the tokens drawn ahead.

`GenerationMixin._sample` (transformers 5.x generation/utils.py): a `DynamicCache`, a prefill of
the prompts keeping the last position's logits only (`logits_to_keep=1`), then one forward per
new token reading and growing the KV cache; each step copies the last logits to fp32 and runs
the logits processors (LLaMA-Factory's generating_args.py: temperature 0.95, top_k 50,
top_p 0.7). What differs, memory-neutral: the next token is not sampled from the probabilities
but taken from tokens drawn before the loop (the loop must run on fake tensors, whose values do
not exist), and no sequence stops early at EOS: every response is `max_new_tokens` long, the
worst case LLaMA-Factory's trimming (ppo/trainer.py:369-386) can meet.
"""

from __future__ import annotations

import torch
from torch import nn

TEMPERATURE, TOP_K, TOP_P = 0.95, 50, 0.7  # hparams/generating_args.py:25-47


def generate(model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor,
             new_tokens: int) -> torch.Tensor:
    """`new_tokens` tokens per prompt (B x new_tokens), under no_grad, with a KV cache."""
    from transformers import DynamicCache

    vocab = model.config.get_text_config().vocab_size
    drawn = torch.randint(0, vocab, (input_ids.size(0), new_tokens),
                          generator=torch.Generator().manual_seed(1)).to(input_ids.device)
    cache = DynamicCache(config=model.config)
    mask = attention_mask
    with torch.no_grad():
        for step in range(new_tokens):  # the prefill, then the previous token fed back
            if step == 0:
                outputs = model(input_ids=input_ids, attention_mask=mask, past_key_values=cache,
                                use_cache=True, logits_to_keep=1)
            else:
                mask = torch.cat([mask, mask.new_ones((mask.size(0), 1))], dim=-1)
                outputs = model(input_ids=drawn[:, step - 1:step], attention_mask=mask,
                                past_key_values=cache, use_cache=True)
            _next_token_probabilities(outputs.logits)
            del outputs  # as _sample does, so the prefill's logits do not outlive it
    return drawn


def _next_token_probabilities(logits: torch.Tensor) -> torch.Tensor:
    """The last position's logits as fp32, then the temperature, top-k and top-p warpers and a
    softmax (generation/logits_process.py: Temperature-, TopK-, TopPLogitsWarper)."""
    scores = logits[:, -1, :].to(copy=True, dtype=torch.float32)
    scores = scores / TEMPERATURE
    top_k = min(TOP_K, scores.size(-1))
    threshold = torch.topk(scores, top_k)[0][..., -1, None]
    scores = scores.masked_fill(scores < threshold, -float("inf"))
    sorted_logits, sorted_indices = torch.sort(scores, descending=False)
    cumulative = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
    sorted_remove = cumulative <= (1 - TOP_P)
    remove = sorted_remove.scatter(1, sorted_indices, sorted_remove)
    scores = scores.masked_fill(remove, -float("inf"))
    return torch.softmax(scores, dim=-1)
