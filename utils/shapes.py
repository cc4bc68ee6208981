"""Real Gemma2 shapes with random weights: memory and speed without downloading anything.

    python -m utils.shapes                                  # on a GPU: 2b, 9b, 27b in bf16 and NF4
    python -m utils.shapes --sizes 2b 9b --quant none       # bf16 only, two sizes
    python -m utils.shapes --pairs 2b:9b 2b:27b             # ours vs HF assisted on those pairs
    python -m utils.shapes --compiled --sizes --pairs 2b:27b --budget-s 420   # the compiled backend
    python -m utils.shapes --compiled ... --dry-run         # check the flags, print the plan, load nothing

Gemma2's weights are gated and this project's machines cannot reach the Hub, so this builds
`Gemma2ForCausalLM` from the published configurations (2b, 9b, 27b) with random weights. Memory
and time do not depend on the values of the weights, so those numbers are real; acceptance does, so
none is reported as a Gemma2 acceptance rate. Instead the pairs are bracketed: alpha ~ 0 (the draft
is an independent random model) and alpha = 1 (the target drafts for itself, c = 1). Results go to
<--out>/shapes-<device>.json (--out: runs/ by default, ignored by git; a run worth keeping is copied
into data/results). Made for a GPU; it runs on a CPU too, slowly (tests use shrunken
configurations).

--compiled measures the compiled backend (utils.fast, what backend="compiled" runs) instead, and
writes <--out>/shapes-compiled-<device>[-<tag>].json after every step (a run stopped by a time
limit leaves what it measured). Per model (--sizes, plus every pair's and self-draft's target):
weights, the memory-bandwidth bound (weight bytes / GPU bandwidth), compiled greedy tokens/s and its
share of that bound, the compiled 1-token step, HF greedy with the dynamic cache and with
cache_implementation="static" (which compiles on CUDA), and compile times apart from all of them.
Per pair (draft:target, bf16): c = draft compiled step / target compiled step, the steady-state time
of one compiled speculative round at gamma (whole rounds of the real loop with the accepted count
forced to 0 and to gamma, timed as the difference between a short and a long run), the tokens/s it
implies at each alpha, tau(alpha, gamma) / E[round time], and those against the baselines. Per
self-draft (the target drafting for itself, alpha = 1, measured for real): its tokens/s against what
the round-time model predicts for the same rounds. "goals" holds the ratios the GPU run is judged by:
the floors this collection set, and the aim past them (2b->27b at alpha 0.8 above the 27b's bandwidth bound).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import torch

from .bench import LOCAL_RUNS, _sync, forward_latency, hf_generate
from .models import describe_device, weight_bytes
from .results import check_output, command_errors, write_json
from .sampling import seeded
from .theory import gpu_bandwidth
from .speculative import speculative_generate

# From the published config.json files of google/gemma-2-{2b,9b,27b}.
GEMMA2_SHAPES = {
    "2b": dict(hidden_size=2304, intermediate_size=9216, num_hidden_layers=26, num_attention_heads=8,
               num_key_value_heads=4, head_dim=256, query_pre_attn_scalar=256),
    "9b": dict(hidden_size=3584, intermediate_size=14336, num_hidden_layers=42, num_attention_heads=16,
               num_key_value_heads=8, head_dim=256, query_pre_attn_scalar=256),
    "27b": dict(hidden_size=4608, intermediate_size=36864, num_hidden_layers=46, num_attention_heads=32,
                num_key_value_heads=16, head_dim=128, query_pre_attn_scalar=144),
}
GEMMA2_COMMON = dict(vocab_size=256000, max_position_embeddings=8192, sliding_window=4096, attn_logit_softcapping=50.0,
                     final_logit_softcapping=30.0, hidden_activation="gelu_pytorch_tanh", rms_norm_eps=1e-6,
                     bos_token_id=2, eos_token_id=1, pad_token_id=0)


def param_count(size: str) -> int:
    """Parameters of a Gemma2 size from its shape (embedding tied to the LM head; norms left out)."""
    c = {**GEMMA2_COMMON, **GEMMA2_SHAPES[size]}
    h, hd = c["hidden_size"], c["head_dim"]
    attn = h * hd * (2 * c["num_attention_heads"] + 2 * c["num_key_value_heads"])  # q, o, k, v
    mlp = 3 * h * c["intermediate_size"]  # gate, up, down
    return c["vocab_size"] * h + c["num_hidden_layers"] * (attn + mlp)


def available_memory_bytes() -> float | None:
    """MemAvailable from /proc/meminfo (Linux); None elsewhere."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return float(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def gemma2_config(size: str, **overrides):
    """The Gemma2ForCausalLM configuration of a published size; overrides shrink it for tests."""
    from transformers import Gemma2Config

    if size not in GEMMA2_SHAPES:
        raise ValueError(f"unknown Gemma2 size {size!r}; choose from {sorted(GEMMA2_SHAPES)}")
    return Gemma2Config(**{**GEMMA2_COMMON, **GEMMA2_SHAPES[size], **overrides})


# 4-bit rows quantize as BitsAndBytesConfig(load_in_4bit=True) does by default: no double quantization.
# (The eager run of 2026-11-24, data/results/gpu-h200-2026-11-24.json, took bitsandbytes' defaults,
# which double-quantize: its "nf4" rows are NF4 + double quant.) Recorded in each result's meta.
DOUBLE_QUANT = False


def random_model(config, *, device="cpu", dtype=torch.float32, quantization: str | None = None, seed: int = 0):
    """A randomly initialised Gemma2ForCausalLM built directly on `device` in `dtype` (no float32
    copy first, so a 27b model needs only its bf16 size), optionally with 4-bit linear layers."""
    from transformers import Gemma2ForCausalLM

    with seeded(seed, device), torch.device(device):
        model = Gemma2ForCausalLM._from_config(config, dtype=dtype).eval()
    if quantization:
        to_4bit(model, quantization, compute_dtype=dtype)
    model.generation_config.eos_token_id = None  # random models must not stop early at "EOS"
    model.generation_config.pad_token_id = 0
    return model


@torch.no_grad()
def to_4bit(model, quant_type: str = "nf4", compute_dtype=torch.bfloat16, double_quant: bool = DOUBLE_QUANT) -> None:
    """Replace every linear layer but the output head by bitsandbytes' Linear4bit, in place: the same
    layers `from_pretrained(quantization_config=BitsAndBytesConfig(load_in_4bit=True))` quantizes, and
    by default the same way: without double quantization (bnb_4bit_use_double_quant=False), which
    bitsandbytes' own Linear4bit and Params4bit would otherwise turn on (compress_statistics=True)."""
    import bitsandbytes as bnb

    if quant_type not in ("nf4", "fp4"):
        raise ValueError(f'quant_type must be "nf4" or "fp4" (got {quant_type!r})')
    head = model.get_output_embeddings()
    # names, not modules: a list of the modules would keep every replaced bf16 layer alive until the end
    # (27b: its 52 GB of bf16 weights beside the new 4-bit ones)
    names = [(pname, name) for pname, parent in model.named_modules() for name, child in parent.named_children()
             if isinstance(child, torch.nn.Linear) and child is not head]
    for i, (pname, name) in enumerate(names):
        parent = model.get_submodule(pname)
        child = getattr(parent, name)
        device = child.weight.device
        q = bnb.nn.Linear4bit(child.in_features, child.out_features, bias=child.bias is not None,
                              compute_dtype=compute_dtype, quant_type=quant_type, compress_statistics=double_quant)
        q.weight = bnb.nn.Params4bit(child.weight.data.to("cpu"), requires_grad=False, quant_type=quant_type,
                                     compress_statistics=double_quant)
        if child.bias is not None:
            q.bias = torch.nn.Parameter(child.bias.data, requires_grad=False)
        setattr(parent, name, q.to(device))  # moving to the device quantizes the weight
        del child
        if device.type == "cuda" and i % 16 == 15:
            torch.cuda.empty_cache()  # hand the freed bf16 blocks back as we go


