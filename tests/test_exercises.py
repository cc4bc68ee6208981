"""The exercises' checkers (utils/exercises.py) pass every reference solution (notebooks/solutions/)
and fail deliberately wrong answers with an AssertionError that says what was wrong."""

import importlib
from pathlib import Path

import pytest
import torch

from utils import exercises as ex

ROOT = Path(__file__).resolve().parents[1]
SOLUTIONS = {  # checker -> (module in notebooks/solutions, function)
    "check_01": ("ex01_greedy_loop", "greedy_generate"),
    "check_02": ("ex02_greedy_verify", "greedy_verify"),
    "check_03": ("ex03_verify_step", "verify_step"),
    "check_04_tau": ("ex04_cost_model", "tokens_per_round"),
    "check_04_gamma": ("ex04_cost_model", "best_gamma"),
    "check_05": ("ex05_acceptance", "acceptance_rates"),
    "check_06": ("ex06_nf4_memory", "nf4_bytes"),
    "check_07": ("ex07_exponential_race", "sample_without_sync"),
    "check_08": ("ex08_heuristic_schedule", "next_gamma"),
    "check_09": ("ex09_realign", "realign"),
    "check_10": ("ex10_find_draft", "find_draft"),
    "check_11": ("ex11_exit_head", "exit_head"),
    "check_12": ("ex12_engine_flags", "sglang_chain_flags"),
}
NEEDS_PAIR = {"check_01", "check_02", "check_05", "check_08", "check_09", "check_11"}


def solution(checker):
    module, name = SOLUTIONS[checker]
    return getattr(importlib.import_module(f"notebooks.solutions.{module}"), name)


def run(checker, fn, pair):
    check = getattr(ex, checker)
    return check(fn, pair) if checker in NEEDS_PAIR else check(fn)


def fails(checker, fn, pair, *words):
    """The checker raises AssertionError, and its message holds each of words (case-insensitive)."""
    with pytest.raises(AssertionError) as err:
        run(checker, fn, pair)
    msg = str(err.value).lower()
    for w in words:
        assert w.lower() in msg, f"{w!r} not in the message:\n{err.value}"
    return msg


# ---------------------------------------------------------------------------------------------
# every solution passes, every stub is "not done yet", every solution file is where the checker says
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("checker", list(SOLUTIONS))
def test_reference_solution_passes(checker, pair, capsys):
    assert run(checker, solution(checker), pair) is None  # a notebook cell ending with it shows only the message
    out = capsys.readouterr().out
    assert out.startswith("PASSED exercise")


@pytest.mark.parametrize("checker", list(SOLUTIONS))
def test_stub_is_reported_not_failed(checker, pair, capsys):
    def stub(*args, **kwargs):
        raise NotImplementedError("your code here")

    run(checker, stub, pair)  # no exception
    out = capsys.readouterr().out
    assert "not done yet" in out and "notebooks/solutions/" in out and "PASSED" not in out


def test_hints_come_one_per_call_then_the_solution(capsys):
    for number, hints in ex.HINTS.items():
        ex._HINTS_GIVEN.pop(number, None)
        assert len(hints) >= 2
        for i in range(len(hints)):
            ex.hint(number)
            assert capsys.readouterr().out.startswith(f"Hint {i + 1} of {len(hints)} for exercise {number}")
        ex.hint(int(number))  # 3 works as well as "03"
        last = capsys.readouterr().out
        assert "reference solution" in last and (ROOT / last.split()[-1].rstrip(".")).is_file(), last
        ex._HINTS_GIVEN.pop(number, None)
    assert set(ex.HINTS) == {f"{n:02d}" for n in range(1, 13)}
    ex.hint("4b")  # the checker's own number works too
    assert capsys.readouterr().out.startswith("Hint 1 of 3 for exercise 04")
    ex._HINTS_GIVEN.pop("04", None)
    with pytest.raises(ValueError, match="'01' to '12'"):
        ex.hint("13")


@pytest.mark.parametrize("checker", list(SOLUTIONS))
def test_checker_names_an_existing_solution_file(checker):
    path = ROOT / getattr(ex, checker).solution
    assert path.is_file() and path.stem == SOLUTIONS[checker][0]


def test_an_exception_in_the_learners_code_becomes_an_assertion_with_the_input(pair):
    def broken(alpha, gamma):
        return (1 - alpha ** (gamma + 1)) / (1 - alpha)  # ZeroDivisionError at alpha = 1

    msg = fails("check_04_tau", broken, pair, "ZeroDivisionError", "alpha=1.0")
    assert "input" in msg


def test_a_function_object_is_required():
    with pytest.raises(TypeError, match="without calling it"):
        ex.check_04_tau(3.0)


# ---------------------------------------------------------------------------------------------
# 01: the greedy loop
# ---------------------------------------------------------------------------------------------


@torch.no_grad()
def loop_without_cache(model, input_ids, max_new_tokens):
    """Correct but slow: re-feeds the whole sequence every step."""
    seq = input_ids
    for _ in range(max_new_tokens):
        nxt = model(seq).logits[:, -1].argmax(-1, keepdim=True)
        seq = torch.cat([seq, nxt], 1)
    return seq


def test_01_a_loop_without_cache_fails_although_its_tokens_are_right(pair):
    fails("check_01", loop_without_cache, pair, "equal model.generate's", "no KV cache", "past_key_values")


