# %% [markdown]
# # 11 · Self-speculation: the target drafts for itself
#
# Every draft so far was a second model: smaller, trained separately, with its own weights in
# memory. The target already holds a cheaper model inside it: its first $k$ layers. Run them, skip
# the rest, and read the hidden state with the target's own final norm and LM head: that is a
# draft that costs about $k/n$ of a target step and no extra weights (only its own KV cache for the
# first $k$ layers; plus, in section 5, a small trained adapter). The target, all $n$ layers,
# still verifies every token, so the output stays exactly the target's, whatever $k$ is.
#
# Whether it is *fast* is another matter, and in the committed benchmark on this repository's CPU
# (one thread, greedy and $T = 1$; section 4 prints its setting) it mostly is not: almost every exit
# measured there is slower than decoding without a draft (section 4 counts them and says why).
# This notebook builds the early-exit draft on the shipped tiny target (its depth is printed in
# section 1), checks that nothing is copied and nothing changes in the output, measures acceptance
# and speed against $k$, explains why this target drafts poorly from its own early layers, and
# trains a small exit adapter (the target frozen) to see what early-exit training buys.
#
# **You will learn**
# - how to build a draft that shares every weight with the target (`utils.selfspec.early_exit_draft`);
# - why the output is exact by construction, and how the tests check it;
# - the trade-off in $k$: the draft's cost $c \approx k/n$ rises while its acceptance $\alpha$ rises;
# - why a model never trained for early exit drafts poorly this way, and what an exit adapter or
#   LayerSkip's early-exit loss changes.
#
# **Time to run:** under a minute on a laptop CPU with the tiny pair (the benchmark and the adapter
# training are read from the committed files `data/results/selfspec-tiny-cpu.json` and
# `data/models/early-exit/`). To regenerate those files (without `--out` they go to `runs/`,
# ignored by git, and this notebook would not read them):
#
# ```
# python -m utils.selfspec --out data/results --threads 1 --overwrite
# python -m utils.selfspec train --out data/models/early-exit --overwrite
# ```

# %%
# SETUP

# %%
import torch

from utils.models import describe_device, environment_report, load_pair, load_prompts

PAIR = None  # None: $SPECDEC_PAIR, else "tiny"
pair = load_pair(PAIR)
tok, target, draft_model = pair.tokenizer, pair.target, pair.draft
hw = describe_device(pair.device)  # for figure titles
print(environment_report(pair))

# %% [markdown]
# ## 1. The draft is a view of the target
#
# A decoder-only LM computes a residual stream $h_0 = \text{embed}(x)$,
# $h_i = \text{layer}_i(h_{i-1})$ for $i = 1..n$, and reads the last one with its head. Gemma2's
# head is a final RMSNorm, the LM head $W$ (tied to the embeddings) and a soft cap on the logits:
#
# $$p(\cdot \mid x) = \operatorname{softmax}\big(\text{cap}\cdot\tanh(W\,\text{norm}(h_n)/\text{cap})\big).$$
#
# The **early exit at layer $k$** applies the same head to $h_k$ (in this notebook $k$ counts layers;
# in notebooks 08-10 it counted drafted tokens):
#
# $$q_k(\cdot \mid x) = \operatorname{softmax}\big(\text{cap}\cdot\tanh(W\,\text{norm}(h_k)/\text{cap})\big).$$
#
# `early_exit_draft(target, k)` builds a model of the target's own class whose embeddings, first
# $k$ layers, final norm and LM head *are* the target's modules (the same Python objects), with a
# copy of the config that says `num_hidden_layers = k`. Nothing is copied:

# %%
from utils.selfspec import early_exit_draft

n_layers = target.config.num_hidden_layers
d8 = early_exit_draft(target, 8)
same = {
    "lm_head.weight": d8.lm_head.weight is target.lm_head.weight,
    "embed_tokens": d8.model.embed_tokens is target.model.embed_tokens,
    "final norm": d8.model.norm is target.model.norm,
    "layers 0..7": all(a is b for a, b in zip(d8.model.layers, target.model.layers)),
}
target_ids = {id(p) for p in target.parameters()}
new = sum(p.numel() for p in d8.parameters() if id(p) not in target_ids)
print(f"target: {n_layers} layers; draft: {d8.config.num_hidden_layers} layers")
print("shared (the same object):", same)
print(f"parameters the draft adds: {new}; the shipped draft model has {sum(p.numel() for p in draft_model.parameters()):,} of its own")
print(f"hidden size d: target {target.config.hidden_size}; shipped draft model: {draft_model.config.num_hidden_layers} layers, "
      f"d = {draft_model.config.hidden_size}")

