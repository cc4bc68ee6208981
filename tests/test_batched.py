"""Batched speculative decoding (utils/batched.py): every row exact on its own.

Greedy rows equal HF greedy on that prompt alone, token for token, past the sliding window, with
ragged acceptance, EOS per row and max_new_tokens per row; sampled rows follow the target's joint
distribution of their first two tokens (chi-square per row); bad batches get clear errors.
"""

import copy

import pytest
import torch

from utils.batched import autoregressive_batched, build_masks, check_batch
from utils.speculative import speculative_generate


@pytest.fixture(scope="module")
def batch(pair, prompts):
    """8 workshop prompts of different lengths, left-padded as HF generate expects."""
    tok = pair.tokenizer
    side, tok.padding_side = tok.padding_side, "left"
    texts = prompts["workshop"][:8]
    enc = tok(texts, return_tensors="pt", padding=True)
    tok.padding_side = side
    assert len(set(enc.attention_mask.sum(1).tolist())) > 1  # the rows really are padded differently
    return texts, enc.input_ids, enc.attention_mask


def alone(pair, encode, text, n, eos=1):
    """HF greedy on one prompt, no padding: the reference each row must equal."""
    ids = encode(text)
    with torch.inference_mode():
        out = pair.target.generate(ids, max_new_tokens=n, do_sample=False, eos_token_id=eos, pad_token_id=0)
    return out[0, ids.shape[1]:].tolist()


def row_new(out, b, T):
    return out.sequences[b, T : T + out.new_tokens[b]].tolist()


@pytest.fixture(scope="module")
def refs70(pair, encode, batch):
    return [alone(pair, encode, t, 70) for t in batch[0]]


@pytest.mark.parametrize("gamma", [1, 4, 7])
def test_greedy_rows_equal_hf_greedy_alone(pair, batch, refs70, gamma):
    """70 new tokens: prompt + new passes the sliding window (64), so the per-row sliding masks matter."""
    texts, ids, mask = batch
    out = speculative_generate(pair.target, pair.draft, ids, attention_mask=mask, max_new_tokens=70, gamma=gamma, eos_token_id=1)
    T = ids.shape[1]
    assert ids.shape[1] + 70 > pair.target.config.sliding_window
    for b in range(len(texts)):
        assert row_new(out, b, T) == refs70[b], f"row {b}"
    assert torch.equal(out.sequences[:, :T], ids)
    assert out.ragged_rounds > 0  # rows accepted different numbers of tokens in some round
    assert len(set(out.row_acceptance())) > 1


def test_output_is_shaped_like_hf_generate(pair, batch):
    """Same shape and values as HF's own batched greedy generate (which pads finished rows)."""
    _, ids, mask = batch
    with torch.inference_mode():
        hf = pair.target.generate(ids, attention_mask=mask, max_new_tokens=30, do_sample=False, eos_token_id=1, pad_token_id=0)
    out = speculative_generate(pair.target, pair.draft, ids, attention_mask=mask, max_new_tokens=30, gamma=3, eos_token_id=1)
    assert out.sequences.shape == hf.shape
    assert torch.equal(out.sequences, hf)


def test_eos_per_row(pair, encode, batch):
    """A frequent token made the EOS: rows stop at different rounds, are padded after it, and each
    equals HF greedy alone with the same EOS."""
    texts, ids, mask = batch
    T = ids.shape[1]
    ref0 = alone(pair, encode, texts[0], 40, eos=None)
    eos = max(set(ref0), key=ref0.count)  # the most frequent token of one continuation
    out = speculative_generate(pair.target, pair.draft, ids, attention_mask=mask, max_new_tokens=40, gamma=4, eos_token_id=eos)
    lengths = set()
    for b, text in enumerate(texts):
        ref = alone(pair, encode, text, 40, eos=eos)
        new = row_new(out, b, T)
        assert new == ref
        assert (new[-1] == eos) == (len(new) < 40)
        assert (out.sequences[b, T + len(new):] == 0).all()  # pad_token_id after the row ends
        lengths.add(len(new))
    assert len(lengths) > 1 and min(lengths) < 40


