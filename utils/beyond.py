"""Beyond the basic loop (notebook 08): measurements of what Hugging Face assisted generation adds.

    python -m utils.beyond adaptive                      # tiny pair, held-out prompts -> runs/
    python -m utils.beyond adaptive --out data/results   # the committed result

`adaptive`: adaptive drafting against a constant gamma. Our speculative loop with a constant gamma,
with HF's "heuristic" schedule (gamma + 2 after a fully accepted round, else - 1), and with the
draft's confidence threshold (HF's assistant_confidence_threshold) at a few values, at T = 0 and
T = 1, plus our plain loop (no draft) for the speedup baseline. Per prompt the configurations take
turns (A B C.., A B C..) after a warm-up, and each keeps its median of the repeats, so a machine
that slows down for a while slows them alike; on a shared CPU the timings stay noisy, and the file
keeps every repeat so that the noise can be read off. Written as adaptive-<pair>-<device>-<prompts>.json
with the hardware, versions, date and prompt set.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import statistics
import sys
import time
from pathlib import Path

import torch

from .models import ROOT
from .models import sync as _sync

LOCAL_RUNS = ROOT / "runs"  # ignored by git: where runs go unless --out says otherwise


def adaptive_configs(gamma: int = 4, thresholds=(0.2, 0.4, 0.6)) -> dict[str, dict | None]:
    """Name -> keyword arguments of speculative_generate (None: our plain loop, no draft)."""
    out = {"plain": None, f"constant {gamma}": dict(gamma=gamma), f"heuristic from {gamma}": dict(gamma=gamma, schedule="heuristic")}
    out.update({f"confidence {t:g}": dict(gamma=gamma, draft_confidence=t) for t in thresholds})
    return out


def _run(pair, ids, kwargs, max_new_tokens, temperature, seed=0) -> dict:
    """One timed run of our plain loop (kwargs None) or of our speculative loop with kwargs."""
    from .decoding import autoregressive_generate
    from .speculative import speculative_generate

    eos = pair.target.generation_config.eos_token_id
    gen = torch.Generator(device=pair.device).manual_seed(seed)
    _sync(pair.device)
    t0 = time.perf_counter()
    if kwargs is None:
        out = autoregressive_generate(pair.target, ids, max_new_tokens, temperature=temperature, eos_token_id=eos, generator=gen)
    else:
        out = speculative_generate(pair.target, pair.draft, ids, max_new_tokens=max_new_tokens, temperature=temperature,
                                   eos_token_id=eos, generator=gen, **kwargs)
    _sync(pair.device)
    secs = time.perf_counter() - t0
    new = out.sequences[0, ids.shape[1]:].tolist()
    row = dict(new_tokens=len(new), seconds=secs, new_ids=new)
    if kwargs is not None:
        rs = out.rounds
        row.update(rounds=len(rs), drafted=out.n_drafted, accepted=out.n_accepted, rejected=out.n_rejected,
                   gammas=[r.gamma for r in rs], drafted_per_round=[len(r.drafted) for r in rs],
                   draft_s=out.draft_time, target_s=out.target_time)
    return row


def compare_adaptive(pair, prompts, *, gamma=4, thresholds=(0.2, 0.4, 0.6), temperatures=(0.0, 1.0), max_new_tokens=48,
                     repeats=3, warmup=1, progress=True) -> dict:
    """Tokens/s and acceptance of each configuration of `adaptive_configs` on each prompt and
    temperature. Per prompt the configurations take turns, `warmup` rounds are dropped, and each
    keeps the median of `repeats` runs (every run seeded alike, so the repeats do the same work).
    Returns dict(meta, rows (one per prompt x temperature x configuration), summary (one per
    temperature x configuration: tokens/s over all prompts, alpha per drafted and per checked token,
    speedups over the plain loop and over the constant gamma, prompts where it beat the constant gamma)).
    """
    from tqdm.auto import tqdm

    from .bench import median_run, metadata, step_cost_ratio, take_turns
    from .models import check_prompts

    prompts = check_prompts(prompts)
    configs = adaptive_configs(gamma, thresholds)
    cost = step_cost_ratio(pair, pair.tokenizer(prompts[0], return_tensors="pt").input_ids.to(pair.device))
    rows = []
    t_start = time.perf_counter()
    for text, t in tqdm([(p, t) for p in prompts for t in temperatures], disable=not progress, desc="adaptive"):
        ids = pair.tokenizer(text, return_tensors="pt").input_ids.to(pair.device)
        runs, _ = take_turns(lambda name: _run(pair, ids, configs[name], max_new_tokens, t), configs, repeats, warmup)
        plain_ids = runs["plain"][0]["new_ids"]
        for name, rs in runs.items():
            med = dict(median_run(rs))
            new_ids = med.pop("new_ids")
            rows.append(dict(prompt=text, temperature=t, config=name, **med, seconds_all=[r["seconds"] for r in rs],
                             tokens_per_s=med["new_tokens"] / med["seconds"],
                             **({"same_as_plain": new_ids == plain_ids} if t == 0 else {})))
    meta = metadata(pair, cost, max_new_tokens, repeats)
    meta.update(gamma=gamma, thresholds=list(thresholds), temperatures=list(temperatures), warmup=warmup,
                configs={k: v for k, v in configs.items()}, wall_s=time.perf_counter() - t_start, n_prompts=len(prompts),
                timing="per prompt the configurations take turns after a warm-up; each keeps the median of its repeats; "
                       "tokens/s = all new tokens / all median seconds. Shared CPU: noisy, see noise_median_spread.")
    return dict(meta=meta, rows=rows, summary=summarize_adaptive(rows, gamma))


def _tps_at(rows, i: int) -> float:
    """Tokens/s over `rows` (one per prompt) from their i-th timed repeat."""
    return sum(r["new_tokens"] for r in rows) / sum(r["seconds_all"][i] for r in rows)


def summarize_adaptive(rows, gamma=4) -> list[dict]:
    """One row per temperature x configuration (see compare_adaptive)."""
    from .bench import repeat_spread

    out = []
    const = f"constant {gamma}"
    for t in sorted({r["temperature"] for r in rows}):
        sel = [r for r in rows if r["temperature"] == t]
        by = {c: [r for r in sel if r["config"] == c] for c in dict.fromkeys(r["config"] for r in sel)}
        tps = {c: sum(r["new_tokens"] for r in rs) / sum(r["seconds"] for r in rs) for c, rs in by.items()}
        step = 1 / tps["plain"] if "plain" in tps else math.nan  # seconds per token of the plain loop: one target step
        per_prompt = {c: {r["prompt"]: r["tokens_per_s"] for r in rs} for c, rs in by.items()}
        for c, rs in by.items():
            s = dict(temperature=t, config=c, tokens_per_s=tps[c], new_tokens=sum(r["new_tokens"] for r in rs),
                     noise_median_spread=statistics.median(repeat_spread(r) for r in rs))
            if "plain" in tps:
                s["speedup_vs_plain"] = tps[c] / tps["plain"]
            if "drafted" in rs[0]:
                acc, dr, rej, rounds = (sum(r[k] for r in rs) for k in ("accepted", "drafted", "rejected", "rounds"))
                s.update(alpha=acc / dr if dr else math.nan, alpha_checked=acc / (acc + rej) if acc + rej else math.nan,
                         drafted_per_round=dr / rounds, tokens_per_round=s["new_tokens"] / rounds,
                         mean_gamma=sum(sum(r["gammas"]) for r in rs) / rounds,
                         draft_share=sum(r["draft_s"] for r in rs) / sum(r["seconds"] for r in rs),
                         # c and v as this loop paid them: a draft pass (one per drafted token) and a verify
                         # pass (one per round), each over the plain loop's time per token
                         c_in_loop=sum(r["draft_s"] for r in rs) / dr / step if dr else math.nan,
                         v_in_loop=sum(r["target_s"] for r in rs) / rounds / step)
            if const in tps and c != const:
                s["vs_constant"] = tps[c] / tps[const]
                # the same ratio from each repeat alone: repeat i of every configuration ran at about the
                # same time (they take turns), so the spread of these is the timing noise of the ratio
                s["vs_constant_by_repeat"] = [_tps_at(rs, i) / _tps_at(by[const], i) for i in range(len(rs[0]["seconds_all"]))]
                s["prompts_faster_than_constant"] = sum(per_prompt[c][p] > per_prompt[const][p] for p in per_prompt[c])
                s["n_prompts"] = len(per_prompt[c])
            if t == 0:
                s["all_equal_plain"] = all(r["same_as_plain"] for r in rs)
            out.append(s)
    return out


@torch.inference_mode()
def confidence_and_outcome(pair, ids, out, temperature: float = 0.0) -> list[tuple[float, bool]]:
    """(the draft's confidence, accepted?) for every drafted token the target checked in `out`, a
    speculative_generate result for the prompt `ids` (1, T). Confidence is what the threshold rule
    reads (HF's ConfidenceCriteria): the draft's probability of its token, from its plain softmax at
    T = 0 and its distribution at T > 0; one draft pass over the final sequence gives it at every
    position (a rejected token's prefix is the accepted prefix, which that sequence holds). Tokens
    drafted after a rejection were never checked and are left out."""
    from .sampling import probs_from_logits

    seq = out.sequences.to(pair.device)
    logits = pair.draft(seq).logits[0].float()  # (L, V): row j predicts the token at j + 1
    q = logits.softmax(-1) if temperature == 0 else probs_from_logits(logits, temperature=temperature)
    pos, pairs = ids.shape[1], []
    for r in out.rounds:
        checked = r.drafted[: r.n_accepted + (r.kind == "resample")]
        pairs += [(q[pos - 1 + i, x].item(), i < r.n_accepted) for i, x in enumerate(checked)]
        pos += len(r.emitted)
    return pairs


def plot_schedules(outs: dict, title: str, ax=None):
    """Per round: the gamma a schedule allowed (a line) and the tokens drafted and accepted (bars),
    one row of panels per speculative_generate result in `outs` (label -> result)."""
    import matplotlib.pyplot as plt

    axes = ax if ax is not None else plt.subplots(len(outs), 1, figsize=(7, 1.9 * len(outs)), sharex=True,
                                                   layout="constrained")[1]
    axes = [axes] if not hasattr(axes, "__len__") else axes
    for a, (label, out) in zip(axes, outs.items()):
        x = range(1, len(out.rounds) + 1)
        a.bar(x, [len(r.drafted) for r in out.rounds], color="#c8d4e8", label="drafted")
        a.bar(x, [r.n_accepted for r in out.rounds], color="#4c72b0", width=0.5, label="accepted")
        a.step(x, [r.gamma for r in out.rounds], where="mid", color="#dd8452", lw=2, label="gamma allowed")
        top = max(max(r.gamma, len(r.drafted)) for r in out.rounds)
        a.set(ylabel="tokens", title=label, ylim=(0, 1.5 * top))
        a.legend(fontsize=7, ncol=3, loc="upper left")
    axes[-1].set_xlabel("round")
    axes[0].figure.suptitle(title, fontsize=10)
    return axes


def plot_confidence(pairs: list[tuple[float, bool]], thresholds, title: str, ax=None):
    """Histograms of the draft's confidence for drafted tokens the target accepted and rejected,
    with the thresholds marked."""
    import matplotlib.pyplot as plt
    import numpy as np

    ax = ax if ax is not None else plt.subplots(figsize=(6, 3), layout="constrained")[1]
    bins = np.linspace(0, 1, 21)
    for ok, color, label in ((True, "#4c72b0", "accepted"), (False, "#c44e52", "rejected")):
        vals = [c for c, a in pairs if a == ok]
        ax.hist(vals, bins, alpha=0.6, color=color, label=f"{label} ({len(vals)})", density=True)
    for t in thresholds:
        ax.axvline(t, color="k", ls=":", lw=1)
    ax.set(xlabel="draft's probability of its token (what the threshold reads)", ylabel="density", title=title)
    ax.legend(fontsize=8)
    return ax


def round_speedup(tau: float, k: float, c: float, v: float = 1.0) -> float:
    """An extension of Leviathan et al.'s Thm 3.8 (constant gamma, i.i.d. acceptance) to rounds of any
    length: mean tokens per round `tau` over the cost of a mean round, `k` draft passes of c target
    steps each and one verify pass of v steps."""
    return tau / (k * c + v)


def break_even_c(tau: float, k: float, tau_ref: float, k_ref: float) -> dict:
    """Where a configuration (tau tokens and k drafted per round) and a reference (tau_ref, k_ref)
    are equally fast under `round_speedup` with v = 1: c* = (tau_ref - tau) / (tau k_ref - tau_ref k).
    Returns dict(c_star, wins_above): the configuration is faster for every c > c_star if wins_above,
    for every c < c_star if not; c_star 0 means at every c (wins_above True) or at none (False)."""
    # ratio(c) = tau (k_ref c + 1) / (tau_ref (k c + 1)); it tends to tau k_ref / (tau_ref k) as c grows
    at_zero, at_inf = tau / tau_ref, (tau * k_ref) / (tau_ref * k) if k else math.inf
    if (at_zero > 1) == (at_inf > 1):  # no crossing for c >= 0
        return dict(c_star=0.0, wins_above=at_zero > 1)
    return dict(c_star=(tau_ref - tau) / (tau * k_ref - tau_ref * k), wins_above=at_inf > 1)


def adaptive_verdicts(result: dict) -> list[dict]:
    """Notebook 08 section 5: each rule of a `compare_adaptive` result against the constant gamma at
    the same temperature, three ways. The cost model (`break_even_c` from the exact counts tau and
    k, at the c this loop paid); the clock over repeats (`utils.bench.noise_verdict`: every repeat's
    ratio must clear the spread of one configuration's repeats); the clock over prompts (a two-sided
    sign test, `scipy.stats.binomtest`, on how many prompts the rule was faster). One dict per rule
    and temperature; `word` is "faster", "slower" or "within noise"."""
    from scipy.stats import binomtest

    from .bench import noise_verdict

    const = {s["temperature"]: s for s in result["summary"] if s["config"] == f"constant {result['meta']['gamma']}"}
    out = []
    for s in result["summary"]:
        k = const[s["temperature"]]
        if "alpha" not in s or s is k:  # the plain loop has no draft; the constant is the reference
            continue
        be = break_even_c(s["tokens_per_round"], s["drafted_per_round"], k["tokens_per_round"], k["drafted_per_round"])
        noise = max(s["noise_median_spread"], k["noise_median_spread"])
        out.append(dict(
            temperature=s["temperature"], config=s["config"], tau=s["tokens_per_round"], tau_const=k["tokens_per_round"],
            k=s["drafted_per_round"], k_const=k["drafted_per_round"],
            # per generated token, relative to the constant: draft passes (k / tau) and target passes (1 / tau)
            draft_passes=(s["drafted_per_round"] / s["tokens_per_round"]) / (k["drafted_per_round"] / k["tokens_per_round"]),
            target_passes=k["tokens_per_round"] / s["tokens_per_round"],
            c_star=be["c_star"], wins_above=be["wins_above"], c_loop=k["c_in_loop"],
            model_faster=(k["c_in_loop"] > be["c_star"]) == be["wins_above"],
            measured=s["vs_constant"], repeats=s["vs_constant_by_repeat"], noise=noise,
            word=noise_verdict(s["vs_constant_by_repeat"], noise),
            prompts_faster=s["prompts_faster_than_constant"], n_prompts=s["n_prompts"],
            p_sign=binomtest(s["prompts_faster_than_constant"], s["n_prompts"]).pvalue))
    return out


def describe_verdict(v: dict) -> str:
    """One line of `adaptive_verdicts`: counts, the cost model's verdict, the clock's."""
    where = ("at every c" if v["wins_above"] else "at no c") if v["c_star"] == 0 else \
        f"for c {'above' if v['wins_above'] else 'below'} {v['c_star']:.2f}"
    return (f"T = {v['temperature']:g}, {v['config']:15s}: tau {v['tau']:.2f} vs {v['tau_const']:.2f}, "
            f"k {v['k']:.2f} vs {v['k_const']:.2f} (per token: draft passes x{v['draft_passes']:.2f}, "
            f"target passes x{v['target_passes']:.2f}) -> faster {where}; at c = {v['c_loop']:.2f} "
            f"{'faster' if v['model_faster'] else 'slower'}. Measured {v['measured']:.2f}x ({min(v['repeats']):.2f} to "
            f"{max(v['repeats']):.2f} over repeats, spread {v['noise']:.0%}: {v['word']}), faster on "
            f"{v['prompts_faster']} of {v['n_prompts']} prompts (sign test p = {v['p_sign']:.2f})")


def verdict_summary(verdicts: list[dict], gamma: int) -> list[str]:
    """The lines under notebook 08's section 5: which rules the clock calls faster, slower or within
    noise of the constant gamma; which split the prompts significantly; and, for the confidence
    thresholds, the cost model's prediction beside the clock's verdict."""
    word = {"faster": "faster than", "within noise": "within noise of", "slower": "slower than"}
    rule = {"faster": "every repeat above 1 + spread", "within noise": "otherwise", "slower": "every repeat below 1 - spread"}
    lines = []
    for w in ("faster", "within noise", "slower"):
        names = [f"{v['config']} at T = {v['temperature']:g}" for v in verdicts if v["word"] == w]
        lines.append(f"measured {word[w]} constant gamma {gamma} ({rule[w]}): {', '.join(names) or 'none'}")
    sig = [f"{v['config']} at T = {v['temperature']:g}" for v in verdicts if v["p_sign"] < 0.05]
    lines.append(f"faster or slower on significantly many prompts (sign test p < 0.05): {', '.join(sig) or 'none'}")
    cut = [v for v in verdicts if v["config"].startswith("confidence")]
    if cut:
        loops = " and ".join(dict.fromkeys(f"{v['c_loop']:.2f} at T = {v['temperature']:g}" for v in cut))
        lines.append(f"thresholds: break-even c* from {min(v['c_star'] for v in cut):.2f} to {max(v['c_star'] for v in cut):.2f}, "
                     f"against this loop's c of {loops}: predicted faster here in {sum(v['model_faster'] for v in cut)} "
                     f"of {len(cut)} cases")
        both = {}  # "predicted ..., measured ...": the thresholds in that case
        for v in cut:
            key = f"predicted {'faster' if v['model_faster'] else 'slower'}, measured {word[v['word']]} constant gamma {gamma}"
            both.setdefault(key, []).append(f"{v['config'].removeprefix('confidence ')} at T = {v['temperature']:g}")
        lines.append("thresholds, model against clock: " + "; ".join(f"{key}: {', '.join(n)}" for key, n in both.items()))
    return lines


# ----------------------------------------------------------------------------------------------
# Batched speculative decoding (notebook 09)
# ----------------------------------------------------------------------------------------------


def left_padded(tokenizer, texts, device="cpu"):
    """(input_ids, attention_mask) of `texts`, left-padded as HF generate expects."""
    from .models import check_prompts

    texts = check_prompts(texts)
    side, tokenizer.padding_side = tokenizer.padding_side, "left"
    try:
        enc = tokenizer(list(texts), return_tensors="pt", padding=True)
    finally:
        tokenizer.padding_side = side
    return enc.input_ids.to(device), enc.attention_mask.to(device)


COST_ITERS, COST_REPEATS = 10, 15  # verify_cost's defaults: 15 repeats steady c and v on a busy 2-core VM
SHAPE_COST_REPEATS = 5  # shape_costs (real Gemma2 shapes, made for a GPU: steadier, and each pass costs more)


@torch.inference_mode()
def verify_cost(target, draft, ids, mask, gamma: int = 4, iters: int = COST_ITERS, repeats: int = COST_REPEATS) -> dict:
    """What a round costs at this batch, from the models alone: one target pass over (B, 1) tokens (a
    plain decoding step), one over (B, gamma + 1) tokens (a verify pass) and one draft step (B, 1),
    each after the prompt is cached and cropped back after every call. The three take turns: a repeat
    times `iters` calls of each, in an order that rotates from repeat to repeat, so a burst of load
    from elsewhere on the machine falls on all three rather than on one; after a warm-up round each
    keeps its fastest repeat (load only adds time, so the fastest repeat is the nearest to the pass's
    own cost). Returns dict(B, target_step_s, verify_s, draft_step_s, v = verify / step, c = draft
    step / target step, step_spread = (slowest - fastest) / fastest of the plain step's repeats)."""
    from transformers import DynamicCache

    from .batched import _crop_right, _forward, _Timer, check_batch

    valid = check_batch(ids, mask)
    off = _Timer(ids.device, False)
    caches = {}

    def timer(model, width):
        if id(model) not in caches:  # one cache per model, holding the prompt; every call is cropped back to it
            caches[id(model)] = cache = DynamicCache()
            if ids.shape[1] > 1:
                _forward(model, cache, ids[:, :-1], valid[:, :-1], off, keep=1)  # logits unused
        cache = caches[id(model)]
        L = cache.get_seq_length()
        x = ids[:, -1:].repeat(1, width)  # (B, width): what is fed does not change the cost
        v = torch.cat([valid, torch.ones_like(valid[:, :1]).repeat(1, width - 1)], 1)

        def seconds_per_call():
            _sync(ids.device)
            t0 = time.perf_counter()
            for _ in range(iters):
                _forward(model, cache, x, v, off)
                _crop_right(cache, L)
            _sync(ids.device)
            return (time.perf_counter() - t0) / iters

        return seconds_per_call

    passes = {"target_step": timer(target, 1), "verify": timer(target, gamma + 1), "draft_step": timer(draft, 1)}
    names = list(passes)
    times = {n: [] for n in names}
    for rep in range(repeats + 1):
        k = rep % len(names)  # the order rotates by one pass per repeat
        for n in names[k:] + names[:k]:
            t = passes[n]()
            if rep:  # the first round warms up
                times[n].append(t)
    best = {n: min(ts) for n, ts in times.items()}
    step = best["target_step"]
    return dict(B=int(ids.shape[0]), target_step_s=step, verify_s=best["verify"], draft_step_s=best["draft_step"],
                v=best["verify"] / step, c=best["draft_step"] / step,
                step_spread=(max(times["target_step"]) - step) / step)


# The fast path's passes at batch B, for compiled_verify_cost. Two functions with the same body, one
# per model: dynamo keeps what it learns about shapes per function, so the draft's cache shapes never
# make the target's graph more general. Automatic dynamic shapes: the first batch size and width get a
# static graph, the first change of each gets one graph that is general in it, and every later batch
# size reuses that (no compile per B; on CUDA, one CUDA graph recorded per shape, which is quick).
def _target_pass(model, cache, ids):  # (B, W) -> (B, W, V)
    return model(input_ids=ids, past_key_values=cache, use_cache=True).logits


def _draft_pass(model, cache, ids):  # (B, W) -> (B, W, V)
    return model(input_ids=ids, past_key_values=cache, use_cache=True).logits


# role -> why its pass met a graph break under fullgraph=True: compiled in pieces since, by every later call
_BROKEN_PASSES: dict[str, str] = {}


@functools.cache
def _compiled_pass(role: str, cuda: bool, fullgraph: bool = True):
    fn = _target_pass if role == "target" else _draft_pass
    return torch.compile(fn, mode="reduce-overhead" if cuda else "default", fullgraph=fullgraph)


COMPILED_ITERS = 10  # compiled_verify_cost's passes per repeat, one after another before the cache rolls back


@torch.inference_mode()
def compiled_verify_cost(target, draft, ids, gamma: int = 4, iters: int = COMPILED_ITERS, repeats: int = 3) -> dict:
    """verify_cost on the fast path (notebook 07, utils.fast): the same three passes (target over
    (B, 1) and (B, gamma + 1) tokens, draft over (B, 1)), each through torch.compile with a static KV
    cache, and CUDA graphs on a GPU. Eager passes on a GPU are launch-bound, so their v(B) and c(B) say
    more about Python than about the hardware; these say where the weights and the arithmetic put
    them. ids (B, T): rows of equal length, no padding (the cost of a pass does not depend on the
    values). Each timed repeat runs `iters` passes one after another and then rolls the cache back
    once (a static cache attends over all its positions, masked, so a pass costs the same wherever
    it writes; rolling back after every pass would add one eager kernel per layer to each), as
    utils.shapes.compiled_step_ms does. The first call of each pass is timed apart
    (`*_first_call_s`: it compiles when this B or width is new to the graph) and `new_graphs` counts
    the graphs dynamo compiled for this B. torch specialises sizes of 1, so B = 1 runs graphs of its
    own (as batch-1 decoding does); from B = 2 on the graphs are general in B (new_graphs 0 after B = 2).
    Returns dict(B, target_step_s, verify_s, draft_step_s, v, c, target_step_first_call_s, ...,
    new_graphs)."""
    from torch._dynamo.utils import counters

    from .fast import BUCKET, RECOMPILE_LIMIT, compile_fallback, rollback, static_cache
    from .shapes import steady_seconds

    cuda = ids.device.type == "cuda"
    B, T = ids.shape
    # one cache length for every pass and B (no recompile for it), room for a repeat's passes
    max_len = -(-(T + iters * (gamma + 1)) // BUCKET) * BUCKET
    graphs_before = counters["stats"]["unique_graphs"]
    out, caches = {}, {}

    def timed(role, model, width):
        if role not in caches:  # one cache per model: its two passes share the prompt, read once, eagerly
            caches[role] = static_cache(model, max_len)  # batch size: set by the prefill
            model(input_ids=ids[:, :-1], past_key_values=caches[role], use_cache=True, logits_to_keep=1)
        cache = caches[role]
        rollback(cache, T - 1)  # what an earlier pass wrote past the prompt goes
        step = [_compiled_pass(role, cuda, role not in _BROKEN_PASSES)]  # replaced if fullgraph=True fails
        x = ids[:, -1:].repeat(1, width).clone()  # (B, width)

        def call():
            if cuda:
                torch.compiler.cudagraph_mark_step_begin()
            step[0](model, cache, x)

        _sync(ids.device)
        t0 = time.perf_counter()
        with torch._dynamo.config.patch(recompile_limit=RECOMPILE_LIMIT):
            try:
                call()  # compiles on a new shape (on CUDA the next call records the graph)
            except torch._dynamo.exc.Unsupported as e:  # a graph break under fullgraph=True (raised while tracing)
                if role in _BROKEN_PASSES:
                    raise
                _BROKEN_PASSES[role] = compile_fallback(e, f"compiled_verify_cost, {role} pass")
                step[0] = _compiled_pass(role, cuda, False)
                call()
        _sync(ids.device)
        first = time.perf_counter() - t0
        return steady_seconds(call, lambda: rollback(cache, T - 1), ids.device, iters=iters, repeats=repeats), first

    for name, role, model, width in (("target_step", "target", target, 1), ("verify", "target", target, gamma + 1),
                                     ("draft_step", "draft", draft, 1)):
        out[f"{name}_s"], out[f"{name}_first_call_s"] = timed(role, model, width)
    return dict(B=B, **out, v=out["verify_s"] / out["target_step_s"], c=out["draft_step_s"] / out["target_step_s"],
                new_graphs=counters["stats"]["unique_graphs"] - graphs_before)


def _run_batched(pair, ids, mask, method, max_new_tokens, gamma, temperature, seed=0) -> dict:
    from .batched import autoregressive_batched, speculative_batched

    eos = pair.target.generation_config.eos_token_id
    gen = torch.Generator(device=pair.device).manual_seed(seed)
    _sync(pair.device)
    t0 = time.perf_counter()
    if method == "plain (ours)":
        out = autoregressive_batched(pair.target, ids, mask, max_new_tokens=max_new_tokens, temperature=temperature,
                                     eos=eos, generator=gen)
        new = sum(out.new_tokens)
    elif method == "plain (HF generate)":
        kw = dict(do_sample=True, temperature=temperature, top_k=None, top_p=None) if temperature > 0 else dict(do_sample=False)
        seq = pair.target.generate(ids, attention_mask=mask, max_new_tokens=max_new_tokens, eos_token_id=eos,
                                   pad_token_id=pair.target.generation_config.pad_token_id, **kw)
        new_ids = seq[:, ids.shape[1]:]
        ended = (new_ids == eos).long().cumsum(1)  # tokens after a row's first EOS are padding
        new = int(((ended == 0) | ((ended == 1) & (new_ids == eos))).sum())
        out = None
    else:
        out = speculative_batched(pair.target, pair.draft, ids, mask, max_new_tokens=max_new_tokens, gamma=gamma,
                                  temperature=temperature, eos=eos, generator=gen, time_models=False)  # at B = 1 too
        new = sum(out.new_tokens)
    _sync(pair.device)
    secs = time.perf_counter() - t0
    row = dict(new_tokens=new, seconds=secs)
    if out is not None:
        row.update(rounds=out.rounds, mean_rows_per_round=statistics.mean(out.batch_sizes) if out.batch_sizes else 0.0)
    if out is not None and method != "plain (ours)":
        row.update(drafted=sum(out.drafted), accepted=sum(out.accepted), rejected=sum(out.rejected),
                   draft_passes=out.draft_passes, ragged_rounds=out.ragged_rounds, alpha=out.acceptance_rate,
                   alpha_checked=out.checked_acceptance_rate, tokens_per_row_round=new / max(1, sum(out.batch_sizes)))
    return row


def _compiled_row(target, draft, ids, gamma, heard: list) -> dict:
    """compiled_verify_cost, with inductor's CUDA-graph messages (utils.fast.cudagraph_watch) added to
    `heard` (a graph that skipped CUDA graphs when it was compiled skips them at every later B that
    reuses it, so the result keeps one list for the run) and any error recorded instead of raised (the
    eager numbers of the row stand)."""
    from .fast import cudagraph_watch

    try:
        with cudagraph_watch() as skips:
            row = compiled_verify_cost(target, draft, ids, gamma)
    except Exception as e:  # noqa: BLE001 - recorded in the result: an OOM at a large B, a compile failure
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        row = dict(error=f"{type(e).__name__}: {e}"[:2000])
    heard += [f"B = {ids.shape[0]}: {m}" for m in skips]
    return row


def shape_costs(draft_size: str = "2b", target_size: str = "27b", *, batch_sizes=(1, 2, 4, 8, 16, 32, 64), gamma: int = 4,
                prompt_len: int = 128, device=None, dtype=torch.bfloat16, overrides: dict | None = None, progress=True,
                on_step=None, compiled: bool = False) -> dict:
    """`verify_cost` on real Gemma2 shapes with random weights (utils.shapes): how c(B) and v(B) move
    with the batch where the weights are real-sized. Timing does not depend on the weights' values,
    acceptance does, so none is reported; the speedup it implies at a given alpha is
    tau(alpha, gamma) / (gamma c + v). `overrides` shrinks both configurations (tests on a CPU).
    on_step(partial result) is called after each batch size (the command line writes its JSON there, so
    a run stopped by a time limit keeps what it measured). compiled=True also measures each B on the
    fast path (`compiled_verify_cost`, under row["compiled"]; on a GPU that is the v(B) that matters:
    eager passes there are launch-bound); a failure there is recorded in the row and the run goes on.
    `compile_fallbacks` (compiled=True): where torch.compile(fullgraph=True) met a graph break and a pass
    was compiled in pieces instead (exact, slower; utils.fast.compile_fallback); empty when none did."""
    from tqdm.auto import tqdm

    from .shapes import gemma2_config, random_model

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    ov = overrides or {}
    draft = random_model(gemma2_config(draft_size, **ov), device=device, dtype=dtype, seed=1)
    target = random_model(gemma2_config(target_size, **ov), device=device, dtype=dtype, seed=2)
    V = target.config.vocab_size
    g = torch.Generator().manual_seed(0)
    costs, heard, compiled_broken = [], [], None
    from .fast import COMPILE_FALLBACKS

    breaks_before = len(COMPILE_FALLBACKS)

    def result(done):
        fell = COMPILE_FALLBACKS[breaks_before:]  # and a pass that broke in an earlier call: in pieces here too
        fell = fell + [m for m in _BROKEN_PASSES.values() if m not in fell]
        extra = dict(cudagraph_skips=heard, compiled_stopped=compiled_broken, compile_fallbacks=fell) if compiled else {}
        return dict(draft=draft_size, target=target_size, gamma=gamma, prompt_len=prompt_len, dtype=str(dtype),
                    device=str(device), overrides=ov, costs=costs, complete=done,
                    skipped_batch_sizes=[b for b in batch_sizes if b not in {c["B"] for c in costs}], **extra)

    for B in tqdm(batch_sizes, disable=not progress, desc="batch sizes"):
        ids = torch.randint(3, V, (B, prompt_len), generator=g).to(device)
        costs.append(verify_cost(target, draft, ids, torch.ones_like(ids), gamma, repeats=SHAPE_COST_REPEATS))
        if compiled and not compiled_broken:
            costs[-1]["compiled"] = row = _compiled_row(target, draft, ids, gamma, heard)
            # An error stops the compiled passes: out of memory at this B comes back at every larger
            # one, a compile error at every B (minutes each on a GPU).
            if "error" in row:
                compiled_broken = row["error"]
        if on_step:
            on_step(result(len(costs) == len(batch_sizes)))
    return result(True)


BATCH_METHODS = ("plain (ours)", "plain (HF generate)", "speculative (ours)")


def compare_batched(pair, prompts, *, batch_sizes=(1, 2, 4, 8, 16), gamma=4, temperatures=(0.0, 1.0), max_new_tokens=48,
                    repeats=5, warmup=1, progress=True, on_step=None) -> dict:
    """Tokens/s of plain batched decoding (ours and HF generate) and of batched speculative decoding
    at each batch size B (the first B prompts, left-padded), plus `verify_cost` at each B (what a
    verify pass and a draft step cost relative to a plain step). Per B and temperature the methods
    take turns after a warm-up and each keeps its median run. Returns dict(meta, rows, costs);
    meta["complete"] says whether every batch size ran. on_step(partial result) is called after each
    batch size (the command line writes its JSON there, so a run stopped by a time limit keeps what
    it measured)."""
    from tqdm.auto import tqdm

    from .bench import median_run, metadata, take_turns

    if max(batch_sizes) > len(prompts):
        raise ValueError(f"batch size {max(batch_sizes)} needs as many prompts; got {len(prompts)}.")
    rows, costs = [], []
    t_start = time.perf_counter()

    def result(done):
        meta = metadata(pair, {}, max_new_tokens, repeats)
        meta.update(gamma=gamma, batch_sizes=list(batch_sizes), temperatures=list(temperatures), warmup=warmup,
                    methods=list(BATCH_METHODS), wall_s=time.perf_counter() - t_start, n_prompts=max(batch_sizes),
                    complete=done, timing="per batch size and temperature the methods take turns after a warm-up; each keeps the "
                    "median of its repeats; tokens/s = new tokens of all rows / seconds. costs (verify_cost): the three passes "
                    f"take turns, each keeps the fastest of {COST_REPEATS} repeats of {COST_ITERS} calls.")
        return dict(meta=meta, rows=list(rows), costs=list(costs))

    for B in tqdm(batch_sizes, disable=not progress, desc="batch sizes"):
        ids, mask = left_padded(pair.tokenizer, prompts[:B], pair.device)
        costs.append(verify_cost(pair.target, pair.draft, ids, mask, gamma))
        for t in temperatures:
            runs, _ = take_turns(lambda m: _run_batched(pair, ids, mask, m, max_new_tokens, gamma, t), BATCH_METHODS, repeats, warmup)
            for m, rs in runs.items():
                med = median_run(rs)
                rows.append(dict(B=B, temperature=t, method=m, **med, seconds_all=[r["seconds"] for r in rs],
                                 tokens_per_s=med["new_tokens"] / med["seconds"]))
        if on_step:
            on_step(result(len(costs) == len(batch_sizes)))
    return result(True)


def batched_table(result, temperature: float = 0.0) -> list[dict]:
    """Per B: tokens/s of each method, speculative / plain (ours) and / plain (HF), alpha, c, v, and the
    speedup the cost model predicts from them: tau / (k_bar c + v), tau = tokens a row gains per round,
    k_bar = the draft's batched passes per round (up to gamma drafts, plus the catch-up pass after a
    round where a row kept every draft, as notebook 07 counts them)."""
    out = []
    for cost in result["costs"]:
        B = cost["B"]
        r = {row["method"]: row for row in result["rows"] if row["B"] == B and row["temperature"] == temperature}
        if not r:
            continue
        spec = r["speculative (ours)"]
        k_bar = spec["draft_passes"] / spec["rounds"]
        out.append(dict(B=B, **{f"{m} tok/s": r[m]["tokens_per_s"] for m in BATCH_METHODS},
                        speedup_vs_ours=spec["tokens_per_s"] / r["plain (ours)"]["tokens_per_s"],
                        speedup_vs_hf=spec["tokens_per_s"] / r["plain (HF generate)"]["tokens_per_s"],
                        alpha=spec["alpha"], alpha_checked=spec["alpha_checked"], c=cost["c"], v=cost["v"],
                        tau=spec["tokens_per_row_round"], k_bar=k_bar,
                        predicted=spec["tokens_per_row_round"] / (k_bar * cost["c"] + cost["v"])))
    return out


def plot_batched(result, temperature: float = 0.0, axes=None):
    """Left: tokens/s against B for each method. Right: the speedup of batched speculative decoding
    over plain batched decoding (ours) against B, beside v(B), what a verify pass of gamma + 1 tokens
    costs in plain steps (right axis): the gain shrinks as v grows. Both titles name the temperature,
    the left one also the range of alpha per checked token over B; `axes` (two axes) lets a caller put
    several temperatures in one figure."""
    import matplotlib.pyplot as plt

    table = batched_table(result, temperature)
    if not table:
        raise ValueError(f"no rows at temperature {temperature} in this result.")
    if axes is None:
        _, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    Bs = [r["B"] for r in table]
    for m, style in zip(BATCH_METHODS, ("o-", "s--", "^-")):
        axes[0].plot(Bs, [r[f"{m} tok/s"] for r in table], style, label=m)
    axes[0].set(xscale="log", xlabel="batch size B", ylabel="tokens/s (all rows)", xticks=Bs, xticklabels=Bs,
                title=f"throughput, T = {temperature:g}, alpha per checked token "
                      f"{min(r['alpha_checked'] for r in table):.2f} to {max(r['alpha_checked'] for r in table):.2f}")
    axes[0].legend(fontsize=8)
    # The two curves are told apart by the colours of their axes (a legend would cover points).
    axes[1].plot(Bs, [r["speedup_vs_ours"] for r in table], "^-", color="C2")
    axes[1].axhline(1, color="grey", lw=0.8)
    axes[1].set(xscale="log", xlabel="batch size B", xticks=Bs, xticklabels=Bs,
                title=f"gain vs a verify pass of {result['meta']['gamma'] + 1} tokens, T = {temperature:g}")
    axes[1].set_ylabel("▲ speedup: speculative / plain (ours)", color="C2")
    ax2 = axes[1].twinx()
    ax2.plot(Bs, [r["v"] for r in table], "x:", color="C3")
    ax2.set_ylabel("× v: verify pass / plain step", color="C3")
    return axes


def roofline_v(B: int, gamma: int, R: float) -> float:
    """The roofline v(B) of notebook 09: a verify pass of B (gamma + 1) tokens over a plain step of B
    tokens, each memory-bound below R tokens per weight read and compute-bound above (weights only)."""
    return max(1, B * (gamma + 1) / R) / max(1, B / R)


def plot_shape_costs(result, R: float | None = None, axes=None):
    """A batched-cost result (`shape_costs`, the JSON of `python -m utils.beyond batched-cost`) as two
    panels against the batch size B: v(B), a verify pass of gamma + 1 tokens in plain steps, and c(B),
    a draft step in target steps; eager passes as measured, and the compiled ones where the result has
    them. R (tokens per weight read at which the hardware turns compute-bound) adds the roofline
    v(B) (`roofline_v`). The title names the shapes, the hardware, the
    date and "random weights". Returns the axes."""
    import matplotlib.pyplot as plt

    costs, g = result["costs"], result["gamma"]
    if not costs:
        raise ValueError("this batched-cost result has no batch size measured yet.")
    if axes is None:
        _, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    Bs = [c["B"] for c in costs]
    ok = [c for c in costs if "v" in c.get("compiled", {})]
    for ax, key in zip(axes, ("v", "c")):
        ax.plot(Bs, [c[key] for c in costs], "o--", label="eager (HF forward, dynamic cache)")
        if ok:
            ax.plot([c["B"] for c in ok], [c["compiled"][key] for c in ok], "s-",
                    label="compiled (static cache, torch.compile, CUDA graphs on a GPU)")
        ax.set(xscale="log", xlabel="batch size B", xticks=Bs, xticklabels=Bs)
        ax.minorticks_off()
    if R:
        axes[0].plot(Bs, [roofline_v(B, g, R) for B in Bs], ":", color="grey",
                     label=f"roofline, R = {R:.0f} tokens per weight read")
    axes[0].set(ylabel=f"v: verify pass ({g + 1} tokens) / plain step", title="v(B): what verifying costs")
    axes[1].set(ylabel="c: draft step / target step", title="c(B): what drafting costs")
    axes[0].legend(fontsize=8)
    meta = result.get("meta", {})
    fig = axes[0].figure
    fig.suptitle(f"gemma-2-{result['draft']} -> gemma-2-{result['target']} shapes, random weights, {result['dtype']}; "
                 f"{meta.get('hardware', result['device'])}, {meta.get('date', 'date not recorded')}"
                 + ("; CUDA graphs skipped in part (the file's cudagraph_skips)" if result.get("cudagraph_skips") else "")
                 + ("; compiled with graph breaks (the file's compile_fallbacks)" if result.get("compile_fallbacks") else ""),
                 fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 0.94))  # room for the suptitle above the panels' titles
    return axes


def _check_args(ap, args) -> Path:
    """Every flag checked before any model is loaded. Returns the output json path."""
    from .results import check_bench_flags

    if any(not 0 < t < 1 for t in args.thresholds):
        ap.error(f"--thresholds must all be in (0, 1) (got {args.thresholds}): the draft's probability below which it stops")
    counts = {"--n-prompts": args.n_prompts, "--max-new-tokens": args.max_new_tokens, "--repeats": args.repeats,
              "--gamma": args.gamma, "--threads": args.threads}
    return check_bench_flags(ap, args, "adaptive", counts, suffix=f"-{args.prompts}")[0]


def _check_batched_args(ap, args) -> Path:
    """Every flag of `batched` checked before any model is loaded. Returns the output json path."""
    from .results import check_bench_flags

    counts = {"--max-new-tokens": args.max_new_tokens, "--repeats": args.repeats, "--gamma": args.gamma,
              "--threads": args.threads, "--batch-sizes": min(args.batch_sizes)}
    path, prompts = check_bench_flags(ap, args, "batched", counts)
    if max(args.batch_sizes) > len(prompts):
        ap.error(f"--batch-sizes up to {max(args.batch_sizes)} needs as many prompts; {args.prompts!r} has {len(prompts)}")
    return path


def _main_batched_cost(ap, args) -> int:
    from .results import check_device, check_output, command_errors, write_json
    from .shapes import GEMMA2_SHAPES, _versions, available_memory_bytes, gemma2_config, param_count

    sizes = args.shapes.split(":")
    if len(sizes) != 2 or any(s not in GEMMA2_SHAPES for s in sizes):
        ap.error(f"--shapes must be DRAFT:TARGET with sizes from {sorted(GEMMA2_SHAPES)} (got {args.shapes!r})")
    for flag, value in (("--batch-sizes", min(args.batch_sizes)), ("--gamma", args.gamma), ("--prompt-len", args.prompt_len)):
        if value < 1:
            ap.error(f"{flag} must be >= 1 (got {value})")
    context = min(gemma2_config(s).max_position_embeddings for s in sizes)
    passes = COMPILED_ITERS if args.compiled else 1  # --compiled: that many verify passes before each rollback
    if args.prompt_len + passes * (args.gamma + 1) > context:
        ap.error(f"--prompt-len {args.prompt_len} + {passes} x (--gamma {args.gamma} + 1) is past Gemma2's context of "
                 f"{context} positions: lower them")
    device = check_device(ap, args.device)  # --device cuda without a GPU stops here
    if not device.startswith("cuda"):
        need, free = 2 * (param_count(sizes[0]) + param_count(sizes[1])), available_memory_bytes()  # bf16 weights
        if free is not None and need > 0.9 * free:
            ap.error(f"--device {device}: {args.shapes} needs about {need / 2**30:.0f} GiB in bf16 and this machine has "
                     f"{free / 2**30:.0f} GiB available; run it on a GPU (scripts/gpu_run.sh batched-cost) or pass "
                     "smaller --shapes (2b:2b)")
        print(f"note: {args.shapes} in bf16 on {device} is slow and needs tens of GB; it is made for a GPU", file=sys.stderr)
    path = args.out / f"batched-cost-{sizes[0]}-{sizes[1]}-{device.split(':')[0]}{'-compiled' if args.compiled else ''}.json"
    check_output(ap, path, args.out, args.overwrite)
    from .models import describe_device

    meta = dict(_versions(), hardware=describe_device(device), date=time.strftime("%Y-%m-%d"),
                weights="random weights: real Gemma2 shapes (published configs), seeded; time is real, acceptance is not",
                timing=f"verify_cost: the three passes take turns, each keeps the fastest of {SHAPE_COST_REPEATS} repeats of {COST_ITERS} calls after a "
                       "warm-up round, the cache cropped back after each call",
                compiled=("per row, 'compiled': compiled_verify_cost, the same passes through torch.compile with a "
                          "static cache (CUDA graphs on a GPU): median of repeats x iters calls after a warm-up repeat, "
                          "the cache rolled back once per repeat; *_first_call_s: the first call (compiles when the "
                          "shape is new); new_graphs: graphs dynamo compiled at this B (B = 1 has its own graphs, "
                          "B >= 2 share graphs general in B); 'cudagraph_skips' (whole run): inductor's messages when "
                          "a graph ran without CUDA graphs; 'compile_fallbacks' (whole run): where fullgraph=True failed and "
                          "a pass was compiled in pieces; 'compiled_stopped': the error that ended the compiled passes")
                if args.compiled else None)

    def save(partial):  # after every batch size: a run cut short by a time limit keeps what it measured
        write_json(path, {**partial, "meta": meta})

    with command_errors(ap):
        result = shape_costs(*sizes, batch_sizes=sorted(set(args.batch_sizes)), gamma=args.gamma,
                             prompt_len=args.prompt_len, device=device, on_step=save, compiled=args.compiled)
    save(result)
    for c in result["costs"]:
        print(json.dumps({k: round(v, 5) if isinstance(v, float) else v for k, v in c.items()}))
    print(f"wrote {path}")
    return 0


def _main_batched(ap, args) -> int:
    path = _check_batched_args(ap, args)
    if args.threads:
        torch.set_num_threads(args.threads)
    from .models import load_pair, load_prompts
    from .results import command_errors, write_json

    with command_errors(ap):
        pair = load_pair(args.pair, device=args.device)

        def save(partial):  # after every batch size: a run cut short by a time limit keeps what it measured
            partial["meta"]["prompt_set"] = args.prompts
            write_json(path, partial)

        result = compare_batched(pair, load_prompts(args.prompts), batch_sizes=sorted(set(args.batch_sizes)),
                                 gamma=args.gamma, temperatures=args.temperatures, max_new_tokens=args.max_new_tokens,
                                 repeats=args.repeats, on_step=save)
    save(result)
    for t in args.temperatures:
        for row in batched_table(result, t):
            print(json.dumps(dict(temperature=t, **{k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()})))
    print(f"wrote {path}")
    return 0


def _run_flags(p, repeats_help: str, repeats: int = 3) -> None:
    """The flags `adaptive` and `batched` share: temperatures, repeats, device, threads, output."""
    p.add_argument("--temperatures", type=float, nargs="+", default=[0.0, 1.0])
    p.add_argument("--repeats", type=int, default=repeats, help=f"{repeats_help} (default {repeats})")
    p.add_argument("--device", default=None)
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    p.add_argument("--out", type=Path, default=LOCAL_RUNS,
                   help="folder for the .json (default runs/, ignored by git; the committed result is in data/results)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing result file")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m utils.beyond", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True, metavar="{adaptive,batched,batched-cost}")
    a = sub.add_parser("adaptive", help="adaptive drafting (heuristic schedule, confidence threshold) vs a constant gamma",
                       description=compare_adaptive.__doc__)
    a.add_argument("--pair", default=None, help="a key of utils.models.PAIRS (default $SPECDEC_PAIR or tiny)")
    a.add_argument("--prompts", default="heldout", help="a key of data/prompts.json (default heldout)")
    a.add_argument("--n-prompts", type=int, default=None, help="the first N prompts of the set (default all)")
    a.add_argument("--max-new-tokens", type=int, default=48)
    a.add_argument("--gamma", type=int, default=4, help="the constant gamma, and where the heuristic schedule starts")
    a.add_argument("--thresholds", type=float, nargs="+", default=[0.2, 0.4, 0.6], help="draft confidence thresholds (HF's default 0.4)")
    _run_flags(a, "timed runs per configuration and prompt, after one warm-up")
    b = sub.add_parser("batched", help="batched speculative decoding vs plain batched decoding at several batch sizes",
                       description=compare_batched.__doc__)
    b.add_argument("--pair", default=None, help="a key of utils.models.PAIRS (default $SPECDEC_PAIR or tiny)")
    b.add_argument("--prompts", default="workshop", help="a key of data/prompts.json with at least max(--batch-sizes) prompts (default workshop)")
    b.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    b.add_argument("--max-new-tokens", type=int, default=48)
    b.add_argument("--gamma", type=int, default=4)
    _run_flags(b, "timed runs per method and batch size, after one warm-up", repeats=5)
    bc = sub.add_parser("batched-cost", help="c(B) and v(B) on real Gemma2 shapes with random weights (made for a GPU)",
                        description=shape_costs.__doc__)
    bc.add_argument("--shapes", default="2b:27b", help="DRAFT:TARGET Gemma2 sizes (default 2b:27b)")
    bc.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 2, 4, 8, 16, 32, 64])
    bc.add_argument("--gamma", type=int, default=4)
    bc.add_argument("--prompt-len", type=int, default=128)
    bc.add_argument("--compiled", action="store_true",
                    help="also time each pass on the fast path (static cache + torch.compile + CUDA graphs): a few compiles "
                         "of each model, minutes on a GPU; writes batched-cost-DRAFT-TARGET-DEVICE-compiled.json")
    bc.add_argument("--device", default=None)
    bc.add_argument("--out", type=Path, default=LOCAL_RUNS, help="folder for the .json (default runs/)")
    bc.add_argument("--overwrite", action="store_true", help="replace an existing result file")
    args = ap.parse_args(argv)
    if args.command == "batched":
        return _main_batched(b, args)
    if args.command == "batched-cost":
        return _main_batched_cost(bc, args)
    path = _check_args(a, args)
    if args.threads:
        torch.set_num_threads(args.threads)
    from .models import load_pair, load_prompts
    from .results import command_errors, write_json

    with command_errors(a):
        pair = load_pair(args.pair, device=args.device)
        prompts = load_prompts(args.prompts)[: args.n_prompts]
        result = compare_adaptive(pair, prompts, gamma=args.gamma, thresholds=args.thresholds,
                                  temperatures=args.temperatures, max_new_tokens=args.max_new_tokens, repeats=args.repeats)
    result["meta"]["prompt_set"] = args.prompts
    write_json(path, result)
    print(json.dumps({k: v for k, v in result["meta"].items() if k != "configs"}, indent=1))
    for s in result["summary"]:
        print(json.dumps(s))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