# %% [markdown]
# No new weights, but not zero memory: the draft keeps its own KV cache (layer indices $0..k-1$)
# inside `speculative_generate`, as any draft does. (LayerSkip goes further: the verify pass reuses the draft's cache and activations
# for the first $k$ layers; our loop recomputes them, which is simpler and still exact.)

# %% [markdown]
# ## 2. Exact by construction
#
# The draft only proposes; Leviathan et al.'s accept/reject rule with the full target decides. So
# at $T = 0$ the output must equal HF greedy decoding of the target, for every $k$:

# %%
# NBVAL_CHECK_OUTPUT
from utils.speculative import speculative_generate

prompts = load_prompts("heldout")
eos = tok.eos_token_id
for k in (2, 8, 16):
    d = early_exit_draft(target, k)
    same = []
    for text in prompts[:3]:
        ids = tok(text, return_tensors="pt").input_ids.to(pair.device)
        with torch.inference_mode():
            ref = target.generate(ids, max_new_tokens=40, do_sample=False, eos_token_id=eos, pad_token_id=0)
        out = speculative_generate(target, d, ids, max_new_tokens=40, gamma=4, eos_token_id=eos)
        same.append(torch.equal(out.sequences, ref))
    print(f"exit at k = {k:2d}: equal to HF greedy on {len(same)} held-out prompts: {all(same)}")

# %% [markdown]
# (`tests/test_selfspec.py` also checks the draft's logits against the early exit computed by hand
# at every $k$, and sampling at $T = 1$ with a chi-square test.)

# %% [markdown]
# ## 3. How well do the early layers draft?
#
# One target pass gives every $h_k$, so we can read every exit at once. Reading an intermediate
# $h_k$ with the model's own final norm and LM head, as if it were the last layer, is what
# nostalgebraist called the "logit lens" (2020; References): our $q_k$ above. At each
# position of the held-out prompts and their greedy continuations, does the exit's arg max equal the
# target's (what greedy drafting needs), and how far is its distribution, $\mathrm{KL}(p\,\|\,q_k)$
# (what sampling needs)? And how much does each layer $i$ change the stream it receives, the relative
# update $\lVert h_i - h_{i-1} \rVert / \lVert h_{i-1} \rVert$ (each norm taken over all positions
# of a text at once, then averaged over the texts)?

# %%
import statistics

from utils.selfspec import exit_agreement, layer_update_norms

texts = []
for text in prompts:
    ids = tok(text, return_tensors="pt").input_ids.to(pair.device)
    with torch.inference_mode():
        texts.append(target.generate(ids, max_new_tokens=48, do_sample=False, eos_token_id=eos, pad_token_id=0))
lens = [exit_agreement(target, x) for x in texts]
lens = [dict(k=rows[0]["k"], top1=statistics.mean(r["top1"] for r in rows), kl=statistics.mean(r["kl"] for r in rows))
        for rows in zip(*lens)]
updates = [statistics.mean(u) for u in zip(*(layer_update_norms(target, x) for x in texts))]
for r in lens:
    print(f"exit at k = {r['k']:2d}: arg max equal to the target's at {r['top1']:4.0%} of positions, KL {r['kl']:.2f} nats; "
          f"layer {r['k']} changed the residual stream by {updates[r['k'] - 1]:.1%}")

# %%
from utils.selfspec import plot_lens

plot_lens(lens, updates, f"{pair.name} target ({n_layers} layers), {len(texts)} held-out prompts + greedy continuations, {hw}")
idle = [i + 1 for i, u in enumerate(updates) if u < 0.05]
print(f"layers that change the stream by less than 5%: {idle} "
      f"(at most {max((updates[i - 1] for i in idle), default=0):.1%}); "
      f"the others: at least {min((u for u in updates if u >= 0.05), default=0):.0%}")
