# %% [markdown]
# # 09 · Batched speculative decoding
#
# A server does not decode one prompt at a time: it decodes a batch. Hugging Face's assisted
# generation still refuses to (transformers 5.23), and neither popular tutorial (DataCamp, the ML
# Practitioner's guide; notebooks 02 and 03) shows how, or measures what happens to the gain. The
# difficulty is that rows do not agree: in the same round one row accepts all its drafted tokens and
# another rejects the first, so the rows grow by different amounts (*ragged* acceptance), and a
# batch is a rectangle.
#
# This notebook runs our loop on a batch: `speculative_generate(target, draft, ids,
# attention_mask=mask)`, with the same accept/reject rule applied to each row. It checks that every
# row is exactly what the target alone would write (token for token in float32, in which the tiny
# pair loads on every device; in 16 bits a batched kernel rounds differently from a one-row one, and
# a near-tie can flip a token), then measures tokens/s against the batch size, and shows why the
# gain shrinks as the batch grows.
#
# **You will learn**
# - how to keep ragged rows in one rectangle: left padding, right alignment, positions and masks
#   counted in each row's own tokens;
# - why each row stays exact (greedy: HF greedy on that prompt alone, token for token);
# - the cost model with a batch: on a GPU at batch 1 a verify pass of $\gamma + 1$ tokens costs
#   about one plain step (the roofline; on this CPU it costs more, section 4 measures it), so the
#   $\gamma$ extra tokens ride free; why that stops as the batch grows;
# - measured: tokens/s of plain batched decoding and batched speculative decoding against $B$.
#
# **Time to run:** under a minute on a laptop CPU with the tiny pair (the benchmark is read from a
# file; rerun it with `python -m utils.beyond batched`, a few minutes).

# %%
# SETUP

# %%
import torch

from utils.models import describe_device, environment_report, load_pair, load_prompts

PAIR = None  # None: $SPECDEC_PAIR, else "tiny"
pair = load_pair(PAIR)
tok, target, draft = pair.tokenizer, pair.target, pair.draft
hw = describe_device(pair.device)  # for figure titles
print(environment_report(pair))

# %% [markdown]
# ## 1. Hugging Face: one prompt at a time
#
# Assisted generation (notebook 05) with two prompts:

# %%
from utils.beyond import left_padded

texts = load_prompts()[:4]
ids, mask = left_padded(tok, texts, pair.device)  # (B, T), padded on the left
try:
    target.generate(ids[:2], attention_mask=mask[:2], assistant_model=draft, max_new_tokens=8, do_sample=False)
except ValueError as e:
    print("ValueError:", e)

# %% [markdown]
# ## 2. One rectangle for rows of different lengths
#
# Decoder-only models generate after the last column, so prompts are padded on the **left**
# (`tokenizer.padding_side = "left"`, what HF `generate` expects). The mask says which columns are
# real tokens:

# %%
for row, m in zip(ids.tolist(), mask.tolist()):
    print(" ".join("·" if not v else tok.decode([t]).strip() or "␣" for t, v in zip(row, m)))

