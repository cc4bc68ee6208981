"""Exercise 03 (notebook 03): one accept/reject step of speculative sampling.
Checker: utils.exercises.check_03. The rule of utils.speculative.verify_step, with u passed in."""

import torch


def verify_step(p: torch.Tensor, q: torch.Tensor, draft_tokens: torch.Tensor, u: torch.Tensor,
                generator: torch.Generator | None = None) -> tuple[int, int]:
    """Accept or reject k drafted tokens; return (n_accepted, token the target adds).

    p: (k + 1, V) target probabilities at each drafted position and the bonus position.
    q: (k, V) draft probabilities the tokens were sampled from. draft_tokens: (k,). u: (k,) uniforms.
    """
    k = draft_tokens.shape[0]
    for i in range(k):
        x = int(draft_tokens[i])
        if u[i] < min(1.0, float(p[i, x] / q[i, x])):  # accept with probability min(1, p/q)
            continue
        residual = (p[i] - q[i]).clamp_min(0)  # (V,) the mass the draft under-proposed
        residual = residual / residual.sum() if residual.sum() > 0 else p[i]  # p == q: a rejection cannot happen
        return i, int(torch.multinomial(residual, 1, generator=generator))
    return k, int(torch.multinomial(p[k], 1, generator=generator))  # all accepted: bonus token from p[k]
