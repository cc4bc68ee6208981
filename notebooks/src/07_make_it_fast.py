# %% [markdown]
# # 07 · Make it fast: overhead, static caches, torch.compile and CUDA graphs
#
# Notebooks 01–06 ran every forward pass eagerly: Python calls PyTorch one operator at a time. On a
# big GPU that is why, with Hugging Face's eager `generate`, a 27b model's step costs a small multiple
# of a 2b model's, far below the ratio of the bytes they read (section 1 prints both ratios), and why
# speculative decoding then gains little: the draft costs a large part of what the target costs. This
# notebook measures where an eager step's time goes, removes it piece by piece (a static KV cache,
# `torch.compile`, CUDA graphs), and runs speculative decoding on that fast path (`utils.fast`).
#
# **You will learn**
# - overhead-bound vs bandwidth-bound: the two parts of a decode step, measured on a GPU and here;
# - what a static cache, `torch.compile` and CUDA graphs each remove;
# - how a static cache rolls back a rejected draft: by setting a length, copying nothing;
# - speculative decoding compiled, checked token for token against HF greedy, with $\alpha$ and $c$.
#
# **Time to run:** [WORKSHOP.md](../WORKSHOP.md) gives the committed run's time on a 2-core CPU. Most
# of a first run on a new machine is compiling (sections 3 and 5 print each compile's seconds); later
# runs reuse the kernels PyTorch caches on disk. Compiling on a CPU needs a C++ compiler (`g++` on
# Linux, the Xcode command line tools on macOS, MSVC's `cl` on PATH on Windows); the setup cell says
# whether this machine has one. Without it the engine still runs, exactly, but eagerly: sections 3
# and 5 then say so beside their "compiled" rows, and their committed outputs show what compiling gives.

# %%
# SETUP

# %%
import torch

from utils import fast
from utils.models import describe_device, environment_report, load_pair, load_prompts

PAIR = None  # None: $SPECDEC_PAIR, else "tiny"
pair = load_pair(PAIR)
tok, target, draft = pair.tokenizer, pair.target, pair.draft
hw = describe_device(pair.device)  # for figure titles
print(environment_report(pair))
print(fast.compile_readiness(pair.device) or f"torch.compile found what it needs to compile for {pair.device.type} "
      "(sections 3 and 5 say if it still fell back to eager steps)")

# %% [markdown]
# ## 1. Two floors under every decode step
#
# At batch size 1 a decode step multiplies one token's activations by every weight matrix once.
# Notebook 01 derived its first floor: every weight byte is read once. Eager PyTorch adds a second:
# each operator (a matmul, a norm, a reshape, a softmax...) costs a fixed overhead, whatever its
# size: Python, PyTorch's dispatcher (the C++ layer that picks each operator's kernel for its device
# and dtype), and on a GPU a kernel launch. So
#
# $$t_\text{step} \;\ge\; \max\Big(\underbrace{\frac{\text{weight bytes}}{\text{memory bandwidth}}}_{\text{bandwidth-bound}},\;
# \underbrace{n_\text{ops}\cdot t_\text{op}}_{\text{overhead-bound}}\Big),
# \qquad n_\text{ops} \approx n_\text{layers}\cdot \text{ops per layer}.$$
#
# On a GPU the two parts overlap (the device reads weights while the host prepares the next launches),
# so the larger one sets the pace; on a CPU one core does both, one after the other, so they add up
# and the max is only a lower bound.
#
# The first term grows with the *bytes* of the model, the second with its *number of layers*. A big
# model on a slow GPU sits on the first; a small model anywhere, or a big one on a fast GPU driven
# eagerly, sits on the second. Then $c$, the draft's step over the target's, is not the ratio of
# their sizes but the ratio of their layer counts.
#
# This project measured real Gemma2 shapes on an H200 (random weights: time does not depend on
# their values). The file says where the numbers come from:

# %%
import json

from utils.models import ROOT
from utils.overhead import gpu_label, load_gpu_results

h200 = load_gpu_results(ROOT / "data/results/gpu-h200-2026-11-24.json")
print(json.dumps(h200["provenance"], indent=1))

# %% [markdown]
# The weight bytes and layer counts of the three shapes come from their published configurations
# (counted on PyTorch's `meta` device, nothing allocated); the bandwidth is the one the file's
# bounds assume.

# %%
from utils.overhead import config_weight_bytes, cost_ratio_predictions, gpu_bandwidth, gpu_steps, pair_run_step_ms
from utils.shapes import GEMMA2_SHAPES, gemma2_config

layers = {s: shape["num_hidden_layers"] for s, shape in GEMMA2_SHAPES.items()}
weights = {s: config_weight_bytes(gemma2_config(s)) for s in GEMMA2_SHAPES}  # bf16
bw = gpu_bandwidth(h200)
steps = gpu_steps(h200)
for s in GEMMA2_SHAPES:
    measured = (f"eager step {steps[s]['eager step']:5.1f} ms" if s in steps else
                f"no eager step of its own; HF greedy in its pair run: {pair_run_step_ms(h200, s):.1f} ms per token")
    print(f"gemma-2-{s:3s}: {layers[s]:2d} layers, {weights[s] / 1e9:5.1f} GB bf16, "
          f"bandwidth floor {1e3 * weights[s] / bw:5.2f} ms, {measured}")
print(f"[{gpu_label(h200)}; bandwidth {bw / 1e12:.1f} TB/s]")

# %%
from utils.theory import expected_speedup

pred = cost_ratio_predictions(h200, layers, weights)
for p in pred:
    pair_run = "" if p["source"] == "pair run" else f" (the pair's own run: {p['pair_run']:.3f})"
    print(f"{p['pair']:7s}: c measured {p['measured']:.3f} from the {p['source']}{pair_run} | if bandwidth-bound (bytes) "
          f"{p['bytes']:.3f} | if overhead-bound (layers) {p['layers']:.3f}; the target has {1 / p['bytes']:.1f}x the bytes")
s2, s9 = steps["2b"], steps["9b"]
print(f"eager 2b step = {s2['eager step'] / s2['bandwidth floor']:.0f}x its bandwidth floor, "
      f"9b = {s9['eager step'] / s9['bandwidth floor']:.0f}x")
