"""Graded exercises: one or more per notebook. The learner writes a function, a checker grades it.

    from utils.exercises import check_03
    check_03(my_verify_step)   # prints "PASSED ...", or raises AssertionError saying what was wrong

checker         notebook  the learner writes                                           solution (notebooks/solutions/)
check_01        01        greedy_generate(model, input_ids, n): the KV-cache loop      ex01_greedy_loop.py
check_02        02        greedy_verify(target, ids, k): verification in one pass      ex02_greedy_verify.py
check_03        03        my_verify_step(p, q, draft_tokens, u, generator)             ex03_verify_step.py
check_04_tau    04        tokens_per_round(alpha, gamma)                               ex04_cost_model.py
check_04_gamma  04        best_gamma(alpha, c, max_gamma)                              ex04_cost_model.py
check_05        05        acceptance_rates(rounds): per drafted and per checked token  ex05_acceptance.py
check_06        06        nf4_bytes(n_params, double_quant): 4-bit weight memory       ex06_nf4_memory.py
check_07        07        sample_without_sync(probs, noise): the exponential race      ex07_exponential_race.py
check_08        08        next_gamma(gamma, n_drafted, n_accepted): HF's heuristic     ex08_heuristic_schedule.py
check_09        09        realign(m, L): where each column of a ragged batch comes from ex09_realign.py
check_10        10        my_find_draft(seq, gamma, max_ngram): the prompt-lookup n-gram draft ex10_find_draft.py
check_11        11        exit_head(target, hidden): the early-exit head (norm, LM head, cap) ex11_exit_head.py
check_12        12        sglang_chain_flags(method, gamma, draft): SGLang's flags for a chain ex12_engine_flags.py

Every checker prints "PASSED exercise ..." when the function passes, prints a friendly note (and
raises nothing) while the function is still the notebook's stub (it raises NotImplementedError),
and raises AssertionError otherwise: which input, what was expected, what came back, and a hint.
Stuck before a first attempt? `hint("03")` prints the next of a few hints (steps, not code), one
more on each call; the reference solution comes last.
Checkers return None, so a notebook cell that ends with one shows only the message. The checks
are the project's own kind of tests: token for token against Hugging Face's `generate`, chi-square
goodness of fit with fixed seeds, closed forms against `utils.theory`, memory against what
bitsandbytes really stores. Each runs within a minute on a laptop CPU with the shipped tiny pair (most in
seconds; 01 and 05, which generate text, take longest).
"""

from __future__ import annotations

import functools
import math
import numbers
import types

import numpy as np
import torch

from .models import BNB_BLOCK, BNB_BLOCK2, nf4_bytes
from .sampling import seeded

SOLUTIONS = "notebooks/solutions"


class _NotDone(Exception):
    """The learner's function still raises NotImplementedError."""


_ATTRIBUTE_OPS = {"LOAD_ATTR", "LOAD_METHOD", "IMPORT_FROM", "IMPORT_NAME", "LOAD_SUPER_ATTR"}
_GLOBAL_OPS = {"LOAD_GLOBAL", "LOAD_NAME"}
_BY_NAME = {"getattr", "attrgetter", "methodcaller", "__getattribute__"}  # what turns a string into an attribute


def _names_used(fn) -> tuple[set[str], set[str]]:
    """(attribute, imported and string-constant names, global names) that a function's code refers to,
    nested functions included. An attribute name (`lookup.find_draft`, `from utils.lookup import
    find_draft`, `getattr(model, "generate")`) is taken at its word; a global name is resolved by the
    caller, so that the learner's own function of the same name (a stub named like the library's, which
    may call itself) is not mistaken for the library's."""
    import dis

    code = getattr(fn, "__code__", None)
    attrs, globals_, strings, todo = set(), set(), set(), [code] if code is not None else []
    while todo:
        c = todo.pop()
        for ins in dis.get_instructions(c):
            if ins.opname in _ATTRIBUTE_OPS and isinstance(ins.argval, str):
                attrs |= set(ins.argval.split("."))
            elif ins.opname in _GLOBAL_OPS and isinstance(ins.argval, str):
                globals_.add(ins.argval)
        strings |= {k for k in c.co_consts if isinstance(k, str) and k.isidentifier()}
        todo += [k for k in c.co_consts if isinstance(k, types.CodeType)]
    if _BY_NAME & (attrs | globals_):  # a name in a string counts only where something looks names up
        attrs |= strings
    return attrs, globals_


def _shortcuts_used(fn, shortcuts, seen: set) -> set[str]:
    """The shortcut functions fn reaches: by attribute or imported name, through a global or closure
    variable holding one (under any name), and through the learner's own helper functions (functions
    of fn's module that it calls), followed once each."""
    seen.add(id(fn))
    attrs, names = _names_used(fn)
    scope = getattr(fn, "__globals__", {})
    cells = [c.cell_contents for c in (getattr(fn, "__closure__", None) or ()) if _cell_filled(c)]
    used = attrs & set(shortcuts)
    used |= {n if n == getattr(scope.get(n), "__name__", n) else f"{n} (the library's {scope[n].__name__})"
             for n in names if _library(scope.get(n), shortcuts) or (n in shortcuts and n not in scope)}
    used |= {o.__name__ for o in cells if _library(o, shortcuts)}
    helpers = [scope.get(n) for n in names] + cells  # the learner's own functions it calls
    for h in helpers:
        if (isinstance(h, types.FunctionType) and id(h) not in seen
                and getattr(h, "__module__", None) == getattr(fn, "__module__", None)):
            used |= _shortcuts_used(h, shortcuts, seen)
    return used


def _from_library(obj) -> bool:
    """Whether obj was defined in this package (utils or one of its modules)."""
    module = getattr(obj, "__module__", None) or ""
    return module == "utils" or module.startswith("utils.")


def _library(obj, shortcuts) -> bool:
    """Whether obj is one of the library's own shortcut functions (under whatever name it is held)."""
    return _from_library(obj) and getattr(obj, "__name__", None) in shortcuts


def _refuse_shortcuts(number: str, fn, shortcuts) -> None:
    """An exercise asks for a piece the library already has (the checker grades against it): passing
    the library's function, or a function that calls it (by its name, another name, an attribute, a
    closure, functools.partial or a helper of the learner's), would pass without the learner's own code."""
    while isinstance(fn, functools.partial):
        if any(_library(a, shortcuts) for a in (*fn.args, *fn.keywords.values())):
            break
        fn = fn.func
    if isinstance(fn, functools.partial):
        raise AssertionError(
            f"\nExercise {number}: that is a functools.partial around the library's own function, the one the checker "
            f"compares with: write your version in the exercise cell and pass that.")
    if _from_library(fn):
        raise AssertionError(
            f"\nExercise {number}: that is the library's own {getattr(fn, '__name__', 'function')} ({fn.__module__}), the one "
            f"the checker compares with: write your version in the exercise cell and pass that.")
    used = _shortcuts_used(fn, shortcuts, set())
    if used:
        raise AssertionError(
            f"\nExercise {number}: your function calls {', '.join(sorted(used))}, which already does what the exercise "
            f"asks (the checker compares with it), so it would pass without the part you are meant to write: write that "
            f"part yourself. (Stuck? hint(\"{number[:2]}\") gives a step at a time.)")


def _cell_filled(cell) -> bool:
    try:
        cell.cell_contents
    except ValueError:  # an empty cell: a closure variable not assigned yet
        return False
    return True


def _checker(number: str, title: str, solution: str, shortcuts=()):
    """Wrap a check: print PASSED with its summary, or a note for a stub; AssertionErrors go through.
    shortcuts: names of the library functions that do the exercise's work (the learner's function may
    not call them)."""

    def wrap(check):
        @functools.wraps(check)
        def run(fn, *args, **kwargs):
            if not callable(fn):
                raise TypeError(f"check_{number} takes your function itself (got {type(fn).__name__}): "
                                f"pass the name without calling it, e.g. check_{number}(my_function).")
            _refuse_shortcuts(number, fn, shortcuts)
            try:
                summary = check(fn, *args, **kwargs)
            except _NotDone:
                print(f"Exercise {number} ({title}): not done yet. Your function still raises NotImplementedError: "
                      f"fill it in and run the cell again. (Stuck? hint(\"{number[:2]}\") gives a hint, one more per "
                      f"call; the reference solution is {SOLUTIONS}/{solution}.)")
                return None
            print(f"PASSED exercise {number} ({title}). {summary}")
            return None

        run.solution = f"{SOLUTIONS}/{solution}"
        return run

    return wrap


# Hints before a first attempt: steps, not code, from the first nudge to nearly the answer.
HINTS = {
    "01": ["Keep three things: the sequence so far, what to feed next, and the cache (None at first).",
           "Each pass: model(input_ids=feed, past_key_values=cache, use_cache=True); the new cache is "
           "out.past_key_values.",
           "The next token is the arg max of the LAST position's logits, out.logits[:, -1]; keep it 2-D, (1, 1).",
           "Append it to the sequence (torch.cat on dim 1), and feed only that token next time: the cache "
           "holds the rest."],
    "02": ["One forward pass over all of ids: the logits at position i predict token i + 1.",
           "The last k + 1 positions' logits (logits[0, -k - 1:]) hold the target's choice for each drafted "
           "token and, last, for the token after them.",
           "Count drafted tokens from the left while each equals the target's arg max at its position; stop "
           "at the first that does not.",
           "Return that count n and the target's arg max at position n of those k + 1 (a replacement, or the "
           "bonus when n = k)."],
    "03": ["Walk the k drafted tokens left to right; for token x_i compare u[i] with min(1, p[i, x_i] / q[i, x_i]).",
           "u[i] below it: accept and go on. Otherwise the round ends at i: return (i, a replacement).",
           "The replacement is sampled from max(0, p[i] - q[i]), normalised to sum to 1 "
           "(torch.multinomial(..., 1, generator=generator)).",
           "If all k were accepted, the extra (bonus) token is sampled from p[k], the last row: return (k, it)."],
    "04": ["tokens_per_round: a geometric series, 1 + alpha + ... + alpha^gamma; mind alpha = 1.",
           "In closed form (1 - alpha^(gamma+1)) / (1 - alpha), and gamma + 1 when alpha = 1.",
           "best_gamma: try every gamma from 1 to max_gamma and keep the one with the largest "
           "tokens_per_round(alpha, gamma) / (gamma * c + 1)."],
    "05": ["Per drafted token: accepted tokens over all drafted tokens (len(r.drafted) summed over rounds).",
           "Per checked token: a round that ended in a rejection checked one more token, the rejected one; "
           "the drafted tokens after it were never checked.",
           "So per checked: accepted / (accepted + the number of rounds whose kind is 'resample'). Return NaN "
           "where a denominator is 0."],
    "06": ["Three parts: the 4-bit weights, one scale per block of 64 weights, and (double quant) a second level.",
           "4 bits = half a byte per weight; a plain scale (absmax) is a float32, 4 bytes per block.",
           "Double quantization stores each block's scale in 8 bits (1 byte) and adds one float32 per 256 blocks."],
    "07": ["Only tensor operations: no .item(), no Python loop over tokens, no torch.multinomial.",
           "Think of a race: token i finishes at time noise_i / probs_i, an exponential time with rate probs_i.",
           "The first to finish wins with probability probs_i: return the arg min of noise / probs over the last "
           "dimension (the arg max of probs / noise)."],
    "08": ["Two cases: every drafted token accepted, or not.",
           "All accepted (n_accepted == n_drafted): the next round may draft 2 more. Otherwise 1 fewer, but never "
           "below 1."],
    "09": ["Row b keeps m[b] new columns; the longest row keeps M = max(m). Every row must end in the same column.",
           "So row b moves right by M - m[b]: its new column j comes from old column j - (M - m[b]).",
           "Return that index for every j in 0 .. L + M - 1 (one row per b); entries below 0 are padding."],
    "10": ["Try the longest n-gram first: n from max_ngram down to 1 (and less than len(seq)).",
           "Look for the last n tokens of seq earlier in seq, with at least one token after the occurrence.",
           "Take the most recent such occurrence and return up to gamma tokens that follow it, and n; ([], 0) "
           "when nothing recurs."],
    "11": ["The last layer's output goes through the model's final norm, then its LM head. Do the same to any layer's.",
           "target.model.norm, then target.lm_head.",
           "Gemma2 then soft-caps the logits: cap * tanh(logits / cap), cap = "
           "getattr(target.config, 'final_logit_softcapping', None) (none: return the logits as they are)."],
    "12": ["SGLang counts the draft tree's nodes including its root (the last verified token).",
           "gamma drafted tokens in a chain: --speculative-num-draft-tokens gamma + 1, and one branch per step.",
           "A draft model: --speculative-algorithm STANDALONE with its path, --speculative-num-steps gamma and "
           "--speculative-eagle-topk 1. N-gram: NGRAM with min and max BFS breadth 1."],
}
_HINTS_GIVEN: dict[str, int] = {}


