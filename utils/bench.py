"""Timing: our loops against Hugging Face generate, with and without an assistant.

    python -m utils.bench                          # tiny pair, workshop prompts, greedy, gamma 4 -> runs/
    python -m utils.bench --pair gemma2-2b-9b --prompts datacamp --max-new-tokens 200 --gammas 3 5

Every number is a median over repeats after a warm-up, written with the hardware, versions, pair,
dtype, gamma, temperature, alpha and c to data/results/bench-<pair>-<device>.json and .csv.
Memory: the weights of both models; on a GPU each run's peak allocated memory; on a CPU the
process's peak resident memory (one number for the whole benchmark: a CPU has no per-run counter).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import gc
import json
import logging
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

from .decoding import autoregressive_generate
from .models import ROOT, describe_device, load_pair, weight_bytes
from .models import sync as _sync
from .results import check_bench_flags, command_errors, write_json
from .sampling import check_count, seeded
from .speculative import speculative_generate
from .theory import expected_speedup

RESULTS = ROOT / "data" / "results"


def process_peak_rss_bytes() -> int | None:
    """Peak resident memory of this process so far (None where the OS does not say: Windows)."""
    try:
        import resource
    except ImportError:
        return None
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss if sys.platform == "darwin" else rss * 1024  # macOS reports bytes, Linux KiB


SCHEDULES = ("constant", "heuristic", "heuristic_transient")  # HF's num_assistant_tokens_schedule values


def configure_assistant(draft, num_assistant_tokens: int = 4, schedule: str = "constant", confidence_threshold: float = 0.0):
    """Set HF assisted generation's knobs where transformers 5.x reads them: on the ASSISTANT's
    generation_config (passing them to generate() is silently ignored). A constant schedule and
    threshold 0 make HF draft exactly num_assistant_tokens per round, like our gamma. Checks its
    arguments first: transformers tests only whether the schedule is one of the heuristic ones, so a
    misspelt schedule would run as a constant one without a word."""
    num_assistant_tokens = check_count("num_assistant_tokens", num_assistant_tokens, 1, "the draft length per round, "
                                       "like gamma")
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {list(SCHEDULES)} (got {schedule!r})")
    if isinstance(confidence_threshold, bool) or not isinstance(confidence_threshold, (int, float)) \
            or not 0 <= confidence_threshold <= 1:
        raise ValueError(f"confidence_threshold must be a number in [0, 1] (0 turns it off: the draft always writes "
                         f"num_assistant_tokens); got {confidence_threshold!r}")
    gc = draft.generation_config
    gc.num_assistant_tokens = num_assistant_tokens
    gc.num_assistant_tokens_schedule = schedule
    gc.assistant_confidence_threshold = confidence_threshold
    return draft


class _DropHFInternalNotice(logging.Filter):
    """transformers 5.23's assisted generation calls the assistant's own generate() with a
    generation_config *and* max_new_tokens/min_new_tokens (generation/candidate_generator.py), and then
    warns about its own call: "Passing `generation_config` together with generation-related arguments
    ... is deprecated". Nothing in our arguments causes it and a reader cannot act on it, so exactly
    that message is dropped; every other transformers warning still shows."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Passing `generation_config` together with generation-related")


logging.getLogger("transformers.generation.utils").addFilter(_DropHFInternalNotice())


def hf_generate(target, ids, max_new_tokens, *, assistant=None, prompt_lookup=None, temperature=0.0, eos_token_id=None, **kw):
    """model.generate with our conventions (no top-k unless given). Returns (sequences, seconds).
    eos_token_id=None stops where the model's generation_config says, as `generate` does by default
    (passing None to `generate` itself would turn stopping off)."""
    if eos_token_id is not None:
        kw["eos_token_id"] = eos_token_id
    sampling = dict(do_sample=True, temperature=temperature, top_k=kw.pop("top_k", None) or 0) if temperature > 0 else dict(do_sample=False)
    _sync(target.device)
    t0 = time.perf_counter()
    with torch.inference_mode():
        out = target.generate(
            ids, max_new_tokens=max_new_tokens, assistant_model=assistant, prompt_lookup_num_tokens=prompt_lookup,
            pad_token_id=target.generation_config.pad_token_id or 0, **sampling, **kw,
        )
    _sync(target.device)
    return out, time.perf_counter() - t0


class ForwardClock:
    """Time spent inside the draft's and the target's forward passes, whoever calls them (forward
    hooks). What is left of a run's time is the caller's own overhead: `total / forward_s` is the
    most any loop that calls the same forward passes could gain. On a CPU the wall clock; on CUDA
    timing events around each pass (the speculative loop's `_Timer`), read when `forward_s` is asked
    for: the GPU's time from a pass's start to its end, whether the GPU computed or waited for
    launches, with no host sync added to the run."""

    def __init__(self, *models):
        from .speculative import _Timer

        self.models = models
        self.timer = _Timer(next(models[0].parameters()).device) if models else None

    @property
    def forward_s(self) -> float:
        return self.timer.total if self.timer else 0.0

    @property
    def calls(self) -> int:
        return len(self.timer.spans) if self.timer else 0

    def _pre(self, module, args, kwargs):
        self.timer.__enter__()

    def _post(self, module, args, kwargs, out):
        self.timer.__exit__()

    def __enter__(self):
        self.handles = [h for m in self.models for h in (m.register_forward_pre_hook(self._pre, with_kwargs=True),
                                                         m.register_forward_hook(self._post, with_kwargs=True))]
        return self

    def __exit__(self, *exc):
        for h in self.handles:
            h.remove()


