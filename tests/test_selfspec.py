"""Self-speculation (utils/selfspec.py): the target's first k layers, final norm and LM head as the
draft. The draft shares the target's weights (no copy), its logits are the early-exit computation,
and speculative decoding with it stays exact: greedy equals HF greedy, sampling follows the target."""

import types

import pytest
import torch

from utils.sampling import probs_from_logits
from utils.selfspec import (ADAPTERS, MAX_ADAPTER_BYTES, ExitAdapter, early_exit_draft, exit_agreement,
                            exit_logits, hidden_states, layer_update_norms, load_adapters, main, plot_exits,
                            save_adapters, target_growth)
from utils.speculative import distribution_check, speculative_generate


def trained_like_adapter(d: int, seed: int = 0) -> ExitAdapter:
    """An adapter with nonzero weights (an untrained one is the identity), to test exactness with one."""
    ad = ExitAdapter(d)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        ad.proj.weight.copy_(0.05 * torch.randn(d, d, generator=g))
        ad.norm_weight.copy_(0.1 * torch.randn(d, generator=g))
    return ad.eval().requires_grad_(False)


@pytest.fixture(scope="module")
def adapter(pair):
    return trained_like_adapter(pair.target.config.hidden_size)


@pytest.fixture(scope="module")
def refs(pair, prompts, encode):
    """HF greedy continuations of 4 held-out prompts; two run past the sliding window of 64."""
    eos = pair.tokenizer.eos_token_id
    out = []
    for text, n in zip(prompts["heldout"][:4], (80, 20, 80, 20)):
        ids = encode(text)
        with torch.inference_mode():
            ref = pair.target.generate(ids, max_new_tokens=n, do_sample=False, eos_token_id=eos, pad_token_id=0)
        out.append((ids, n, ref))
    assert sum(r.shape[1] > pair.target.config.sliding_window for _, _, r in out) >= 2
    return out


@pytest.mark.parametrize("k", [1, 10, 19])
def test_weights_are_shared_not_copied(pair, k):
    t = pair.target
    d = early_exit_draft(t, k)
    assert d.lm_head.weight is t.lm_head.weight
    assert d.model.embed_tokens is t.model.embed_tokens and d.model.norm is t.model.norm
    assert d.model.rotary_emb is t.model.rotary_emb
    assert len(d.model.layers) == k and all(a is b for a, b in zip(d.model.layers, t.model.layers))
    assert d.config.num_hidden_layers == k and d.config.layer_types == t.config.layer_types[:k]
    assert t.config.num_hidden_layers == 20  # the target's own config is untouched
    target_params = {id(p) for p in t.parameters()}
    assert all(id(p) in target_params for p in d.parameters())  # no extra parameters
    assert not any(p.is_meta for p in [*d.parameters(), *d.buffers()])


def test_adapter_adds_only_its_own_parameters(pair, adapter):
    t = pair.target
    d = early_exit_draft(t, 6, adapter)
    target_params = {id(p) for p in t.parameters()}
    extra = [p for p in d.parameters() if id(p) not in target_params]
    assert {id(p) for p in extra} == {id(p) for p in adapter.parameters()}
    d_model = t.config.hidden_size
    assert sum(p.numel() for p in extra) == d_model * d_model + d_model
    assert d.model.norm.norm is t.model.norm and d.lm_head is t.lm_head


def test_logits_equal_a_manual_early_exit(pair, encode, adapter):
    """draft(x).logits == softcap(lm_head(norm(h_k))), h_k taken by a forward hook on the target's
    layer k - 1 during a full target pass, for every k; with an adapter, norm(adapter(h_k))."""
    t, x = pair.target, encode("The for statement is used to iterate over the elements of a sequence")
    taken = {}
    hooks = [layer.register_forward_hook(lambda m, a, out, i=i: taken.__setitem__(i + 1, out[0] if isinstance(out, tuple) else out))
             for i, layer in enumerate(t.model.layers)]
    try:
        with torch.inference_mode():
            t(x)
    finally:
        for h in hooks:
            h.remove()
    cap = t.config.final_logit_softcapping
    with torch.inference_mode():
        for k in range(1, 20):
            manual = torch.tanh(t.lm_head(t.model.norm(taken[k])) / cap) * cap  # (1, T, V)
            assert torch.allclose(early_exit_draft(t, k)(x).logits, manual, atol=1e-5)
            assert torch.allclose(exit_logits(t, hidden_states(t, x)[k]), manual, atol=1e-5)
        manual = torch.tanh(t.lm_head(t.model.norm(adapter(taken[6]))) / cap) * cap
        assert torch.allclose(early_exit_draft(t, 6, adapter)(x).logits, manual, atol=1e-5)
        assert torch.allclose(early_exit_draft(t, 6, ExitAdapter(t.config.hidden_size))(x).logits,
                              early_exit_draft(t, 6)(x).logits)  # an untrained adapter is the plain exit