def hint(number: str) -> None:
    """Print the next hint for exercise `number` ("01" .. "12"): one more each call, then the solution's path."""
    number = "".join(ch for ch in str(number) if ch.isdigit()).zfill(2)  # 3, "03", "04b" -> "03", "04"
    if number not in HINTS:
        raise ValueError(f"no exercise {number!r}: hint takes '01' to '12'")
    i = _HINTS_GIVEN.get(number, 0)
    hints = HINTS[number]
    if i < len(hints):
        print(f"Hint {i + 1} of {len(hints)} for exercise {number}: {hints[i]}")
        _HINTS_GIVEN[number] = i + 1
    else:
        print(f"No more hints for exercise {number}: the reference solution is {SOLUTIONS}/{globals()['_S' + number]}.")


def _fail(number: str, solution: str, what: str, expected, got, hint: str) -> AssertionError:
    return AssertionError(
        f"\nExercise {number}: {what}\n  expected: {expected}\n  got:      {got}\n  hint: {hint}\n"
        f"  (reference solution, once you have tried: {SOLUTIONS}/{solution})"
    )


def _call(fn, number: str, what: str, *args, **kwargs):
    """Call the learner's function; a stub ends the check quietly, any other exception becomes an
    AssertionError that says which input caused it."""
    try:
        return fn(*args, **kwargs)
    except NotImplementedError:
        raise _NotDone from None
    except Exception as e:  # noqa: BLE001 - the learner's code may raise anything; report it
        hint = next((h for num, text, h in _ERROR_HINTS if num == number and text in str(e)), "")
        raise AssertionError(
            f"\nExercise {number}: your function raised {type(e).__name__}: {e}\n  input: {what}"
            + (f"\n  hint: {hint}" if hint else "")) from e


# Errors a learner's function commonly raises, and what they usually mean here.
_ERROR_HINTS = [  # (exercise, text in the error, hint)
    ("03", "element < 0", "torch.multinomial was given a negative or NaN probability: p - q is negative wherever "
                          "q > p, so the residual is max(0, p - q) (torch.clamp(p - q, min=0)), normalised to sum to 1."),
]


_PAIR = None


def _pair(pair=None):
    """The pair to check on: the one given (the notebook's), else the tiny pair on the CPU (loaded once)."""
    global _PAIR
    if pair is not None:
        return pair
    if _PAIR is None:
        from .models import load_pair

        _PAIR = load_pair("tiny", device="cpu")
    return _PAIR


class _ForwardCounter:
    """Counts a model's forward passes and the tokens fed to them, while active: a forward hook on its
    input embedding, which every way of running the model goes through (model(...), model.forward(...),
    model.model(...) then lm_head). One embedding call is one pass; its input (B, t) is t tokens per row."""

    def __init__(self, model):
        self.model, self.calls, self.tokens = model, 0, 0

    def _hook(self, module, args, output):
        ids = args[0] if args else None
        self.calls += 1
        self.tokens += int(ids.shape[-1]) if isinstance(ids, torch.Tensor) and ids.dim() >= 1 else 0

    def __enter__(self):
        self.handle = self.model.get_input_embeddings().register_forward_hook(self._hook)
        return self

    def __exit__(self, *exc):
        self.handle.remove()


class _no_generate:
    """While active, model.generate raises: check_01 grades a loop written by hand."""

    def __init__(self, model):
        self.model = model

    def _refuse(self, *args, **kwargs):
        raise RuntimeError("model.generate is what your loop is compared with: write the loop yourself, calling "
                           "model(input_ids=..., past_key_values=..., use_cache=True) once per new token")

    def __enter__(self):
        self.model.generate = self._refuse  # an instance attribute hides the class's method
        return self

    def __exit__(self, *exc):
        del self.model.generate


def _number(x):
    """A one-element tensor or array as a Python number; anything else unchanged."""
    if isinstance(x, torch.Tensor) and x.numel() == 1:
        return x.item()
    if isinstance(x, np.ndarray) and x.size == 1:
        return x.item()
    return x


def _int_or_none(x):
    """x as an int (a Python or NumPy integer, a one-element tensor), or None."""
    try:
        return int(_number(x))
    except (TypeError, ValueError, RuntimeError):
        return None


def _decode(tok, ids) -> str:
    return repr(tok.decode(ids))


# ----------------------------------------------------------------------------------------------
# 01 · the KV-cache greedy loop, token for token against model.generate
# ----------------------------------------------------------------------------------------------

_S01 = "ex01_greedy_loop.py"


@_checker("01", "the greedy decoding loop", _S01, shortcuts=("autoregressive_generate", "generate"))
def check_01(fn, pair=None) -> str:
    """fn(model, input_ids, max_new_tokens) -> (1, T + max_new_tokens): prompt and greedy tokens.

    Graded on the pair's target: token for token equal to `model.generate(do_sample=False)` on three
    workshop prompts (one long enough to pass the tiny pair's sliding window of 64 tokens), with the
    tokens fed to the model counted at its input embedding (so model.forward or model.model + lm_head
    count too): a loop with a KV cache feeds T + max_new_tokens - 1 tokens (the prompt once, then every
    new token but the last). Any other count fails after the tokens are confirmed (no cache, a cache
    rebuilt now and then, one pass too many), and calling `model.generate` is not allowed.
    """
    from .models import load_prompts

    pair = _pair(pair)
    model, tok = pair.target, pair.tokenizer
    cases = list(zip(load_prompts()[:3], (16, 16, 64)))  # (prompt, new tokens)
    fed_calls = []  # (tokens fed, passes) per prompt
    for prompt, n in cases:
        ids = tok(prompt, return_tensors="pt").input_ids.to(pair.device)  # (1, T)
        T = ids.shape[1]
        with torch.inference_mode():
            ref = model.generate(ids, max_new_tokens=n, do_sample=False, pad_token_id=tok.pad_token_id)  # (1, T + n)
        with _ForwardCounter(model) as count, _no_generate(model):
            got = _call(fn, "01", f"prompt {prompt!r}, max_new_tokens={n}", model, ids.clone(), n)
        fed_calls.append((count.tokens, count.calls))
        what = f"greedy_generate(model, <{prompt!r}: {T} tokens>, max_new_tokens={n})"
        if not isinstance(got, torch.Tensor) or got.dim() != 2 or got.shape[0] != 1:
            shape = tuple(got.shape) if isinstance(got, torch.Tensor) else type(got).__name__
            raise _fail("01", _S01, what, f"a (1, {T + n}) tensor of token ids", shape,
                        "return the whole sequence, prompt included, shaped (1, T + max_new_tokens), as generate does.")
        if got.is_floating_point() or got.is_complex() or got.dtype == torch.bool:
            raise _fail("01", _S01, what, f"integer token ids ({ref.dtype})", f"a {got.dtype} tensor",
                        "token ids are integers: keep the argmax's dtype (torch.long), do not turn them into floats.")
        got = got.to(ref.device)
        if got.shape[1] == n and T != n:
            raise _fail("01", _S01, what, f"shape (1, {T + n})", tuple(got.shape),
                        "you returned only the new tokens: put the prompt in front (torch.cat).")
        stopped_at_eos = ref.shape[1] < T + n  # generate stops at EOS; a loop that goes on is fine
        if got.shape[1] != T + n and not (stopped_at_eos and got.shape[1] >= ref.shape[1]):
            hint = (f"you produced {got.shape[1] - T} new tokens instead of {n}: check the range of your loop "
                    "(one new token per iteration, max_new_tokens iterations).")
            raise _fail("01", _S01, what, f"shape (1, {T + n})", tuple(got.shape), hint)
        if not torch.equal(got[:, :T], ref[:, :T]):
            raise _fail("01", _S01, what, "the prompt's tokens first", got[0, :T].tolist(),
                        "start from input_ids and append to it; do not change the prompt.")
        m = ref.shape[1]
        if not torch.equal(got[:, :m], ref):
            i = int((got[0, :m] != ref[0]).nonzero()[0])
            raise _fail("01", _S01, f"{what}: new token {i - T} differs from model.generate",
                        f"{_decode(tok, ref[0, T:i + 1])} (id {int(ref[0, i])})",
                        f"{_decode(tok, got[0, T:i + 1])} (id {int(got[0, i])})",
                        "the next token is the arg max of the logits at the LAST position (logits[0, -1]); with a "
                        "cache, feed only the newest token and pass the past_key_values the previous call returned.")
        _check_cache_01(T, got.shape[1] - T, count, what)
    fed, calls = fed_calls[0]
    return (f"{len(cases)} prompts, {sum(n for _, n in cases)} new tokens, identical to model.generate. Your loop uses "
            f"a KV cache: for the first prompt it fed the model {fed} tokens in {calls} passes (the prompt once, then "
            f"one token per step).")


def _check_cache_01(T: int, new: int, count: _ForwardCounter, what: str) -> None:
    """A loop with a KV cache feeds the prompt once, then each new token but the last: T + new - 1 tokens
    in `new` passes (the last token is appended, never fed). Anything else fails with what it looks like."""
    with_cache, no_cache = T + new - 1, sum(T + i for i in range(new))
    if count.tokens == with_cache:
        return
    expected = f"{with_cache} tokens fed in {new} passes (the prompt once, then one new token per step)"
    got = f"{count.tokens} tokens in {count.calls} passes"
    if count.calls == 0:
        raise _fail("01", _S01, f"{what}: your tokens are right, but no token went through the model's input embedding",
                    expected, got,
                    "the checker counts the tokens that go through the model's input embedding "
                    "(model.get_input_embeddings()): run the model on token ids, model(input_ids=..., "
                    "past_key_values=..., use_cache=True), not on embeddings you looked up yourself.")
    if count.tokens == no_cache:
        raise _fail("01", _S01, f"{what}: your tokens equal model.generate's, but the loop has no KV cache", expected,
                    f"{got} (the whole sequence again at every step)",
                    "keep the past_key_values each call returns, pass them to the next call (use_cache=True), and "
                    "feed only the newest token: the work per step then stays flat as the text grows.")
    if count.tokens == with_cache + 1 and count.calls == new + 1:
        raise _fail("01", _S01, f"{what}: your tokens are right, but the loop runs one pass too many", expected, got,
                    "the last new token is appended and returned without being fed: the prompt's pass gives the "
                    "first new token, and max_new_tokens - 1 more passes of one token each give the rest.")
    if count.tokens < with_cache:
        raise _fail("01", _S01, f"{what}: your tokens are right, but fewer tokens went through the model than it needs",
                    expected, got,
                    "the checker counts the tokens that go through the model's input embedding: run every pass as "
                    "model(input_ids=..., past_key_values=..., use_cache=True), the prompt once, then the newest "
                    "token.")
    raise _fail("01", _S01, f"{what}: your tokens are right, but the loop feeds tokens the cache already holds",
                expected, got,
                "feed the prompt once, then ONLY the newest token with the past_key_values the previous call "
                "returned; re-feeding earlier tokens (rebuilding the cache, or a call without past_key_values) "
                "repeats work the cache was there to save.")


# ----------------------------------------------------------------------------------------------
# 02 · real verification: one target pass decides, and can replace a token
# ----------------------------------------------------------------------------------------------

_S02 = "ex02_greedy_verify.py"


def _greedy_continue(model, ids: torch.Tensor, n: int) -> list[int]:
    """n greedy tokens after ids (1, T), without a cache (short, and independent of the learner's code)."""
    out = []
    with torch.inference_mode():
        for _ in range(n):
            nxt = int(model(ids).logits[0, -1].argmax())
            out.append(nxt)
            ids = torch.cat([ids, torch.tensor([[nxt]], device=ids.device)], 1)
    return out