@pytest.mark.parametrize("n", [0, 1, 2, 5, 13])
def test_max_new_tokens_exact_per_row(pair, batch, refs70, n):
    texts, ids, mask = batch
    out = speculative_generate(pair.target, pair.draft, ids, attention_mask=mask, max_new_tokens=n, gamma=4, eos_token_id=1)
    assert out.sequences.shape == (len(texts), ids.shape[1] + n)
    for b in range(len(texts)):
        assert row_new(out, b, ids.shape[1]) == refs70[b][:n]


def test_plain_batched_decoding_equals_hf_alone(pair, batch, refs70):
    texts, ids, mask = batch
    out = autoregressive_batched(pair.target, ids, mask, max_new_tokens=70, eos={1})
    for b in range(len(texts)):
        assert row_new(out, b, ids.shape[1]) == refs70[b]


def test_one_padded_row_and_unpadded_batches(pair, encode):
    """B = 1 with left padding equals the unpadded run; a batch without a mask (equal lengths) works."""
    ids = encode("The try statement specifies")
    ref = speculative_generate(pair.target, pair.draft, ids, max_new_tokens=20, gamma=3).sequences[0, ids.shape[1]:]
    padded = torch.cat([torch.zeros(1, 3, dtype=torch.long), ids], 1)
    mask = torch.cat([torch.zeros(1, 3, dtype=torch.long), torch.ones_like(ids)], 1)
    out = speculative_generate(pair.target, pair.draft, padded, attention_mask=mask, max_new_tokens=20, gamma=3)
    assert out.sequences[0, padded.shape[1]:].tolist() == ref.tolist()
    two = speculative_generate(pair.target, pair.draft, ids.repeat(2, 1), max_new_tokens=20, gamma=3)
    assert two.sequences[:, ids.shape[1]:].tolist() == [ref.tolist()] * 2
    one_token = speculative_generate(pair.target, pair.draft, torch.tensor([[2], [2]]), max_new_tokens=5, gamma=2)
    assert one_token.sequences.shape == (2, 6)


@pytest.mark.parametrize("warp", [dict(temperature=1.0), dict(temperature=0.8, top_k=8)], ids=["T=1", "T=0.8,top-k=8"])
@pytest.mark.parametrize("gamma", [1, 3])
def test_sampled_rows_follow_the_target_joint_distribution(pair, encode, joint_pvalue, gamma, warp):
    """Two prompts of different lengths, 24 copies of each in one left-padded batch of 48, 25 calls:
    600 draws of (x1, x2) per prompt, at T = 1 and with warping (T = 0.8, top-k 8: a token outside
    the target's top 8 must never come out). max_new_tokens 3 keeps rows of one call in different rounds
    (ragged). Per prompt: chi-square at level 1e-3 on the cells of conftest.joint_first_two_pvalue
    (tails split by where the draft over-weights). Its power on this path is asserted below
    (test_the_batched_statistic_catches_a_wrong_rule); that an exact-joint chi-square fails under five
    more wrong rules is asserted, on a toy model, in test_exactness_mutations.py."""
    pvalues = _batched_joint_pvalues(pair, encode, joint_pvalue, gamma, warp)
    assert all(v > 1e-3 for v in pvalues.values()), pvalues


@pytest.mark.parametrize("gamma", [1, 3])
def test_the_batched_statistic_catches_a_wrong_rule(pair, encode, joint_pvalue, monkeypatch, gamma):
    """Power on the batched path itself: with the known-wrong rule in the shared accept_reject (after a
    rejection, resample from p instead of norm(max(0, p - q))), which the batched loop looks up at each
    call, the same statistic rejects at least one prompt far below the test's level."""
    import utils.speculative as spec

    real, calls = spec.accept_reject, []

    def resample_from_p(p, q, draft_tokens, u, k=None):
        n, dist, accept = real(p, q, draft_tokens, u, k)
        calls.append(1)
        return n, p.index_select(0, n.view(1))[0], accept  # n == k (bonus): p[k], unchanged

    monkeypatch.setattr(spec, "accept_reject", resample_from_p)
    pvalues = _batched_joint_pvalues(pair, encode, joint_pvalue, gamma, dict(temperature=1.0))
    assert calls and min(pvalues.values()) < 1e-4, pvalues


