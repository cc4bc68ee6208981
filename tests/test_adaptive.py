"""Adaptive drafting in speculative_generate: the draft's confidence threshold and the heuristic
schedule (Hugging Face's assistant_confidence_threshold and num_assistant_tokens_schedule="heuristic").
They only choose how many tokens to draft, so the output stays exact: greedy equals HF greedy,
sampling follows the target's distribution."""

import pytest
import torch

from utils.sampling import probs_from_logits
from utils.speculative import distribution_check, speculative_generate

OPTIONS = {
    "confidence 0.4": dict(draft_confidence=0.4),
    "heuristic": dict(schedule="heuristic"),
    "both": dict(draft_confidence=0.4, schedule="heuristic"),
}


def heuristic_next(r) -> int:
    """HF's rule: +2 after a round whose drafted tokens were all accepted, else -1, at least 1."""
    return r.gamma + 2 if r.n_accepted == len(r.drafted) else max(1, r.gamma - 1)


@pytest.mark.parametrize("options", OPTIONS.values(), ids=OPTIONS.keys())
def test_greedy_equals_target_greedy(pair, greedy_refs, options):
    eos = pair.tokenizer.eos_token_id
    for ids, n, ref in greedy_refs:
        out = speculative_generate(pair.target, pair.draft, ids, max_new_tokens=n, gamma=4, eos_token_id=eos, **options)
        assert out.sequences.tolist() == ref.tolist()
        assert all(len(r.drafted) <= r.gamma for r in out.rounds)


@pytest.mark.parametrize("options", OPTIONS.values(), ids=OPTIONS.keys())
def test_sampling_matches_target_distribution(pair, encode, options):
    """The first new token follows the target's distribution at T = 1: 600 runs, binned as every
    exactness test bins (utils.speculative.distribution_check: the 5 likeliest tokens, the rest split by
    q > p), chi-square at level 1e-3."""
    ids = encode("The try statement specifies")
    with torch.inference_mode():
        p = probs_from_logits(pair.target(ids).logits[0, -1], temperature=1.0)
        q = probs_from_logits(pair.draft(ids).logits[0, -1], temperature=1.0)
    g = torch.Generator().manual_seed(1)
    firsts = [speculative_generate(pair.target, pair.draft, ids, max_new_tokens=3, gamma=2, temperature=1.0,
                                   generator=g, **options).sequences[0, ids.shape[1]].item() for _ in range(600)]
    assert distribution_check(firsts, p, q=q)["pvalue"] > 1e-3