for p in pred:  # Leviathan et al.'s Thm 3.8 (v = 1) with the measured c, gamma = 4, a perfect draft
    c = p["measured"]
    print(f"{p['pair']}: with c = {c:.3f}, at most {expected_speedup(1.0, 4, c):.2f}x at gamma = 4 even with alpha = 1 "
          f"(tending to 1/c = {1 / c:.2f}x as gamma grows); no gain unless alpha > {c:.3f}")

# %%
from utils.overhead import plot_gpu_overhead

plot_gpu_overhead(steps, pred, gpu_label(h200));

# %% [markdown]
# Eager Gemma2 on this GPU is overhead-bound: the step times sit many times above the bandwidth
# floor, and $c$ lands far above the ratio of bytes, near the ratio of layer counts for 2b → 27b
# and between the two for 2b → 9b. Each $c$ comes from the best the file has: the ratio of two
# models' eager steps where both were timed alone, else the pair's own run. The hatched bars are the
# pair runs: the 2b → 9b one put $c$ above 1 (the 2b step slower than the 9b one), which the separate
# runs contradict. Eager steps on a GPU host vary from run to run, and these figures were transcribed
# from the runs' printed output (the provenance above says so), so read each as one noisy
# measurement. (The middle bars on the left, HF's static cache, are section 3's subject.) The 2b
# draft has a small fraction of 27b's bytes but over half its layers, so its step costs over half a
# target step. With $c$ that high, Leviathan et al.'s speedup (their Thm 3.8, which takes a verify
# pass to cost one step, $v = 1$: the most speculative decoding can hope for, so a fair upper
# bound here)
# $\frac{1-\alpha^{\gamma+1}}{(1-\alpha)(\gamma c+1)} = \frac{1 + \alpha + \dots + \alpha^\gamma}{\gamma c+1}$
# is small even for a perfect draft ($\alpha = 1$), and no draft gains at all unless $\alpha > c$:
# every $\alpha^k \le \alpha$, so the speedup exceeds 1 only if $\gamma\alpha > \gamma c$ (the last
# lines above).

# %% [markdown]
# ## 2. What an eager step costs per layer on this machine
#
# The same question here, measured: eager one-token steps (transformers' `DynamicCache`, after a
# short prompt) of the tiny target and draft, and of random models with the tiny target's layer at
# other layer counts, and at other widths with a fixed layer count. The models take turns, so that
# a machine that slows down for a moment hurts them alike. An operator counter
# (`utils.overhead.OpCounter`, a `TorchDispatchMode`) counts the ATen operators each step runs (ATen
# is PyTorch's C++ operator library: every tensor operation in Python dispatches to one or more of them).

# %%
from transformers import AutoConfig

from utils.overhead import measure_steps, sweep_models

tiny_cfg = AutoConfig.from_pretrained(ROOT / "data/models/tiny-gemma2-target")
prefix = tok(load_prompts("heldout")[0], return_tensors="pt").input_ids.to(pair.device)  # (1, T)
models = {f"{pair.name} target": target, f"{pair.name} draft": draft,
          **sweep_models(tiny_cfg, device=pair.device, dtype=target.dtype)}
rows = measure_steps(models, prefix)  # the models take turns, 5 rounds of 5 steps; each keeps its best round
for r in rows:
    print(f"{r.label:14s} {r.layers:2d} layers, width {r.hidden:4d}: {1e3 * r.seconds:6.2f} ms, "
          f"{r.ops:5d} ATen ops, {r.weight_bytes / 2**20:6.1f} MiB of weights")

# %% [markdown]
# The operator count is exactly $a + b \cdot n_\text{layers}$ (every layer runs the same operators).
# If every operator cost a fixed $t_\text{op}$, the time would be a straight line too, with slope
# $t_\text{op}$ times the operators per layer. Check it: the slope over the small models (1 to 5
# layers) against the slope over the big ones (10 to 20). $t_\text{op}$ is *estimated* from the
# small models' slope, where their weights are fewest; the memory bandwidth is measured by summing a
# tensor far larger than the CPU's caches (whose sizes Linux reports). Both products below are
# estimates, not floors: compare each with the measured step. The slope also holds each layer's
# arithmetic at the tiny target's width, so at narrower widths ops × $t_\text{op}$ can come out above
# the whole measured step (the dashed line in the right panel below): it is an upper estimate of the
# overhead there. And weights that fit in the CPU's last-level cache are not read from memory at
# all, so the bandwidth estimate only applies once they outgrow it.

# %%
from utils.decoding import read_bandwidth
from utils.overhead import cpu_cache_sizes, fit_line, step_estimates

by_layers = [r for r in rows if r.label.endswith(" layers")]
small, big = [r for r in by_layers if r.layers <= 5], [r for r in by_layers if r.layers >= 10]
fit, fit_big = (fit_line([r.layers for r in g], [r.seconds for r in g]) for g in (small, big))
ops_fit = fit_line([r.layers for r in by_layers], [r.ops for r in by_layers])
per_op = fit.b / ops_fit.b  # estimated from the small models
bandwidth = read_bandwidth(pair.device)  # notebook 01's measurement
mib = lambda g: f"{g[0].weight_bytes / 2**20:.1f}-{g[-1].weight_bytes / 2**20:.1f} MiB"  # noqa: E731
print(f"ATen ops = {ops_fit.a:.0f} + {ops_fit.b:.0f} x layers (r2 = {ops_fit.r2:.3f})")
print(f"ms per extra layer: {1e3 * fit.b:.2f} over {small[0].layers}-{small[-1].layers} layers ({mib(small)} of weights, "
      f"r2 = {fit.r2:.3f}), "
      f"{1e3 * fit_big.b:.2f} over {big[0].layers}-{big[-1].layers} layers ({mib(big)}): {fit_big.b / fit.b:.1f}x")
print(f"per-operator overhead, estimated from the small models: {1e6 * per_op:.1f} us; memory bandwidth "
      f"({pair.device.type}) {bandwidth / 1e9:.1f} GB/s; CPU caches: " + (", ".join(f"{k} {v / 2**20:g} MiB" if v >= 2**20 else f"{k} {v / 2**10:g} KiB"
                                for k, v in cpu_cache_sizes().items()) or "not reported"))