def test_01_calling_generate_fails(pair):
    fails("check_01", lambda m, ids, n: m.generate(ids, max_new_tokens=n, do_sample=False), pair,
          "calls generate", "yourself")
    fails("check_01", lambda m, ids, n: type(m).generate(m, ids, max_new_tokens=n, do_sample=False), pair,
          "calls generate", "yourself")  # through the class, which an instance attribute would not hide
    fails("check_01", lambda m, ids, n: getattr(type(m), "generate")(m, ids, max_new_tokens=n, do_sample=False), pair,
          "calls generate")  # the name as a string
    sneaky = lambda m, ids, n: getattr(m, "".join(["gen", "erate"]))(ids, max_new_tokens=n, do_sample=False)  # noqa: E731
    fails("check_01", sneaky, pair, "model.generate", "write the loop yourself")  # hidden while the check runs
    assert "generate" not in pair.target.__dict__  # the model's own generate is back


def test_01_the_solution_is_told_it_uses_a_cache(pair, capsys):
    ex.check_01(solution("check_01"), pair)
    assert "uses a KV cache" in capsys.readouterr().out


def test_01_off_by_one_loop_fails(pair):
    def off_by_one(model, input_ids, max_new_tokens):
        return loop_without_cache(model, input_ids, max_new_tokens - 1)

    fails("check_01", off_by_one, pair, "shape", "range of your loop")


@torch.no_grad()
def test_01_wrong_position_fails_and_names_the_token(pair):
    def second_to_last(model, input_ids, max_new_tokens):
        seq = input_ids
        for _ in range(max_new_tokens):
            nxt = model(seq).logits[:, -2 if seq.shape[1] > 1 else -1].argmax(-1, keepdim=True)
            seq = torch.cat([seq, nxt], 1)
        return seq

    fails("check_01", second_to_last, pair, "differs from model.generate", "logits[0, -1]")


def test_01_token_ids_as_floats_fail(pair):
    fails("check_01", lambda m, ids, n: solution("check_01")(m, ids, n).float(), pair, "integer token ids", "float32")


def test_01_only_new_tokens_fails(pair):
    def new_only(model, input_ids, max_new_tokens):
        return loop_without_cache(model, input_ids, max_new_tokens)[:, input_ids.shape[1]:]

    fails("check_01", new_only, pair, "prompt in front")


@torch.no_grad()
def test_01_counts_tokens_however_the_model_is_called(pair):
    """model.forward (no hook of nn.Module.__call__ runs for it) re-fed the whole sequence: counted, and failed."""
    def forward_no_cache(model, input_ids, max_new_tokens):
        seq = input_ids
        for _ in range(max_new_tokens):
            seq = torch.cat([seq, model.forward(seq).logits[:, -1].argmax(-1, keepdim=True)], 1)
        return seq

    fails("check_01", forward_no_cache, pair, "no KV cache", "tokens fed in 16 passes")


@torch.no_grad()
def test_01_body_and_head_called_separately_with_a_cache_pass(pair, capsys):
    """model.model(...) then model.lm_head: the tokens are counted at the embedding, T + n - 1 of them."""
    def body_and_head(model, input_ids, max_new_tokens):
        seq, feed, cache = input_ids, input_ids, None
        for _ in range(max_new_tokens):
            out = model.model(input_ids=feed, past_key_values=cache, use_cache=True)
            cache = out.past_key_values
            feed = model.lm_head(out.last_hidden_state[:, -1:]).argmax(-1)  # (1, 1); the soft cap keeps the arg max
            seq = torch.cat([seq, feed], 1)
        return seq

    ex.check_01(body_and_head, pair)
    assert "uses a KV cache" in capsys.readouterr().out


@torch.no_grad()
def test_01_a_cache_rebuilt_every_other_step_fails(pair):
    def every_other(model, input_ids, max_new_tokens):
        seq, cache = input_ids, None
        for step in range(max_new_tokens):
            if step % 2 == 0:
                out = model(input_ids=seq, use_cache=True)  # the whole sequence again, a new cache
            else:
                out = model(input_ids=seq[:, -1:], past_key_values=cache, use_cache=True)
            cache = out.past_key_values
            seq = torch.cat([seq, out.logits[:, -1].argmax(-1, keepdim=True)], 1)
        return seq

    fails("check_01", every_other, pair, "feeds tokens the cache already holds", "tokens fed in 16 passes")


@torch.no_grad()
def test_01_one_pass_too_many_fails(pair):
    """Prefill, then max_new_tokens passes that each feed the token just chosen: the last one is wasted."""
    def extra_pass(model, input_ids, max_new_tokens):
        out = model(input_ids=input_ids, use_cache=True)
        seq = input_ids
        for _ in range(max_new_tokens):
            nxt = out.logits[:, -1].argmax(-1, keepdim=True)
            seq = torch.cat([seq, nxt], 1)
            out = model(input_ids=nxt, past_key_values=out.past_key_values, use_cache=True)
        return seq

    fails("check_01", extra_pass, pair, "one pass too many", "max_new_tokens - 1")


@torch.no_grad()
def test_01_a_loop_that_bypasses_the_embedding_is_not_counted_and_fails(pair):
    """inputs_embeds computed by calling the embedding's forward directly (no hook runs): the right tokens, nothing
    counted; the message says what is counted."""
    def own_embeddings(model, input_ids, max_new_tokens):
        embed = model.get_input_embeddings()
        seq, feed, cache = input_ids, input_ids, None
        for _ in range(max_new_tokens):
            out = model(inputs_embeds=embed.forward(feed), past_key_values=cache, use_cache=True)
            cache = out.past_key_values
            feed = out.logits[:, -1].argmax(-1, keepdim=True)
            seq = torch.cat([seq, feed], 1)
        return seq

    fails("check_01", own_embeddings, pair, "0 tokens in 0 passes", "input_ids")


