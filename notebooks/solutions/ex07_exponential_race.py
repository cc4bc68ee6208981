"""Exercise 07 (notebook 07): sampling on the device, without a host sync (the exponential race).
Checker: utils.exercises.check_07. The rule of utils.fast.sample_with_noise."""

import torch


def sample_without_sync(probs: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """One token per row of probs (..., V), given noise (..., V) ~ Exp(1) i.i.d.: returns (...).

    Token i finishes a race at time noise_i / probs_i, an exponential time with rate probs_i; the
    first to finish is token i with probability probs_i / sum(probs) = probs_i. So the winner,
    argmin(noise / probs) = argmax(probs / noise), is a sample from probs. Only tensor operations:
    nothing is read back to Python, so on a GPU the host never waits. noise = ones: the argmax (greedy).
    A token with probs_i = 0 scores 0 and never wins.
    """
    return (probs / noise).argmax(-1)