# %%
for r in rows[:2]:
    by_bytes, by_ops = step_estimates(r.weight_bytes, bandwidth, r.ops, per_op)
    print(f"{r.label}: measured {1e3 * r.seconds:.2f} ms; estimates: ops x per-op {1e3 * by_ops:.2f} ms "
          f"({by_ops / r.seconds:.0%} of the step), weight bytes / bandwidth {1e3 * by_bytes:.2f} ms ({by_bytes / r.seconds:.0%})")
widths = [r for r in rows if r.label.startswith("width")]
w_small = [r for r in widths if r.hidden <= target.config.hidden_size]
x_bytes, x_time = w_small[-1].weight_bytes / w_small[0].weight_bytes, w_small[-1].seconds / w_small[0].seconds
print(f"at {widths[0].ops} ATen ops ({widths[0].layers} layers): width {w_small[0].hidden} -> {w_small[-1].hidden}, "
      f"{x_bytes:.1f}x the bytes cost {x_time:.1f}x the time; width {widths[0].hidden} -> {widths[-1].hidden}, "
      f"{widths[-1].weight_bytes / widths[0].weight_bytes:.0f}x the bytes cost {widths[-1].seconds / widths[0].seconds:.1f}x the time")
last_level = max(cpu_cache_sizes().items(), key=lambda kv: kv[1], default=None)  # e.g. ("L3", bytes)
if last_level and pair.device.type == "cpu":  # a GPU's weights live in its own memory, not the CPU's caches
    fits = [r.hidden for r in widths if r.weight_bytes <= last_level[1]]
    print("steps at equal operator counts: " + ", ".join(f"width {r.hidden} {1e3 * r.seconds:.2f} ms ({r.weight_bytes / 2**20:.0f} MiB)"
                                                         for r in widths)
          + f"; the weights fit in the {last_level[1] / 2**20:g} MiB {last_level[0]} cache up to width {max(fits, default='-')}, "
          "past that they stream from memory")

# %%
from utils.overhead import plot_layer_sweep

plot_layer_sweep(rows, fit, bandwidth, per_op, f"eager one-token steps, {hw}",
                 fit_range=f"{small[0].layers}-{small[-1].layers} layers",
                 marks={f"{pair.name} target": target.config.hidden_size, f"{pair.name} draft": draft.config.hidden_size});

# %% [markdown]
# What the lines above say, in words (generated from the numbers, which vary from run to run):

# %%
from utils.overhead import sweep_verdicts

print("\n".join(sweep_verdicts(rows[0], rows[1], fit, fit_big, bandwidth, per_op, x_bytes, x_time)))

# %% [markdown]
# Where the fixed cost per operator dominates (eager Gemma2 on the H200, and whichever tiny model
# the last line calls mostly overhead), the fix is not a smaller model but fewer, bigger operators.
# Where the bytes count as well (the lines above say whether they did here), fewer bytes help too.

# %% [markdown]
# ## 3. What a static cache, `torch.compile` and CUDA graphs each remove
#
# - **Static cache.** `DynamicCache` grows each layer's keys and values by concatenation (a new,
#   longer tensor every step). A `StaticCache` allocates `max_len` positions once and writes the new
#   token's keys and values in place; attention reads all positions, masked past the length. On its
#   own it does not make an eager step faster (it runs about as many operators, over more
#   positions); what it buys is **fixed shapes and fixed addresses**, which the next two need.
#   (`utils.fast.static_cache` builds every layer as a plain full-length `StaticLayer`, so that
#   Gemma2's sliding-window layers stay static too; the model's own sliding mask keeps the result
#   exact.)
# - **`torch.compile`** traces the step once into a graph (its tracer, *dynamo*, records the Python
#   code's tensor operations and keeps *guards*, checks on shapes, dtypes and devices that decide when
#   a recorded graph may be reused) and its backend, *inductor*, generates fused kernels: the operators
#   of a layer (counted in section 2) become a few, and the generated code calls those kernels
#   directly, without Python and the dispatcher around every operator (it still calls each fused
#   kernel, and on a GPU launches it). Fixed shapes mean it compiles once per token width.
#   `utils.fast` asks for the whole step as one graph (`fullgraph=True`); where a torch or
#   transformers version breaks it into pieces, or the compiler fails (an old GPU), the engine warns,
#   compiles it in pieces or runs it eagerly, stays exact, and benchmarks record it
#   (`compile_fallbacks`).
# - **CUDA graphs** (GPU only; `mode="reduce-overhead"`) record the compiled step's kernel launches
#   once and replay the whole step with a single launch, so the CPU no longer paces the GPU.

# %% [markdown]
# **Two fixed costs that compiling alone keeps** (a detail of `utils.fast`; skip it on a first
# read). A decoding step's matrix products have one row per token (at most $\gamma+1$), so on a CPU
# each is a thin matrix product (a matrix-vector product at one row), and calling the BLAS library (the tuned linear-algebra routines
# PyTorch hands matrix products to) for it (`aten::mm`) costs more than its arithmetic:
# `utils.fast` has inductor write the products of up to `fast.SMALL_MM_ROWS` rows as fused loops of
# its own (`fast.small_matmuls_as_loops`; the first compile takes longer). And before every call of
# a compiled graph, dynamo checks its guards, one per parameter and cache tensor; once a width is
# compiled, `utils.fast` checks only the ones that tell its graphs apart
# (`torch.compiler.set_stance(skip_guard_eval_unsafe=True)`). That is unsafe in general: a guard
# that would fail goes unchecked and a stale graph runs silently. It is safe here because the
# engine only calls it for a width it compiled itself, with inputs of the same shapes, dtypes and
# devices, and a model cast or moved since gets a new engine; `tests/test_fast.py` checks two models
# of one shape and a third taking turns.
#
# Measured on the target: one-token steps eagerly with each cache, then compiled (the first
# compiled call compiles: its time is reported apart, not mixed into the step).

# %%
from utils.overhead import count_ops, dynamic_cache_step, engine_step, interleaved_seconds