def test_01_the_reference_feeds_the_prompt_once_then_one_token_per_step(pair):
    """The count check_01 demands, T + n - 1 tokens in n passes, is what the reference solution feeds."""
    ids = pair.tokenizer("The if statement is used for", return_tensors="pt").input_ids
    with ex._ForwardCounter(pair.target) as count:
        out = solution("check_01")(pair.target, ids, 5)
    assert out.shape[1] == ids.shape[1] + 5
    assert (count.tokens, count.calls) == (ids.shape[1] + 5 - 1, 5)


# ---------------------------------------------------------------------------------------------
# 02: greedy verification
# ---------------------------------------------------------------------------------------------


@torch.no_grad()
def _best(target, ids, k):
    return target(ids).logits[0, -k - 1:].argmax(-1).tolist(), ids[0, -k:].tolist()


def test_02_counting_every_match_instead_of_the_prefix_fails(pair):
    def count_all(target, ids, k):
        best, drafted = _best(target, ids, k)
        n = sum(d == b for d, b in zip(drafted, best))
        first_bad = next((i for i in range(k) if drafted[i] != best[i]), k)
        return n, best[first_bad]

    fails("check_02", count_all, pair, "accepted PREFIX")


def test_02_keeping_the_drafted_token_fails(pair):
    def keep_draft(target, ids, k):  # draft-and-score's habit: the draft's token stays
        best, drafted = _best(target, ids, k)
        n = 0
        while n < k and drafted[n] == best[n]:
            n += 1
        return n, drafted[n] if n < k else best[k]

    fails("check_02", keep_draft, pair, "its own token")


def test_02_misaligned_logits_fail(pair):
    def misaligned(target, ids, k):
        with torch.no_grad():
            best = target(ids).logits[0, -k:].argmax(-1).tolist() + [0]  # position i compared with token i
        drafted, n = ids[0, -k:].tolist(), 0
        while n < k and drafted[n] == best[n]:
            n += 1
        return n, best[n]

    fails("check_02", misaligned, pair, "expected", "got")


def test_02_one_pass_per_token_fails(pair):
    def many_passes(target, ids, k):
        with torch.no_grad():
            best = [int(target(ids[:, : ids.shape[1] - k + i]).logits[0, -1].argmax()) for i in range(k + 1)]
        drafted, n = ids[0, -k:].tolist(), 0
        while n < k and drafted[n] == best[n]:
            n += 1
        return n, best[n]

    fails("check_02", many_passes, pair, "exactly 1 target forward pass", "passes")


@torch.no_grad()
def test_02_target_forward_counts_as_one_pass(pair, capsys):
    def via_forward(target, ids, k):
        best = target.forward(ids).logits[0, -k - 1:].argmax(-1).tolist()
        drafted, n = ids[0, -k:].tolist(), 0
        while n < k and drafted[n] == best[n]:
            n += 1
        return n, best[n]

    ex.check_02(via_forward, pair)
    assert "k = 5, 3, 1" in capsys.readouterr().out


@torch.no_grad()
def test_02_a_k_fixed_at_5_fails_at_another_k(pair):
    def k_is_5(target, ids, k):
        best = target(ids).logits[0, -6:].argmax(-1).tolist()
        drafted, n = ids[0, -5:].tolist(), 0
        while n < 5 and drafted[n] == best[n]:
            n += 1
        return n, best[n]

    fails("check_02", k_is_5, pair, "k=3", "passed every case with k = 5", "use the k you are given")


# ---------------------------------------------------------------------------------------------
# 03: verify_step
# ---------------------------------------------------------------------------------------------


def resample_from_p(p, q, draft_tokens, u, generator=None):
    """The Practitioner's Guide rule: after a rejection, a fresh token from p (biased)."""
    k = draft_tokens.shape[0]
    for i in range(k):
        x = int(draft_tokens[i])
        if u[i] >= min(1.0, float(p[i, x] / q[i, x])):
            return i, int(torch.multinomial(p[i], 1, generator=generator))
    return k, int(torch.multinomial(p[k], 1, generator=generator))


def test_03_resampling_from_p_fails_the_chi_square_test(pair):
    msg = fails("check_03", resample_from_p, pair, "chi-square", "resample from p")
    assert "residual" in msg


def test_03_the_biased_rule_passes_every_fixed_case():
    """So it is the chi-square test, not a fixed case, that catches it: the fixed cases alone are not enough."""
    for _, p, q, x, u, want, _ in ex._fixed_cases():
        n, t = resample_from_p(p, q, torch.tensor(x), torch.tensor(u), torch.Generator().manual_seed(0))
        if want[0] == "reject":
            assert n == 0
        else:
            assert (n, t) == want


def test_03_wrong_ratio_fails_a_fixed_case(pair):
    def q_over_p(p, q, draft_tokens, u, generator=None):
        k = draft_tokens.shape[0]
        for i in range(k):
            x = int(draft_tokens[i])
            if u[i] >= min(1.0, float(q[i, x] / p[i, x])) if p[i, x] > 0 else True:
                r = (p[i] - q[i]).clamp_min(0)
                return i, int(torch.multinomial(r if r.sum() > 0 else p[i], 1, generator=generator))
        return k, int(torch.multinomial(p[k], 1, generator=generator))

    fails("check_03", q_over_p, pair, "u=[0.51]", "p(x)/q(x)")