def test_joint_distribution_of_the_first_two_tokens_with_both_options(pair, encode, joint_pvalue, x2_verified):
    """A later position too: with the heuristic schedule starting at gamma 1 and the threshold, the
    second token often comes from a second round, drafted after the schedule moved. max_new_tokens 3 so
    that this round drafts (with 2 it is a plain target step, which the rule never touches). The pair
    (x1, x2) must follow the target's joint p(x1) p(x2 | x1): 1,000 runs, chi-square at level 1e-3 on
    the cells of conftest.joint_first_two_pvalue (as in test_speculative.py). With the known-wrong rule
    (resample from p after a rejection) this test fails (p < 1e-6); as it first was (max_new_tokens 2,
    tails pooled, another prompt) it passed with the wrong rule."""
    ids = encode("A lambda expression")
    n, g = 1000, torch.Generator().manual_seed(2)
    outs = [speculative_generate(pair.target, pair.draft, ids, max_new_tokens=3, gamma=1, temperature=1.0, generator=g,
                                 draft_confidence=0.4, schedule="heuristic") for _ in range(n)]
    assert sum(x2_verified(o.rounds) for o in outs) > n // 4
    draws = [tuple(o.sequences[0, ids.shape[1] : ids.shape[1] + 2].tolist()) for o in outs]
    assert joint_pvalue(draws, pair.target, pair.draft, ids, temperature=1.0) > 1e-3


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_heuristic_schedule_follows_hf_rule(pair, prompts, encode, temperature):
    """Round 1 drafts at most the starting gamma; each next round's gamma is HF's rule applied to the
    round before; a round drafts min(gamma, what is left - 1) tokens (fewer only at an EOS). Over
    the prompts the schedule both grows and shrinks."""
    eos = pair.tokenizer.eos_token_id
    steps = set()
    g = torch.Generator().manual_seed(3)
    for text in prompts["heldout"][:4]:
        out = speculative_generate(pair.target, pair.draft, encode(text), max_new_tokens=40, gamma=3, eos_token_id=eos,
                                   temperature=temperature, generator=g, schedule="heuristic")
        rs = out.rounds
        assert rs[0].gamma == 3
        left = 40
        for r, nxt in zip(rs, rs[1:] + [None]):
            assert len(r.drafted) == min(r.gamma, left - 1) or (r.drafted and r.drafted[-1] == eos)
            left -= len(r.emitted)
            if nxt is not None:
                assert nxt.gamma == heuristic_next(r)
                steps.add(nxt.gamma - r.gamma)
    assert steps & {2} and steps & {-1}


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_confidence_threshold_shortens_drafts(pair, prompts, encode, temperature):
    """Fewer tokens drafted per round than with a constant gamma. At T = 1 the recorded q(x_i) is
    the probability the rule reads: every token but a round's last was drafted with q >= threshold,
    and a round cut short (below min(gamma, what is left - 1), not at an EOS) ends on q < threshold."""
    eos, thr = pair.tokenizer.eos_token_id, 0.4
    mean, cut = {}, 0
    for conf in (None, thr):
        g = torch.Generator().manual_seed(4)
        n_drafted = n_rounds = 0
        for text in prompts["heldout"][:4]:
            out = speculative_generate(pair.target, pair.draft, encode(text), max_new_tokens=40, gamma=4, eos_token_id=eos,
                                       temperature=temperature, generator=g, draft_confidence=conf)
            left = 40
            for r in out.rounds:
                n_drafted, n_rounds = n_drafted + len(r.drafted), n_rounds + (r.kind != "target")
                if conf and temperature > 0:
                    assert all(q >= thr for q in r.q[:-1])
                    if len(r.drafted) < min(r.gamma, left - 1) and r.drafted[-1] != eos:
                        assert r.q[-1] < thr
                        cut += 1
                left -= len(r.emitted)
        mean[conf] = n_drafted / n_rounds
    assert mean[thr] < mean[None]
    assert cut > 0 or temperature == 0


def test_zero_threshold_and_constant_schedule_change_nothing(pair, encode):
    ids = encode("The while statement is used for")
    a = speculative_generate(pair.target, pair.draft, ids, max_new_tokens=30, gamma=4, temperature=1.0,
                             generator=torch.Generator().manual_seed(5))
    b = speculative_generate(pair.target, pair.draft, ids, max_new_tokens=30, gamma=4, temperature=1.0,
                             generator=torch.Generator().manual_seed(5), draft_confidence=0.0, schedule="constant")
    assert a.sequences.tolist() == b.sequences.tolist()
    assert [r.drafted for r in a.rounds] == [r.drafted for r in b.rounds]
    assert all(r.gamma == 4 for r in b.rounds)


@pytest.mark.parametrize("bad, err", [(1.0, ValueError), (-0.1, ValueError), (float("nan"), ValueError), (2, ValueError),
                                      ("0.4", TypeError), (True, TypeError)])
def test_bad_draft_confidence(pair, encode, bad, err):
    with pytest.raises(err, match="draft_confidence must be None or a number in \\[0, 1\\)"):
        speculative_generate(pair.target, pair.draft, encode("Hello"), max_new_tokens=4, draft_confidence=bad)


@pytest.mark.parametrize("bad", ["dynamic", "Heuristic", None, "heuristic_transient"])
def test_bad_schedule(pair, encode, bad):
    with pytest.raises(ValueError, match='schedule must be "constant"'):
        speculative_generate(pair.target, pair.draft, encode("Hello"), max_new_tokens=4, schedule=bad)


@pytest.mark.parametrize("options", [dict(draft_confidence=0.4), dict(schedule="heuristic"), dict(draft_confidence=0.0)])
def test_compiled_backend_refuses_adaptive_options(pair, encode, options):
    with pytest.raises(ValueError, match='need backend="eager"'):
        speculative_generate(pair.target, pair.draft, encode("Hello"), max_new_tokens=4, backend="compiled", **options)


