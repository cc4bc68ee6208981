"""Helpers of notebooks 01-03: greedy rounding check, sampling check, acceptance, timing, rendering."""

import types

import pytest
import torch

from utils.decoding import (
    autoregressive_timed,
    bandwidth_bounds,
    best_of,
    datasheet_bandwidth,
    read_bandwidth,
    timed_generate,
)
from utils.render import comparison_html
from utils.sampling import probs_from_logits
from utils.speculative import (
    acceptance_stats,
    binned_tv,
    check_bins,
    distribution_check,
    greedy_check,
    speculative_generate,
    verification_logits,
)

# ---------------------------------------------------------------- greedy_check, verification_logits


@pytest.fixture(scope="module")
def greedy_run(pair, encode):
    ids = encode("An exception is raised when")  # (1, T)
    with torch.inference_mode():
        gen = pair.target.generate(ids, max_new_tokens=72, do_sample=False, output_logits=True,
                                   return_dict_in_generate=True, eos_token_id=None, pad_token_id=0)
    spec = speculative_generate(pair.target, pair.draft, ids, max_new_tokens=72, gamma=4)
    return ids, gen, spec


def test_verification_logits_replay_the_rounds(pair, greedy_run):
    ids, gen, spec = greedy_run
    rows = verification_logits(pair.target, spec.sequences, ids.shape[1], spec.rounds)
    new = spec.sequences[0, ids.shape[1]:]
    assert rows.shape == (len(new), pair.target.config.vocab_size)
    assert torch.equal(rows.argmax(-1), new)  # every greedy decision is reproduced
    steps = torch.stack(gen.logits)[:, 0].float()
    assert torch.allclose(rows, steps, atol=1e-3)  # fp32 on a CPU: the two ways agree to rounding
    assert any(len(r.drafted) > 1 for r in spec.rounds)  # the replay had multi-token passes to check


def test_verification_logits_of_a_sampled_run(pair, encode):
    ids = encode("The for statement")
    out = speculative_generate(pair.target, pair.draft, ids, max_new_tokens=20, gamma=3, temperature=1.0,
                               generator=torch.Generator().manual_seed(0))
    rows = verification_logits(pair.target, out.sequences, ids.shape[1], out.rounds)
    p = probs_from_logits(rows, temperature=1.0)  # (n, V)
    new = out.sequences[0, ids.shape[1]:]
    assert rows.shape[0] == len(new) == 20
    assert (p[torch.arange(20), new] > 0).all()
    with torch.inference_mode():  # the first row: the target's next-token logits after the prompt
        assert torch.allclose(rows[0], pair.target(ids).logits[0, -1].float(), atol=1e-4)


def test_greedy_check_identical(pair, greedy_run):
    ids, gen, spec = greedy_run
    c = greedy_check(pair.target, ids, gen, spec)
    assert c["identical"] and c["first_difference"] is None and c["gap_there"] is None
    assert c["compared"] == 72
    assert 0 < c["rounding"] < 1e-3
    steps = torch.stack(gen.logits)[:, 0]
    top2 = steps.topk(2).values
    assert c["min_gap"] == pytest.approx(float((top2[:, 0] - top2[:, 1]).min()))
    assert c["min_gap"] > c["rounding"]  # this run was never close to flipping


def test_greedy_check_finds_the_first_difference(pair, greedy_run):
    ids, gen, spec = greedy_run
    j = 10
    seqs = gen.sequences.clone()
    seqs[0, ids.shape[1] + j] = (seqs[0, ids.shape[1] + j] + 1) % pair.target.config.vocab_size
    seqs[0, ids.shape[1] + j + 3] = (seqs[0, ids.shape[1] + j + 3] + 1) % pair.target.config.vocab_size
    c = greedy_check(pair.target, ids, types.SimpleNamespace(sequences=seqs, logits=gen.logits), spec)
    assert not c["identical"] and c["first_difference"] == j and c["compared"] == j + 1
    top2 = gen.logits[j][0].float().topk(2).values
    assert c["gap_there"] == pytest.approx(float(top2[0] - top2[1]))


# ---------------------------------------------------------------- distribution_check