def _batched_joint_pvalues(pair, encode, joint_pvalue, gamma, warp) -> dict[str, float]:
    texts = ["A lambda expression", "A list"]
    enc = [encode(t)[0] for t in texts]
    T = max(len(e) for e in enc)
    assert len({len(e) for e in enc}) == 2  # one prompt is padded
    rows = [torch.cat([torch.zeros(T - len(e), dtype=torch.long), e]) for e in enc for _ in range(24)]
    ids = torch.stack(rows)
    mask = (torch.arange(T)[None, :] >= torch.tensor([T - len(e) for e in enc for _ in range(24)])[:, None]).long()
    g = torch.Generator().manual_seed(20 + gamma)
    draws = {0: [], 1: []}
    ragged = 0
    for _ in range(25):
        out = speculative_generate(pair.target, pair.draft, ids, attention_mask=mask, max_new_tokens=3, gamma=gamma,
                                   generator=g, **warp)
        ragged += out.ragged_rounds
        # exactly 3 tokens per row, never more accepted than drafted: a rule that ignored which drafted
        # positions are real (accept_reject's k) accepted the zero-q padding of short rows
        assert out.new_tokens == [3] * ids.shape[0] and out.sequences.shape[1] == T + 3
        assert all(a <= d for a, d in zip(out.accepted, out.drafted))
        for b in range(ids.shape[0]):
            draws[b // 24].append(tuple(out.sequences[b, T : T + 2].tolist()))
    assert ragged > 0
    assert [len(d) for d in draws.values()] == [600, 600]
    if "top_k" in warp:  # the cut must not sit on a near-tie that rounding in a padded batch could flip
        k = warp["top_k"]
        for i, e in enumerate(enc):
            contexts = [e] + [torch.cat([e, torch.tensor([x1])]) for x1 in {x1 for x1, _ in draws[i]}]
            with torch.inference_mode():
                for c in contexts:
                    top = pair.target(c[None]).logits[0, -1].topk(k + 1).values  # (k + 1,)
                    assert top[k - 1] - top[k] > 1e-4, f"near-tie at the top-{k} cut after {c.tolist()}: pick another prompt"
    return {t: joint_pvalue(draws[i], pair.target, pair.draft, e[None], **warp) for i, (t, e) in enumerate(zip(texts, enc))}


def test_sampling_is_reproducible(pair, batch):
    _, ids, mask = batch
    runs = [speculative_generate(pair.target, pair.draft, ids, attention_mask=mask, max_new_tokens=12, gamma=3, temperature=1.0,
                                 generator=torch.Generator().manual_seed(5)).sequences for _ in range(2)]
    assert torch.equal(*runs)


def test_sliding_masks_count_a_rows_own_tokens(pair):
    """Row 0 has 3 pad columns: its sliding mask reaches `window` of its own tokens back, not columns."""
    w = pair.target.config.sliding_window
    L = w + 8
    valid = torch.ones(2, L, dtype=torch.bool)
    valid[0, :3] = False
    masks = build_masks(pair.target, valid, 1, torch.float32)
    seen = (masks["sliding_attention"][:, 0, -1] == 0).sum(-1).tolist()  # keys the last query sees
    assert seen == [w, w]
    assert (masks["full_attention"][:, 0, -1] == 0).sum(-1).tolist() == [L - 3, L]


def test_models_without_layer_types(pair):
    """A Llama-style pair (one mask for all layers, no sliding window): rows still equal greedy alone."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = dict(vocab_size=64, hidden_size=32, intermediate_size=64, num_attention_heads=2, num_key_value_heads=1,
               max_position_embeddings=128, pad_token_id=0, eos_token_id=None, bos_token_id=None)
    target = LlamaForCausalLM(LlamaConfig(num_hidden_layers=3, **cfg)).eval()
    draft = LlamaForCausalLM(LlamaConfig(num_hidden_layers=1, **cfg)).eval()
    prompts = [torch.tensor([[5, 6, 7, 8, 9]]), torch.tensor([[11, 12]])]
    ids = torch.tensor([[5, 6, 7, 8, 9], [0, 0, 0, 11, 12]])
    mask = (ids != 0).long()
    out = speculative_generate(target, draft, ids, attention_mask=mask, max_new_tokens=12, gamma=3)
    for b, p in enumerate(prompts):
        with torch.inference_mode():
            ref = target.generate(p, max_new_tokens=12, do_sample=False, pad_token_id=0)[0, p.shape[1]:]
        assert out.sequences[b, 5:].tolist() == ref.tolist()


def test_bad_batches_get_clear_errors(pair, batch):
    _, ids, mask = batch
    right = mask.flip(1)  # padding on the right
    with pytest.raises(ValueError, match='padding_side = "left"'):
        speculative_generate(pair.target, pair.draft, ids, attention_mask=right, max_new_tokens=4)
    with pytest.raises(ValueError, match="shaped like input_ids"):
        speculative_generate(pair.target, pair.draft, ids, attention_mask=mask[:, 1:], max_new_tokens=4)
    with pytest.raises(ValueError, match="0 \\(padding\\) and 1"):
        speculative_generate(pair.target, pair.draft, ids, attention_mask=mask * 2, max_new_tokens=4)
    with pytest.raises(ValueError, match="eager backend with a constant gamma"):
        speculative_generate(pair.target, pair.draft, ids, attention_mask=mask, max_new_tokens=4, backend="compiled")
    with pytest.raises(ValueError, match="eager backend with a constant gamma"):
        speculative_generate(pair.target, pair.draft, ids, attention_mask=mask, max_new_tokens=4, draft_confidence=0.4)
    with pytest.raises(ValueError, match="pad on the left"):
        check_batch(ids, right)
    holes = mask.clone()
    holes[:, -2] = 0
    with pytest.raises(ValueError, match="holes"):
        check_batch(ids, holes)
    empty = mask.clone()
    empty[0] = 0
    with pytest.raises(ValueError, match=r"row\(s\) \[0\] of attention_mask have no tokens"):
        speculative_generate(pair.target, pair.draft, ids, attention_mask=empty, max_new_tokens=4)


def test_a_pad_id_that_is_also_eos_is_text_without_a_mask():
    """SmolLM2 declares pad = EOS: HF generate then guesses no mask, and an EOS inside an unpadded
    batch is text, so no refusal there (only a declared pad that is not an EOS is taken for padding)."""
    from types import SimpleNamespace

    from utils.batched import declared_pad

    def model(pad, eos):
        cfg = SimpleNamespace(pad_token_id=pad)
        return SimpleNamespace(generation_config=SimpleNamespace(pad_token_id=pad, eos_token_id=eos),
                               config=SimpleNamespace(get_text_config=lambda decoder=False: cfg))

    assert declared_pad(model(2, 2)) is None and declared_pad(model(2, [7, 2])) is None
    assert declared_pad(model(0, 1)) == 0 and declared_pad(model(None, 1)) is None
    ids = torch.tensor([[5, 2, 6], [2, 7, 8]])
    assert bool(check_batch(ids, None, declared_pad(model(2, 2))).all())
    with pytest.raises(ValueError, match="no attention_mask was given"):
        check_batch(ids, None, declared_pad(model(2, 1)))


def test_a_padded_batch_without_its_mask_is_refused_not_read_as_text(pair, batch):
    """Without attention_mask every column would be a token, padding included: wrong rows, silently
    (HF generate guesses the mask from pad_token_id instead). Both batched loops refuse and say what
    to pass; the plain baseline checks its arguments like speculative_generate."""
    _, ids, mask = batch
    with pytest.raises(ValueError, match="no attention_mask was given"):
        speculative_generate(pair.target, pair.draft, ids, max_new_tokens=4)
    with pytest.raises(ValueError, match="no attention_mask was given"):
        autoregressive_batched(pair.target, ids, max_new_tokens=4)
    for kw, exc, says in ((dict(temperature=-1), ValueError, "temperature"), (dict(max_new_tokens=-1), ValueError, "max_new_tokens"),
                          (dict(generator=3, temperature=1.0), TypeError, "torch.Generator")):
        with pytest.raises(exc, match=says):
            autoregressive_batched(pair.target, ids, mask, **(dict(max_new_tokens=4) | kw))
    with pytest.raises(ValueError, match="outside the model's vocabulary"):
        autoregressive_batched(pair.target, ids + 10**6, mask, max_new_tokens=4)
    as_int = autoregressive_batched(pair.target, ids, mask, max_new_tokens=3, eos=1)  # an int, as eos_token_id takes
    assert torch.equal(as_int.sequences, autoregressive_batched(pair.target, ids, mask, max_new_tokens=3, eos={1}).sequences)


def test_cost_measurements_on_the_tiny_pair_and_on_shrunken_gemma2_shapes(pair):
    """verify_cost returns positive times and their ratios; shape_costs runs the GPU path on a CPU
    with shrunken configurations; batched_table and plot_batched read a result made of them."""
    from utils.beyond import batched_table, left_padded, plot_batched, shape_costs, verify_cost

    ids, mask = left_padded(pair.tokenizer, ["The if statement", "A"], "cpu")
    c = verify_cost(pair.target, pair.draft, ids, mask, gamma=3, iters=2, repeats=1)
    assert c["B"] == 2 and c["target_step_s"] > 0 and c["verify_s"] > 0 and c["draft_step_s"] > 0
    assert c["v"] == pytest.approx(c["verify_s"] / c["target_step_s"]) and c["c"] == pytest.approx(c["draft_step_s"] / c["target_step_s"])
    small = dict(num_hidden_layers=2, hidden_size=64, intermediate_size=128, num_attention_heads=2, num_key_value_heads=1,
                 head_dim=32, vocab_size=512)
    partial = []  # what the command line writes after each batch size (a time limit keeps it)
    res = shape_costs("2b", "9b", batch_sizes=(1, 2), gamma=2, prompt_len=8, device="cpu", dtype=torch.float32,
                      overrides=small, progress=False, on_step=lambda r: partial.append(copy.deepcopy(r)))
    assert [r["B"] for r in res["costs"]] == [1, 2] and all(r["v"] > 0 for r in res["costs"])
    assert res["complete"] and res["skipped_batch_sizes"] == [] and all("compiled" not in r for r in res["costs"])
    assert [(len(p["costs"]), p["complete"], p["skipped_batch_sizes"]) for p in partial] == [(1, False, [2]), (2, True, [])]
    rows = [dict(B=1, temperature=0.0, method=m, tokens_per_s=t, alpha=0.5, alpha_checked=0.6, tokens_per_row_round=2.0)
            for m, t in zip(("plain (ours)", "plain (HF generate)", "speculative (ours)"), (10.0, 8.0, 15.0))]
    rows[2].update(draft_passes=7, rounds=2)  # 3 drafts a round and one catch-up pass
    result = dict(meta=dict(gamma=3), rows=rows, costs=[c | dict(B=1)])
    (r,) = batched_table(result, 0.0)
    assert r["speedup_vs_ours"] == pytest.approx(1.5) and r["speedup_vs_hf"] == pytest.approx(15 / 8)
    assert r["k_bar"] == 3.5 and r["predicted"] == pytest.approx(2.0 / (3.5 * c["c"] + c["v"]))
    axes = plot_batched(result, 0.0)
    assert "T = 0, alpha per checked token 0.60 to 0.60" in axes[0].get_title()  # labelled with what it measured
    with pytest.raises(ValueError, match="no rows at temperature"):
        plot_batched(result, 1.0)


def test_verify_cost_takes_turns_and_keeps_each_pass_fastest_repeat(monkeypatch):
    """The three passes take turns in a rotating order, so a burst of load lands on all of them, and
    each keeps its fastest repeat: a burst during one repeat leaves c and v as the passes' own costs."""
    import types

    import utils.batched as batched
    import utils.beyond as beyond

    ids = torch.randint(3, 50, (2, 6))
    cost = {("target", 1): 1.0, ("target", 4): 1.5, ("draft", 1): 0.25}  # seconds per call, unloaded
    clock, log = [0.0], []

    def fake_forward(model, cache, x, valid, timer, keep=0):
        if x.shape[1] == ids.shape[1] - 1:
            return None  # the prompt, cached once per model
        log.append((model, x.shape[1]))
        burst = 6 <= len(log) - 1 < 12  # the second round of turns (iters 2 x 3 passes per round) is loaded
        clock[0] += cost[model, x.shape[1]] * (3 if burst else 1)

    monkeypatch.setattr(batched, "_forward", fake_forward)
    monkeypatch.setattr(beyond, "time", types.SimpleNamespace(perf_counter=lambda: clock[0]))
    c = beyond.verify_cost("target", "draft", ids, None, gamma=3, iters=2, repeats=3)
    assert (c["target_step_s"], c["verify_s"], c["draft_step_s"]) == (1.0, 1.5, 0.25)  # the burst is not in them
    assert c["v"] == 1.5 and c["c"] == 0.25 and c["step_spread"] == pytest.approx(2.0)  # ... but shows in the spread
    order = log[::2]  # one entry per repeat of a pass
    t1, t4, d1 = ("target", 1), ("target", 4), ("draft", 1)
    assert order == [t1, t4, d1, t4, d1, t1, d1, t1, t4, t1, t4, d1]  # four rounds (a warm-up, then 3), rotating


def test_passes_that_only_fill_a_cache_make_one_position_of_logits(pair, monkeypatch):
    """A prompt's logits are thrown away wherever a pass only fills a cache (the batched prefill, the
    cost measurements' prompts, the fast engine's prefill): those passes ask for the last position's
    logits alone. At Gemma2's 256k vocabulary a (64, 128, V) bfloat16 tensor is 4 GB, which a 27b
    target on an 80 GB GPU has no room for. The widest logits any of them makes is a verify pass's."""
    from utils import beyond, fast
    from utils.batched import speculative_batched

    widths = []
    hooks = [m.lm_head.register_forward_hook(lambda mod, inp, out: widths.append(out.shape[-2]))
             for m in (pair.target, pair.draft)]
    ids = torch.randint(3, 100, (2, 40))  # (B, T): a prompt far wider than a verify pass
    try:
        beyond.verify_cost(pair.target, pair.draft, ids, torch.ones_like(ids), gamma=3, iters=1, repeats=1)
        assert 1 in widths and max(widths) == 4  # prompts: 1 position; the widest pass: gamma + 1
        widths.clear()
        speculative_batched(pair.target, pair.draft, ids, torch.ones_like(ids), max_new_tokens=6, gamma=3)
        assert widths and max(widths) == 4
        widths.clear()
        fast.Engine(pair.target, 64, compile=False).prefill(ids[:1])
        assert widths == [1]
        widths.clear()
        eager = {"target": beyond._target_pass, "draft": beyond._draft_pass}
        monkeypatch.setattr(beyond, "_compiled_pass", lambda role, cuda, fullgraph=True: eager[role])
        beyond.compiled_verify_cost(pair.target, pair.draft, ids, gamma=3, iters=1, repeats=1)  # eager passes: hooks run
        assert 1 in widths and max(widths) == 4
    finally:
        for h in hooks:
            h.remove()


def test_compiled_costs_compile_per_shape_change_not_per_batch_size(monkeypatch):
    """shape_costs(compiled=True) times the same passes on the fast path (static cache rolled back,
    torch.compile; CUDA graphs on a GPU): positive times, v and c their ratios, the compile kept out
    of them (first calls timed apart). The first batch size and the first change of it compile; every
    later B reuses a graph general in B (new_graphs 0), so a GPU run pays a few compiles, not one per
    B. An error in the compiled passes is recorded in the row; the eager numbers stand."""
    from utils import beyond

    small = dict(num_hidden_layers=2, hidden_size=64, intermediate_size=128, num_attention_heads=2, num_key_value_heads=1,
                 head_dim=32, vocab_size=512)
    res = beyond.shape_costs("2b", "9b", batch_sizes=(1, 2, 4), gamma=2, prompt_len=8, device="cpu", dtype=torch.float32,
                             overrides=small, progress=False, compiled=True)
    rows = [r["compiled"] for r in res["costs"]]
    assert [r["B"] for r in rows] == [1, 2, 4]
    assert res["cudagraph_skips"] == [] and res["compiled_stopped"] is None  # a CPU has no CUDA graphs to skip
    assert res["compile_fallbacks"] == []  # every pass compiled as one graph (fullgraph=True)
    for r in rows:
        assert r["target_step_s"] > 0 and r["verify_s"] > 0 and r["draft_step_s"] > 0
        assert r["v"] == pytest.approx(r["verify_s"] / r["target_step_s"]) and r["c"] == pytest.approx(r["draft_step_s"] / r["target_step_s"])
    assert rows[0]["new_graphs"] >= 3 and rows[2]["new_graphs"] == 0  # B = 4: no compile
    assert rows[2]["target_step_first_call_s"] < min(rows[0]["target_step_first_call_s"], 0.5)

    def oom(*a, **k):
        raise RuntimeError("CUDA out of memory (pretend)")

    from torch._inductor.cudagraph_utils import log_cudagraph_skip_and_bump_counter

    real = beyond.compiled_verify_cost

    def skipping(*a, **k):  # what inductor says on CUDA when a graph cannot be a CUDA graph
        log_cudagraph_skip_and_bump_counter("skipping cudagraphs due to cpu device (arg3)")
        return real(*a, **k)

    monkeypatch.setattr(beyond, "compiled_verify_cost", skipping)
    res = beyond.shape_costs("2b", "9b", batch_sizes=(2,), gamma=2, prompt_len=8, device="cpu", dtype=torch.float32,
                             overrides=small, progress=False, compiled=True)
    assert res["cudagraph_skips"] == ["B = 2: skipping cudagraphs due to cpu device (arg3)"]
    assert res["costs"][0]["compiled"]["v"] > 0

    monkeypatch.setattr(beyond, "compiled_verify_cost", oom)
    res = beyond.shape_costs("2b", "9b", batch_sizes=(1, 2), gamma=2, prompt_len=8, device="cpu", dtype=torch.float32,
                             overrides=small, progress=False, compiled=True)
    first, second = res["costs"]
    assert first["compiled"] == {"error": "RuntimeError: CUDA out of memory (pretend)"} and first["v"] > 0
    assert "compiled" not in second and second["v"] > 0 and res["complete"]  # not tried again at a larger B
    assert res["compiled_stopped"] == first["compiled"]["error"]


def test_the_batched_command_checks_flags_before_loading(tmp_path, capsys):
    from utils.beyond import main

    for argv, says in ((["--batch-sizes", "0"], "--batch-sizes must be >= 1"), (["--batch-sizes", "1", "64"], "needs as many prompts"),
                       (["--temperatures", "-1"], "--temperatures"), (["--pair", "nope"], "--pair must be one of")):
        with pytest.raises(SystemExit) as e:
            main(["batched", "--out", str(tmp_path), *argv])
        assert e.value.code == 2 and says in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main(["batched", "--help"])
    assert e.value.code == 0 and "batch" in capsys.readouterr().out


def test_the_batched_cost_command_checks_flags_before_loading(tmp_path, capsys, monkeypatch):
    from utils.beyond import main

    for argv, says in ((["--shapes", "2b"], "--shapes must be DRAFT:TARGET"), (["--shapes", "2b:70b"], "--shapes must be"),
                       (["--gamma", "0"], "--gamma must be >= 1")):
        with pytest.raises(SystemExit) as e:
            main(["batched-cost", "--out", str(tmp_path), *argv])
        assert e.value.code == 2 and says in capsys.readouterr().err
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(SystemExit) as e:
        main(["batched-cost", "--device", "cuda", "--out", str(tmp_path)])
    assert e.value.code == 2 and "no CUDA GPU" in capsys.readouterr().err


def test_plot_shape_costs_draws_eager_compiled_and_roofline(monkeypatch):
    """Notebook 09's figure for a batched-cost file: v(B) and c(B), eager and (where measured)
    compiled, the roofline when R is given, labelled with shapes, hardware, date and random weights;
    a compiled error leaves its B out of the compiled curve; an empty result is refused."""
    import matplotlib

    matplotlib.use("Agg")
    from utils.beyond import plot_shape_costs

    costs = [dict(B=1, v=1.0, c=0.6, compiled=dict(v=1.01, c=0.12)), dict(B=8, v=1.1, c=0.6, compiled=dict(v=1.05, c=0.13)),
             dict(B=64, v=2.0, c=0.5, compiled=dict(error="RuntimeError: CUDA out of memory"))]
    result = dict(draft="2b", target="27b", gamma=4, dtype="torch.bfloat16", device="cuda", costs=costs,
                  meta=dict(hardware="NVIDIA H100 80GB HBM3", date="2026-12-06"))
    ax_v, ax_c = plot_shape_costs(result, R=295)
    eager, compiled, roof = ax_v.get_lines()
    assert list(eager.get_ydata()) == [1.0, 1.1, 2.0] and list(compiled.get_xdata()) == [1, 8]
    assert list(roof.get_ydata()) == pytest.approx([1.0, 1.0, 64 * 5 / 295])
    assert [list(line.get_ydata()) for line in ax_c.get_lines()] == [[0.6, 0.6, 0.5], [0.12, 0.13]]
    title = ax_v.figure._suptitle.get_text()
    assert "random weights" in title and "H100" in title and "2026-12-06" in title and "27b" in title
    assert "skipped" not in title
    ax_v, _ = plot_shape_costs(dict(result, cudagraph_skips=["B = 8: skipping cudagraphs due to cpu device"]))
    assert "CUDA graphs skipped in part" in ax_v.figure._suptitle.get_text()
    with pytest.raises(ValueError, match="no batch size"):
        plot_shape_costs(dict(result, costs=[]))


def test_compare_batched_hands_over_what_it_measured_after_each_batch_size(pair):
    """The command line writes its JSON from on_step: a run stopped by a time limit keeps its batch sizes."""
    from utils.beyond import BATCH_METHODS, compare_batched
    from utils.models import load_prompts

    partial = []
    res = compare_batched(pair, load_prompts(), batch_sizes=(1, 2), temperatures=(0.0,), max_new_tokens=4, repeats=1,
                          warmup=0, progress=False, on_step=lambda r: partial.append(copy.deepcopy(r)))
    assert [(len(p["costs"]), p["meta"]["complete"]) for p in partial] == [(1, False), (2, True)]
    assert len(partial[0]["rows"]) == len(BATCH_METHODS) and len(res["rows"]) == 2 * len(BATCH_METHODS)
    assert res["meta"]["complete"] and res["costs"] == partial[-1]["costs"]


def test_a_graph_break_in_the_compiled_cost_passes_is_compiled_in_pieces_and_said(monkeypatch):
    """compiled_verify_cost asks for whole graphs (fullgraph=True); where a version of torch or
    transformers breaks one, the pass is compiled in pieces instead, the costs are still measured, and
    the result says so in compile_fallbacks, in this call and in every later one that reuses the pass."""
    from utils import beyond

    def breaking(model, cache, ids):
        torch._dynamo.graph_break()
        return model(input_ids=ids, past_key_values=cache, use_cache=True).logits

    monkeypatch.setattr(beyond, "_target_pass", breaking)
    monkeypatch.setattr(beyond, "_BROKEN_PASSES", {})
    beyond._compiled_pass.cache_clear()
    try:
        small = dict(num_hidden_layers=1, hidden_size=32, intermediate_size=64, num_attention_heads=2,
                     num_key_value_heads=1, head_dim=16, vocab_size=64)
        kw = dict(gamma=2, prompt_len=6, device="cpu", dtype=torch.float32, overrides=small, progress=False, compiled=True)
        with pytest.warns(UserWarning, match="graph break"):
            first = beyond.shape_costs("2b", "9b", batch_sizes=(2,), **kw)
        (said,) = first["compile_fallbacks"]
        assert "compiled_verify_cost, target pass: Unsupported" in said and first["compiled_stopped"] is None
        assert first["costs"][0]["compiled"]["v"] > 0 and first["costs"][0]["compiled"]["c"] > 0
        again = beyond.shape_costs("2b", "9b", batch_sizes=(2,), **kw)
        assert again["compile_fallbacks"] == [said] and again["costs"][0]["compiled"]["v"] > 0
    finally:
        beyond._compiled_pass.cache_clear()  # drop the graphs of the breaking pass


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_draft_passes_count_every_draft_forward_call(pair, temperature):
    """BatchedOutput.draft_passes (notebook 09's k_bar = passes per round) is the number of the draft's
    forward calls after the prompt, catch-up passes included, as a forward hook counts them."""
    from utils.batched import speculative_batched
    from utils.beyond import left_padded

    ids, mask = left_padded(pair.tokenizer, ["The for statement", "A list is", "Use the with statement to"], "cpu")
    calls = []
    hook = pair.draft.register_forward_hook(lambda *a: calls.append(1))
    try:
        out = speculative_batched(pair.target, pair.draft, ids, mask, max_new_tokens=20, gamma=4, temperature=temperature,
                                  generator=torch.Generator().manual_seed(0))
    finally:
        hook.remove()
    assert out.draft_passes == len(calls) - 1  # the first call is the prompt's prefill
    # a row that kept all 4 drafts (added 5 tokens) and ran on: the draft caught up after that round, so
    # the equality above covers the catch-up pass too (greedy on workshop-like prompts: it happens)
    caught_up = any(a[r] == 5 and b[r] > 0 for a, b in zip(out.added, out.added[1:]) for r in range(len(a)))
    assert caught_up or temperature > 0
