"""Where the time of a decode step goes, and what the fast path removes (notebook 07).

At batch size 1 a decode step does little arithmetic, and its time has two parts that each bound it
from below when measured exactly:

    step time >= max(weight bytes / memory bandwidth,  operators x per-operator overhead)

The first is notebook 01's bandwidth bound: every weight is read once per step. The second is what
eager PyTorch pays for every operator it runs, whatever the operator's size: Python, the dispatcher,
and on a GPU one kernel launch. A Gemma2 layer runs about a hundred ATen operators per step, so the
second part grows with the number of layers, not with their width. A step whose time follows the
operator count is *overhead-bound*; one whose time follows the weight bytes is *bandwidth-bound*.

On a CPU neither part is known exactly: the per-operator overhead is *estimated* from the slope of a
fit (`fit_line`), and weights that stay in the CPU's caches are read faster than
`utils.decoding.read_bandwidth` measures. So `step_estimates` returns estimates of the two parts, not floors: the notebook prints
them beside the measured step. This module measures the steps on the CPU (eager steps of the tiny
models and of shrunken configurations with other layer counts and widths, an operator counter, a
straight-line fit, a memory-bandwidth probe, the CPU's cache sizes), reads the committed H200
measurements, races the eager and compiled backends, and draws the notebook's figures.
"""

from __future__ import annotations

import copy
import json
import math
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from .sampling import seeded

# ----------------------------------------------------------------------------------------------
# Counting and timing one eager step
# ----------------------------------------------------------------------------------------------


class OpCounter(TorchDispatchMode):
    """Counts the ATen operators dispatched inside the `with` block (each one pays the eager
    per-operator overhead: on a GPU it is at least one kernel launch)."""

    def __init__(self):
        super().__init__()
        self.n = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.n += 1
        return func(*args, **(kwargs or {}))


def count_ops(step) -> int:
    """ATen operators dispatched by one call of `step()` (eager code only: not a compiled function)."""
    with torch.inference_mode(), OpCounter() as counter:
        step()
    return counter.n


def median_seconds(step, n: int = 20, warmup: int = 3) -> float:
    """Median wall time of `step()` over n calls after `warmup` calls (CPU: execution is synchronous;
    on CUDA it synchronizes around each call)."""
    cuda = torch.cuda.is_available() and torch.cuda.is_initialized()
    times = []
    with torch.inference_mode():
        for i in range(warmup + n):
            if cuda:
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            step()
            if cuda:
                torch.cuda.synchronize()
            if i >= warmup:
                times.append(time.perf_counter() - t0)
    return statistics.median(times)


def dynamic_cache_step(model, prefix: torch.Tensor):
    """A one-token eager step with transformers' DynamicCache after `prefix` (1, T): the cache grows
    by one position per call (what HF eager `generate` does). Returns the step function. Ids past
    the model's vocabulary (another tokenizer's: notebook 07 times random models of the tiny config
    after a prompt of the loaded pair, which may be Gemma2's) are wrapped into it: a step's time does
    not depend on which tokens it reads, and an out-of-range id would stop a GPU with a device assert."""
    from transformers import DynamicCache

    vocab = model.config.get_text_config().vocab_size
    if int(prefix.max()) >= vocab:
        prefix = prefix.remainder(vocab)
    cache = DynamicCache()
    with torch.inference_mode():
        model(input_ids=prefix, past_key_values=cache, use_cache=True, logits_to_keep=1)  # logits unused
    last = prefix[:, -1:]

    def step():
        return model(input_ids=last, past_key_values=cache, use_cache=True).logits

    return step


def engine_step(engine, prefix: torch.Tensor):
    """A one-token step of a `utils.fast.Engine` (static cache; compiled or not) after `prefix` (1, T).
    The cache grows by one position per call, like `dynamic_cache_step`."""
    with torch.inference_mode():
        engine.prefill(prefix)
        last = _unit_strides(prefix[:, -1:])  # strides (1, 1), like every token the decoding loops feed

    def step():
        return engine.forward(last)

    return step


def weight_bytes(model) -> int:
    """Bytes of the model's parameters (tied embeddings counted once)."""
    return sum(p.numel() * p.element_size() for p in model.parameters())


def config_weight_bytes(config, bytes_per_param: int = 2) -> int:
    """Bytes of a Gemma2 configuration's parameters, counted on the meta device (nothing allocated):
    2 bytes per parameter is bf16."""
    from transformers import Gemma2ForCausalLM

    with torch.device("meta"):
        model = Gemma2ForCausalLM(config)
    return bytes_per_param * sum(p.numel() for p in model.parameters())


# ----------------------------------------------------------------------------------------------
# Shrunken configurations: the same layer, other counts and widths
# ----------------------------------------------------------------------------------------------