N_CACHE = 256  # positions: the compiled loops below use the same cache length bucket, so they reuse this engine
dyn = dynamic_cache_step(target, prefix)
static_eager = engine_step(fast.engine_for(target, N_CACHE, compile=False), prefix)
compiled_engine = fast.engine_for(target, N_CACHE)
compiled = engine_step(compiled_engine, prefix)
with fast.cudagraph_watch() as skipped:  # on a GPU: inductor's messages if it did not use CUDA graphs
    compiled()  # compiles the one-token step
seconds = interleaved_seconds({"eager, DynamicCache": dyn, "eager, static cache": static_eager, "compiled, static cache": compiled})
step_ms = {name: 1e3 * s for name, s in seconds.items()}
for name, ms in step_ms.items():
    ops = f"{count_ops(dyn if 'Dynamic' in name else static_eager):5d} ATen ops" if name.startswith("eager") else "fused kernels"
    print(f"{name:24s} {ms:6.2f} ms per step ({ops})")
sec2_ms = 1e3 * rows[0].seconds  # section 2 timed the same eager step (target, DynamicCache, same prompt)
eager_ms = sorted((sec2_ms, step_ms["eager, DynamicCache"]))
print(f"the same eager step in section 2: {sec2_ms:.2f} ms ({step_ms['eager, DynamicCache'] / sec2_ms - 1:+.0%} here; "
      "there it took turns with the other models, here with two variants of itself)")
print(f"compiling the one-token step took {compiled_engine.compile_time[1]:.1f} s (once per token width); "
      "compiled = " + " to ".join(dict.fromkeys(f"{e / step_ms['compiled, static cache']:.1f}x" for e in eager_ms))
      + " faster than eager (against the two eager timings)")
if compiled_engine.compile_fallbacks:  # no C++ compiler, or a torch that cannot compile this model whole
    print("NOT fully compiled, so the 'compiled' row is (partly) eager:", *compiled_engine.compile_fallbacks, sep="\n  ")
if pair.device.type == "cuda":
    print("CUDA graphs: " + ("one replayed graph per step" if not skipped else "NOT used, so every launch is paid: " + "; ".join(skipped)))

# %%
from utils.overhead import plot_backend_steps

plot_backend_steps(step_ms, f"{pair.name} target, one-token step, {hw}");

# %% [markdown]
# The compiled step above already has its matrix products as loops. The committed benchmark timed
# both ways, taking turns (`utils.bench.matmul_variants`):

# %%
bench = json.loads((ROOT / "data/results/bench-tiny-cpu-heldout.json").read_text())
for step, v in bench["meta"]["compiled_matmuls"].items():
    print(f"{step.replace('_width_', ', width '):16s} BLAS calls {v['blas_calls_ms']:5.2f} ms -> as loops "
          f"{v['loops_ms']:5.2f} ms ({v['blas_calls_ms'] / v['loops_ms']:.1f}x)")
print(f"[tiny pair, {bench['meta']['hardware']}, {bench['meta']['date']}, torch {bench['meta']['torch']}]")

# %% [markdown]
# How much of the eager step compiling removes here, the "compiled = ...x faster than eager" line
# further up says (a "NOT fully compiled" line under it would mean the row ran eagerly). A CPU has no kernel
# launches to save, so CUDA graphs do not apply; on a GPU they do, and the H200 run shows the
# combined effect: Hugging Face's `generate` with `cache_implementation="static"` compiles the
# forward pass by itself (the file's note; transformers' default compile settings ask for CUDA
# graphs), so "HF static" is HF's compiled path. Whether its CUDA graphs replayed each step or were
# re-recorded (the pitfall on the last line below) that run did not record:

# %%
for m in h200["models"]:
    print(f"gemma-2-{m['model']} {m['dtype']:4s}: HF eager, dynamic cache {m['hf_greedy_dynamic_tok_s']:6.1f} tok/s | "
          f"static cache (compiled by HF) {m['hf_greedy_static_tok_s']:6.1f} tok/s "
          f"({m['hf_greedy_static_tok_s'] / m['hf_greedy_dynamic_tok_s']:.1f}x)"
          + (f" | bandwidth bound {m['bandwidth_bound_tok_s']:.0f} tok/s, {m['bandwidth_bound_tok_s'] / m['hf_greedy_static_tok_s']:.1f}x "
             "above static" if "bandwidth_bound_tok_s" in m else ""))
print(f"[{gpu_label(h200)}]\n{h200['static_cache_note']}")
d2, d9 = (next(m for m in h200["models"] if m["model"] == s and m["dtype"] == "bf16") for s in ("2b", "9b"))
print(f"c(2b/9b) from these runs: eager {s2['eager step'] / s9['eager step']:.2f}, HF static "
      f"{d9['hf_greedy_static_tok_s'] / d2['hf_greedy_static_tok_s']:.2f}; ratio of weight bytes {weights['2b'] / weights['9b']:.2f}")
probe = h200["compiled_probe"]
print(f"a probe outside this project's code, torch.compile on transformers' own Gemma2 StaticCache: 2b step {probe['2b_step_1_ms']} ms, "
      f"{probe['compile_s_per_shape']} s to compile each shape. Why: {probe['why_slow']}")

# %% [markdown]
# Compiled, both shapes step several times faster, yet stay well below their bandwidth
# bounds at batch 1, and $c$ hardly moves: the note says a fixed host cost per token remains, and a
# fixed cost per step weighs on the small model as much as on the big one, just like per-operator
# overhead. For speculative decoding that fixed cost is the enemy: $c$ only falls towards the ratio
# of weight bytes once it is gone. `utils.fast` is built to cut more of it (sampling on the device,
# one host sync per round); section 6 says which of its GPU runs are committed. The last line is the
# other pitfall it avoids: a cache whose length lives in a Python int makes the compiler
# re-specialise, and re-record CUDA graphs, at every step. (That probe changed the model's own
# config, which is exact only below the sliding window; `utils.fast` changes only the cache's layers,
# so the model still masks its window and stays exact at any length, as section 3's first bullet
# says.)

# %% [markdown]
# ## 4. Rolling back by length
#
# After a rejection, the caches must forget the rejected tokens. A `DynamicCache` is cropped (new
# tensors). A static cache only moves its length: every layer's `cumulative_length` is set to the
# number of positions to keep (`fast.rollback(cache, n)` runs `layer.cumulative_length.fill_(n)`).
# The rejected keys and values stay in memory, masked (the attention mask is built from positions),
# until the next write overwrites them. No copy, no reallocation, no new shape: nothing for the
# compiler to re-specialise. Here on the eager static engine: a verify pass over `WIDTH` tokens (the
# last token and `WIDTH - 1` drafted ones), of which the first `KEEP` are kept.