if pair.name == "tiny":
    from utils.selfspec import target_growth

    g = target_growth()
    print(f"how the tiny target was built: {g['stage1_layers']} layers for {g['stage1_steps']} steps, grown to {g['layers']} "
          f"(+{g['layers'] - g['stage1_layers']} layers that start as the identity), then {g['grow_steps']} more steps; "
          f"layers still under 5% now: {len(idle)}")

# %% [markdown]
# Two things show.
#
# **The early layers are not drafts.** Nothing in the target's training ever asked $h_k$ to be
# read by the LM head: the loss only looked at $h_n$. The intermediate layers are free to hold the
# residual stream in any basis that later layers can use, and the LM head reads it only near the
# end. So the exits agree with the target at few positions until late, and far from it in KL.
#
# **Several layers barely move the stream.** The tiny target was trained at fewer layers and then
# grown to its full depth by inserting layers that start as the identity
# (`scripts/train_tiny_pair.py`, `grow()`; the depths and step counts are printed above). After
# the further training, as many layers as were inserted (the short bars, listed above) still
# barely change the stream. An exit just after one of them reads nearly the same state as one just
# before it, hence the flat steps in the agreement and KL printed above, while the draft pays for
# the extra layers.

# %% [markdown]
# ## 4. Measured: acceptance, cost and speed against $k$
#
# The benchmark (its command, $\gamma$ and hardware are printed first below) ran our speculative
# loop with the exit at each $k$, with the exit plus the adapter of section 5, with the shipped
# draft model, and our plain loop without a draft, at each temperature on the held-out prompts;
# per prompt the drafts took turns. $c$ is each draft's decode step over the target's, measured
# alone. In the table, "alpha drafted/checked" gives two acceptance rates: accepted / drafted, and
# accepted / (accepted + rejections), which leaves out the drafted tokens after a rejection that
# the target never checked; the second is the $\alpha$ of the cost model. "predicted" is that
# cost model, Leviathan et al.'s Thm 3.8 (notebook 04),
# $\frac{1-\alpha^{\gamma+1}}{(1-\alpha)(\gamma c + v)}$, at the run's $\gamma$ with $v = 1$, where
# $v$ is the target's pass over $\gamma + 1$ tokens counted in one-token steps; "best gamma" is the
# $\gamma$ it would choose, with its prediction.

# %%
import json

from utils.models import ROOT
from utils.selfspec import exits_table

res = json.loads((ROOT / "data/results/selfspec-tiny-cpu.json").read_text())
m = res["meta"]
print(f"[{m['pair']} pair, {m['hardware']}, torch {m['torch']}, transformers {m['transformers']}, {m['date']}; "
      f"gamma {m['gamma']}; {m['n_prompts']} {m['prompt_set']} prompts x {m['max_new_tokens']} new tokens, median of "
      f"{m['repeats']} after {m['warmup']} warm-up; target step {res['costs']['target_step_ms']:.1f} ms]\n[{m['command']}]")
print(exits_table(res))
print("greedy outputs equal to the plain loop's:", all(s["all_equal_plain"] for s in res["summary"] if s["temperature"] == 0))

# %%
from utils.selfspec import plot_exits

plot_exits(res, f"{m['pair']} target ({m['n_layers']} layers) on {m['hardware']}, {m['prompt_set']} prompts, "
               f"gamma {m['gamma']}");

# %% [markdown]
# Read it with Leviathan et al.'s cost model (notebook 04): with acceptance $\alpha$ per checked
# token and a draft step of $c$ target steps,
#
# $$\text{speedup}(\gamma) = \frac{1 - \alpha^{\gamma+1}}{(1-\alpha)(\gamma c + 1)},$$
#
# and a speedup exists for some $\gamma$ **only if $\alpha > c$**. For an early exit, $c$ grows
# like $k/n$ (the grey line). If every layer cost $t_\text{layer}$ and the embeddings, the head and
# the loop's own work a fixed $t_\text{fixed}$, it would be
# $c \approx (k\,t_\text{layer} + t_\text{fixed})/(n\,t_\text{layer} + t_\text{fixed})$: above $k/n$,
# by most at small $k$ (the target step pays the fixed cost too, so the gap shrinks towards the
# top). The measurement (printed next) is above the line only at the smallest exits and a little
# below it at the others, which that model does not produce. The gaps below are no larger than the
# spread of the adapter's measured extra cost, although that extra (one RMSNorm and one
# $d \times d$ map) should be about the same at every $k$: these step timings are only good to a
# few hundredths. $\alpha$ must outgrow $c$. Which exits pass that test, per temperature:

# %%
exits0 = {s["k"]: s["c"] for s in res["summary"] if s["k"] is not None and not s["adapter"] and s["temperature"] == 0}
extra = [res["costs"]["c"][f"exit {k} + adapter"] - res["costs"]["c"][f"exit {k}"] for k in m["adapter_ks"]]
gap = {k: c - k / m["n_layers"] for k, c in sorted(exits0.items())}
print("c - k/n per exit: " + ", ".join(f"k = {k}: {x:+.3f}" for k, x in gap.items()))
print(f"above k/n at k = {[k for k, x in gap.items() if x > 0]}, below at k = {[k for k, x in gap.items() if x < 0]} "
      f"(by at most {-min(gap.values()):.3f}); the adapter's extra c (exit k + adapter minus exit k) ranges from "
      f"{min(extra):+.3f} to {max(extra):+.3f}, a spread of {max(extra) - min(extra):.3f}")
for t in sorted({s["temperature"] for s in res["summary"]}):
    rows = [s for s in res["summary"] if s["temperature"] == t and s["draft"] != "plain"]
    ok = [s["draft"] for s in rows if s["speedup_possible"]]
    dm = next(s for s in rows if s["draft"] == "draft model")
    best = max((s for s in rows if s["k"] is not None), key=lambda s: s["speedup_vs_plain"])
    print(f"T = {t:g}: alpha > c for {', '.join(ok) if ok else 'no draft'}; best exit measured: {best['draft']} at "
          f"{best['speedup_vs_plain']:.2f}x (alpha {best['alpha_checked']:.2f}, c {best['c']:.2f}); "
          f"the draft model: {dm['speedup_vs_plain']:.2f}x (alpha {dm['alpha_checked']:.2f}, c {dm['c']:.2f})")

# %% [markdown]
# Now the measured speed itself: how many exits beat the plain loop, how far apart repeated runs of
# the same decode are, and what the cost model says once $v$ is taken from the loop (the target's
# time per round over its one-token step; its prefill is spread over the rounds):

# %%
from utils.bench import repeat_spread
from utils.selfspec import speed_against_model

spread = statistics.median(repeat_spread(r) for r in res["rows"])
print(f"[{m['pair']} pair, {m['hardware']}, gamma {m['gamma']}] median spread between the {m['repeats']} "
      f"repeats of one run ((slowest - fastest) / median, as in notebooks 08-10): {spread:.0%}")
for r in speed_against_model(res):
    faster = ", ".join(f"{s['draft']} {s['speedup_vs_plain']:.2f}x (alpha {s['alpha_checked']:.2f}, c {s['c']:.2f})" for s in r["faster"])
    print(f"T = {r['temperature']:g}: slower than the plain loop: {r['slower']} of {r['n_exits']} exits (with and without "
          f"adapter); faster: {faster or 'none'}" + (f"; each gains less than the median spread: "
          f"{all(s['speedup_vs_plain'] - 1 < spread for s in r['faster'])}" if r["faster"] else ""))
    print(f"  the cost model with v = 1 promises at most {r['promised']:.2f}x at gamma {m['gamma']}, "
          f"{r['promised_best']:.2f}x at an exit's best gamma")
    print(f"  v in the loop: {r['v'][0]:.2f} to {r['v'][1]:.2f} target steps per round; measured minus predicted, "
          f"v = 1: {r['error_v1'][0]:+.2f} to {r['error_v1'][1]:+.2f}; with the loop's v: {r['error_v'][0]:+.2f} to {r['error_v'][1]:+.2f}")