def run_method(method: str, pair, ids, max_new_tokens: int, gamma: int, temperature: float = 0.0, seed: int = 0):
    """One timed run. Returns dict(method, new_tokens, seconds, forward_s, forward_calls, alpha, tau, ...);
    the time in forward passes is also kept per model (draft_forward_s, target_forward_calls, ...).
    Compiled methods are not hooked (a hook added to a compiled model would make dynamo recompile):
    their time in forward passes comes from the engine's own clocks (CUDA: timing events), and
    prefill_s is the time of their eager pass over the prompt before the first step (both models for
    the speculative loop), outside those passes; compile_fallbacks (only where it happened) lists the
    steps of the models' engines that could not be compiled as one graph (utils.fast.compile_fallback),
    whichever run first met them. HF static on CUDA is not hooked either: generate compiles the model's
    call there, hooks included, so its forward_s is NaN."""
    cuda = torch.device(pair.device).type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats(pair.device)
    if method in COMPILED:
        row = _run_method(method, pair, ids, max_new_tokens, gamma, temperature, seed)
        from .fast import engine_fallbacks

        fell = engine_fallbacks(*((pair.target,) if method == "ours_ar_compiled" else (pair.target, pair.draft)))
        if fell:  # a step compiled in pieces or run eagerly (utils.fast.compile_fallback): slower than it should be
            row["compile_fallbacks"] = fell
        return dict(row, peak_bytes=torch.cuda.max_memory_allocated(pair.device) if cuda else None)
    if method == "hf_static" and cuda:  # HF compiles the call, hooks and all: no clock inside a graph
        row = _run_method(method, pair, ids, max_new_tokens, gamma, temperature, seed)
        nan = float("nan")
        return dict(row, peak_bytes=torch.cuda.max_memory_allocated(pair.device), forward_s=nan, forward_calls=0,
                    target_forward_s=nan, target_forward_calls=0, draft_forward_s=nan, draft_forward_calls=0)
    with ForwardClock(pair.target) as target, ForwardClock(pair.draft) as draft:
        row = _run_method(method, pair, ids, max_new_tokens, gamma, temperature, seed)
    return dict(row, peak_bytes=torch.cuda.max_memory_allocated(pair.device) if cuda else None,
                forward_s=target.forward_s + draft.forward_s, forward_calls=target.calls + draft.calls,
                target_forward_s=target.forward_s, target_forward_calls=target.calls,
                draft_forward_s=draft.forward_s, draft_forward_calls=draft.calls)


def _run_method(method, pair, ids, max_new_tokens, gamma, temperature, seed):
    with seeded(seed, pair.device):  # HF samples from the global generator; the caller's state is restored
        return _run_seeded(method, pair, ids, max_new_tokens, gamma, temperature, seed)