def test_break_even_cost_ratio():
    """utils.beyond.break_even_c: the cost ratio at which two round profiles are equally fast."""
    from utils.beyond import break_even_c, round_speedup

    be = break_even_c(2.0, 1.0, 3.0, 3.0)  # drafts less, yields less: wins when draft passes are dear
    assert be["wins_above"] and round_speedup(2.0, 1.0, be["c_star"]) == pytest.approx(round_speedup(3.0, 3.0, be["c_star"]))
    assert break_even_c(3.2, 3.0, 3.0, 3.0) == dict(c_star=0.0, wins_above=True)  # more tokens, same drafting
    assert break_even_c(2.0, 3.0, 3.0, 3.0) == dict(c_star=0.0, wins_above=False)


def _summary_row(config, tau, k, by_repeat, faster_prompts, spread=0.05, c=0.2):
    return dict(temperature=0.0, config=config, alpha=0.8, tokens_per_round=tau, drafted_per_round=k, c_in_loop=c,
                noise_median_spread=spread, vs_constant=sum(by_repeat) / len(by_repeat), vs_constant_by_repeat=by_repeat,
                prompts_faster_than_constant=faster_prompts, n_prompts=10)


def test_adaptive_verdicts_set_model_and_clock_side_by_side():
    """utils.beyond.adaptive_verdicts (notebook 08 section 5) on a made-up result: the cost model's
    verdict at the loop's c, the clock's over repeats (noise_verdict) and over prompts (sign test)."""
    from utils.beyond import adaptive_verdicts, verdict_summary

    res = dict(meta=dict(gamma=4), summary=[
        dict(temperature=0.0, config="plain", tokens_per_s=10.0, noise_median_spread=0.05),  # no draft: skipped
        _summary_row("constant 4", 3.0, 3.0, [1.0], 0),
        _summary_row("heuristic from 4", 3.3, 3.0, [1.10, 1.12, 1.09], 10),  # more tokens, same drafting
        _summary_row("confidence 0.4", 2.0, 1.0, [0.90, 0.93, 0.97], 1),  # drafts less: wins only above c*
    ])
    h, t = adaptive_verdicts(res)
    assert (h["config"], h["c_star"], h["wins_above"], h["model_faster"], h["word"]) == ("heuristic from 4", 0.0, True, True, "faster")
    assert h["p_sign"] == pytest.approx(2 * 0.5 ** 10)  # 10 of 10 prompts faster, two-sided
    assert h["target_passes"] == pytest.approx(3.0 / 3.3) and h["draft_passes"] == pytest.approx(3.0 / 3.3)
    assert t["c_star"] == pytest.approx(1 / 3) and t["wins_above"]  # (3 - 2) / (2 * 3 - 3 * 1)
    assert not t["model_faster"] and t["word"] == "within noise"  # c = 0.2 < c*; one repeat within 5% of 1
    assert t["p_sign"] == pytest.approx(22 / 1024)
    lines = verdict_summary([h, t], 4)
    assert lines[0].endswith("heuristic from 4 at T = 0") and lines[1].endswith("confidence 0.4 at T = 0")
    assert lines[2].endswith(": none")  # none slower beyond the noise
    assert "heuristic from 4 at T = 0, confidence 0.4 at T = 0" in lines[3]  # both split 10 prompts significantly
    assert "predicted faster here in 0 of 1 cases" in lines[4]
    assert lines[5].endswith("predicted slower, measured within noise of constant gamma 4: 0.4 at T = 0")


@pytest.mark.parametrize("argv", [["adaptive", "--thresholds", "1.5"], ["adaptive", "--gamma", "0"], ["adaptive", "--prompts", "nope"],
                                  ["adaptive", "--n-prompts", "99"], ["adaptive", "--temperatures", "-1"], ["nope"]])
def test_beyond_cli_checks_flags_before_loading(argv, monkeypatch):
    import utils.models
    from utils.beyond import main

    monkeypatch.setattr(utils.models, "load_pair", lambda *a, **k: pytest.fail("loaded a model before checking the flags"))
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
