"""Exactness of the eager speculative loop, and the power of the test that proves it.

Vehicle: the toy bigram LM of tests/_toy.py (a fixed 6 x 6 table of next-token probabilities; a run
of `speculative_generate` takes about a millisecond). Target: TABLE; draft: TABLE with its columns
reversed. The target's exact joint law of the first three new tokens is p(a | 1) p(b | a) p(c | b),
read off the (warped) table, with no draft and no accept/reject involved.

The statistic (`joint_pvalue`): N runs after the prompt [0, 1], gamma cycling through 1, 2, 3 (with
max_new_tokens 3, 3, 4: at gamma 1 token 2 is round 1's bonus, or is drafted and checked in round 2
after a resample; at gamma 2 tokens 1 and 2 are drafted in round 1, token 3 is its bonus when both are
kept; at gamma 3 all three are drafted in round 1), a chi-square goodness of fit over the 216 cells
(a, b, c), cells expecting fewer than 5 pooled, and 0 when a cell of target probability 0 is hit. A
correct sampler fails at level 1e-3 with probability 1e-3 (fixed seeds: the outcome is deterministic).

Power: each mutation test patches the narrowest function of utils/speculative.py that holds one part of
the rule, runs the same statistic on half the runs (N_MUTANT; a chi-square's power only grows with N)
and asserts p < 1e-6:
- after a rejection, resample from p instead of norm(max(0, p - q))       (accept_reject's dist)
- the bonus token drawn from the draft's next-token distribution, not p   (verify_step's bonus)
- draft token i verified with the target's row i + 1 (off by one)         (accept_reject's p)
- the draft samples from warped q, the rule is given the unwarped q       (accept_reject's q)
- every accepted position counted, not the prefix before the first reject (accept_reject's n)
- one uniform draw shared by a round's positions                          (accept_reject's u)
The padded positions of the compiled and batched loops (accept_reject's k) are tested in
test_padding_is_never_accepted below and, statistically, in tests/test_fast.py
(test_compiled_sampling_with_a_padded_round) and tests/test_batched.py.
"""

import numpy as np
import pytest
import torch

import utils.speculative as spec
from _toy import TABLE, BigramLM
from utils.sampling import probs_from_logits, sample
from utils.speculative import pooled_chisquare, speculative_generate

DRAFT = TABLE.flip(1)  # (6, 6): the draft's table, p(. | a) with columns reversed
PROMPT = torch.tensor([[0, 1]])  # token 1 next: p = [.1 .05 .4 .15 .2 .1], q = [.1 .2 .15 .4 .05 .1]
GAMMAS = (1, 2, 3)
N = 9_000  # 3,000 runs per gamma
N_MUTANT = N // 2  # the mutations fail even on half the runs (a run takes about 1 ms here)
WARPS = {
    "T=1": dict(temperature=1.0),
    "T=0.7": dict(temperature=0.7),
    "top_k=2": dict(temperature=1.0, top_k=2),
    "top_p=0.8": dict(temperature=1.0, top_p=0.8),
}


def warped(table: torch.Tensor, warp: dict) -> torch.Tensor:
    """(6, 6) table -> its rows warped as the loop warps them (float64)."""
    return probs_from_logits(table.log(), **warp).double()


def exact_joint(warp: dict) -> np.ndarray:
    """(6, 6, 6): the target's exact law of the first three new tokens after PROMPT."""
    P = warped(TABLE, warp).numpy()
    return P[PROMPT[0, -1].item()][:, None, None] * P[:, :, None] * P[None, :, :]  # p(a | 1) p(b | a) p(c | b)


def draw(warp: dict, n: int = N, seed: int = 0) -> np.ndarray:
    """(6, 6, 6) counts of the first three new tokens over n runs, gamma cycling through GAMMAS."""
    target, draft = BigramLM(TABLE), BigramLM(DRAFT)
    g = torch.Generator().manual_seed(seed)
    counts = np.zeros((6, 6, 6))
    T = PROMPT.shape[1]
    for i in range(n):
        gamma = GAMMAS[i % len(GAMMAS)]
        out = speculative_generate(target, draft, PROMPT, max_new_tokens=max(3, gamma + 1), gamma=gamma, generator=g,
                                   time_models=False, **warp)
        a, b, c = out.sequences[0, T : T + 3].tolist()
        counts[a, b, c] += 1
    return counts


def joint_pvalue(counts: np.ndarray, warp: dict) -> float:
    """Chi-square p-value of the counts against exact_joint (cells expecting < 5 pooled); 0.0 if a
    triple the warped target never emits was drawn."""
    law = exact_joint(warp).ravel()
    counts = counts.ravel()
    if counts[law <= 0].sum() > 0:
        return 0.0
    keep = law > 0
    return pooled_chisquare(counts[keep], law[keep] / law[keep].sum())[0]


def test_warped_rows_do_not_depend_on_the_batch():
    """The reference warps the whole table at once, the loop one to four rows at a time. At top_p 0.8
    the cut falls between tied probabilities in rows 1, 3, 4 and 5 (which of the tied tokens goes is
    the sort's choice) and on the cumulative sum 0.2 in row 0, so check both ways warp alike."""
    for warp in WARPS.values():
        full = warped(TABLE, warp)
        for rows in ([1], [2, 3], [5, 0, 3], [4, 5, 1, 2]):
            assert torch.equal(warped(TABLE[rows], warp), full[rows])