# %%
eng = fast.engine_for(target, N_CACHE, compile=False)
ids = tok(load_prompts("heldout")[1], return_tensors="pt").input_ids.to(pair.device)  # (1, T)
KEEP, WIDTH = 2, 5
with torch.inference_mode():
    eng.prefill(ids[:, :-1])
    prompt_len = fast.cache_length(eng.cache)
    drafted = torch.arange(11, 11 + WIDTH - 1, device=pair.device).view(1, -1)  # any token ids will do
    verify = torch.cat([ids[:, -1:], drafted], 1)  # (1, WIDTH)
    eng.forward(verify)
    before = fast.cache_length(eng.cache)
    fast.rollback(eng.cache, prompt_len + KEEP)
    after = fast.cache_length(eng.cache)
    layer = eng.cache.layers[0]
    stale = [bool(layer.keys[0, :, pos].abs().sum() > 0) for pos in range(after, before)]
print(f"prompt: {prompt_len} positions; after the verify pass of {WIDTH} tokens: {before}; "
      f"after rollback (keep {KEEP} of them): {after}")
print(f"positions {after}..{before - 1} still hold their keys in memory: {stale} (masked, overwritten next)")

# %% [markdown]
# The next pass writes at position `length` and attends only to positions below it: the result is
# the one a cache that never saw the rejected tokens gives.

# %%
# NBVAL_CHECK_OUTPUT
from transformers import DynamicCache

with torch.inference_mode():
    nxt = torch.tensor([[21, 22]], device=pair.device)
    after_rollback = eng.forward(nxt)  # (2, V)
    clean = DynamicCache()
    kept = torch.cat([ids, verify[:, 1 : 1 + KEEP - 1], nxt], 1)  # prompt, kept tokens, next
    fresh = target(input_ids=kept, past_key_values=clean, use_cache=True).logits[0, -2:].float()
tol = 1e-4 if target.dtype == torch.float32 else 5e-2  # float rounding only (bf16 on a GPU rounds more)
print("logits after rollback == logits of a cache that never saw the rejected tokens:",
      torch.allclose(after_rollback, fresh, atol=tol, rtol=tol))

# %%
from utils.overhead import plot_cache_positions

shown = before + 8
plot_cache_positions(prompt_len, KEEP, before - after, shown,
                     title=f"{pair.name} target's static cache after rollback (first {shown} of {eng.max_len} positions)");

# %% [markdown]
# ## 5. Speculative decoding on the fast path
#
# `speculative_generate(..., backend="compiled")` runs the same algorithm on compiled engines with
# fixed shapes: the draft steps one token at a time (width 1), the target verifies
# $[x_\text{last}, x_1..x_\gamma]$ in one pass padded to $\gamma+1$ tokens, the accept/reject rule
# (`accept_reject`, shared with the eager loop) runs on the device, a rejection rolls both caches
# back by length, and the host reads the round's tokens once (one `.tolist()` per round). So three
# shapes compile: the target at widths 1 (plain decoding, above) and $\gamma+1$, the draft at
# width 1. All cost models aside, the race: the held-out prompts, greedy, $\gamma = 4$, the four
# methods taking turns on each prompt after a warm-up run that compiles. "AR" is plain
# autoregressive decoding, eager (notebook 01's loop) or compiled (section 3); `alpha` is per
# *checked* token (accepted / (accepted + rejected)), the $\alpha$ of Leviathan et al.'s Eq. 1,
# $\tau = (1 - \alpha^{\gamma+1}) / (1 - \alpha)$ tokens per round (notebook 03), and Thm 3.8 (notebook 04).

# %%
from utils.overhead import race

GAMMA, N_NEW = 4, 32
prompts = load_prompts("heldout")
with fast.cudagraph_watch() as skipped:
    result = race(pair, prompts, max_new_tokens=N_NEW, gamma=GAMMA)
for m, r in result.items():
    extra = f"  alpha per checked token {r['alpha']:.2f}, c {r['c']:.3f}, tau {r['tau']:.2f}" if "alpha" in r else ""
    print(f"{m:21s} {r['tokens_per_s']:6.1f} tok/s{extra}")
print(f"[{len(prompts)} held-out prompts x {N_NEW} new tokens, greedy, gamma={GAMMA}, {hw}]\n"
      f"compile time, apart: target one-token step {compiled_engine.compile_time[1]:.1f} s (section 3), "
      f"first speculative run {result['compiled speculative']['compile_s']:.1f} s (target width {GAMMA + 1}, draft width 1)")
if pair.device.type == "cuda":
    print("CUDA graphs: " + ("replayed for every width" if not skipped else "NOT used, so every launch is paid: " + "; ".join(skipped)))
if fast.engine_fallbacks(target, draft):  # the "compiled" rows then ran (partly) eagerly
    print("NOT fully compiled:", *fast.engine_fallbacks(target, draft), sep="\n  ")

# %%
# NBVAL_CHECK_OUTPUT
for m, r in result.items():
    print(f"{m}: every output equal to HF greedy: {r['equal_to_hf_greedy']}")
print("one host sync per round (compiled speculative):", result["compiled speculative"]["host_syncs_per_round"] == 1)

# %%
from utils.plots import plot_bars

spec_e, spec_c = result["eager speculative"], result["compiled speculative"]
plot_bars({m: r["tokens_per_s"] for m, r in result.items()}, "tokens / s (compile time excluded)",
          f"{pair.name} on {hw}, {len(prompts)} held-out prompts, gamma={GAMMA}, greedy,\nalpha {spec_c['alpha']:.2f} per "
          f"checked token, c {spec_e['c']:.3f} eager / {spec_c['c']:.3f} compiled (in the loop)");