# %% [markdown]
# On this CPU almost every exit is slower than decoding without a draft: at $T = 0$ every one,
# with or without its adapter, is slower than the plain loop; at $T = 1$ the few that are faster
# gain less than the spread between repeats of the same run (both printed above), which is no
# speedup one can count on. The parameters are beside each number: hardware, pair and $\gamma$ in
# the bracket, $\alpha$ per checked token and $c$ per draft, both temperatures. Two reasons:
#
# - Where $\alpha$ exceeds $c$, it does not exceed it by much: at $T = 0$ even the $v = 1$ cost model
#   promises little for any exit; at $T = 1$ it promises more for the exits with an adapter (the
#   best cases per temperature are printed above, per exit in the table's "predicted" and "best
#   gamma" columns), and the next reason takes it away.
# - The verify pass costs more than one step: the target's time per round is more than one
#   target step (the $v$ printed above), which the $v = 1$ prediction leaves out. Every exit
#   measures below that prediction; with the loop's own $v$, the model comes much closer to the
#   measurement.

# %% [markdown]
# ## 5. What early-exit training changes
#
# The fix is to *ask* layer $k$ to be readable. Two ways, from the literature:
#
# - **LayerSkip** (Elhoushi et al., 2024) trains the whole model with an early-exit loss (the LM
#   head applied to every layer, one shared exit) and layer dropout that rises with depth, then
#   drafts with the first layers and verifies with the rest, reusing the draft's cache.
# - **Kangaroo** (Liu et al., 2024) keeps the target frozen and trains a small adapter on top of a
#   shallow sub-network so that the shared LM head can read it.
#
# Here, in Kangaroo's spirit and much smaller: the target stays frozen and shipped as is; at each
# exit $k$ we train an `ExitAdapter`, a residual map $h \mapsto h + A\,\text{RMSNorm}(h)$ with a
# $d \times d$ matrix $A$ ($d$ the target's hidden size, printed in section 1; $A$ starts at zero,
# so the untrained adapter is the plain exit) before the shared final norm and LM head. The loss is the KL from the target's own next-token
# distribution on the text the tiny pair was trained on:
#
# $$\mathcal{L}_k = \mathbb{E}_{\text{positions}}\ \mathrm{KL}\big(p(\cdot \mid x)\ \|\ q_k^{A}(\cdot \mid x)\big).$$
#
# This is close to the *tuned lens* of Belrose et al. (2023; References), one affine map per layer
# trained on a frozen model with the same KL to the final layer's distribution, so that the
# unchanged LM head reads that layer better than the logit lens does; ours applies $A$ to the
# RMS-normalised state, has no bias, and serves drafting rather than looking inside the model.
#
# Matching $p$, not the data, is what acceptance rewards: at $T = 1$ a drafted token is accepted
# with probability $\beta = \sum_x \min(p(x), q(x)) = 1 - \mathrm{TV}(p, q)$ at each position
# (notebooks 03 and 04), so $\alpha$ is its average. The output stays exact with any adapter (the
# target still verifies; the tests check greedy equality and the sampling distribution with one).
# The training run, `python -m utils.selfspec train --out data/models/early-exit`:

# %%
report = json.loads((ROOT / "data/models/early-exit/training_report.json").read_text())
print(f"{report['steps']} steps x {report['batch']} x {report['block']} tokens ({report['tokens_seen']:,} tokens seen) on "
      f"{report['hardware']}, {report['train_seconds'] / 60:.1f} min for all {len(report['ks'])} adapters at once; "
      f"{report['adapter_parameters']:,} parameters, {report['adapter_bytes'] / 1024:.0f} KiB "
      f"({report['adapter_parameters'] // len(report['ks']):,} parameters per exit: d + d^2 with d = {target.config.hidden_size})")
print(f"data: {report['data']['source']}; {report['data']['train_tokens']:,} training tokens, not cut to blocks "
      f"(the tiny pair's own training text: {report['data']['same_as_shipped_pair']})")
print("held-out text (topics the pair never saw), per exit: arg max agreement and KL, plain exit -> with adapter")
for k in report["ks"]:
    a, b = report["heldout"][f"k{k}"], report["heldout"][f"k{k} + adapter"]
    print(f"  k = {k:2d}: agreement {a['top1']:4.0%} -> {b['top1']:4.0%},  KL {a['kl']:.2f} -> {b['kl']:.2f}")

# %% [markdown]
# And in the speculative loop (the dashed lines of the figure above):

