# %% [markdown]
# # 01 · Autoregressive decoding, the KV cache, and why decoding is memory-bound
#
# A language model writes one token at a time: every new token needs a full forward pass through
# the model. This notebook writes that loop by hand, makes it fast with a KV cache, and then asks
# what limits its speed. The answer (not the arithmetic: at best, reading the weights from memory)
# is the reason speculative decoding exists.
#
# **You will learn**
# - the decoding loop in six lines, and that it is exactly what `model.generate` does;
# - what a KV cache saves, measured token by token;
# - why a decode step never waits on arithmetic, and is at best bound by memory bandwidth: bytes per
#   token against a GPU's bandwidth.
#
# **Time to run:** about 30 s on a laptop CPU with the tiny pair.

# %%
# SETUP

# %%
import torch

from utils.models import describe_device, environment_report, load_pair, load_prompts

PAIR = None  # None: $SPECDEC_PAIR, else "tiny". On a Colab GPU: "smollm2-135m-1.7b" (ungated, fits a T4), or
# "gemma2-2b-9b" (gated: accept the Gemma license and set HF_TOKEN): in bf16 on an A100; on a T4 or an L4
# load it in 4 bits, load_pair(PAIR, quantization="nf4") (a T4 has no bf16, and in fp32 it does not fit)
pair = load_pair(PAIR)
tok, target = pair.tokenizer, pair.target
print(environment_report(pair))

# %% [markdown]
# ## 1. The loop
#
# Given the tokens so far $x_{1..t}$, the model returns a score (logit) for every token of the
# vocabulary at every position. The last position's scores define the next-token distribution
# $p(\cdot \mid x_{1..t}) = \mathrm{softmax}(z_t / T)$, $z_t$ being the logits at position $t$ and
# $T$ the temperature (below). Greedy decoding takes the arg max;
# sampling draws from it. Append, repeat.
#
# Sampling can first *warp* that distribution. The temperature $T$ divides the logits before the
# softmax: $T < 1$ sharpens the distribution, $T > 1$ flattens it, and $T \to 0$ tends to greedy.
# Top-k keeps only the $k$ likeliest tokens; top-p (nucleus sampling) keeps the smallest set of
# likeliest tokens whose probabilities sum to at least a threshold $p_\text{top}$. The kept tokens' probabilities are then
# renormalized to sum to 1, and every other token gets 0.

# %%
from utils.sampling import eos_set

prompt = load_prompts()[0]
prompt_ids = tok(prompt, return_tensors="pt").input_ids.to(pair.device)  # (1, T): in shape comments T counts tokens
eos = eos_set(pair.target.generation_config.eos_token_id)  # the end-of-sequence token(s): generate stops there
x = prompt_ids
with torch.no_grad():
    for _ in range(30):
        logits = target(x).logits  # (1, T, V): scores for every position
        next_token = logits[0, -1].argmax()  # greedy: the most likely token after the last position
        x = torch.cat([x, next_token.view(1, 1)], dim=1)  # (1, T + 1)
        if next_token.item() in eos:  # the model says the text is over
            break
print(tok.decode(x[0], skip_special_tokens=True))

# %% [markdown]
# That is all `generate` does for one sequence in greedy mode. Check it token for token:

# %%
# NBVAL_CHECK_OUTPUT
ref = target.generate(prompt_ids, max_new_tokens=30, do_sample=False)
print("hand-written loop == model.generate:", torch.equal(ref, x))

# %% [markdown]
# ## 2. The KV cache
#
# The loop above feeds the *whole* sequence every step, so step $t$ recomputes the keys and values
# of all $t$ earlier tokens: the work per token grows with the length. Those keys and values never
# change, so we can keep them (the **KV cache**) and feed only the newest token. `utils` has the
# same loop with a switch, `autoregressive_generate(..., use_cache=...)`, which also times each
# step. `autoregressive_timed` runs it after a short warm-up, several times, and keeps the median
# of each step's times, so that a one-off hiccup of the machine does not show as a spike.

# %%
from utils.decoding import autoregressive_timed

ids = tok(prompt, return_tensors="pt").input_ids.to(pair.device)
N, REPEATS = 120, 3
no_cache = autoregressive_timed(target, ids, N, use_cache=False, repeats=REPEATS)
with_cache = autoregressive_timed(target, ids, N, use_cache=True, repeats=REPEATS)