# %% [markdown]
# Compiling speeds up both models; does it speed up speculative decoding *over compiled plain
# decoding*? That depends on $c$ and $v$ (the target's verify pass in one-token steps) as the
# compiled loop pays them, through Leviathan et al.'s Thm 3.8 with the verify pass's cost $v$ in
# place of the paper's 1, $\tau(\alpha) / (\gamma c + v)$. The prediction takes $\tau$ from $\alpha$;
# the run's own $\tau$ is lower when the last round of a prompt is cut short by `N_NEW`, and its
# $\bar k$ (draft passes per round) differs from $\gamma$: both are printed beside it.

# %%
from utils.bench import moved
from utils.theory import expected_speedup, expected_tokens_per_round

ar_c, ar_e = result["compiled AR"], result["eager AR"]
for kind, ar in (("eager", ar_e), ("compiled", ar_c)):
    s = result[f"{kind} speculative"]
    alone = s["decode_tokens_per_s"] / ar["decode_tokens_per_s"]  # both loops' prefills left out (eager: none)
    print(f"{kind:8s}: alpha {s['alpha']:.2f}, c {s['c']:.3f}, v {s['v']:.2f} -> predicted "
          f"{expected_speedup(s['alpha'], GAMMA, s['c'], s['v']):.2f}x, measured {s['tokens_per_s'] / ar['tokens_per_s']:.2f}x "
          f"over {kind} plain decoding" + (f" ({alone:.2f}x for the decoding alone, both prefills left out)" if s["prefill_s"] else "")
          + f"; tau from alpha {expected_tokens_per_round(s['alpha'], GAMMA):.2f}, measured {s['tau']:.2f}; "
          f"draft passes per round {s['draft_calls_per_round']:.2f} (gamma {GAMMA})")
se, sc = result["eager speculative"], result["compiled speculative"]
gain_e, gain_c = se["tokens_per_s"] / ar_e["tokens_per_s"], sc["tokens_per_s"] / ar_c["tokens_per_s"]
print(f"compiling {moved(se['c'], sc['c'], 3, rel_tol=0.05)} c ({se['c']:.3f} -> {sc['c']:.3f}) and "
      f"{moved(se['v'], sc['v'], 2, rel_tol=0.05)} v "
      f"({se['v']:.2f} -> {sc['v']:.2f}); speculative decoding gained {'less' if gain_c < gain_e else 'more'} over compiled "
      f"plain decoding ({gain_c:.2f}x) than over eager ({gain_e:.2f}x); compiled speculative vs eager plain decoding: "
      f"{sc['tokens_per_s'] / ar_e['tokens_per_s']:.2f}x")
print(f"share of the run inside forward passes: eager speculative {se['forward_share']:.0%}, "
      f"compiled speculative {sc['forward_share']:.0%}")

# %% [markdown]
# The cost model counts forward passes only. Two more things take time. The **prefill**: the compiled
# loops read the prompt before their first step in an eager, uncompiled pass (prompts differ in
# length, so it is not worth a compile), plain decoding through the target, speculative decoding
# through both models; the eager loops read it inside each model's first pass, which $c$ and $v$
# already hold. And the **loop's own work** (sampling, `accept_reject`, concatenations, the host sync,
# rollbacks, Python). Count everything per round, in steps of plain decoding's decoding (its own
# prefill left out, so $c$ and $v$ are the cost model's): $f$ for the speculative loop's prefill,
# $f_\text{plain}$ for plain decoding's, $o$ for the loop's work. A round then costs
# $\bar k c + v + f + o$ steps, where $\bar k$ is the draft passes per round (the drafted tokens,
# plus, in the compiled loop, the pass that writes the last one after a full acceptance; the eager
# loop feeds that token to the next round's first draft pass instead, two tokens in one pass, which
# is why its draft passes per round, printed above, are fewer at the same $\alpha$), and yields $\tau$ tokens, which
# plain decoding makes in $\tau$ steps after its own prefill, so
#
# $$\text{speedup over plain decoding} = \frac{\tau + f_\text{plain}}{\bar k\, c + v + f + o},
# \qquad \text{for the decoding alone (both prefills left out)} = \frac{\tau}{\bar k\, c + v + o}.$$
#
# Both hold exactly for the measured run (they are bookkeeping, not predictions). Where each round's
# time went:

# %%
for kind, ar in (("eager", ar_e), ("compiled", ar_c)):
    s = result[f"{kind} speculative"]
    decode = s["draft_calls_per_round"] * s["c"] + s["v"] + s["o"]
    print(f"{kind:8s}: (tau {s['tau']:.2f} + {s['prefill_plain']:.2f}) / ({s['draft_calls_per_round']:.2f} x {s['c']:.3f} (draft) "
          f"+ {s['v']:.2f} (verify) + {s['prefill']:.2f} (prefill) + {s['o']:.2f} (loop's own work)) "
          f"= {(s['tau'] + s['prefill_plain']) / (decode + s['prefill']):.2f}x; decoding alone {s['tau'] / decode:.2f}x")
verdict = ("faster than" if gain_c > 1.05 else "slower than" if gain_c < 0.95 else "about as fast as")
passes_only = sc["tau"] / (sc["draft_calls_per_round"] * sc["c"] + sc["v"])
cheaper_verify = (f"; with the eager loop's cheaper verify pass (v = {se['v']:.2f}) as well, "
                  f"{sc['tau'] / (sc['draft_calls_per_round'] * sc['c'] + se['v']):.2f}x" if se["v"] < sc["v"] else "")
print(f"In this run compiled speculative decoding ran {verdict} compiled plain decoding ({gain_c:.2f}x end to end, "
      f"{sc['decode_tokens_per_s'] / ar_c['decode_tokens_per_s']:.2f}x for the decoding alone). The prefill took "
      f"{1e3 * sc['prefill_s'] / len(prompts):.1f} ms per prompt through both models, plain decoding's "
      f"{1e3 * ar_c['prefill_s'] / len(prompts):.1f} ms through the target alone: only the difference, the draft's "
      f"prefill, counts against speculative decoding. With only the forward passes counted (no prefill, no loop work) "
      f"it would have been {passes_only:.2f}x{cheaper_verify}.")

