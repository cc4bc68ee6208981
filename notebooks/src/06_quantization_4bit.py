# %% [markdown]
# # 06 · 4-bit quantization: memory, speed and acceptance
#
# bitsandbytes stores weights in 4 bits (NF4 or FP4) and de-quantizes them on the fly for each
# matrix multiplication. That cuts the bytes a decode step must read by about 4× against bf16, which
# is why it lets big pairs fit small GPUs. Whether it is *faster* depends on the hardware and the
# kernels, and it changes the models' distributions, so it can change the acceptance rate too.
#
# **You will learn**
# - NF4 vs FP4, the compute dtype and double quantization, in a `BitsAndBytesConfig`;
# - memory footprint of the draft and target, full precision against 4-bit, measured;
# - speed, honestly (on this CPU 4-bit is slower: the de-quantization is extra work);
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

PAIR = None  # None: $SPECDEC_PAIR, else "tiny"
full = load_pair(PAIR)
print(environment_report(full))

# %% [markdown]
# ## 1. The knobs
#
# NF4 ("normal float 4") places its 16 levels at the quantiles of a normal distribution, which fits
# trained weights better than FP4's evenly spaced exponent/mantissa levels. Weights are stored per
# block of 64 with one scale each; **double quantization** also quantizes those scales (≈0.37 bits
# per parameter saved). The **compute dtype** is what each block is de-quantized to before the
# matmul: bf16 on recent GPUs, float32 on CPUs (and for Gemma2 on a T4, which lacks bf16).

# %%
print(quantization_config("nf4", full.dtype, double_quant=True))

# %% [markdown]
# ## 2. Memory

# %%
variants = {
    "full precision": full,
    "NF4": load_pair(PAIR, quantization="nf4"),
    "NF4 + double quant": load_pair(PAIR, quantization="nf4", double_quant=True),
    "FP4": load_pair(PAIR, quantization="fp4"),
}
print(f"{'':20s} {'draft MiB':>10s} {'target MiB':>11s}")
mem = {}
for name, pr in variants.items():
    mem[name] = [m.get_memory_footprint() / 2**20 for m in (pr.draft, pr.target)]
    print(f"{name:20s} {mem[name][0]:10.2f} {mem[name][1]:11.2f}")

# %%
import matplotlib.pyplot as plt
import numpy as np

fig, ax = plt.subplots(figsize=(6, 3), layout="constrained")
for k, role in enumerate(("draft", "target")):
    ax.bar(np.arange(len(mem)) + 0.4 * k, [v[k] for v in mem.values()], 0.4, label=role)
ax.set_xticks(np.arange(len(mem)) + 0.2, list(mem), fontsize=8)
ax.set(ylabel="MiB", title=f"weight memory, {full.name} pair (get_memory_footprint)")
ax.legend();

# %% [markdown]
# Less than the 8× you might expect from 32 → 4 bits: bitsandbytes leaves the embeddings (and the
# tied output layer) and the norms unquantized, and for a small vocabulary-heavy model that is a big
# share. These models have too few blocks for double quantization's saving on the scales to show. For gemma-2-9b the embeddings are 10% of the parameters, so NF4 takes it from 18.5 GB
# (bf16) to about 6 GB (section 5 computes it).
#
# ## 3. Speed, honestly

# %%
from utils.decoding import autoregressive_generate

ids = full.tokenizer(load_prompts()[0], return_tensors="pt").input_ids.to(full.device)
speed = {}
for name in ("full precision", "NF4", "FP4"):
    m = variants[name].target
    autoregressive_generate(m, ids, 4)  # warm-up
    speed[name] = max(autoregressive_generate(m, ids, 48).tokens_per_second for _ in range(3))
    print(f"target, {name:15s}: {speed[name]:6.1f} tok/s")
print(f"[{full.name} target, {environment_report(full).splitlines()[1]}, greedy, 48 new tokens, best of 3]")

# %% [markdown]
# On this CPU the 4-bit model is slower: reading fewer bytes saves nothing when the weights already
# sit in cache, and de-quantizing every block costs extra work. On a GPU with a large model the
# balance moves (fewer bytes to read per step), but at batch size 1 published NF4 numbers are
# usually 0.7–1.0× of bf16 speed. The DataCamp tutorial's own table shows this too: its 4-bit
# "normal" run took 27.65 s against 17.89 s in bf16, although the article calls 4-bit an
# improvement. What 4-bit reliably buys is **memory**.
#
# ## 4. Acceptance with quantized models
#
# Quantization perturbs a model's distribution. If only one of the two is quantized, $p$ and $q$
# drift apart or together; speculative sampling stays exact with respect to **whatever target you
# run**, so with a quantized target it reproduces the quantized target.

# %%
from utils.speculative import speculative_generate

held = load_prompts("heldout")[:6]
setups = {
    "neither": (full.draft, full.target),
    "draft NF4": (variants["NF4"].draft, full.target),
    "target NF4": (full.draft, variants["NF4"].target),
    "both NF4": (variants["NF4"].draft, variants["NF4"].target),
}
for name, (d, t) in setups.items():
    acc = drafted = 0
    for p in held:
        x = full.tokenizer(p, return_tensors="pt").input_ids.to(full.device)
        o = speculative_generate(t, d, x, max_new_tokens=40, gamma=4)
        acc, drafted = acc + o.n_accepted, drafted + o.n_drafted
    print(f"{name:12s} greedy alpha = {acc / drafted:.3f}")

