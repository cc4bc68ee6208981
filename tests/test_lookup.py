"""Prompt lookup decoding (utils/lookup.py): the n-gram finder, exactness (greedy equals HF greedy,
sampling follows the target's distribution), rounds and caches, bad input, the command line."""

import json

import numpy as np
import pytest
import torch
from scipy.stats import chisquare

from utils.exercises import check_10
from utils.lookup import (
    LookupOutput,
    build_prompts,
    compare_lookup,
    copy_prompt,
    find_draft,
    main,
    prompt_lookup_generate,
    verify_copied,
    versus,
)
from utils.sampling import probs_from_logits

from _toy import TABLE, BigramLM  # tests/_toy.py, shared with test_exactness_mutations.py


def hf_greedy(model, ids, n, eos):
    with torch.inference_mode():
        return model.generate(ids, max_new_tokens=n, do_sample=False, eos_token_id=eos, pad_token_id=0)


@pytest.fixture(scope="module")
def copy_text(pair):
    """A prompt whose continuation reuses its own text: the target's passage, then the prompt again."""
    return copy_prompt(pair, "The while statement is used to", passage_tokens=64)


# ---------------------------------------------------------------- the n-gram finder


@pytest.mark.parametrize("seq, gamma, max_ngram, expected", [
    ([5, 6, 7, 8, 5, 6], 3, 2, ([7, 8, 5], 2)),  # a bigram match, gamma tokens after it
    ([1, 2, 9, 1, 2, 8, 1, 2], 2, 2, ([8, 1], 2)),  # the most recent occurrence, not the first
    ([3, 4, 9, 0, 4, 7, 3, 4], 2, 2, ([9, 0], 2)),  # longest n first: "3 4" beats the later "4"
    ([3, 9, 4, 5, 6, 4], 2, 2, ([5, 6], 1)),  # no bigram: fall back to a unigram
    ([3, 9, 4, 5, 6, 4], 2, 1, ([5, 6], 1)),  # max_ngram 1
    ([1, 2, 3, 4], 3, 2, ([], 0)),  # no match at all
    ([7, 1, 2, 7], 5, 2, ([1, 2, 7], 1)),  # fewer than gamma tokens left after the match
    ([9, 4, 5, 1, 4, 5], 8, 2, ([1, 4, 5], 2)),  # ... up to the end of the sequence
    ([2, 2, 2], 4, 2, ([2], 2)),  # an occurrence overlapping the tail
    ([8], 3, 2, ([], 0)),  # one token: nothing earlier
    ([4, 5, 6, 0, 5, 6, 1, 4, 5, 6], 2, 3, ([0, 5], 3)),  # a trigram beats the more recent bigram "5 6"
    ([4, 5, 6, 0, 5, 6, 1, 4, 5, 6], 2, 2, ([1, 4], 2)),  # ... which wins when max_ngram is 2
])
def test_find_draft(seq, gamma, max_ngram, expected):
    assert find_draft(seq, gamma, max_ngram) == expected


def test_find_draft_on_random_sequences():
    """Against a brute-force reading of the rule: every returned draft really follows an earlier
    occurrence of the last n tokens, no later occurrence exists, and no longer n-gram matched."""
    rng = np.random.default_rng(0)
    for _ in range(300):
        seq = rng.integers(0, 3, rng.integers(1, 20)).tolist()
        gamma, max_ngram = int(rng.integers(1, 6)), int(rng.integers(1, 4))
        draft, n = find_draft(seq, gamma, max_ngram)
        L = len(seq)
        occ = {m: [s for s in range(L - m) if seq[s : s + m] == seq[L - m :]] for m in range(1, min(max_ngram, L - 1) + 1)}
        if n == 0:
            assert draft == [] and not any(occ.values())
            continue
        assert all(not occ[m] for m in occ if m > n) and occ[n]
        assert draft == seq[max(occ[n]) + n : max(occ[n]) + n + gamma] and 1 <= len(draft) <= gamma


def test_exercise_checker_accepts_the_reference_and_rejects_the_first_occurrence(capsys):
    from notebooks.solutions.ex10_find_draft import find_draft as reference

    check_10(reference)
    assert "PASSED" in capsys.readouterr().out

    def oldest(seq, gamma, max_ngram):  # HF's choice: the first occurrence from the left
        L = len(seq)
        for n in range(min(max_ngram, L - 1), 0, -1):
            for s in range(L - n):
                if seq[s : s + n] == seq[L - n :]:
                    return seq[s + n : s + n + gamma], n
        return [], 0

    with pytest.raises(AssertionError, match="MOST RECENT"):
        check_10(oldest)

    def stub(seq, gamma, max_ngram):
        raise NotImplementedError

    check_10(stub)
    assert "not done yet" in capsys.readouterr().out


