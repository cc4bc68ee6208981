"""utils.sampling.probs_from_logits against an independent reference: transformers' own warpers.

Every statistical test computes the target's exact (warped) law with probs_from_logits, and the loops
warp with it too, so a wrong top-k tie rule or top-p boundary would cancel out of those tests. Here the
same logits go through Hugging Face's TemperatureLogitsWarper, TopKLogitsWarper and TopPLogitsWarper
(generation/logits_process.py), in the order `generate` applies them (generation/utils.py,
_get_logits_processor: temperature, top-k, top-p), then a softmax. Both must keep the same tokens
(exactly) with the same probabilities: on random logits, on logits full of exact ties (the k-th value
tied: HF keeps every token tied with it), and on logits whose cumulative probabilities land exactly
on 1 - top_p (HF removes a token whose cumulative probability, summed from the least likely, is
<= 1 - top_p; the most likely token always stays).
"""

import itertools

import pytest
import torch
from transformers.generation.logits_process import TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

from utils.sampling import probs_from_logits


def hf_probs(logits: torch.Tensor, temperature: float, top_k, top_p) -> torch.Tensor:
    """logits (..., V) -> probabilities, warped as HF generate(do_sample=True) warps them."""
    scores = logits.float().reshape(-1, logits.shape[-1]).clone()  # HF's warpers take (batch, V)
    if temperature != 1.0:  # generate adds each warper only when it changes something
        scores = TemperatureLogitsWarper(float(temperature))(None, scores)
    if top_k is not None and top_k != 0:
        scores = TopKLogitsWarper(top_k=int(top_k))(None, scores)
    if top_p is not None and top_p < 1.0:
        scores = TopPLogitsWarper(top_p=top_p)(None, scores)
    return scores.softmax(-1).reshape(logits.shape)


def assert_same(logits, temperature, top_k, top_p):
    ours = probs_from_logits(logits, temperature=temperature, top_k=top_k, top_p=top_p)
    ref = hf_probs(logits, temperature, top_k, top_p)
    assert torch.equal(ours > 0, ref > 0), f"different support at T={temperature}, top_k={top_k}, top_p={top_p}"
    torch.testing.assert_close(ours, ref, rtol=0, atol=1e-6)


TEMPERATURES = [0.5, 1.0, 1.7]
TOP_K = [None, 1, 2, 5, 40]  # 40: more than some vocabularies below
TOP_P = [None, 0.05, 0.3, 0.5, 0.8, 0.95, 1.0]


@pytest.mark.parametrize("shape", [(1, 7), (4, 33), (2, 3, 50)], ids=str)
def test_random_logits(shape):
    g = torch.Generator().manual_seed(sum(shape))
    logits = 3 * torch.randn(shape, generator=g)
    for temperature, top_k, top_p in itertools.product(TEMPERATURES, TOP_K, TOP_P):
        assert_same(logits, temperature, top_k, top_p)


@pytest.mark.parametrize("shape", [(6, 8), (3, 2, 20)], ids=str)
def test_logits_with_exact_ties(shape):
    """Integer logits in a small range: most rows have ties at the k-th value and across the top-p cut."""
    g = torch.Generator().manual_seed(1)
    logits = torch.randint(-2, 3, shape, generator=g).float()
    kth_tied = 0
    for row in logits.reshape(-1, shape[-1]):
        top = row.sort(descending=True).values
        kth_tied += bool(top[1] == top[2])  # top_k = 2 keeps more than 2 tokens in this row
    assert kth_tied > 0
    for temperature, top_k, top_p in itertools.product(TEMPERATURES, TOP_K, TOP_P):
        assert_same(logits, temperature, top_k, top_p)


def test_top_k_keeps_every_token_tied_with_the_kth():
    logits = torch.tensor([[3.0, 1.0, 2.0, 2.0, 0.0]])
    probs = probs_from_logits(logits, top_k=2)
    assert (probs > 0).tolist() == [[True, False, True, True, False]]  # 3 tokens: two tied at the 2nd value
    assert_same(logits, 1.0, 2, None)


@pytest.mark.parametrize("V, top_p, kept", [(4, 0.75, 3), (4, 0.5, 2), (4, 0.25, 1), (8, 0.625, 5), (8, 0.875, 7)])
def test_top_p_boundary_on_an_exact_cumulative_sum(V, top_p, kept):
    """Uniform logits: every probability is exactly 1 / V, every cumulative sum j / V is exact, and
    1 - top_p equals one of them. A token whose cumulative sum equals 1 - top_p is removed, so exactly
    V * top_p tokens stay (which of the tied ones: the sort's choice, the same in both)."""
    logits = torch.zeros(2, V)
    assert 1 - top_p == (V - kept) / V  # exact in binary
    assert ((probs_from_logits(logits, top_p=top_p) > 0).sum(-1) == kept).all()
    assert_same(logits, 1.0, None, top_p)


def test_top_p_boundary_after_top_k():
    """top-k first keeps 4 equal logits (probability exactly 1/4 each after the softmax), then top_p
    0.75 puts 1 - top_p = 0.25 exactly on the first cumulative sum: 3 tokens stay. Applied in the other
    order (top-p first) 4 would."""
    logits = torch.tensor([[0.0, 0.0, -1.0, 0.0, -2.0, 0.0, -3.0]])
    probs = probs_from_logits(logits, top_k=4, top_p=0.75)
    assert int((probs > 0).sum()) == 3 and set(probs.nonzero()[:, 1].tolist()) <= {0, 1, 3, 5}
    assert_same(logits, 1.0, 4, 0.75)
    assert int((probs_from_logits(logits, top_k=4, top_p=0.74) > 0).sum()) == 3  # 1 - top_p = 0.26 > 0.25
    assert_same(logits, 1.0, 4, 0.74)
    assert int((probs_from_logits(logits, top_k=4, top_p=0.76) > 0).sum()) == 4  # 0.24 < every cumulative sum
    assert_same(logits, 1.0, 4, 0.76)
    top_p_first = probs_from_logits(probs_from_logits(logits, top_p=0.75).log(), top_k=4)
    assert int((top_p_first > 0).sum()) == 4  # the order matters, and both follow HF's
