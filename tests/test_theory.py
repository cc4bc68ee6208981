import numpy as np
import pytest

from utils.theory import best_speedups, expected_speedup, expected_tokens_per_round, optimal_gamma


def simulate_tokens_per_round(alpha, gamma, rounds, rng):
    """Monte Carlo: Bernoulli(alpha) acceptances left to right, stop at the first rejection,
    plus the one token the target always adds."""
    accepts = rng.random((rounds, gamma)) < alpha  # (R, gamma)
    first_reject = np.where(accepts.all(1), gamma, accepts.argmin(1))  # accepted prefix length
    return (first_reject + 1).mean()


@pytest.mark.parametrize("alpha", [0.0, 0.3, 0.6, 0.8, 0.95])
@pytest.mark.parametrize("gamma", [1, 3, 5, 8])
def test_tokens_per_round_matches_monte_carlo(alpha, gamma):
    rng = np.random.default_rng(0)
    sim = simulate_tokens_per_round(alpha, gamma, 200_000, rng)
    # per-round tokens lie in [1, gamma + 1]: std <= gamma / 2, so 6 standard errors:
    tol = 6 * (gamma / 2) / np.sqrt(200_000)
    assert abs(sim - expected_tokens_per_round(alpha, gamma)) < tol


def test_limits_and_known_values():
    assert expected_tokens_per_round(1.0, 4) == 5
    assert expected_tokens_per_round(0.0, 4) == 1
    assert expected_tokens_per_round(0.5, 1) == pytest.approx(1.5)
    # Leviathan et al.: speedup = tau / (gamma c + 1)
    assert expected_speedup(0.8, 4, 0.05) == pytest.approx((1 - 0.8**5) / 0.2 / 1.2)
    assert expected_speedup(0.8, 4, 0.05, v=1.5) == pytest.approx((1 - 0.8**5) / 0.2 / 1.7)  # a dearer check
    with pytest.raises(ValueError, match="v"):
        expected_speedup(0.8, 4, 0.05, v=0)
    # no speedup possible when alpha <= c
    assert all(expected_speedup(0.3, g, 0.3) <= 1 + 1e-12 for g in range(1, 20))
    assert expected_speedup(0.9, optimal_gamma(0.9, 0.1), 0.1) > 2


def test_optimal_gamma_is_argmax_and_grows_with_alpha():
    for alpha in (0.5, 0.7, 0.9):
        g = optimal_gamma(alpha, 0.05, max_gamma=20)
        assert expected_speedup(alpha, g, 0.05) == max(expected_speedup(alpha, k, 0.05) for k in range(1, 21))
    assert optimal_gamma(0.6, 0.05) < optimal_gamma(0.9, 0.05)


@pytest.mark.parametrize("bad", [dict(alpha=1.2, gamma=2), dict(alpha=0.5, gamma=0)])
def test_bad_arguments(bad):
    with pytest.raises(ValueError):
        expected_tokens_per_round(**bad)


def test_best_speedups_picks_the_best_gamma_for_each_alpha():
    rows = best_speedups(0.45, alphas=(0.6, 0.8))
    assert [a for a, _, _ in rows] == [0.6, 0.8]
    for a, g, s in rows:
        assert s == max(expected_speedup(a, k, 0.45) for k in range(1, 17))
        assert s == expected_speedup(a, g, 0.45)
    # a speedup exists iff alpha > c: alpha 0.6 gains at c = 0.45, loses at c = 0.78
    assert rows[0][2] > 1 and best_speedups(0.78, alphas=(0.6,))[0][2] < 1