# ---------------------------------------------------------------- the rule with a one-hot q


def test_one_hot_rule_accepts_with_probability_p_and_keeps_p():
    """Synthetic p (2, 6), one copied token x = 2: accepted with probability p(x); the emitted token
    follows p exactly (after a rejection it comes from p without x). 8,000 draws, chi-square 1e-3."""
    p = torch.tensor([[0.1, 0.2, 0.35, 0.05, 0.2, 0.1], [0.3, 0.1, 0.1, 0.2, 0.2, 0.1]])
    g = torch.Generator().manual_seed(0)
    n, firsts, accepted = 8000, [], 0
    for _ in range(n):
        v = verify_copied(p, [2], 1.0, g)
        accepted += v.n_accepted
        firsts.append(2 if v.n_accepted else v.token)
        assert v.n_accepted or v.token != 2  # the residual of a one-hot q never gives x back
    assert abs(accepted / n - 0.35) < 4 * (0.35 * 0.65 / n) ** 0.5
    counts = np.bincount(firsts, minlength=6)
    assert chisquare(counts, p[0].double().numpy() * n).pvalue > 1e-3


def test_one_hot_rule_greedy_and_no_draft():
    p = torch.tensor([[0.1, 0.6, 0.3], [0.5, 0.2, 0.3], [0.2, 0.2, 0.6]])
    v = verify_copied(p, [1, 2], 0.0, None)  # x1 = argmax, x2 is not: one accepted, then the argmax
    assert (v.n_accepted, v.token, v.kind) == (1, 0, "resample")
    v = verify_copied(p, [1, 0], 0.0, None)
    assert (v.n_accepted, v.token, v.kind) == (2, 2, "bonus")
    v = verify_copied(p[:1], [], 0.0, None)
    assert (v.n_accepted, v.token, v.kind) == (0, 1, "target")


# ---------------------------------------------------------------- exactness on the tiny target


def test_greedy_equals_target_greedy(pair, prompts, encode, copy_text):
    """Free-writing prompts (few matches) and a copy prompt (many; prompt + new tokens > the sliding
    window of 64, so cache rollback past the window matters), at several gamma and n-gram sizes."""
    eos = pair.tokenizer.eos_token_id
    texts = prompts["workshop"][:2] + prompts["heldout"][:1] + [copy_text]
    seen_accept = seen_reject = seen_plain = 0
    for text in texts:
        ids = encode(text)
        ref = hf_greedy(pair.target, ids, 60, eos)
        for gamma, max_ngram in ((4, 2), (2, 1), (8, 3)) if text == copy_text else ((4, 2),):
            out = prompt_lookup_generate(pair.target, ids, max_new_tokens=60, gamma=gamma, max_ngram=max_ngram, eos_token_id=eos)
            assert out.sequences.tolist() == ref.tolist(), (text, gamma, max_ngram)
            seen_accept += out.n_accepted
            seen_reject += out.n_rejected
            seen_plain += sum(r.kind == "target" for r in out.rounds)
    assert encode(copy_text).shape[1] + 60 > pair.target.config.sliding_window
    assert seen_accept > 0 and seen_reject > 0 and seen_plain > 0


def test_copy_prompt_has_more_matches_than_free_writing(pair, encode, copy_text):
    base = "The while statement is used to"
    free = prompt_lookup_generate(pair.target, encode(base), max_new_tokens=48)
    copy = prompt_lookup_generate(pair.target, encode(copy_text), max_new_tokens=48)
    assert copy.match_rate > free.match_rate and copy.tokens_per_round > free.tokens_per_round
    assert copy_text.startswith(base) and copy_text.endswith("\n\n" + base)