def _greedy_reference(target, ids: torch.Tensor, k: int) -> tuple[int, int]:
    """(accepted prefix, target's token) for the k drafted tokens at the end of ids (1, T + k)."""
    with torch.inference_mode():
        best = target(ids).logits[0, -k - 1:].argmax(-1).tolist()  # (k + 1,): position i predicts token i + 1
    drafted = ids[0, -k:].tolist()
    n = 0
    while n < k and drafted[n] == best[n]:
        n += 1
    return n, best[n]


@_checker("02", "verification that can change a token", _S02)
def check_02(fn, pair=None, ks=(5, 3, 1)) -> str:
    """fn(target, ids, k) -> (n_accepted, token): ids (1, T + k) ends with k drafted tokens; ONE target
    pass; n_accepted = how many drafted tokens, from the left, equal the target's arg max; token = the
    target's arg max right after them (a replacement after a rejection, a bonus if all k are kept).

    Graded for each k in ks on drafts the draft model wrote, on the target's own text (all kept), and on
    the target's text with one token replaced at position 0 or 2 (the tokens after it are again the
    target's own choices, so a function that counts every match instead of the accepted prefix is
    caught). Passes are counted at the target's input embedding (target.forward counts too).
    """
    from .models import load_prompts

    pair = _pair(pair)
    target, draft, tok = pair.target, pair.draft, pair.tokenizer
    K = max(ks)

    def as_ids(tokens):  # list of n ids -> (1, n)
        return torch.tensor([tokens], dtype=torch.long, device=pair.device)

    base = []  # (description of the k drafted tokens, prompt ids (1, T), K drafted tokens, first k allowed)
    for prompt in load_prompts()[:2]:
        ids = tok(prompt, return_tensors="pt").input_ids.to(pair.device)  # (1, T)
        drafted = _greedy_continue(draft, ids, K)
        base.append((f"prompt {prompt!r} + the draft model's {{k}} greedy tokens", ids, drafted, 1))
    prompt = load_prompts()[3]
    ids = tok(prompt, return_tensors="pt").input_ids.to(pair.device)
    own = _greedy_continue(target, ids, K)
    base.append((f"prompt {prompt!r} + the target's own {{k}} greedy tokens", ids, own, 1))
    for j in (0, 2):  # replace token j by the target's second choice, then let the target go on greedily
        prefix = torch.cat([ids, as_ids(own[:j])], 1)
        with torch.inference_mode():
            second = int(target(prefix).logits[0, -1].topk(2).indices[1])
        rest = _greedy_continue(target, torch.cat([prefix, as_ids([second])], 1), K - j - 1)
        base.append((f"prompt {prompt!r} + the target's {{k}} tokens with token {j} replaced by its second choice "
                     f"{tok.decode([second])!r}", ids, own[:j] + [second] + rest, j + 1))
    kept = drafted_total = graded = 0  # drafted tokens the target kept, on the draft model's own drafts
    for k in ks:
        for c, (desc, ids, tail, min_k) in enumerate(base):
            if k < min_k:  # the replaced token must be among the k drafted ones
                continue
            x = torch.cat([ids, as_ids(tail[:k])], 1)  # (1, T + k); greedy continuations truncate consistently
            n = _grade_02(fn, target, tok, x, k, desc.format(k=k), ks[0])
            graded += 1
            if c < 2:
                kept, drafted_total = kept + n, drafted_total + k
    return (f"{graded} drafts (k = {', '.join(map(str, ks))}), each checked in one target pass. Of the draft "
            f"model's {drafted_total} drafted tokens the target kept {kept}, and after each rejection it put its own "
            f"token: the text is the target's, which draft-and-score never guarantees.")


def _grade_02(fn, target, tok, x, k: int, desc: str, first_k: int) -> int:
    """Run the learner's greedy_verify on x (1, T + k), compare with the target's arg max; the accepted count."""
    want = _greedy_reference(target, x, k)
    with _ForwardCounter(target) as count:
        got = _call(fn, "02", desc, target, x.clone(), k)
    what = f"greedy_verify(target, ids, k={k}) with ids = {desc}"
    if count.calls != 1:
        raise _fail("02", _S02, what, "exactly 1 target forward pass", f"{count.calls} passes",
                    "verification is cheap because ONE pass over prompt + all k drafted tokens gives the target's "
                    "choice at every drafted position at once: call target(ids) once, no generate, no loop.")
    n, t = _unpack(got, "02", _S02, what, k, "the target's arg max at the last position, logits[0, -1].argmax(), "
                   "which the same pass gives for free.")
    V = getattr(target.config.get_text_config(), "vocab_size", None) or len(tok)  # the logits' width (may exceed the tokenizer's)
    if n == k + 1 and 0 <= t < V:
        raise _fail("02", _S02, what, f"0 <= n_accepted <= {k}", (n, t),
                    "the bonus token is not a drafted token: n_accepted counts only the k drafted tokens kept, so it "
                    "is at most k; the bonus is the token returned beside it.")
    if not (0 <= n <= k and 0 <= t < V):
        raise _fail("02", _S02, what, f"0 <= n_accepted <= {k} and a token id in [0, {V})", (n, t),
                    "n_accepted counts drafted tokens; the token is a vocabulary id (when all are kept: the bonus, "
                    "logits[0, -1].argmax()), never a placeholder such as -1 or None.")
    drafted = x[0, -k:].tolist()
    if (n, t) != want:
        if n > want[0]:
            hint = ("count only the accepted PREFIX: stop at the first drafted token that is not the target's "
                    "arg max (after a rejection the later drafted tokens are thrown away unchecked).")
        elif n == want[0] and n < k and t == drafted[n]:
            hint = ("at the first rejection the target puts ITS OWN token there (its arg max at that position), "
                    "not the drafted one: keeping the draft's token is what draft-and-score does.")
        else:
            hint = ("logits[0, i] predict token i + 1: the k drafted tokens ids[0, -k:] are checked against "
                    "logits[0, -k-1:-1].argmax(-1), and logits[0, -1] gives the bonus token.")
        if k != first_k:
            hint = (f"your function passed every case with k = {first_k} but not this one with k = {k}: use the k "
                    f"you are given (the number of drafted tokens at the end of ids), not a fixed number. Also: {hint}")
        show = lambda r: f"({r[0]}, {tok.decode([r[1]])!r} = id {r[1]})"  # noqa: E731
        raise _fail("02", _S02, what, show(want), show((n, t)), hint)
    return n


# ----------------------------------------------------------------------------------------------
# 03 · verify_step: the accept/reject rule, exact by chi-square
# ----------------------------------------------------------------------------------------------

_S03 = "ex03_verify_step.py"


def _dist(*values) -> torch.Tensor:
    t = torch.tensor(values, dtype=torch.float32)
    return t / t.sum()


# (name, p (k + 1, V), q (k, V)), k = 2, V = 6
_CHI_CASES = [
    ("an over-confident draft (notebook 03's example, gamma = 2)",
     torch.stack([_dist(0.05, 0.10, 0.40, 0.25, 0.15, 0.05), _dist(0.30, 0.05, 0.05, 0.20, 0.20, 0.20),
                  _dist(1, 1, 2, 2, 2, 2)]),
     torch.stack([_dist(0.40, 0.30, 0.10, 0.10, 0.05, 0.05), _dist(0.10, 0.40, 0.10, 0.10, 0.20, 0.10)])),
    ("zeros: q is 0 where p is not, and p is 0 where q is not",
     torch.stack([_dist(0, 0, 0.5, 0.2, 0.2, 0.1), _dist(1, 1, 1, 1, 0, 0), _dist(1, 1, 1, 1, 1, 1)]),
     torch.stack([_dist(0.3, 0, 0, 0.1, 0.6, 0), _dist(1, 1, 1, 1, 1, 1)])),
]
N_ROUNDS = 20_000  # rounds per case
LEVEL = 1e-4  # a correct rule fails one chi-square test with probability 1e-4 (6 tests: < 0.1% in all)
_GLOBAL_SEED = 10_000  # seeds PyTorch's global RNG while the learner's function runs (never a generator's seed)
N_U_REPEATS = 12  # calls per u in _check_uses_u: a rule with its own coin agrees with itself 12 times w.p. 2 * 0.5^12


def _unpack(got, number, solution, what, k: int, bonus: str):
    """(n_accepted, token) as ints from a tuple (of ints, NumPy integers or one-element tensors) or from an
    object with those attributes (like Verification); else fail, with `bonus` (where the bonus token
    comes from) when all k drafted tokens were accepted and the token is missing."""
    if hasattr(got, "n_accepted") and hasattr(got, "token"):
        got = (got.n_accepted, got.token)
    try:
        n, t = got
        return int(_number(n)), int(_number(t))
    except (TypeError, ValueError, RuntimeError):
        all_kept = isinstance(got, (tuple, list)) and len(got) == 2 and _int_or_none(got[0]) == k
        raise _fail(number, solution, what, "a pair (n_accepted, token) of ints", repr(got),
                    f"all {k} drafted tokens were accepted, so the token is the BONUS: {bonus}" if all_kept else
                    "return a tuple: (how many drafted tokens were accepted, the token the target adds).") from None


def _verify(fn, p, q, x, u, generator, what):
    got = _call(fn, "03", what, p.clone(), q.clone(), x.clone(), u.clone(), generator=generator)
    n, t = _unpack(got, "03", _S03, what, x.shape[0], "sampled from the last row of p, "
                   "torch.multinomial(p[k], 1, generator=generator).")
    k, V = x.shape[0], p.shape[1]
    if not (0 <= n <= k and 0 <= t < V):
        raise _fail("03", _S03, what, f"0 <= n_accepted <= {k} and a token id in [0, {V})", (n, t),
                    "n_accepted counts drafted tokens; token is a vocabulary id.")
    return n, t


def _fixed_cases():
    """(description, p, q, x, u, check) with answers that need no statistics. check(n, t) -> None or a hint."""
    eye = torch.eye(6)
    p_g = eye[[3, 5, 1]]  # greedy target: arg max 3, then 5, then the bonus 1
    p_r = torch.stack([_dist(0.2, 0.3, 0.3, 0.2, 0, 0), eye[4]])  # k = 1; bonus row one-hot at 4
    q_r = _dist(0.4, 0.2, 0.2, 0.2, 0, 0)[None]  # x = 0: p/q = 0.5; x = 1: p/q = 1.5
    res = {1, 2}  # norm(max(0, p - q)) for p_r[0], q_r[0]: tokens 1 and 2
    return [
        ("greedy (one-hot p and q), the draft agrees at token 1, not at token 2",
         p_g, eye[[3, 2]], [3, 2], [0.5, 0.5], (1, 5),
         "accept while x_i is the target's arg max, then add the target's token"),
        ("greedy, the draft agrees at both tokens", p_g, eye[[3, 5]], [3, 5], [0.5, 0.5], (2, 1),
         "all k accepted: the bonus token comes from p[k], the last row of p"),
        ("greedy, the draft is wrong at token 1", p_g, eye[[2, 5]], [2, 5], [0.5, 0.5], (0, 3),
         "a rejection at position 0 ends the round; the later drafted tokens are not checked"),
        ("p(x)/q(x) = 0.5 and u = 0.49", p_r, q_r, [0], [0.49], (1, 4),
         "accept when u < min(1, p(x)/q(x)); then the bonus comes from p[k]"),
        ("p(x)/q(x) = 0.5 and u = 0.51", p_r, q_r, [0], [0.51], ("reject", res),
         "reject when u >= p(x)/q(x), then sample from norm(max(0, p - q)): tokens 1 or 2 here"),
        ("p(x) > q(x) and u = 0.999", p_r, q_r, [1], [0.999], (1, 4),
         "when p(x) >= q(x) the drafted token is always accepted: min(1, p/q) = 1"),
    ]


def _chi_square(samples, probs):
    """(tokens emitted where probs is 0, chi-square p-value on the others, observed frequencies)."""
    from scipy.stats import chisquare

    probs = probs.double().numpy()
    counts = np.bincount(samples, minlength=len(probs))
    keep = probs > 0
    expected = probs[keep] / probs[keep].sum() * counts[keep].sum()
    pvalue = chisquare(counts[keep], expected).pvalue if counts[keep].sum() else 0.0
    return int(counts[~keep].sum()), float(pvalue), counts / max(1, counts.sum())