# %%
print(f"[{m['pair']} pair, {m['hardware']}, gamma {m['gamma']}, the committed benchmark of section 4]")
for t in sorted({s["temperature"] for s in res["summary"]}):
    by = {s["draft"]: s for s in res["summary"] if s["temperature"] == t}
    for k in m["adapter_ks"]:
        a, b = by[f"exit {k}"], by[f"exit {k} + adapter"]
        print(f"T = {t:g}, k = {k:2d}: alpha per checked token {a['alpha_checked']:.2f} -> {b['alpha_checked']:.2f}, "
              f"speedup {a['speedup_vs_plain']:.2f}x -> {b['speedup_vs_plain']:.2f}x (c {a['c']:.2f} -> {b['c']:.2f})")

# %% [markdown]
# The short training run printed above (its time and hardware are in its first line), with the
# target untouched, raises the acceptance of every exit a lot: the hidden state at layer $k$ held
# much of the information, in a basis the LM head could not read. It cannot make a shallow exit as
# good as the full target: an exit only knows what $k$ layers computed, and an adapter of $d^2$
# parameters cannot do the work of the $n - k$ layers it skips, so with the adapter the exits'
# agreement stays well below one, the more so the smaller $k$ (printed above). Whether a speedup appears is again $\alpha$ against $c$:
# on this target $c$ is close to $k/n$ because on a CPU every Gemma2 layer costs about the same
# (plus a fixed cost for the head and the loop), and the shipped draft model (its depth and width
# printed in section 1) drafts far better than any exit of similar cost, because it was distilled
# from the target for exactly that. Where an exit does pass $\alpha > c$, its best $\gamma$ is
# small (the table's last column) and the measured speedup at the run's $\gamma$ falls below even
# the prediction: on a CPU the target's pass over $\gamma + 1$ tokens costs more than one step
# (notebook 05 measures it; section 4 printed it from this run's loop). Here $v$ is the target's
# pass over $\gamma + 1$ tokens, counted in one-token steps; the table's "predicted" column
# assumes $v = 1$, which leaves that cost out.
#
# What would change with LayerSkip-style training of the whole model: the early layers themselves
# learn to be read (not only a map on top of them), so acceptance at small $k$ rises much further;
# the price is retraining the target, which changes its weights: it is a new target, whose quality
# has to be checked again. Sharing the cache and activations between draft and verifier, as
# LayerSkip does, would also remove the draft's own prefill and catch-up passes.

# %% [markdown]
# ## 6. A live look: one prompt, one exit with and without its adapter

# %%
from utils.selfspec import load_adapters

adapters = load_adapters(target) if pair.name == "tiny" else {}  # the shipped adapters fit the tiny target only
ids = tok(prompts[1], return_tensors="pt").input_ids.to(pair.device)
K = 12 if 12 in adapters or not adapters else max(adapters)
drafts = {"draft model": draft_model, f"exit {K}": early_exit_draft(target, K)}
if K in adapters:
    drafts[f"exit {K} + adapter"] = early_exit_draft(target, K, adapters[K])
outs = []
print(f"[{pair.name} pair, {hw}, gamma {m['gamma']}, T = 0, one prompt, exit K = {K}; single run, not a benchmark]")
for label, d in drafts.items():
    out = speculative_generate(target, d, ids, max_new_tokens=48, gamma=m["gamma"], eos_token_id=eos)
    outs.append(out)
    print(f"{label:18s}: {len(out.rounds):2d} target passes for {out.new_tokens} tokens, alpha per drafted "
          f"{out.acceptance_rate:.2f}, per checked {out.checked_acceptance_rate:.2f}, draft {out.draft_time * 1e3:.0f} ms, "
          f"target {out.target_time * 1e3:.0f} ms")
with torch.inference_mode():
    greedy = target.generate(ids, max_new_tokens=48, do_sample=False, eos_token_id=eos, pad_token_id=0)
print(f"same text for all {len(outs)} drafts:", all(torch.equal(o.sequences, outs[0].sequences) for o in outs),
      "| equal to HF greedy decoding of the target:", torch.equal(outs[0].sequences, greedy))
print(repr(tok.decode(outs[0].sequences[0, ids.shape[1]:])))

