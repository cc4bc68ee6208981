"""Playground settings from code: a value outside a slider's range raises (the slider would clamp it
silently); in-range values, the bounds included, still run. And runs_table, notebook 04's table of runs."""

import math

import pytest

from utils import playground
from utils.playground import RANGES, Playground, runs_table
from utils.theory import expected_speedup

BAD = [  # (setting, value, the slider's range as the message names it)
    ("gamma", 0, "1 to 10"), ("gamma", 12, "1 to 10"),
    ("temperature", 5.0, "0.0 to 3.0"), ("temperature", -0.1, "0.0 to 3.0"), ("temperature", math.nan, "0.0 to 3.0"),
    ("max_new_tokens", 200, "8 to 128"), ("max_new_tokens", 4, "8 to 128"),
    ("top_k", 51, "0 to 50"), ("top_k", -1, "0 to 50"),
    ("top_p", 0.0, "0.05 to 1.0"), ("top_p", 1.5, "0.05 to 1.0"),
]


@pytest.fixture(scope="module")
def pg(pair, prompts):
    return Playground(pair, prompts["workshop"], max_new_tokens=16)


@pytest.mark.parametrize("name, value, span", BAD)
def test_constructor_refuses_what_a_slider_would_clamp(pair, prompts, name, value, span):
    with pytest.raises(ValueError, match=rf"{name} = .* outside the playground's range, {span}") as e:
        Playground(pair, prompts["workshop"], **{name: value})
    assert "pass a value from" in str(e.value)  # and says what to do
    if value == value and name in ("gamma", "temperature", "max_new_tokens"):
        assert "speculative_generate" in str(e.value)  # where to go for more than the slider allows
    if value == value:  # what the slider would have made of it
        assert f"silently use {min(max(value, RANGES[name][1]), RANGES[name][2])}" in str(e.value)


@pytest.mark.parametrize("name, value, span", BAD)
def test_run_refuses_out_of_range_values_and_changes_nothing(pg, name, value, span, monkeypatch):
    before, last = pg.settings(), dict(pg.last)
    calls = []
    monkeypatch.setattr(playground, "speculative_generate", lambda *a, **k: calls.append(1))
    with pytest.raises(ValueError, match=rf"{name} = .* outside the playground's range, {span}"):
        pg.run(**{"seed": 5, name: value})  # a good value beside the bad one is not applied either
    assert pg.settings() == before and pg.last == last and not calls


@pytest.mark.parametrize("settings, error, match", [
    (dict(gamma=4.5), TypeError, "gamma must be an integer from 1 to 10"),
    (dict(top_k=True), TypeError, "top_k must be an integer from 0 to 50"),
    (dict(temperature="hot"), TypeError, "temperature must be a number from 0.0 to 3.0"),
    (dict(seed=1.5), TypeError, "seed must be an integer"),
    (dict(temperature=1e-40), ValueError, "too small to sample with"),
    (dict(prompt=""), ValueError, "prompt must be a non-empty string"),
    (dict(gama=4), TypeError, "no setting 'gama': use one of prompt, gamma, temperature"),
])
def test_run_says_what_to_pass(pg, settings, error, match):
    before = pg.settings()
    with pytest.raises(error, match=match):
        pg.run(**settings)
    assert pg.settings() == before


def test_in_range_values_run_once_and_show_on_the_controls(pg, monkeypatch):
    calls = []
    real = playground.speculative_generate
    monkeypatch.setattr(playground, "speculative_generate", lambda *a, **k: calls.append(k) or real(*a, **k))
    s = pg.run(gamma=10, temperature=3.0, max_new_tokens=8, top_k=50, top_p=0.05, seed=7)  # every bound
    assert len(calls) == 1  # one run for six changes, not one per control
    assert (s["gamma"], s["temperature"], s["top_k"], s["top_p"], s["seed"]) == (10, 3.0, 50, 0.05, 7)
    assert s["new_tokens"] == 8
    assert (pg.gamma.value, pg.temperature.value, pg.max_new_tokens.value, pg.top_k.value, pg.top_p.value,
            pg.seed.value) == (10, 3.0, 8, 50, 0.05, 7)
    assert calls[0]["gamma"] == 10 and calls[0]["temperature"] == 3.0
    pg.gamma.value = 1  # a slider moved by hand still re-runs
    assert len(calls) == 2 and pg.last["gamma"] == 1
    s = pg.reset()
    assert len(calls) == 3 and (s["gamma"], s["temperature"], s["new_tokens"], s["seed"]) == (4, 0.0, 16, 0)
    assert pg.reset() is pg.last and len(calls) == 3  # already there: no new run


def test_constructor_takes_every_starting_value(pair, prompts):
    play = Playground(pair, prompts["workshop"], max_new_tokens=128, seed=3, gamma=1, temperature=0.5, top_k=5,
                      top_p=0.9)
    assert (play.gamma.value, play.temperature.value, play.max_new_tokens.value, play.seed.value, play.top_k.value,
            play.top_p.value) == (1, 0.5, 128, 3, 5, 0.9)
    assert [(c.min, c.max) for c in (play.gamma, play.temperature, play.max_new_tokens, play.top_k, play.top_p)] == \
        [RANGES[k][1:3] for k in ("gamma", "temperature", "max_new_tokens", "top_k", "top_p")]  # they agree


def _run(gamma, temperature, alpha, c, v, measured, tau=2.5, k=3.0):
    return dict(gamma=gamma, temperature=temperature, alpha_checked=alpha, tokens_per_round=tau, drafted_per_round=k,
                c=c, v=v, measured_speedup=measured, decomposed_speedup=tau / (k * c + v))


def test_runs_table_prints_one_row_per_run_and_the_prediction():
    v_iso = {str(g): 1.0 + 0.01 * g for g in range(1, 11)}
    runs = [_run(2, 0.0, 0.9, 0.25, 1.2, 1.5), _run(4, 1.0, 0.7, 0.15, 1.1, 1.2), _run(4, 1.0, math.nan, 0.3, 1.1, 0.9)]
    lines = runs_table(runs, 0.2, v_iso).splitlines()
    assert len(lines) == 1 + len(runs) + 1
    assert lines[0].split()[:7] == ["gamma", "T", "alpha", "tau", "k", "c", "loop"]
    assert "predicted (error)" in lines[0] and "decomposed" in lines[0]
    pred = expected_speedup(0.9, 2, 0.2, v_iso["2"])  # c, v in isolation; Eq. 1's tau at the run's alpha
    row = lines[1].split()
    assert row[:7] == ["2", "0.0", "0.90", "2.50", "3.0", "0.250", "1.20"] and row[7] == "1.50x"
    assert row[8] == f"{pred:.2f}x" and row[9] == f"({pred / 1.5 - 1:+.0%})"
    assert row[10] == f"{runs[0]['decomposed_speedup']:.2f}x"
    assert lines[2].split()[1] == "1.0" and "n/a" in lines[3]  # nothing checked: nothing to predict from
    assert lines[-1] == "c in the loop above c in isolation (0.200) in 2 of 3 runs"
    assert runs_table(runs[:1], 0.2, 1.1).splitlines()[1].split()[8] == f"{expected_speedup(0.9, 2, 0.2, 1.1):.2f}x"
    with pytest.raises(ValueError, match="runs is empty"):
        runs_table([], 0.2, v_iso)