def _rounds(fn, p, q, seed):
    """N_ROUNDS rounds with x_i ~ q_i and u ~ U(0, 1)^k: the first, second and third emitted tokens (the
    third, with k = 2, is the bonus token after both drafts were accepted)."""
    k = q.shape[0]
    g = torch.Generator().manual_seed(seed)
    x = torch.multinomial(q, N_ROUNDS, replacement=True, generator=g).T  # (N, k): drafted tokens
    u = torch.rand(N_ROUNDS, k, generator=g)  # (N, k)
    emitted_at = [[] for _ in range(k + 1)]  # emitted_at[j]: the (j + 1)-th emitted token of each round that has one
    # a rule that ignores `generator` is still reproducible; not g's seed: the global stream must not repeat g's draws
    with seeded(_GLOBAL_SEED + seed):
        for i in range(N_ROUNDS):
            what = f"p {p.tolist()}, q {q.tolist()}, x {x[i].tolist()}, u {u[i].tolist()}"
            n, t = _verify(fn, p, q, x[i], u[i], g, what)
            for j, token in enumerate(x[i, :n].tolist() + [t]):
                emitted_at[j].append(token)
    return [np.array(e, dtype=np.int64) for e in emitted_at]


def _check_uses_u(fn) -> None:
    """The decision must follow the u it was given: the same call, repeated, decides the same way, and a draft
    token with p/q = 0.5 is not rejected at both u = 0.0 and u = 0.999. A rule that draws its own uniform
    (torch.rand, or from the generator) decides differently from call to call, and is named here, before a
    fixed case could pass or fail it by luck. Other wrong decisions are left to the fixed cases' hints."""
    p_r, q_r = _fixed_cases()[4][1:3]  # p(x)/q(x) = 0.5 for x = 0
    g = torch.Generator().manual_seed(0)  # shared across the calls: a rule that draws from it gets new draws
    decisions = {}
    for u in (0.0, 0.999):
        what = (f"verify_step(p, q, draft_tokens=[0], u=[{u}]), called {N_U_REPEATS} times: p(x)/q(x) = 0.5, so "
                f"{'accept' if u < 0.5 else 'reject'} every time")
        decisions[u] = [_verify(fn, p_r, q_r, torch.tensor([0]), torch.tensor([u]), g, what)[0]
                        for _ in range(N_U_REPEATS)]
        if len(set(decisions[u])) > 1:
            raise _fail("03", _S03, what, f"n_accepted = {1 if u < 0.5 else 0} in every call",
                        f"n_accepted = {decisions[u]}",
                        "use the u you were given: accept x_i when u[i] < min(1, p_i(x_i)/q_i(x_i)). Drawing your "
                        "own uniform (torch.rand) makes the decision random from call to call; the generator is "
                        "only for the one token the target adds.")
    if set(decisions[0.0]) == set(decisions[0.999]) == {0}:
        raise _fail("03", _S03, "verify_step(p, q, draft_tokens=[0], u=...), p(x)/q(x) = 0.5: u = 0.0 and u = 0.999",
                    "accepted at u = 0.0, rejected at u = 0.999", "rejected at both",
                    "use the u you were given: accept x_i when u[i] < min(1, p_i(x_i)/q_i(x_i)), so a small u "
                    "accepts a token the draft over-proposed (p < q) and a large one rejects it.")


def _bonus_hint(samples, probs) -> str:
    """What a failing bonus test (the third emitted token, after k = 2 acceptances) looks like."""
    if len(samples) and (samples == int(probs.argmax())).all():
        return ("the bonus is sampled from p[k] (the last row of p): torch.multinomial(p[k], 1, generator=generator). "
                "You always returned its arg max, which is the bonus only at T = 0.")
    return ("the bonus is sampled from p[k], the last row of p (k + 1 rows: one per drafted position, then the bonus "
            "position), after all k drafted tokens were accepted: torch.multinomial(p[k], 1, generator=generator).")


@_checker("03", "verify_step, the accept/reject rule", _S03, shortcuts=("verify_step", "accept_reject", "verify_step_biased"))
def check_03(fn) -> str:
    """fn(p, q, draft_tokens, u, generator=None) -> (n_accepted, token).

    p: (k + 1, V) target probabilities, q: (k, V) draft probabilities, draft_tokens: (k,) drafted ids,
    u: (k,) uniform draws (accept x_i while u_i < min(1, p_i(x_i) / q_i(x_i))), generator: for the
    one token the target adds (from the residual norm(max(0, p - q)) after a rejection, from p[k]
    after k acceptances). The rule of `utils.speculative.verify_step`, with u passed in so each
    decision can be checked, and a tuple returned instead of a Verification.

    Graded first on whether the decision follows the u given (the same call repeated at u = 0.0 and
    u = 0.999, p/q = 0.5), then on six cases with known answers (greedy ones included), then by
    chi-square: over 20,000 rounds on each of two small vocabularies (k = 2), the first emitted token
    must follow p[0], the second (when the first draft was accepted) p[1], and the third, the bonus
    after both were accepted, p[2], at level 1e-4 per test. PyTorch's global RNG is seeded throughout
    (with seeds no generator uses), so a rule that ignores `generator` is graded reproducibly too.
    """
    with seeded(_GLOBAL_SEED - 1):
        _check_uses_u(fn)
        for desc, p, q, x, u, want, hint in _fixed_cases():
            what = f"verify_step(p, q, draft_tokens={x}, u={u}): {desc}"
            n, t = _verify(fn, p, q, torch.tensor(x), torch.tensor(u), torch.Generator().manual_seed(0), what)
            n_want, right_token = (0, t in want[1]) if want[0] == "reject" else (want[0], t == want[1])
            if n == n_want + 1 and n_want < len(x) and right_token:  # the right replacement, counted as accepted
                hint = (f"n_accepted counts the drafted tokens accepted ({n_want} here), not the token the target "
                        "puts at the rejected position: return the index of the first rejection.")
            if want[0] == "reject":
                if n == 0 and t not in want[1]:  # the decision is right, the replacement is not
                    hint = (f"rejecting is right; the replacement comes from norm(max(0, p - q)) (tokens "
                            f"{' or '.join(map(str, sorted(want[1])))} here), not from p, q or max(0, q - p).")
                if n != 0 or t not in want[1]:
                    raise _fail("03", _S03, what, f"(0, a token in {sorted(want[1])})", (n, t), hint)
            elif (n, t) != want:
                if n == want[0] < len(x):  # the right count, then the wrong token at the rejected position
                    hint = (f"n_accepted is right; the token after the rejection at position {n} comes from "
                            f"norm(max(0, p[{n}] - q[{n}])): with one-hot rows, the target's token {want[1]}.")
                raise _fail("03", _S03, what, want, (n, t), hint)
    report = []
    for c, (name, p, q) in enumerate(_CHI_CASES):
        emitted = _rounds(fn, p, q, seed=c)
        for pos, samples in enumerate(emitted):
            leaked, pvalue, freq = _chi_square(samples, p[pos])
            bonus = pos == q.shape[0]
            shown_q = "" if bonus else f", q[{pos}] = {[round(v, 3) for v in q[pos].tolist()]}"
            what = (f"emitted token {pos + 1}{' (the bonus, after all drafts were accepted)' if bonus else ''} over "
                    f"{len(samples)} rounds, {name}: p[{pos}] = {[round(v, 3) for v in p[pos].tolist()]}{shown_q}")
            if leaked:
                raise _fail("03", _S03, what, "no token with p = 0", f"{leaked} such tokens emitted",
                            _bonus_hint(samples, p[pos]) if bonus else
                            "a token the target gives probability 0 can never come out: after a rejection sample from "
                            "norm(max(0, p - q)), which is 0 wherever p is; accept with min(1, p/q), which is 0 there.")
            if pvalue < LEVEL:
                if bonus:
                    hint = _bonus_hint(samples, p[pos])
                else:
                    biased = torch.minimum(p[pos], q[pos]) + (1 - torch.minimum(p[pos], q[pos]).sum()) * p[pos]
                    b_leaked, b_pvalue, _ = _chi_square(samples, biased)
                    looks_biased = not b_leaked and b_pvalue >= LEVEL  # the biased rule fits, not merely better
                    hint = ("your frequencies match 'resample from p after a rejection' (the Practitioner's Guide "
                            "rule): sample from the residual norm(max(0, p - q)) instead." if looks_biased else
                            "accept x_i when u_i < p(x_i)/q(x_i); after a rejection sample from norm(max(0, p - q)) "
                            "at the rejected position; after k acceptances sample the bonus from p[k].")
                raise _fail("03", _S03, f"{what}: chi-square p-value {pvalue:.1e} < {LEVEL:g}",
                            f"frequencies {[round(v, 3) for v in p[pos].tolist()]}",
                            f"frequencies {[round(v, 3) for v in freq.tolist()]}", hint)
            report.append(pvalue)
    return (f"Decisions that follow the u given, six decisions with known answers, then {len(report)} chi-square "
            f"tests over {N_ROUNDS:,} rounds each (the first, second and bonus token): the emitted tokens follow the "
            f"target's p (smallest p-value {min(report):.2f}, threshold {LEVEL:g}).")


# ----------------------------------------------------------------------------------------------
# 04 · the cost model: tokens per round and the best gamma
# ----------------------------------------------------------------------------------------------

_S04 = "ex04_cost_model.py"
_ALPHAS = [0.0, 0.1, 0.5, 0.8, 0.95, 1.0]
_GAMMAS = [1, 2, 4, 8]


def _close(a, b) -> bool:
    """Equal to float32 precision (a float32 computation is off by about 1e-7), not more loosely."""
    return (isinstance(a, numbers.Real) and not isinstance(a, bool)
            and math.isclose(float(a), b, rel_tol=1e-6, abs_tol=1e-9))


def _int_04(got, what: str) -> int:
    """best_gamma's answer as an int (a Python int, a NumPy integer or a one-element integer tensor), else fail."""
    got = _number(got)
    if isinstance(got, numbers.Integral) and not isinstance(got, bool):
        return int(got)
    kind = f"{type(got).__name__} {got!r}"
    hint = ("return an int: gamma counts drafted tokens, one of 1, 2, ..., max_gamma (e.g. the g of "
            "max(range(1, max_gamma + 1), key=...))")
    if isinstance(got, numbers.Real) and not isinstance(got, bool) and float(got).is_integer():
        hint += f"; int({got!r}) would do here."
    else:
        hint += ", not a speedup or a float."
    raise _fail("04b", _S04, what, "an int gamma", kind, hint)


@_checker("04a", "expected tokens per round", _S04, shortcuts=("expected_tokens_per_round", "expected_speedup"))
def check_04_tau(fn) -> str:
    """fn(alpha, gamma) -> tau = (1 - alpha^(gamma + 1)) / (1 - alpha), and gamma + 1 at alpha = 1.

    Graded against `utils.theory.expected_tokens_per_round` on a grid of alpha (0 to 1, both ends
    included) and gamma; the summary compares it with a simulation of 100,000 rounds.
    """
    from .theory import expected_tokens_per_round

    for alpha in _ALPHAS:
        for gamma in _GAMMAS:
            want = expected_tokens_per_round(alpha, gamma)
            what = f"tokens_per_round(alpha={alpha}, gamma={gamma})"
            try:
                got = _call(fn, "04a", what, alpha, gamma)
            except AssertionError as e:
                if alpha != 1:
                    raise
                raise AssertionError(f"{e}\n  hint: at alpha = 1 the formula is 0/0: return its limit, gamma + 1 "
                                     "(every drafted token kept, plus the bonus).") from e.__cause__
            got = _number(got)
            if not _close(got, want):
                if alpha == 1:
                    hint = ("at alpha = 1 the formula is 0/0; its limit is gamma + 1 (every drafted token kept, "
                            "plus the bonus).")
                elif _close(got, (1 - alpha**gamma) / (1 - alpha)):
                    hint = ("the exponent is gamma + 1: besides the accepted drafts, every round adds one token "
                            "from the target.")
                else:
                    hint = "tau = 1 + alpha + alpha^2 + ... + alpha^gamma = (1 - alpha^(gamma + 1)) / (1 - alpha)."
                raise _fail("04a", _S04, what, want, got, hint)
    rng = np.random.default_rng(0)
    accepts = rng.random((100_000, 4)) < 0.8  # (rounds, gamma): Bernoulli(alpha) acceptances
    prefix = np.where(accepts.all(1), 4, accepts.argmin(1))  # accepted drafts before the first rejection
    mine = float(_number(_call(fn, "04a", "tokens_per_round(alpha=0.8, gamma=4)", 0.8, 4)))
    return (f"{len(_ALPHAS) * len(_GAMMAS)} values match utils.theory. At alpha 0.8, gamma 4 you predict "
            f"{mine:.3f} tokens per round; 100,000 simulated rounds give {(prefix + 1).mean():.3f}.")