# %%
# NBVAL_CHECK_OUTPUT
print("same tokens with and without the cache:", torch.equal(no_cache.sequences, with_cache.sequences))

# %% [markdown]
# Both checks compare tokens exactly, and in float32 (the tiny pair loads in float32 on every
# device) they hold. With a larger pair in bf16 or fp16 on a GPU they can print `False` without a bug: a pass over the whole sequence and a one-token
# step on top of a cache run differently shaped kernels that round differently, and where the two
# likeliest tokens are nearly tied the arg max can flip; from there the texts part ways.
# `utils.models.step_block_gap` measures that rounding difference, and notebook 03 (section 2) shows
# how to check a near-tie.

# %%
from utils.plots import plot_step_times

plot_step_times({"no cache (re-reads the prefix)": no_cache.step_times, "KV cache": with_cache.step_times},
                title=f"{pair.name} target on {pair.device}: time per new token");
print(f"no cache: {no_cache.tokens_per_second:.1f} tok/s   KV cache: {with_cache.tokens_per_second:.1f} tok/s   "
      f"({N} new tokens, greedy, {pair.name} target, {describe_device(pair.device)}; "
      f"median of {REPEATS} runs per step, after a warm-up)")

# %% [markdown]
# Without the cache the time per token climbs with the length; with it, it stays nearly flat. Not
# quite free: each cached step still reads the whole cache, one more token's keys and values every
# step, but while the cache is small next to the weights that hardly shows (section 3 puts numbers on
# it for a large model). On a GPU the gap is the same idea: with the cache each step is a *small*
# amount of arithmetic on a *large* amount of memory.

# %% [markdown]
# ## 3. Why a decode step is memory-bound, at best
#
# With the cache, one step multiplies one token's activations by every weight matrix once:
# about $2P$ floating-point operations for $P$ parameters, while reading all $P$ parameters from
# memory ($2P$ bytes in bf16). That is **1 FLOP per byte**. A GPU's datasheet gives its arithmetic
# rate and its memory bandwidth; their ratio is how many FLOPs it must do per byte read to keep its
# arithmetic units busy. For an H100 (figures from NVIDIA's datasheet, cited in the cell):

# %%
# NVIDIA H100 SXM, https://www.nvidia.com/en-us/data-center/h100/ (Specifications): BF16 Tensor Core
# 1,979 TFLOPS *with sparsity* (dense is half of that), GPU memory bandwidth 3.35 TB/s.
H100_SXM = {"bf16_dense_flop_per_s": 1979e12 / 2, "bytes_per_s": 3.35e12}
print(f"H100 SXM: {H100_SXM['bf16_dense_flop_per_s'] / 1e12:.0f} TFLOP/s bf16 (dense), "
      f"{H100_SXM['bytes_per_s'] / 1e12:.2f} TB/s: busy only above "
      f"{H100_SXM['bf16_dense_flop_per_s'] / H100_SXM['bytes_per_s']:.0f} FLOPs per byte read")

# %% [markdown]
# A decode step offers far fewer. So at batch size 1 arithmetic is never the limit: at best the GPU
# waits on memory, and the fastest possible decoding speed is
#
# $$\text{tokens/s} \;\le\; \frac{\text{memory bandwidth (bytes/s)}}{\text{bytes read per token}\;(\text{weight bytes} + \text{KV-cache bytes})}.$$
#
# The table below counts the weights only; the cache comes right after it.

# %%
from utils.decoding import bandwidth_bounds
from utils.models import PAIRS, weight_bytes
from utils.theory import GPU_BANDWIDTH, arithmetic_intensity

nine_b = PAIRS["gemma2-2b-9b"].target
print(f"arithmetic intensity of a bf16 decode step: {arithmetic_intensity(nine_b.params, 2):.1f} FLOP/byte")
print(f"{'gemma-2-9b':12s} " + " ".join(f"{g:>24s}" for g in GPU_BANDWIDTH))
for label, q in (("unquantized", None), ("NF4", "nf4")):  # each GPU: the dtype load_pair picks there
    cells = [f"{r['dtype']} {r['bytes'] / 1e9:4.1f} GB: " + ("no fit" if r["tok_s"] is None else f"{r['tok_s']:.0f} tok/s")
             for r in bandwidth_bounds("gemma2-2b-9b", "target", q).values()]
    print(f"{label:12s} " + " ".join(f"{c:>24s}" for c in cells))

