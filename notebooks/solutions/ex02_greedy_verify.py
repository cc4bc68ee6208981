"""Exercise 02 (notebook 02): verification that can change a token, in one target pass.
Checker: utils.exercises.check_02."""

import torch


@torch.no_grad()
def greedy_verify(target, ids: torch.Tensor, k: int) -> tuple[int, int]:
    """Greedy verification of the k drafted tokens at the end of ids.

    ids: (1, T + k), the prompt followed by k drafted tokens. One target forward pass.
    Returns (n_accepted, token): how many drafted tokens, from the left, equal the target's arg max,
    and the target's arg max right after them (a replacement after a rejection, a bonus after k).
    """
    logits = target(ids).logits[0, -k - 1:]  # (k + 1, V): position i predicts token i + 1
    best = logits.argmax(-1).tolist()  # (k + 1,) the target's choice at each drafted position, then the bonus
    drafted = ids[0, -k:].tolist()  # (k,)
    n = 0
    while n < k and drafted[n] == best[n]:  # the accepted prefix ends at the first disagreement
        n += 1
    return n, best[n]