def _peak_reset(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.reset_peak_memory_stats()


def _peak(device) -> int | None:
    return torch.cuda.max_memory_allocated() if torch.device(device).type == "cuda" else None


def _timed(fn, repeats: int):
    fn()  # warm-up with the same shapes as the timed runs (a static cache compiles per shape)
    runs = sorted((fn() for _ in range(repeats)), key=lambda r: r[1])
    return runs[len(runs) // 2]


def measure_model(model, *, max_new_tokens: int = 64, gamma: int = 4, repeats: int = 3, static: bool = True) -> dict:
    """Weights and peak memory, step latency for 1 and gamma+1 tokens, HF greedy tokens/s with the
    dynamic (and the static) cache."""
    device = model.device
    ids = torch.randint(3, 1000, (1, 16), device=device)
    row = dict(weights_bytes=weight_bytes(model),
               step_1_ms=1e3 * forward_latency(model, 1), step_gamma1_ms=1e3 * forward_latency(model, gamma + 1))
    _peak_reset(device)
    out, secs = _timed(lambda: hf_generate(model, ids, max_new_tokens), repeats)
    row.update(hf_dynamic_tokens_per_s=(out.shape[1] - ids.shape[1]) / secs, peak_bytes_dynamic=_peak(device))
    if static:
        _peak_reset(device)
        out, secs = _timed(lambda: hf_generate(model, ids, max_new_tokens, cache_implementation="static"), repeats)
        row.update(hf_static_tokens_per_s=(out.shape[1] - ids.shape[1]) / secs, peak_bytes_static=_peak(device))
    return row


def measure_pair(draft, target, *, max_new_tokens: int = 64, gamma: int = 4, repeats: int = 3) -> dict:
    """Ours vs HF assisted generation (greedy, constant schedule) on one draft/target pair, plus HF
    greedy without a draft, c from one-token step latencies, and alpha as measured."""
    from .bench import configure_assistant

    ids = torch.randint(3, 1000, (1, 16), device=target.device)
    configure_assistant(draft, gamma)

    def ours():
        _sync(target.device)
        t0 = time.perf_counter()
        res = speculative_generate(target, draft, ids, max_new_tokens=max_new_tokens, gamma=gamma, time_models=False)
        _sync(target.device)
        return res, time.perf_counter() - t0

    greedy, t_greedy = _timed(lambda: hf_generate(target, ids, max_new_tokens), repeats)
    assisted, t_assisted = _timed(lambda: hf_generate(target, ids, max_new_tokens, assistant=draft), repeats)
    res, t_ours = _timed(ours, repeats)
    n = max_new_tokens
    return dict(
        gamma=gamma, max_new_tokens=n, c=forward_latency(draft, 1) / forward_latency(target, 1),
        alpha=res.acceptance_rate, alpha_checked=res.checked_acceptance_rate, tau=res.tokens_per_round,
        tokens_per_s=dict(hf=n / t_greedy, hf_assisted=n / t_assisted, ours_speculative=n / t_ours),
        same_as_hf_greedy=dict(hf_assisted=torch.equal(greedy, assisted), ours_speculative=torch.equal(greedy, res.sequences)),
    )


def _free() -> None:
    """Give memory back after the caller dropped its references (models are GBs on a GPU)."""
    import gc

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _versions() -> dict:
    import platform

    import transformers

    try:
        import bitsandbytes

        bnb = bitsandbytes.__version__
    except Exception:  # not installed, or no library for this platform
        bnb = None
    try:
        gpu_bytes = torch.cuda.get_device_properties(0).total_memory if torch.cuda.is_available() else None
    except (AssertionError, RuntimeError):  # a build without CUDA that was told otherwise (tests fake it)
        gpu_bytes = None
    return dict(torch=torch.__version__, cuda=torch.version.cuda, transformers=transformers.__version__,
                bitsandbytes=bnb, python=platform.python_version(), gpu_memory_bytes=gpu_bytes)


def run(sizes=("2b", "9b", "27b"), quants=(None, "nf4"), pairs=(("2b", "9b"), ("2b", "27b")), *, device=None,
        dtype=None, max_new_tokens: int = 64, gamma: int = 4, repeats: int = 3, overrides: dict | None = None,
        progress: bool = True, on_update=None) -> dict:
    """Everything the module docstring lists (the eager paths); `overrides` shrinks the configurations
    (tests). on_update(result) is called after every row, so a caller can save as it goes."""
    from tqdm.auto import tqdm

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = dtype or (torch.bfloat16 if torch.device(device).type == "cuda" else torch.float32)
    overrides = overrides or {}
    meta = dict(hardware=describe_device(torch.device(device)), device=str(device), dtype=str(dtype), **_versions(),
                date=time.strftime("%Y-%m-%d"), shrunk=bool(overrides), double_quant=DOUBLE_QUANT,
                note="real Gemma2 shapes, random weights: memory and time are real, acceptance is not")
    result = dict(meta=meta, models=[], pairs=[])
    update = on_update or (lambda r: None)
    for size in tqdm(sizes, desc="models", disable=not progress):
        for quant in quants:
            m = random_model(gemma2_config(size, **overrides), device=device, dtype=dtype, quantization=quant)
            row = measure_model(m, max_new_tokens=max_new_tokens, gamma=gamma, repeats=repeats)
            result["models"].append(dict(size=size, quantization=quant, **row))
            update(result)
            del m
            _free()
    for d_size, t_size in tqdm(pairs, desc="pairs", disable=not progress):
        target = random_model(gemma2_config(t_size, **overrides), device=device, dtype=dtype, seed=1)
        draft = random_model(gemma2_config(d_size, **overrides), device=device, dtype=dtype, seed=2)
        kw = dict(max_new_tokens=max_new_tokens, gamma=gamma, repeats=repeats)
        result["pairs"].append(dict(draft=d_size, target=t_size, bracket="alpha~0: independent random draft",
                                    **measure_pair(draft, target, **kw)))
        update(result)
        result["pairs"].append(dict(draft=t_size, target=t_size, bracket="alpha=1: the target drafts for itself",
                                    **measure_pair(target, target, **kw)))
        update(result)
        del target, draft
        _free()
    return result


# ==============================================================================================
# The compiled backend (utils.fast) on real shapes
# ==============================================================================================

# The prompt: one random token. utils.fast.autoregressive_compiled feeds its first step as a view of the
# prompt (strides (T, 1)) and later steps as fresh (1, 1) tensors: dynamo compiles a second width-1 graph
# for every prompt length T > 1 (and outside fast's compile clock). With T = 1 both agree: one graph.
# HF's runs get the same prompt. Every compiled pass of a run uses one cache bucket (check_compiled_args).
PROMPT_LEN = 1
CONTEXT_LEN = 16  # tokens in the cache while single forward passes are timed (compiled_step_ms)
ALPHAS = (0.6, 0.7, 0.8, 0.9)
GOAL_ALPHA = 0.8
GOALS = (
    dict(id="compiled_greedy_vs_bound_9b", model="9b", threshold=0.6,
         goal="compiled greedy >= 60% of the memory-bandwidth bound (9b, bf16)"),
    dict(id="compiled_greedy_vs_bound_27b", model="27b", threshold=0.6,
         goal="compiled greedy >= 60% of the memory-bandwidth bound (27b, bf16)"),
    dict(id="spec_2b_27b_vs_hf_dynamic", pair="2b->27b", baseline="hf_dynamic", threshold=1.8,
         goal=f"2b->27b compiled speculative at alpha {GOAL_ALPHA} >= 1.8x HF greedy (eager, dynamic cache)"),
    dict(id="spec_2b_27b_vs_hf_static", pair="2b->27b", baseline="hf_static", threshold=1.3,
         goal=f"2b->27b compiled speculative at alpha {GOAL_ALPHA} >= 1.3x HF greedy (static cache)"),
    # The aim beyond the floors: where both compiled steps are near their bandwidth bounds, a 2b draft
    # costs about a tenth of a 27b step (the ratio of weight bytes), so at alpha 0.8 a round of gamma 4
    # yields tau(0.8, 4) tokens for about 1.4 target steps: over 2x the compiled plain decoder
    # (notebook 07, section 6, computes it), which, with plain decoding at the 60% floor above, is past
    # what any plain batch-1 decoder can reach (every token reads every weight once).
    dict(id="spec_2b_27b_vs_compiled_greedy", pair="2b->27b", baseline="compiled_greedy", threshold=2.0,
         goal=f"2b->27b compiled speculative at alpha {GOAL_ALPHA} >= 2x our compiled greedy (steady decode)"),
    dict(id="spec_2b_27b_vs_bandwidth_bound", pair="2b->27b", baseline="bandwidth_bound", threshold=1.0,
         goal=f"2b->27b compiled speculative at alpha {GOAL_ALPHA} above the 27b's memory-bandwidth bound "
              "(out of reach of any plain batch-1 decoder)"),
)
DEFINITIONS = {
    "cudagraph_skips": "per step, inductor's messages when a compiled graph ran without CUDA graphs or re-recorded one "
                       "for too many sizes (utils.fast.cudagraph_watch); absent when every graph replayed as one",
    "compile_fallbacks": "per step, where compiling failed and the pass fell back: compiled in pieces after a graph break "
                         "under fullgraph=True, or run eagerly after a compiler failure (exact, slower: "
                         "utils.fast.compile_fallback); absent when every pass compiled as one graph",
    "prompt": f"{PROMPT_LEN} random token(s) for every generation (ours and HF); see PROMPT_LEN in utils/shapes.py",
    "bandwidth_bound_tok_s": "GPU peak bandwidth / weights_bytes: batch-1 decoding reads every weight once per token "
                             "(the output head is tied to the embedding, so weights_bytes is what a step reads)",
    "compiled_tok_s": "compiled greedy (utils.fast.autoregressive_compiled, what backend='compiled' runs), "
                      "max_new_tokens / wall time, prefill included (like the HF figures)",
    "compiled_decode_tok_s": "steady state: extra tokens / extra time between a run of max_new_tokens // 4 and one of "
                             "max_new_tokens (prefill and setup cancel); compiled_vs_bound uses this",
    "step_ms": "one compiled forward pass of that many tokens (32 queued, one sync, median of repeats)",
    "hf_*_tok_s": "HF generate, greedy, median of repeats after a warm-up of the same shape, prefill of a "
                  f"{PROMPT_LEN}-token prompt included",
    "compile_s": "per token width: seconds of the first (compiling) call; never inside any timed figure",
    "round_ms_rejected / round_ms_all_accepted": "one compiled speculative round (gamma width-1 draft steps, the "
        "(gamma+1)-token verify, accept/reject, one host sync, rollback; all-accepted adds the draft step that writes "
        "x_gamma), the real loop with the accepted count forced, (t_long - t_short) / (extra rounds)",
    "at_alpha": "round_ms = (1 - alpha^gamma) * rejected + alpha^gamma * all_accepted (i.i.d. acceptance); "
                "tau = (1 - alpha^(gamma+1)) / (1 - alpha); tok_s = 1000 * tau / round_ms",
    "c": "draft compiled 1-token step / target compiled 1-token step; "
         "v: the target's (gamma+1)-token step / its 1-token step",
    "self_draft": "the target drafting for itself (one model, two engines: fast.engine_for(second=True)), a real run; alpha is 1 in exact arithmetic and the row's alpha is what was measured (in bf16 the width-1 draft pass and the width gamma + 1 verify pass round differently, which can flip a near-tie of random weights' flat logits); predicted_* replay its rounds with the round-time model",
}


def _is_tracked(path: Path) -> bool:
    """Whether git tracks this file (False where there is no git or no repository)."""
    import subprocess

    path = Path(path).resolve()
    if not path.parent.exists():
        return False
    try:
        r = subprocess.run(["git", "ls-files", "--error-unmatch", path.name], cwd=path.parent, capture_output=True,
                           timeout=20)
    except (OSError, subprocess.SubprocessError):
        return False
    return r.returncode == 0


def _label(size, quant) -> str:
    return size if quant is None else f"{size}-{quant}"


def compiled_plan(sizes, quants, pairs, self_draft, gamma, hf_static=True) -> dict:
    """What a compiled run measures, and which shapes it compiles, without loading anything.
    compiled_shapes: utils.fast engines (model, token width); hf_static_compiles: HF generate with a
    static cache, which compiles on CUDA only."""
    rows = [(s, q) for s in sizes for q in quants]
    for t in [t for _, t in pairs] + list(self_draft):
        if (t, None) not in rows:
            rows.append((t, None))
    ours = [f"{_label(s, q)} width 1" for s, q in rows]
    for d, t in pairs:
        ours += [f"{d} width 1", f"{t} width 1", f"{t} width {gamma + 1}"]
    for t in self_draft:
        ours += [f"{t} width 1", f"{t} width {gamma + 1}", f"{t} (self-draft copy) width 1"]
    return dict(models=[dict(size=s, quantization=q) for s, q in rows], pairs=[f"{d}->{t}" for d, t in pairs],
                self_draft=list(self_draft), compiled_shapes=list(dict.fromkeys(ours)),
                hf_static_compiles=[_label(s, q) for s, q in rows] if hf_static else [])


class _Recorder:
    """Holds the result, saves it after every step (atomically), and keeps the time budget: a step
    that would start after it is skipped (and listed), one that fails is recorded (and the run goes on).
    The budget is there to stop new compiles (a minute or two each on a GPU): steps that compile nothing
    (`budgeted=False`: a pair's rounds on graphs compiled before, HF's eager dynamic-cache generate)
    still run after it, so a goal whose compiled inputs were measured gets its value."""

    def __init__(self, result, path, budget_s, log):
        self.result, self.path, self.budget_s, self.log = result, Path(path) if path else None, budget_s, log
        self.t0 = time.monotonic()

    def elapsed(self) -> float:
        return time.monotonic() - self.t0

    def save(self) -> None:
        self.result["meta"]["elapsed_s"] = round(self.elapsed(), 1)
        derive(self.result)
        if self.path:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_name(self.path.name + ".tmp")
            write_json(tmp, self.result)
            os.replace(tmp, self.path)

    def attempt(self, row: dict, name: str, fn, budgeted: bool = True):
        what = f"{_row_label(row)} {name}"
        if budgeted and self.budget_s is not None and self.elapsed() > self.budget_s:
            row.setdefault("skipped", []).append(name)
            self.log(f"[{self.elapsed():6.0f} s] {what}: skipped (time budget {self.budget_s:.0f} s spent)")
            self.save()
            return None
        from .fast import COMPILE_FALLBACKS, cudagraph_watch

        t0 = time.monotonic()
        skips: list[str] = []
        breaks_before = len(COMPILE_FALLBACKS)
        try:
            with cudagraph_watch() as skips:  # on CUDA: any compiled graph that did not run as a CUDA graph
                return fn()
        except Exception as e:  # recorded, not raised: the next step may still work (NF4 + compile, OOM, ...)
            import traceback

            row.setdefault("errors", {})[name] = f"{type(e).__name__}: {e}"[:4000]
            self.log(f"[{self.elapsed():6.0f} s] {what}: FAILED\n{traceback.format_exc(limit=8)}")
            _free()
            return None
        finally:
            if len(COMPILE_FALLBACKS) > breaks_before:  # fell back: every later step that reuses it is slower too
                row.setdefault("compile_fallbacks", {})[name] = COMPILE_FALLBACKS[breaks_before:]
                self.log(f"[{self.elapsed():6.0f} s] {what}: compiling fell back: {COMPILE_FALLBACKS[breaks_before:]}")
            if skips:  # a graph compiled here runs without CUDA graphs in every later step that reuses it
                row.setdefault("cudagraph_skips", {})[name] = skips
                self.log(f"[{self.elapsed():6.0f} s] {what}: CUDA graphs not used: {skips}")
            row.setdefault("step_s", {})[name] = round(time.monotonic() - t0, 2)
            self.log(f"[{self.elapsed():6.0f} s] {what}: {row['step_s'][name]:.1f} s")
            self.save()


def _row_label(row: dict) -> str:
    if "pair" in row:
        return row["pair"]
    if "size" in row:
        return _label(row["size"], row["quantization"])
    return f"self-draft {row.get('model')}"


def _median_by(runs, key):
    return sorted(runs, key=key)[len(runs) // 2]


@torch.inference_mode()
def _engine(model, need: int, compile: bool = True):
    """The model's utils.fast engine, its cache initialised by an eager pass (a 1-token prompt has an
    empty prefill, and a cache must not be created inside a compiled, CUDA-graphed, call)."""
    from . import fast

    eng = fast.engine_for(model, need, compile)
    if not eng.cache.layers[0].is_initialized:
        eng.prefill(torch.randint(3, 1000, (1, CONTEXT_LEN - 1), device=model.device))
    return eng


@torch.inference_mode()
def steady_seconds(call, reset, device, *, iters: int, repeats: int) -> float:
    """Median seconds of one call in steady state: per repeat, reset() (e.g. roll a cache back), then
    `iters` calls queued back to back and one sync; the first repeat is a warm-up (CUDA graphs are
    recorded on a later call than the compiling one)."""
    times = []
    for rep in range(repeats + 1):
        reset()
        _sync(device)
        t0 = time.perf_counter()
        for _ in range(iters):
            call()
        _sync(device)
        if rep:
            times.append((time.perf_counter() - t0) / iters)
    return statistics.median(times)


@torch.inference_mode()
def compiled_step_ms(model, width: int, need: int, *, repeats: int = 3, iters: int = 32, compile: bool = True):
    """Median milliseconds of one compiled forward pass of `width` tokens on the model's engine
    (steady state: `iters` passes queued back to back, one sync), and the seconds its compilation
    took if this call compiled it (else None)."""
    from . import fast

    eng = _engine(model, need, compile)
    start = CONTEXT_LEN - 1
    eng.prefill(torch.randint(3, 1000, (1, start), device=model.device))
    x = torch.randint(3, 1000, (1, width), device=model.device)
    fresh = width not in eng.compile_time
    eng.forward(x)
    compile_s = eng.compile_time[width] if fresh else None
    iters = max(1, min(iters, (eng.max_len - start) // width))
    secs = steady_seconds(lambda: eng.forward(x), lambda: fast.rollback(eng.cache, start), model.device,
                          iters=iters, repeats=repeats)
    return 1e3 * secs, compile_s


def compiled_greedy(model, ids, max_new_tokens: int, need: int, *, repeats: int = 3, compile: bool = True):
    """Compiled greedy decoding (utils.fast.autoregressive_compiled): end-to-end tokens/s (prefill
    included), steady-state tokens/s (difference of a max_new_tokens // 4 and a max_new_tokens run),
    the first call's time (compiles), and the new tokens of the long run."""
    from . import fast

    _engine(model, need, compile)
    n_long, n_short = max_new_tokens, max(1, max_new_tokens // 4)

    def once(n):
        _sync(model.device)
        t0 = time.perf_counter()
        new, stats, _ = fast.autoregressive_compiled(model, ids, n, compile=compile)
        _sync(model.device)
        return time.perf_counter() - t0, stats.compile_time, new

    first, compile_s, _ = once(n_long)
    once(n_short)  # warm-up of the short run too
    longs, shorts = [], []
    for _ in range(repeats):
        shorts.append(once(n_short))
        longs.append(once(n_long))
    t_long, t_short = statistics.median(r[0] for r in longs), statistics.median(r[0] for r in shorts)
    new = _median_by(longs, key=lambda r: r[0])[2]
    steady = (n_long - n_short) / (t_long - t_short) if t_long > t_short and n_long > n_short else None
    return dict(compiled_tok_s=len(new) / t_long, compiled_decode_tok_s=steady,
                compiled_first_call_s=first, compiled_first_call_compile_s=compile_s,
                recompiled_in_timed_runs=any(r[1] > 0 for r in longs + shorts)), new


def hf_rate(model, ids, max_new_tokens: int, *, repeats: int = 3, **kw):
    """HF greedy tokens/s (median of repeats after a warm-up call of the same shape), the warm-up's
    seconds (a static cache compiles there on CUDA), and the median run's output."""
    out, first = hf_generate(model, ids, max_new_tokens, **kw)
    out, secs = _median_by([hf_generate(model, ids, max_new_tokens, **kw) for _ in range(repeats)], key=lambda r: r[1])
    return dict(tok_s=(out.shape[1] - ids.shape[1]) / secs, s=secs, first_call_s=first), out


@contextmanager
def forced_acceptance(n_forced: int):
    """Make the compiled loop accept min(n_forced, k) drafted tokens every round, whatever the models
    say: `utils.fast.speculative_compiled` imports `speculative.accept_reject` at each call, so this
    wraps it (the real rule still runs, at its full cost; only its count is replaced). For timing only."""
    from . import speculative

    real = speculative.accept_reject

    def forced(p, q, draft_tokens, u, k=None):
        n, dist, accept = real(p, q, draft_tokens, u, k)
        k = draft_tokens.shape[0] if k is None else int(k)
        return torch.full_like(n, min(n_forced, k)), dist, accept

    speculative.accept_reject = forced
    try:
        yield
    finally:
        speculative.accept_reject = real


def round_time(target, draft, ids, gamma: int, n_forced: int, *, rounds: int = 24, repeats: int = 3,
               compile: bool = True) -> dict:
    """Steady-state milliseconds of one compiled speculative round with n_forced tokens accepted:
    whole rounds of utils.fast.speculative_compiled (the real loop), timed as (t_long - t_short) /
    (r_long - r_short) so that prefill, setup and the shorter last rounds cancel. max_new_tokens =
    r (n_forced + 1) + gamma - n_forced gives exactly r full rounds of gamma drafted tokens, then the
    same tail in both runs."""
    from . import fast

    m = n_forced
    tokens = lambda r: r * (m + 1) + gamma - m  # noqa: E731
    r_short = 2
    r_long = r_short + rounds
    while r_long > r_short + 1 and ids.shape[1] + tokens(r_long) + gamma + 1 > fast.BUCKET:  # the run's one bucket
        r_long -= 1
    for model in (target, draft):
        _engine(model, ids.shape[1] + tokens(r_long) + gamma + 1, compile)

    def once(r):
        _sync(target.device)
        t0 = time.perf_counter()
        with forced_acceptance(m):
            res, new, stats, *_ = fast.speculative_compiled(target, draft, ids, max_new_tokens=tokens(r), gamma=gamma,
                                                            compile=compile)
        _sync(target.device)
        return time.perf_counter() - t0, stats.compile_time, res

    once(r_short), once(r_long)  # warm-up: compiles what is new, records CUDA graphs
    shorts, longs = [], []
    for _ in range(repeats):
        shorts.append(once(r_short))
        longs.append(once(r_long))
    t_short, t_long = statistics.median(r[0] for r in shorts), statistics.median(r[0] for r in longs)
    if t_long <= t_short:
        raise RuntimeError(f"timing noise: {r_long} rounds took {t_long:.4f} s, {r_short} rounds {t_short:.4f} s; "
                           "raise --rounds or --repeats")
    full = [(len(r.drafted), r.n_accepted) for r in longs[0][2][:r_long]]
    return dict(ms=1e3 * (t_long - t_short) / (r_long - r_short), rounds_short=r_short, rounds_long=r_long,
                full_rounds_as_forced=all(k == gamma and n == m for k, n in full),
                recompiled_in_timed_runs=any(r[1] > 0 for r in shorts + longs))


def implied_rates(alphas, gamma: int, rejected_ms: float, all_accepted_ms: float | None, c=None, v=None,
                  baselines: dict | None = None) -> list[dict]:
    """Tokens/s a compiled round implies at each alpha: tau(alpha, gamma) / E[round time], with the
    round all-accepted with probability alpha^gamma (i.i.d. acceptance); against each baseline
    (tokens/s), and Leviathan's Thm 3.8 with the compiled c and v for comparison."""
    from .theory import expected_speedup, expected_tokens_per_round

    out = []
    for a in alphas:
        tau = expected_tokens_per_round(a, gamma)
        p_all = a**gamma
        round_ms = (1 - p_all) * rejected_ms + p_all * (all_accepted_ms if all_accepted_ms is not None else rejected_ms)
        row = dict(alpha=a, tau=tau, p_all_accepted=p_all, round_ms=round_ms, tok_s=1e3 * tau / round_ms)
        for name, base in (baselines or {}).items():
            row[f"vs_{name}"] = row["tok_s"] / base if base else None
        if c is not None and v is not None:
            row["theory_speedup_vs_compiled_greedy"] = expected_speedup(a, gamma, c, v)
        out.append(row)
    return out


def evaluate_goals(result) -> list[dict]:
    """The goals of the GPU run, read from whatever this result holds (value None: not measured here)."""
    out = []
    for g in GOALS:
        row = dict(id=g["id"], goal=g["goal"], threshold=g["threshold"], value=None, met=None)
        if "model" in g:
            for m in result.get("models", []):
                if m["size"] == g["model"] and m["quantization"] is None and m.get("compiled_vs_bound") is not None:
                    row["value"] = m["compiled_vs_bound"]
        else:
            for p in result.get("pairs", []):
                if p["pair"] == g["pair"]:
                    for a in p.get("at_alpha", []):
                        if a["alpha"] == GOAL_ALPHA and a.get(f"vs_{g['baseline']}") is not None:
                            row["value"] = a[f"vs_{g['baseline']}"]
        if row["value"] is not None:
            row["met"] = bool(row["value"] >= g["threshold"])
        else:
            row["note"] = "not measured in this file"
        out.append(row)
    return out


def _first_mismatch(a: list, b: list) -> int | None:
    n = min(len(a), len(b))
    return next((i for i in range(n) if a[i] != b[i]), None if len(a) == len(b) else n)


def derive(result) -> None:
    """Recompute, in place, every figure derived from the measured ones (ratios, the pairs' implied
    rates against their target's baselines, the goals): called at each save, so a file is consistent
    whichever steps were measured, skipped or failed."""
    meta = result["meta"]
    rows = {(m["size"], m["quantization"]): m for m in result["models"]}
    for m in result["models"]:
        for name in ("hf_dynamic", "hf_static"):
            if m.get(f"{name}_tok_s") and m.get("compiled_tok_s"):
                m[f"compiled_vs_{name}"] = m["compiled_tok_s"] / m[f"{name}_tok_s"]
        draft = rows.get(("2b", m["quantization"]), {})
        if m["size"] != "2b" and draft.get("compiled_step_ms") and m.get("compiled_step_ms"):
            m["c_2b_draft"] = draft["compiled_step_ms"] / m["compiled_step_ms"]
    for p in result["pairs"]:
        target = rows.get((p["target"], None), {})
        if p["draft"] == "2b" and p.get("c") is not None and target:
            target["c_2b_draft"] = p["c"]
        if not p.get("round_ms_rejected"):
            continue
        base = dict(hf_dynamic=target.get("hf_dynamic_tok_s"), hf_static=target.get("hf_static_tok_s"),
                    compiled_greedy=target.get("compiled_decode_tok_s"), bandwidth_bound=target.get("bandwidth_bound_tok_s"))
        p.update(target_hf_dynamic_tok_s=base["hf_dynamic"], target_hf_static_tok_s=base["hf_static"],
                 target_compiled_decode_tok_s=base["compiled_greedy"], target_bandwidth_bound_tok_s=base["bandwidth_bound"])
        p["at_alpha"] = implied_rates(meta["alphas"], p["gamma"], p["round_ms_rejected"],
                                      p.get("round_ms_all_accepted"), p.get("c"), p.get("v"), base)
    for s in result["self_draft"]:
        greedy = rows.get((s["model"], None), {}).get("compiled_decode_tok_s")
        if greedy and s.get("steady_tok_s"):
            s["vs_compiled_greedy"] = s["steady_tok_s"] / greedy
    result["goals"] = evaluate_goals(result)


def run_compiled(sizes=("2b", "9b", "27b"), quants=(None,), pairs=(("2b", "9b"), ("2b", "27b")), self_draft=None, *,
                 device=None, dtype=None, gamma: int = 4, max_new_tokens: int = 64, repeats: int = 3, alphas=ALPHAS,
                 rounds: int = 24, bandwidth: float | None = None, hf_static: bool = True, compile: bool = True,
                 budget_s: float | None = None, path=None, overrides: dict | None = None, argv=None, log=None) -> dict:
    """The compiled backend on real Gemma2 shapes (module docstring). Saves to `path` after every step;
    self_draft=None means every pair's target. Returns the result.

    Order, most needed first (a time budget skips the tail): per model, compiled greedy and HF greedy
    with the dynamic cache, and HF with the static cache unless the model is a pair's target; then the
    pairs; then HF static for the pairs' targets; then the self-drafts."""
    from . import fast

    log = log or (lambda s: print(s, file=sys.stderr, flush=True))
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    cuda = device.type == "cuda"
    dtype = dtype or (torch.bfloat16 if cuda else torch.float32)
    overrides = overrides or {}
    self_draft = list(dict.fromkeys(t for _, t in pairs)) if self_draft is None else list(self_draft)
    alphas = sorted(set(alphas) | {GOAL_ALPHA})
    check_compiled_args(gamma, max_new_tokens)
    need = PROMPT_LEN + max_new_tokens + gamma + 1  # every compiled pass of the run: one engine per model
    hardware = describe_device(device)
    source = "given (--bandwidth-gbs)" if bandwidth else None
    if not bandwidth and cuda:
        bandwidth, source = gpu_bandwidth(hardware)
    plan = compiled_plan(sizes, quants, pairs, self_draft, gamma, hf_static)
    meta = dict(
        what="compiled backend (utils.fast: static cache rolled back in place, torch.compile, one host sync per round)",
        gpu=hardware if cuda else None, hardware=hardware, device=str(device), dtype=str(dtype), **_versions(),
        date=time.strftime("%Y-%m-%d"), started=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        weights="random weights: real Gemma2 shapes (published configs), seeded; "
                "memory and time are real, acceptance is not",
        shrunk=bool(overrides), overrides=overrides or None, double_quant=DOUBLE_QUANT, batch=1, prompt_len=PROMPT_LEN,
        gamma=gamma,
        max_new_tokens=max_new_tokens, repeats=repeats, rounds=rounds, alphas=alphas, compile=compile,
        compile_mode=("reduce-overhead (CUDA graphs)" if cuda else "default (inductor)") if compile
        else "none (eager static cache)",
        hf_static=hf_static, bandwidth_bytes_per_s=bandwidth, bandwidth_source=source, budget_s=budget_s,
        engine_cache_len=-(-need // fast.BUCKET) * fast.BUCKET, argv=list(argv) if argv is not None else None,
        plan=plan, definitions=DEFINITIONS, complete=False, stopped=None,
    )
    result = dict(meta=meta, models=[], pairs=[], self_draft=[], goals=[])
    rec = _Recorder(result, path, budget_s, log)
    rec.save()

    ids = torch.randint(3, 1000, (1, PROMPT_LEN), generator=torch.Generator().manual_seed(0)).to(device)
    seeds = {s: i + 1 for i, s in enumerate(GEMMA2_SHAPES)}
    model_keys = [(m["size"], m["quantization"]) for m in plan["models"]]
    targets = {(t, None) for _, t in pairs}
    steps = ([("model", k) for k in model_keys] + [("pair", p) for p in pairs]
             + [("hf_static", k) for k in model_keys if hf_static and k in targets] + [("self", t) for t in self_draft])
    last_use = {}
    for i, (kind, x) in enumerate(steps):
        for key in [(x[0], None), (x[1], None)] if kind == "pair" else [(x, None)] if kind == "self" else [x]:
            last_use[key] = i
    loaded, step_ms, greedy_out, hf_out, rows = {}, {}, {}, {}, {}

    def get(key):
        if key not in loaded:
            size, quant = key
            t0 = time.monotonic()
            loaded[key] = random_model(gemma2_config(size, **overrides), device=device, dtype=dtype, quantization=quant,
                                       seed=seeds[size])
            log(f"[{rec.elapsed():6.0f} s] loaded {_label(size, quant)} in {time.monotonic() - t0:.1f} s")
        return loaded[key]

    def step(key, width):
        """The model's compiled step of `width` tokens, measured once per run."""
        if (key, width) not in step_ms:
            step_ms[(key, width)] = compiled_step_ms(get(key), width, need, repeats=repeats, compile=compile)[0]
        return step_ms[(key, width)]

    def engine_compile_s(model, second=False):
        eng = fast.engine_for(model, need, compile, second=second)
        return {str(w): round(s, 2) for w, s in sorted(eng.compile_time.items())}

    def load(key, row):
        model = get(key)
        row["weights_bytes"] = weight_bytes(model)
        if bandwidth:
            row["bandwidth_bound_tok_s"] = bandwidth / row["weights_bytes"]
            row["bound_step_ms"] = 1e3 * row["weights_bytes"] / bandwidth

    def compiled(key, row):
        model = get(key)
        if cuda:
            torch.cuda.reset_peak_memory_stats(device)
        r, greedy_out[key] = compiled_greedy(model, ids, max_new_tokens, need, repeats=repeats, compile=compile)
        row.update(r)
        row["compiled_step_ms"] = step(key, 1)
        row["compile_s"] = engine_compile_s(model)
        if cuda:
            row["compiled_peak_bytes"] = torch.cuda.max_memory_allocated(device)
        if row.get("bandwidth_bound_tok_s") and row["compiled_decode_tok_s"]:
            row["compiled_vs_bound"] = row["compiled_decode_tok_s"] / row["bandwidth_bound_tok_s"]
            row["compiled_step_vs_bound"] = row["bound_step_ms"] / row["compiled_step_ms"]

    def hf_dynamic(key, row):
        r, out = hf_rate(get(key), ids, max_new_tokens, repeats=repeats)
        hf_out[key] = out[0, ids.shape[1]:].tolist()
        row.update(hf_dynamic_tok_s=r["tok_s"], hf_dynamic_first_call_s=r["first_call_s"])
        if key in greedy_out:  # bf16 on a GPU may differ (other kernels, near-ties of random logits)
            row["compiled_same_as_hf_greedy"] = greedy_out[key] == hf_out[key]

    def hf_static_(key, row):
        r, _ = hf_rate(get(key), ids, max_new_tokens, repeats=repeats, cache_implementation="static")
        row.update(hf_static_tok_s=r["tok_s"], hf_static_first_call_s=r["first_call_s"],
                   hf_static_compile_s_est=r["first_call_s"] - r["s"])

    def pair_steps(dk, tk, row):
        row["draft_step_ms"], row["target_step_ms"] = step(dk, 1), step(tk, 1)
        row["verify_ms"] = step(tk, gamma + 1)
        row["c"] = row["draft_step_ms"] / row["target_step_ms"]
        row["v"] = row["verify_ms"] / row["target_step_ms"]
        row["round_ms_components"] = gamma * row["draft_step_ms"] + row["verify_ms"]

    def pair_rounds(dk, tk, row):
        for label, m in (("rejected", 0), ("all_accepted", gamma)):
            r = round_time(get(tk), get(dk), ids, gamma, m, rounds=rounds, repeats=repeats, compile=compile)
            row[f"round_ms_{label}"] = r.pop("ms")
            row[f"round_check_{label}"] = r
        row["compile_s"] = dict(draft=engine_compile_s(get(dk)), target=engine_compile_s(get(tk)))

    def self_draft_run(tk, row):
        target = get(tk)
        draft = target  # utils.fast gives a self-drafting model a second engine (its own cache)
        try:
            n = (gamma + 1) * max(1, max_new_tokens // (gamma + 1))  # whole rounds at alpha = 1
            d_ms = compiled_step_ms(draft, 1, need, repeats=repeats, compile=compile)[0]  # initialises its engine
            v_ms = step(tk, gamma + 1)
            row.update(draft_step_ms=d_ms, verify_ms=v_ms, new_tokens=n)

            def once():
                _sync(device)
                t0 = time.perf_counter()
                rs, new, stats, *_ = fast.speculative_compiled(target, draft, ids, max_new_tokens=n, gamma=gamma,
                                                               compile=compile)
                _sync(device)
                return time.perf_counter() - t0, rs, new, stats

            once()  # warm-up
            secs, rs, new, stats = _median_by([once() for _ in range(repeats)], key=lambda r: r[0])
            steady = secs - stats.prefill_time
            drafted = sum(len(r.drafted) for r in rs)
            row.update(tok_s=len(new) / secs, steady_tok_s=len(new) / steady, rounds=len(rs),
                       alpha=sum(r.n_accepted for r in rs) / drafted if drafted else None, tau=len(new) / len(rs),
                       measured_round_ms=1e3 * steady / len(rs), recompiled_in_timed_runs=stats.compile_time > 0)
            forced = round_time(target, draft, ids, gamma, gamma, rounds=rounds, repeats=repeats, compile=compile)
            row["round_ms_all_accepted"] = forced.pop("ms")
            row["round_check_all_accepted"] = forced
            # Replay the run's rounds with the models: a round of k drafted tokens costs the forced
            # all-accepted round less (gamma - k) draft steps, less one more unless the draft wrote x_k
            # (a full acceptance before the last round).
            pred_rounds = pred_comp = 0.0
            for j, r in enumerate(rs):
                k = len(r.drafted)
                extra = int(k > 0 and r.n_accepted == k and j < len(rs) - 1)
                pred_rounds += row["round_ms_all_accepted"] - (gamma - k + 1 - extra) * d_ms
                pred_comp += (k + extra) * d_ms + v_ms
            row.update(predicted_tok_s_rounds=1e3 * len(new) / pred_rounds,
                       predicted_tok_s_components=1e3 * len(new) / pred_comp)
            row["round_model_error"] = row["steady_tok_s"] / row["predicted_tok_s_rounds"] - 1
            row["component_model_error"] = row["steady_tok_s"] / row["predicted_tok_s_components"] - 1
            row["overhead_ms_per_round_beyond_components"] = (1e3 * steady - pred_comp) / len(rs)
            if tk in greedy_out:
                row["same_as_compiled_greedy"] = greedy_out[tk][: len(new)] == new
                row["first_mismatch_compiled_greedy"] = _first_mismatch(greedy_out[tk][: len(new)], new)
            if tk in hf_out:
                row["same_as_hf_greedy"] = hf_out[tk][: len(new)] == new
            row["compile_s"] = dict(draft=engine_compile_s(draft, second=True), target=engine_compile_s(target))
        finally:
            pass  # the second engine goes with the model (fast.clear_engines when it is freed)

    try:
        for i, (kind, x) in enumerate(steps):
            if kind == "model":
                row = rows[x] = dict(size=x[0], quantization=x[1], dtype=str(dtype))
                result["models"].append(row)
                rec.attempt(row, "load", lambda: load(x, row))
                if "weights_bytes" in row:
                    rec.attempt(row, "compiled", lambda: compiled(x, row))
                    rec.attempt(row, "hf_dynamic", lambda: hf_dynamic(x, row), budgeted=False)  # eager: no compile
                    if hf_static and x not in targets:
                        rec.attempt(row, "hf_static", lambda: hf_static_(x, row))
            elif kind == "hf_static":
                row = rows[x]
                if "weights_bytes" in row:
                    rec.attempt(row, "hf_static", lambda: hf_static_(x, row))
            elif kind == "pair":
                dk, tk = (x[0], None), (x[1], None)
                row = dict(pair=f"{x[0]}->{x[1]}", draft=x[0], target=x[1], gamma=gamma, dtype=str(dtype))
                result["pairs"].append(row)
                rec.attempt(row, "compiled_steps", lambda: pair_steps(dk, tk, row))
                if "c" in row:
                    rec.attempt(row, "rounds", lambda: pair_rounds(dk, tk, row), budgeted=False)  # graphs of compiled_steps
            else:
                row = dict(model=x, gamma=gamma, dtype=str(dtype))
                result["self_draft"].append(row)
                rec.attempt(row, "self_draft", lambda: self_draft_run((x, None), row))
            log(json.dumps({k: v for k, v in row.items() if k not in ("step_s", "at_alpha")}))
            for key in [k for k in loaded if last_use.get(k, -1) <= i]:  # free the models no later step uses
                fast.clear_engines(loaded.pop(key))  # engines hold caches: drop them with the model
                _free()
        meta["complete"] = True
    except BaseException as e:  # SIGTERM (a time limit), Ctrl-C: what was measured is saved below
        meta["stopped"] = f"{type(e).__name__}: {e}"
        raise
    finally:
        rec.save()
    return result


def check_compiled_args(gamma: int, max_new_tokens: int) -> None:
    """Every compiled pass of a run must use ONE cache length bucket (utils.fast.BUCKET), or each model
    would compile each width twice."""
    from .fast import BUCKET

    if not isinstance(gamma, int) or gamma < 1:
        raise ValueError(f"gamma must be an integer >= 1 (got {gamma!r})")
    if not isinstance(max_new_tokens, int) or max_new_tokens < max(4, gamma + 1):
        raise ValueError(f"max_new_tokens must be an integer >= max(4, gamma + 1) (a self-draft run needs one whole "
                         f"round; got {max_new_tokens!r} with gamma {gamma})")
    if PROMPT_LEN + max_new_tokens + gamma + 1 > BUCKET:
        raise ValueError(f"max_new_tokens + gamma must be at most {BUCKET - PROMPT_LEN - 1} (the {PROMPT_LEN}-token "
                         f"prompt, the tokens and a verify pass must fit one {BUCKET}-position cache bucket of "
                         f"utils.fast); got {max_new_tokens} + {gamma}")


def _output_path(out: Path, device: str, tag: str, compiled: bool) -> Path:
    stem = "-".join(filter(None, ["shapes", "compiled" if compiled else "", torch.device(device).type, tag]))
    return Path(out) / f"{stem}.json"


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m utils.shapes", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", nargs="*", default=["2b", "9b", "27b"], choices=list(GEMMA2_SHAPES))
    ap.add_argument("--quant", nargs="+", default=None, choices=["none", "nf4", "fp4"],
                    help="default: none nf4 (eager run), none (--compiled)")
    ap.add_argument("--pairs", nargs="*", default=["2b:9b", "2b:27b"], help="draft:target sizes, e.g. 2b:27b")
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--gamma", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default=None, help="cuda or cpu (default: cuda if there is one)")
    ap.add_argument("--out", type=Path, default=LOCAL_RUNS, help="folder for the JSON (default runs/, ignored by git)")
    ap.add_argument("--tag", default="",
                    help="file name suffix, for a run split into parts: shapes[-compiled]-cuda-<tag>.json")
    ap.add_argument("--overwrite", action="store_true", help="replace an earlier result file of the same name")
    ap.add_argument("--force", action="store_true", help="write even over a file git tracks")
    c = ap.add_argument_group("--compiled (the compiled backend, utils.fast)")
    c.add_argument("--compiled", action="store_true", help="measure the compiled backend (see above)")
    c.add_argument("--self-draft", nargs="*", default=None, choices=list(GEMMA2_SHAPES),
                   help="targets that draft for themselves (default: every pair's target; none if given empty)")
    c.add_argument("--alphas", nargs="+", type=float, default=list(ALPHAS),
                   help=f"alphas to imply tokens/s at ({GOAL_ALPHA} is always added)")
    c.add_argument("--rounds", type=int, default=24, help="extra rounds the long timed run has over the short one")
    c.add_argument("--bandwidth-gbs", type=float, default=None, help="GPU bandwidth in GB/s (default: from its name)")
    c.add_argument("--budget-s", type=float, default=None, help="start no step after this many seconds")
    c.add_argument("--no-hf-static", action="store_true", help="skip HF generate, static cache (compiles on CUDA)")
    c.add_argument("--no-compile", action="store_true", help="run the static-cache engine eagerly (plumbing checks)")
    c.add_argument("--dry-run", action="store_true", help="check the flags, print the plan and path, load nothing")
    return ap


def _parse(argv):
    """Parse and check every flag before anything is loaded: a bad one exits with status 2 and a message."""
    import importlib.util

    ap = _parser()
    args = ap.parse_args(argv)
    for name in ("gamma", "repeats", "rounds"):
        if getattr(args, name) < 1:
            ap.error(f"--{name} must be >= 1 (got {getattr(args, name)})")
    if args.max_new_tokens < 1:
        ap.error(f"--max-new-tokens must be >= 1 (got {args.max_new_tokens})")
    pairs = []
    for p in args.pairs:
        parts = p.split(":")
        if len(parts) != 2 or not all(x in GEMMA2_SHAPES for x in parts):
            ap.error(f"--pairs takes draft:target with sizes from {sorted(GEMMA2_SHAPES)} (got {p!r})")
        if parts[0] == parts[1]:
            ap.error(f"--pairs {p}: draft and target are the same size; "
                     f"use --compiled --self-draft {parts[0]} (alpha = 1)")
        pairs.append(tuple(parts))
    args.pair_list = pairs
    if args.tag and not args.tag.replace("-", "").replace("_", "").isalnum():
        ap.error(f"--tag must be letters, digits, - and _ (got {args.tag!r})")
    if args.device is not None:
        try:
            dev = torch.device(args.device)
        except (RuntimeError, ValueError) as e:
            ap.error(f"--device {args.device!r}: {e}")
        if dev.type not in ("cpu", "cuda"):
            ap.error(f"--device must be cuda or cpu (got {args.device!r})")
        if dev.type == "cuda" and not torch.cuda.is_available():
            ap.error(f"--device {args.device}: PyTorch sees no CUDA GPU (torch {torch.__version__}). These are GPU "
                     "measurements: run them on a machine with an NVIDIA GPU (scripts/gpu_run.sh lists the parts), or "
                     "test the command here with --device cpu and small --sizes, or --dry-run to see the plan.")
    args.device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    quants = args.quant or (["none"] if args.compiled else ["none", "nf4"])
    args.quants = [None if q == "none" else q for q in dict.fromkeys(quants)]
    if any(args.quants) and args.sizes and importlib.util.find_spec("bitsandbytes") is None:
        ap.error("--quant nf4/fp4 needs bitsandbytes (pip install bitsandbytes), or pass --quant none")
    compiled_only = dict(self_draft=args.self_draft is not None, alphas=args.alphas != list(ALPHAS),
                         rounds=args.rounds != 24, bandwidth_gbs=args.bandwidth_gbs is not None,
                         budget_s=args.budget_s is not None, no_hf_static=args.no_hf_static,
                         no_compile=args.no_compile, dry_run=args.dry_run)
    if not args.compiled and any(compiled_only.values()):
        flags = ", ".join("--" + k.replace("_", "-") for k, v in compiled_only.items() if v)
        ap.error(f"{flags}: only with --compiled")
    if args.compiled:
        try:
            check_compiled_args(args.gamma, args.max_new_tokens)
        except ValueError as e:
            ap.error(str(e))
        bad = [a for a in args.alphas if not 0 < a <= 1]
        if bad:
            ap.error(f"--alphas must be in (0, 1] (got {bad})")
        for name in ("bandwidth_gbs", "budget_s"):
            value = getattr(args, name)
            if value is not None and not value > 0:
                ap.error(f"--{name.replace('_', '-')} must be > 0 (got {value})")
    if args.device == "cpu" and not args.dry_run:
        used = set(args.sizes) | {x for pr in args.pair_list for x in pr} | set(args.self_draft or [])
        # float32 on a CPU; a pair holds both models at once
        need = max([0] + [4 * param_count(s) for s in used] + [4 * (param_count(d) + param_count(t)) for d, t in args.pair_list])
        free = available_memory_bytes()
        if free is not None and need > 0.9 * free:
            ap.error(f"--device cpu: these shapes need about {need / 2**30:.0f} GiB in float32 and this machine has "
                     f"{free / 2**30:.0f} GiB available. The real Gemma2 shapes are meant for a GPU; on a CPU try "
                     "--sizes 2b --pairs (one 2b model) or --dry-run to see the plan.")
        if need:
            print(f"note: --device cpu with real Gemma2 shapes: about {need / 2**30:.0f} GiB and slow (minutes per "
                  "model); the measurements are meant for a GPU.", file=sys.stderr)
    args.path = _output_path(args.out, args.device, args.tag, args.compiled)
    if not args.dry_run:
        if not args.force and _is_tracked(args.path):
            ap.error(f"{args.path} is tracked by git; pass --tag (or --out) to write elsewhere, or --force to overwrite it")
        check_output(ap, args.path, Path(args.out), args.overwrite or args.force, other="another --tag or --out")
    args.parser = ap  # for main's command_errors: out of GPU memory ends with what to do, not a traceback
    return args


SHAPES_OOM = "measure fewer or smaller shapes (--sizes, --pairs), 4-bit weights (--quant nf4) or a lower --max-new-tokens"


def main(argv=None):
    import signal

    argv = sys.argv[1:] if argv is None else list(argv)
    args = _parse(argv)
    if args.compiled:
        self_draft = list(dict.fromkeys(t for _, t in args.pair_list)) if args.self_draft is None else args.self_draft
        plan = compiled_plan(args.sizes, args.quants, args.pair_list, self_draft, args.gamma, not args.no_hf_static)
        if args.dry_run:
            print(json.dumps(dict(plan, output=str(args.path)), indent=2))
            return None

        def stop(signum, frame):  # `timeout` sends SIGTERM: leave through the savers
            raise SystemExit(128 + signum)

        signal.signal(signal.SIGTERM, stop)
        with command_errors(args.parser, oom=SHAPES_OOM):
            result = run_compiled(args.sizes, args.quants, args.pair_list, self_draft, device=args.device, gamma=args.gamma,
                                  max_new_tokens=args.max_new_tokens, repeats=args.repeats, alphas=args.alphas,
                                  rounds=args.rounds, bandwidth=args.bandwidth_gbs * 1e9 if args.bandwidth_gbs else None,
                                  hf_static=not args.no_hf_static, compile=not args.no_compile, budget_s=args.budget_s,
                                  path=args.path, argv=argv)
        for g in result["goals"]:
            print(json.dumps(g))
        print(f"wrote {args.path}")
        return result

    def save(result):
        args.path.parent.mkdir(parents=True, exist_ok=True)
        write_json(args.path, result)

    with command_errors(args.parser, oom=SHAPES_OOM):
        result = run(args.sizes, args.quants, args.pair_list, device=args.device, max_new_tokens=args.max_new_tokens,
                     gamma=args.gamma, repeats=args.repeats, on_update=save)
    save(result)
    for row in result["models"] + result["pairs"]:
        print(json.dumps(row))
    print(f"wrote {args.path}")
    return result


if __name__ == "__main__":
    main()