# %% [markdown]
# Each cell gives the dtype `load_pair` picks on that GPU, the weight bytes (estimated from the
# parameter counts: `utils.models.estimate_bytes`) and the bound. The NF4 row is a ceiling that
# reading fewer bytes would allow, not a prediction: a 4-bit layer also de-quantizes its weights
# every step, in kernels of its own, and below, NF4 on an H200 decoded *slower* than bf16 (notebook
# 06 reads those numbers). A T4 has
# no bfloat16, and Gemma2 overflows in float16, so there it loads in float32 (in NF4 too: the parts
# left unquantized, such as the embeddings, stay float32): more bytes to read. "no fit": the weights plus a margin for activations and cache
# (`check_memory`'s estimate) exceed the GPU's memory; there only 4-bit works (notebook 06).
#
# The table counts the weights only. Each cached step also reads the whole KV cache: in every layer,
# a key and a value vector of $d_\text{head}$ numbers per key-value head for every token so far, so
# $2 \cdot n_\text{layers} \cdot n_\text{kv heads} \cdot d_\text{head} \cdot (\text{bytes per number})$
# per token of context. (Gemma 2 alternates two kinds of attention layer: *global* ones attend to
# every earlier token, *sliding-window* ones only to the last $w$ tokens, the config's
# `sliding_window` (printed below); up to $w$ tokens of context both read the whole cache.) For
# gemma-2-9b's shape (its published config, `utils.shapes.gemma2_config`):

# %%
from utils.models import estimate_bytes
from utils.shapes import gemma2_config

cfg9 = gemma2_config("9b")
kv_per_token = 2 * cfg9.num_hidden_layers * cfg9.num_key_value_heads * cfg9.head_dim * 2  # keys + values, bf16
w9 = estimate_bytes(nine_b, torch.bfloat16, None)  # gemma-2-9b's weight bytes in bf16
print(f"KV cache: 2 x {cfg9.num_hidden_layers} layers x {cfg9.num_key_value_heads} KV heads x {cfg9.head_dim} "
      f"x 2 bytes = {kv_per_token / 1e6:.3f} MB per token of context")
kv = kv_per_token * cfg9.sliding_window  # a context as long as Gemma 2's sliding window
print(f"at {cfg9.sliding_window} tokens of context: {kv / 1e9:.2f} GB read per step, {kv / w9:.1%} of the "
      f"{w9 / 1e9:.1f} GB of weights")

# %% [markdown]
# So a cached step costs nearly the same at every position while the cache is small next to the
# weights, and grows with the context once it is not. Real decoders land below these bounds. This
# project measured a gemma-2-9b-shaped model (random weights: speed does not depend on their values)
# with Hugging Face's `generate`, greedy, on an H200, a GPU with more bandwidth than those in the
# table. The results file carries its provenance and the H200's own bound:

# %%
import json

from utils.models import ROOT

h200 = json.loads((ROOT / "data/results/gpu-h200-2026-11-24.json").read_text())
pv = h200["provenance"]
m9 = next(m for m in h200["models"] if m["model"] == "9b" and m["dtype"] == "bf16")
print(f"[{pv['gpu']}, {pv['date']}, torch {pv['torch']}, transformers {pv['transformers']}, batch {pv['batch']}; "
      f"weights: {pv['weights']}]")
print(f"gemma-2-9b shape, bf16, {m9['weights_gb']} GB of weights, HF generate, greedy:")
for label, tps in (("dynamic cache (the default)", m9["hf_greedy_dynamic_tok_s"]),
                   ("static cache (compiled by generate)", m9["hf_greedy_static_tok_s"])):
    print(f"  {label:36s} {tps:6.1f} tok/s  ({tps / m9['bandwidth_bound_tok_s']:.0%} of the bound)")
print(f"  {'bandwidth bound on this GPU':36s} {m9['bandwidth_bound_tok_s']:6.1f} tok/s")
n9 = next(m for m in h200["models"] if m["model"] == "9b" and m["dtype"] == "nf4")
print(f"the same shape in 4 bits ({pv['nf4'].split(' (')[0]}), {n9['weights_gb']} GB: dynamic cache "
      f"{n9['hf_greedy_dynamic_tok_s']:.1f} tok/s, static {n9['hf_greedy_static_tok_s']:.1f} tok/s (notebook 06 reads why)")