def test_03_a_reversed_residual_is_blamed_on_the_token_not_the_decision(pair):
    def reversed_residual(p, q, draft_tokens, u, generator=None):
        k = draft_tokens.shape[0]
        for i in range(k):
            x = int(draft_tokens[i])
            if u[i] >= min(1.0, float(p[i, x] / q[i, x])):
                return i, int(torch.multinomial((q[i] - p[i]).clamp_min(0), 1, generator=generator))
        return k, int(torch.multinomial(p[k], 1, generator=generator))

    fails("check_03", reversed_residual, pair, "n_accepted is right", "norm(max(0, p[1] - q[1]))")


def test_03_bonus_from_the_wrong_row_fails(pair):
    def bonus_from_last_draft_row(p, q, draft_tokens, u, generator=None):
        n, t = solution("check_03")(p, q, draft_tokens, u, generator)
        k = draft_tokens.shape[0]
        return (n, int(torch.multinomial(p[k - 1], 1, generator=generator))) if n == k else (n, t)

    fails("check_03", bonus_from_last_draft_row, pair, "bonus")


def test_03_accepts_a_verification_object():
    from utils.speculative import Verification

    def as_object(p, q, draft_tokens, u, generator=None):
        n, t = solution("check_03")(p, q, draft_tokens, u, generator)
        return Verification(n, t, "bonus" if n == draft_tokens.shape[0] else "resample", [], [])

    for _, p, q, x, u, want, _ in ex._fixed_cases()[:3]:
        assert ex._verify(as_object, p, q, torch.tensor(x), torch.tensor(u), None, "") == want


def test_03_a_bonus_taken_as_the_arg_max_fails_the_bonus_chi_square_test(pair):
    """T = 0's habit: the greedy cases pass (one-hot p), the chi-square test of the bonus token does not."""
    def bonus_argmax(p, q, draft_tokens, u, generator=None):
        n, t = solution("check_03")(p, q, draft_tokens, u, generator)
        return (n, int(p[n].argmax())) if n == draft_tokens.shape[0] else (n, t)

    fails("check_03", bonus_argmax, pair, "emitted token 3 (the bonus", "the bonus is sampled from p[k]", "arg max")


def own_uniform(p, q, draft_tokens, u, generator=None):
    """Ignores u: draws its own uniforms from PyTorch's global RNG."""
    return solution("check_03")(p, q, draft_tokens, torch.rand(draft_tokens.shape[0]), generator)


def own_uniform_from_generator(p, q, draft_tokens, u, generator=None):
    """Ignores u: draws its own uniforms from the generator."""
    return solution("check_03")(p, q, draft_tokens, torch.rand(draft_tokens.shape[0], generator=generator), generator)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("rule", [own_uniform, own_uniform_from_generator])
def test_03_a_rule_that_ignores_u_fails_whatever_the_global_rng(rule, seed, pair):
    torch.manual_seed(seed)  # the state the notebook left: the checker seeds its own
    fails("check_03", rule, pair, "use the u you were given", "called 12 times")


def test_03_a_rule_that_ignores_u_and_rejects_fails_with_the_u_hint(pair):
    def reject_when_p_below_q(p, q, draft_tokens, u, generator=None):
        return solution("check_03")(p, q, draft_tokens, torch.ones_like(u) * 0.9999, generator)

    fails("check_03", reject_when_p_below_q, pair, "use the u you were given", "rejected at both")


def test_03_a_correct_rule_that_ignores_the_generator_passes_reproducibly(capsys):
    """torch.multinomial without generator= (PyTorch's global RNG) is a correct sampler: the checker seeds that RNG
    (not with the generator's seed), so the outcome does not depend on what ran before."""
    def global_rng(p, q, draft_tokens, u, generator=None):
        return solution("check_03")(p, q, draft_tokens, u, None)

    outs = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        ex.check_03(global_rng)
        outs.append(capsys.readouterr().out)
    assert outs[0].startswith("PASSED") and outs[0] == outs[1]


# ---------------------------------------------------------------------------------------------
# 04: the cost model
# ---------------------------------------------------------------------------------------------


def test_04_exponent_off_by_one_fails(pair):
    def tau_gamma(alpha, gamma):
        return float(gamma) if alpha == 1 else (1 - alpha**gamma) / (1 - alpha)

    fails("check_04_tau", tau_gamma, pair, "gamma + 1")


def test_04_maximising_tau_instead_of_the_speedup_fails(pair):
    def most_tokens(alpha, c, max_gamma=16):
        return max_gamma

    fails("check_04_gamma", most_tokens, pair, "not tau")


def test_04_range_that_misses_max_gamma_fails(pair):
    tau = solution("check_04_tau")

    def short_range(alpha, c, max_gamma=16):
        return max(range(1, max_gamma), key=lambda g: tau(alpha, g) / (g * c + 1))

    fails("check_04_gamma", short_range, pair, "best_gamma(")


def test_04_integer_tensors_and_numpy_ints_pass_floats_fail_with_the_type(pair, capsys):
    import numpy as np

    tau = solution("check_04_tau")

    def speedups(alpha, c, max_gamma):
        return [tau(alpha, g) / (g * c + 1) for g in range(1, max_gamma + 1)]

    ex.check_04_gamma(lambda a, c, m=16: torch.tensor(speedups(a, c, m)).argmax() + 1)  # a 0-d long tensor
    ex.check_04_gamma(lambda a, c, m=16: np.argmax(speedups(a, c, m)) + 1)  # a NumPy integer
    assert capsys.readouterr().out.count("PASSED exercise 04b") == 2
    fails("check_04_gamma", lambda a, c, m=16: float(solution("check_04_gamma")(a, c, m)), pair,
          "an int gamma", "got:      float", "return an int")
    fails("check_04_gamma", lambda a, c, m=16: max(speedups(a, c, m)), pair, "return an int", "not a speedup")


