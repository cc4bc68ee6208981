"""The playground's callback and the token renderer, driven from code (no browser)."""

import re

import pytest

from utils.playground import Playground
from utils.render import count_kinds, rounds_html, rounds_text
from utils.speculative import speculative_generate
from utils.theory import expected_speedup


@pytest.fixture(scope="module")
def pg(pair, prompts):
    return Playground(pair, prompts["workshop"], max_new_tokens=32)


def _dom_counts(html):
    return {k: len(re.findall(f'class="specdec-token specdec-{k}"', html)) for k in ("accepted", "rejected", "resample", "bonus")}


def test_changing_controls_reruns_and_updates_the_view(pg):
    pg.widget()
    first_html, first = pg.html.value, dict(pg.last)
    assert first["gamma"] == 4 and first["temperature"] == 0.0
    assert _dom_counts(first_html) == {k: first["counts"][k] for k in ("accepted", "rejected", "resample", "bonus")}

    pg.gamma.value = 1  # the observer re-runs the callback
    assert pg.last["gamma"] == 1
    assert pg.last["rounds"] > first["rounds"]  # at most 2 tokens per round now
    assert pg.html.value != first_html

    greedy_html = pg.html.value
    pg.temperature.value = 1.5
    assert pg.last["temperature"] == 1.5
    assert pg.html.value != greedy_html  # a sampled continuation replaces the greedy one
    assert _dom_counts(pg.html.value) == {k: pg.last["counts"][k] for k in ("accepted", "rejected", "resample", "bonus")}
    assert "acceptance rate alpha" in pg.stats.value and f"{pg.last['alpha']:.2f}" in pg.stats.value


def test_statistics_are_consistent(pg):
    pg.gamma.value, pg.temperature.value = 4, 0.0
    s = pg.last
    c = s["counts"]
    assert c["accepted"] + c["resample"] + c["bonus"] + c["target"] == s["new_tokens"] == 32
    assert s["tokens_per_round"] == pytest.approx(s["new_tokens"] / s["rounds"])
    assert 0 < s["c"] < 1 and s["v"] > 0.5 and s["measured_speedup"] > 0 and s["predicted_speedup"] > 0
    # Thm 3.8 (tested against a simulated clock in test_theory.py) with alpha per checked token and this run's c, v
    assert s["predicted_speedup"] == pytest.approx(expected_speedup(s["alpha_checked"], 4, s["c"], s["v"]))
    assert 1 <= s["optimal_gamma"] <= 10


def test_renderers_show_every_kind(pair, encode):
    out = speculative_generate(pair.target, pair.draft, encode("A dictionary is"), max_new_tokens=40, gamma=6)
    counts = count_kinds(out.rounds)
    html = rounds_html(out.rounds, pair.tokenizer, prompt="A dictionary is")
    assert _dom_counts(html) == {k: counts[k] for k in ("accepted", "rejected", "resample", "bonus")}
    assert counts["accepted"] > 0 and counts["resample"] > 0 and counts["rejected"] >= counts["resample"]
    text = rounds_text(out.rounds, pair.tokenizer)
    assert text.count("|") == len(out.rounds) - 1 and "~~" in text


def test_long_prompt_speedup_counts_the_prefill_on_both_sides(pair, prompts):
    """Issue 14: the speculative time included the prefill and the baseline did not, so a long prompt
    reported a tiny speedup. Compare with both runs timed directly, prefill included."""
    import time

    from utils.decoding import autoregressive_generate

    long = " ".join(prompts["workshop"] * 3)  # several hundred tokens, inside the 1024 context
    ids = pair.tokenizer(long, return_tensors="pt").input_ids
    assert 300 < ids.shape[1] < 900
    play = Playground(pair, [long], max_new_tokens=16)
    play.gamma.value, play.temperature.value = 4, 0.0  # greedy: the same tokens every run
    s = play.run()
    ratios = []
    for _ in range(3):
        t0 = time.perf_counter()
        autoregressive_generate(pair.target, ids, s["new_tokens"])
        t_ar = time.perf_counter() - t0
        t0 = time.perf_counter()
        speculative_generate(pair.target, pair.draft, ids, max_new_tokens=16, gamma=4)
        ratios.append(t_ar / (time.perf_counter() - t0))
    direct = sorted(ratios)[1]
    assert 0.5 < s["measured_speedup"] / direct < 2, (s["measured_speedup"], ratios)
    assert 0 < s["c"] < 1 and 0.5 < s["v"] < 5  # the prefill is not averaged into c and v


def test_playground_refuses_no_prompts(pair):
    with pytest.raises(ValueError, match="non-empty list"):
        Playground(pair, [])