def test_exit_agreement_rises_towards_the_last_layer(pair, encode):
    rows = exit_agreement(pair.target, encode("The power operator binds more tightly than unary operators on its left"))
    assert [r["k"] for r in rows] == list(range(1, 20))
    assert rows[-1]["top1"] > rows[0]["top1"] and rows[-1]["kl"] < rows[0]["kl"]
    assert all(0 <= r["top1"] <= 1 and r["kl"] >= -1e-5 for r in rows)


def test_layer_updates_are_each_layers_own(pair, encode):
    """Layer i's update is measured between layer i's input and its output, for the last layer too
    (transformers 5 hands back h_n after the final norm: using that would measure the norm)."""
    ids = encode("The power operator binds more tightly than unary operators on its left")
    seen = []  # (input, output) of every decoder layer, from forward hooks
    hooks = [layer.register_forward_hook(lambda m, args, out: seen.append((args[0], out)))
             for layer in pair.target.model.layers]
    try:
        with torch.inference_mode():
            pair.target(ids)
    finally:
        for h in hooks:
            h.remove()
    by_hand = [((o - x).norm() / x.norm()).item() for x, o in seen]
    updates = layer_update_norms(pair.target, ids)
    assert len(updates) == pair.target.config.num_hidden_layers
    assert updates == pytest.approx(by_hand, rel=1e-4)
    normed = hidden_states(pair.target, ids)  # [-1] is after the final norm: a different, larger "update"
    assert abs((normed[-1] - seen[-1][0]).norm() / seen[-1][0].norm() - updates[-1]) > 0.05


@pytest.mark.parametrize("k, with_adapter", [(2, False), (12, False), (19, False), (6, True)])
def test_greedy_equals_target_greedy(pair, refs, adapter, k, with_adapter):
    draft = early_exit_draft(pair.target, k, adapter if with_adapter else None)
    eos = pair.tokenizer.eos_token_id
    for ids, n, ref in refs:
        out = speculative_generate(pair.target, draft, ids, max_new_tokens=n, gamma=4, eos_token_id=eos)
        assert out.sequences.tolist() == ref.tolist()
        assert out.n_drafted > 0


def test_sampling_matches_target_distribution(pair, encode, adapter):
    """The first new token at T = 1 follows the target's distribution: 600 runs with an exit-4 draft
    with an adapter (a poor draft: many rejections, so the residual distribution does the work; the
    plain exit is the same code with the identity adapter), binned as every exactness test bins
    (utils.speculative.distribution_check: the 5 likeliest tokens, the rest split by q > p), chi-square
    at level 1e-3."""
    ids = encode("The try statement specifies")
    draft = early_exit_draft(pair.target, 4, adapter)
    with torch.inference_mode():
        p = probs_from_logits(pair.target(ids).logits[0, -1], temperature=1.0)
        q = probs_from_logits(draft(ids).logits[0, -1], temperature=1.0)
    g = torch.Generator().manual_seed(11)
    n = 600
    firsts = [speculative_generate(pair.target, draft, ids, max_new_tokens=2, gamma=1, temperature=1.0,
                                   generator=g).sequences[0, ids.shape[1]].item() for _ in range(n)]
    assert distribution_check(firsts, p, q=q)["pvalue"] > 1e-3


@pytest.mark.parametrize("k", [0, -1, 20, 21])
def test_bad_k(pair, k):
    with pytest.raises(ValueError, match=r"k must be in \[1, 19\] for a target of 20 layers"):
        early_exit_draft(pair.target, k)


@pytest.mark.parametrize("k", [True, 2.5, "3", None])
def test_k_not_an_integer(pair, k):
    with pytest.raises(TypeError, match="k must be an integer"):
        early_exit_draft(pair.target, k)