# %% [markdown]
# Padding must not change a row's result:
#
# - the **position** of a token (what its rotary embedding encodes) is the number of real tokens
#   before it in its own row, $\text{pos}_b(j) = \sum_{i<j} \text{mask}_b(i)$. Transformers would
#   otherwise take it from the column, so we pass `position_ids` from the mask, as HF `generate`
#   does (rotary embeddings see differences of positions, so the column's offset would change the
#   logits by rounding only, but the row would no longer compute exactly what it computes alone);
# - query $i$ sees key $j$ if $j$ is a real token and $j \le i$; in Gemma2's **sliding-window**
#   layers also only if $\text{pos}_b(i) - \text{pos}_b(j) < w$, fewer than $w$ of the row's own
#   tokens back. (With padding only on the left, a row's real tokens are consecutive, so counting
#   the window in columns would give the same mask. We build the masks ourselves,
#   `utils.batched.build_masks`, so that the layout stays under our control.)
#
# A round then works on all rows at once: the draft proposes $k \le \gamma$ tokens ($\gamma$, or
# fewer near `max_new_tokens`), $(B, 1)$ at a time; the target checks $(B, k + 1)$ tokens in **one**
# pass; each row applies the accept/reject rule of
# notebook 03 to its own tokens (`speculative.accept_reject`, the same function). Row $b$ keeps
# $n_b$ drafted tokens and adds one of its own, so it grows by $m_b = n_b + 1$.
#
# Rows that grew less are shifted right by $M - m_b$ columns ($M = \max_b m_b$), which become
# padding on the left (the whole row moves, so its real tokens stay consecutive): every row ends in
# the last column again, and the KV caches are realigned by one gather per tensor, no
# recomputation. Finished rows (EOS or `max_new_tokens`) leave the batch, and columns that are
# padding in every row are dropped. Where each new column comes from:

# %%
from utils.batched import realign_index

L, m = 3, torch.tensor([3, 1, 2])  # three rows of 3 columns grew by 3, 1 and 2 tokens (m_b >= 1)
print(realign_index(m, L))  # source column of each new column; negative: padding

# %% [markdown]
# ## 3. A batch, decoded
#
# The four prompts of section 1, greedy:

# %%
from utils.speculative import speculative_generate

GAMMA, N_NEW = 4, 40
out = speculative_generate(target, draft, ids, attention_mask=mask, max_new_tokens=N_NEW, gamma=GAMMA,
                           eos_token_id=tok.eos_token_id)  # (B, T + new), like HF generate
T = ids.shape[1]
print(f"B = {ids.shape[0]} rows, {N_NEW} new tokens each, greedy, gamma = {GAMMA}")
for b in range(len(texts)):
    print(f"row {b}: accepted {out.accepted[b]:2d}/{out.drafted[b]:2d} drafted | {tok.decode(out.sequences[b, T:])!r}")
print(f"{out.rounds} rounds; after {out.ragged_rounds} of them the rows had grown by different amounts")

# %% [markdown]
# Each row against the target alone, without padding, without the other rows (HF greedy):

