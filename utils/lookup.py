"""Prompt lookup decoding (Saxena 2023): speculative decoding whose draft is copied from the context.

    python -m utils.lookup                      # tiny pair, both prompt kinds -> runs/
    python -m utils.lookup --out data/results   # the committed result

No draft model. Each round looks at the last n tokens of the sequence (n = max_ngram, then n - 1,
... down to 1), finds their most recent earlier occurrence in the sequence (prompt and text written
so far), and proposes the (up to gamma) tokens that followed it there. The target checks them in
one forward pass, exactly as in `utils.speculative.speculative_generate`. When nothing matches, the
round is a plain target step.

Why it stays exact: the proposal is a deterministic function of the sequence so far, so the
"draft distribution" at each drafted position is one-hot, q = onehot(x). The shared rule
(`utils.speculative.verify_step`) then reads: accept x with probability min(1, p(x) / 1) = p(x); after
a rejection sample from norm(max(0, p - onehot(x))), which is p with x taken out and renormalised.
At temperature 0 it is "accept while x is the target's argmax", so the output equals target greedy.

The command line compares, on prompts where the continuation repeats text already in the context
and on free writing: plain target decoding (HF greedy and our loop), ours with prompt lookup,
Hugging Face's `generate(prompt_lookup_num_tokens=..., max_matching_ngram_size=...)`, and our
speculative decoding with the draft model for reference; tokens/s, alpha, tokens per round and the
fraction of rounds that found a match. Written as lookup-<pair>-<device>.json with the hardware,
versions, date and prompts.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .models import ROOT
from .sampling import check_count, check_sampling_args, eos_set, probs_from_logits, sample, seeded
from .speculative import (
    Round,
    SpeculativeOutput,
    Verification,
    _crop,
    _new_cache,
    _Timer,
    check_generate_args,
    check_input_ids,
    check_length,
    check_model,
    verify_step,
)

LOCAL_RUNS = ROOT / "runs"  # ignored by git: where runs go unless --out says otherwise

# ----------------------------------------------------------------------------------------------
# The draft: an n-gram lookup in the sequence itself
# ----------------------------------------------------------------------------------------------


def find_draft(seq: list[int], gamma: int, max_ngram: int = 2) -> tuple[list[int], int]:
    """Propose up to `gamma` tokens by copying from earlier in `seq`.

    For n = max_ngram down to 1: take the last n tokens of seq, find their most recent earlier
    occurrence (one that is followed by at least one token), and return the tokens that followed it,
    at most gamma of them (fewer when the sequence ends first). Returns (draft, n); ([], 0) when no
    n-gram of any size recurs.

    >>> find_draft([5, 6, 7, 8, 5, 6], gamma=3)   # "5 6" occurred at position 0, "7 8 5" followed
    ([7, 8, 5], 2)
    """
    L = len(seq)
    for n in range(min(max_ngram, L - 1), 0, -1):
        tail = seq[L - n :]
        for start in range(L - n - 1, -1, -1):  # right to left: the most recent occurrence first
            if seq[start : start + n] == tail:
                return seq[start + n : start + n + gamma], n
    return [], 0


def check_lookup_args(gamma, max_ngram) -> None:
    """gamma and max_ngram: integers >= 1, with errors that say what they are."""
    check_count("gamma", gamma, 1,
                "it is how many tokens are copied from the context per round (HF's prompt_lookup_num_tokens)")
    check_count("max_ngram", max_ngram, 1,
                "the longest n-gram matched against the context (HF's max_matching_ngram_size, default 2)")


# ----------------------------------------------------------------------------------------------
# The generation loop
# ----------------------------------------------------------------------------------------------


@dataclass
class LookupOutput(SpeculativeOutput):
    """A SpeculativeOutput (rounds, sequences, timings) plus, per round, the size of the n-gram that
    matched: 0 when the lookup found nothing (a plain target step), None when the round had no room
    to draft (the last token of max_new_tokens). draft_time is the time spent searching."""

    ngram: list[int | None] = field(default_factory=list)

    @property
    def match_rate(self) -> float:
        """Fraction of the rounds that looked up the context and found a match (NaN if none looked)."""
        looked = [n for n in self.ngram if n is not None]
        return sum(n > 0 for n in looked) / len(looked) if looked else float("nan")


def verify_copied(p: torch.Tensor, drafted: list[int], temperature: float, generator) -> Verification:
    """Accept/reject a copied draft. p: (k + 1, V) target probabilities; drafted: k token ids.

    The draft is deterministic, so q is one-hot at each drafted token: with the shared rule this is
    "accept x_i with probability p(x_i)", and after a rejection a sample from p without x_i.
    Greedy: accept while x_i is the target's argmax, then the argmax.
    """
    k = len(drafted)
    if k == 0:  # no match: a plain target step
        tok = int(sample(p[0], generator)) if temperature > 0 else int(p[0].argmax())
        return Verification(0, tok, "target", [], [])
    d = torch.tensor(drafted, device=p.device)  # (k,)
    if temperature == 0:
        match = (p[:k].argmax(-1) == d).tolist() + [False]
        n = match.index(False)
        return Verification(n, int(p[n].argmax()), "bonus" if n == k else "resample", [], [])
    q = torch.zeros(k, p.shape[1], device=p.device, dtype=p.dtype).scatter_(1, d.view(k, 1), 1.0)  # (k, V) one-hot
    return verify_step(p, q, d, generator=generator, check=False)


@torch.inference_mode()
def prompt_lookup_generate(
    target,
    input_ids: torch.Tensor,
    *,
    max_new_tokens: int,
    gamma: int = 4,
    max_ngram: int = 2,
    temperature: float = 0.0,
    top_k: int | None = None,
    top_p: float | None = None,
    eos_token_id: int | list[int] | None = None,
    generator: torch.Generator | None = None,
    cache: str = "preallocated",
) -> LookupOutput:
    """Generate up to max_new_tokens from `target` with prompt lookup drafts; the output is
    distributed exactly as sampling from `target` (temperature/top-k/top-p applied), and at
    temperature 0 it equals `target.generate(do_sample=False)` token for token.

    input_ids: (1, T) prompt. gamma: at most this many tokens copied per round (HF's
    prompt_lookup_num_tokens). max_ngram: the longest n-gram matched (HF's max_matching_ngram_size).
    generator: a torch.Generator on the target's device, for reproducible sampling. cache:
    "preallocated" or "dynamic", as in speculative_generate.
    """
    max_new_tokens = check_generate_args(max_new_tokens)
    check_lookup_args(gamma, max_ngram)
    gamma, max_ngram = int(gamma), int(max_ngram)
    check_sampling_args(temperature, top_k, top_p, generator)
    check_model(target, "target")
    input_ids = check_input_ids(input_ids, target)
    eos = eos_set(eos_token_id)
    device = target.device
    capacity = check_length(target, input_ids.shape[1], max_new_tokens) + min(gamma, max_new_tokens) + 1
    t_cache = _new_cache(cache, capacity)
    warp = dict(temperature=temperature, top_k=top_k, top_p=top_p, check=False)
    t_timer = _Timer(device)
    seq = input_ids.to(device)[0].tolist()
    rounds, ngram, search_s = [], [], 0.0
    t_start = time.perf_counter()

    # Invariant between rounds: the cache holds a prefix of seq[:-1] (as in speculative_generate).
    n_new = 0
    while n_new < max_new_tokens:
        room = min(gamma, max_new_tokens - n_new - 1)  # a round emits <= k + 1 tokens: never overshoot
        t0 = time.perf_counter()
        drafted, n = find_draft(seq, room, max_ngram) if room > 0 else ([], None)
        for j, tok in enumerate(drafted):  # the target would stop at EOS: drop what follows
            if tok in eos:
                drafted = drafted[: j + 1]
                break
        search_s += time.perf_counter() - t0
        k = len(drafted)
        # Target: ONE pass over [unseen tokens, x_1..x_k] gives p at the last k + 1 positions.
        x = torch.tensor([seq[t_cache.get_seq_length() :] + drafted], device=device)  # (1, n_unseen + k)
        with t_timer:
            logits = target(input_ids=x, past_key_values=t_cache, use_cache=True).logits[0]  # (n_unseen + k, V)
        p = probs_from_logits(logits[-(k + 1) :], **warp)  # (k + 1, V)
        v = verify_copied(p, drafted, temperature, generator)
        emitted = drafted[: v.n_accepted] + [v.token]
        for j, tok in enumerate(emitted):  # stop at EOS, exactly where target sampling would
            if tok in eos:
                emitted = emitted[: j + 1]
                break
        idx = torch.arange(k, device=p.device)
        p_x = p[idx, torch.tensor(drafted, device=p.device, dtype=torch.long)].tolist() if k else []  # p(x_i), for the renderer
        rounds.append(Round(drafted, v.n_accepted, v.token, v.kind, p_x, [1.0] * k, emitted, gamma, u=v.uniforms))
        ngram.append(n)
        seq.extend(emitted)
        n_new += len(emitted)
        _crop(t_cache, len(seq) - 1)  # roll back to the accepted prefix (the last token is not cached yet)
        if emitted[-1] in eos:
            break

    return LookupOutput(
        sequences=torch.tensor([seq], device=device),
        rounds=rounds,
        draft_time=search_s,
        target_time=t_timer.total,
        total_time=time.perf_counter() - t_start,
        target_first_time=t_timer.first or 0.0,
        ngram=ngram,
    )


# ----------------------------------------------------------------------------------------------
# A graded exercise (notebook 10): write the n-gram finder
# ----------------------------------------------------------------------------------------------

# ----------------------------------------------------------------------------------------------
# Measurement (the command line): where prompt lookup shines and where it does not
# ----------------------------------------------------------------------------------------------

METHODS = ["hf", "ours_plain", "ours_lookup", "hf_lookup", "ours_speculative"]
LABELS = {"hf": "HF greedy/sampling", "ours_plain": "our plain loop", "ours_lookup": "ours, prompt lookup",
          "hf_lookup": "HF prompt_lookup_num_tokens", "ours_speculative": "ours, draft model"}


@torch.inference_mode()
def copy_prompt(pair, base: str, passage_tokens: int = 96) -> str:
    """A prompt whose continuation repeats text already in the context: the passage the target
    writes (greedy, passage_tokens new tokens) after `base`, then `base` again, as when a model is
    asked to write a given passage once more. The passage is the target's own, because a small
    model that seems not to have learnt to copy (the tiny target: notebook 10, section 4) does not
    repeat an arbitrary text; it does reuse the phrases of a text in its own style."""
    tok = pair.tokenizer
    ids = tok(base, return_tensors="pt").input_ids.to(pair.device)  # (1, T)
    eos = pair.target.generation_config.eos_token_id
    out = pair.target.generate(ids, max_new_tokens=passage_tokens, do_sample=False, eos_token_id=eos,
                               pad_token_id=pair.target.generation_config.pad_token_id or 0)
    passage = tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True)
    return f"{base}{passage}\n\n{base}"


def run_one(method: str, pair, ids, *, max_new_tokens: int, gamma: int, max_ngram: int, temperature: float,
            seed: int = 0) -> dict:
    """One timed run of `method` (see METHODS) on the prompt ids (1, T). Wall time around the whole
    call; a forward hook counts the target's passes (the same small cost for every method)."""
    from .bench import ForwardClock, _sync, hf_generate
    from .decoding import autoregressive_generate
    from .speculative import speculative_generate

    eos = pair.target.generation_config.eos_token_id
    gen = torch.Generator(device=pair.device).manual_seed(seed)
    row, res = {}, None
    with seeded(seed, pair.device), ForwardClock(pair.target) as clock:  # HF samples from the global generator
        _sync(pair.device)
        t0 = time.perf_counter()
        if method == "hf":
            out, _ = hf_generate(pair.target, ids, max_new_tokens, temperature=temperature, eos_token_id=eos)
        elif method == "hf_lookup":
            out, _ = hf_generate(pair.target, ids, max_new_tokens, prompt_lookup=gamma, temperature=temperature,
                                 eos_token_id=eos, max_matching_ngram_size=max_ngram)
        elif method == "ours_plain":
            out = autoregressive_generate(pair.target, ids, max_new_tokens, temperature=temperature, eos_token_id=eos,
                                          generator=gen).sequences
        elif method == "ours_lookup":
            res = prompt_lookup_generate(pair.target, ids, max_new_tokens=max_new_tokens, gamma=gamma, max_ngram=max_ngram,
                                         temperature=temperature, eos_token_id=eos, generator=gen)
        elif method == "ours_speculative":
            res = speculative_generate(pair.target, pair.draft, ids, max_new_tokens=max_new_tokens, gamma=gamma,
                                       temperature=temperature, eos_token_id=eos, generator=gen, time_models=False)
        else:
            raise ValueError(f"unknown method {method!r}; choose from {METHODS}")
        _sync(pair.device)
        secs = time.perf_counter() - t0
    out = res.sequences if res is not None else out
    new = out[0, ids.shape[1]:].tolist()
    row.update(new_tokens=len(new), seconds=secs, target_passes=clock.calls, new_ids=new)
    if res is not None:
        row.update(rounds=len(res.rounds), drafted=res.n_drafted, accepted=res.n_accepted, rejected=res.n_rejected)
    if isinstance(res, LookupOutput):
        looked = [n for n in res.ngram if n is not None]
        row.update(looked=len(looked), matched=sum(n > 0 for n in looked), search_s=res.draft_time)
    return row


def compare_lookup(pair, prompts: dict[str, list[str]], *, gamma=4, max_ngram=2, temperatures=(0.0, 1.0), max_new_tokens=64,
                   methods=METHODS, repeats=3, warmup=1, progress=True) -> dict:
    """Tokens/s, acceptance and matches of each method on each prompt of each kind (`prompts`: kind ->
    list of prompt texts) at each temperature. Per prompt the methods take turns (utils.bench.take_turns),
    `warmup` rounds are dropped and each keeps the median of `repeats` runs (all seeded alike).
    Returns dict(meta, rows (prompt x temperature x method), summary (kind x temperature x method))."""
    from tqdm.auto import tqdm

    from .bench import median_run, metadata, take_turns

    rows, t_start = [], time.perf_counter()
    jobs = [(kind, p, t) for kind, ps in prompts.items() for p in ps for t in temperatures]
    for kind, text, t in tqdm(jobs, disable=not progress, desc="lookup"):
        ids = pair.tokenizer(text, return_tensors="pt").input_ids.to(pair.device)
        runs, _ = take_turns(lambda m: run_one(m, pair, ids, max_new_tokens=max_new_tokens, gamma=gamma, max_ngram=max_ngram,
                                               temperature=t), methods, repeats, warmup)
        ref = runs["hf"][0]["new_ids"] if "hf" in runs else None
        for m, rs in runs.items():
            med = dict(median_run(rs))
            new_ids = med.pop("new_ids")
            rows.append(dict(kind=kind, prompt=text, prompt_tokens=ids.shape[1], temperature=t, method=m, **med,
                             seconds_all=[r["seconds"] for r in rs], tokens_per_s=med["new_tokens"] / med["seconds"],
                             **({"same_as_hf": new_ids == ref} if t == 0 and ref is not None else {})))
    meta = metadata(pair, {}, max_new_tokens, repeats)
    meta.update(gamma=gamma, max_ngram=max_ngram, temperatures=list(temperatures), warmup=warmup, methods=list(methods),
                n_prompts={k: len(v) for k, v in prompts.items()}, prompts=prompts, wall_s=time.perf_counter() - t_start,
                timing="per prompt the methods take turns after a warm-up; each keeps the median of its repeats (wall time "
                       "of the whole call); tokens/s = all new tokens / all median seconds. Shared CPU: noisy, see "
                       "noise_median_spread and speedup_vs_plain_by_repeat.")
    return dict(meta=meta, rows=rows, summary=summarize_lookup(rows))


def _tps(rows, i=None) -> float:
    """Tokens/s over rows (one per prompt): median runs, or the i-th timed repeat of each."""
    secs = sum(r["seconds"] if i is None else r["seconds_all"][i] for r in rows)
    return sum(r["new_tokens"] for r in rows) / secs


def summarize_lookup(rows) -> list[dict]:
    """One row per prompt kind x temperature x method: tokens/s over all prompts, speedups over our
    plain loop (also per repeat: the noise) and over HF, alpha per drafted and per checked token, new
    tokens per target pass, the fraction of rounds whose lookup found a match, the share of new tokens
    that were copied (accepted drafts), and at T = 0 whether every output equalled HF's."""
    from .bench import repeat_spread

    out = []
    for kind in dict.fromkeys(r["kind"] for r in rows):
        for t in sorted({r["temperature"] for r in rows if r["kind"] == kind}):
            sel = [r for r in rows if r["kind"] == kind and r["temperature"] == t]
            by = {m: [r for r in sel if r["method"] == m] for m in dict.fromkeys(r["method"] for r in sel)}
            n_rep = len(sel[0]["seconds_all"])
            for m, rs in by.items():
                new = sum(r["new_tokens"] for r in rs)
                s = dict(kind=kind, temperature=t, method=m, tokens_per_s=_tps(rs), new_tokens=new,
                         tokens_per_target_pass=new / sum(r["target_passes"] for r in rs),
                         noise_median_spread=statistics.median(repeat_spread(r) for r in rs))
                if "ours_plain" in by:
                    s["speedup_vs_plain"] = s["tokens_per_s"] / _tps(by["ours_plain"])
                    s["speedup_vs_plain_by_repeat"] = [_tps(rs, i) / _tps(by["ours_plain"], i) for i in range(n_rep)]
                if "hf" in by:
                    s["speedup_vs_hf"] = s["tokens_per_s"] / _tps(by["hf"])
                if "drafted" in rs[0]:
                    acc, dr, rej, rounds = (sum(r[k] for r in rs) for k in ("accepted", "drafted", "rejected", "rounds"))
                    s.update(alpha=acc / dr if dr else math.nan, alpha_checked=acc / (acc + rej) if acc + rej else math.nan,
                             tokens_per_round=new / rounds, drafted_per_round=dr / rounds, copied_fraction=acc / new)
                if "looked" in rs[0]:
                    looked = sum(r["looked"] for r in rs)
                    s.update(match_rate=sum(r["matched"] for r in rs) / looked if looked else math.nan,
                             search_share=sum(r["search_s"] for r in rs) / sum(r["seconds"] for r in rs))
                if t == 0 and "same_as_hf" in rs[0]:
                    s["all_equal_hf"] = all(r["same_as_hf"] for r in rs)
                out.append(s)
    return out


def lookup_table(summary: list[dict]) -> str:
    """A `compare_lookup` summary as the text table of notebook 10 section 5: per prompt kind,
    temperature and method, tokens/s, the ratio to our plain loop, new tokens per target pass, alpha
    (per drafted / per checked token), the share of rounds with a match, the share of tokens copied,
    and the spread between repeats."""
    lines = [f"{'kind':5} {'T':>3} {'method':28} {'tok/s':>6} {'vs plain':>8} {'tokens/pass':>11} {'alpha drafted/checked':>21} "
             f"{'match':>6} {'copied':>6} {'spread':>6}"]
    for s in summary:
        al = f"{s['alpha']:10.2f} / {s['alpha_checked']:.2f}" if "alpha" in s else ""
        lines.append(f"{s['kind']:5} {s['temperature']:>3g} {LABELS[s['method']]:28} {s['tokens_per_s']:6.1f} "
                     f"{s['speedup_vs_plain']:7.2f}x {s['tokens_per_target_pass']:11.2f} {al:>21} "
                     + (f"{s['match_rate']:6.0%} " if "match_rate" in s else " " * 7)
                     + (f"{s['copied_fraction']:6.0%} " if "copied_fraction" in s else " " * 7)
                     + f"{s['noise_median_spread']:6.0%}")
    return "\n".join(lines)


def versus(a: dict, b: dict) -> dict:
    """How fast the method of summary row `a` ran relative to that of row `b` (same prompt kind and
    temperature), repeat by repeat, and a noise verdict.

    ratio_i = (a's tokens/s over all prompts in timed repeat i) / (b's in repeat i), from the rows'
    speedup_vs_plain_by_repeat (our plain loop cancels out). Returns median, lo, hi: the median, the
    smallest and the largest ratio_i (the headline and the range, computed the same way, so the headline
    lies in the range); noise: the larger of the two rows' noise_median_spread; word: "faster than" when
    every ratio_i is above 1 + noise, "slower than" when every one is below 1 - noise, else "within noise of".
    """
    ra, rb = a["speedup_vs_plain_by_repeat"], b["speedup_vs_plain_by_repeat"]
    if len(ra) != len(rb) or not ra:
        raise ValueError(f"the two rows need the same number (>= 1) of repeats, got {len(ra)} and {len(rb)}")
    from .bench import noise_verdict

    ratios = [x / y for x, y in zip(ra, rb)]
    lo, hi = min(ratios), max(ratios)
    noise = max(a["noise_median_spread"], b["noise_median_spread"])
    word = {"faster": "faster than", "slower": "slower than", "within noise": "within noise of"}[noise_verdict(ratios, noise)]
    return dict(median=statistics.median(ratios), lo=lo, hi=hi, noise=noise, word=word, ratios=ratios)


COLORS = {"hf": "#8c8c8c", "ours_plain": "#c7c7c7", "ours_lookup": "#dd8452", "hf_lookup": "#f2c29b",
          "ours_speculative": "#4c72b0"}


def plot_lookup(summary: list[dict], title: str, key: str = "speedup_vs_plain", ax=None):
    """Grouped bars, each labelled with its value: one group per prompt kind x temperature, one bar per
    method in the order of METHODS, same colours in every panel (our plain loop is left out of the
    speedup over it, 1 by definition; a dotted line marks 1)."""
    import matplotlib.pyplot as plt
    import numpy as np

    ax = ax if ax is not None else plt.subplots(figsize=(7, 3.5), layout="constrained")[1]
    groups = list(dict.fromkeys(f"{s['kind']}, T = {s['temperature']:g}" for s in summary))
    methods = [m for m in METHODS if any(s["method"] == m for s in summary)
               and not (key == "speedup_vs_plain" and m == "ours_plain")]
    val = {(f"{s['kind']}, T = {s['temperature']:g}", s["method"]): s.get(key, math.nan) for s in summary}
    width = 0.8 / max(1, len(methods))
    for i, m in enumerate(methods):
        pos = np.arange(len(groups)) + (i - (len(methods) - 1) / 2) * width
        vals = [val.get((g, m), math.nan) for g in groups]
        ax.bar(pos, vals, width, label=LABELS[m], color=COLORS[m], edgecolor="k", linewidth=0.3)
        for x, v in zip(pos, vals):
            if v == v:
                ax.text(x, v, f"{v:.2f}", ha="center", va="bottom", fontsize=6.5)
    ax.axhline(1.0, color="k", lw=0.8, ls=":")
    ax.set_xticks(range(len(groups)), groups)
    ax.set(ylabel=key.replace("_", " "), title=title)
    ax.legend(fontsize=7)
    return ax


def build_prompts(pair, base_set: str = "workshop", n_prompts: int = 4, passage_tokens: int = 96) -> dict[str, list[str]]:
    """The two kinds of prompt: "copy" (`copy_prompt`: the target's own passage, then the prompt
    again) and "free" (the same prompts alone, free writing), from the first n_prompts of a set of
    data/prompts.json."""
    from .models import load_prompts

    base = load_prompts(base_set)[:n_prompts]
    return {"copy": [copy_prompt(pair, b, passage_tokens) for b in base], "free": list(base)}


def _check_args(ap, args) -> Path:
    """Every flag checked before any model is loaded. Returns the output json path."""
    from .results import check_bench_flags

    bad = [m for m in args.methods if m not in METHODS]
    if bad or "ours_lookup" not in args.methods:
        ap.error(f"--methods must be among {', '.join(METHODS)} and include ours_lookup (got {args.methods})")
    counts = {"--n-prompts": args.n_prompts, "--max-new-tokens": args.max_new_tokens, "--repeats": args.repeats,
              "--gamma": args.gamma, "--max-ngram": args.max_ngram, "--passage-tokens": args.passage_tokens,
              "--threads": args.threads}
    return check_bench_flags(ap, args, "lookup", counts)[0]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m utils.lookup", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pair", default=None, help="a key of utils.models.PAIRS (default $SPECDEC_PAIR or tiny)")
    ap.add_argument("--prompts", default="workshop",
                    help="the prompt set of data/prompts.json both kinds start from (default workshop)")
    ap.add_argument("--n-prompts", type=int, default=4, help="the first N prompts of the set, for each kind (default 4)")
    ap.add_argument("--passage-tokens", type=int, default=96, help="length of the passage a copy prompt repeats (default 96)")
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--gamma", type=int, default=4,
                    help="tokens drafted per round: copied (prompt_lookup_num_tokens) or by the draft model")
    ap.add_argument("--max-ngram", type=int, default=2, help="longest n-gram matched (HF's max_matching_ngram_size, default 2)")
    ap.add_argument("--temperatures", type=float, nargs="+", default=[0.0, 1.0])
    ap.add_argument("--methods", nargs="+", default=METHODS, help=f"among {' '.join(METHODS)} (default all)")
    ap.add_argument("--repeats", type=int, default=3, help="timed runs per method and prompt, after the warm-up")
    ap.add_argument("--warmup", type=int, default=1, help="untimed runs per method and prompt first (default 1)")
    ap.add_argument("--device", default=None)
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    ap.add_argument("--out", type=Path, default=LOCAL_RUNS,
                    help="folder for the .json (default runs/, ignored by git; the committed result is in data/results)")
    ap.add_argument("--overwrite", action="store_true", help="replace an existing result file")
    args = ap.parse_args(argv)
    path = _check_args(ap, args)
    if args.threads:
        torch.set_num_threads(args.threads)
    from .models import load_pair
    from .results import command_errors, write_json

    with command_errors(ap):
        pair = load_pair(args.pair, device=args.device)
        prompts = build_prompts(pair, args.prompts, args.n_prompts, args.passage_tokens)
        result = compare_lookup(pair, prompts, gamma=args.gamma, max_ngram=args.max_ngram, temperatures=args.temperatures,
                                max_new_tokens=args.max_new_tokens, methods=args.methods, repeats=args.repeats,
                                warmup=args.warmup)
    result["meta"].update(prompt_set=args.prompts, passage_tokens=args.passage_tokens,
                          command="python -m utils.lookup " + " ".join(sys.argv[1:] if argv is None else argv))
    write_json(path, result)
    for s in result["summary"]:
        short = {k: (round(v, 3) if isinstance(v, float) else v) for k, v in s.items() if not k.endswith("by_repeat")}
        print(json.dumps(short))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