def _run_seeded(method, pair, ids, max_new_tokens, gamma, temperature, seed):
    gen = torch.Generator(device=pair.device).manual_seed(seed)
    row = dict(method=method, alpha=float("nan"), tau=float("nan"))
    eos = pair.target.generation_config.eos_token_id  # HF generate stops there: so do our loops
    if method == "hf":
        out, secs = hf_generate(pair.target, ids, max_new_tokens, temperature=temperature)
    elif method == "hf_static":  # HF's strongest plain decoder: a static cache (generate compiles it on CUDA)
        out, secs = hf_generate(pair.target, ids, max_new_tokens, temperature=temperature, cache_implementation="static")
    elif method == "hf_assisted":
        configure_assistant(pair.draft, gamma)
        out, secs = hf_generate(pair.target, ids, max_new_tokens, assistant=pair.draft, temperature=temperature)
    elif method == "hf_prompt_lookup":
        out, secs = hf_generate(pair.target, ids, max_new_tokens, prompt_lookup=gamma, temperature=temperature)
    elif method == "ours_ar":
        res = autoregressive_generate(pair.target, ids, max_new_tokens, temperature=temperature, eos_token_id=eos, generator=gen)
        out, secs = res.sequences, sum(res.step_times)
    elif method == "ours_ar_compiled":
        _sync(pair.device)
        t0 = time.perf_counter()
        res = autoregressive_generate(pair.target, ids, max_new_tokens, temperature=temperature, eos_token_id=eos,
                                      generator=gen, backend="compiled")
        _sync(pair.device)
        out, secs = res.sequences, time.perf_counter() - t0
        n_steps = out.shape[1] - ids.shape[1]  # one compiled step per token (some wasted after an EOS)
        row.update(compile_s=res.compile_time, forward_s=res.forward_time, forward_calls=n_steps, prefill_s=res.prefill_time,
                   target_forward_s=res.forward_time, target_forward_calls=n_steps, draft_forward_s=0.0,
                   draft_forward_calls=0)
    elif method == "ours_speculative_compiled":
        _sync(pair.device)
        t0 = time.perf_counter()
        res = speculative_generate(pair.target, pair.draft, ids, max_new_tokens=max_new_tokens, gamma=gamma,
                                   temperature=temperature, eos_token_id=eos, generator=gen, backend="compiled")
        _sync(pair.device)
        out, secs = res.sequences, time.perf_counter() - t0
        n_draft = sum(len(r.drafted) + (r.kind == "bonus") for r in res.rounds)  # + the step that writes x_k
        row.update(alpha=res.acceptance_rate, alpha_checked=res.checked_acceptance_rate, tau=res.tokens_per_round,
                   draft_s=res.draft_time, target_s=res.target_time, compile_s=res.compile_time,
                   host_syncs=res.host_syncs, prefill_s=res.prefill_time, forward_s=res.draft_time + res.target_time,
                   forward_calls=n_draft + len(res.rounds),
                   draft_forward_s=res.draft_time, draft_forward_calls=n_draft,
                   target_forward_s=res.target_time, target_forward_calls=len(res.rounds))
    elif method == "ours_speculative":
        _sync(pair.device)
        t0 = time.perf_counter()
        res = speculative_generate(pair.target, pair.draft, ids, max_new_tokens=max_new_tokens, gamma=gamma,
                                   temperature=temperature, eos_token_id=eos, generator=gen)  # CUDA: timing events, no syncs
        _sync(pair.device)
        out, secs = res.sequences, time.perf_counter() - t0
        row.update(alpha=res.acceptance_rate, alpha_checked=res.checked_acceptance_rate, tau=res.tokens_per_round,
                   draft_s=res.draft_time, target_s=res.target_time)
    else:
        raise ValueError(f"unknown method {method!r}")
    row.update(new_tokens=out.shape[1] - ids.shape[1], seconds=secs, new_ids=out[0, ids.shape[1]:].tolist())
    return row


@contextlib.contextmanager
def paused_gc():
    """Python's cyclic garbage collector off while a timed run runs, as `timeit` does. A full collection
    walks every object the process holds (after torch.compile, hundreds of thousands: a few tenths of a
    second on a small CPU), and it starts whenever enough new objects have piled up, so it lands inside
    one run of a series and not the others. Garbage made during the run is collected after it."""
    was_on = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_on:
            gc.enable()


def take_turns(run, names, repeats: int = 3, warmup: int = 1) -> tuple[dict, dict]:
    """Call run(name) for each name in turn (A B C, A B C, ...), so that a machine that slows down or
    speeds up during the measurement affects them all alike; the timed runs with the garbage collector
    paused (`paused_gc`). Returns (the timed runs per name, the
    first warm-up run per name)."""
    runs, first = {n: [] for n in names}, {}
    for i in range(warmup + repeats):
        for n in names:
            # timed runs without a collection inside (it would land in one run, not the others); warm-up
            # runs, which may compile (much garbage), with the collector on
            with paused_gc() if i >= warmup else contextlib.nullcontext():
                r = run(n)
            if i >= warmup:
                runs[n].append(r)
            else:
                first.setdefault(n, r)
    return runs, first


