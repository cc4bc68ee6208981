# %% [markdown]
# # 06 · 4-bit quantization: memory, speed and acceptance
#
# Notebook 01 showed that a decode step does too little arithmetic to be bound by it: at best it is
# bound by the bytes of weights it reads. Fewer bytes per weight should then help, and let bigger
# pairs fit smaller GPUs. bitsandbytes stores weights in 4 bits (NF4 or FP4) and de-quantizes them
# on the fly for each matrix multiplication. That cuts the bytes a decode step must read against
# bf16, though by less than 16 / 4 bits suggest (each block of weights also stores a scale, and the embeddings stay
# unquantized: section 2 measures the ratio, the exercise counts the scales), which is why it lets
# big pairs fit small GPUs. Whether it is *faster* depends on the hardware and the kernels, and it
# changes the models' distributions, so it can change the acceptance rate too.
#
# **You will learn**
# - NF4 vs FP4, the compute dtype and double quantization, in a `BitsAndBytesConfig`;
# - memory footprint of the draft and target, full precision against 4-bit, measured;
# - what bitsandbytes really does on the machine you run (on some CPUs it repacks the weights and
#   computes in bf16 whatever compute dtype you asked for);
# - speed, honestly: measured here, beside what the saved bytes could buy at most;
# - acceptance when only the draft, only the target, or both are quantized, and greedy equivalence
#   against the quantized target;
# - which Gemma2 pairs fit a free Colab T4, and only in 4-bit.
#
# **Time to run:** about a minute on a laptop CPU with the tiny pair (bitsandbytes ≥ 0.48 runs NF4 on CPUs).

# %%
# SETUP

# %%
import torch

from utils.models import environment_report, load_pair, load_prompts, quantization_config

PAIR = None  # None: $SPECDEC_PAIR, else "tiny". On a Colab GPU: "smollm2-135m-1.7b" (any GPU), or "gemma2-2b-9b"
# (gated) where its full-precision pair fits beside one 4-bit copy: bf16 on an A100 (section 5 lists what fits)
full = load_pair(PAIR)
print(environment_report(full))

# %% [markdown]
# ## 1. The knobs
#
# A `BitsAndBytesConfig` holds them: the 4-bit type (`bnb_4bit_quant_type`), double quantization
# (`bnb_4bit_use_double_quant`) and the compute dtype (`bnb_4bit_compute_dtype`).

# %%
print(quantization_config("nf4", full.dtype, double_quant=True))

# %% [markdown]
# A 4-bit weight is an index into a code book of 16 codes, scaled by its block's largest magnitude
# (absmax). bitsandbytes has two code books, printed below from the library itself, each with the
# gaps between neighbouring levels. **FP4** is a tiny floating-point format (a sign bit, exponent
# bits and a mantissa bit). Its sign bit gives zero twice (+0 and −0), so its codes hold one
# distinct level fewer than NF4's (the counts below). Its magnitudes times 12 (last line) show the
# pattern: two levels per exponent, each pair twice the one below, so the gaps double towards ±1;
# under them sits a single tiny level next to zero, then a hole about as wide as the gaps halfway
# out to ±1. So FP4 is not finer near zero: apart from that tiny level, a small weight
# rounds as coarsely as one halfway out. **NF4** ("normal float 4", QLoRA) places its levels at
# quantiles of a normal distribution, so that normally distributed weights, as trained weights
# roughly are, use every level about equally often: its gaps are smallest around zero and widest
# near ±1; it has an exact zero and one more positive level than negative ones. QLoRA (Dettmers et
# al., 2023) found NF4 more accurate than FP4.

# %%
import bitsandbytes.functional as bnbf

for kind in ("nf4", "fp4"):
    codes = bnbf.get_4bit_type(kind, device="cpu").tolist()
    levels = sorted(set(codes))
    print(f"{kind.upper()}: {len(codes)} codes, {len(levels)} distinct levels: " + " ".join(f"{v:+.3f}" for v in levels))
    print("     gaps between neighbours: " + " ".join(f"{b - a:.3f}" for a, b in zip(levels, levels[1:])))
fp4_mag = sorted({abs(v) for v in bnbf.get_4bit_type("fp4", device="cpu").tolist()})
print("FP4 magnitudes x 12:", [round(12 * v, 4) for v in fp4_mag])

