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
    # Limits with no formula re-typed: nothing drafted for free (c = 0, v = 1) gains exactly tau;
    # a draft as slow as the target at alpha = 1 gains (gamma + 1) / (gamma + 1) = 1.
    assert expected_speedup(0.8, 4, 0.0) == pytest.approx(expected_tokens_per_round(0.8, 4))
    assert expected_speedup(1.0, 4, 1.0) == pytest.approx(1.0)
    assert expected_speedup(0.0, 3, 0.0) == pytest.approx(1.0)  # every draft rejected, drafting free: no change
    with pytest.raises(ValueError, match="v"):
        expected_speedup(0.8, 4, 0.05, v=0)
    # no speedup possible when alpha <= c
    assert all(expected_speedup(0.3, g, 0.3) <= 1 + 1e-12 for g in range(1, 20))
    assert expected_speedup(0.9, optimal_gamma(0.9, 0.1), 0.1) > 2


@pytest.mark.parametrize("alpha, gamma, c, v", [(0.8, 4, 0.05, 1.0), (0.8, 4, 0.05, 1.5), (0.6, 2, 0.3, 1.2), (0.95, 8, 0.1, 1.0)])
def test_speedup_matches_a_simulated_clock(alpha, gamma, c, v):
    """An independent reference for Thm 3.8: simulate rounds (Bernoulli(alpha) acceptances, stop at
    the first rejection, one target token always added), charge each round gamma draft steps of c and
    one verify pass of v (target steps), and compare tokens per unit time with the target alone (one
    token per step)."""
    rng = np.random.default_rng(1)
    rounds = 200_000
    tokens = simulate_tokens_per_round(alpha, gamma, rounds, rng) * rounds
    time = rounds * (gamma * c + v)
    assert expected_speedup(alpha, gamma, c, v) == pytest.approx(tokens / time, rel=0.01)


def test_speedup_is_monotone():
    """More acceptance helps, dearer drafts and dearer checks hurt."""
    assert expected_speedup(0.9, 4, 0.1) > expected_speedup(0.7, 4, 0.1)
    assert expected_speedup(0.8, 4, 0.05) > expected_speedup(0.8, 4, 0.2)
    assert expected_speedup(0.8, 4, 0.05, v=1.0) > expected_speedup(0.8, 4, 0.05, v=1.5)


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


def test_predicted_optimum_matches_the_measured_one_with_alpha_per_checked_token():
    """Issue 13: Thm 3.8 needs acceptance per *checked* token. From the committed sweep (tiny pair,
    2-core CPU, gamma 1/2/4/8 at T = 0 and 1), the cost model fed alpha per checked token and the c, v
    measured in isolation picks the gamma that measured fastest; fed accepted / drafted it does not
    (at T = 1 it picks gamma 1, measured best is 4)."""
    import json
    from pathlib import Path

    d = json.loads((Path(__file__).resolve().parents[1] / "data/results/bench-tiny-cpu.json").read_text())
    c, v = d["meta"]["c"], d["meta"]["verify_ratio"]
    wrong = 0
    for t in (0.0, 1.0):
        rows = [s for s in d["summary"] if s["temperature"] == t]
        gammas = [s["gamma"] for s in rows]
        measured = max(rows, key=lambda s: s["measured_speedup_vs_ours_ar"])["gamma"]
        checked = sum(s["alpha_checked"] for s in rows) / len(rows)  # about constant in gamma
        assert optimal_gamma(checked, c, v=v, gammas=gammas) == measured
        drafted = sum(s["alpha"] for s in rows) / len(rows)
        wrong += optimal_gamma(drafted, c, v=v, gammas=gammas) != measured
    assert wrong >= 1


def test_check_pair_run_names_the_c_its_own_run_supports():
    """utils.theory.check_pair_run (notebook 05 section 5): a prediction tau / (gamma c + 1) per c on
    file against the measured ratios; the c that misses by more than 15% is called contradicted."""
    from utils.theory import check_pair_run, describe_pair_check

    run = dict(pair="a->b", tau=3.0, hf_greedy_tok_s=10.0, hf_assisted_tok_s=15.0, ours_tok_s=12.0)
    r = check_pair_run(run, [("run", 0.25), ("steps", 1.0)], gamma=4)
    assert r["measured"] == pytest.approx(dict(hf_assisted=1.5, ours=1.2))
    run_c, steps_c = r["checks"]
    assert run_c["predicted"] == pytest.approx(1.5) and run_c["off_assisted"] == pytest.approx(0.0)  # 3 / (4 * 0.25 + 1)
    assert steps_c["predicted"] == pytest.approx(0.6) and steps_c["off_ours"] == pytest.approx(0.6 / 1.2 - 1)
    assert r["implied"]["hf_assisted"] == pytest.approx(0.25) and r["implied"]["ours"] == pytest.approx(0.375)
    assert (r["closest"]["how"], r["farthest"]["how"]) == ("run", "steps")
    lines = describe_pair_check(r)
    assert lines[-1].endswith("contradicted by the speedup its own run measured")
    assert describe_pair_check(check_pair_run(run, [("run", 0.25), ("near", 0.3)]))[-1].endswith("close enough, given the noise")
    no_tau = check_pair_run({**run, "tau": None}, [("run", 0.5)])
    assert "predicted" not in no_tau["checks"][0] and no_tau["checks"][0]["break_even_tau"] == pytest.approx(3.0)
    assert no_tau["implied"] is None and no_tau["closest"] is None and "no tau recorded" in describe_pair_check(no_tau)[-1]
    self_draft = check_pair_run(dict(run, pair="b->b"), [])
    assert self_draft["perfect"] == pytest.approx(1.0) and "self-draft" in describe_pair_check(self_draft)[-1]