@_checker("04b", "the best gamma", _S04, shortcuts=("optimal_gamma", "best_speedups"))
def check_04_gamma(fn) -> str:
    """fn(alpha, c, max_gamma=16) -> the gamma in 1..max_gamma with the largest expected speedup
    tau / (gamma c + 1) (Leviathan et al., Thm 3.8).

    Graded against `utils.theory.optimal_gamma` (ties: any gamma with the best speedup passes).
    """
    from .theory import expected_speedup, optimal_gamma

    grid = [(a, c, m) for a in (0.3, 0.5, 0.7, 0.8, 0.9, 0.95) for c in (0.01, 0.05, 0.2, 0.5) for m in (8, 16)]
    for alpha, c, max_gamma in grid:
        what = f"best_gamma(alpha={alpha}, c={c}, max_gamma={max_gamma})"
        got = _int_04(_call(fn, "04b", what, alpha, c, max_gamma), what)
        want = optimal_gamma(alpha, c, max_gamma)
        best = expected_speedup(alpha, want, c)
        ok = 1 <= got <= max_gamma and math.isclose(expected_speedup(alpha, got, c), best, rel_tol=1e-12)
        if not ok:
            hint = ("maximise the speedup tau / (gamma c + 1), not tau: tau always grows with gamma, but each "
                    "drafted token costs c." if got == max_gamma else
                    "try every gamma in 1..max_gamma (inclusive) and keep the one with the largest "
                    "tau / (gamma c + 1).")
            raise _fail("04b", _S04, what, f"{want} (speedup {best:.3f}x)", got, hint)
    a, c = 0.8, 0.05
    g, g_low = (_int_04(_call(fn, "04", f"best_gamma(alpha={x}, c={y}, max_gamma=16)", x, y, 16),
                        f"best_gamma(alpha={x}, c={y}, max_gamma=16)") for x, y in ((a, c), (0.3, 0.5)))
    return (f"{len(grid)} cases match utils.theory. For alpha {a} and c {c} the best gamma is {g}, "
            f"an expected {expected_speedup(a, g, c):.2f}x; with alpha 0.3 <= c 0.5 even the best gamma "
            f"gives {expected_speedup(0.3, g_low, 0.5):.2f}x: no speedup unless alpha > c.")


# ----------------------------------------------------------------------------------------------
# 05 · acceptance per drafted and per checked token
# ----------------------------------------------------------------------------------------------

_S05 = "ex05_acceptance.py"


def _synthetic_rounds():
    """Rounds with known rates: (description, rounds, (per drafted, per checked))."""
    from .speculative import Round

    def r(k, n, kind):
        return Round(drafted=list(range(10, 10 + k)), n_accepted=n, token=7, kind=kind, p=[0.5] * k, q=[0.5] * k)

    mixed = [r(4, 4, "bonus"), r(4, 1, "resample"), r(4, 0, "resample"), r(0, 0, "target")]
    return [
        ("gamma 4: one full round, rejections after 1 and after 0 accepted, one last round with k = 0",
         mixed, (5 / 12, 5 / 7)),
        ("every drafted token accepted", [r(3, 3, "bonus"), r(3, 3, "bonus")], (1.0, 1.0)),
        ("gamma 8: one rejection after 2 accepted", [r(8, 2, "resample")], (2 / 8, 2 / 3)),
        ("rounds of unequal length: 2 drafted and both kept, then 6 drafted and the first rejected (the mean "
         "of per-round rates would say 0.5 and 0.5)", [r(2, 2, "bonus"), r(6, 0, "resample")], (2 / 8, 2 / 3)),
        ("nothing drafted at all: one 'target' round (no rate exists: NaN for both, float('nan'))",
         [r(0, 0, "target")], (math.nan, math.nan)),
    ]


@_checker("05", "acceptance per checked token", _S05)
def check_05(fn, pair=None) -> str:
    """fn(rounds) -> (per_drafted, per_checked) for a list of `utils.speculative.Round`:
    accepted / drafted, and accepted / (accepted + rejections), where a rejection is a round that
    ended with kind == "resample" (after it, the rest of the draft is thrown away unchecked).

    Graded on five hand-made lists of rounds (one with nothing drafted: NaN for both), then on real speculative runs at temperature 1 and
    gamma 2 and 8, against SpeculativeOutput.acceptance_rate and .checked_acceptance_rate.
    """
    from .models import load_prompts
    from .speculative import speculative_generate

    def grade(desc, rounds, want):
        what = f"acceptance_rates(rounds) for {desc}"
        try:
            got = _call(fn, "05", what, list(rounds))
        except AssertionError as e:
            if not isinstance(e.__cause__, ZeroDivisionError) or all(r.drafted for r in rounds):
                raise
            if not any(r.drafted for r in rounds):
                raise AssertionError(f"{e}\n  hint: nothing was drafted, so neither rate exists: return float('nan') "
                                     "where a denominator is 0 (as SpeculativeOutput.acceptance_rate does).") from e.__cause__
            raise AssertionError(f"{e}\n  hint: these rounds include a 'target' round (kind 'target', k = 0: nothing "
                                 "drafted, the target's token only, no rejection), so len(r.drafted) is 0 there: sum "
                                 "the counts over all rounds first, then divide once.") from e.__cause__
        try:
            a, b = (float(v) for v in got)
        except (TypeError, ValueError):
            raise _fail("05", _S05, what, "a pair (per_drafted, per_checked) of floats", repr(got),
                        "return a tuple of two numbers.") from None

        def close(x, y):
            return math.isclose(x, y, abs_tol=1e-9) or (math.isnan(x) and math.isnan(y))

        if not (close(a, want[0]) and close(b, want[1])):
            if math.isnan(want[0]):
                hint = ("nothing was drafted, so neither rate exists: return float('nan') where a denominator is 0 "
                        "(0 would read as 'every drafted token rejected').")
            elif close(a, want[1]) and close(b, want[0]):
                hint = ("your two numbers are right but swapped: return (per_drafted, per_checked), the rate per "
                        "drafted token first.")
            elif close(a / 100, want[0]) and close(b / 100, want[1]):
                hint = "return fractions between 0 and 1, not percentages: accepted / drafted, without the * 100."
            elif not close(a, want[0]):
                hint = ("per drafted: sum of n_accepted over sum of len(drafted), over all rounds together (not an "
                        "average of per-round rates: rounds of different lengths weigh differently, and a 'target' "
                        "round drafted nothing).")
            else:
                hint = ("per checked: the drafted tokens after a rejection were never checked. Count the checked ones "
                        "as accepted + one rejection per round whose kind is 'resample'; a 'bonus' round (every "
                        "drafted token kept) and a 'target' round (k = 0: nothing drafted, the target's token only) "
                        "have no rejection.")
            raise _fail("05", _S05, what, f"({want[0]:.4f}, {want[1]:.4f})", f"({a:.4f}, {b:.4f})", hint)
        return a, b

    for desc, rounds, want in _synthetic_rounds():
        grade(desc, rounds, want)
    pair = _pair(pair)
    rates = {}
    for gamma in (2, 8):
        drafted = accepted = rejected = 0
        for i, prompt in enumerate(load_prompts()[:2]):
            ids = pair.tokenizer(prompt, return_tensors="pt").input_ids.to(pair.device)
            g = torch.Generator(device=pair.device).manual_seed(i)
            out = speculative_generate(pair.target, pair.draft, ids, max_new_tokens=48, gamma=gamma,
                                       temperature=1.0, generator=g)
            grade(f"a speculative run (gamma {gamma}, T = 1, prompt {prompt!r})", out.rounds,
                  (out.acceptance_rate, out.checked_acceptance_rate))
            drafted, accepted, rejected = drafted + out.n_drafted, accepted + out.n_accepted, rejected + out.n_rejected
        rates[gamma] = (accepted / drafted, accepted / (accepted + rejected))
    (d2, c2), (d8, c8) = rates[2], rates[8]
    return (f"On {pair.name} at T = 1: per drafted token {d2:.2f} at gamma 2 and {d8:.2f} at gamma 8, per checked "
            f"token {c2:.2f} and {c8:.2f}. Accepted / drafted falls with gamma because of the unchecked tail; the cost "
            f"model needs the rate per checked token.")


# ----------------------------------------------------------------------------------------------
# 06 · 4-bit weight memory
# ----------------------------------------------------------------------------------------------

_S06 = "ex06_nf4_memory.py"
BLOCK, BLOCK2 = BNB_BLOCK, BNB_BLOCK2  # bitsandbytes' 4-bit block sizes (utils.models)
_nf4_reference = nf4_bytes  # the formula the project uses everywhere (utils.models.nf4_bytes)
# the tolerance: the formula, to 1e-5, catches a forgotten second-level float32 (5e-4 of the total), and
# bitsandbytes stores 4 bytes more than it for a 1024 x 1024 weight with double quantization (the float32
# offset of its second-level scales, 7e-6 of 540,932 bytes)
_REL_TOL_06 = 1e-5


def _bnb_measured(shape=(1024, 1024)):
    """Bytes bitsandbytes stores for a 4-bit weight of this shape: {double_quant: bytes}, or None
    when bitsandbytes is missing. Counts the packed weights and the scales (not the 16-entry code)."""
    try:
        import bitsandbytes.functional as F
    except ImportError:
        return None
    w = torch.randn(*shape, generator=torch.Generator().manual_seed(0))
    out = {}
    for dq in (False, True):
        packed, qs = F.quantize_4bit(w, blocksize=BLOCK, quant_type="nf4", compress_statistics=dq)
        b = packed.numel() * packed.element_size() + qs.absmax.numel() * qs.absmax.element_size()
        if dq:
            b += qs.state2.absmax.numel() * qs.state2.absmax.element_size() + 4  # second-level scales + offset
        out[dq] = b
    return out