def test_rounds_are_consistent(pair, encode, copy_text):
    ids = encode(copy_text)
    out = prompt_lookup_generate(pair.target, ids, max_new_tokens=50, gamma=4)
    assert isinstance(out, LookupOutput) and len(out.ngram) == len(out.rounds)
    assert sum((r.emitted for r in out.rounds), []) == out.sequences[0, ids.shape[1]:].tolist()
    seq = ids[0].tolist()
    with torch.inference_mode():
        probs = probs_from_logits(pair.target(out.sequences).logits[0], temperature=0.0)  # (L, V) one-hot argmax
    for r, n in zip(out.rounds, out.ngram):
        room = min(4, ids.shape[1] + 50 - len(seq) - 1)  # a round never drafts past max_new_tokens
        assert (r.drafted, n) == (find_draft(seq, room, 2) if room > 0 else ([], None))
        assert r.emitted == r.drafted[: r.n_accepted] + [r.token]
        assert r.kind == ("target" if not r.drafted else "bonus" if r.n_accepted == len(r.drafted) else "resample")
        assert r.q == [1.0] * len(r.drafted) and len(r.p) == len(r.drafted)
        for i, x in enumerate(r.drafted[: r.n_accepted + 1]):  # p(x) as the target gives it (one-hot at T = 0)
            assert r.p[i] == probs[len(seq) - 1 + i, x].item()
        seq += r.emitted
    assert out.ngram[-1] is None  # the last token has no room to draft
    looked = [r for r, n in zip(out.rounds, out.ngram) if n is not None]
    assert out.match_rate == pytest.approx(sum(bool(r.drafted) for r in looked) / len(looked))  # a match drafts
    assert 0 <= out.draft_time and 0 < out.target_time and out.draft_time + out.target_time < out.total_time


def test_eos_stops_like_target_greedy(pair, encode, copy_text):
    """Pretend each token of the greedy continuation is EOS in turn: output stops right after its
    first occurrence, like HF greedy, also when EOS was an accepted copied token."""
    ids = encode(copy_text)
    ref = hf_greedy(pair.target, ids, 30, None)[0, ids.shape[1]:].tolist()
    in_draft = 0
    for eos in list(dict.fromkeys(ref))[:12]:
        out = prompt_lookup_generate(pair.target, ids, max_new_tokens=30, gamma=4, eos_token_id=eos)
        assert out.sequences[0, ids.shape[1]:].tolist() == ref[: ref.index(eos) + 1]
        last = out.rounds[-1]
        in_draft += eos in last.drafted[: last.n_accepted]
    assert in_draft > 0


@pytest.mark.parametrize("n", [0, 1, 2, 5])
def test_max_new_tokens_exact(pair, encode, copy_text, n):
    ids = encode(copy_text)
    out = prompt_lookup_generate(pair.target, ids, max_new_tokens=n, gamma=4)
    assert out.sequences.shape[1] == ids.shape[1] + n
    assert out.sequences.tolist() == hf_greedy(pair.target, ids, n, None).tolist() if n else out.rounds == []


def test_one_token_prompt_has_no_match_first(pair):
    ids = torch.tensor([[pair.tokenizer.bos_token_id]])
    out = prompt_lookup_generate(pair.target, ids, max_new_tokens=20)
    assert out.rounds[0].kind == "target" and out.ngram[0] == 0
    assert out.sequences.tolist() == hf_greedy(pair.target, ids, 20, None).tolist()


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_cache_kinds_give_identical_output(pair, encode, copy_text, temperature):
    ids = encode(copy_text)
    runs = [prompt_lookup_generate(pair.target, ids, max_new_tokens=60, temperature=temperature, cache=kind,
                                   generator=torch.Generator().manual_seed(3)) for kind in ("preallocated", "dynamic")]
    assert runs[0].sequences.tolist() == runs[1].sequences.tolist()


@pytest.mark.parametrize("gamma, n_new", [(1, 2), (2, 3), (3, 3)])
def test_joint_distribution_of_the_first_two_tokens(gamma, n_new):
    """End to end at T = 1 on the toy bigram model: the prompt [0 1 2 3 4 5 0 1] ends with a bigram
    that occurs earlier, so round 1 copies [2, 3, ...] (p(2|1) = 0.4, then p(3|2) = 0.35): accepted
    often, rejected often, and after a rejection the next round looks up the resampled token (every
    unigram occurs in the prompt). gamma 1: x2 comes from a second round; gamma 2 and 3: from the same
    round after an acceptance, or from the next one. The pair (x1, x2) must follow p(x1 | 1) p(x2 | x1)
    exactly: 6,000 runs over all 36 cells, chi-square at level 1e-3; and x1 = 2 is accepted at the
    rate p(2 | 1)."""
    model, ids = BigramLM(TABLE), torch.tensor([[0, 1, 2, 3, 4, 5, 0, 1]])
    n, g = 6000, torch.Generator().manual_seed(gamma)
    counts, accepted, later_rounds_copied = np.zeros((6, 6)), 0, 0
    for _ in range(n):
        out = prompt_lookup_generate(model, ids, max_new_tokens=n_new, gamma=gamma, temperature=1.0, generator=g)
        a, b = out.sequences[0, 8:10].tolist()
        counts[a, b] += 1
        r = out.rounds[0]
        assert r.drafted == [2, 3, 4][: min(gamma, n_new - 1)]
        accepted += r.n_accepted > 0
        later_rounds_copied += any(r.drafted for r in out.rounds[1:])
    p1 = TABLE[1].double().numpy()
    assert abs(accepted / n - p1[2]) < 4 * (p1[2] * (1 - p1[2]) / n) ** 0.5
    assert later_rounds_copied > 0 or n_new - 1 <= gamma
    expected = p1[:, None] * TABLE.double().numpy()  # (6, 6): p(a | 1) p(b | a)
    expected *= n / expected.sum()  # (float32 table: rows sum to 1 up to rounding)
    assert chisquare(counts.ravel(), expected.ravel()).pvalue > 1e-3


