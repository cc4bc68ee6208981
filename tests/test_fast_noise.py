"""The compiled loop (utils/fast.py, speculative_compiled) samples every token as argmax(probs / noise)
with its own row of Exp(1) noise (`exp_noise`, `sample_with_noise`). If the token the target adds (a
resample after a rejection, or the bonus) reused a drafted token's noise row, each token would still
look correctly distributed on its own, and a distribution test would hardly see it; so this checks
the structure: it records every call of `sample_with_noise` and asserts that no noise row serves two
tokens, within a round or across rounds. Cheap: two random one-layer Gemma2 models with a 64-token
vocabulary, compile=False (the loop's code, eager passes).
"""

import pytest
import torch

from utils import fast
from utils.shapes import gemma2_config, random_model

CFG = dict(num_hidden_layers=1, hidden_size=32, intermediate_size=64, num_attention_heads=2, num_key_value_heads=1,
           head_dim=16, vocab_size=64)


@pytest.fixture(scope="module")
def models():
    return random_model(gemma2_config("2b", **CFG), seed=0), random_model(gemma2_config("2b", **CFG), seed=1)


def run_recorded(monkeypatch, models, noise_factory=None, max_new_tokens=40, gamma=3):
    """speculative_compiled at T = 1 with sample_with_noise recorded. noise_factory(real_exp_noise)
    may replace exp_noise (to plant a bug). Returns (rounds, [(probs, noise, token) per call])."""
    calls = []
    real_sample = fast.sample_with_noise

    def recording_sample(probs, noise):
        token = real_sample(probs, noise)
        calls.append((probs.clone(), noise.clone(), int(token)))
        return token

    monkeypatch.setattr(fast, "sample_with_noise", recording_sample)
    if noise_factory is not None:
        monkeypatch.setattr(fast, "exp_noise", noise_factory(fast.exp_noise))
    target, draft = models
    ids = torch.tensor([[2, 5, 7, 9]])
    g = torch.Generator().manual_seed(0)
    rounds, new, *_ = fast.speculative_compiled(target, draft, ids, max_new_tokens=max_new_tokens, gamma=gamma,
                                                temperature=1.0, compile=False, generator=g)
    assert len(new) == max_new_tokens
    return rounds, calls


def noise_reuse(rounds, calls) -> list[str]:
    """Each round makes len(drafted) draft calls, then one for the added token (checked against the
    round's record, so the split is right). Returns what went wrong: an added token drawn with a
    drafted token's noise row, or any row drawn for two tokens."""
    assert len(calls) == sum(len(r.drafted) + 1 for r in rounds)
    problems, seen, i = [], [], 0
    for j, r in enumerate(rounds):
        k = len(r.drafted)
        drafts, added = calls[i : i + k], calls[i + k]
        i += k + 1
        assert [c[2] for c in drafts] == r.drafted and added[2] == r.token
        if any(torch.equal(added[1], c[1]) for c in drafts):
            problems.append(f"round {j} ({r.kind}): the added token reused a drafted token's noise row")
        for c in drafts + [added]:
            if any(torch.equal(c[1], s) for s in seen):
                problems.append(f"round {j}: a noise row drawn for an earlier token")
            seen.append(c[1])
    return problems


def test_the_added_token_has_its_own_noise_row(monkeypatch, models):
    rounds, calls = run_recorded(monkeypatch, models)
    kinds = [r.kind for r in rounds]
    assert "resample" in kinds and "bonus" in kinds  # both kinds of added token were drawn
    assert all(c[1].shape == (CFG["vocab_size"],) and bool((c[1] > 0).all()) for c in calls)
    assert len({float(c[1].sum()) for c in calls}) == len(calls)  # real noise, not ones (greedy)
    assert noise_reuse(rounds, calls) == []


def test_the_check_sees_a_reused_row(monkeypatch, models):
    """The bug the test is for, planted: exp_noise returns k + 1 rows whose last (the added token's)
    is a copy of the last drafted token's. The check must report it in every round that drafted."""

    def reuse_last_draft_row(real):
        def exp_noise(shape, device, generator=None, greedy=False):
            noise = real(shape, device, generator, greedy)
            if len(shape) == 2 and shape[0] > 1:
                noise[-1] = noise[-2]
            return noise

        return exp_noise

    rounds, calls = run_recorded(monkeypatch, models, reuse_last_draft_row)
    problems = noise_reuse(rounds, calls)
    reused = [p for p in problems if "reused a drafted token's noise row" in p]
    assert len(reused) == sum(len(r.drafted) > 0 for r in rounds) > 0