def test_04_tau_in_float32_passes(capsys):
    import numpy as np

    ex.check_04_tau(lambda a, g: float(g + 1) if a == 1 else
                    (1 - torch.tensor(a) ** (g + 1)) / (1 - torch.tensor(a)))  # float32 tensors
    ex.check_04_tau(lambda a, g: np.sum(np.float32(a) ** np.arange(g + 1, dtype=np.float32)))
    assert capsys.readouterr().out.count("PASSED exercise 04a") == 2


# ---------------------------------------------------------------------------------------------
# 05: acceptance rates
# ---------------------------------------------------------------------------------------------


def test_05_per_drafted_reported_as_per_checked_fails(pair):
    def same_twice(rounds):
        a = sum(r.n_accepted for r in rounds) / sum(len(r.drafted) for r in rounds)
        return a, a

    fails("check_05", same_twice, pair, "per checked", "resample")


def test_05_every_unaccepted_token_counted_as_rejected_fails(pair):
    def all_rejected(rounds):
        d, a = sum(len(r.drafted) for r in rounds), sum(r.n_accepted for r in rounds)
        return a / d, a / (a + (d - a))

    fails("check_05", all_rejected, pair, "expected")


def test_05_swapped_order_and_percentages_are_named(pair):
    ref = solution("check_05")
    fails("check_05", lambda rounds: ref(rounds)[::-1], pair, "swapped", "(per_drafted, per_checked)")
    fails("check_05", lambda rounds: tuple(100 * v for v in ref(rounds)), pair, "not percentages")


def test_05_target_rounds_are_named_in_the_hint(pair):
    def not_bonus_is_rejection(rounds):  # counts the k = 0 'target' round as a rejection
        d, a = sum(len(r.drafted) for r in rounds), sum(r.n_accepted for r in rounds)
        return a / d, a / (a + sum(r.kind != "bonus" for r in rounds))

    def per_round_mean(rounds):  # divides by len(drafted) = 0 in the 'target' round
        return sum(r.n_accepted / len(r.drafted) for r in rounds) / len(rounds), 0.0

    fails("check_05", not_bonus_is_rejection, pair, "'target' round (k = 0", "no rejection")
    fails("check_05", per_round_mean, pair, "ZeroDivisionError", "'target' round", "k = 0")


# ---------------------------------------------------------------------------------------------
# 06: NF4 memory
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("wrong, words", [
    (lambda n, double_quant=False: n * 4 / 8, ["absmax"]),
    (lambda n, double_quant=False: n * 4, ["half a byte"]),
    (lambda n, double_quant=False: n / 2 + 4 * n / 64, ["double quantization"]),
])
def test_06_wrong_memory_estimates_fail(wrong, words, pair):
    fails("check_06", wrong, pair, *words)


def test_06_a_function_without_a_default_for_double_quant_passes(pair, capsys):
    """The summary after the graded checks calls the learner's function too: always with
    double_quant= given, so a correct function without a default passes."""
    ref = solution("check_06")
    ex.check_06(lambda n, double_quant: ref(n, double_quant=double_quant))
    assert capsys.readouterr().out.startswith("PASSED")


def test_06_bitsandbytes_stores_what_the_formula_says():
    measured = ex._bnb_measured()
    if measured is None:
        pytest.skip("bitsandbytes is not installed")
    nf4 = solution("check_06")
    for dq, b in measured.items():
        assert abs(nf4(1024 * 1024, double_quant=dq) - b) <= 4  # the float32 offset of the second-level scales
        assert abs(nf4(1024 * 1024, double_quant=dq) - b) / b < ex._REL_TOL_06


@pytest.mark.parametrize("wrong, words", [
    (lambda n, double_quant=False: n / 2 + (n / 64 if double_quant else 4 * n / 64),
     ["second level", "4 * n / (64 * 256)"]),
    (lambda n, double_quant=False: n / 2 + (n / 64 + 2 * n / 64 / 256 if double_quant else 4 * n / 64),
     ["4 bytes, not 2"]),
    (lambda n, double_quant=False: 8 * (n / 2 + 4 * n / 64), ["bits"]),
])
def test_06_the_double_quantization_detail_and_units_are_graded(wrong, words, pair):
    """Forgetting the float32 per 256 blocks is 5e-4 of the total: inside a 0.1% tolerance, outside 1e-5."""
    fails("check_06", wrong, pair, *words)


# ---------------------------------------------------------------------------------------------
# 07: sampling without a host sync (the exponential race)
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("wrong, words", [
    (lambda p, e: (p * e).argmax(-1), ["chi-square", "multiplied by the noise"]),
    (lambda p, e: (p + e).argmax(-1), ["chi-square", "blurs them towards uniform"]),
    (lambda p, e: (p.log() - e).argmax(-1), ["chi-square", "gumbel"]),
    (lambda p, e: (e / p).argmax(-1), ["the arg max 2", "smallest time"]),
])
def test_07_wrong_races_fail_with_their_hint(wrong, words, pair):
    fails("check_07", wrong, pair, *words)


def test_07_own_randomness_fails_the_greedy_case(pair):
    def multinomial(probs, noise):  # a correct sampler, but it ignores the noise (and syncs on a GPU)
        return torch.multinomial(probs.reshape(-1, probs.shape[-1]), 1).reshape(probs.shape[:-1])

    fails("check_07", multinomial, pair, "noise=torch.ones_like(probs)", "torch.multinomial")