@_checker("06", "4-bit (NF4) weight memory", _S06, shortcuts=("nf4_bytes",))
def check_06(fn) -> str:
    """fn(n_params, double_quant=False) -> bytes of n_params weights stored in NF4 by bitsandbytes:
    4 bits per weight plus the quantization constants (one float32 absmax per block of 64 weights; with
    double quantization an 8-bit absmax per block plus one float32 per 256 blocks).

    Graded against that formula and against what bitsandbytes really stores for a 1024 x 1024 weight
    (when bitsandbytes is installed), both to a relative 1e-5: close enough to catch a forgotten
    second-level float32 (about 5e-4 of the total).
    """
    from .models import PAIRS

    for n in (BLOCK * BLOCK2 * 10, 4096 * 4096, 8.32e9):
        for dq in (False, True):
            what = f"nf4_bytes({n:g}, double_quant={dq})"
            got = _number(_call(fn, "06", what, n, double_quant=dq))
            want = _nf4_reference(n, dq)
            real = isinstance(got, numbers.Real) and not isinstance(got, bool)

            def near(x, tol=_REL_TOL_06):
                return real and math.isclose(float(got), x, rel_tol=tol)

            if near(want):
                continue
            blocks = n / BLOCK
            if near(n / 2):
                hint = "4 bits per weight is right, but each block of 64 weights also stores its scale (absmax)."
            elif near(n * 4, 1e-2):
                hint = "4 bits = half a BYTE per weight: bytes = n_params * 4 / 8, plus the scales."
            elif dq and near(n / 2 + blocks):
                hint = ("the 8-bit scale per block is right, but the double quantization has a second level: the 8-bit "
                        "scales are quantized in blocks of 256, and each of those keeps one float32 (4 bytes): "
                        "+ 4 * n / (64 * 256).")
            elif dq and near(n / 2 + blocks + 2 * blocks / BLOCK2):
                hint = "the second-level scale, one per 256 blocks, is a float32: 4 bytes, not 2."
            elif dq and near(_nf4_reference(n, False)):
                hint = ("with double quantization each block's scale is stored in 8 bits (1 byte), plus one "
                        "float32 per 256 blocks.")
            elif not dq and near(n / 2 + 2 * blocks):
                hint = "the absmax of each block of 64 weights is a float32: 4 bytes, not 2."
            elif near(8 * want):
                hint = "that is the count in bits: return bytes (divide by 8)."
            elif near(want / 1e9) or near(want / 2**30):
                hint = "return bytes, not gigabytes (no division by 1e9)."
            else:
                hint = ("bytes = n/2 (4-bit weights) + 4 * n/64 (a float32 absmax per block of 64); double quant: "
                        "n/2 + n/64 + 4 * n/(64 * 256).")
            if isinstance(got, str):
                hint = f"return a number, not a string ({got!r}): bytes as an int or a float."
            raise _fail("06", _S06, what, f"{want:,.0f} bytes (to a relative {_REL_TOL_06:g})", repr(got), hint)
    measured = _bnb_measured()
    if measured is not None:
        for dq, b in measured.items():
            got = float(_call(fn, "06", f"nf4_bytes({1024 * 1024}, double_quant={dq})", 1024 * 1024, double_quant=dq))
            if not math.isclose(got, b, rel_tol=_REL_TOL_06):
                raise _fail("06", _S06, f"a 1024 x 1024 weight quantized by bitsandbytes (double_quant={dq})",
                            f"{b:,} bytes, as stored", f"{got:,.0f}", "count the packed weights and the absmax scales.")
        real = "and what bitsandbytes stores for a 1024 x 1024 weight"
    else:
        real = "(bitsandbytes is not installed here, so the comparison with what it stores was skipped)"
    spec = PAIRS["gemma2-2b-9b"].target
    n = spec.params - spec.embed_params
    gb = (float(_number(_call(fn, "06", f"nf4_bytes({n}, double_quant=False)", n, double_quant=False)))
          + 2 * spec.embed_params) / 1e9
    bits = [8 * float(_number(_call(fn, "06", f"nf4_bytes({2**24}, double_quant={dq})", 2**24, double_quant=dq))) / 2**24
            for dq in (False, True)]
    return (f"Your estimates match the formula {real}. NF4 costs {bits[0]:.3f} bits per weight, {bits[1]:.3f} with "
            f"double quantization; gemma-2-9b (embeddings kept in bf16) would take {gb:.1f} GB, against "
            f"{2 * spec.params / 1e9:.1f} GB in bf16.")


# ----------------------------------------------------------------------------------------------
# 07 · sampling on the device without a host sync: the exponential race, by chi-square
# ----------------------------------------------------------------------------------------------

_S07 = "ex07_exponential_race.py"
N_DRAWS = 20_000  # draws per distribution
_RACE_CASES = [  # (name, probs (V,)); case c draws its noise with seed c
    ("notebook 03's target distribution", _dist(0.05, 0.10, 0.40, 0.25, 0.15, 0.05)),
    ("zeros: tokens 0 and 3 have probability 0", _dist(0, 0.5, 0.2, 0, 0.2, 0.1)),
    ("a confident distribution with a thin tail", _dist(0.7, 0.1, 0.1, 0.05, 0.03, 0.02)),
]
_RACE_WRONG = [  # (a wrong rule, its hint): named when the learner's tokens equal that rule's, draw for draw
    (lambda p, e: (p * e).argmax(-1),
     "you multiplied by the noise: divide. Token i finishes the race at time noise_i / probs_i (an exponential time "
     "with rate probs_i) and the first to finish wins: argmin(noise / probs), i.e. argmax(probs / noise)."),
    (lambda p, e: (p + e).argmax(-1),
     "adding the noise to the probabilities blurs them towards uniform (and lets tokens of probability 0 win): "
     "in the race each token's noise is divided by its probability."),
    (lambda p, e: (p.log() - e).argmax(-1),
     "in log space the race is log(probs) - log(noise): -log(noise) is Gumbel noise (the Gumbel-max trick). "
     "Subtracting the exponential noise itself does not sample from probs."),
    (lambda p, e: (e / p).argmax(-1),
     "noise / probs is each token's finishing time, and the race is won by the SMALLEST time: argmin(noise / probs), "
     "which is argmax(probs / noise)."),
]


def _race_tokens(got, shape, what) -> torch.Tensor:
    """The learner's tokens as a long tensor of `shape` ((..., 1) from keepdim=True is fine too)."""
    if isinstance(got, torch.Tensor) and got.shape == (*shape, 1):
        got = got.squeeze(-1)
    if (not isinstance(got, torch.Tensor) or got.shape != shape or got.is_floating_point() or got.is_complex()
            or got.dtype == torch.bool):
        desc = f"a {got.dtype} tensor of shape {tuple(got.shape)}" if isinstance(got, torch.Tensor) else repr(got)
        raise _fail("07", _S07, what, f"an integer tensor of shape {tuple(shape)}: one token id per distribution", desc,
                    "pick one token per row: reduce over the LAST dimension (dim=-1) with an arg max or arg min, and "
                    "return the tensor itself (a list or a Python int means reading the values back to the host).")
    return got.long()


@_checker("07", "sampling without a host sync", _S07, shortcuts=("sample_with_noise",))
def check_07(fn) -> str:
    """fn(probs, noise) -> tokens: probs (..., V) probabilities, noise (..., V) i.i.d. Exp(1) draws;
    one token per distribution, shape (...), sampled from probs with the noise given (the exponential
    race of `utils.fast.sample_with_noise`) by tensor operations only.

    Graded: noise = ones must give the arg max (how utils.fast decodes greedily), for one distribution
    and for a batch; the function must run on PyTorch's meta device (tensors with shapes but no
    values), so it reads nothing back to the host (.item(), int(), an `if` on a tensor, .tolist(),
    .cpu(), .numpy(), nonzero); then by chi-square: 20,000 draws from each of three distributions
    (one with zeros) must follow probs, fixed seeds, level 1e-4 per test. Known wrong rules
    (probs * noise, probs + noise, log(probs) - noise, the arg max of noise / probs) are named.
    """
    with seeded(0):  # a function that draws its own randomness stays reproducible
        g = torch.Generator().manual_seed(7)
        batch = torch.rand(64, 6, generator=g) ** 3
        batch = batch / batch.sum(-1, keepdim=True)  # (64, 6): 64 distributions
        one = _RACE_CASES[0][1]  # (6,)
        for desc, probs in ((f"one distribution {[round(v, 3) for v in one.tolist()]}", one),
                            ("a batch of 64 distributions, shape (64, 6)", batch)):
            what = f"sample_without_sync(probs, noise=torch.ones_like(probs)), probs = {desc}"
            got = _race_tokens(_call(fn, "07", what, probs.clone(), torch.ones_like(probs)), probs.shape[:-1], what)
            want = probs.argmax(-1)
            if not torch.equal(got, want):
                hint = (_RACE_WRONG[3][1] if torch.equal(got, probs.argmin(-1)) else
                        "with noise = ones every token's time is 1 / probs_i, so the most probable token wins: the "
                        "arg max (this is how utils.fast decodes at T = 0). Use only the noise you are given: no "
                        "randomness of your own (torch.multinomial is what this exercise replaces).")
                raise _fail("07", _S07, what, f"the arg max {want.tolist()}", got.tolist(), hint)
        what = "sample_without_sync(probs, noise) on PyTorch's meta device: (4, 6) tensors with shapes but no values"
        try:
            got = fn(batch[:4].to("meta"), torch.ones(4, 6, device="meta"))
        except Exception as e:  # noqa: BLE001 - whatever needed the values
            raise _fail("07", _S07, what, "tokens computed by tensor operations, shape (4,)",
                        f"{type(e).__name__}: {e}",
                        "your function reads values back to the host (.item(), int(), float(), an `if` on a tensor, "
                        ".tolist(), .cpu(), .numpy(), nonzero...), or makes a tensor on the CPU instead of probs' "
                        "device. On a GPU each read makes the host wait for the device, once per token: the sync this "
                        "exercise removes. Keep it to tensor operations on probs and noise.") from None
        if not isinstance(got, torch.Tensor) or got.device.type != "meta":
            where = f"a tensor on {got.device}" if isinstance(got, torch.Tensor) else repr(got)
            raise _fail("07", _S07, what, "a tensor on probs' device (meta here)", where,
                        "return the arg max tensor itself, on probs' device: nothing copied to the host.")
        pvalues = []
        for c, (name, p) in enumerate(_RACE_CASES):
            noise = torch.empty(N_DRAWS, p.numel()).exponential_(generator=torch.Generator().manual_seed(c))  # (N, V)
            probs = p.expand(N_DRAWS, -1).contiguous()  # (N, V)
            shown = [round(v, 3) for v in p.tolist()]
            what = f"sample_without_sync(probs, noise): {N_DRAWS:,} rows of {name}, {shown}, noise ~ Exp(1) (seed {c})"
            got = _race_tokens(_call(fn, "07", what, probs.clone(), noise.clone()), (N_DRAWS,), what)
            leaked, pvalue, freq = _chi_square(got.numpy(), p)
            if leaked or pvalue < LEVEL:
                hint = next((h for rule, h in _RACE_WRONG if torch.equal(got, rule(probs, noise))), None)
                if hint is None:
                    hint = ("a token of probability 0 must never win: its score probs_i / noise_i is 0."
                            if leaked else
                            "score token i by probs_i / noise_i and take the arg max over the last dimension: token i "
                            "finishes at the exponential time noise_i / probs_i, and the first to finish is token i "
                            "with probability probs_i.")
                freqs = [round(v, 3) for v in freq.tolist()]
                if leaked:
                    raise _fail("07", _S07, what, "no token of probability 0",
                                f"{leaked} such tokens drawn (frequencies {freqs})", hint)
                raise _fail("07", _S07, f"{what}: chi-square p-value {pvalue:.1e} < {LEVEL:g}", f"frequencies {shown}",
                            f"frequencies {freqs}", hint)
            pvalues.append(pvalue)
    return (f"Greedy with noise = ones, nothing read back to the host (it runs on the meta device), and "
            f"{len(pvalues)} chi-square tests over {N_DRAWS:,} draws each follow probs (smallest p-value "
            f"{min(pvalues):.3f}, threshold {LEVEL:g}). This is how utils.fast samples: one Exp(1) draw per vocabulary entry for "
            f"the whole round (exp_noise), an arg max on the device, and the host reads the tokens once per round.")


# ----------------------------------------------------------------------------------------------
# 08 · adaptive drafting: Hugging Face's "heuristic" schedule for gamma
# ----------------------------------------------------------------------------------------------

_S08 = "ex08_heuristic_schedule.py"
N_SIM = 10_000  # simulated rounds per alpha in the summary


def _next_gamma_reference(gamma: int, n_drafted: int, n_accepted: int) -> int:
    """The rule speculative_generate(schedule="heuristic") runs: + 2 after a fully accepted round, else - 1, >= 1."""
    return gamma + 2 if n_accepted == n_drafted else max(1, gamma - 1)


def _hf_next_gamma(gamma: int, n_drafted: int, n_accepted: int) -> int | None:
    """transformers' own rule: AssistedCandidateGenerator.update_candidate_strategy run on a stand-in
    that holds only what its "heuristic" branch reads (no confidence threshold, so the threshold's ROC
    update is skipped). None when this transformers has no such method (then the formula grades)."""
    from types import SimpleNamespace

    try:
        from transformers.generation.candidate_generator import AssistedCandidateGenerator

        me = SimpleNamespace(num_assistant_tokens=gamma, assistant_generation_config=SimpleNamespace(
            num_assistant_tokens_schedule="heuristic", assistant_confidence_threshold=None))
        scores = torch.zeros(1, n_drafted + 1, 1)  # HF counts the drafted candidates as len(scores[0]) - 1
        AssistedCandidateGenerator.update_candidate_strategy(me, None, scores, n_accepted)
        return int(me.num_assistant_tokens)
    except Exception:  # noqa: BLE001 - another transformers: fall back to the formula
        return None