def median_run(rs: list[dict]) -> dict:
    """The run with the median "seconds"."""
    return sorted(rs, key=lambda r: r["seconds"])[len(rs) // 2]


def repeat_spread(row: dict) -> float:
    """How much one configuration's timed repeats disagree: (slowest - fastest) / median, from a result
    row holding every repeat's seconds ("seconds_all") and its median run's ("seconds", median_run)."""
    return (max(row["seconds_all"]) - min(row["seconds_all"])) / row["seconds"]


def how_much_faster(slow_s: float, fast_s: float) -> str:
    """'2.3x faster' when fast_s took less time than slow_s, '1.4x slower' when it took more: a ratio
    printed in words that stay true on a machine where the order flips (a GPU, another pair)."""
    return f"{slow_s / fast_s:.1f}x faster" if fast_s <= slow_s else f"{fast_s / slow_s:.1f}x slower"


def moved(before: float, after: float, digits: int, rel_tol: float = 0.0) -> str:
    """'raised', 'lowered' or 'kept': how a quantity changed, judged at the digits it is printed with
    (0.2241 -> 0.2243, printed 0.224 -> 0.224, is 'kept', not 'raised'). With rel_tol, a change
    smaller than that share of `before` is 'barely changed' (timings of one run are noisy by a few
    percent: 0.206 -> 0.212 is no rise worth a word)."""
    a, b = round(before, digits), round(after, digits)
    if a != b and rel_tol and abs(after - before) < rel_tol * abs(before):
        return "barely changed"
    return "raised" if b > a else "lowered" if b < a else "kept"


def noise_verdict(ratios, noise: float) -> str:
    """The one rule every notebook and the README use to call a method faster: "faster" when every
    repeat's ratio of tokens/s (the methods took turns) is above 1 + noise, "slower" when every one is
    below 1 - noise, else "within noise". noise: the spread between repeats of one configuration
    (`repeat_spread`, the larger of the two methods'), so a gain counts only when it clears the
    difference that timing one configuration twice can show."""
    lo, hi = min(ratios), max(ratios)
    return "faster" if lo > 1 + noise else "slower" if hi < 1 - noise else "within noise"


# Issue #12's floors for the compiled backend on a 2-core CPU, tiny pair, held-out prompts, gamma 4:
# temperature -> ((baseline method, the least ratio of tokens/s compiled speculative must reach), ...)
CPU_GOALS = {0.0: (("hf_assisted", 2.0), ("hf", 3.0)), 1.0: (("hf_assisted", 1.5),)}
GOAL_NAMES = {"hf_assisted": "HF assisted", "hf": "HF greedy"}


def cpu_goal_checks(result: dict, goals=CPU_GOALS) -> list[dict]:
    """Each CPU goal against a benchmark result's compiled summary: dict(gamma, temperature, baseline,
    goal, ratio, met) per summary row with a compiled part and a temperature the goals name."""
    out = []
    for s in result["summary"]:
        cs = s.get("compiled")
        if not cs or s["temperature"] not in goals:
            continue
        for base, want in goals[s["temperature"]]:
            got = cs[f"ours_speculative_compiled_vs_{base}"]
            out.append(dict(gamma=s["gamma"], temperature=s["temperature"], baseline=base, goal=want, ratio=got,
                            met=got >= want))
    return out


def interleaved(methods, pair, ids, max_new_tokens, gamma, temperature=0.0, repeats=3, warmup=1) -> dict:
    """Median run of each method, the methods taking turns (take_turns). Compilation (compiled
    methods, HF static on CUDA) happens in the warm-up run: its time is kept apart."""
    runs, first = take_turns(lambda m: run_method(m, pair, ids, max_new_tokens, gamma, temperature), methods, repeats, warmup)
    warm = {m: dict(warmup_s=r["seconds"], warmup_compile_s=r.get("compile_s", 0.0)) for m, r in first.items()}
    return {m: dict(median_run(rs), **warm.get(m, {})) for m, rs in runs.items()}


def step_cost_ratio(pair, ids, steps: int = 32, repeats: int = 5) -> dict:
    """c = one-token cached decode step of the draft / of the target, as our loop runs them (forward
    pass + sampling): medians over `repeats` runs of `steps` tokens after a warm-up, the two models
    taking turns so that a drifting machine affects them alike."""
    check_count("steps", steps, 1, "decode steps timed per run")
    check_count("repeats", repeats, 1, "runs per model")

    def run(model):
        return statistics.median(autoregressive_generate(model, ids, steps).step_times)

    run(pair.draft), run(pair.target)  # warm-up
    td, tt = [], []
    for _ in range(repeats):
        td.append(run(pair.draft))
        tt.append(run(pair.target))
    td, tt = statistics.median(td), statistics.median(tt)
    return dict(c=td / tt, draft_step_ms=1e3 * td, target_step_ms=1e3 * tt)


@torch.inference_mode()
def forward_latencies(model, sizes, context: int = 64, repeats: int = 15) -> dict[int, float]:
    """Median seconds of one cached forward pass over n new tokens after `context` tokens, for each
    n in sizes; the sizes take turns so that a drifting machine affects them alike."""
    from .speculative import _new_cache

    device = model.device
    cache = _new_cache(capacity=context + max(sizes))
    model(input_ids=torch.randint(3, 1000, (1, context), device=device), past_key_values=cache, use_cache=True,
          logits_to_keep=1)  # the context's logits are unused
    times = {n: [] for n in sizes}
    for i in range(repeats + 1):  # the first round is a warm-up
        for n in sizes:
            x = torch.randint(3, 1000, (1, n), device=device)
            _sync(device)
            t0 = time.perf_counter()
            model(input_ids=x, past_key_values=cache, use_cache=True)
            _sync(device)
            if i:
                times[n].append(time.perf_counter() - t0)
            cache.crop(-n)
    return {n: statistics.median(t) for n, t in times.items()}


def forward_latency(model, n_tokens: int, **kw) -> float:
    return forward_latencies(model, [n_tokens], **kw)[n_tokens]


def verify_cost_ratios(target, gammas) -> dict[str, float]:
    """v(gamma) = time of the target's pass over gamma + 1 tokens / its one-token pass. Thm 3.8
    assumes v = 1 (checking is free on a bandwidth-bound GPU); on a CPU it is more."""
    t = forward_latencies(target, [1] + [g + 1 for g in gammas], repeats=30)
    return {str(g): t[g + 1] / t[1] for g in gammas}


@torch.inference_mode()
def cold_draft_profile(pair, gamma: int = 4, bursts: int = 20) -> dict:
    """Milliseconds of each of `gamma + 1` successive compiled draft steps right after a compiled
    target verify pass, against the same steps back to back (medians over `bursts`): on a CPU the
    target's pass evicts the draft's weights from the caches, and the draft's first steps run cold."""
    from . import fast

    de, te = fast.engine_for(pair.draft, 64), fast.engine_for(pair.target, 64)
    x1 = torch.tensor([[5]], device=pair.device)
    xw = torch.arange(5, 5 + gamma + 1, device=pair.device).view(1, -1)
    de.prefill(torch.tensor([[3, 4]], device=pair.device))
    te.prefill(torch.tensor([[3, 4]], device=pair.device))
    de.forward(x1), te.forward(xw)  # compile (or reuse) both shapes

    def burst():
        out = []
        for _ in range(gamma + 1):
            fast.rollback(de.cache, 2)
            _sync(pair.device)
            t0 = time.perf_counter()
            de.forward(x1)
            _sync(pair.device)
            out.append(1e3 * (time.perf_counter() - t0))
        return out

    after, back = [], []
    for _ in range(bursts):
        fast.rollback(te.cache, 2)
        te.forward(xw)
        after.append(burst())
        back.append(burst())
    med = [statistics.median(col) for col in zip(*after)]
    return dict(after_target_ms=med, back_to_back_ms=[statistics.median(col) for col in zip(*back)])


def matmul_variants(pair, gamma: int = 4, repeats: int = 60) -> dict:
    """Milliseconds of one compiled step (medians, the variants taking turns) of each model at the
    widths the loop uses (1, and gamma + 1 for the target), compiled two ways on a CPU: every matrix
    product a BLAS call (aten::mm) and, utils.fast's default, products of at most
    fast.SMALL_MM_ROWS rows written as fused loops (fast.small_matmuls_as_loops). Empty on a GPU."""
    from . import fast

    if pair.device.type != "cpu":
        return {}
    out = {}
    for role, model, widths in (("draft", pair.draft, (1,)), ("target", pair.target, (1, gamma + 1))):
        # one length bucket with the loops' engines: the default variant reuses their compiled graphs
        engines = {rows: fast.Engine(model, fast.BUCKET, small_mm_rows=rows) for rows in (0, fast.SMALL_MM_ROWS)}
        for w in widths:
            x = torch.arange(5, 5 + w, device=pair.device).view(1, w)
            for e in engines.values():
                e.prefill(torch.tensor([[3, 4]], device=pair.device))
                e.forward(x)  # compiles this width
            times = {rows: [] for rows in engines}
            for _ in range(repeats):
                for rows, e in engines.items():
                    fast.rollback(e.cache, 2)
                    t0 = time.perf_counter()
                    e.forward(x)
                    times[rows].append(1e3 * (time.perf_counter() - t0))
            out[f"{role}_width_{w}"] = dict(blas_calls_ms=statistics.median(times[0]),
                                            loops_ms=statistics.median(times[fast.SMALL_MM_ROWS]))
    return out


METHODS = ["hf", "hf_static", "ours_ar", "ours_ar_compiled", "hf_assisted", "ours_speculative",
           "ours_speculative_compiled"]
COMPILED = ("ours_ar_compiled", "ours_speculative_compiled")


def benchmark(pair, prompts, *, max_new_tokens=64, gammas=(4,), temperatures=(0.0,), methods=METHODS, repeats=3, progress=True):
    """Rows for every prompt x gamma x temperature x method, plus the summary (medians over prompts)."""
    from tqdm.auto import tqdm

    from .models import check_prompts

    prompts = check_prompts(prompts)
    cost = step_cost_ratio(pair, pair.tokenizer(prompts[0], return_tensors="pt").input_ids.to(pair.device))
    cost["verify_ratio"] = verify_cost_ratios(pair.target, gammas)
    jobs = [(p, g, t) for p in prompts for g in gammas for t in temperatures]
    rows = []
    for prompt, g, t in tqdm(jobs, disable=not progress, desc="bench"):
        ids = pair.tokenizer(prompt, return_tensors="pt").input_ids.to(pair.device)
        for m, r in interleaved(methods, pair, ids, max_new_tokens, g, t, repeats=repeats).items():
            rows.append(dict(prompt=prompt, gamma=g, temperature=t, **r, tokens_per_s=r["new_tokens"] / r["seconds"]))
    mark_greedy_equality(rows)
    if any(m in COMPILED for m in methods):
        cost["cold_draft_steps"] = cold_draft_profile(pair, max(gammas))
        cost["compiled_matmuls"] = matmul_variants(pair, max(gammas))
    summary = summarize(rows, cost["c"], cost["verify_ratio"])
    return dict(meta=metadata(pair, cost, max_new_tokens, repeats), rows=rows, summary=summary)


def mark_greedy_equality(rows) -> None:
    """At temperature 0 every method must return HF greedy's tokens: set `same_as_hf_greedy` on each
    greedy row (None where there is no HF greedy row to compare with) and drop the token ids."""
    ref = {(r["prompt"], r["gamma"]): r["new_ids"] for r in rows if r["method"] == "hf" and r["temperature"] == 0}
    for r in rows:
        ids = r.pop("new_ids")
        if r["temperature"] == 0 and (r["prompt"], r["gamma"]) in ref:
            r["same_as_hf_greedy"] = ids == ref[(r["prompt"], r["gamma"])]


def summarize(rows, c, verify_ratio=None):
    out = []
    for g in sorted({r["gamma"] for r in rows}):
        for t in sorted({r["temperature"] for r in rows}):
            sel = [r for r in rows if r["gamma"] == g and r["temperature"] == t]
            tps = {m: sum(r["new_tokens"] for r in sel if r["method"] == m) / sum(r["seconds"] for r in sel if r["method"] == m)
                   for m in dict.fromkeys(r["method"] for r in sel)}
            spec = [r for r in sel if r["method"] == "ours_speculative"]
            def pooled(key):
                return sum(r[key] * r["new_tokens"] for r in spec) / max(1, sum(r["new_tokens"] for r in spec)) if spec else float("nan")

            alpha, alpha_checked = pooled("alpha"), pooled("alpha_checked")
            row = dict(gamma=g, temperature=t, alpha=alpha, alpha_checked=alpha_checked, c=c, tokens_per_s=tps)
            if t == 0 and any("same_as_hf_greedy" in r for r in sel):
                row["all_equal_hf_greedy"] = all(r.get("same_as_hf_greedy", True) for r in sel)
            if "ours_speculative" in tps and "ours_ar" in tps:
                row["measured_speedup_vs_ours_ar"] = tps["ours_speculative"] / tps["ours_ar"]
                row["predicted_speedup"] = expected_speedup(alpha_checked, g, c)
                row["cost_model_error"] = row["predicted_speedup"] / row["measured_speedup_vs_ours_ar"] - 1
                if verify_ratio:  # Thm 3.8 with the verification pass costing v target steps instead of 1
                    v = verify_ratio[str(g)]
                    row["predicted_speedup_with_v"] = expected_speedup(alpha_checked, g, c, v)
                    row["cost_model_error_with_v"] = row["predicted_speedup_with_v"] / row["measured_speedup_vs_ours_ar"] - 1
                if all(r.get("draft_forward_calls") for r in spec) and any(r["method"] == "ours_ar" for r in sel):
                    row.update(in_loop_costs(sel, alpha_checked, g, row["measured_speedup_vs_ours_ar"]))
            if "ours_speculative" in tps and "hf_assisted" in tps:
                row["ours_vs_hf_assisted"] = tps["ours_speculative"] / tps["hf_assisted"]
            # Share of each method's time spent inside the models' forward passes; for HF assisted,
            # 1 / share bounds what any loop calling the same forward passes can gain over it.
            row["forward_share"] = {m: sum(r["forward_s"] for r in sel if r["method"] == m)
                                    / sum(r["seconds"] for r in sel if r["method"] == m)
                                    for m in tps if all(r.get("forward_s") is not None for r in sel if r["method"] == m)}
            if "hf_assisted" in tps:
                row["ceiling_vs_hf_assisted"] = 1 / row["forward_share"]["hf_assisted"]
            if all(r.get("peak_bytes") for r in sel):  # GPU only
                row["peak_bytes"] = {m: max(r["peak_bytes"] for r in sel if r["method"] == m) for m in tps}
            if "ours_speculative" in tps and "hf" in tps:
                row["ours_vs_hf_greedy"] = tps["ours_speculative"] / tps["hf"]
            if any(m in tps for m in COMPILED):
                row["compiled"] = compiled_summary(sel, tps, g)
            out.append(row)
    return out


def compiled_summary(rows, tps, gamma) -> dict:
    """The compiled methods against every baseline (ratios of tokens/s), their acceptance, the time
    their first (compiling) runs took, and c and v as the compiled loop paid them (CPU: the engine's
    clocks; the target's step is the compiled plain loop's time per token, its eager prefill left out,
    and the prediction is compared with the decoding alone: both loops' prefills left out)."""
    out = dict(compile_s={m: sum(r.get("warmup_compile_s", 0.0) for r in rows if r["method"] == m) for m in COMPILED if m in tps})
    ar, spec = "ours_ar_compiled", "ours_speculative_compiled"
    for base in ("hf", "hf_static", "hf_assisted", "ours_ar", "ours_speculative", ar):
        for m in (spec, ar):
            if m in tps and base in tps and base != m:
                out[f"{m}_vs_{base}"] = tps[m] / tps[base]
    sel = [r for r in rows if r["method"] == spec]
    if sel:
        n = sum(r["new_tokens"] for r in sel)
        out["alpha"] = sum(r["alpha"] * r["new_tokens"] for r in sel) / n
        out["alpha_checked"] = sum(r["alpha_checked"] * r["new_tokens"] for r in sel) / n
        out["tau"] = n / sum(r["target_forward_calls"] for r in sel)
        out["host_syncs_per_round"] = sum(r["host_syncs"] for r in sel) / sum(r["target_forward_calls"] for r in sel)
        ar_rows = [r for r in rows if r["method"] == ar]
        if ar_rows and all(r["draft_forward_s"] == r["draft_forward_s"] for r in sel):  # timed (not NaN)
            # The compiled loops read the prompt eagerly before their first step (prefill_s). c, v and the
            # prediction are in steps of plain decoding's decoding, so they compare with the decoding
            # alone, both prefills left out.
            pre = {m: sum(r["prefill_s"] for r in rs) for m, rs in ((spec, sel), (ar, ar_rows))}
            secs = {m: sum(r["seconds"] for r in rs) for m, rs in ((spec, sel), (ar, ar_rows))}
            step = (secs[ar] - pre[ar]) / sum(r["new_tokens"] for r in ar_rows)
            c = sum(r["draft_forward_s"] for r in sel) / sum(r["draft_forward_calls"] for r in sel) / step
            v = sum(r["target_forward_s"] for r in sel) / sum(r["target_forward_calls"] for r in sel) / step
            pred = expected_speedup(out["alpha_checked"], gamma, c, v)
            decode = (n / (secs[spec] - pre[spec])) / (sum(r["new_tokens"] for r in ar_rows) / (secs[ar] - pre[ar]))
            out.update(c_in_loop=c, v_in_loop=v, predicted_speedup_in_loop=pred,
                       measured_speedup_vs_ours_ar_compiled=tps[spec] / tps[ar],
                       measured_decode_speedup_vs_ours_ar_compiled=decode,
                       cost_model_error_in_loop=pred / decode - 1,
                       loop_share=sum(r["forward_s"] for r in sel) / secs[spec],
                       prefill_share=pre[spec] / secs[spec])
    return out


def in_loop_costs(rows, alpha, gamma, measured) -> dict:
    """c and v as the speculative loop actually paid them, from the forward-pass clocks: the draft's
    mean forward pass and the target's mean verification pass, each over the target's mean step in
    our autoregressive loop. On a CPU they usually exceed the isolated measurements (the first draft
    step after a target pass runs cold, and a draft step after a full acceptance takes two tokens);
    the cost model fed with them leaves only the loop's own overhead unexplained. Since they come from
    the very runs whose speedup they are compared with, `predicted_speedup_in_loop` is a decomposition
    of those runs, not a prediction, and a small `cost_model_error_in_loop` validates nothing: for a
    prediction, take c and v from other runs (`out_of_sample`). On a GPU the clocks are timing events
    (ForwardClock): the GPU's time per pass, launch waits included."""
    def per_call(method, who):
        sel = [r for r in rows if r["method"] == method]
        return sum(r[f"{who}_forward_s"] for r in sel) / sum(r[f"{who}_forward_calls"] for r in sel)

    step = per_call("ours_ar", "target")
    c, v = per_call("ours_speculative", "draft") / step, per_call("ours_speculative", "target") / step
    pred = expected_speedup(alpha, gamma, c, v)
    return dict(c_in_loop=c, v_in_loop=v, predicted_speedup_in_loop=pred, cost_model_error_in_loop=pred / measured - 1)


def out_of_sample(calibration: dict, evaluation: dict) -> list[dict]:
    """The cost model tested out of sample: c and v as one process paid them (`calibration`, a
    result of this module, e.g. the workshop-prompt sweep) predict the speedups that another process
    measured on other prompts (`evaluation`, e.g. the held-out run), with the evaluation's own alpha
    per checked token (acceptance is a property of the text, so it cannot be carried over). The
    in-sample error (c and v from the evaluated run itself: own_c, own_v) is kept beside it. One row per
    (gamma, temperature) both results hold."""
    calib = {(s["gamma"], s["temperature"]): s for s in calibration["summary"] if "c_in_loop" in s}
    rows = []
    for s in evaluation["summary"]:
        key = (s["gamma"], s["temperature"])
        if key not in calib or "measured_speedup_vs_ours_ar" not in s:
            continue
        c, v = calib[key]["c_in_loop"], calib[key]["v_in_loop"]
        pred = expected_speedup(s["alpha_checked"], s["gamma"], c, v)
        measured = s["measured_speedup_vs_ours_ar"]
        rows.append(dict(gamma=key[0], temperature=key[1], alpha_checked=s["alpha_checked"], c=c, v=v,
                         measured=measured, predicted=pred, error=pred / measured - 1,
                         in_sample_error=s.get("cost_model_error_in_loop"),
                         own_c=s.get("c_in_loop"), own_v=s.get("v_in_loop"),
                         calibration=calibration["meta"].get("prompt_set", "workshop"),
                         evaluation=evaluation["meta"].get("prompt_set", "workshop")))
    return rows


def metadata(pair, cost, max_new_tokens, repeats):
    import transformers

    return dict(
        pair=pair.name, device=str(pair.device), hardware=describe_device(pair.device), dtype=str(pair.dtype),
        quantization=pair.quantization, torch=torch.__version__, transformers=transformers.__version__,
        python=platform.python_version(), torch_threads=torch.get_num_threads(), max_new_tokens=max_new_tokens, repeats=repeats,
        date=time.strftime("%Y-%m-%d"), **cost,
        weights_bytes=dict(draft=weight_bytes(pair.draft), target=weight_bytes(pair.target)),
        process_peak_rss_bytes=process_peak_rss_bytes(),
        compiled_engine=fast_settings(pair.device),
    )


def fast_settings(device) -> dict:
    """How utils.fast compiles on this device (recorded with every result that times it)."""
    from . import fast

    cpu = torch.device(device).type == "cpu"
    return dict(mode="default (inductor)" if cpu else "reduce-overhead (CUDA graphs)",
                small_matmuls_as_loops_up_to_rows=fast.SMALL_MM_ROWS if cpu else 0,
                guards_checked="only those telling compiled graphs apart, once a width is compiled")


def save(result, out_dir: Path = RESULTS, tag: str | None = None) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    m = result["meta"]
    stem = f"bench-{m['pair']}-{m['device'].split(':')[0]}" + (f"-{m['quantization']}" if m["quantization"] else "")
    stem += f"-{tag}" if tag else ""
    path = out_dir / f"{stem}.json"
    write_json(path, result)
    with open(out_dir / f"{stem}.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["prompt", "gamma", "temperature", "method", "new_tokens", "seconds",
                                          "tokens_per_s", "forward_s", "forward_calls", "alpha", "tau", "peak_bytes"],
                           extrasaction="ignore")
        w.writeheader()
        w.writerows(result["rows"])
    return path