# %% [markdown]
# And the arithmetic? One token costs about $2P$ FLOPs; at the GPU's peak rate that takes:

# %%
# NVIDIA H200, https://www.nvidia.com/en-us/data-center/h200/ (Specifications): BF16 Tensor Core 1,979 TFLOPS
# *with sparsity* for the SXM board (dense is half, as for the H100 SXM above). The results file does not
# say SXM or NVL; the NVL board's lower figure (1,671 TFLOPS with sparsity) would raise the shares a little.
H200_BF16_DENSE_FLOP_PER_S = 1979e12 / 2
arithmetic_ms = 1e3 * 2 * nine_b.params / H200_BF16_DENSE_FLOP_PER_S
print(f"arithmetic of one token of gemma-2-9b: 2 x {nine_b.params / 1e9:.2f}e9 FLOPs at "
      f"{H200_BF16_DENSE_FLOP_PER_S / 1e12:.0f} TFLOP/s = {arithmetic_ms:.3f} ms")
for label, tps in (("eager (dynamic cache)", m9["hf_greedy_dynamic_tok_s"]),
                   ("compiled (static cache)", m9["hf_greedy_static_tok_s"])):
    step_ms = 1e3 / tps
    print(f"  measured step, {label:24s} {step_ms:5.1f} ms: the arithmetic is {arithmetic_ms / step_ms:.2%} of it")

# %% [markdown]
# A small fraction of a percent of either step: the arithmetic units wait, whatever else the step
# waits on. With the default dynamic cache, eager `generate` reaches only a small share of the
# bandwidth bound too: at batch size 1 the GPU spends much of each step waiting for the host to
# launch its many small kernels, not reading memory. The static cache's row is much faster, but not
# because of the cache itself: when the cache is static and the model is on a GPU, `generate`
# switches on `torch.compile` by itself (transformers' `_valid_auto_compile_criteria`), and the
# default compile mode, printed below, records CUDA graphs, which replay a whole step's kernels with
# one launch. On a CPU `generate` does not compile, and a static cache alone changes little (this
# repository's CPU benchmark, printed below). Notebook 07 takes these pieces apart.

# %%
from transformers import CompileConfig

print(f"transformers' default CompileConfig mode: {CompileConfig().mode!r} (CUDA graphs on a GPU)")
cpu = json.loads((ROOT / "data/results/bench-tiny-cpu-heldout.json").read_text())
row = cpu["summary"][0]["tokens_per_s"]
print(f"tiny target, HF greedy on a CPU ({cpu['meta']['hardware']}, {cpu['meta']['date']}): dynamic cache "
      f"{row['hf']:.1f} tok/s, static cache {row['hf_static']:.1f} tok/s")

# %% [markdown]
# And the loaded pair? A one-token cached step of each model (medians after a warm-up, the two models
# taking turns: `utils.bench.step_cost_ratio`), and the rate at which that step reads the weights:
# weight bytes / step time, the *effective bandwidth*.

# %%
from utils.bench import step_cost_ratio

steps = step_cost_ratio(pair, ids)  # median ms of a one-token step: draft_step_ms, target_step_ms
measured = {role: (getattr(pair, role), steps[f"{role}_step_ms"]) for role in ("draft", "target")}
for role, (m, ms) in measured.items():
    cfg = m.config.get_text_config()
    print(f"{role:6s}: {cfg.num_hidden_layers:2d} layers of width {cfg.hidden_size}, {weight_bytes(m) / 2**20:7.1f} MiB "
          f"of weights, {ms:6.2f} ms per step: effective bandwidth {weight_bytes(m) / (ms / 1e3) / 1e9:6.2f} GB/s")

# %% [markdown]
# Where does that time go? Dividing the target's step time by its layers would put all of it into a
# "per layer" cost. A line through the two models' points, time $= a + b \cdot \text{layers}$, would
# not tell us more: a line always passes through two points, and the two models differ in width as
# well as in depth (printed above), so two points cannot separate what one more layer costs from what
# a step costs outside its layers. Notebook 07 (section 2) measures it properly, with random models
# built from the tiny target's layer at several layer counts.