def test_07_reading_values_on_the_host_fails(pair):
    def per_row(probs, noise):  # the right race, one .item() per row
        rows = probs.reshape(-1, probs.shape[-1]) / noise.reshape(-1, noise.shape[-1])
        return torch.tensor([r.argmax().item() for r in rows]).reshape(probs.shape[:-1])

    fails("check_07", per_row, pair, "meta device", ".item()", "host")


@pytest.mark.parametrize("right", [
    lambda p, e: (p.log() - e.log()).argmax(-1),  # Gumbel-max
    lambda p, e: (e / p).argmin(-1),  # the first to finish
    lambda p, e: torch.argmax(p / e, dim=-1, keepdim=True).to(torch.int),  # gpt-fast's multinomial_sample_one_no_sync
])
def test_07_equivalent_forms_pass(right, capsys):
    ex.check_07(right)
    assert capsys.readouterr().out.startswith("PASSED")


def test_07_the_solution_is_utils_fast_rule():
    from utils import fast

    p = torch.softmax(torch.randn(8, 50, generator=torch.Generator().manual_seed(0)), -1)
    e = fast.exp_noise((8, 50), "cpu", torch.Generator().manual_seed(1))
    assert torch.equal(solution("check_07")(p, e), fast.sample_with_noise(p, e))


# ---------------------------------------------------------------------------------------------
# 08: the heuristic gamma schedule
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("wrong, words", [
    (lambda g, k, n: g + 1 if n == k else max(1, g - 1), ["n_accepted=1", "TWO more"]),
    (lambda g, k, n: g + 2 if n == g else max(1, g - 1), ["n_drafted=1", "not with gamma"]),
    (lambda g, k, n: g + 2 if n == k else g - 1, ["expected: 1", "got:      0", "max(1, gamma - 1)"]),
    (lambda g, k, n: g + 2 if n == k else max(1, g - (k - n)), ["costs exactly one"]),
])
def test_08_wrong_schedules_fail_with_their_hint(wrong, words, pair):
    fails("check_08", wrong, pair, *words)


def test_08_graded_against_transformers_own_code():
    """The cases come from transformers' update_candidate_strategy itself, and it is the loop's rule."""
    for g in range(1, 9):
        for k in range(0, g + 1):
            for n in range(k + 1):
                assert ex._hf_next_gamma(g, k, n) == ex._next_gamma_reference(g, k, n) == solution("check_08")(g, k, n)


def test_09_rows_not_shifted_fail_with_the_expected_index_and_a_hint(pair):
    """Rows left where they were (no right shift) fail on the first hand-made case."""
    import torch

    def unshifted(m, L):
        return torch.arange(L + int(m.max()))[None].repeat(len(m), 1)

    fails("check_09", unshifted, pair, "expected: [[0, 1, 2, 3, 4], [-1, 0, 1, 2, 3]]", "M - m[b]")


def test_09_a_list_with_the_right_values_fails_with_the_type_to_return(pair):
    fails("check_09", lambda m, L: solution("check_09")(m, L).tolist(), pair,
          "a torch tensor of shape (2, 5)", "got:      a list", "torch.arange")


def test_09_an_int32_tensor_passes(pair, capsys):
    ex.check_09(lambda m, L: solution("check_09")(m, L).int(), pair)
    assert capsys.readouterr().out.startswith("PASSED")


# ---------------------------------------------------------------------------------------------
# 10: the n-gram finder
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("wrong", [
    lambda seq, g, m: (lambda d, n: (d, n) if n else ([], None))(*solution("check_10")(seq, g, m)),  # ([], None)
    lambda seq, g, m: (lambda d, n: (d, n) if n else None)(*solution("check_10")(seq, g, m)),  # None
    lambda seq, g, m: dict(zip(("draft", "n"), solution("check_10")(seq, g, m))),  # a dict
    lambda seq, g, m: solution("check_10")(seq, g, m)[0],  # the draft only
])
def test_10_other_shapes_fail_with_the_shape_to_return(wrong, pair):
    fails("check_10", wrong, pair, "a pair (draft, n)", "([], 0)")


def test_10_a_tuple_or_tensor_draft_passes(capsys):
    ref = solution("check_10")
    ex.check_10(lambda seq, g, m: (tuple(ref(seq, g, m)[0]), ref(seq, g, m)[1]))
    ex.check_10(lambda seq, g, m: (torch.tensor(ref(seq, g, m)[0], dtype=torch.long), ref(seq, g, m)[1]))
    assert capsys.readouterr().out.count("PASSED exercise 10") == 2


# ---------------------------------------------------------------------------------------------
# 11: the early-exit head
# ---------------------------------------------------------------------------------------------


def test_11_changing_hidden_in_place_passes(pair, capsys):
    """The expected logits are computed before the learner's call, on a tensor the learner does not get."""
    def norm_in_place(target, hidden):
        hidden.copy_(target.model.norm(hidden))  # overwrites the caller's tensor
        return _head_after_norm(target, hidden)

    ex.check_11(norm_in_place, pair)
    assert capsys.readouterr().out.startswith("PASSED")


def _head_after_norm(target, normed):
    logits = target.lm_head(normed)
    cap = getattr(target.config, "final_logit_softcapping", None)
    return logits if cap is None else cap * torch.tanh(logits / cap)


def test_11_a_missing_soft_cap_is_named_with_getattr(pair):
    fails("check_11", lambda t, h: t.lm_head(t.model.norm(h)), pair, "soft-capping",
          "getattr(target.config, 'final_logit_softcapping', None)")


