"""Turning logits into the distribution we sample from: temperature, top-k, top-p.

Draft and target go through exactly the same warping; speculative sampling then reproduces the
*warped* target distribution. Temperature 0 means greedy: the distribution is a one-hot vector at
the argmax, which makes greedy decoding a special case of the same accept/reject rule.
"""

from __future__ import annotations

import contextlib
import math
import numbers

import torch


# The smallest positive temperature: far below it logits / temperature overflows float32 to inf
# (logits of a few hundred divided by 1e-37), whose softmax is NaN; long before, the warped
# distribution is greedy's up to exact ties.
MIN_TEMPERATURE = 1e-30


@contextlib.contextmanager
def seeded(seed: int, device="cpu"):
    """Seed torch's generator for `device` (and the CPU's) for the block, and put both back afterwards,
    so that a helper which must seed the global stream (model initialisation, Hugging Face sampling)
    leaves the caller's random state as it found it. Only the generators it saves are reseeded (not
    torch.manual_seed, which would reseed every GPU and leave them changed)."""
    dev = torch.device(device)
    cuda = [dev.index if dev.index is not None else torch.cuda.current_device()] if dev.type == "cuda" else []
    mps = torch.mps.get_rng_state() if dev.type == "mps" else None
    with torch.random.fork_rng(devices=cuda):
        torch.default_generator.manual_seed(seed)
        for i in cuda:
            torch.cuda.default_generators[i].manual_seed(seed)
        if mps is not None:
            torch.mps.manual_seed(seed)
        try:
            yield
        finally:
            if mps is not None:
                torch.mps.set_rng_state(mps)


def check_sampling_args(temperature, top_k, top_p, generator=None) -> None:
    """Raise a ValueError or TypeError that says what to pass instead."""
    if isinstance(temperature, bool) or not isinstance(temperature, numbers.Real):
        raise TypeError(f"temperature must be a number >= 0 (got {temperature!r}); use 0 for greedy decoding, 1 for plain sampling.")
    if not (math.isfinite(temperature) and temperature >= 0):
        raise ValueError(
            f"temperature must be a finite number >= 0 (got {temperature!r}); use 0 for greedy decoding, 1 for plain sampling."
        )
    if 0 < temperature < MIN_TEMPERATURE:
        raise ValueError(f"temperature {temperature!r} is too small to sample with (the logits divided by it can "
                         f"overflow float32): use 0 for greedy decoding, which it would equal anyway, or at least "
                         f"{MIN_TEMPERATURE:g}.")
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator or None (got {generator!r}): for a seed, pass "
                        "torch.Generator().manual_seed(42).")
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, numbers.Integral) or top_k < 1):
        raise ValueError(f"top_k must be a positive integer or None (got {top_k!r}); use None to disable top-k.")
    if top_p is not None and (isinstance(top_p, bool) or not isinstance(top_p, numbers.Real) or not (0 < top_p <= 1)):
        raise ValueError(f"top_p must be in (0, 1] or None (got {top_p!r}); use None or 1.0 to disable top-p.")


def check_count(name: str, value, minimum: int, what: str) -> int:
    """An integer argument (a Python or NumPy integer, not a bool) >= minimum, returned as an int."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer >= {minimum} (got {value!r} of type {type(value).__name__}): {what}.")
    if value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum} (got {value!r}): {what}.")
    return int(value)


def eos_set(eos_token_id) -> set[int]:
    """eos_token_id as a set of ids: None, an int (or NumPy integer), a list/tuple of them, or a 0-d or
    1-d integer tensor, as Hugging Face accepts."""
    if eos_token_id is None:
        return set()
    if isinstance(eos_token_id, torch.Tensor):
        if eos_token_id.is_floating_point() or eos_token_id.dim() > 1:
            raise TypeError(f"eos_token_id as a tensor must be 0-d or 1-d integer ids (got {eos_token_id!r}).")
        return set(eos_token_id.reshape(-1).tolist())
    ids = list(eos_token_id) if isinstance(eos_token_id, (list, tuple, set, frozenset)) else [eos_token_id]
    for i in ids:
        if isinstance(i, bool) or not isinstance(i, numbers.Integral):
            raise TypeError(
                f"eos_token_id must be a token id (an int), a list of them or None (got {eos_token_id!r}); "
                "pass tokenizer.eos_token_id, not the token's text."
            )
    return {int(i) for i in ids}


def probs_from_logits(
    logits: torch.Tensor, temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None,
    check: bool = True,
) -> torch.Tensor:
    """Softmax of warped logits, in float32. Same order as Hugging Face: temperature, top-k, top-p.

    logits: (..., V). Returns (..., V) probabilities that sum to 1 on the last axis.
    temperature == 0 returns the one-hot vector of the argmax (greedy).
    """
    if check:  # the loops check their arguments once and pass check=False (this reads a device value)
        if not isinstance(logits, torch.Tensor):
            raise TypeError(f"logits must be a torch.Tensor of shape (..., V) (got {type(logits).__name__}).")
        check_sampling_args(temperature, top_k, top_p)
    logits = logits.float()
    if check and logits.numel() and bool(torch.isneginf(logits).all(-1).any()):
        raise ValueError("every logit of a row is -inf: there is no token to pick. Check the mask or the warping you applied.")
    if temperature == 0:
        return torch.zeros_like(logits).scatter_(-1, logits.argmax(-1, keepdim=True), 1.0)
    logits = logits / temperature
    if top_k is not None and top_k < logits.shape[-1]:
        kth = torch.topk(logits, int(top_k), dim=-1).values[..., -1:]  # (..., 1)
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
    return multinomial(flat, 1, generator).reshape(probs.shape[:-1])


# Random draws with a generator that may live on another device than the tensors: torch.Generator()
# is a CPU generator, and torch refuses it for a tensor on a GPU ("Expected a 'cuda' device type for
# generator"). A notebook seeds one generator and runs on a CPU locally and on a GPU on Colab, so
# these draw where the generator lives and copy the result over (one small host-to-device copy; pass
# torch.Generator(device=...) to draw on the GPU itself). Same generator, same seed: same numbers.


def _elsewhere(generator: torch.Generator | None, device) -> bool:
    return generator is not None and generator.device.type != torch.device(device).type


def rand(shape, device, generator: torch.Generator | None = None) -> torch.Tensor:
    """torch.rand(shape) on `device`, drawn with `generator` wherever that lives."""
    if _elsewhere(generator, device):
        return torch.rand(shape, generator=generator, device=generator.device).to(device)
    return torch.rand(shape, generator=generator, device=device)


def exponential(shape, device, generator: torch.Generator | None = None) -> torch.Tensor:
    """Exponential(1) noise of `shape` on `device`, drawn with `generator` wherever that lives."""
    if _elsewhere(generator, device):
        return torch.empty(shape, device=generator.device).exponential_(generator=generator).to(device)
    return torch.empty(shape, device=device).exponential_(generator=generator)


def multinomial(probs: torch.Tensor, n: int, generator: torch.Generator | None = None,
                replacement: bool = False) -> torch.Tensor:
    """torch.multinomial(probs, n) on probs' device, drawn with `generator` wherever that lives."""
    if _elsewhere(generator, probs.device):
        return torch.multinomial(probs.to(generator.device), n, replacement, generator=generator).to(probs.device)
    return torch.multinomial(probs, n, replacement, generator=generator)