def test_distribution_check_accepts_exact_and_rejects_biased_samples():
    g = torch.Generator().manual_seed(0)
    p = torch.tensor([0.3, 0.25, 0.2, 0.1, 0.05, 0.04, 0.03, 0.02, 0.01])
    exact = torch.multinomial(p, 4000, replacement=True, generator=g).tolist()
    ok = distribution_check(exact, p)
    assert ok["pvalue"] > 1e-3 and ok["tv"] < 0.03 and ok["n"] == 4000 and ok["bins"] == 6
    q = torch.tensor([0.2, 0.25, 0.3, 0.1, 0.05, 0.04, 0.03, 0.02, 0.01])
    bad = distribution_check(torch.multinomial(q, 4000, replacement=True, generator=g).tolist(), p)
    assert bad["pvalue"] < 1e-6 and bad["tv"] == pytest.approx(0.1, abs=0.03)


def test_distribution_check_pools_and_handles_zero_mass():
    p = torch.tensor([0.5, 0.3, 0.2, 0.0, 0.0, 0.0])  # top-k: the "rest" bin has probability 0
    samples = [0] * 50 + [1] * 30 + [2] * 20
    r = distribution_check(samples, p, top=3)
    assert r["pvalue"] == pytest.approx(1.0) and r["tv"] == pytest.approx(0.0, abs=1e-6) and r["bins"] == 3
    assert distribution_check(samples + [4], p, top=3)["pvalue"] == 0.0  # an impossible token appeared
    small = distribution_check([0] * 9 + [1], torch.tensor([0.9, 0.05, 0.05]), top=2)  # expected counts < 5 pooled
    assert small["bins"] == 2
    with pytest.raises(ValueError, match="empty"):
        distribution_check([], p)


def test_splitting_the_rest_by_q_over_p_catches_the_guides_rule_that_a_pooled_rest_misses():
    """A draft q = 0.8 p on the five likeliest tokens and, in the tail, too much on two tokens and too
    little on three: the Guide's rule (resample from p) then emits the top tokens exactly as often as p
    and moves its whole bias inside the tail. With the rest pooled, no bin can see it; split by q > p
    (check_bins), 20,000 samples reject it, and exact samples still pass."""
    from utils.interactive import emitted_law

    p = torch.tensor([0.30, 0.20, 0.15, 0.10, 0.05, 0.04, 0.04, 0.04, 0.04, 0.04]).double()
    q = torch.cat([0.8 * p[:5], torch.tensor([0.14, 0.14, 0.08 / 3, 0.08 / 3, 0.08 / 3]).double()])
    law = emitted_law(p, q, "p")  # the Guide's rule's exact law
    pooled, split = check_bins(p), check_bins(p, q)
    assert torch.stack(split).sum(0).tolist() == [1] * 10  # the bins partition the vocabulary
    total = 0.5 * float((law - p).abs().sum())
    assert total == pytest.approx(0.016, abs=1e-6)
    assert binned_tv(law, p, pooled) < 1e-6 and binned_tv(law, p, split) == pytest.approx(total)
    g = torch.Generator().manual_seed(0)
    biased = torch.multinomial(law, 20_000, replacement=True, generator=g).tolist()
    exact = torch.multinomial(p, 20_000, replacement=True, generator=g).tolist()
    assert distribution_check(biased, p, q=q)["pvalue"] < 1e-8 and distribution_check(biased, p, q=q)["bins"] == 7
    assert distribution_check(biased, p)["pvalue"] > 1e-3  # the pooled test cannot see it
    assert distribution_check(exact, p, q=q)["pvalue"] > 1e-3


# ---------------------------------------------------------------- acceptance_stats


def test_acceptance_stats_pools_the_runs(pair, prompts):
    texts = prompts["workshop"][:2]
    s = acceptance_stats(pair.target, pair.draft, pair.tokenizer, texts, 3, max_new_tokens=24)
    outs = [speculative_generate(pair.target, pair.draft, pair.tokenizer(t, return_tensors="pt").input_ids,
                                 max_new_tokens=24, gamma=3, temperature=1.0, generator=torch.Generator().manual_seed(k))
            for k, t in enumerate(texts)]
    acc = sum(o.n_accepted for o in outs)
    assert s["per_drafted"] == pytest.approx(acc / sum(o.n_drafted for o in outs))
    assert s["alpha"] == pytest.approx(acc / (acc + sum(o.n_rejected for o in outs)))
    assert s["tau"] == pytest.approx(48 / sum(len(o.rounds) for o in outs))
    assert s["counts"] == (acc, sum(o.n_drafted for o in outs), sum(o.n_rejected for o in outs))
    assert 0 <= s["per_drafted"] <= s["alpha"] <= 1 and 1 <= s["tau"] <= 4 and s["prompts"] == 2