# %% [markdown]
# Is that step limited by memory? Compare its effective bandwidth with what this machine's memory
# delivers, measured by summing an array much larger than a CPU's caches (`utils.decoding.read_bandwidth`),
# and, on a GPU from the table above, with the datasheet's bandwidth bound:

# %%
from utils.decoding import datasheet_bandwidth, read_bandwidth

bw, nbytes, ms = read_bandwidth(pair.device), weight_bytes(pair.target), steps["target_step_ms"]
effective = nbytes / (ms / 1e3)
print(f"memory read bandwidth, measured on {describe_device(pair.device)}: {bw / 1e9:.1f} GB/s; the target's step "
      f"reads its weights at {effective / 1e9:.2f} GB/s, {effective / bw:.0%} of it: "
      + ("close to memory-bound" if effective > 0.5 * bw else "not limited by memory bandwidth"))
sheet = datasheet_bandwidth(pair.device)  # (GPU, bytes/s) from the table above; None on a CPU or another GPU
print(f"target: measured {1e3 / ms:.0f} tok/s; bound from the measured bandwidth {bw / nbytes:.0f} tok/s; "
      + ("no GPU here, so no datasheet bound" if pair.device.type != "cuda" else
         "this GPU is not in the datasheet table" if sheet is None else
         f"datasheet bound on {sheet[0]}: {sheet[1] / nbytes:.0f} tok/s"))

# %% [markdown]
# And the tiny pair in this repository's committed CPU benchmark (`data/results/bench-tiny-cpu.json`):
# one-token steps of each model, and the target's pass over 4 drafted tokens + 1 in one-token steps.

# %%
meta = json.loads((ROOT / "data/results/bench-tiny-cpu.json").read_text())["meta"]
for role in ("draft", "target"):
    layers = json.loads((ROOT / f"data/models/tiny-gemma2-{role}/config.json").read_text())["num_hidden_layers"]
    print(f"tiny {role:6s}: {layers:2d} layers, {meta['weights_bytes'][role] / 2**20:5.1f} MiB, "
          f"{meta[f'{role}_step_ms']:5.2f} ms per one-token step")
print(f"target / draft: {meta['target_step_ms'] / meta['draft_step_ms']:.1f}x the time for "
      f"{meta['weights_bytes']['target'] / meta['weights_bytes']['draft']:.1f}x the bytes")
print(f"target pass over 5 tokens = {meta['verify_ratio']['4']:.2f} one-token steps  "
      f"[{meta['hardware']}, {meta['dtype']}, {meta['date']}]")

# %%
# The target's one-token step, measured three ways in this notebook
seen = {f"section 2, 1 / KV-cache tok/s over {N} tokens": 1e3 / with_cache.tokens_per_second,
        "step_cost_ratio, a few cells above": steps["target_step_ms"]}
if pair.name == "tiny":
    seen[f"committed benchmark, {meta['date']}"] = meta["target_step_ms"]
print("target step: " + "; ".join(f"{t:.2f} ms ({k})" for k, t in seen.items()))
print(f"largest / smallest = {max(seen.values()) / min(seen.values()):.2f}: step times move between measurements "
      "on a shared machine, so compare ratios taken in the same call (such as target / draft), not times from "
      "different cells")

# %% [markdown]
# On the CPU this notebook was built on, the tiny target reads its weights at a small fraction of what
# the memory delivers (the verdict a few cells above): bandwidth is not its limit, and the bytes do not
# set its step time either: in the committed step times above, the target's step is a larger multiple
# of the draft's than its weight size is. Run eagerly, a small model pays for each of its many small
# operators, one after the other; notebook 07 (section 2) measures that cost. A large model on a GPU
# run eagerly is held back the same way (the 9B shape's eager run above reaches a small share of its
# bandwidth bound); the bandwidth bound is the ceiling, and only the compiled run gets a sizeable
# share of it (printed there). In every case the arithmetic units sit nearly idle: one decode step
# uses the hardware poorly, and **checking several tokens in one forward pass costs little more than
# generating one** (the last line of the benchmark cell above, in one-token steps). A cheap draft
# model guessing ahead, and the big model checking all the guesses at once, is the idea of the next
# notebooks.