def test_joint_distribution_with_top_k_and_the_rejected_token_outside_it():
    """top_k = 2 at T = 0.7: p(. | 1) keeps tokens 2 and 4. A copied token the warped target gives
    probability 0 (the prompt copies 5 after "3") is always rejected, and the output still follows
    the warped target exactly (4,000 runs, chi-square at level 1e-3)."""
    model, ids = BigramLM(TABLE), torch.tensor([[0, 3, 5, 1, 2, 3]])  # round 1 copies 5 after "3"
    warp = dict(temperature=0.7, top_k=2)
    P = probs_from_logits(TABLE.log(), **warp).double().numpy()  # (6, 6) warped rows
    n, g = 4000, torch.Generator().manual_seed(9)
    counts = np.zeros((6, 6))
    for _ in range(n):
        out = prompt_lookup_generate(model, ids, max_new_tokens=2, gamma=2, generator=g, **warp)
        assert out.rounds[0].drafted == [5] and out.rounds[0].n_accepted == 0  # p(5 | 3) = 0 after top-k
        a, b = out.sequences[0, 6:8].tolist()
        counts[a, b] += 1
    expected = P[3][:, None] * P
    expected *= n / expected.sum()
    keep = expected.ravel() > 0
    assert counts.ravel()[~keep].sum() == 0
    assert chisquare(counts.ravel()[keep], expected.ravel()[keep]).pvalue > 1e-3


def test_sampling_is_reproducible_with_a_generator(pair, encode, copy_text):
    ids = encode(copy_text)
    runs = [prompt_lookup_generate(pair.target, ids, max_new_tokens=30, temperature=1.0, top_k=20, top_p=0.9,
                                   generator=torch.Generator().manual_seed(7)).sequences.tolist() for _ in range(2)]
    assert runs[0] == runs[1]


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize("kwargs, err, match", [
    (dict(gamma=0), ValueError, "gamma must be an integer >= 1"),
    (dict(gamma=-2), ValueError, "gamma must be an integer >= 1"),
    (dict(gamma=2.5), TypeError, "gamma must be an integer"),
    (dict(gamma=True), TypeError, "gamma must be an integer"),
    (dict(max_ngram=0), ValueError, "max_ngram must be an integer >= 1"),
    (dict(max_ngram="2"), TypeError, "max_ngram must be an integer"),
    (dict(temperature=-1.0), ValueError, "temperature must be a finite number >= 0"),
    (dict(top_p=0.0), ValueError, "top_p must be in"),
    (dict(max_new_tokens=-1), ValueError, "max_new_tokens must be an integer >= 0"),
])
def test_bad_arguments(pair, encode, kwargs, err, match):
    args = dict(max_new_tokens=4) | kwargs
    with pytest.raises(err, match=match):
        prompt_lookup_generate(pair.target, encode("Hello"), **args)


def test_bad_models_and_inputs(pair, encode):
    with pytest.raises(TypeError, match="target must be a loaded Hugging Face causal language model"):
        prompt_lookup_generate("gemma", encode("Hello"), max_new_tokens=4)
    with pytest.raises(ValueError, match="2-D integer tensor"):
        prompt_lookup_generate(pair.target, encode("Hello")[0], max_new_tokens=4)
    with pytest.raises(ValueError, match="batch size must be 1"):
        prompt_lookup_generate(pair.target, encode("Hello").repeat(2, 1), max_new_tokens=4)
    with pytest.raises(ValueError, match="outside the model's vocabulary"):
        prompt_lookup_generate(pair.target, torch.tensor([[1, 99999]]), max_new_tokens=4)


# ---------------------------------------------------------------- measurement and command line