def test_unsupported_models(pair):
    class NoLayers(torch.nn.Module):  # a callable model with a config but not the expected layout
        config = pair.target.config

        def forward(self, x):
            return x

    with pytest.raises(ValueError, match="Gemma2ForCausalLM"):
        early_exit_draft(NoLayers(), 2)
    for bad in (None, "google/gemma-2-2b"):
        with pytest.raises(TypeError, match="loaded Hugging Face causal language model"):
            early_exit_draft(bad, 2)
    with pytest.raises(TypeError, match="adapter must be an ExitAdapter"):
        early_exit_draft(pair.target, 2, adapter=torch.nn.Linear(128, 128))


def test_graded_check(pair, capsys):
    from utils.exercises import check_11

    from notebooks.solutions.ex11_exit_head import exit_head

    check_11(exit_head, pair)
    assert "PASSED" in capsys.readouterr().out
    with pytest.raises(AssertionError, match="soft-capping"):
        check_11(lambda t, h: t.lm_head(t.model.norm(h)), pair)
    with pytest.raises(AssertionError, match="final norm"):
        check_11(lambda t, h: torch.tanh(t.lm_head(h) / 30.0) * 30.0, pair)
    with pytest.raises(AssertionError, match="your function calls exit_logits"):
        check_11(lambda t, h: exit_logits(t, h), pair)

    def not_yet(target, hidden):
        raise NotImplementedError

    check_11(not_yet, pair)
    assert "not done yet" in capsys.readouterr().out


def test_adapters_round_trip(pair, adapter, tmp_path):
    path = tmp_path / "a.safetensors"
    size = save_adapters({3: adapter, 7: trained_like_adapter(128, 1)}, path)
    assert size == path.stat().st_size < MAX_ADAPTER_BYTES
    back = load_adapters(pair.target, path)
    assert sorted(back) == [3, 7]
    assert torch.equal(back[3].proj.weight, adapter.proj.weight) and torch.equal(back[3].norm_weight, adapter.norm_weight)
    with pytest.raises(FileNotFoundError, match="python -m utils.selfspec train"):
        load_adapters(pair.target, tmp_path / "missing.safetensors")
    wider = types.SimpleNamespace(config=pair.target.config.__class__(hidden_size=2304), device=pair.target.device,
                                  dtype=pair.target.dtype)  # a Hub target (gemma-2-2b's width)
    with pytest.raises(ValueError, match="hidden size is 128 .*this target's is 2304. Train adapters for this target"):
        load_adapters(wider, path)


def test_committed_adapters_are_small_and_help(pair, encode):
    path = ADAPTERS / "adapters.safetensors"
    assert path.exists(), "the committed exit adapters are missing"  # tracked by git: no silent skip
    assert path.stat().st_size < MAX_ADAPTER_BYTES
    adapters = load_adapters(pair.target, path)
    x = encode("In the context of Boolean operations, and also when expressions are used by control flow statements")
    plain = {r["k"]: r for r in exit_agreement(pair.target, x, list(adapters))}
    adapted = {r["k"]: r for r in exit_agreement(pair.target, x, list(adapters), adapters)}
    assert all(adapted[k]["kl"] < plain[k]["kl"] for k in adapters)