def _grade_next_gamma(fn, gamma: int, k: int, n: int, want: int, what: str) -> None:
    got = _number(_call(fn, "08", what, gamma, k, n))
    if isinstance(got, numbers.Integral) and not isinstance(got, bool) and int(got) == want:
        return
    if not isinstance(got, numbers.Integral) or isinstance(got, bool):
        hint = "return an int: the next round's draft length (the loop drafts min(gamma, ...) tokens with it)."
    elif n == k and got == gamma + 1:
        hint = "after a round whose drafted tokens were all accepted, Hugging Face allows TWO more: gamma + 2."
    elif n == k and k < gamma:
        hint = (f"this round drafted only {k} of the {gamma} tokens allowed (the confidence threshold, or the end of "
                f"max_new_tokens, cut it short) and the target accepted every one of them: a fully accepted round. HF "
                "compares the accepted count with the candidates actually drafted (num_matches == len(scores[0]) - 1), "
                "not with gamma.")
    elif n < k and got < 1:
        hint = ("after a rejection gamma shrinks by one, but never below 1 (a round must draft something): "
                "max(1, gamma - 1).")
    elif n < k:
        hint = ("any rejection (n_accepted < n_drafted) costs exactly one, however many were accepted: "
                "max(1, gamma - 1).")
    else:
        hint = "every drafted token accepted: gamma + 2; otherwise max(1, gamma - 1)."
    raise _fail("08", _S08, what, want, repr(got), hint)


@_checker("08", "the heuristic gamma schedule", _S08, shortcuts=("update_candidate_strategy",))
def check_08(fn, pair=None) -> str:
    """fn(gamma, n_drafted, n_accepted) -> the gamma of the next round: gamma + 2 when every drafted
    token was accepted (n_accepted == n_drafted; a round can draft fewer than gamma), else
    max(1, gamma - 1): Hugging Face's num_assistant_tokens_schedule="heuristic".

    Graded on every case with gamma 1..8, 1 <= n_drafted <= gamma, 0 <= n_accepted <= n_drafted,
    against transformers' own `update_candidate_strategy`; then on the rounds of real runs of our loop
    with both rules on (the confidence threshold cuts rounds short, and gamma grows past 8): the
    function must give the gamma the loop used in each next round. The summary simulates where the
    schedule settles under i.i.d. acceptance.
    """
    import random

    from .models import load_prompts
    from .speculative import speculative_generate

    cases = [(g, k, n) for g in range(1, 9) for k in range(1, g + 1) for n in range(k + 1)]
    hf = [_hf_next_gamma(*c) for c in cases]
    source = "transformers' own update_candidate_strategy" if None not in hf else "Hugging Face's heuristic rule"
    for (g, k, n), h in zip(cases, hf):
        _grade_next_gamma(fn, g, k, n, _next_gamma_reference(g, k, n) if h is None else h,
                          f"next_gamma(gamma={g}, n_drafted={k}, n_accepted={n})")
    pair = _pair(pair)
    tok = pair.tokenizer
    replayed = short = short_full = 0
    for text in load_prompts("heldout")[:2]:
        ids = tok(text, return_tensors="pt").input_ids.to(pair.device)
        out = speculative_generate(pair.target, pair.draft, ids, max_new_tokens=48, gamma=4, schedule="heuristic",
                                   draft_confidence=0.4, eos_token_id=tok.eos_token_id)
        for i, (r, nxt) in enumerate(zip(out.rounds, out.rounds[1:])):
            k = len(r.drafted)
            _grade_next_gamma(fn, r.gamma, k, r.n_accepted, nxt.gamma,
                              f"next_gamma({r.gamma}, {k}, {r.n_accepted}): round {i + 1} of our loop (gamma from 4, "
                              f"schedule='heuristic', draft_confidence=0.4, prompt {text!r}), whose next round used "
                              f"gamma {nxt.gamma}")
            replayed += 1
            short += k < r.gamma
            short_full += k < r.gamma and r.n_accepted == k
    rng, settle = random.Random(0), []
    for alpha in (0.5, 0.8, 0.9):
        g, total = 4, 0
        for _ in range(N_SIM):
            n = 0
            while n < g and rng.random() < alpha:
                n += 1
            total += g
            g = int(fn(g, g, n))
        settle.append(f"{total / N_SIM:.1f} at alpha {alpha:g} ({math.log(3) / math.log(1 / alpha):.1f})")
    return (f"{len(cases)} cases equal to {source}, and {replayed} rounds of our loop replayed: the confidence "
            f"threshold cut {short} of them short, and in {short_full} of those every drafted token was accepted, so "
            f"gamma grew although fewer than gamma were drafted. Under i.i.d. acceptance your schedule averages gamma "
            f"{', '.join(settle)}: near its fixed point ln 3 / ln(1/alpha) in brackets, where one round in three is "
            f"fully accepted.")


# ----------------------------------------------------------------------------------------------
# 09 · batched speculative decoding: keeping ragged rows right-aligned
# ----------------------------------------------------------------------------------------------

_S09 = "ex09_realign.py"


def _realign_reference(m: list[int], L: int) -> list[list[int]]:
    M = max(m)
    return [[j - (M - mb) if j - (M - mb) >= 0 else -1 for j in range(L + M)] for mb in m]


@_checker("09", "realigning ragged rows", _S09, shortcuts=("realign_index",))
def check_09(fn, pair=None) -> str:
    """fn(m, L) -> (B, L + M) long tensor: row b of a right-aligned batch of L columns keeps m[b] new
    columns (L, L+1, ...) this round; the new layout has L + M columns, M = max(m), and column j of
    row b comes from column j - (M - m[b]) of the old row plus its candidates, or is padding (-1).

    Graded on hand-made and random cases against that rule, then by using it: the batched loop of
    utils.batched with the learner's function in place of its own must still equal HF greedy on each
    prompt alone.
    """
    import random

    from . import batched
    from .beyond import left_padded
    from .models import load_prompts
    from .speculative import speculative_generate

    rng = random.Random(0)
    # every row grows by m_b >= 1 (its accepted drafts plus the target's own token; finished rows leave)
    cases = [([2, 1], 3), ([1, 1, 1], 4), ([5], 1), ([1, 3, 1, 2], 2)]
    cases += [([rng.randint(1, 5) for _ in range(rng.randint(1, 6))], rng.randint(1, 8)) for _ in range(20)]
    for m, L in cases:
        what = f"realign(m=torch.tensor({m}), L={L})"
        got = _call(fn, "09", what, torch.tensor(m), L)
        want = _realign_reference(m, L)
        shape = (len(m), L + max(m))
        if not isinstance(got, torch.Tensor):
            kind = type(got).__name__
            raise _fail("09", _S09, what, f"a torch tensor of shape {shape}", f"a {kind}: {got!r}"[:300],
                        f"return a torch tensor (B, L + M), not a {kind}, e.g. via torch.arange(L + M) and "
                        "broadcasting: the batched loop indexes its caches with it.")
        if got.is_floating_point() or got.is_complex() or got.dtype == torch.bool:
            raise _fail("09", _S09, what, f"an integer tensor of shape {shape}", f"a {got.dtype} tensor",
                        "return column indices as integers (torch.arange gives a long tensor): the batched loop "
                        "indexes with them.")
        if tuple(got.shape) != shape:
            raise _fail("09", _S09, what, f"shape {shape}: (B, L + M), M = max(m) = {max(m)}",
                        f"shape {tuple(got.shape)}",
                        "one row per sequence (B = len(m)) and L + M columns: the old L plus the M new columns of the "
                        "row that kept the most.")
        got_l = [[int(v) if v >= 0 else -1 for v in row] for row in got.tolist()]
        if got_l != want:
            hint = ("every row must end in the last column: row b moves right by M - m[b], so new column j reads old "
                    "column j - (M - m[b]); columns with a negative source are padding.")
            raise _fail("09", _S09, what, want, got.tolist(), hint)
    pair = _pair(pair)
    ids, mask = left_padded(pair.tokenizer, load_prompts()[:4], pair.device)
    run = lambda: speculative_generate(pair.target, pair.draft, ids, attention_mask=mask, max_new_tokens=24, gamma=4,  # noqa: E731
                                       eos_token_id=1)
    # float32: each row must equal HF greedy on its prompt alone. In 16 bits a batch can flip a near-tie
    # against one row alone with nothing wrong (notebook 09), so there the loop with the reference index
    # is the yardstick: same batch, same kernels, so any difference is the index's.
    exact = pair.target.dtype == torch.float32
    reference = None if exact else run()  # the loop with its own index
    own = batched.realign_index
    batched.realign_index = lambda m, L, M=None: fn(m.cpu().clone(), L).to(m.device).long()  # m on the CPU, as above
    try:
        out = run()
    finally:
        batched.realign_index = own
    T = ids.shape[1]
    for b, text in enumerate(load_prompts()[:4]):
        if exact:
            one = pair.tokenizer(text, return_tensors="pt").input_ids.to(pair.device)
            with torch.inference_mode():
                ref = pair.target.generate(one, max_new_tokens=24, do_sample=False, eos_token_id=1, pad_token_id=0)[0, one.shape[1]:]
            ref = ref.tolist()
        else:
            ref = reference.sequences[b, T : T + reference.new_tokens[b]].tolist()
        mine = out.sequences[b, T : T + out.new_tokens[b]].tolist()
        if mine != ref:
            raise _fail("09", _S09, f"the batched loop using your function, row {b} ({text!r})", ref, mine,
                        "the index passed the small cases but broke the caches: return a long tensor (B, L + M).")
    yardstick = "HF greedy alone" if exact else f"the loop with the reference index ({pair.target.dtype}: see notebook 09)"
    return (f"Your index passed {len(cases)} cases and, inside the batched loop, kept all 4 rows equal to {yardstick} "
            f"through {out.rounds} rounds ({out.ragged_rounds} of them ragged).")


# ----------------------------------------------------------------------------------------------
# 10 · prompt lookup: the n-gram draft taken from the context
# ----------------------------------------------------------------------------------------------

_S10 = "ex10_find_draft.py"

_S10_CASES = [  # (seq, gamma, max_ngram) -> what find_draft returns; each one says what it checks
    (([5, 6, 7, 8, 5, 6], 3, 2), "a 2-gram match: copy the tokens that followed it"),
    (([1, 2, 9, 1, 2, 8, 1, 2], 1, 2), "the MOST RECENT earlier occurrence wins (8 followed the later '1 2', 9 the earlier)"),
    (([3, 4, 9, 0, 4, 7, 3, 4], 2, 2), "the longest n first: '3 4' matches before '4' alone does"),
    (([3, 9, 4, 5, 6, 4], 2, 2), "no 2-gram match: fall back to n = 1 ('4' at index 2)"),
    (([1, 2, 3, 4], 3, 2), "no match at all: ([], 0)"),
    (([7, 1, 2, 7], 5, 2), "fewer than gamma tokens left: copy what there is"),
    (([2, 2, 2], 4, 2), "an occurrence may overlap the tail: '2 2' at index 0 is followed by the last '2'"),
    (([8], 3, 2), "a single token: nothing before it to match"),
    (([4, 5, 6, 4, 5, 6, 4, 5], 4, 3), "max_ngram = 3: '6 4 5' at index 2"),
]


def _draft_pair_10(got, what: str) -> tuple[list[int], int]:
    """The learner's (draft, n) as (list of ints, int); any other shape fails with the shape to return."""
    def ints(x):  # a list, tuple or 1-D tensor of integer token ids, as a list of ints; else None
        if isinstance(x, torch.Tensor):
            x = x.tolist() if x.dim() == 1 and not x.is_floating_point() else None
        if isinstance(x, (list, tuple)) and all(isinstance(_number(v), numbers.Integral) and not isinstance(v, bool)
                                                for v in x):
            return [int(_number(v)) for v in x]
        return None

    if isinstance(got, (tuple, list)) and len(got) == 2:
        draft, n = ints(got[0]), _number(got[1])
        if draft is not None and isinstance(n, numbers.Integral) and not isinstance(n, bool):
            return draft, int(n)
    raise _fail("10", _S10, what, "a pair (draft, n): a list of token ids and an int", repr(got)[:300],
                "return a tuple (draft, n): draft the tokens copied (a list, up to gamma of them), n the length of the "
                "n-gram that matched (an int); when nothing matches return ([], 0), not None.")


