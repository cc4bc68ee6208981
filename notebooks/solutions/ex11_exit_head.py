"""Exercise 11 (notebook 11): the early-exit head. Checker: utils.exercises.check_11."""

import torch


def exit_head(target, hidden: torch.Tensor) -> torch.Tensor:
    """A layer's output (1, T, d) read by the target's own head: final RMSNorm, LM head, then Gemma2's
    soft-capping cap * tanh(logits / cap), as the last layer's output is read."""
    logits = target.lm_head(target.model.norm(hidden))  # (1, T, V)
    cap = getattr(target.config, "final_logit_softcapping", None)
    return logits if cap is None else cap * torch.tanh(logits / cap)