# %% [markdown]
# The same text for every draft, and it is the target's own greedy text (both checked above); only
# the number of target passes and the time split change.

# %% [markdown]
# ## 7. Exercise: write the early-exit head
#
# Complete `exit_head(target, hidden)`: given a layer's output `hidden` of shape $(1, L, d)$ ($L$
# positions), return the logits $(1, L, V)$ that the target's head would give it: final norm, LM
# head, then the soft cap if the config has one (read it from `target.config`: SmolLM2 has none). The
# checker compares it with `utils.selfspec.exit_logits` at three layers, then with the config's cap
# changed.

# %%
from utils.exercises import check_11, hint  # stuck? hint("11"), one more hint per call


def exit_head(target, hidden):
    # YOUR CODE HERE: target.model.norm, target.lm_head, then the soft cap, if the config has one:
    # getattr(target.config, "final_logit_softcapping", None)
    raise NotImplementedError


check_11(exit_head, pair)

# %% [markdown]
# The reference solution through the same checker:

# %%
from notebooks.solutions.ex11_exit_head import exit_head as reference

check_11(reference, pair)

# %% [markdown]
# ## Try this
# - Section 3 on the *workshop* prompts (text the pair was trained on): do the exits agree more?
# - Rerun the benchmark with `--gamma 2` and `--ks 16 18 19`: near the top, where $\alpha$ is
#   highest, does any exit beat the plain loop? Compare with `utils.theory.optimal_gamma`.
# - Draft & Verify skips *intermediate* layers instead of the top ones. Section 3 listed the
#   layers that barely change the stream: what $c$ and $\alpha$ would a draft that skips exactly
#   those have? (Estimate $\alpha$ with `exit_agreement`-style code and $c$ as the share of layers
#   it keeps.)
# - Train adapters with `!cd .. && "{sys.executable}" -m utils.selfspec train --steps 100` in a cell
#   (the repository's root, this kernel's Python), then `--steps 600`: how does acceptance grow
#   with training?

# %% [markdown]
# ## What you learned
# - A self-speculative draft can share every weight with the target: its first $k$ layers and its
#   own head. No second model and no extra weights (only its own KV cache for the first $k$ layers,
#   plus an adapter's $d + d^2$ parameters where one is used); the output stays exactly the target's.
# - Its cost grows like $k/n$; its acceptance depends on whether layer $k$ can be read by the head,
#   which a model trained only on its last layer never learned. A speedup needs $\alpha > c$, and
#   by a margin that pays for a verify pass costing more than one step: in the committed benchmark
#   (tiny pair, one CPU thread, $\gamma$ and both temperatures printed in section 4) almost every
#   exit was slower than the plain loop.
# - A small adapter trained against the target's own distribution (the target frozen) raises the
#   exits' acceptance substantially in a short CPU run; training the model itself with an
#   early-exit loss (LayerSkip) is the full fix, at the price of changing the target.

# %% [markdown]
# ## References
# - Elhoushi et al., *LayerSkip: Enabling Early Exit Inference and Self-Speculative Decoding*, ACL
#   2024: https://arxiv.org/abs/2404.16710
# - Zhang et al., *Draft & Verify: Lossless Large Language Model Acceleration via Self-Speculative
#   Decoding*, ACL 2024 (drafts by skipping intermediate layers, no training):
#   https://arxiv.org/abs/2309.08168
# - Liu et al., *Kangaroo: Lossless Self-Speculative Decoding via Double Early Exiting*, 2024 (a
#   trained adapter on a shallow sub-network, plus stopping the draft on low confidence):
#   https://arxiv.org/abs/2404.18911
# - nostalgebraist, *interpreting GPT: the logit lens*, LessWrong, 2020 (reading intermediate layers
#   with the final LM head): https://www.lesswrong.com/posts/AcKRB8wDpdaN6v6ru/interpreting-gpt-the-logit-lens
# - Belrose et al., *Eliciting Latent Predictions from Transformers with the Tuned Lens*, 2023 (an
#   affine map per layer, trained by KL to the final layer's distribution): https://arxiv.org/abs/2303.08112
# - Leviathan, Kalman, Matias, *Fast Inference from Transformers via Speculative Decoding*, ICML
#   2023: https://arxiv.org/abs/2211.17192