def test_11_a_clamp_or_the_attention_cap_is_named(pair):
    cfg = pair.target.config
    fails("check_11", lambda t, h: t.lm_head(t.model.norm(h)).clamp(-cfg.final_logit_softcapping, cfg.final_logit_softcapping),
          pair, "not a clamp")
    attn = cfg.attn_logit_softcapping
    fails("check_11", lambda t, h: attn * torch.tanh(t.lm_head(t.model.norm(h)) / attn), pair, "attn_logit_softcapping")


def test_11_a_correct_head_in_float32_passes_on_a_bf16_target(pair, capsys):
    """On a 16-bit target (a Gemma pair on a GPU) a correct head that computes in float32 differs from
    the model's own bf16 logits by bf16 rounding: it must pass, a missing cap must still fail."""
    import copy

    target = copy.deepcopy(pair.target).to(torch.bfloat16)
    bf16 = type("Pair", (), {"target": target})()

    def head_in_float32(t, h):
        x = t.lm_head(t.model.norm(h)).float()
        cap = t.config.final_logit_softcapping
        return x if cap is None else cap * torch.tanh(x / cap)

    ex.check_11(head_in_float32, bf16)
    assert capsys.readouterr().out.startswith("PASSED")
    fails("check_11", lambda t, h: t.lm_head(t.model.norm(h)), bf16, "soft-capping")


# ---------------------------------------------------------------------------------------------
# 12: SGLang's flags for a chain
# ---------------------------------------------------------------------------------------------


def _flags_12(change):
    """The reference flags, changed by change(method, gamma, flags) (a list, edited in place)."""
    def fn(method, gamma, draft=None):
        flags = list(solution("check_12")(method, gamma, draft))
        change(method, gamma, flags)
        return flags
    return fn


def _set(flags, flag, value):
    flags[flags.index(flag) + 1] = value


def _drop(flags, flag):
    i = flags.index(flag)
    del flags[i:i + 2]


@pytest.mark.parametrize("wrong, words", [
    # gamma draft tokens: the root (the last verified token) forgotten
    (_flags_12(lambda m, g, f: _set(f, "--speculative-num-draft-tokens", str(g))), ["including its root", "gamma + 1"]),
    # NGRAM with SGLang's default breadth: a tree, not a chain
    (_flags_12(lambda m, g, f: m == "ngram" and [_drop(f, "--speculative-ngram-min-bfs-breadth"),
                                                  _drop(f, "--speculative-ngram-max-bfs-breadth")]),
     ["'ngram'", "tree", "--speculative-ngram-max-bfs-breadth 1"]),
    # the draft model without topk 1: a tree
    (_flags_12(lambda m, g, f: m == "draft" and _drop(f, "--speculative-eagle-topk")), ["topk", "chain"]),
    # EAGLE's algorithm for a plain draft model
    (_flags_12(lambda m, g, f: m == "draft" and _set(f, "--speculative-algorithm", "EAGLE")), ["STANDALONE"]),
])
def test_12_wrong_flags_fail_with_their_hint(wrong, words, pair):
    fails("check_12", wrong, pair, *words)


def test_12_order_and_form_do_not_matter(capsys):
    """Flags in another order, ints for values, one command-line string, or --flag=value: all read the same."""
    import shlex

    ref = solution("check_12")

    def reordered(method, gamma, draft=None):
        f = ref(method, gamma, draft)
        pairs = list(zip(f[::2], f[1::2]))[::-1]
        return [int(v) if v.isdigit() else v for kv in pairs for v in kv]

    def with_equals(method, gamma, draft=None):  # "--flag=value", as argparse accepts
        f = ref(method, gamma, draft)
        return [f"{k}={v}" for k, v in zip(f[::2], f[1::2])]

    ex.check_12(reordered)
    ex.check_12(lambda m, g, d=None: shlex.join(ref(m, g, d)))
    ex.check_12(with_equals)
    assert capsys.readouterr().out.count("PASSED exercise 12") == 3


def test_12_flags_that_cannot_be_read_fail_with_the_form_to_use(pair):
    fails("check_12", lambda m, g, d=None: {"--speculative-algorithm": "NGRAM"}, pair, "list of strings")
    fails("check_12", lambda m, g, d=None: ["--speculative-algorithm", "NGRAM", "--speculative-num-draft-tokens"],
          pair, "followed by its value")


def test_09_on_a_16_bit_pair_grades_against_the_loop_with_the_reference_index(capsys):
    """In bf16 a batch can flip a near-tie against one row alone with nothing wrong, so a right index
    must not fail there: the yardstick becomes the same batched loop with the reference index."""
    import torch

    from utils.models import load_pair

    pair16 = load_pair("tiny", dtype=torch.bfloat16)
    ex.check_09(solution("check_09"), pair16)
    out = capsys.readouterr().out
    assert out.startswith("PASSED") and "equal to the loop with the reference index (torch.bfloat16" in out


def test_the_checkers_refuse_the_library_doing_the_exercise():
    """An exercise whose piece the library already has (the checker grades against it) is not done by
    passing the library's function, or by a function that calls it."""
    from utils import exercises
    from utils.lookup import find_draft

    def wrapper(seq, gamma, max_ngram):
        return find_draft(seq, gamma, max_ngram)

    def nested(p, q, draft_tokens, u, generator=None):
        def inner():
            from utils.speculative import verify_step
            return verify_step(p, q, draft_tokens, generator=generator)
        return inner()

    for check, fn, says in ((exercises.check_10, find_draft, "the library's own find_draft"),
                            (exercises.check_10, wrapper, "your function calls find_draft"),
                            (exercises.check_03, nested, "your function calls verify_step")):
        with pytest.raises(AssertionError, match=says):
            check(fn)


