"""Shared fixtures. Tests run offline on the shipped tiny pair, on the CPU."""

import json
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _torch_threads_restored():
    """A command line under test may call torch.set_num_threads (selfspec train: 1) before it stops;
    the tests after it keep the session's thread count."""
    n = torch.get_num_threads()
    yield
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)


@pytest.fixture
def no_cpp_compiler(monkeypatch):
    """`with no_cpp_compiler():` inductor finds no C++ compiler inside the block (a laptop without g++
    or Xcode's tools)."""
    import torch._inductor.config as inductor_config

    monkeypatch.setenv("CXX", "no-such-cl")  # Windows: inductor looks for $CXX or cl instead
    return lambda: inductor_config.patch({"cpp.cxx": ("no-such-c++",)})


@pytest.fixture(scope="session")
def pair():
    from utils.models import load_pair

    return load_pair("tiny", device="cpu")


@pytest.fixture(scope="session")
def prompts():
    return json.loads((ROOT / "data" / "prompts.json").read_text())


@pytest.fixture(scope="session")
def encode(pair):
    def _encode(text: str) -> torch.Tensor:
        return pair.tokenizer(text, return_tensors="pt").input_ids  # (1, T)

    return _encode


@pytest.fixture(scope="session")
def greedy_refs(pair, prompts, encode):
    """Target greedy continuations (HF generate) of 20 workshop prompts: 40 new tokens, and 100 for
    every 4th (prompt + 100 > the sliding window of 64, so the sliding layers' masks and cache matter).
    Shared by the eager and the compiled loops' tests."""
    eos = pair.tokenizer.eos_token_id
    refs = []
    for i, text in enumerate(prompts["workshop"][:20]):
        ids = encode(text)
        n = 100 if i % 4 == 0 else 40
        with torch.inference_mode():
            ref = pair.target.generate(ids, max_new_tokens=n, do_sample=False, eos_token_id=eos, pad_token_id=0)
        refs.append((ids, n, ref))
    assert sum(r[2].shape[1] > pair.target.config.sliding_window for r in refs) >= 5
    return refs



def _next_token_probs(model, ids, **warp):
    from utils.sampling import probs_from_logits

    with torch.inference_mode():
        return probs_from_logits(model(ids).logits[0, -1], **warp).double()  # (V,)


def joint_first_two_pvalue(draws, target, draft, ids, top=8, **warp):
    """Chi-square p-value of sampled pairs (x1, x2), the first two new tokens after `ids` (1, T),
    against the target's exact joint p(x1) p(x2 | x1), computed from the target alone (no draft, no
    accept/reject).

    Cells, fixed before looking at the draws (utils.speculative.check_bins at each position): for each
    of the `top` most likely x1, its `top` most likely x2 one by one, then x2's tail split in two: the
    tokens the draft over-weights (q(x2 | x1) > p(x2 | x1)) and the rest; x1 outside its top is split
    the same way by q(x1) > p(x1). A wrong rule after a rejection moves probability between those two
    halves of a tail (resampling from p instead of norm(max(0, p - q)) gives the draft's favourites too
    much): with each tail pooled into one cell, that known-wrong rule passed these tests once; split,
    it failed them when measured (not asserted here: tests/test_exactness_mutations.py asserts that
    each known mutation of the rule fails the same kind of statistic). The draft is used only to choose the cells, so under a correct sampler the statistic is
    chi-square whatever they are. Cells expecting fewer than 5 draws are pooled; a draw in a cell of
    target probability 0 gives 0."""
    from utils.speculative import check_bins, pooled_chisquare

    p1, q1 = _next_token_probs(target, ids, **warp), _next_token_probs(draft, ids, **warp)
    firsts = torch.argsort(p1, descending=True)[:top].tolist()
    cells = [(None, m, p1) for m in check_bins(p1, q1, top)[top:]]  # (x1 | None, mask over x2 or x1, p)
    for a in firsts:
        x = torch.cat([ids, torch.tensor([[a]])], 1)
        p2, q2 = _next_token_probs(target, x, **warp), _next_token_probs(draft, x, **warp)
        cells += [(a, m, p2) for m in check_bins(p2, q2, top)]
    probs = np.array([float((p1[a] if a is not None else 1.0) * pr[m].sum()) for a, m, pr in cells])
    counts = np.zeros(len(cells))
    for a, b in draws:
        key, tok = (a, b) if a in firsts else (None, a)
        counts[next(i for i, (c, m, _) in enumerate(cells) if c == key and m[tok])] += 1
    probs /= probs.sum()  # the float32 softmaxes sum to 1 up to rounding
    if counts[probs == 0].sum() > 0:
        return 0.0
    return pooled_chisquare(counts[probs > 0], probs[probs > 0])[0]


@pytest.fixture(scope="session")
def joint_pvalue():
    """`joint_first_two_pvalue`, for the end-to-end exactness tests of every loop."""
    return joint_first_two_pvalue


def second_token_was_verified(rounds) -> bool:
    """Whether the second new token was decided by the accept/reject rule (an accepted draft token or a
    resample at a drafted position), not a bonus or a plain target step (k = 0, near max_new_tokens):
    a joint test of (x1, x2) checks the rule at a later position only through such runs."""
    first = rounds[0]
    if len(first.emitted) >= 2:  # x2 from round 1, position 2
        return len(first.drafted) >= 2
    return len(rounds) > 1 and len(rounds[1].drafted) >= 1  # x2 opens round 2


@pytest.fixture(scope="session")
def x2_verified():
    """`second_token_was_verified`."""
    return second_token_was_verified