@pytest.mark.parametrize("argv, message", [
    (["--ks", "0"], "--ks must all be >= 1"),
    (["--gamma", "0"], "--gamma must be >= 1"),
    (["--prompts", "nope"], "--prompts must be one of"),
    (["--temperatures", "-1"], "--temperatures must be finite"),
    (["--n-prompts", "99"], "is more than the"),
    (["--adapters", "/nonexistent/a.safetensors"], "does not exist"),
    (["train", "--steps", "0"], "--steps must be >= 1"),
    (["train", "--lr", "0"], "--lr must be a finite number > 0"),
])
def test_cli_checks_flags_before_loading(argv, message, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main([*argv, "--out", str(tmp_path)])
    assert e.value.code == 2 and message in capsys.readouterr().err


def test_cli_refuses_to_overwrite(tmp_path, capsys):
    (tmp_path / "selfspec-tiny-cpu.json").write_text("{}")
    with pytest.raises(SystemExit) as e:
        main(["--out", str(tmp_path), "--device", "cpu", "--no-adapters", "--pair", "tiny"])
    assert e.value.code == 2 and "--overwrite" in capsys.readouterr().err


def test_cli_help(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0 and "train" in capsys.readouterr().out


def test_target_growth_matches_the_shipped_target(pair):
    g = target_growth()
    assert g["layers"] == pair.target.config.num_hidden_layers > g["stage1_layers"] >= 1
    assert g["stage1_steps"] >= 1 and g["grow_steps"] >= 1


def test_plot_exits_integer_layer_ticks():
    import json

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from utils.models import ROOT

    path = ROOT / "data" / "results" / "selfspec-tiny-cpu.json"
    assert path.exists(), "the committed self-speculation result is missing"  # tracked by git: no silent skip
    res = json.loads(path.read_text())
    fig = plot_exits(res)
    fig.canvas.draw()
    for ax in fig.axes:
        assert all(float(t).is_integer() for t in ax.get_xticks())
    assert f"gamma {res['meta']['gamma']}" in fig.axes[1].get_title()
    plt.close(fig)


def test_plot_lens_draws_each_exit_and_each_layer():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from utils.selfspec import plot_lens

    lens = [dict(k=1, top1=0.1, kl=3.0), dict(k=4, top1=0.3, kl=2.0), dict(k=8, top1=0.9, kl=0.2)]
    fig = plot_lens(lens, [0.5, 0.02, 0.3, 0.2, 0.1, 0.04, 0.2, 0.3], "title")
    fig.canvas.draw()
    left, right, twin = fig.axes
    assert list(left.get_lines()[0].get_ydata()) == [0.1, 0.3, 0.9] and list(twin.get_lines()[0].get_ydata()) == [3.0, 2.0, 0.2]
    assert len(right.patches) == 8 and right.patches[1].get_height() == 0.02  # one bar per layer, layer 2 second
    assert all(float(t).is_integer() for ax in (left, right) for t in ax.get_xticks())
    plt.close(fig)


def _exit_row(draft, k, speedup, alpha, c, gamma=4):
    from utils.theory import expected_speedup, optimal_gamma

    best = optimal_gamma(alpha, c)
    return dict(temperature=0.0, draft=draft, k=k, adapter=False, c=c, alpha=alpha / 2, alpha_checked=alpha, tokens_per_round=2.0,
                tokens_per_s=50.0 * speedup, speedup_vs_plain=speedup, predicted=expected_speedup(alpha, gamma, c),
                best_gamma=best, predicted_best=expected_speedup(alpha, best, c))


def test_speed_against_model_takes_v_from_the_loop():
    """utils.selfspec.speed_against_model (notebook 11 section 4): v is the target's seconds per
    round over its step; with v = 1 in the loop both predictions agree, with v > 1 the loop's is lower."""
    from utils.selfspec import exits_table, speed_against_model
    from utils.theory import expected_speedup

    summary = [dict(temperature=0.0, draft="plain", k=None, tokens_per_s=50.0),
               _exit_row("exit 1", 1, 1.2, 0.6, 0.1), _exit_row("exit 2", 2, 0.7, 0.5, 0.2)]
    rows = [dict(temperature=0.0, draft="exit 1", target_s=0.10, rounds=10),  # 10 ms per round: v = 1
            dict(temperature=0.0, draft="exit 2", target_s=0.30, rounds=20)]  # 15 ms per round: v = 1.5
    res = dict(meta=dict(gamma=4), costs=dict(target_step_ms=10.0), summary=summary, rows=rows)
    (r,) = speed_against_model(res)
    assert (r["n_exits"], r["slower"], [s["draft"] for s in r["faster"]]) == (2, 1, ["exit 1"])
    assert r["v"] == pytest.approx((1.0, 1.5))
    assert r["promised"] == pytest.approx(summary[1]["predicted"])
    e1 = [s["speedup_vs_plain"] - s["predicted"] for s in summary[1:]]
    assert r["error_v1"] == pytest.approx((min(e1), max(e1)))
    ev2 = 0.7 - expected_speedup(0.5, 4, 0.2, 1.5)  # exit 2 at the loop's v = 1.5: a lower prediction
    assert ev2 > e1[1] and r["error_v"] == pytest.approx((min(e1[0], ev2), max(e1[0], ev2)))  # exit 1: v = 1, as before
    table = exits_table(res).splitlines()
    assert len(table) == 1 + len(summary) and "plain loop" in table[1] and table[2].split()[:3] == ["0", "exit", "1"]