# %% [markdown]
# Weights are stored per block with one absmax scale each. **Double quantization** also quantizes
# those scales to 8 bits, in blocks of scales that each keep one float32 (QLoRA, section 3). Block sizes
# and dtypes, read from a weight bitsandbytes quantizes with its defaults (what the scales cost per
# weight, with and without double quantization, is the exercise at the end):

# %%
w = torch.randn(1024, 1024)
_, plain = bnbf.quantize_4bit(w, quant_type="nf4")
_, double = bnbf.quantize_4bit(w, quant_type="nf4", compress_statistics=True)
print(f"one {plain.absmax.dtype} scale per block of {plain.blocksize} weights; with double quantization "
      f"{double.absmax.dtype} scales, plus one {double.state2.absmax.dtype} per block of "
      f"{double.state2.blocksize} scales")

# %% [markdown]
# The **compute dtype** is what each block is de-quantized to before the matmul on a GPU: the dtype
# the pair loads in (printed above), bf16 for a Hub pair on a recent GPU, float32 for Gemma2 on a T4
# (which lacks bf16). On a CPU it depends on the CPU: bitsandbytes ≥ 0.49 has a fused CPU kernel
# for processors with AVX512-BF16 that computes in bf16 whatever the config says (section 2 checks
# what it did on this machine; the kernel's source is in the references).

# %% [markdown]
# ## 2. Memory
#
# Hugging Face's `model.get_memory_footprint()` adds up parameters and buffers. A 4-bit weight's
# block scales live in its `quant_state`, which is neither, so that figure leaves them out;
# `utils.models.weight_bytes` adds them back. We count both, as loaded and again after one forward
# pass (bitsandbytes may change the storage on the first pass, see below):

# %%
from utils.models import Variants, bnb_cpu_path, describe_bnb_cpu_path, weight_bytes

variants = Variants(full, {  # each loads when first used; on a GPU only the last one used stays
    "NF4": dict(quantization="nf4"),
    "NF4 + double quant": dict(quantization="nf4", double_quant=True),
    "FP4": dict(quantization="fp4"),
})
ids = full.tokenizer(load_prompts()[0], return_tensors="pt").input_ids.to(full.device)
print(f"{'MiB':20s} {'draft':>8s} {'target':>8s} {'(get_memory_footprint)':>23s}   after one forward pass: {'draft':>6s} {'target':>7s}")
mem, mem_run, cpu_path = {}, {}, {}
for name, pr in variants.items():
    mem[name] = [weight_bytes(m) / 2**20 for m in (pr.draft, pr.target)]
    hf = pr.target.get_memory_footprint() / 2**20
    with torch.inference_mode():
        pr.draft(ids), pr.target(ids)
    mem_run[name], cpu_path[name] = [weight_bytes(m) / 2**20 for m in (pr.draft, pr.target)], bnb_cpu_path(pr.target)
    print(f"{name:20s} {mem[name][0]:8.2f} {mem[name][1]:8.2f} {hf:23.2f} {'':24s} {mem_run[name][0]:6.2f} {mem_run[name][1]:7.2f}")
    del pr  # on a GPU: lets the next variant have this one's memory
bits = torch.finfo(full.dtype).bits
shrink = [f"{v / n:.1f}x for the {r}" for r, v, n in zip(("draft", "target"), mem["full precision"], mem["NF4"])]
print(f"full precision is {str(full.dtype).removeprefix('torch.')}, {bits} bits a weight, {bits / 4:g}x a 4-bit "
      f"weight's; NF4 as loaded is smaller by {' and '.join(shrink)}")
print("NF4 + double quant target:", describe_bnb_cpu_path(cpu_path["NF4 + double quant"]))

# %%
import matplotlib.pyplot as plt
import numpy as np

fig, ax = plt.subplots(figsize=(6.5, 3), layout="constrained")
for k, role in enumerate(("draft", "target")):
    ax.bar(np.arange(len(mem)) + 0.2 * k, [v[k] for v in mem.values()], 0.2, label=f"{role}, as loaded")
    ax.bar(np.arange(len(mem)) + 0.4 + 0.2 * k, [v[k] for v in mem_run.values()], 0.2, label=f"{role}, after a forward pass",
           alpha=0.6, color=f"C{k}", hatch="//")
