"""The tiny pair's paths on every device this machine has: the CPU always, CUDA where a GPU is
present (skipped, with the reason, elsewhere; CI has none). Learners run the notebooks on Colab GPUs,
where load_pair() puts the models on CUDA, while every other test here runs on the CPU: these run the
same calls a notebook makes, with the models on the device and with the CPU generator that
`torch.Generator()` gives, and check exactness there. On a GPU session:
`bash scripts/gpu_run.sh cuda-tests` (float32, so greedy output must equal HF greedy token for token).
"""

import pytest
import torch

from utils import sampling
from utils.beyond import left_padded
from utils.models import load_pair
from utils.sampling import exponential, multinomial, probs_from_logits, rand
from utils.speculative import distribution_check, speculative_generate

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU here"))]
PROMPTS = ["The if statement is used for", "A function definition defines", "The while statement is used to"]


@pytest.fixture(scope="module", params=DEVICES)
def dpair(request):
    """The tiny pair on one device, in float32 (exact comparisons with HF greedy hold in float32)."""
    return load_pair("tiny", device=request.param, dtype=torch.float32)


def _ids(dpair, text):
    return dpair.tokenizer(text, return_tensors="pt").input_ids.to(dpair.device)  # (1, T)


def _hf_greedy(model, ids, n):
    with torch.inference_mode():
        return model.generate(ids, max_new_tokens=n, do_sample=False, eos_token_id=1, pad_token_id=0)


# ---------------------------------------------------------------- random draws with a generator elsewhere


def test_draws_use_the_generator_where_it_lives(monkeypatch):
    """A CPU generator with tensors on another device: the draw happens on the generator's device (its
    state advances, the numbers are those it gives on the CPU) and lands on the tensors' device. The
    'meta' device stands in for a GPU here (it has no generator of its own)."""
    for draw, ref in ((lambda d, g: rand((2, 3), d, g), lambda g: torch.rand((2, 3), generator=g)),
                      (lambda d, g: exponential((4,), d, g), lambda g: torch.empty(4).exponential_(generator=g))):
        g, g_ref = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
        out = draw(torch.device("meta"), g)
        assert out.device.type == "meta"
        assert torch.equal(g.get_state(), (ref(g_ref), g_ref)[1].get_state())  # the same numbers were drawn
        assert torch.equal(draw("cpu", torch.Generator().manual_seed(5)), ref(torch.Generator().manual_seed(5)))
    # multinomial needs the probabilities' values on the generator's device (a meta tensor has none):
    # the branch for a generator elsewhere, taken on the CPU, gives what torch.multinomial gives
    p = torch.tensor([[0.2, 0.8], [0.9, 0.1]])
    same = torch.multinomial(p, 3, True, generator=torch.Generator().manual_seed(2))
    assert torch.equal(multinomial(p, 3, torch.Generator().manual_seed(2), replacement=True), same)
    monkeypatch.setattr(sampling, "_elsewhere", lambda generator, device: generator is not None)
    assert torch.equal(multinomial(p, 3, torch.Generator().manual_seed(2), replacement=True), same)


# ---------------------------------------------------------------- the loops, on each device


@pytest.mark.parametrize("gamma", [1, 4])
def test_greedy_equals_hf_greedy(dpair, gamma):
    for text in PROMPTS:
        ids = _ids(dpair, text)
        out = speculative_generate(dpair.target, dpair.draft, ids, max_new_tokens=24, gamma=gamma, eos_token_id=1)
        assert out.sequences.device == ids.device
        assert out.sequences.tolist() == _hf_greedy(dpair.target, ids, 24).tolist(), (text, gamma)


def test_sampling_with_a_cpu_generator_follows_the_target(dpair):
    """torch.Generator() (a CPU generator, as the notebooks seed one) with the models on the device:
    600 first tokens at T = 1 follow the target's distribution (chi-square on the tests' bins). This
    checks the plumbing (random numbers drawn on the CPU, tokens sampled on the device) and, at 600
    runs, the rule too: a known-wrong one (resample from p) fails about 95% of the time (300 runs:
    about half); its full-power proof is on the CPU (test_exactness_mutations.py, test_speculative.py)."""
    ids = _ids(dpair, "The try statement specifies")
    with torch.inference_mode():
        p = probs_from_logits(dpair.target(ids).logits[0, -1], temperature=1.0)  # (V,)
        q = probs_from_logits(dpair.draft(ids).logits[0, -1], temperature=1.0)  # (V,)
    g = torch.Generator().manual_seed(0)
    firsts = [speculative_generate(dpair.target, dpair.draft, ids, max_new_tokens=3, gamma=2, temperature=1.0,
                                   generator=g).sequences[0, ids.shape[1]].item() for _ in range(600)]
    assert distribution_check(firsts, p, q=q)["pvalue"] > 1e-3