# %% [markdown]
# ## Try this
# - Set `N = 300` (and `REPEATS = 1`, to keep it quick) in section 2: how does the no-cache curve
#   grow, linearly or faster?
# - Time one forward pass of the target over 1, 5 and 9 tokens (with `%timeit`): how much more
#   does checking 8 guessed tokens cost than generating one?
# - Replace `argmax()` in the loop with `torch.multinomial(logits[0, -1].softmax(-1), 1)[0]`.
# - On a Colab GPU, set `PAIR = "smollm2-135m-1.7b"` and compare the measured tok/s with the
#   bandwidth bounds printed for the target at the end of section 3 (the datasheet's, when your GPU is
#   in the table, and the one from the measured bandwidth).

# %% [markdown]
# ## Exercise: the KV-cache loop, by hand
#
# Write `greedy_generate(model, input_ids, max_new_tokens)`: greedy decoding **with a KV cache**,
# returning the prompt (of length $T$, as in the shape comments) followed by the new tokens, shape
# `(1, T + max_new_tokens)`. Feed the prompt
# once, keep the `past_key_values` the model returns, and from then on feed only the newest token.
# `check_01` compares your tokens with `model.generate` on workshop prompts (one of them runs past
# the tiny pair's sliding window) and counts the tokens your loop feeds the model: the prompt once,
# then each new token but the last ($T$ + `max_new_tokens` − 1 in all). A loop that re-feeds the
# sequence, or runs one pass more, gets its tokens confirmed, then fails with a hint.
# (Calling `model.generate` inside it fails too: that is what your loop is compared with.)
#
# Run the cell as it is first: while the function raises `NotImplementedError`, the checker only
# says so. A reference solution is in `notebooks/solutions/ex01_greedy_loop.py`: try first.

# %%
from utils.exercises import check_01, hint  # stuck? hint("01"), one more hint per call


def greedy_generate(model, input_ids, max_new_tokens):
    """input_ids: (1, T) -> (1, T + max_new_tokens), greedy, with a KV cache."""
    # out = model(input_ids=..., past_key_values=..., use_cache=True)
    # out.logits: (1, n, V); out.past_key_values: the cache to pass next time
    raise NotImplementedError("write the loop here")


check_01(greedy_generate, pair)

# %% [markdown]
# What a pass looks like: the reference solution, through the same checker.

# %%
from notebooks.solutions.ex01_greedy_loop import greedy_generate as reference

check_01(reference, pair)

# %% [markdown]
# ## What you learned
# - Decoding is a loop of forward passes: the arg max (or a sample) of the last position's
#   distribution is the next token, and a six-line loop reproduces `model.generate` token for token.
# - The KV cache keeps the keys and values of earlier tokens, so each step feeds one token, and its
#   cost stays nearly flat while the cache is small next to the weights (each step still reads the
#   whole cache); without it every step recomputes the whole prefix.
# - A batch-1 decode step does about one FLOP per byte of weights read, so it never waits on
#   arithmetic: it waits on memory traffic or, run eagerly (even the 9B shape on the H200 above), on
#   running its many small operators one by one (on a GPU, launching their kernels). Memory
#   bandwidth is the ceiling; notebook 07 removes the per-operator overhead.
# - So one pass over several tokens costs little more than a pass over one (measured above in
#   one-token steps): the opening that speculative decoding uses.

# %% [markdown]
# ## References
# - Pope et al., *Efficiently Scaling Transformer Inference*, 2022 (why batch-1 decoding is
#   memory-bound): https://arxiv.org/abs/2211.05102
# - Hugging Face transformers, generation strategies: https://huggingface.co/docs/transformers/generation_strategies
# - Hugging Face transformers, KV cache strategies: https://huggingface.co/docs/transformers/main/en/kv_cache
# - Leviathan, Kalman, Matias, *Fast Inference from Transformers via Speculative Decoding*, ICML 2023
#   (where the next notebooks go): https://arxiv.org/abs/2211.17192
# - GPU data sheets behind the bandwidth and FLOPs figures: NVIDIA H100
#   https://www.nvidia.com/en-us/data-center/h100/, H200 https://www.nvidia.com/en-us/data-center/h200/,
#   A100 https://www.nvidia.com/en-us/data-center/a100/, T4 https://www.nvidia.com/en-us/data-center/tesla-t4/