def test_the_shortcut_guard_resolves_what_a_name_holds():
    """The guard looks at what a function's names hold, not only at how they are spelled: another name
    for the library's function, a closure, functools.partial are refused; the learner's own function
    that shares the library's name (the notebook's stub is named like it) may call itself."""
    import functools

    from utils import exercises
    from utils.lookup import find_draft as fd
    from utils.models import nf4_bytes as library_nf4

    def aliased(seq, gamma, max_ngram):
        return fd(seq, gamma, max_ngram)

    def closure():
        f = fd

        def inner(seq, gamma, max_ngram):
            return f(seq, gamma, max_ngram)
        return inner

    def helper(seq, gamma, max_ngram):  # a helper of the learner's that calls the library
        return aliased(seq, gamma, max_ngram)

    for fn in (aliased, closure(), helper, functools.partial(fd), functools.partial(lambda f, *a: f(*a), fd)):
        with pytest.raises(AssertionError, match="find_draft|library's own|functools.partial around"):
            exercises.check_10(fn)
    glob = {"find_draft": fd, "sorted": sorted}  # module-level helpers, as a notebook defines them
    exec("def h(s, g, m):\n    return find_draft(s, g, m)\n"
         "def f(s, g, m):\n    return h(s, g, m)\n", glob)
    with pytest.raises(AssertionError, match="calls find_draft"):
        exercises.check_10(glob["f"])
    scope = {"math": __import__("math")}
    exec("def nf4_bytes(n, double_quant=False):\n"
         "    if double_quant:\n"
         "        return nf4_bytes(n) - 4 * n / 64 + n / 64 + 4 * n / (64 * 256)\n"
         "    return n / 2 + 4 * n / 64\n", scope)
    exercises.check_06(scope["nf4_bytes"])  # recursion into itself, not the library's nf4_bytes: passes
    scope["helper"] = library_nf4
    exec("def via_alias(n, double_quant=False):\n    return helper(n, double_quant)\n", scope)
    with pytest.raises(AssertionError, match=r"calls helper \(the library's nf4_bytes\)"):
        exercises.check_06(scope["via_alias"])


def test_02_placeholder_or_missing_bonus_token_is_graded_not_a_crash(pair):
    """All k accepted: the token is the bonus. A placeholder (-1, a huge id, None) is graded with that hint."""
    from notebooks.solutions.ex02_greedy_verify import greedy_verify

    def placeholder(value):
        def fn(target, ids, k):
            n, t = greedy_verify(target, ids, k)
            return (n, value) if n == k else (n, t)
        return fn

    for value in (-1, 10**6):
        fails("check_02", placeholder(value), pair, "token id in [0,", "never a placeholder")
    fails("check_02", placeholder(None), pair, "bonus", "logits[0, -1]")

    def bonus_counted(target, ids, k):
        n, t = greedy_verify(target, ids, k)
        return (n + 1 if n == k else n), t

    fails("check_02", bonus_counted, pair, "the bonus token is not a drafted token")


def test_03_off_by_one_count_and_an_unclamped_residual_get_their_own_hints(pair):
    from notebooks.solutions.ex03_verify_step import verify_step

    def counts_the_replacement(p, q, draft_tokens, u, generator=None):
        n, t = verify_step(p, q, draft_tokens, u, generator=generator)
        return (n + 1 if n < len(draft_tokens) else n), t

    fails("check_03", counts_the_replacement, pair, "not the token the target puts at the rejected position")

    def unclamped(p, q, draft_tokens, u, generator=None):
        for i, x in enumerate(draft_tokens.tolist()):
            if u[i] >= min(1.0, float(p[i, x] / q[i, x])):
                r = p[i] - q[i]
                return i, int(torch.multinomial(r / r.sum(), 1, generator=generator))
        return len(draft_tokens), int(torch.multinomial(p[-1], 1, generator=generator))

    fails("check_03", unclamped, pair, "torch.clamp(p - q, min=0)")


def test_05_per_round_means_and_zero_denominators_fail(pair):
    def mean_of_rates(rounds):  # right when every round drafts the same number of tokens
        from notebooks.solutions.ex05_acceptance import acceptance_rates
        done = [r for r in rounds if r.drafted]
        return sum(r.n_accepted / len(r.drafted) for r in done) / len(done), acceptance_rates(rounds)[1]

    fails("check_05", mean_of_rates, pair, "unequal length")

    def zero_when_empty(rounds):
        from notebooks.solutions.ex05_acceptance import acceptance_rates
        if not any(r.drafted for r in rounds):
            return 0.0, 0.0
        return acceptance_rates(rounds)

    fails("check_05", zero_when_empty, pair, "float('nan')")


def test_06_a_string_is_named(pair):
    fails("check_06", lambda n, double_quant=False: str(round(n / 2 + 4 * n / 64)), pair, "not a string")


def test_11_a_hard_coded_cap_fails_when_the_model_has_another(pair):
    fails("check_11", lambda t, h: 30.0 * torch.tanh(t.lm_head(t.model.norm(h)) / 30.0), pair,
          "final_logit_softcapping set to None", "hard-coded 30")
    assert pair.target.config.final_logit_softcapping == 30.0  # restored


def test_12_an_unbalanced_quote_is_graded_not_a_crash(pair):
    fails("check_12", lambda method, gamma, draft: "--speculative-algorithm 'NGRAM", pair, "cannot be split")