LOCAL_RUNS = ROOT / "runs"  # ignored by git: where runs go unless --out says otherwise


def _check_args(ap, args) -> tuple[list[str], Path]:
    """Every flag checked before any model is loaded: the ones every benchmark command shares
    (results.check_bench_flags), then --gammas and --tag. Returns (prompts, output json path)."""
    if any(g < 1 for g in args.gammas):
        ap.error(f"--gammas must all be >= 1 (got {args.gammas}): gamma is how many tokens the draft proposes")
    if args.tag is not None and not args.tag.replace("-", "").replace("_", "").isalnum():
        ap.error(f"--tag must be letters, digits, - and _ (got {args.tag!r})")
    counts = {"--n-prompts": args.n_prompts, "--max-new-tokens": args.max_new_tokens, "--repeats": args.repeats,
              "--threads": args.threads or None}  # --threads 0: torch's choice, like leaving it out
    suffix = "".join(f"-{s}" for s in (args.quantization, args.tag) if s)
    path, prompts = check_bench_flags(ap, args, "bench", counts, suffix=suffix, other="another --out / --tag")
    return prompts[: args.n_prompts], path


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m utils.bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pair", default=None, help="a key of utils.models.PAIRS (default $SPECDEC_PAIR or tiny)")
    ap.add_argument("--prompts", default="workshop", help="a key of data/prompts.json (workshop, heldout, datacamp)")
    ap.add_argument("--n-prompts", type=int, default=5)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--gammas", type=int, nargs="+", default=[4])
    ap.add_argument("--temperatures", type=float, nargs="+", default=[0.0])
    ap.add_argument("--methods", nargs="+", default=METHODS, choices=METHODS + ["hf_prompt_lookup"])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default=None)
    ap.add_argument("--quantization", default=None, choices=["nf4", "fp4"])
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    ap.add_argument("--out", type=Path, default=LOCAL_RUNS,
                    help="folder for the .json/.csv (default runs/, ignored by git; the committed results are in data/results)")
    ap.add_argument("--tag", default=None, help="appended to the file name: bench-<pair>-<device>-<tag>.json")
    ap.add_argument("--overwrite", action="store_true", help="replace an existing result file")
    args = ap.parse_args(argv)
    prompts, _ = _check_args(ap, args)
    if args.threads:
        torch.set_num_threads(args.threads)
    with command_errors(ap):
        pair = load_pair(args.pair, device=args.device, quantization=args.quantization)
        result = benchmark(pair, prompts, max_new_tokens=args.max_new_tokens, gammas=args.gammas,
                           temperatures=args.temperatures, methods=args.methods, repeats=args.repeats)
    result["meta"]["prompt_set"] = args.prompts
    path = save(result, args.out, args.tag)
    print(json.dumps(result["meta"], indent=2))
    for s in result["summary"]:
        print(json.dumps(s))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
