"""Exactness of one verification step on synthetic distributions (no model involved).

Whatever q is, the first emitted token must be distributed as p[0], the token at position 2
(emitted only when x_1 was accepted) as p[1], and the bonus token (emitted only when both drafted
tokens were accepted) as p[2]. We draw N = 20,000 rounds per case and run a chi-square
goodness-of-fit test. With a fixed seed the outcome is deterministic; the thresholds are
the sound part: a correct sampler fails a test at level 1e-3 with probability 1e-3, and the biased
rule is rejected at p < 1e-12 in every case where it differs from the correct one.
"""

import numpy as np
import pytest
import torch
from scipy.stats import chisquare

from utils.speculative import residual_distribution, verify_step, verify_step_biased

V = 8
N = 20_000


def _dist(values):
    t = torch.tensor(values, dtype=torch.float32)
    return t / t.sum()


P0 = _dist([0.30, 0.20, 0.15, 0.10, 0.10, 0.08, 0.05, 0.02])
P1 = _dist([0.05, 0.05, 0.10, 0.40, 0.20, 0.10, 0.05, 0.05])
CASES = {
    "q equals p": (P0, P1),
    "q uniform": (torch.full((V,), 1 / V), torch.full((V,), 1 / V)),
    "disjoint supports": (_dist([0, 0, 0, 0, 1, 1, 1, 1]), _dist([1, 1, 1, 1, 0, 0, 0, 0])),
    "q zero where p is not": (_dist([0, 0, 0.5, 0.2, 0.2, 0.1, 0, 0]), _dist([0.3, 0, 0, 0.1, 0.6, 0, 0, 0])),
    "p has zeros, q does not": (torch.full((V,), 1 / V), _dist([1, 2, 3, 4, 5, 6, 7, 8])),
}
# the bonus position gets its own distribution (P2 here, P0 in P_ZERO), far from each case's p[1] and
# q[1]: a bonus drawn from either of those rows fails the test (test_emitted_tokens_follow_p asserts it)
P2 = _dist([0.02, 0.05, 0.08, 0.10, 0.10, 0.15, 0.20, 0.30])
P = torch.stack([P0, P1, P2])  # (3, V)
P_ZERO = torch.stack([_dist([0, 0, 1, 1, 1, 1, 2, 2]), _dist([2, 2, 1, 1, 1, 1, 0, 0]), P0])


def _run(p, q, rule, seed=0):
    """Draw N rounds of gamma = 2. Returns (first emitted tokens, second emitted tokens, bonus tokens
    of the rounds that accepted both drafted tokens)."""
    g = torch.Generator().manual_seed(seed)
    first, second, bonus = [], [], []
    for _ in range(N):
        x = torch.multinomial(q, 1, generator=g)[:, 0]  # (2,) drafted from q
        v = rule(p, q, x, generator=g)
        emitted = x[: v.n_accepted].tolist() + [v.token]
        first.append(emitted[0])
        if len(emitted) > 1:
            second.append(emitted[1])
        if v.kind == "bonus":
            assert v.n_accepted == 2
            bonus.append(v.token)
    return np.array(first), np.array(second), np.array(bonus, dtype=np.int64)


def _fit(samples, probs):
    """(count of tokens emitted where probs is 0, chi-square p-value on the other tokens)."""
    probs = probs.numpy().astype(np.float64)
    counts = np.bincount(samples, minlength=len(probs))
    keep = probs > 0
    expected = probs[keep] / probs[keep].sum() * counts[keep].sum()
    return counts[~keep].sum(), chisquare(counts[keep], expected).pvalue


def _pvalue(samples, probs):
    leaked, pvalue = _fit(samples, probs)
    assert leaked == 0, "a token with target probability 0 was emitted"
    return pvalue