def test_compare_lookup_small_run(pair, tmp_path):
    from utils.results import write_json

    prompts = build_prompts(pair, "workshop", n_prompts=1, passage_tokens=32)
    res = compare_lookup(pair, prompts, max_new_tokens=8, repeats=1, warmup=0, progress=False)
    assert {(s["kind"], s["temperature"]) for s in res["summary"]} == {(k, t) for k in ("copy", "free") for t in (0.0, 1.0)}
    assert all(s["all_equal_hf"] for s in res["summary"] if s["temperature"] == 0)
    look = [s for s in res["summary"] if s["method"] == "ours_lookup"]
    assert all(0 <= s["match_rate"] <= 1 and s["tokens_per_round"] >= 1 for s in look)
    assert all(s["tokens_per_target_pass"] == 1 for s in res["summary"] if s["method"] in ("hf", "ours_plain"))
    write_json(tmp_path / "r.json", res)
    back = json.loads((tmp_path / "r.json").read_text())
    assert back["meta"]["prompts"] == prompts and back["meta"]["gamma"] == 4


def test_versus_headline_in_range_and_noise_verdict():
    row = lambda by_repeat, spread: {"speedup_vs_plain_by_repeat": by_repeat, "noise_median_spread": spread}
    plain = row([1.0, 1.0, 1.0], 0.08)
    v = versus(row([0.992, 0.9755, 0.9752], 0.05), plain)
    assert v["lo"] <= v["median"] <= v["hi"] and v["median"] == pytest.approx(0.9755)
    assert v["word"] == "within noise of" and v["noise"] == 0.08  # below 1, but not by more than the spread
    assert versus(row([1.02, 1.04, 1.02], 0.03), plain)["word"] == "within noise of"  # the plain loop's 8% spread
    assert versus(row([1.2, 1.3, 1.25], 0.03), plain)["word"] == "faster than"
    assert versus(row([0.8, 0.85, 0.9], 0.03), plain)["word"] == "slower than"
    two = versus(row([2.0, 1.9, 2.1], 0.05), row([1.0, 1.9, 0.7], 0.05))  # plain cancels: ratio per repeat
    assert two["ratios"] == pytest.approx([2.0, 1.0, 3.0]) and two["word"] == "within noise of"
    with pytest.raises(ValueError, match="same number"):
        versus(row([1.0, 1.1], 0.1), plain)


def test_cli_help_and_bad_flags_fail_before_loading(tmp_path, capsys, monkeypatch):
    import utils.models

    monkeypatch.setattr(utils.models, "load_pair", lambda *a, **k: pytest.fail("a model was loaded"))
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0 and "prompt lookup" in capsys.readouterr().out.lower()
    for flags, msg in ((["--gamma", "0"], "--gamma must be >= 1"), (["--max-ngram", "0"], "--max-ngram must be >= 1"),
                       (["--temperatures", "-1"], "--temperatures must be"), (["--methods", "hf", "nope"], "--methods must be"),
                       (["--methods", "hf"], "include ours_lookup"), (["--prompts", "nope"], "--prompts must be one of"),
                       (["--n-prompts", "999"], "is more than"), (["--pair", "nope"], "--pair must be one of")):
        with pytest.raises(SystemExit) as e:
            main(flags + ["--out", str(tmp_path)])
        assert e.value.code == 2 and msg in capsys.readouterr().err
    (tmp_path / "lookup-tiny-cpu.json").write_text("{}")
    monkeypatch.delenv("SPECDEC_PAIR", raising=False)
    with pytest.raises(SystemExit) as e:
        main(["--out", str(tmp_path), "--device", "cpu"])
    assert e.value.code == 2 and "--overwrite" in capsys.readouterr().err


def test_lookup_table_has_a_line_per_method_and_blanks_where_a_method_has_no_draft():
    """utils.lookup.lookup_table (notebook 10 section 5): HF's and the plain loop's rows leave alpha,
    match and copied empty; a lookup row fills them, in the header's columns."""
    from utils.lookup import lookup_table

    base = dict(kind="copy", temperature=0.0, tokens_per_s=90.0, speedup_vs_plain=1.0, tokens_per_target_pass=1.0,
                noise_median_spread=0.04)
    rows = [dict(base, method="ours_plain"),
            dict(base, method="ours_lookup", tokens_per_s=180.0, speedup_vs_plain=2.0, tokens_per_target_pass=2.5,
                 alpha=0.43, alpha_checked=0.71, match_rate=0.91, copied_fraction=0.6)]
    head, plain, look = lookup_table(rows).splitlines()
    assert len(plain) == len(look) == len(head)  # fixed-width columns
    assert plain.split() == ["copy", "0", "our", "plain", "loop", "90.0", "1.00x", "1.00", "4%"]
    assert look.split()[-8:] == ["2.00x", "2.50", "0.43", "/", "0.71", "91%", "60%", "4%"]