# %%
for b, text in enumerate(texts):
    one = tok(text, return_tensors="pt").input_ids.to(pair.device)
    ref = target.generate(one, max_new_tokens=N_NEW, do_sample=False, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    print(f"row {b} equals HF greedy alone:", out.sequences[b, T : T + out.new_tokens[b]].tolist() == ref[0, one.shape[1]:].tolist())

# %% [markdown]
# The rows really are ragged. Tokens each row added in each round (a round's maximum is $\gamma + 1$;
# a blank cell: the row had finished):

# %%
import matplotlib.pyplot as plt
import numpy as np

grid = np.array(out.added, dtype=float).T  # (B, rounds)
grid[grid == 0] = np.nan
fig, ax = plt.subplots(figsize=(9, 2.2))
im = ax.imshow(grid, aspect="auto", cmap="viridis", vmin=1, vmax=GAMMA + 1)
ax.set(xlabel="round", ylabel="row", yticks=range(len(texts)), title=f"tokens added per row and round ({pair.name}, gamma {GAMMA}, greedy)")
fig.colorbar(im, ax=ax, label="tokens")
plt.show()

# %% [markdown]
# With sampling ($T > 0$) each row draws its own uniforms and its own resampled token, so each row
# follows the target's distribution on its own. `tests/test_batched.py` checks it:
# `test_sampled_rows_follow_the_target_joint_distribution` tests the joint distribution of the first
# two tokens of every row by chi-square (many copies of two prompts in one batch), and the other
# tests there check that greedy rows equal HF greedy alone past the sliding window, with EOS and
# `max_new_tokens` per row.

# %% [markdown]
# ### Exercise 09
# Write `realign(m, L)`, your own `realign_index` of section 2 (without calling it). Each row had
# $L$ columns and keeps $m_b$ of its new ones; with $M = \max_b m_b$, row $b$ moves right by
# $M - m_b$, so its new column $j$ comes from its old column $j - (M - m_b)$, for
# $j = 0, \dots, L + M - 1$; a negative source means padding. Return these sources as a torch tensor
# of shape $(B, L + M)$ (`torch.arange` and broadcasting do it). Section 2 printed the answer for
# $L = 3$, $m = [3, 1, 2]$: check yours against it first. The checker tries hand-made and random
# cases, then puts your function inside the batched loop and checks that every row still equals HF
# greedy alone (24 new tokens, not section 3's count, so its rounds differ from the ones above).

# %%
from utils.exercises import check_09, hint  # stuck? hint("09"), one more hint per call


def realign(m, L):
    """m: (B,) tokens each row added; L: columns before. Return a (B, L + M) torch tensor of source columns (negative: padding)."""
    raise NotImplementedError  # your code here


check_09(realign, pair)

# %% [markdown]
# The reference solution through the same checker:

# %%
from notebooks.solutions.ex09_realign import realign as reference

check_09(reference, pair)

# %% [markdown]
# ## 4. Why batching shrinks the gain
#
# Notebook 04's cost model, with a batch. Measure times in plain decoding steps *at this batch
# size*: a draft step costs $c(B)$, a verify pass of $\gamma + 1$ tokens costs $v(B)$. A round runs
# $\bar k$ draft passes (up to $\gamma$ drafts, plus a catch-up pass after a round in which a row
# kept every draft: the draft has not yet read its own last token; $\bar k$ as notebook 07 counts it)
# and one verify pass, and each row gains $\bar\tau$ tokens on average, so
#
# $$\text{speedup}(B) \approx \frac{\bar\tau}{\bar k\, c(B) + v(B)} .$$
#
# A pass reads every weight once and computes every token it is given with it: a plain step
# computes $B$ tokens per weight read, a verify pass $B(\gamma + 1)$. Call $R$ the tokens per weight
# read at which the arithmetic units, not the memory, set the pace (the hardware's FLOPs per second
# over its bytes per second, times the bytes of a weight over the 2 FLOPs it costs per token). A
# pass is memory-bound below $R$ (its time set by the weight reads, whatever the tokens) and
# compute-bound above (its time grows with the tokens). The roofline model (Williams, Waterman and
# Patterson 2009: a kernel's speed is capped by the lower of the compute ceiling and the memory
# bandwidth times its FLOPs per byte), counting weights only:
#
# $$v(B) \approx \frac{\max\!\big(1,\ B(\gamma + 1)/R\big)}{\max\!\big(1,\ B/R\big)} .$$
#
# - $B(\gamma + 1) \le R$: both passes are memory-bound, $v \approx 1$: the $\gamma$ extra tokens
#   ride free;
# - $B \le R < B(\gamma + 1)$: the verify pass is compute-bound, the plain step not yet:
#   $v \approx B(\gamma + 1)/R$, growing with $B$;
# - $B \ge R$: both are compute-bound, $v \approx \gamma + 1$, and the rejected drafts are paid in
#   full.
#
# A fixed cost per pass (Python, the framework, kernel launches) adds the same time to both
# passes and pulls $v$ towards 1. `verify_cost` times both passes directly, live on this machine
# with this notebook's threads. Section 5 reads a benchmark file measured in another run; the
# last line below compares the two:

# %%
import json

from utils.beyond import verify_cost
from utils.models import ROOT

res = json.loads((ROOT / "data/results/batched-tiny-cpu.json").read_text())  # the benchmark of section 5
print(f"[{pair.name} pair, live on {hw}, gamma {GAMMA}]")
live = {}
for B in (1, 4, 16):
    ids_b, mask_b = left_padded(tok, load_prompts()[:B], pair.device)
    live[B] = cost = verify_cost(target, draft, ids_b, mask_b, gamma=GAMMA, iters=5)
    print(f"B = {B:2d}: plain step {cost['target_step_s'] * 1e3:5.1f} ms, verify pass ({GAMMA + 1} tokens per row) "
          f"{cost['verify_s'] * 1e3:5.1f} ms: v = {cost['v']:.2f} plain steps; draft step c = {cost['c']:.2f}")
filed = {c["B"]: c for c in res["costs"]}
gap = max(abs(live[B]["v"] / filed[B]["v"] - 1) for B in live)
same = "the same description as here" if res["meta"]["hardware"] == hw else "another machine or thread count"
print(f"The file: {res['meta']['hardware']} ({same}), "
      "v = " + ", ".join(f"{filed[B]['v']:.2f}" for B in live) + f" at B = {', '.join(map(str, live))}: "
      + (f"within {gap:.0%} of the live v" if gap < 0.1 else f"up to {gap:.0%} away from the live v"))

# %% [markdown]
# On a GPU the same happens much later. A forward pass does about 2 FLOPs per parameter per token and
# reads each bf16 parameter (2 bytes) once, so a verify pass does $B(\gamma + 1)$ FLOPs per byte
# read. For bf16 that count is also the tokens per weight read (2 bytes and 2 FLOPs per weight and
# token cancel), so $R$ is the FLOPs per byte an H100 needs to be busy (from its datasheet, as in
# notebook 01; printed below, with the roofline $v(B)$):

# %%
H100_SXM = {"bf16_dense_flop_per_s": 1979e12 / 2, "bytes_per_s": 3.35e12}  # datasheet, see notebook 01
need = H100_SXM["bf16_dense_flop_per_s"] / H100_SXM["bytes_per_s"]  # FLOPs per byte to be compute-bound
R = need * 2 / 2  # tokens per weight read: need (FLOPs per byte) x 2 bytes per bf16 weight / 2 FLOPs per weight and token
print(f"H100 SXM: need = {need:.0f} FLOPs per byte read, so R = {R:.0f} tokens per bf16 weight read")
for gamma in (2, 4, 8):
    print(f"gamma {gamma}: the verify pass stays memory-bound up to about B = {R / (gamma + 1):.0f} rows")
from utils.beyond import roofline_v  # max(1, B (gamma + 1) / R) / max(1, B / R)

print("roofline v(B) at gamma 4: " + ", ".join(f"B = {B}: {roofline_v(B, 4, R):.2f}" for B in (1, 16, 64, 128, 256, 512)))

# %% [markdown]
# (This counts the weights only; the KV cache, read once per row, adds bytes that grow with $B$ and
# the context and push the point further out.) So on a GPU batched speculative decoding keeps most
# of its gain at small and moderate batches, which is what BASS reports (Qian et al. 2024; the
# figure and its setup from `data/field.json`, notebook 12's map):

# %%
field = json.loads((ROOT / "data/field.json").read_text())
bass = next(m for m in field["methods"] if m["key"] == "bass")
for r in bass["reported"]:
    print(f"{bass['name']}: {r['low']}x, {r['what']}; {r['setup']} ({r['source']['where']})")

# %% [markdown]
# On the CPU the turn comes early, for the opposite reason: a CPU core does few FLOPs per second
# compared with how fast it reads the tiny models' weights (the setup cell prints their size, small
# enough to be read largely from the CPU's caches), so $R$ is small and a verify pass of a few rows
# costs more than a plain step: $v$ is above 1 already at $B = 1$ (printed above). The fixed cost
# per pass works the other way: the tiny models' passes are mostly that overhead, which hides extra
# verify tokens at small $B$. How $v$ moves with the batch size, in the live run and in the file
# (measured with other threads, noise included):

# %%
v_live, v_file = [live[B]["v"] for B in live], [filed[B]["v"] for B in live]
grows = lambda vs: "grows with B" if all(a < b for a, b in zip(vs, vs[1:])) else "does not grow steadily with B"  # noqa: E731
where = hw if pair.device.type == "cuda" else f"{torch.get_num_threads()} threads"
print(f"live ({where}): v = " + ", ".join(f"{v:.2f}" for v in v_live) + f" at B = {list(live)}: {grows(v_live)}")
print(f"file ({res['meta']['torch_threads']} thread(s)): v = " + ", ".join(f"{v:.2f}" for v in v_file) + f": {grows(v_file)}")
print(f"at B = {min(live)}: live v = {v_live[0]:.2f}, i.e. the {GAMMA} extra tokens per row cost "
      f"{v_live[0] - 1:.0%} of a plain step" + ("" if v_live[0] > 1 else " (no more than noise)"))

# %% [markdown]
# ## 5. Measured: tokens/s against the batch size
#
# `python -m utils.beyond batched --threads 1 --out data/results` decoded the first $B$ workshop
# prompts with plain batched decoding (our loop with the same masks, and HF `generate`) and with
# batched speculative decoding, at the $\gamma$, temperatures and new tokens per row that the header
# below prints. Per batch size the methods took turns after a warm-up, each keeping its median run
# (`res`, read in section 4).
#
# **These are in-sample prompts**: the workshop prompts come from the documentation the tiny pair was
# trained on, so the draft guesses them better than new text, and $\alpha$, $\bar\tau$ and the gains
# below are higher than on held-out text. The held-out set is too small to fill the largest batch
# (first line below). What matters here is how the gain moves with $B$; for a level, the held-out
# $\alpha$ of notebook 08's benchmark is printed beside this one. $\alpha$ comes two ways:
# per drafted token (accepted / drafted) and per *checked* token (accepted / (accepted + rejected):
# drafts after the first rejection are never checked), the one Leviathan et al.'s formulas take.

# %%
from utils.beyond import BATCH_METHODS, batched_table, plot_batched

meta = res["meta"]
held = json.loads((ROOT / "data/results/adaptive-tiny-cpu-heldout.json").read_text())  # notebook 08's benchmark
held0 = next(s for s in held["summary"] if s["temperature"] == 0 and s["config"] == f"constant {held['meta']['gamma']}")
print(f"prompts: {meta['prompt_set']} (in-sample), the first B of them; the held-out set has {len(load_prompts('heldout'))}, "
      f"fewer than B = {max(meta['batch_sizes'])}. Held-out alpha per checked token, notebook 08, B = 1, T = 0, "
      f"gamma {held['meta']['gamma']}: {held0['alpha_checked']:.2f}")
print(f"[{meta['pair']} pair, {meta['hardware']}, torch {meta['torch']}, transformers {meta['transformers']}, "
      f"{meta['date']}; gamma {meta['gamma']}, {meta['max_new_tokens']} new tokens per row, median of {meta['repeats']}]")
for t in meta["temperatures"]:
    print(f"\nT = {t:g}:  B  plain(ours)  plain(HF)  speculative  speedup  vs HF  alpha drafted/checked   tau  k-bar"
          "     c     v  predicted")
    for r in batched_table(res, t):
        print(f"       {r['B']:3d} {r['plain (ours) tok/s']:10.0f} {r['plain (HF generate) tok/s']:10.0f} "
              f"{r['speculative (ours) tok/s']:11.0f} {r['speedup_vs_ours']:7.2f}x {r['speedup_vs_hf']:5.2f}x "
              f"{r['alpha']:13.2f} / {r['alpha_checked']:.2f} {r['tau']:7.2f} {r['k_bar']:5.2f} {r['c']:5.2f} {r['v']:5.2f} "
              f"{r['predicted']:8.2f}x")

# %% [markdown]
# How much of that is noise? The file keeps every repeat (`seconds_all`); the spread of one
# configuration is (slowest − fastest) / median. `verify_cost`, which gives $c$ and $v$, lets its
# three passes take turns (a burst of load then falls on all three, not on one) and keeps each pass's
# fastest repeat, since load only adds time; its plain step, with that step's spread over repeats:

# %%
from utils.bench import repeat_spread as spread  # (slowest - fastest) / median of one configuration's repeats

runs = {(r["B"], r["temperature"], r["method"]): r for r in res["rows"]}
for t in meta["temperatures"]:
    print(f"T = {t:g}, spread of the {meta['repeats']} repeats, plain (ours) / HF / speculative: "
          + ", ".join(f"B={B}: " + "/".join(f"{spread(runs[B, t, m]):.0%}" for m in BATCH_METHODS) for B in meta["batch_sizes"]))
print("verify_cost's plain step (spread): " + ", ".join(f"B={c['B']}: {c['target_step_s'] * 1e3:.1f} ms ({c['step_spread']:.0%})"
                                                      for c in res["costs"]))
slower = [(a["B"], b["B"]) for a in res["costs"] for b in res["costs"] if a["B"] < b["B"] and a["target_step_s"] > b["target_step_s"]]
print("a plain step slower at a smaller batch than at a larger one: "
      + (", ".join(f"B = {a} slower than B = {b}" for a, b in slower) or "none"))

# %% [markdown]
# Repeats of one configuration differ by as much as these spreads, so differences of that size
# between batch sizes are noise, not an effect of batching. That covers a plain step that came out
# slower at a smaller batch than at a larger one (the last line lists any), and the $c$ and $v$
# computed by dividing by such a step. $\bar\tau$ changes with $B$ partly because the batch holds
# different prompts (the first $B$), not only because it is a batch.

# %%
fig, axes = plt.subplots(len(meta["temperatures"]), 2, figsize=(11, 3.8 * len(meta["temperatures"])), squeeze=False)
for t, row in zip(meta["temperatures"], axes):
    plot_batched(res, t, axes=row)
cs = [c["c"] for c in res["costs"]]
fig.suptitle(f"{meta['pair']} pair on {meta['hardware']}, {meta['date']}, {meta['prompt_set']} prompts (in-sample); gamma {meta['gamma']}, "
             f"{meta['max_new_tokens']} new tokens per row; c = {min(cs):.2f} to {max(cs):.2f} over B")
fig.tight_layout()
plt.show()

# %%
rows0 = batched_table(res, 0.0)
lo, hi = rows0[0], rows0[-1]
print(f"[{meta['pair']} pair, {meta['hardware']}, {meta['prompt_set']} prompts (in-sample), gamma {meta['gamma']}] At T = 0 batched speculative decoding is "
      f"{lo['speedup_vs_ours']:.2f}x plain batched decoding at B = {lo['B']} (alpha per checked token {lo['alpha_checked']:.2f}) and "
      f"{hi['speedup_vs_ours']:.2f}x at B = {hi['B']} (alpha {hi['alpha_checked']:.2f}), while a verify pass went from v = {lo['v']:.2f} "
      f"to {hi['v']:.2f} plain steps and a draft step from c = {lo['c']:.2f} to {hi['c']:.2f}. The cost model predicted "
      f"{lo['predicted']:.2f}x and {hi['predicted']:.2f}x from the measured tau, k-bar, c and v.")

# %% [markdown]
# The cost model counts forward passes only (the catch-up passes among them), and it assumes every
# row is busy in every round. The batched loop does more per round than the passes (the *overhead*
# the formula leaves out): it builds the masks, gathers the caches of rows that shifted, and reads
# the accepted counts of every row on the host. And rows that finish early leave later rounds
# under-filled: the batch runs until its slowest row has its tokens, and a round over fewer rows
# costs less only as far as the plain step shrinks with $B$
# (the first line below). Then the ratio of measured to predicted, how full the rounds were (rows
# busy: mean running rows per round / $B$) and how many rounds ran. If a round costs the same
# however many of its rows still run, the speedup to expect is the formula times the rows busy:

# %%
c1, cN = res["costs"][0], res["costs"][-1]
print(f"plain step at B = {cN['B']}: {cN['target_step_s'] / c1['target_step_s']:.1f}x the one at B = {c1['B']} "
      f"for {cN['B'] // c1['B']}x the rows")
spec = {(r["B"], r["temperature"]): r for r in res["rows"] if r["method"] == "speculative (ours)"}
busy = {k: r["mean_rows_per_round"] / r["B"] for k, r in spec.items()}  # running rows per round / B
tab = [(t, r) for t in meta["temperatures"] for r in batched_table(res, t)]
for t in meta["temperatures"]:
    print(f"T = {t:g}, B: measured / predicted, rows busy, rounds: " + "; ".join(
        f"{r['B']}: {r['speedup_vs_ours'] / r['predicted']:.2f}, {busy[r['B'], t]:.0%}, {spec[r['B'], t]['rounds']}"
        for tt, r in tab if tt == t))

# %%
import math
import statistics

print("The formula alone predicts a gain where the measurement shows a loss: " + ("; ".join(
    f"T = {t:g}, B = {r['B']}: {r['predicted']:.2f}x (measured {r['speedup_vs_ours']:.2f}x; formula x rows busy "
    f"{r['predicted'] * busy[r['B'], t]:.2f}x)" for t, r in tab if r["predicted"] > 1 > r["speedup_vs_ours"]) or "nowhere"))
far = lambda pred, r: abs(math.log(pred / r["speedup_vs_ours"]))  # distance to the measurement, on a log scale
closer = sum(far(r["predicted"] * busy[r["B"], t], r) < far(r["predicted"], r) for t, r in tab)
left = statistics.median(r["speedup_vs_ours"] / (r["predicted"] * busy[r["B"], t]) for t, r in tab)
print(f"measured below the formula at {sum(r['speedup_vs_ours'] < r['predicted'] for _, r in tab)} of {len(tab)} (T, B); "
      f"formula x rows busy is the closer at {closer} of {len(tab)}; median measured / (formula x rows busy): {left:.2f}")

# %% [markdown]
# Read the figure with the formula: plain batched decoding gains tokens/s as $B$ grows (a step
# over $B$ rows costs less than $B$ steps, the first line above), while the verify pass costs more
# plain steps as $B$ grows (the $v$ printed above), so the speculative loop's advantage shrinks.
# Where the formula alone still predicts a gain the measurement shows a loss (printed above); the
# last line says how much of the gap the rows busy account for. What remains is not measured here: we attribute it to the loop's
# own work per round outside the forward passes (masks, cache gathers, host reads), within the
# noise of the repeats (section 5's spread). Where the gain turns
# is set by the hardware ($v(B)$, $c(B)$ and the overhead of a round), by the text ($\bar\tau$) and
# by how unevenly the rows finish. The benchmark's CPU (its hardware heads the table) reaches it
# early; a large GPU, by the roofline of section 4, much later. On a GPU our eager loop would also
# be launch-bound (notebook 07): eager passes there cost about the same at every small $B$ because
# launches, not weights or arithmetic, set their time, so an eager $v(B)$ would look free for longer
# than the hardware makes it. The real Gemma2 measurement of $v(B)$ needs a GPU, eager and on the
# fast path: `bash scripts/gpu_run.sh batched-cost` (= `python -m utils.beyond batched-cost
# --shapes 2b:27b --device cuda`: `verify_cost` on real 2b and 27b Gemma2 shapes with random
# weights) and `bash scripts/gpu_run.sh batched-cost-compiled` (the same passes also compiled with a
# static cache and CUDA graphs, `compiled_verify_cost`). The cell below draws what `data/results`
# holds of them, beside the roofline of section 4 where the GPU is the H100 SXM it assumes, and says
# so when it holds none.

# %%
from utils.beyond import plot_shape_costs

gpu_costs = sorted((ROOT / "data/results").glob("batched-cost-*-cuda*.json"))
for f in gpu_costs:
    measured = json.loads(f.read_text())
    sxm = "H100 80GB HBM3" in measured["meta"]["hardware"]  # the H100 SXM's name; PCIe and NVL differ
    plot_shape_costs(measured, R=R if sxm else None)
if not gpu_costs:
    print("data/results holds no GPU batched-cost file yet: on a GPU, `bash scripts/gpu_run.sh batched-cost-compiled` "
          "makes one (copy it to data/results), and this cell draws it.")

# %% [markdown]
# How the serving engines do it: vLLM flattens the drafted tokens of all requests into one list and
# launches one Triton kernel over the whole batch, one program per request, reading the flattened
# drafts through `cu_num_draft_tokens` (cumulative offsets per request), so no padding is computed;
# our $(B, k)$ rectangle pads instead, which is simpler to read and costs the columns of the padding.

# %% [markdown]
# ## Try this
# - Rerun section 3 with `temperature=1.0` and a generator: do the rows stay ragged? Which row
#   accepts most, and is it the same as at $T = 0$?
# - `!cd .. && "{sys.executable}" -m utils.beyond batched --gamma 2` in a cell (the repository's
#   root, this kernel's Python), then `--gamma 8`: where does the gain cross 1 now?
#   Use the formula: which of $c(B)$, $v(B)$ and $\bar\tau$ moved?
# - Give one prompt a long prefix: how much padding does the batch carry, and what does it cost?

# %% [markdown]
# ## What you learned
# - A batch of prompts is left-padded and kept right-aligned; positions and masks are counted in
#   each row's own tokens, so padding changes nothing (greedy rows equal HF greedy alone).
# - Rows accept different numbers of tokens in a round; shifting the shorter rows right (a gather
#   on the caches, no recomputation) keeps one rectangle. Finished rows leave.
# - The accept/reject rule is the same, row by row: each row's distribution is the target's.
# - The speedup is $\approx \bar\tau / (\bar k\, c(B) + v(B))$: as $B$ grows a verify pass costs more
#   plain steps (roofline: $v \approx 1$ while $B(\gamma + 1)$ tokens per weight read stay memory-bound,
#   up to $\gamma + 1$ once the plain step is compute-bound too), so the gain shrinks, early on a
#   small CPU and late on a large GPU. The formula counts forward passes only: it leaves out the
#   loop's own work per round outside them (masks, cache gathers, host reads), and the straggler
#   tail, rows that finish early and leave rounds under-filled (section 5 measures how far below it
#   the loop runs).

# %% [markdown]
# ## References
# - Qian et al., *BASS: Batched Attention-optimized Speculative Sampling*, Findings of ACL 2024:
#   https://arxiv.org/abs/2404.15778 (its reported speedup is printed in section 4).
# - Williams, Waterman, Patterson, *Roofline: An Insightful Visual Performance Model for Multicore
#   Architectures*, Communications of the ACM 52(4), 2009: https://doi.org/10.1145/1498765.1498785
# - vLLM's rejection sampler (drafts of all requests flattened, `cu_num_draft_tokens`):
#   https://github.com/vllm-project/vllm/blob/main/vllm/v1/sample/rejection_sampler.py
# - Leviathan, Kalman, Matias, *Fast Inference from Transformers via Speculative Decoding*, ICML 2023:
#   https://arxiv.org/abs/2211.17192
# - The two tutorials this collection answers (notebooks 02 and 03): DataCamp, *Speculative Decoding*
#   (2024), https://www.datacamp.com/tutorial/speculative-decoding; Machine Learning Mastery, *The
#   Machine Learning Practitioner's Guide to Speculative Decoding* (2026),
#   https://machinelearningmastery.com/the-machine-learning-practitioners-guide-to-speculative-decoding/
# - Hugging Face, padding side for decoder-only generation:
#   https://huggingface.co/docs/transformers/llm_tutorial#padding-side
