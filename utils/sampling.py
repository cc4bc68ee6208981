"""Turning logits into the distribution we sample from: temperature, top-k, top-p.

Draft and target go through exactly the same warping; speculative sampling then reproduces the
*warped* target distribution. Temperature 0 means greedy: the distribution is a one-hot vector at
the argmax, which makes greedy decoding a special case of the same accept/reject rule.
"""

from __future__ import annotations

import torch


def check_sampling_args(temperature: float, top_k: int | None, top_p: float | None) -> None:
    """Raise a ValueError that says what to pass instead."""
    if temperature is None or not temperature >= 0:
        raise ValueError(
            f"temperature must be >= 0 (got {temperature!r}); use 0 for greedy decoding, 1 for plain sampling."
        )
    if top_k is not None and (not isinstance(top_k, int) or top_k < 1):
        raise ValueError(f"top_k must be a positive integer or None (got {top_k!r}); use None to disable top-k.")
    if top_p is not None and not (0 < top_p <= 1):
        raise ValueError(f"top_p must be in (0, 1] or None (got {top_p!r}); use None or 1.0 to disable top-p.")


def probs_from_logits(
    logits: torch.Tensor, temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None
) -> torch.Tensor:
    """Softmax of warped logits, in float32. Same order as Hugging Face: temperature, top-k, top-p.

    logits: (..., V). Returns (..., V) probabilities that sum to 1 on the last axis.
    temperature == 0 returns the one-hot vector of the argmax (greedy).
    """
    logits = logits.float()
    if temperature == 0:
        return torch.zeros_like(logits).scatter_(-1, logits.argmax(-1, keepdim=True), 1.0)
    logits = logits / temperature
    if top_k is not None and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]  # (..., 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_logits, idx = torch.sort(logits, dim=-1, descending=False)
        cum = sorted_logits.softmax(-1).cumsum(-1)
        remove_sorted = cum <= (1 - top_p)
        remove_sorted[..., -1:] = False  # always keep the most likely token
        remove = remove_sorted.scatter(-1, idx, remove_sorted)
        logits = logits.masked_fill(remove, float("-inf"))
    return logits.softmax(-1)


def sample(probs: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """One token id per row of probs (..., V) -> (...)."""
    flat = probs.reshape(-1, probs.shape[-1])
    return torch.multinomial(flat, 1, generator=generator).reshape(probs.shape[:-1])