def shrunk_model(config, *, layers: int, hidden: int | None = None, seed: int = 0, device="cpu", dtype=torch.float32):
    """A random Gemma2ForCausalLM like `config` with `layers` layers (sliding and global alternating,
    as in Gemma2) and, if given, width `hidden` (the MLP keeps its ratio to it; heads are unchanged),
    on `device` in `dtype`. Timing does not depend on the weights' values."""
    from transformers import Gemma2ForCausalLM

    cfg = copy.deepcopy(config)
    cfg.num_hidden_layers = layers
    cfg.layer_types = [("sliding_attention", "full_attention")[i % 2] for i in range(layers)]
    if hidden is not None:
        cfg.intermediate_size = cfg.intermediate_size * hidden // cfg.hidden_size
        cfg.hidden_size = hidden
    with seeded(seed, device), torch.device(device):
        return Gemma2ForCausalLM._from_config(cfg, dtype=dtype).eval()


def interleaved_seconds(steps: dict, rounds: int = 5, n: int = 5, warmup: int = 2) -> dict[str, float]:
    """Seconds per call of each step function: the steps take turns, `rounds` times `n` calls each,
    and each keeps its best round's median. On a shared machine another process's burst of work
    then spoils a few rounds of every step, not all of one step's calls."""
    best = {name: float("inf") for name in steps}
    for r in range(rounds):
        for name, step in steps.items():
            best[name] = min(best[name], median_seconds(step, n=n, warmup=warmup if r == 0 else 0))
    return best


@dataclass
class StepRow:
    label: str
    layers: int
    hidden: int
    seconds: float  # eager one-token step, DynamicCache (best round's median)
    ops: int  # ATen operators per step
    weight_bytes: int


def measure_steps(models: dict, prefix: torch.Tensor, **kw) -> list[StepRow]:
    """Eager one-token steps (DynamicCache, after `prefix`) of every model in `models` (label ->
    model), timed by `interleaved_seconds` (kw: rounds, n, warmup), with their operator counts."""
    steps = {label: dynamic_cache_step(m, prefix) for label, m in models.items()}
    seconds = interleaved_seconds(steps, **kw)
    rows = []
    for label, m in models.items():
        cfg = m.config.get_text_config()
        rows.append(StepRow(label, cfg.num_hidden_layers, cfg.hidden_size, seconds[label], count_ops(steps[label]),
                            weight_bytes(m)))
    return rows


def measure_step(model, label: str, prefix: torch.Tensor, **kw) -> StepRow:
    """`measure_steps` for one model."""
    return measure_steps({label: model}, prefix, **kw)[0]


def sweep_models(config, *, layers=(1, 2, 5, 10, 20), widths=(32, 64, 128, 256, 512), width_layers: int = 4,
                 device="cpu", dtype=torch.float32) -> dict:
    """Shrunken random models like `config`: every layer count in `layers` at the config's own width
    (labels "N layers"), then every width in `widths` at `width_layers` layers (labels "width H")."""
    kw = dict(device=device, dtype=dtype)
    models = {f"{L} layers": shrunk_model(config, layers=L, **kw) for L in layers}
    models.update({f"width {h}": shrunk_model(config, layers=width_layers, hidden=h, **kw) for h in widths})
    return models


@dataclass
class Fit:
    a: float  # intercept
    b: float  # slope
    r2: float

    def __call__(self, x):
        return self.a + self.b * np.asarray(x, dtype=float)