# %% [markdown]
# Compiling shrinks every pass, but not every part of a round in proportion. The eager prefill
# does not shrink at all, but plain decoding pays the target's part of it too: only the draft's part
# counts against speculative decoding (the more, the fewer tokens each prompt gets: here `N_NEW`). The
# loop's own work does not shrink either; the lines above show how much of a round it is. And the verify pass over
# $\gamma+1$ tokens shrinks less than the one-token step: eagerly both cost about the same operator
# overhead, but once that overhead is gone the arithmetic of $\gamma+1$ tokens shows (the line
# "compiling ... v" above prints both $v$s),
# and on a CPU the draft's steps just before it have pushed part of the target's weights out of the
# caches (`utils.bench.cold_draft_profile` measures that effect on the draft's side). Nor need $c$
# fall: a compiled step keeps a fixed cost per call (the call into the compiled code, its guards, the
# sampling on the device), which weighs more on the draft's short step than on the target's (the
# "compiling ... c" line above says which way $c$ went in this run). So a round
# compiled on a CPU costs far more plain steps than the $\gamma c + 1$ of the paper's assumption, and
# the gain over compiled plain decoding shrinks, or vanishes, as the lines above show for this run. On
# a GPU with big models the balance should differ: a verify pass of a few tokens reads the same
# weights as a one-token step, so the roofline puts $v$ near 1 (notebook 09 draws it; `gpu_run.sh
# batched-cost` measures it), and $o$ is small beside a pass that reads gigabytes. Read every speedup
# with its $c$, $v$, $f$ and $o$.

# %% [markdown]
# ## 6. On a GPU
#
# The GPU figures come from committed files: the H200 measurements of section 1 (eager and HF's
# static cache) and any `data/results/shapes-*compiled*.json`, made by `python -m utils.shapes
# --compiled` (or the compiled parts of `scripts/gpu_run.sh`) on a GPU. For each such file the second
# cell draws tokens/s per model (compiled greedy beside HF and the bandwidth bound) and, where the file
# measured a draft/target pair's rounds, the tokens/s that pair's compiled round implies at each
# $\alpha$, against the target's own baselines. Random weights have no real $\alpha$, so the x axis reads as "the
# acceptance a real draft would need"; the starred point is the target drafting for itself
# ($\alpha = 1$, measured).

# %%
from utils.overhead import plot_grouped

gpu_tok_s = {f"{m['model']} {m['dtype']}": {"1. HF eager, dynamic cache": m["hf_greedy_dynamic_tok_s"],
                                            "2. HF static cache (compiled)": m["hf_greedy_static_tok_s"],
                                            "3. bandwidth bound": m.get("bandwidth_bound_tok_s", float("nan"))}
             for m in h200["models"]}
plot_grouped(gpu_tok_s, "tokens / s (greedy, batch 1; log scale)", f"Gemma2 shapes: {gpu_label(h200)}", log=True);

# %% [markdown]
# Section 3's lines as a picture: on the log scale, the gap from the static-cache bar up to the
# bandwidth bound is what a decoder with less fixed cost per step could still win at batch 1. The
# NF4 groups have no bound bar: the file has none for them (their step reads fewer bytes but
# de-quantizes every block, notebook 06).

# %%
from utils.overhead import compiled_shapes_rows, plot_compiled_pairs, shapes_label

found = sorted((ROOT / "data/results").glob("shapes-*compiled*.json"))
for path in found:
    res = json.loads(path.read_text())
    plot_grouped(compiled_shapes_rows(res), "tokens / s (log scale)", f"{path.name}: {shapes_label(res)}", log=True)
    plot_compiled_pairs(res)  # per pair: tok/s implied at each alpha against the target's baselines
print(f"{len(found)} compiled GPU shape result(s) in data/results" + ("" if found else ": none committed yet, nothing to plot"))

# %% [markdown]
# What to expect there: eager, the step is overhead-bound and $c$ follows the layer counts
# (section 1). The less fixed cost per step remains, the closer the step gets to the bandwidth floor
# and $c$ to the ratio of weight bytes: that is where Leviathan et al.'s and Chen et al.'s speedups
# come from (drafts far cheaper than their targets). HF's static path on the H200 did not get there
# (section 3); the compiled GPU results above (the cell says whether any are committed) show how far
# `utils.fast` gets.
# gpt-fast combined exactly these pieces (a static cache overwritten in place, `torch.compile` with
# CUDA graphs, speculative decoding) in a few hundred lines.
#
# The solid horizontal line in the pair figure (drawn once a compiled GPU run is committed) is the target's
# bandwidth bound: no plain decoder at batch 1 gets above it, compiled or not, because every token
# reads every weight once. Speculative decoding can, because one verify pass reads the weights once
# for several tokens. How far, if both steps were bandwidth-bound: $c$ is then the ratio of weight
# bytes (section 1), $v = 1$, and Thm 3.8's $\tau / (\gamma c + v)$ is the gain over the compiled
# plain decoder. A GPU run of `python -m utils.shapes --compiled` is judged by the goals printed
# below (`utils.shapes.GOALS`, evaluated in its result file's `goals`): this collection's floors,
# then this aim.

# %%
from utils.shapes import GOAL_ALPHA, GOALS
from utils.theory import expected_speedup, expected_tokens_per_round

c_bytes = next(p["bytes"] for p in pred if p["pair"] == "2b->27b")  # (2b weight bytes) / (27b weight bytes)
aim = expected_speedup(GOAL_ALPHA, 4, c_bytes)  # v = 1
print(f"2b->27b, alpha {GOAL_ALPHA}, gamma 4, c = {c_bytes:.3f} (bytes), v = 1: tau = "
      f"{expected_tokens_per_round(GOAL_ALPHA, 4):.2f} tokens per round, {aim:.2f}x the compiled plain decoder, "
      f"so above the bound wherever that decoder reaches {1 / aim:.0%} of it, if the draft's step is as close to its "
      "own bound (a fixed cost per step raises c towards the layer ratio, section 1)")
print("goals of a GPU run:", *(g["goal"] for g in GOALS), sep="\n  ")

# %% [markdown]
# Whether a step replays as one CUDA graph is decided on the GPU, but its two most common spoilers
# come from the model's code, and `tests/test_fast.py` checks both on a CPU: a tensor the step puts
# on the CPU (found by running the step on PyTorch's shape-only `meta` device), and a tensor it
# writes that is not marked static (found in the graph `torch.compile` hands to inductor).