ax.set_xticks(np.arange(len(mem)) + 0.3, list(mem), fontsize=8)
ax.set(ylabel="MiB", title=f"weight memory, {full.name} pair (scales included), {environment_report(full).splitlines()[1]}")
ax.legend(fontsize=7);

# %% [markdown]
# Less than the ratio of bits you might expect (printed under the table): bitsandbytes leaves the
# embeddings (and the tied output layer) and the norms unquantized, and for a small
# vocabulary-heavy model that is a big share. Double quantization shrinks only the scales: the gap
# between the two NF4 rows as loaded. HF's own figure cannot see that gap, since it counts no scales
# at all. Whether the gap survives the first forward pass depends on the hardware: the last line
# under the table says what bitsandbytes did here. On a CPU with AVX512-BF16 it repacks every 4-bit
# layer for its fused bf16 kernel, which de-quantizes double-quantized scales back and stores every
# scale in bf16: then both NF4 rows end up the same size after the pass, between their two sizes as
# loaded. On a GPU the stored format stays as loaded: `Linear4bit.forward` (bitsandbytes 0.50) repacks
# only when its input is on the CPU (read, not measured here: no GPU run recorded weight bytes after a pass).
# A large model is mostly quantized layers, so 4-bit shrinks nearly all of it (the exercise at the
# end counts the bytes):

# %%
from utils.models import PAIRS

nine_b = PAIRS["gemma2-2b-9b"].target
print(f"gemma-2-9b: {nine_b.params / 1e9:.2f} B parameters, embeddings {nine_b.embed_params / nine_b.params:.0%} "
      "of them, the rest in quantized layers")

# %% [markdown]
# ## 3. Speed, honestly

# %%
from utils.decoding import autoregressive_generate

ids = full.tokenizer(load_prompts()[0], return_tensors="pt").input_ids.to(full.device)
speed = {}
for name in ("full precision", "FP4", "NF4"):  # NF4 last: on a GPU it stays loaded for section 4
    m = variants[name].target
    autoregressive_generate(m, ids, 4)  # warm-up
    speed[name] = max(autoregressive_generate(m, ids, 48).tokens_per_second for _ in range(3))
    print(f"target, {name:15s}: {speed[name]:6.1f} tok/s")
    del m
print(f"[{full.name} target, {environment_report(full).splitlines()[1]}, greedy, 48 new tokens, best of 3]")

# %% [markdown]
# How much could fewer bytes save here? Reading the weights once per step from memory, at the
# bandwidth `utils.decoding.read_bandwidth` measures (notebook 01), against the whole step:

# %%
from utils.decoding import read_bandwidth

bandwidth = read_bandwidth(full.device)
step_ms = {n: 1e3 / speed[n] for n in ("full precision", "NF4")}
read_ms = {n: 1e3 * mem_run[n][1] * 2**20 / bandwidth for n in step_ms}  # the target's MiB, from section 2
saved, extra = read_ms["full precision"] - read_ms["NF4"], step_ms["NF4"] - step_ms["full precision"]
print(f"memory bandwidth {bandwidth / 1e9:.1f} GB/s: reading the target's weights takes {read_ms['full precision']:.2f} ms "
      f"in full precision, {read_ms['NF4']:.2f} ms in NF4, against {step_ms['full precision']:.1f} and {step_ms['NF4']:.1f} ms "
      "per generated token")
print(f"fewer bytes could save at most {saved:.2f} ms per step ({saved / step_ms['full precision']:.0%} of the full-precision step); "
      f"the NF4 step is {abs(extra):.1f} ms {'longer' if extra > 0 else 'shorter'}")