def test_the_forward_clocks_on_the_device(dpair):
    """The eager loop's per-model clocks (CUDA: timing events, read at the end; no sync of their own)
    and the benchmark's ForwardClock (hooks around HF generate's passes): positive, inside the run's
    own time, one hooked call per new token."""
    from utils.bench import ForwardClock, hf_generate

    ids = _ids(dpair, PROMPTS[0])
    out = speculative_generate(dpair.target, dpair.draft, ids, max_new_tokens=16, gamma=3, eos_token_id=None)
    assert 0 < out.draft_time and 0 < out.target_time and out.draft_time + out.target_time < out.total_time
    assert 0 < out.target_first_time < out.target_time
    with ForwardClock(dpair.target) as clock:
        seq, seconds = hf_generate(dpair.target, ids, 12)
    assert clock.calls == seq.shape[1] - ids.shape[1] == 12 and 0 < clock.forward_s < seconds


def test_batched_rows_equal_hf_greedy_alone(dpair):
    ids, mask = left_padded(dpair.tokenizer, PROMPTS, dpair.device)
    out = speculative_generate(dpair.target, dpair.draft, ids, attention_mask=mask, max_new_tokens=20, gamma=3,
                               eos_token_id=1)
    T = ids.shape[1]
    for b, text in enumerate(PROMPTS):
        ref = _hf_greedy(dpair.target, _ids(dpair, text), 20)[0, -20:].tolist()
        assert out.sequences[b, T : T + out.new_tokens[b]].tolist() == ref, text


def test_adaptive_lookup_and_self_speculation_stay_exact(dpair):
    from utils.lookup import prompt_lookup_generate
    from utils.selfspec import early_exit_draft

    ids = _ids(dpair, PROMPTS[0])
    ref = _hf_greedy(dpair.target, ids, 24).tolist()
    adaptive = speculative_generate(dpair.target, dpair.draft, ids, max_new_tokens=24, gamma=4, eos_token_id=1,
                                    draft_confidence=0.4, schedule="heuristic")
    lookup = prompt_lookup_generate(dpair.target, ids, max_new_tokens=24, gamma=4, eos_token_id=1)
    selfspec = speculative_generate(dpair.target, early_exit_draft(dpair.target, 6), ids, max_new_tokens=24, gamma=4,
                                    eos_token_id=1)
    assert adaptive.sequences.tolist() == lookup.sequences.tolist() == selfspec.sequences.tolist() == ref
    g = torch.Generator().manual_seed(0)  # sampling with a CPU generator runs on every path
    for out in (speculative_generate(dpair.target, dpair.draft, ids, max_new_tokens=12, gamma=4, temperature=1.0,
                                     generator=g, draft_confidence=0.4, schedule="heuristic"),
                prompt_lookup_generate(dpair.target, ids, max_new_tokens=12, gamma=4, temperature=1.0, generator=g)):
        assert out.sequences.shape[1] == ids.shape[1] + 12


def test_compiled_backend_greedy_and_sampling(dpair):
    """The compiled backend on the device (inductor on a CPU; CUDA graphs through
    mode="reduce-overhead" on a GPU): greedy equals HF greedy, and sampling with a CPU generator runs.
    On CUDA each compiled step must also be recorded as a CUDA graph and replayed: a skip (a mutated
    input not marked static, a CPU tensor inside the step, ...) keeps the tokens exact but pays every
    kernel launch again, which is what the backend exists to remove. inductor only prints a warning
    and goes on; utils.fast.cudagraph_watch keeps it (this is the first compile on the device:
    the eager tests above compile nothing)."""
    from utils import fast
    from utils.decoding import autoregressive_generate

    with fast.cudagraph_watch() as skips:
        for text in PROMPTS[:2]:  # each step runs many times: warm-up, recording, replays
            ids = _ids(dpair, text)
            ref = _hf_greedy(dpair.target, ids, 24).tolist()
            spec = speculative_generate(dpair.target, dpair.draft, ids, max_new_tokens=24, gamma=4, eos_token_id=1,
                                        backend="compiled")
            ar = autoregressive_generate(dpair.target, ids, 24, eos_token_id=1, backend="compiled")
            assert spec.sequences.tolist() == ar.sequences.tolist() == ref, text
            # the draft's and the target's parts of the rounds are timed on every device (CUDA: timing
            # events, read after the round's one sync) and fit, with the prefill, inside the run
            assert spec.draft_time > 0 and spec.target_time > 0, (spec.draft_time, spec.target_time)
            assert spec.draft_time + spec.target_time + spec.prefill_time < spec.total_time
            assert spec.host_syncs == len(spec.rounds)
    assert skips == [], skips
    g = torch.Generator().manual_seed(0)
    out = speculative_generate(dpair.target, dpair.draft, ids, max_new_tokens=12, gamma=4, temperature=1.0,
                               generator=g, backend="compiled")
    assert out.sequences.shape[1] == ids.shape[1] + 12