# %% [markdown]
# ## Try this
# - Set `GAMMA = 8` in section 5 (one more shape compiles): does the compiled race gain more or less
#   than the eager one?
# - Set `N_NEW = 128` in section 5 (the race takes longer): the prefill is paid once per prompt, so
#   $f$ and $f_\text{plain}$ per round shrink, and $\tau$ moves too (the tiny pair's longer
#   continuations are easier or harder to guess). Which changes the compiled gain more?
# - In section 2, pass `widths=(128, 1024, 2048)` to `sweep_models`: where does the width start to
#   matter on your machine, and is it the bandwidth estimate or the arithmetic?
# - Count the operators of the draft and the target with `count_ops`: does $c$ in isolation follow
#   their ratio?
# - Run `torch.set_num_threads(1)` before section 3: which step slows down more, eager or compiled?
# - On a Colab GPU, set `PAIR = "gemma2-2b-9b"` and compare the compiled step with the bandwidth
#   floor printed in section 1. The pair is gated (a Hugging Face token and Gemma's license) and
#   large: `utils.models.memory_fits("gemma2-2b-9b")` says which GPUs hold it in bf16 and in 4-bit
#   (`load_pair(PAIR, quantization="nf4")`, notebook 06). The compiled path is tested on a CPU;
#   section 6 shows which GPU measurements of it are committed; yours can add to them.

# %% [markdown]
# ## Exercise: sampling without a host sync
#
# `torch.multinomial(probs, 1)` draws a correct sample, but on a GPU it makes the host wait for the
# device (gpt-fast's replacement is called `multinomial_sample_one_no_sync`), and one wait per token
# is exactly the fixed cost section 3 warned about. `utils.fast` samples with a race instead. Give
# every token $i$ an independent time $E_i \sim \mathrm{Exp}(1)$ and let it finish at $E_i / p_i$,
# an exponential time with rate $p_i$. The first to finish is token $i$ with probability
# $p_i / \sum_j p_j = p_i$: the winner, $\arg\min_i E_i / p_i = \arg\max_i p_i / E_i$, is a sample
# from $p$. It needs one $\mathrm{Exp}(1)$ draw per vocabulary entry ($V$ per sampled position),
# drawn for a whole round at once (`fast.exp_noise((k + 1, V))`), and an arg max, all on the
# device; with every $E_i = 1$ the
# winner is the arg max, so the same code decodes greedily.
#
# Write `sample_without_sync(probs, noise)`: `probs` and `noise` shaped `(..., V)`, `noise` holding
# $\mathrm{Exp}(1)$ draws; return one token id per distribution, shaped `(...)`, using tensor
# operations only. `check_07` checks the greedy case (`noise` = ones), runs your function on
# PyTorch's `meta` device (tensors with shapes and no values, so anything that reads a value back
# to the host fails there), then draws many tokens from each of three distributions and tests
# their frequencies by chi-square (its output says how many).

# %%
from utils.exercises import check_07, hint  # stuck? hint("07"), one more hint per call


def sample_without_sync(probs, noise):
    """probs, noise: (..., V), noise ~ Exp(1) i.i.d. Return (...) token ids sampled from probs, on the device."""
    raise NotImplementedError  # your code here


check_07(sample_without_sync)

# %% [markdown]
# The reference solution through the same checker:

# %%
from notebooks.solutions.ex07_exponential_race import sample_without_sync as reference

check_07(reference)

# %% [markdown]
# ## What you learned
# - A decode step has two parts, weight bytes / bandwidth and operators × per-operator overhead.
#   Eager Gemma2 on an H200 sits on the second, so $c$ lands far above the ratio of the model
#   sizes (near the layer ratio for 2b → 27b, between the two for 2b → 9b), and even a perfect draft
#   gains at most what section 1 prints. On a CPU the two parts add
#   up, and the per-operator cost is an estimate from a fit, not a floor: section 2 prints how far it
#   explains each tiny model's step.
# - A static cache fixes shapes and addresses; `torch.compile` fuses each layer's operators;
#   CUDA graphs replay a whole step with one launch. HF's static-cache `generate` compiles its
#   forward too (whether its CUDA graphs replayed was not recorded); `utils.fast` is built for it.
# - A static cache rolls back a rejected draft by setting its length: the stale entries are masked
#   and overwritten, nothing is copied, and the result is exact.
# - Sampling stays on the device with the exponential race, $\arg\max_i p_i / E_i$ with
#   $E_i \sim \mathrm{Exp}(1)$: a sample from $p$ without `torch.multinomial`, greedy when every
#   $E_i = 1$; the host reads the tokens once per round.
# - Compiled speculative decoding returns HF greedy's tokens exactly in float32 (in 16 bits, up to
#   near-ties that rounding can flip, as in notebook 03). Whether it beats compiled plain
#   decoding is decided by $\tau$ against $\bar k c + v + o$ for the decoding: $\alpha$ and $c$ as
#   before, the verify pass $v$ and the loop's own work $o$, which weigh more once the passes are
#   short; the eager prefill of the prompt comes on top, on both sides (only the draft's part counts
#   against speculative decoding). Section 5 prints where this run's rounds went and how it came out.
# - No plain decoder at batch 1 beats the bandwidth bound; speculative decoding can, since one verify
#   pass reads the weights once for several tokens (section 6 prints how far for 2b → 27b).

# %% [markdown]
# ## References
# - PyTorch team, *Accelerating Generative AI with PyTorch II: GPT, Fast* (gpt-fast), 2023:
#   https://pytorch.org/blog/accelerating-generative-ai-2/; the code: https://github.com/pytorch-labs/gpt-fast
# - `torch.compile` documentation: https://pytorch.org/docs/stable/generated/torch.compile.html
# - CUDA graphs in PyTorch: https://pytorch.org/docs/stable/notes/cuda.html#cuda-graphs
# - Hugging Face transformers, KV cache strategies (static cache and `torch.compile`):
#   https://huggingface.co/docs/transformers/main/en/kv_cache
# - Leviathan, Kalman, Matias, *Fast Inference from Transformers via Speculative Decoding*, ICML 2023:
#   https://arxiv.org/abs/2211.17192
# - Chen et al., *Accelerating Large Language Model Decoding with Speculative Sampling*, 2023:
#   https://arxiv.org/abs/2302.01318