# %% [markdown]
# So the bytes NF4 saves could shorten a step by at most the share printed above, while
# de-quantizing every block is extra work (here in the kernel section 2 named); the tokens/s above
# say which won on this machine. On a
# GPU with a large model fewer bytes per step could help more, but the de-quantization kernels cost
# time too, and fewer bytes help only where reading the weights is what a step waits for. This
# project measured Gemma2 shapes (random weights) on an H200 with Hugging Face's `generate`, greedy,
# at batch size 1, with two caches: the **dynamic** cache (the default) grows by one token per step
# and `generate` runs eagerly, launching each small kernel from Python; with a **static** cache,
# allocated at full length, `generate` compiles the step (transformers' default compile settings ask
# for CUDA graphs; whether they replayed every step that run did not record) (notebooks
# 01 and 07). One catch for your own runs: `generate` compiles no model whose quantizer says it
# cannot be compiled, and bitsandbytes' 4-bit one says so, so a model loaded with
# `BitsAndBytesConfig` decodes *eagerly* even with a static cache. The NF4 rows below were quantized
# in place, without that quantizer, and with double quantization (the second line says how). Each
# bf16 row shows its **bandwidth bound**, the tokens/s of a step that only reads the bf16 weights
# once (notebook 01). The file carries its provenance (its figures were transcribed
# from the run's printed output; its weight sizes are `get_memory_footprint`'s, so its NF4 figures
# leave out the scales, as in section 2):

# %%
from utils.models import ROOT
from utils.overhead import gpu_quantization_report, load_gpu_results

h200 = load_gpu_results(ROOT / "data/results/gpu-h200-2026-11-24.json")
print(gpu_quantization_report(h200))

# %% [markdown]
# The second-to-last line counts the rows where NF4 was slower than bf16; the one before it, how
# much of its bound each bf16 row reached. The file's note overstates one thing: a 2b and a 9b eager
# step do not cost the same (the fourth line gives both ratios); they are far from proportional to
# their bytes, which is what **launch-bound** means: the GPU waits for Python to launch each small
# kernel. Where a step takes many times the time to read its weights, that time goes elsewhere, so
# fewer bytes have little to save, while each 4-bit layer adds work of its own (de-quantizing its
# block, in kernels of its own). The last line turns the tokens/s into milliseconds per step: what
# NF4 *added* to each step, per cache. It is arithmetic on the file, not a measurement of causes
# (the run timed no kernels). One reading it fits, a hypothesis: where NF4 added more with the eager
# dynamic cache than with the compiled static one, part of the extra is launching the extra kernels,
# which compiling removes, and what it still adds when compiled is mostly the 4-bit work itself
# (unless CUDA graphs did not replay there, which the run did not record). The DataCamp tutorial's
# own figures for its "normal inference" are stored with
# their source in `data/results/datacamp-article.json` (the file also says they come from this
# project's notes on the article, not re-read from the page) and printed below, with the ratio
# computed from them:

# %%
import json

article = json.loads((ROOT / "data/results/datacamp-article.json").read_text())
a = article["figures"]
print(f"{article['source']['title']} ({article['source']['date']}), {article['source']['url']}")
print(f"  {a['setup']}: normal inference {a['normal_bf16_s']} s in bf16, {a['normal_4bit_s']} s in 4-bit "
      f"({a['normal_4bit_s'] / a['normal_bf16_s'] - 1:+.0%}); its speculative variant {a['speculative_bf16_s']} s, "
      f"{a['speculative_4bit_s']} s; memory {a['memory_normal_mb']:,} MB 'normal' against {a['memory_4bit_mb']:,} MB in 4-bit")
print(f"  ({a['note']})\n  how the article presents 4-bit, {article['claim']['kind']}: {article['claim']['text']}")

# %% [markdown]
# What 4-bit reliably buys is **memory**.

# %% [markdown]
# ## 4. Acceptance with quantized models
#
# Quantization perturbs a model's distribution. If only one of the two is quantized, $p$ (the
# target's next-token distribution) and $q$ (the draft's) can drift apart or together, or, at temperature 0, not move at all where the perturbation never
# changes an arg max; speculative sampling stays exact with respect to **whatever target you run**,
# so with a quantized target it reproduces the quantized target. The last lines below compare the
# setups pairwise: which quantization moved $\alpha$ here, and which changed nothing.

# %%
from utils.speculative import acceptance_stats

held = load_prompts("heldout")[:6]
setups = {
    "neither": (full.draft, full.target),
    "draft NF4": (variants["NF4"].draft, full.target),
    "target NF4": (full.draft, variants["NF4"].target),
    "both NF4": (variants["NF4"].draft, variants["NF4"].target),
}
eos = full.target.generation_config.eos_token_id  # ours stops where generate stops
stats = {name: acceptance_stats(t, d, full.tokenizer, held, 4, max_new_tokens=40, temperature=0.0, eos_token_id=eos)
         for name, (d, t) in setups.items()}  # counts pooled over the prompts