@_checker("10", "the n-gram finder", _S10, shortcuts=("find_draft",))
def check_10(fn) -> str:
    """fn(seq, gamma, max_ngram) -> (draft, n), like `utils.lookup.find_draft`: for n from max_ngram
    down to 1, the most recent earlier occurrence of the last n tokens that has a token after it, and
    up to gamma tokens that followed; ([], 0) when nothing matches.

    Graded on hand-made cases (each says what it checks), then on 300 random sequences over a
    4-token alphabet (full of repeats), against find_draft.
    """
    import random

    from .lookup import find_draft

    rng = random.Random(0)
    cases = list(_S10_CASES)
    for _ in range(300):
        seq = [rng.randrange(4) for _ in range(rng.randrange(1, 16))]
        cases.append(((seq, rng.randrange(1, 6), rng.randrange(1, 4)), "a random sequence"))
    for (seq, gamma, max_ngram), why in cases:
        expected = find_draft(list(seq), gamma, max_ngram)
        what = f"find_draft({seq}, gamma={gamma}, max_ngram={max_ngram}): {why}"
        got = _draft_pair_10(_call(fn, "10", what, list(seq), gamma, max_ngram), what)
        if got != expected:
            raise _fail("10", _S10, what, expected, repr(got),
                        "try n from max_ngram down to 1; for each, scan start positions from right to left (the last n "
                        "tokens themselves do not count: a match needs a token after it) and return "
                        "(seq[start + n : start + n + gamma], n) at the first hit.")
    return f"{len(cases)} sequences, the same drafts as utils.lookup.find_draft."


# ----------------------------------------------------------------------------------------------
# 11 · self-speculation: the early-exit head
# ----------------------------------------------------------------------------------------------

_S11 = "ex11_exit_head.py"


@_checker("11", "the early-exit head", _S11, shortcuts=("exit_logits",))
def check_11(fn, pair=None) -> str:
    """fn(target, hidden) -> logits: a layer's output hidden (1, T, d) through the target's final norm,
    LM head and soft-capping (1, T, V). Checked against `utils.selfspec.exit_logits` at the first, the
    middle and the last-but-one layer's output of a fixed text, then at the middle one with the config's
    final_logit_softcapping set to None and to 10 (the head must read the cap, not hard-code it)."""
    from .selfspec import exit_logits, hidden_states, softcap

    target = _pair(pair).target
    ids = torch.arange(5, 37).view(1, -1).to(target.device)  # 32 token ids, a fixed text
    hs = hidden_states(target, ids)
    for k in (1, len(hs) // 2, len(hs) - 2):
        what = f"exit_head(target, hidden) with hidden = the output of layer {k}, shape {tuple(hs[k].shape)}"
        with torch.inference_mode():  # the expected logits first: the learner's function may change hidden in place
            want = exit_logits(target, hs[k])
            no_norm = softcap(target.lm_head(hs[k]), target.config)
            no_cap = target.lm_head(target.model.norm(hs[k]))
            got = _call(fn, "11", what, target, hs[k].clone())
        if not isinstance(got, torch.Tensor) or got.shape != want.shape:
            shape = tuple(got.shape) if isinstance(got, torch.Tensor) else type(got).__name__
            raise _fail("11", _S11, what, f"logits of shape {tuple(want.shape)}", shape, "return the head's logits for every position.")
        # the rounding of the target's dtype: float32 1e-4; bf16 logits (a Gemma pair on a GPU) differ by
        # a few of its steps (eps 2^-7) when a learner computes in another order or dtype
        tol = 1e-4 if target.dtype == torch.float32 else 8 * torch.finfo(target.dtype).eps
        close = lambda a, b: torch.allclose(a.float(), b.float(), atol=tol, rtol=tol)  # noqa: E731
        if not close(got, want):
            cap = getattr(target.config, "final_logit_softcapping", None)
            attn_cap = getattr(target.config, "attn_logit_softcapping", None)
            raw = no_cap.float()  # norm -> lm_head, before any cap
            if close(got, no_norm):
                hint = "apply the target's final norm (target.model.norm) before the LM head."
            elif cap and close(got, raw.clamp(-cap, cap)):
                hint = "soft-capping is cap * tanh(logits / cap), a smooth curve, not a clamp to [-cap, cap]."
            elif cap and attn_cap and attn_cap != cap and close(got, attn_cap * torch.tanh(raw / attn_cap)):
                hint = "that cap is the attention's (attn_logit_softcapping); the logits use final_logit_softcapping."
            elif close(got, no_cap):
                hint = ("apply Gemma2's soft-capping after the LM head: cap * tanh(logits / cap), with cap = "
                        "getattr(target.config, 'final_logit_softcapping', None) (models without one, such as "
                        "SmolLM2's Llama, return the logits as they are).")
            else:
                hint = "norm -> lm_head -> soft-capping, in that order."
            raise _fail("11", _S11, what, "logits equal to norm -> lm_head -> soft-capping",
                        f"logits that differ by up to {(got - want).abs().max().item():.3g}", hint)
    _check_11_reads_the_cap(fn, target, hs[len(hs) // 2], close)
    return ("Your head equals norm -> lm_head -> soft-capping at three exit layers, and follows the model's own "
            "cap (none, or another value) when its config changes.")


def _check_11_reads_the_cap(fn, target, hidden, close) -> None:
    """The same head on a model configured without a cap, then with cap 10: a head that hard-codes the
    shipped pair's cap (30) would be wrong on SmolLM2 (no cap). The config is restored afterwards."""
    from .selfspec import exit_logits

    had, cap0 = hasattr(target.config, "final_logit_softcapping"), getattr(target.config, "final_logit_softcapping", None)
    try:
        for cap in (None, 10.0):
            target.config.final_logit_softcapping = cap
            what = (f"exit_head(target, hidden) with target.config.final_logit_softcapping set to {cap} for this "
                    "call (another model's setting; SmolLM2 has none)")
            with torch.inference_mode():
                want = exit_logits(target, hidden)
                got = _call(fn, "11", what, target, hidden.clone())
            if not (isinstance(got, torch.Tensor) and got.shape == want.shape and close(got, want)):
                raise _fail("11", _S11, what, f"logits {'without a cap' if cap is None else f'capped at {cap:g}'}",
                            "logits that do not follow the config",
                            "read the cap from the model each call, getattr(target.config, 'final_logit_softcapping', "
                            "None), and skip the capping when it is None: a hard-coded 30 is right for Gemma2 only.")
    finally:
        if had:
            target.config.final_logit_softcapping = cap0
        else:
            del target.config.final_logit_softcapping


# ----------------------------------------------------------------------------------------------
# 12 · serving engines: SGLang's flags for a chain of gamma drafted tokens
# ----------------------------------------------------------------------------------------------

_S12 = "ex12_engine_flags.py"
_S12_ROOT = ("SGLang's --speculative-num-draft-tokens counts the draft tree's nodes INCLUDING its root (the last "
             "verified token): gamma drafted tokens need gamma + 1.")


def _flag_pairs(got) -> dict[str, str] | str:
    """The learner's flags as {flag: value}, or a string saying why they cannot be read that way."""
    import shlex

    if isinstance(got, str):
        try:
            got = shlex.split(got)
        except ValueError as e:  # an unbalanced quote
            return f"your string cannot be split into flags ({e}): return a list such as ['--flag', 'value', ...]."
    if not isinstance(got, (list, tuple)):
        return (f"return a list of strings such as ['--speculative-algorithm', 'NGRAM', ...], "
                f"not a {type(got).__name__}.")
    items = []
    for x in map(str, got):  # "--flag=value", as argparse also accepts, counts as "--flag", "value"
        items += x.split("=", 1) if x.startswith("--") and "=" in x else [x]
    if len(items) % 2 or not all(f.startswith("--") for f in items[::2]):
        return "give each flag followed by its value: ['--flag', 'value', '--flag', 'value', ...]."
    flags = items[::2]
    twice = sorted({f for f in flags if flags.count(f) > 1})
    if twice:
        return f"each flag once: {', '.join(twice)} appears more than once."
    return dict(zip(flags, items[1::2]))


def _hint_12(method: str, gamma: int, want: dict, got: dict) -> str:
    """What is wrong, the first difference that has a lesson in it."""
    algo = "--speculative-algorithm"
    if got.get(algo) != want[algo]:
        return ("STANDALONE is SGLang's algorithm for a separate small draft model; NGRAM is prompt lookup (no draft "
                f"model). For method {method!r}: {want[algo]}.")
    n = got.get("--speculative-num-draft-tokens")
    if n != want["--speculative-num-draft-tokens"]:
        return _S12_ROOT + (" You gave gamma." if n == str(gamma) else "")
    if method == "ngram":
        breadth = ("--speculative-ngram-min-bfs-breadth", "--speculative-ngram-max-bfs-breadth")
        if any(got.get(f) != "1" for f in breadth):
            return ("NGRAM drafts a TREE: a node of its n-gram tree may branch into up to "
                    "--speculative-ngram-max-bfs-breadth children (SGLang's default is 10). Set "
                    "--speculative-ngram-min-bfs-breadth 1 and --speculative-ngram-max-bfs-breadth 1 for a chain.")
        extra = sorted(set(got) - set(want))
        if extra:
            return (f"NGRAM has no draft model and no draft steps: leave out {', '.join(extra)} (SGLang sets NGRAM's "
                    "topk from the breadth itself).")
    else:
        if got.get("--speculative-eagle-topk") != "1":
            return ("--speculative-eagle-topk is the branching per draft step (the name is EAGLE's; STANDALONE uses "
                    "it too): 1 makes a chain, more draws a tree.")
        if got.get("--speculative-num-steps") != str(gamma):
            return "--speculative-num-steps is the depth of the chain: gamma draft steps."
        if got.get("--speculative-draft-model-path") != want["--speculative-draft-model-path"]:
            return "--speculative-draft-model-path is the draft model: pass the draft argument through."
    missing, extra = sorted(set(want) - set(got)), sorted(set(got) - set(want))
    return (f"missing flags: {', '.join(missing) or 'none'}; flags SGLang's chain does not need: "
            f"{', '.join(extra) or 'none'}.")


@_checker("12", "SGLang's flags for a chain", _S12, shortcuts=("sglang_config",))
def check_12(fn) -> str:
    """fn(method, gamma, draft) -> the --speculative-* flags (a list of strings, or one string) that make SGLang
    draft a chain of gamma tokens per round: method 'draft' (STANDALONE, the draft model at the path `draft`)
    or 'ngram' (NGRAM, no draft model; `draft` is None). Compared flag by flag, in any order, with what
    `utils.serving.sglang_config` writes after `--model TARGET`, for gamma 1, 2, 3, 4, 5 and 8 on two pairs."""
    import shlex

    from .serving import sglang_config

    cases = [(method, gamma, pair) for gamma in (4, 1, 2, 3, 5, 8) for method in ("draft", "ngram")
             for pair in ("gemma2-2b-27b", "smollm2-135m-1.7b")]
    for method, gamma, pair in cases:
        cfg = sglang_config(pair, method, gamma)
        assert cfg.argv[3] == "--model"  # python3 -m sglang.launch_server --model TARGET, then the flags
        want = dict(zip(cfg.argv[5::2], cfg.argv[6::2]))
        draft = cfg.draft if method == "draft" else None
        what = f"sglang_chain_flags({method!r}, gamma={gamma}, draft={draft!r})"
        got = _call(fn, "12", what, method, gamma, draft)
        flags = _flag_pairs(got)
        expected = shlex.join(cfg.argv[5:])
        if isinstance(flags, str):
            raise _fail("12", _S12, what, expected, repr(got), flags)
        if flags != want:
            raise _fail("12", _S12, what, expected, shlex.join(a for kv in flags.items() for a in kv),
                        _hint_12(method, gamma, want, flags))
    example = shlex.join(sglang_config("gemma2-2b-27b", "ngram", 4).argv[5:])
    gammas = sorted({gamma for _, gamma, _ in cases})
    return (f"Your flags equal utils.serving.sglang_config in {len(cases)} cases (draft model and n-gram, "
            f"gamma {', '.join(map(str, gammas[:-1]))} and {gammas[-1]}, two pairs); NGRAM with gamma 4 is: {example}")