# %%
q_target = variants["NF4"].target
same = 0
for p in held:
    x = full.tokenizer(p, return_tensors="pt").input_ids.to(full.device)
    ref = q_target.generate(x, max_new_tokens=40, do_sample=False)
    same += torch.equal(speculative_generate(q_target, full.draft, x, max_new_tokens=40, gamma=4).sequences, ref)
print(f"{same}/{len(held)} prompts: speculative (fp32 draft, NF4 target) == NF4 target greedy")

# %% [markdown]
# If a prompt differs, it is not the algorithm (the fp32 pair is identical on every prompt, see
# notebook 03 and the tests): a 4-bit layer can compute *slightly different numbers* for a token
# scored alone (generate's one-token steps) than for the same token inside a block of several
# (the verification pass), because bitsandbytes takes different code paths for the two shapes.
# Where two tokens are nearly tied, the arg max can flip. At the first differing position:

# %%
tok = full.tokenizer
for p in held:
    x = tok(p, return_tensors="pt").input_ids.to(full.device)
    gen = q_target.generate(x, max_new_tokens=40, do_sample=False, output_scores=True, return_dict_in_generate=True)
    out = speculative_generate(q_target, full.draft, x, max_new_tokens=40, gamma=4).sequences
    if torch.equal(gen.sequences, out):
        continue
    i = int((gen.sequences[0] != out[0]).nonzero()[0])
    with torch.no_grad():
        block = q_target(out[:, :i]).logits[0, -1]  # the prefix scored in one pass
    for name, lg in (("generate, one token per step", gen.scores[i - x.shape[1]][0]), ("one pass over the prefix", block)):
        v, ids = torch.topk(lg.float(), 2)
        print(f"{name:30s} top-2: {tok.decode(ids[0])!r} {v[0]:.4f}   {tok.decode(ids[1])!r} {v[1]:.4f}")

# %% [markdown]
# ## 5. What fits a Colab GPU
#
# Weights only (KV cache and activations need a little more; `load_pair` adds 15% and refuses to
# load what cannot fit). bf16 where the GPU has it; on a T4 Gemma2 must run in float32 (it
# overflows in float16), so its only option there is NF4 with float32 compute.

# %%
from utils.models import PAIRS, estimate_bytes

gpus = {"T4 16GB": 15, "L4 24GB": 22.5, "A100 40GB": 39.5, "A100/H100 80GB": 79}
print(f"{'pair':22s} {'precision':10s} {'GiB':>6s}  " + "  ".join(f"{g:>14s}" for g in gpus))
for name in ("smollm2-135m-1.7b", "gemma2-2b-9b", "gemma2-2b-27b"):
    spec = PAIRS[name]
    for label, dtype, q in [("bf16", torch.bfloat16, None), ("NF4", torch.bfloat16, "nf4"), ("NF4, fp32", torch.float32, "nf4")]:
        gib = 1.15 * sum(estimate_bytes(s, dtype, q) for s in (spec.draft, spec.target)) / 2**30
        print(f"{name:22s} {label:10s} {gib:6.1f}  " + "  ".join(f"{'fits' if gib <= free else '-':>14s}" for free in gpus.values()))

# %% [markdown]
# On a T4 the Gemma2 2b→9b pair fits only as NF4 with float32 compute; 2b→27b does not fit at all.
# `load_pair("gemma2-2b-9b", quantization="nf4")` picks float32 there by itself.
#
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
from utils.exercises import check_06


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
# ## What you learned
# - A `BitsAndBytesConfig` picks NF4 or FP4, the compute dtype each block is de-quantized to, and
#   double quantization of the block scales.
# - 4-bit weights cost a little over half a byte per parameter, but embeddings and norms stay in
#   full precision, so a small vocabulary-heavy model shrinks far less than 8x against float32.
# - 4-bit buys memory, not necessarily speed: on a CPU (and often at batch 1 on a GPU) the
#   de-quantization costs more than the bytes it saves.
# - Speculative sampling stays exact with respect to whatever target runs, quantized or not;
#   quantizing one model only moves $\alpha$.
# - On a T4 the Gemma2 2b→9b pair fits only in NF4 with float32 compute.
#
# ## References
# - Dettmers et al., *QLoRA: Efficient Finetuning of Quantized LLMs*, 2023 (NF4, double
#   quantization): https://arxiv.org/abs/2305.14314
# - Hugging Face transformers, bitsandbytes quantization: https://huggingface.co/docs/transformers/quantization/bitsandbytes
# - Pope et al., *Efficiently Scaling Transformer Inference*, 2022 (weight bytes bound batch-1
#   decoding): https://arxiv.org/abs/2211.05102
# - DataCamp, *Speculative Decoding: A Guide With Implementation Examples*, 2024 (the 4-bit timings
#   quoted in section 3).