for name, s in stats.items():
    print(f"{name:12s} greedy: accepted/drafted {s['per_drafted']:.3f}, alpha per checked token {s['alpha']:.3f}")
print(f"[{full.name}, {len(held)} held-out prompts (topics not trained on), gamma=4, 40 new tokens]")
for what, a, b in (("the draft", "neither", "draft NF4"), ("the draft", "target NF4", "both NF4"),
                   ("the target", "neither", "target NF4"), ("the target", "draft NF4", "both NF4")):
    print(f"quantizing {what} ({a} -> {b}): " + ("the same accepted, drafted and rejected counts, alpha unchanged"
          if stats[a]["counts"] == stats[b]["counts"] else f"alpha per checked token {stats[a]['alpha']:.3f} -> {stats[b]['alpha']:.3f}"))

# %%
from utils.models import set_bnb_cpu_bf16, step_block_gap
from utils.speculative import speculative_generate

q_target = variants["NF4"].target
targets = {f"{str(full.target.dtype).split('.')[-1]} target": full.target, "NF4 target, as loaded": q_target}
if bnb_cpu_path(q_target)["repacked"]:  # bitsandbytes took its bf16 CPU kernel: also run the NF4 target without it
    targets["NF4 target, bf16 CPU kernel off"] = load_pair(PAIR, quantization="nf4").target
    set_bnb_cpu_bf16(targets["NF4 target, bf16 CPU kernel off"], False)
xs = [full.tokenizer(p, return_tensors="pt").input_ids.to(full.device) for p in held]
for name, t in targets.items():
    runs = [step_block_gap(t, x, 40) for x in xs]  # (generate's greedy tokens, logit gap)
    spec = [speculative_generate(t, full.draft, x, max_new_tokens=40, gamma=4, eos_token_id=eos) for x in xs]
    same = sum(torch.equal(s.sequences, ref) for s, (ref, _) in zip(spec, runs))
    print(f"{name:32s}: speculative == its own greedy on {same}/{len(held)} prompts; largest logit gap, one-token steps "
          f"vs one pass: {max(g for _, g in runs):.1e}")
print("NF4 target, as loaded:", describe_bnb_cpu_path(bnb_cpu_path(q_target)))

# %% [markdown]
# If a prompt differs, it is not the algorithm (the fp32 pair is identical on every prompt, see
# notebook 03 and the tests). Read the gaps: a model scores a token alone (generate's one-token
# steps) and the same token inside a block of several (the verification pass) with slightly
# different float32 arithmetic, and in float32 the two sets of logits stay a rounding error apart.
# Where bitsandbytes took its fused bf16 CPU kernel (the last line says whether it did here), each
# 4-bit layer rounds its input to bf16, which keeps 8 significant bits (7 stored mantissa bits and
# the implicit leading one; float32 keeps 24): a last-bit difference that lands near a rounding
# boundary becomes a whole bf16 step, and the gap grows by orders of magnitude. Where two tokens
# are nearly tied, the arg max then flips. With that kernel switched off
# (`utils.models.set_bnb_cpu_bf16`, before the first forward pass), the same NF4 weights are
# de-quantized to float32 and the gap falls back to float32's: compare the lines above.
#
# A CPU without AVX512-BF16 never takes that kernel, nor does a GPU; but on a GPU bitsandbytes
# picks its kernel by the input's shape (in 0.48 and 0.49 one token goes through `gemv_4bit` and a
# block is de-quantized, then multiplied by an ordinary matmul; 0.50 chooses among its fused
# kernels and that path by the number of rows and the GPU), and every path computes in the compute
# dtype. Where that is bf16 or float16 (a Hub pair on a Colab GPU: bf16 on an L4 or A100, float16
# for SmolLM2 on a T4), one-token steps and the verification pass round differently, so a near tie
# can flip there too; `set_bnb_cpu_bf16` does not help, it only concerns the CPU kernel. At the
# first differing position of the as-loaded NF4 target:

# %%
tok = full.tokenizer
for p in held:
    x = tok(p, return_tensors="pt").input_ids.to(full.device)
    gen = q_target.generate(x, max_new_tokens=40, do_sample=False, output_scores=True, return_dict_in_generate=True)
    out = speculative_generate(q_target, full.draft, x, max_new_tokens=40, gamma=4, eos_token_id=eos).sequences
    if torch.equal(gen.sequences, out):
        continue
    i = int((gen.sequences[0] != out[0]).nonzero()[0])
    with torch.no_grad():
        block = q_target(out[:, :i]).logits[0, -1]  # the prefix scored in one pass
    for name, lg in (("generate, one token per step", gen.scores[i - x.shape[1]][0]), ("one pass over the prefix", block)):
        v, top = torch.topk(lg.float(), 2)
        print(f"{name:30s} top-2: {tok.decode(top[0])!r} {v[0]:.4f}   {tok.decode(top[1])!r} {v[1]:.4f}")

# %% [markdown]
# ## 5. What fits a Colab GPU
#
# Weights plus 15% for the KV cache and activations, as `load_pair` estimates it before loading
# (it refuses what cannot fit), against the memory a notebook finds free on each usual GPU
# (`utils.models.GPUS`). bf16 where the GPU has it; on a GPU without it (a T4) SmolLM2 runs in
# float16 and Gemma2 in float32 (it overflows in float16), so `memory_fits` checks them there in
# that dtype (marked, with its own figure: in NF4 the embeddings stay in it) and NF4 means float32
# compute for Gemma2.

# %%
from utils.models import GPUS, memory_fits

print("GPUs (GiB free / total): " + ", ".join(f"{g} {free:g}/{total:g}" for g, (free, total, _) in GPUS.items()))
no_bf16 = [g for g, (_, _, bf16) in GPUS.items() if not bf16]
for name in ("smollm2-135m-1.7b", "gemma2-2b-9b", "gemma2-2b-27b"):
    for row in memory_fits(name):
        other = ", ".join(f"{row['by_gpu'][g][1]:.1f} GiB in {row['by_gpu'][g][0]} on a {g}" for g in no_bf16)
        print(f"{name:18s} {row['precision']:5s} {row['gib']:5.1f} GiB on a bf16 GPU, {other}: "
              f"fits {', '.join(row['fits']) or 'none of them'}")

# %% [markdown]
# Read the T4 entries off the lines above: a Gemma2 pair that fits a T4 at all fits only in NF4
# with float32 compute. `load_pair("gemma2-2b-9b", quantization="nf4")` picks float32 there by
# itself.

# %% [markdown]
# ## Try this
# - Compare FP4 and NF4 acceptance in section 4 (replace `variants["NF4"]` by `variants["FP4"]`).
# - Quantize only the draft of a GPU pair: memory barely changes (the target dominates), but does
#   $c$ change?
# - On a Colab GPU with `PAIR = "smollm2-135m-1.7b"`, rerun section 3: is NF4 faster there?

# %% [markdown]
# ## Exercise: what 4 bits cost
#
# Write `nf4_bytes(n_params, double_quant=False)`: the bytes of `n_params` weights stored by
# bitsandbytes in NF4. Each weight takes 4 bits; each block of 64 weights also stores its scale
# (absmax) as a float32. With double quantization those scales are themselves stored in 8 bits,
# plus one float32 per 256 blocks. `check_06` compares your function with that formula and with
# what bitsandbytes really stores for a weight it quantizes, then uses it on gemma-2-9b. The
# reference solution is in `notebooks/solutions/ex06_nf4_memory.py`.

# %%
from utils.exercises import check_06, hint  # stuck? hint("06"), one more hint per call


def nf4_bytes(n_params, double_quant=False):
    """Bytes of n_params 4-bit weights, quantization constants included."""
    raise NotImplementedError("count the bits")


check_06(nf4_bytes)

# %% [markdown]
# What a pass looks like: the reference solution, through the same checker.

# %%
from notebooks.solutions.ex06_nf4_memory import nf4_bytes as reference

check_06(reference)

# %% [markdown]
# The same formula is `utils.models.nf4_bytes`, and `utils.models.estimate_bytes` adds the
# embeddings kept in bf16: the whole of gemma-2-9b, against what `get_memory_footprint` would
# report (no scales, as in section 2):

# %%
from utils.models import estimate_bytes, nf4_bytes