@pytest.mark.parametrize("case", list(CASES))
def test_emitted_tokens_follow_p(case):
    q = torch.stack(CASES[case])  # (2, V)
    p = P_ZERO if case == "p has zeros, q does not" else P
    first, second, bonus = _run(p, q, verify_step)
    assert _pvalue(first, p[0]) > 1e-3
    assert len(second) > 1000
    assert _pvalue(second, p[1]) > 1e-3
    assert len(bonus) > 1000
    assert _pvalue(bonus, p[2]) > 1e-3
    for wrong in (p[1], q[1]):  # a bonus from the previous target row, or from the draft: rejected
        leaked, pvalue = _fit(bonus, wrong)
        assert leaked > 0 or pvalue < 1e-6, (leaked, pvalue)


@pytest.mark.parametrize("case", [c for c in CASES if c != "q equals p"])
def test_biased_rule_fails_the_same_test(case):
    q = torch.stack(CASES[case])
    p = P_ZERO if case == "p has zeros, q does not" else P
    first, _, _ = _run(p, q, verify_step_biased)
    leaked, pvalue = _fit(first, p[0])  # a biased rule may even emit tokens that p forbids
    assert leaked > 0 or pvalue < 1e-12


def test_total_variation_shrinks_with_samples():
    """vLLM-style, over a series of sample sizes (prefixes of one run of N rounds): the correct rule's
    empirical distribution of the first token approaches p, its distance from p staying within three
    times the expected sampling distance sum_x sqrt(p(x)(1 - p(x)) / n) / 2 at every n and shrinking
    as n grows; the biased rule's distance settles on its exact law's distance from p, which no n
    removes."""
    from utils.interactive import emitted_law

    q = torch.stack(CASES["q uniform"])
    p0 = P[0].double().numpy()
    noise = lambda n: 0.5 * np.sqrt(p0 * (1 - p0) / n).sum()  # noqa: E731  (an upper bound on E[TV])

    def tv(samples, law=p0):
        return 0.5 * np.abs(np.bincount(samples, minlength=V) / len(samples) - law).sum()

    first, _, _ = _run(P, q, verify_step, seed=1)
    wrong, _, _ = _run(P, q, verify_step_biased, seed=1)
    sizes = [625, 2500, 10_000, N]
    correct = [tv(first[:n]) for n in sizes]
    assert all(d < 3 * noise(n) for d, n in zip(correct, sizes)), correct
    assert correct[-1] < correct[0] / 2 and noise(N) < 0.01  # a quarter of the noise each 16x: shrinking
    law = emitted_law(P[0].double(), q[0].double(), "p").numpy()  # the biased rule's exact first-token law
    exact = 0.5 * np.abs(law - p0).sum()
    assert exact > 10 * noise(N)
    biased = [tv(wrong[:n]) for n in sizes]
    assert all(abs(d - exact) < 3 * noise(n) for d, n in zip(biased, sizes)), (biased, exact)
    assert all(tv(wrong[:n], law) < 3 * noise(n) for n in sizes)  # it follows its own law, not p


def test_residual_distribution():
    p, q = _dist([0.5, 0.3, 0.2, 0]), _dist([0.2, 0.3, 0.1, 0.4])
    r = residual_distribution(p, q)
    assert torch.allclose(r, _dist([0.3, 0, 0.1, 0]))
    assert torch.allclose(residual_distribution(p, p), p)  # total: falls back to p


def test_greedy_is_the_same_rule_on_one_hot_distributions():
    onehot = torch.eye(V)
    p = onehot[[3, 5, 1]]  # target argmax 3, then 5, then bonus 1
    q = onehot[[3, 2]]  # draft agrees at 1, disagrees at 2
    v = verify_step(p, q, torch.tensor([3, 2]), generator=torch.Generator().manual_seed(0))
    assert (v.n_accepted, v.token, v.kind) == (1, 5, "resample")
    v = verify_step(p, onehot[[3, 5]], torch.tensor([3, 5]))
    assert (v.n_accepted, v.token, v.kind) == (2, 1, "bonus")


def test_resample_from_must_be_known():
    with pytest.raises(ValueError, match="residual"):
        verify_step(P, P[:2], torch.tensor([0, 1]), resample_from="target")