# ---------------------------------------------------------------- timing helpers (notebooks 01, 02)


def test_autoregressive_timed_takes_step_medians(pair, encode):
    ids = encode("A class definition defines")
    r = autoregressive_timed(pair.target, ids, 12, use_cache=True, repeats=3)
    with torch.inference_mode():
        ref = pair.target.generate(ids, max_new_tokens=12, do_sample=False)
    assert r.sequences.tolist() == ref.tolist()
    assert len(r.step_times) == 12 and all(t > 0 for t in r.step_times)


def test_timed_generate_and_best_of(pair, encode):
    ids = encode("The while statement")
    calls = []

    def run():
        calls.append(len(calls))
        return dict(time=[5.0, 3.0, 1.0, 2.0][len(calls) - 1])

    assert best_of(run, lambda r: r["time"], repeats=3)["time"] == 1.0 and len(calls) == 4  # warm-up + 3
    out = timed_generate(pair.target, ids, 5)
    assert out["sequences"].shape == (1, ids.shape[1] + 5) and out["time"] > 0


def test_read_bandwidth_is_plausible():
    bw = read_bandwidth("cpu", mib=64, repeats=3)
    assert 1e8 < bw < 1e13  # between 0.1 GB/s and 10 TB/s


def test_bandwidth_bounds_and_datasheet():
    """Each GPU's bound uses the dtype load_pair picks there: on a T4 (no bf16) Gemma2's unquantized
    layers are float32, so its NF4 9b reads more bytes there than on a bf16 GPU."""
    from utils.models import PAIRS, estimate_bytes
    from utils.theory import GPU_BANDWIDTH

    nine_b = PAIRS["gemma2-2b-9b"].target
    bf16 = bandwidth_bounds("gemma2-2b-9b")
    assert bf16["T4 (16 GB)"]["tok_s"] is None  # 37 GB in float32 (18.5 GB in bf16): not on a 16 GB T4
    assert bf16["H100 (80 GB SXM)"]["dtype"] == "bf16" and bf16["T4 (16 GB)"]["dtype"] == "fp32"
    nf4 = bandwidth_bounds("gemma2-2b-9b", quantization="nf4")
    for gpu, row in nf4.items():
        dtype = torch.float32 if gpu.startswith("T4") else torch.bfloat16
        assert row["bytes"] == estimate_bytes(nine_b, dtype, "nf4")
        assert row["tok_s"] == pytest.approx(GPU_BANDWIDTH[gpu] / row["bytes"])
    assert nf4["T4 (16 GB)"]["bytes"] > nf4["A100 (80 GB SXM)"]["bytes"]
    assert bandwidth_bounds("gemma2-2b-9b", "draft")["A100 (80 GB SXM)"]["bytes"] < bf16["A100 (80 GB SXM)"]["bytes"]
    assert datasheet_bandwidth("cpu") is None


def test_datasheet_bandwidth_knows_colabs_gpus(monkeypatch):
    """Notebook 01 compares a GPU's step with its data sheet: Colab's T4, L4 and A100 40GB are known,
    each by its own figure (the A100 40GB reads less than the 80GB one), an unknown GPU gives None."""
    from utils.theory import GPU_BANDWIDTH

    for name, expected in (("Tesla T4", GPU_BANDWIDTH["T4 (16 GB)"]), ("NVIDIA L4", 300e9), ("NVIDIA L40S", 864e9), ("NVIDIA L40", 864e9),
                           ("NVIDIA A100-SXM4-40GB", 1.555e12), ("NVIDIA A100-SXM4-80GB", GPU_BANDWIDTH["A100 (80 GB SXM)"]),
                           ("NVIDIA H100 80GB HBM3", GPU_BANDWIDTH["H100 (80 GB SXM)"])):
        monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None, n=name: n)
        assert datasheet_bandwidth("cuda") == (name, expected), name
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Some Future GPU")
    assert datasheet_bandwidth("cuda") is None


# ---------------------------------------------------------------- comparison_html (notebook 02)


def test_comparison_html_marks_differences_neutrally(pair):
    a, b = [5, 6, 7, 8, 9], [5, 6, 70, 8, 90, 11]
    h = comparison_html(a, b, pair.tokenizer, "the target")
    assert h.count('class="specdec-differs"') == 2 and h.count('class="specdec-same"') == 3
    assert "line-through" not in h and "the target" in h