def fit_line(x, y) -> Fit:
    """Least-squares y = a + b x, with the coefficient of determination r2."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    b, a = np.polyfit(x, y, 1)
    resid = y - (a + b * x)
    ss = float(((y - y.mean()) ** 2).sum())
    return Fit(float(a), float(b), 1 - float((resid**2).sum()) / ss if ss > 0 else 1.0)


def step_estimates(weight_bytes, bandwidth, ops, per_op):
    """Estimates of the two parts of a decode step: (weight bytes / memory bandwidth, ops x per_op).

    Estimates, not floors: `per_op` comes from a fit (an operator's cost is not fixed: it can grow with
    the bytes it touches), and weights that sit in a cache are read faster than
    `bandwidth`. Either can lie above a measured step; compare them with it."""
    return np.asarray(weight_bytes, float) / bandwidth, np.asarray(ops, float) * per_op


OP_BAND = 1.15  # a layer costing within 1/1.15x .. 1.15x across model sizes: "a fixed cost per operator"


def sweep_verdicts(target_row: StepRow, draft_row: StepRow, fit: Fit, fit_big: Fit, bandwidth: float, per_op: float,
                   x_bytes: float, x_time: float) -> list[str]:
    """Notebook 07's layer sweep in words, generated from its numbers (they vary from run to run):
    whether a fixed cost per operator fits both ends of the sweep (fit: the small models' seconds per
    layer, fit_big: the big ones'); whether bytes start to count at equal operator counts (x_bytes the
    ratio of weight bytes, x_time the ratio of step times); and how much of each pair model's step the
    operators explain (>= 60%: "mostly operator overhead")."""
    share = {r.label: float(step_estimates(r.weight_bytes, bandwidth, r.ops, per_op)[1]) / r.seconds
             for r in (target_row, draft_row)}
    r_layer = fit_big.b / fit.b
    if 1 / OP_BAND <= r_layer <= OP_BAND:
        edge = min(abs(r_layer - 1 / OP_BAND), abs(r_layer - OP_BAND)) < 0.02
        fits = ("just inside that band, so a fixed cost per operator describes the range only roughly." if edge
                else "a fixed cost per operator describes the whole range.")
    else:
        off = float(fit(target_row.layers)) / target_row.seconds - 1  # the small models' line at the target's layers
        fits = (f"the cost per operator is not fixed, it {'grows' if r_layer > 1 else 'falls'} with the model's size, "
                f"so one t_op fits only part of the range (the small models' line is {off:+.0%} off the "
                f"{target_row.label}'s step).")
    mostly = [r.label for r in (draft_row, target_row) if share[r.label] >= 0.6]
    verdict = (f"only the {mostly[0]}'s step is mostly operator overhead" if len(mostly) == 1 else
               "both steps are mostly operator overhead" if mostly else "neither step is mostly operator overhead")
    return [
        f"- A layer costs {r_layer:.2f}x as much in the big models as in the small ones (a fixed cost per operator "
        f"allows {1 / OP_BAND:.2f}x to {OP_BAND}x): {fits}",
        f"- At equal operator counts, {x_bytes:.1f}x the bytes cost {x_time:.1f}x the time: "
        + ("once the weights grow, bytes count, not only operators." if x_time > 1.5
           else "the time grows far less than the bytes; at these widths the operators set most of it."),
        f"- Operators x the small models' per-op cost explain {share[draft_row.label]:.0%} of the {draft_row.label}'s "
        f"step and {share[target_row.label]:.0%} of the {target_row.label}'s: {verdict}.",
    ]


def cpu_cache_sizes(cpu: int = 0) -> dict[str, int]:
    """Bytes of each data or unified cache level of `cpu`, as Linux reports them in sysfs (e.g.
    {"L1": 32768, "L2": 1048576, "L3": 33554432}); {} where sysfs does not say (not Linux)."""
    out = {}
    for d in sorted(Path(f"/sys/devices/system/cpu/cpu{cpu}/cache").glob("index*")):
        try:
            kind, level, size = ((d / f).read_text().strip() for f in ("type", "level", "size"))
        except OSError:
            continue
        if kind == "Instruction" or not size[:-1].isdigit():
            continue
        out[f"L{level}"] = int(size[:-1]) * {"K": 2**10, "M": 2**20, "G": 2**30}.get(size[-1], 1)
    return out


# ----------------------------------------------------------------------------------------------
# The committed GPU measurements
# ----------------------------------------------------------------------------------------------


def load_gpu_results(path: Path) -> dict:
    """A committed GPU measurement (data/results/gpu-*.json), with its provenance."""
    return json.loads(Path(path).read_text())


def gpu_label(result: dict) -> str:
    """'NVIDIA H200, 2026-11-24, random weights': what every GPU figure must say."""
    p = result["provenance"]
    gpu = p["gpu"].split(" (")[0]
    weights = "random weights" if "random" in p.get("weights", "") else p.get("weights", "")
    return f"{gpu}, {p['date']}, {weights}"


def gpu_quantization_report(result: dict) -> str:
    """Notebook 06's reading of a committed GPU file with bf16 and NF4 rows (HF greedy, dynamic and
    static cache): its provenance and notes, the eager steps of 2b and 9b against their bytes, NF4
    against bf16 per model and cache, how close bf16 came to its bandwidth bound, and, computed from
    the rows, where NF4 lost most and how many milliseconds per step NF4 added with each cache."""
    pv = result["provenance"]
    by = {(m["model"], m["dtype"]): m for m in result["models"]}
    b2, b9 = by[("2b", "bf16")], by[("9b", "bf16")]
    caches = (("dynamic", "hf_greedy_dynamic_tok_s"), ("static", "hf_greedy_static_tok_s"))
    sizes = ("2b", "9b")
    nf4 = pv.get("nf4", "NF4")  # how the file's NF4 rows were quantized, where it says
    lines = [f"[{pv['gpu']}, {pv['date']}, torch {pv['torch']}, transformers {pv['transformers']}, "
             f"bitsandbytes {pv['bitsandbytes']}, batch {pv['batch']}; weights: {pv['weights']}; {pv['note']}]",
             f"[its NF4 rows: {nf4}]",
             f"[the file's note on this GPU: {result['pairs_note']}]",
             f"[its eager steps: 2b {b2['hf_eager_step_ms']} ms, 9b {b9['hf_eager_step_ms']} ms: "
             f"{b9['hf_eager_step_ms'] / b2['hf_eager_step_ms']:.1f}x the time for {b9['weights_gb'] / b2['weights_gb']:.1f}x the bytes]"]
    for size in sizes:
        bf, nf = by[(size, "bf16")], by[(size, "nf4")]
        lines.append(f"gemma-2-{size} shape, {bf['weights_gb']} GB bf16 (bound {bf['bandwidth_bound_tok_s']} tok/s) / "
                     f"{nf['weights_gb']} GB NF4: " + ", ".join(f"{cache} cache {bf[k]:.1f} -> {nf[k]:.1f} tok/s "
                                                              f"(NF4 at {nf[k] / bf[k]:.2f}x bf16)" for cache, k in caches))
    share = {(s, c): by[(s, "bf16")][k] / by[(s, "bf16")]["bandwidth_bound_tok_s"] for s in sizes for c, k in caches}
    lines.append("bf16 reached, of its bandwidth bound: " + "; ".join(
        f"gemma-2-{s} {share[(s, 'dynamic')]:.0%} with the dynamic cache, {share[(s, 'static')]:.0%} with the static one"
        for s in sizes))
    ratios = {(s, c): by[(s, "nf4")][k] / by[(s, "bf16")][k] for s in sizes for c, k in caches}
    # milliseconds NF4 added per step
    extra = {(s, c): 1e3 / by[(s, "nf4")][k] - 1e3 / by[(s, "bf16")][k] for s in sizes for c, k in caches}
    lines.append(f"NF4 slower than bf16 in {sum(r < 1 for r in ratios.values())} of {len(ratios)} rows (model x cache); "
                 f"it lost most at gemma-2-{' with the '.join(min(ratios, key=ratios.get))} cache")
    lines.append("time NF4 added per step: " + "; ".join(
        f"gemma-2-{s} {extra[(s, 'dynamic')]:+.1f} ms with the dynamic cache, "
        f"{extra[(s, 'static')]:+.1f} ms with the static one"
        for s in sizes))
    return "\n".join(lines)


def gpu_bandwidth(result: dict) -> float:
    """Bytes/s the bandwidth bounds of a GPU result assume: weights x bound tokens/s."""
    rows = [m for m in result["models"] if "bandwidth_bound_tok_s" in m]
    return statistics.median(m["weights_gb"] * 1e9 * m["bandwidth_bound_tok_s"] for m in rows)


def gpu_steps(result: dict) -> dict[str, dict[str, float]]:
    """Per model (bf16 rows with an eager step): milliseconds per token of the eager step, of HF
    with a static cache (compiled forward, CUDA graphs) and of the bandwidth floor."""
    out = {}
    for m in result["models"]:
        if "hf_eager_step_ms" in m and "bandwidth_bound_tok_s" in m:
            out[m["model"]] = {"eager step": m["hf_eager_step_ms"],
                               "HF static cache (compiled)": 1e3 / m["hf_greedy_static_tok_s"],
                               "bandwidth floor": 1e3 / m["bandwidth_bound_tok_s"]}
    return out


def cost_ratio_predictions(result: dict, layers: dict[str, int], weights: dict[str, float]) -> list[dict]:
    """For each measured pair of distinct models: c as the pair's run measured it (`pair_run`), c from
    the separate runs of each model's eager step where the file has both (`separate`, else NaN), the one
    to use (`measured`: the separate runs' where there are two, since each timed its model alone over
    many steps, else the pair run's; `source` says which), and c if the step were bandwidth-bound
    (ratio of weight bytes) or overhead-bound (ratio of layer counts)."""
    steps = gpu_steps(result)
    rows = []
    for p in result["pairs_gamma4_64_tokens"]:
        if "c" not in p:
            continue
        d, t = p["pair"].split("->")
        if d == t:
            continue
        separate = steps[d]["eager step"] / steps[t]["eager step"] if d in steps and t in steps else float("nan")
        both = not math.isnan(separate)
        rows.append(dict(pair=p["pair"], pair_run=p["c"], separate=separate, measured=separate if both else p["c"],
                         source="separate model runs" if both else "pair run",
                         bytes=weights[d] / weights[t], layers=layers[d] / layers[t]))
    return rows


def pair_run_step_ms(result: dict, target: str) -> float:
    """The target's eager milliseconds per token in a pair run (HF greedy, dynamic cache: 1000 /
    hf_greedy_tok_s of the first distinct pair with that target), for a model whose own eager step the
    file lacks; it holds generate's sampling and bookkeeping too, so it reads slightly above a bare step.
    NaN where no pair has that target."""
    for p in result["pairs_gamma4_64_tokens"]:
        d, t = p["pair"].split("->")
        if t == target and d != t and "hf_greedy_tok_s" in p:
            return 1e3 / p["hf_greedy_tok_s"]
    return float("nan")


# ----------------------------------------------------------------------------------------------
# Eager vs compiled, plain vs speculative, on the same prompts
# ----------------------------------------------------------------------------------------------

METHODS = ("eager AR", "compiled AR", "eager speculative", "compiled speculative")


def _unit_strides(ids: torch.Tensor) -> torch.Tensor:
    """The same (1, T) token ids with strides (1, 1), so that `ids[:, -1:]` has the strides of every
    later one-token input (`ids[:, -1:].clone()` keeps the stride (T, 1): a size-1 dimension's stride
    is arbitrary, and clone preserves it). Compiled code (dynamic=False) guards on strides, so a
    first input with the prompt's stride would compile the one-token step again for every prompt
    length. `utils.fast.autoregressive_compiled` fed `ids[:, -1:]` as its first input in commit
    530fc47 (each new prompt length recompiled, uncounted in compile_time, and the ninth graph of
    `Engine._forward` failed with fullgraph=True); passing unit-stride ids keeps the race free of
    that whichever version runs."""
    return torch.empty_strided(ids.shape, (1, 1), dtype=ids.dtype, device=ids.device).copy_(ids)


def _run(method, pair, ids, n, gamma, eos):
    from .decoding import autoregressive_generate
    from .speculative import speculative_generate

    backend = "compiled" if method.startswith("compiled") else "eager"
    t0 = time.perf_counter()
    if method.endswith("AR"):
        res = autoregressive_generate(pair.target, _unit_strides(ids), n, eos_token_id=eos, backend=backend)
    else:
        res = speculative_generate(pair.target, pair.draft, ids, max_new_tokens=n, gamma=gamma, eos_token_id=eos,
                                   backend=backend)
    secs = time.perf_counter() - t0
    # prefill_s: the compiled loops' eager pass over the prompt, before their first step (the eager loops
    # read the prompt inside their first passes: 0)
    row = dict(new=res.sequences[0, ids.shape[1]:].tolist(), seconds=secs - res.compile_time,
               compile_s=res.compile_time, prefill_s=res.prefill_time)
    if not method.endswith("AR"):
        # draft passes: one per drafted token; the compiled loop adds one to write x_k after a full accept
        extra = (lambda r: r.kind == "bonus") if backend == "compiled" else (lambda r: 0)
        row.update(accepted=res.n_accepted, checked=res.n_accepted + res.n_rejected, rounds=len(res.rounds),
                   draft_s=res.draft_time, draft_calls=sum(len(r.drafted) + extra(r) for r in res.rounds),
                   target_s=res.target_time, host_syncs=res.host_syncs)
    return row


def race(pair, prompts: list[str], *, max_new_tokens: int = 64, gamma: int = 4) -> dict:
    """Greedy decoding of every prompt by HF `generate` (the reference) and by the four METHODS, the
    methods taking turns within each prompt. A warm-up on the first prompt compiles first (its compile
    time is kept apart); timed runs exclude compilation. Returns per method: tokens/s, compile seconds,
    whether every output equals HF greedy; for the speculative ones alpha (per checked token), tau, and
    c and v as the loop paid them: the draft's mean pass and the target's mean verify pass over the
    matching plain loop's time per decoding step (its prefill left out), and the share of the run
    spent in forward passes (a CPU's clock; on CUDA both loops record timing events around each pass,
    read after the loop's own syncs); draft_calls_per_round (drafted tokens, plus in the
    compiled loop the step that writes the last one after a full acceptance: the eager loop feeds it to
    the next round's first draft pass instead); prefill, the time per round spent reading
    the prompt before the first round (the compiled loop prefills both models eagerly; the eager loop
    reads the prompt inside each model's first pass, so its prefill is 0 and that pass sits in c and v),
    and prefill_plain, the matching plain loop's own prefill per round; and o, the rest of the time per
    round outside forward passes (the loop's own work). The unit of all of them is one step of the
    plain loop's decoding, its prefill left out. A round costs draft_calls_per_round * c + v + prefill
    + o such steps and yields tau tokens, which plain decoding makes in tau steps, so
    (tau + prefill_plain) / (that sum) is the measured speedup over plain decoding, and
    tau / (draft_calls_per_round * c + v + o) that of the decoding alone, both exactly. Every method
    also gets decode_tokens_per_s, its tokens over its time less its prefill (for the eager loops, which
    have no separate prefill, the same as tokens_per_s)."""
    eos = pair.target.generation_config.eos_token_id
    encode = [pair.tokenizer(p, return_tensors="pt").input_ids.to(pair.device) for p in prompts]
    warm = min(max_new_tokens, 2 * (gamma + 1))  # enough for a full round: every shape compiles here
    compile_s = {m: _run(m, pair, encode[0], warm, gamma, eos)["compile_s"] for m in METHODS}
    runs = {m: [] for m in METHODS}
    equal = {m: True for m in METHODS}
    for ids in encode:
        with torch.inference_mode():
            ref = pair.target.generate(ids, max_new_tokens=max_new_tokens, do_sample=False, eos_token_id=eos,
                                       pad_token_id=pair.target.generation_config.pad_token_id or 0)
        ref = ref[0, ids.shape[1]:].tolist()
        for m in METHODS:
            r = _run(m, pair, ids, max_new_tokens, gamma, eos)
            runs[m].append(r)
            equal[m] &= r["new"] == ref
    out = {}
    for m, rs in runs.items():
        tokens, secs = sum(len(r["new"]) for r in rs), sum(r["seconds"] for r in rs)
        prefill = sum(r["prefill_s"] for r in rs)
        out[m] = dict(tokens_per_s=tokens / secs, tokens=tokens, seconds=secs, compile_s=compile_s[m],
                      equal_to_hf_greedy=equal[m], prefill_s=prefill, decode_tokens_per_s=tokens / (secs - prefill))
    for m in ("eager speculative", "compiled speculative"):
        rs, ar = runs[m], out[m.replace("speculative", "AR")]
        # one plain decoding step, its prefill left out: (1, T) prompt read apart, then one step per token
        step, n_rounds = (ar["seconds"] - ar["prefill_s"]) / ar["tokens"], sum(r["rounds"] for r in rs)
        passes = sum(r["draft_s"] + r["target_s"] for r in rs)
        out[m].update(alpha=sum(r["accepted"] for r in rs) / sum(r["checked"] for r in rs),
                      tau=out[m]["tokens"] / n_rounds,
                      c=sum(r["draft_s"] for r in rs) / sum(r["draft_calls"] for r in rs) / step,
                      v=sum(r["target_s"] for r in rs) / n_rounds / step,
                      forward_share=passes / out[m]["seconds"],
                      draft_calls_per_round=sum(r["draft_calls"] for r in rs) / n_rounds,
                      prefill=out[m]["prefill_s"] / n_rounds / step, prefill_plain=ar["prefill_s"] / n_rounds / step,
                      o=(out[m]["seconds"] - passes - out[m]["prefill_s"]) / n_rounds / step)
        if rs[0]["host_syncs"] is not None:
            out[m]["host_syncs_per_round"] = sum(r["host_syncs"] for r in rs) / n_rounds
    return out


# ----------------------------------------------------------------------------------------------
# Figures
# ----------------------------------------------------------------------------------------------


def _ax(ax, size=(6, 3.5)):
    return ax if ax is not None else plt.subplots(figsize=size, layout="constrained")[1]


def plot_layer_sweep(rows: list[StepRow], fit: Fit, bandwidth: float, per_op: float, title: str,
                     marks: dict[str, int] | None = None, fit_range: str = ""):
    """Left: eager step time against layer count, with the fit a + b x layers (fitted over
    `fit_range`, e.g. "1-5 layers", and drawn over every layer count). Right: against width at a
    fixed layer count, with the two estimates of `step_estimates` (weight bytes / bandwidth, ops x
    per-op overhead) and a vertical line at each width in `marks` (label -> width, e.g. the tiny
    models')."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.6), layout="constrained")
    by_layers = [r for r in rows if r.label.endswith("layers")]
    x = np.array([r.layers for r in by_layers])
    left.plot(x, [1e3 * r.seconds for r in by_layers], "o", label="measured (width of the tiny target)")
    xs = np.linspace(0, x.max(), 50)
    over = f" over {fit_range}" if fit_range else ""
    left.plot(xs, 1e3 * fit(xs), "-", lw=1, label=f"fit{over}: {1e3 * fit.a:.2f} + {1e3 * fit.b:.3f} x layers ms")
    for r in rows:
        if not r.label.endswith("layers") and not r.label.startswith("width"):
            left.plot([r.layers], [1e3 * r.seconds], "s", ms=8, label=r.label)
    left.set(xlabel="layers", ylabel="ms per eager step", title="grows with the layer count", ylim=(0, None))
    left.legend(fontsize=7)
    by_width = [r for r in rows if r.label.startswith("width")]
    w = np.array([r.hidden for r in by_width])
    bw, oh = step_estimates([r.weight_bytes for r in by_width], bandwidth, [r.ops for r in by_width], per_op)
    right.plot(w, [1e3 * r.seconds for r in by_width], "o-", label=f"measured ({by_width[0].layers} layers)")
    right.plot(w, 1e3 * oh, "--", lw=1, label="ops x per-op overhead (estimate)")
    right.plot(w, 1e3 * bw, ":", lw=1.5, label="weight bytes / memory bandwidth")
    for i, (label, width) in enumerate((marks or {}).items()):
        right.axvline(width, color="grey", lw=0.8, ls=(0, (1, 2 + i)))
        right.text(width, 0.97, f" {label}", transform=right.get_xaxis_transform(), fontsize=7, va="top", rotation=90)
    right.set(xlabel="width (hidden size)", ylabel="ms per eager step", xscale="log", ylim=(0, None),
              title=f"same operator count ({by_width[0].ops} ATen ops), other widths")
    right.set_xticks(w, [str(v) for v in w])
    right.minorticks_off()
    right.legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    return fig


def plot_gpu_overhead(steps: dict, predictions: list[dict], label: str):
    """Left: ms per token of the eager step, of HF's static-cache (compiled) decoding and of the
    bandwidth floor, per model. Right: c measured (from the separate model runs, n/a where the file has
    one model's step only, and from the pair's own run, hatched) against c predicted from weight bytes
    and from layer counts. `label` (GPU, date, random weights) goes in the title."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.6), layout="constrained")
    models = list(steps)
    kinds = list(steps[models[0]])
    width = 0.8 / len(kinds)
    for i, k in enumerate(kinds):
        vals = [steps[m][k] for m in models]
        pos = np.arange(len(models)) + (i - (len(kinds) - 1) / 2) * width
        left.bar(pos, vals, width, label=k)
        for p, v in zip(pos, vals):
            left.text(p, v, f"{v:.1f}", ha="center", va="bottom", fontsize=8)
    left.set_xticks(range(len(models)), [f"gemma-2-{m} shape, bf16" for m in models])
    left.set(ylabel="ms per token", title="eager steps sit far above the bandwidth floor")
    left.legend(fontsize=7)
    names = [p["pair"] for p in predictions]
    kinds = [("separate", "c, separate model runs", {}), ("pair_run", "c, the pair's run (one noisy run)", dict(hatch="//", alpha=0.6)),
             ("bytes", "c if bandwidth-bound (bytes ratio)", {}), ("layers", "c if overhead-bound (layers ratio)", {})]
    for i, (k, lab, style) in enumerate(kinds):
        vals = [p[k] for p in predictions]
        pos = np.arange(len(names)) + (i - 1.5) * 0.2
        right.bar(pos, np.nan_to_num(vals), 0.2, label=lab, **style)
        for p, v in zip(pos, vals):
            right.text(p, 0 if math.isnan(v) else v, "n/a" if math.isnan(v) else f"{v:.2f}", ha="center", va="bottom", fontsize=7)
    right.set_xticks(range(len(names)), names)
    right.set(ylabel="c = draft step / target step", title="c: measured vs the bytes and layer ratios")
    right.legend(fontsize=7)
    fig.suptitle(f"Gemma2 shapes, eager HF, batch 1: {label}", fontsize=10)
    return fig


def plot_cache_positions(prompt: int, accepted: int, dropped: int, capacity: int, ax=None,
                         title="static cache after a rollback"):
    """One row of cache slots: the prompt and the positions of the verify pass that were accepted are
    kept; the rejected ones are still in memory but past the length (masked, overwritten by the next
    write); the rest is empty. `capacity`: how many positions to draw."""
    ax = _ax(ax, (8, 2.2))
    parts = [("prompt (kept)", 0, prompt, "#2563eb"), ("verified (kept)", prompt, accepted, "#16a34a"),
             ("rejected (dropped: stale, masked)", prompt + accepted, dropped, "#dc2626"),
             ("never written", prompt + accepted + dropped, capacity - prompt - accepted - dropped, "#e5e7eb")]
    for label, start, n, color in parts:
        if n > 0:
            ax.broken_barh([(start, n)], (0, 1), facecolors=color, edgecolor="white", label=label)
    length = prompt + accepted
    ax.plot([length, length], [0, 1.05], color="k", lw=2)
    ax.text(length, 1.08, f"length = {length}: the next write goes here", ha="center", va="bottom", fontsize=8)
    ax.set(xlim=(0, capacity), ylim=(0, 2.3), yticks=[], xlabel="cache position", title=title)
    ax.legend(fontsize=7, ncol=4, loc="upper center", frameon=False)
    return ax


def plot_backend_steps(ms: dict[str, float], title: str, ax=None):
    """Horizontal bars: ms per one-token step of each variant."""
    ax = _ax(ax, (7, 2.4))
    names = list(ms)
    ax.barh(names, [ms[n] for n in names], color=plt.cm.tab10.colors[: len(names)])
    for i, n in enumerate(names):
        ax.text(ms[n], i, f" {ms[n]:.2f} ms", va="center", fontsize=9)
    ax.invert_yaxis()
    ax.set(xlabel="ms per one-token step", title=title, xlim=(0, 1.2 * max(ms.values())))
    return ax


def compiled_shapes_rows(result: dict) -> dict[str, dict[str, float]]:
    """From a `python -m utils.shapes` result (eager or --compiled): per model row, every tokens/s it
    holds (keys ending in tok_s or tokens_per_s), keyed by size and quantization."""
    out = {}
    for m in result.get("models", []):
        name = f"{m.get('size', '?')} {m.get('quantization') or 'bf16'}"
        vals = {k.removesuffix("_tokens_per_s").removesuffix("_tok_s").replace("_", " "): v for k, v in m.items()
                if k.endswith(("_tok_s", "_tokens_per_s")) and isinstance(v, (int, float)) and not isinstance(v, bool)}
        if vals:
            out[name] = vals
    return out


def shapes_label(result: dict) -> str:
    """'<GPU>, <date>, random weights' for a `python -m utils.shapes` result."""
    meta = result.get("meta", {})
    return f"{meta.get('gpu') or meta.get('hardware', '?')}, {meta.get('date', '?')}, random weights"


def plot_compiled_pairs(result: dict, ax=None):
    """Issue 12's question in one picture, for a `python -m utils.shapes --compiled` result: per pair,
    the tokens/s its measured compiled round implies at each alpha (tau / round time), beside the
    target's own baselines (HF eager with a dynamic cache, HF static cache, our compiled greedy:
    horizontal lines), its memory-bandwidth bound (the ceiling of every plain batch-1 decoder) and, at
    alpha = 1, the measured self-draft run of that target where the file has one. Random weights give
    no real alpha: the x axis is the acceptance a real draft would have to reach. Returns the axes
    (None when the file holds no pair with measured rounds)."""
    pairs = [p for p in result.get("pairs", []) if p.get("at_alpha")]
    if not pairs:
        return None
    ax = _ax(ax, (7, 4))
    selfd = {d["model"]: d for d in result.get("self_draft", []) if d.get("steady_tok_s")}
    for i, p in enumerate(pairs):
        color = f"C{i}"
        xs = [a["alpha"] for a in p["at_alpha"]]
        ax.plot(xs, [a["tok_s"] for a in p["at_alpha"]], "o-", color=color,
                label=f"{p['pair']} compiled speculative, gamma {p['gamma']} (c = {p['c']:.2f}, v = {p['v']:.2f})")
        for key, style, name in (("target_hf_dynamic_tok_s", ":", "HF eager"), ("target_hf_static_tok_s", "--", "HF static"),
                                 ("target_compiled_decode_tok_s", "-.", "compiled greedy"),
                                 ("target_bandwidth_bound_tok_s", "-", "bandwidth bound (any plain decoder)")):
            if p.get(key):
                ax.axhline(p[key], ls=style, color=color, lw=1, label=f"{p['target']} {name}: {p[key]:.0f} tok/s")
        if p["target"] in selfd:  # alpha 1 in exact arithmetic; bf16 rounding can flip a near-tie, so the measured one
            sd = selfd[p["target"]]
            a = sd.get("alpha") if sd.get("alpha") is not None else 1.0
            ax.plot([a], [sd["steady_tok_s"]], "*", ms=12, color=color,
                    label=f"{p['target']} drafting for itself (measured: alpha {a:.2f})")
    ax.set(xlabel="alpha (acceptance a real draft would need)", ylabel="tokens / s (batch 1)")
    ax.set_title(f"compiled speculative decoding: {shapes_label(result)}", fontsize=9)
    ax.legend(fontsize=7, loc="upper left")
    return ax


def plot_grouped(table: dict[str, dict[str, float]], ylabel: str, title: str, ax=None, log: bool = False):
    """Grouped bars, each labelled with its value: one group per key of `table`, one bar per inner key
    (sorted; a missing or NaN value leaves a gap). log: logarithmic y axis."""
    ax = _ax(ax, (7, 3.5))
    groups = list(table)
    kinds = sorted({k for v in table.values() for k in v})
    width = 0.8 / max(1, len(kinds))
    for i, k in enumerate(kinds):
        pos = np.arange(len(groups)) + (i - (len(kinds) - 1) / 2) * width
        vals = [table[g].get(k, np.nan) for g in groups]
        ax.bar(pos, vals, width, label=k)
        for p, v in zip(pos, vals):
            if v == v:
                ax.text(p, v, f"{v:.0f}", ha="center", va="bottom", fontsize=7)
    ax.set_xticks(range(len(groups)), groups)
    ax.set(ylabel=ylabel, title=title, yscale="log" if log else "linear")
    ax.legend(fontsize=7)
    return ax