packed = nine_b.embed_params * 2 + (nine_b.params - nine_b.embed_params) / 2  # what get_memory_footprint counts
bf16_b, nf4_b = estimate_bytes(nine_b, torch.bfloat16, None), estimate_bytes(nine_b, torch.bfloat16, "nf4")
print(f"gemma-2-9b: {bf16_b / 1e9:.1f} GB of weights in bf16; in NF4 {nf4_b / 1e9:.2f} GB with the scales "
      f"({estimate_bytes(nine_b, torch.bfloat16, 'nf4', double_quant=True) / 1e9:.2f} GB with double quantization); "
      f"get_memory_footprint would report {packed / 1e9:.2f} GB")
bits4 = 8 * nf4_bytes(1)  # bits per quantized weight, scales included
print(f"NF4 stores {bits4:.2f} bits per quantized weight as quantized (scales included; on a CPU with AVX512-BF16 the "
      "first forward pass repacks them, section 2), double quantization saves "
      f"{bits4 - 8 * nf4_bytes(1, double_quant=True):.3f} of them: {16 / bits4:.1f}x fewer bytes than bf16 in the "
      f"quantized layers, {bf16_b / nf4_b:.1f}x for the whole model")

# %% [markdown]
# ## What you learned
# - A `BitsAndBytesConfig` picks NF4 or FP4, the compute dtype each block is de-quantized to, and
#   double quantization of the block scales.
# - 4-bit weights cost a little over half a byte per parameter, but embeddings and norms stay in
#   full precision, so a small vocabulary-heavy model shrinks far less than 8x against float32.
# - 4-bit buys memory, not necessarily speed: the de-quantization is extra work that the saved
#   bytes must pay for; section 3 measured which won on this machine, and read it from the H200
#   file at batch 1.
# - What bitsandbytes does depends on the hardware: on a CPU with AVX512-BF16 it repacks the
#   weights on the first forward pass, undoes double quantization and computes in bf16 whatever
#   compute dtype was asked for; `utils.models.bnb_cpu_path` tells you what it did.
# - Speculative sampling stays exact with respect to whatever target runs, quantized or not;
#   quantizing the draft can only change $\alpha$ (and the speed), not the output. Whether it moves
#   $\alpha$ at all is measured, not assumed: section 4 prints which quantization moved it here.
#   Greedy equality against the quantized target can fail wherever the 4-bit layers compute in
#   bf16 or float16: in the fused CPU kernel, and on a GPU in a 16-bit compute dtype, where one
#   token and a block of tokens take different kernels.
# - On a T4 a Gemma2 pair fits, if at all, only in NF4 with float32 compute (`memory_fits`).

# %% [markdown]
# ## References
# - Dettmers et al., *QLoRA: Efficient Finetuning of Quantized LLMs*, 2023 (NF4, double
#   quantization): https://arxiv.org/abs/2305.14314
# - Hugging Face transformers, bitsandbytes quantization: https://huggingface.co/docs/transformers/quantization/bitsandbytes
# - bitsandbytes documentation: https://huggingface.co/docs/bitsandbytes; source:
#   https://github.com/bitsandbytes-foundation/bitsandbytes (this notebook's claims read in 0.50.2).
#   The fused AVX512-BF16 CPU kernel arrived in 0.49.0 (pull request #1804,
#   https://github.com/bitsandbytes-foundation/bitsandbytes/pull/1804): `gemv_4bit` in
#   https://github.com/bitsandbytes-foundation/bitsandbytes/blob/0.49.0/bitsandbytes/backends/cpu/ops.py,
#   the repacking in `Linear4bit` (`nn/modules.py`). The GPU paths by input shape: `matmul_4bit` in
#   https://github.com/bitsandbytes-foundation/bitsandbytes/blob/0.48.0/bitsandbytes/autograd/_functions.py
#   (0.48, 0.49) and the `gemm_4bit` dispatch in
#   https://github.com/bitsandbytes-foundation/bitsandbytes/blob/0.50.2/bitsandbytes/backends/cuda/ops.py (0.50.2).
# - Pope et al., *Efficiently Scaling Transformer Inference*, 2022 (weight bytes bound batch-1
#   decoding): https://arxiv.org/abs/2211.05102
# - DataCamp, *Speculative Decoding: A Guide With Implementation Examples*, 2024 (the 4-bit timings
#   quoted in section 3): https://www.datacamp.com/tutorial/speculative-decoding
