"""Exercise 01 (notebook 01): greedy decoding with a KV cache, by hand. Checker: utils.exercises.check_01."""

import torch


@torch.no_grad()
def greedy_generate(model, input_ids: torch.Tensor, max_new_tokens: int) -> torch.Tensor:
    """Greedy decoding, token for token what `model.generate(do_sample=False)` returns.

    input_ids: (1, T) prompt. Returns (1, T + max_new_tokens): the prompt and the new tokens.
    The first pass reads the whole prompt and fills the cache; every later pass feeds only the
    newest token and reads the keys and values of the earlier ones from the cache.
    """
    seq, feed, cache = input_ids, input_ids, None  # feed: (1, T) first, then (1, 1)
    for _ in range(max_new_tokens):
        out = model(input_ids=feed, past_key_values=cache, use_cache=True)
        cache = out.past_key_values  # keys and values of every token fed so far
        nxt = out.logits[:, -1].argmax(-1, keepdim=True)  # (1, 1): the last position predicts the next token
        seq = torch.cat([seq, nxt], dim=1)  # (1, t + 1)
        feed = nxt
    return seq