@pytest.mark.parametrize("name", list(WARPS))
def test_first_three_tokens_follow_the_exact_joint(name):
    warp = WARPS[name]
    pvalue = joint_pvalue(draw(warp, seed=1), warp)
    assert pvalue > 1e-3, pvalue


# ---------------------------------------------------------------- mutations of the rule


def _resample_from_p(monkeypatch, warp):
    """After a rejection at position n, the added token comes from p[n], not the residual."""
    real = spec.accept_reject

    def mutated(p, q, draft_tokens, u, k=None):
        n, dist, accept = real(p, q, draft_tokens, u, k)
        return n, p.index_select(0, n.view(1))[0], accept  # n == K (bonus): p[K], unchanged

    monkeypatch.setattr(spec, "accept_reject", mutated)


def _bonus_from_draft(monkeypatch, warp):
    """When all k drafts are kept, the bonus token comes from the draft's distribution after x_k."""
    real, Q = spec.verify_step, warped(DRAFT, warp).float()

    def mutated(p, q, draft_tokens, *, generator=None, **kwargs):
        v = real(p, q, draft_tokens, generator=generator, **kwargs)
        if v.kind == "bonus":
            v.token = int(sample(Q[int(draft_tokens[-1])], generator))
        return v

    monkeypatch.setattr(spec, "verify_step", mutated)


def _off_by_one(monkeypatch, warp):
    """Draft token i is checked (and its residual taken) against the target's row i + 1."""
    real = spec.accept_reject

    def mutated(p, q, draft_tokens, u, k=None):
        return real(torch.cat([p[1:], p[-1:]]), q, draft_tokens, u, k)

    monkeypatch.setattr(spec, "accept_reject", mutated)


def _unwarped_q(monkeypatch, warp):
    """The draft samples from warped q, but the rule (ratio and residual) gets the draft's unwarped
    probabilities: each q row is mapped back to the raw table row it was warped from."""
    real, Q, raw = spec.accept_reject, warped(DRAFT, warp).float(), DRAFT.float()

    def mutated(p, q, draft_tokens, u, k=None):
        rows = torch.cdist(q, Q).argmin(-1)  # (K,): which table row each q is
        assert torch.allclose(Q[rows], q)
        return real(p, raw[rows], draft_tokens, u, k)

    monkeypatch.setattr(spec, "accept_reject", mutated)


def _every_accept_counted(monkeypatch, warp):
    """n counts every accepted position, not the prefix before the first rejection: after a rejection
    a later accepted token is kept, and the token added comes from the row after it."""
    real = spec.accept_reject

    def mutated(p, q, draft_tokens, u, k=None):
        _, _, accept = real(p, q, draft_tokens, u, k)
        K = draft_tokens.shape[0]
        ok = (u < accept) & (torch.arange(K) < (K if k is None else k))
        prefix = ok.long().cumprod(0).sum()
        n = ok.long().sum()
        if n == prefix:  # no accept after a rejection: the rule as it is
            return real(p, q, draft_tokens, u, k)
        forced = torch.where(torch.arange(K) < n, torch.zeros_like(u), torch.ones_like(u))  # accept the first n
        return real(p, q, draft_tokens, forced, k)

    monkeypatch.setattr(spec, "accept_reject", mutated)


def _one_uniform(monkeypatch, warp):
    """One uniform draw shared by every position of a round, instead of one each: acceptances of a
    round become dependent."""
    real = spec.accept_reject

    def mutated(p, q, draft_tokens, u, k=None):
        return real(p, q, draft_tokens, u[:1].expand_as(u), k)

    monkeypatch.setattr(spec, "accept_reject", mutated)


MUTATIONS = {  # name: (patch, the warp it runs under; unwarped q is the identity at T = 1)
    "resample from p": (_resample_from_p, "T=1"),
    "bonus from the draft": (_bonus_from_draft, "T=1"),
    "off by one": (_off_by_one, "T=1"),
    "unwarped q in the rule": (_unwarped_q, "top_k=2"),  # at T = 0.7 it shifts the law less
    "every accept counted": (_every_accept_counted, "T=1"),
    "one uniform per round": (_one_uniform, "T=1"),
}


@pytest.mark.parametrize("name", list(MUTATIONS))
def test_each_mutation_fails_the_same_statistic(monkeypatch, name):
    patch, warp_name = MUTATIONS[name]
    warp = WARPS[warp_name]
    patch(monkeypatch, warp)
    pvalue = joint_pvalue(draw(warp, n=N_MUTANT, seed=2), warp)
    assert pvalue < 1e-6, pvalue


def test_padding_is_never_accepted():
    """accept_reject's k: the compiled and batched loops pad a short round's drafted tokens to K with
    q = 0 there (p / q infinite). With every uniform 0 (accept whatever can be accepted), n stops at
    the k real tokens and the added token is the bonus from p's row k, whatever the padding holds."""
    g = torch.Generator().manual_seed(0)
    K, V = 4, 6
    p = torch.rand(K + 1, V, generator=g).softmax(-1)  # (K + 1, V)
    q = torch.rand(K, V, generator=g).softmax(-1)  # (K, V)
    drafted = torch.tensor([2, 3, 1, 5])
    for k in range(K + 1):
        qk = q.clone()
        qk[k:] = 0  # the padding: p / q is infinite there, so accept would be 1
        n, dist, accept = spec.accept_reject(p, qk, drafted, torch.zeros(K), k)
        assert (accept[k:] == 1).all()
        assert int(n) == k and torch.equal(dist, p[k])  # all k real ones kept, then the bonus from row k
