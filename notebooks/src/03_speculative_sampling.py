# %% [markdown]
# # 03 · Speculative sampling from scratch
#
# Notebook 02's method let the target score the draft but never change it. Here is the method that
# lets it decide, the algorithm of Leviathan et al. (2023) and Chen et al. (2023): a cheap draft
# model guesses $\gamma$ tokens, the target checks all of them in **one** forward pass, and a
# rejection rule keeps the output distributed *exactly* as if the target had sampled alone. We take one round
# apart step by step, then run the full algorithm and check its two promises: greedy output equal to
# the target's, and sampled output distributed like the target's.
#
# **You will learn**
# - the accept rule $\min(1, p/q)$, the residual distribution $\mathrm{norm}(\max(0, p-q))$ and the bonus token;
# - why resampling from $p$ after a rejection (as one popular guide says) is wrong, with a histogram;
# - the acceptance rate $\alpha$ and tokens per round $\tau = \frac{1-\alpha^{\gamma+1}}{1-\alpha}$, measured.
#
# **Time to run:** about a minute on a laptop CPU with the tiny pair.

# %%
# SETUP

# %%
import torch

from utils.models import environment_report, load_pair, load_prompts

PAIR = None  # None: $SPECDEC_PAIR, else "tiny"
pair = load_pair(PAIR)
tok = pair.tokenizer
print(environment_report(pair))

# %% [markdown]
# ## 1. One round, step by step
#
# Let $q$ be the draft's next-token distribution and $p$ the target's, each after its temperature,
# top-k and top-p (its *warping*). Only the **target's** warping decides what comes out: the
# algorithm reproduces $p$, whatever $q$ is. The draft's warping only changes $q$, so only how often
# its tokens are accepted, that is, the speed. `speculative_generate` warps the draft the same way as
# the target, because that usually maximizes acceptance. One round:
#
# 1. **Draft**: sample $x_1 \sim q(\cdot \mid \text{prefix})$, $x_2 \sim q(\cdot \mid \text{prefix}, x_1)$, … up to $x_\gamma$.
# 2. **Verify**: one target pass over $[\text{prefix}, x_1..x_\gamma]$ gives $p$ at all $\gamma + 1$ positions.
# 3. **Accept** $x_i$ left to right with probability $\min\left(1, \frac{p(x_i)}{q(x_i)}\right)$: draw $u_i \sim U(0,1)$, accept if $u_i < p(x_i)/q(x_i)$.
# 4. At the first rejection, sample a replacement from the **residual** $r(x) = \frac{\max(0,\, p(x) - q(x))}{\sum_y \max(0,\, p(y) - q(y))}$ and end the round.
# 5. If all $\gamma$ were accepted, sample a **bonus** token from $p$ at position $\gamma + 1$.
#
# `utils.speculative.one_round` does exactly this without caches, so we can look at every number.

# %%
from utils.plots import plot_round
from utils.speculative import one_round

prompt = load_prompts()[1]
ids = tok(prompt, return_tensors="pt").input_ids.to(pair.device)
g = torch.Generator().manual_seed(3)
r = one_round(pair.target, pair.draft, ids, gamma=4, temperature=1.0, generator=g)
v = r["verification"]
print("drafted:", [tok.decode([t]) for t in r["drafted"]])
print(f"accepted {v.n_accepted} of 4, then a {v.kind} token: {tok.decode([v.token])!r}")
plot_round(r["p"], r["q"], r["drafted"].tolist(), v, tok).axes[0].set_ylabel("probability");

# %% [markdown]
# Each panel is one drafted position: the draft's $q$ (orange) and the target's $p$ (blue) over the
# likeliest tokens; the grey band is the drafted token. Where $p(x_i) \ge q(x_i)$ the token is always
# kept; where the draft was over-confident it is kept only with probability $p/q$.
#
# When a token is rejected, the replacement comes from the residual: the part of $p$ that the draft
# *under*-proposed. Here is that distribution for the first rejected position (if there was one;
# change the seed above to see others):

# %%
import matplotlib.pyplot as plt

from utils.speculative import residual_distribution

i = v.n_accepted if v.kind == "resample" else 0
p_i, q_i = r["p"][i].cpu(), r["q"][i].cpu()  # matplotlib plots tensors on the CPU only
res = residual_distribution(p_i, q_i)
top = torch.argsort(p_i + q_i, descending=True)[:10]
fig, ax = plt.subplots(figsize=(7, 3), layout="constrained")
dists = {"q (draft)": (q_i, "#f59e0b"), "p (target)": (p_i, "#2563eb"),  # the colours above
         "residual norm(max(0, p-q))": (res, "#16a34a")}
for k, (name, (d, colour)) in enumerate(dists.items()):
    ax.bar(torch.arange(10) + 0.27 * (k - 1), d[top], 0.27, label=name, color=colour)
ax.set_xticks(range(10), [repr(tok.decode([t]))[1:-1] for t in top], rotation=45)
ax.set(ylabel="probability", title=f"position {i + 1}: where a replacement is drawn from")
ax.legend();

# %% [markdown]
# Why this is exact, in one line: a token $x$ comes out of a position either as an accepted draft,
# with probability $q(x)\min(1, p(x)/q(x)) = \min(q(x), p(x))$, or as a replacement, with probability
# $\big(\sum_y \max(0, q(y)-p(y))\big)\, r(x) = \max(0, p(x) - q(x))$ (the rejection mass equals the
# residual's normaliser). The sum is $\min(q,p) + \max(0, p-q) = p(x)$. Exactly the target.

# %% [markdown]
# ## 2. The full algorithm
#
# `speculative_generate` adds what a real decoder needs: both models keep KV caches across rounds
# and crop them after a rejection; drafts are shortened near `max_new_tokens`; generation stops at
# EOS. At temperature 0 both distributions are one-hot, so the rule becomes "accept while $x_i$ is
# the target's arg max", and the output must equal target greedy decoding **token for token**, up to
# floating-point rounding (see the check after the next cells).

# %%
from IPython.display import HTML

from utils.render import rounds_html
from utils.speculative import speculative_generate

eos = pair.target.generation_config.eos_token_id  # stop where the target's generate stops
out = speculative_generate(pair.target, pair.draft, ids, max_new_tokens=80, gamma=4, eos_token_id=eos)
print(f"acceptance rate {out.acceptance_rate:.2f} per drafted token (accepted / drafted), "
      f"{out.checked_acceptance_rate:.2f} per checked token (accepted / (accepted + rejections); section 4)")
print(f"tokens per round = {out.tokens_per_round:.2f}, rounds = {len(out.rounds)}  [one workshop prompt, gamma=4, greedy]")
HTML(rounds_html(out.rounds, tok, prompt=prompt))

# %% [markdown]
# Greedy equivalence on the first workshop prompts, for several $\gamma$ (the counts are printed).
# Prompt and continuation together run past the tiny pair's sliding window (its size is printed), so
# the sliding-window layers are exercised too. `test_greedy_equals_target_greedy` in
# `tests/test_speculative.py` checks more prompts and lengths.

# %%
# NBVAL_CHECK_OUTPUT
prompts, N_NEW = load_prompts()[:10], 72
same = {gamma: 0 for gamma in (1, 4, 8)}
runs = []  # (prompt ids, generate's output with its logits, speculative output at gamma 4): checked below
for p in prompts:
    x = tok(p, return_tensors="pt").input_ids.to(pair.device)
    ref = pair.target.generate(x, max_new_tokens=N_NEW, do_sample=False, output_logits=True, return_dict_in_generate=True)
    for gamma in same:
        out_g = speculative_generate(pair.target, pair.draft, x, max_new_tokens=N_NEW, gamma=gamma, eos_token_id=eos)
        same[gamma] += torch.equal(out_g.sequences, ref.sequences)
        if gamma == 4:
            runs.append((x, ref, out_g))
for gamma, n in same.items():
    print(f"gamma={gamma}: {n}/{len(prompts)} prompts identical to target greedy")
print(f"{N_NEW} new tokens; shortest prompt + continuation {min(r.sequences.shape[1] for _, r, _ in runs)} tokens, "
      f"sliding window {getattr(pair.target.config, 'sliding_window', None)} tokens")

# %% [markdown]
# "Token for token" holds up to floating-point rounding. The verification pass scores $\gamma + 1$
# tokens at once on top of a KV cache, `generate` scores one per step, and the two shapes can run
# different kernels that round differently. In fp32 on a CPU (the tiny pair here) the differences are
# far smaller than the gaps between the target's two likeliest tokens (printed below), and the outputs
# are identical in every test. In bf16 or fp16 on a GPU (and with 4-bit weights, notebook 06
# section 4) rounding is much coarser, and where the top two tokens are nearly tied the arg max can
# flip: the texts then part ways at that token, although both are "target greedy".
#
# The check, `utils.speculative.greedy_check`: it recomputes the target's logits the way the
# verification computed them (the same $(\gamma+1)$-token passes over a KV cache, replayed from the
# run's rounds) and compares them with `generate`'s one-token steps. If the outputs differ, look at
# the target's top-2 logit gap at the first differing token; if they agree, the smallest gap along
# the sequence, set against the largest rounding difference between the two ways of scoring, says how
# far they were from flipping. The runs of the cell above, at $\gamma = 4$:

# %%
from utils.speculative import greedy_check

for p, (x, gen, spec) in zip(prompts, runs):
    c = greedy_check(pair.target, x, gen, spec)
    where = (f"first difference at new token {c['first_difference']}, top-2 gap there {c['gap_there']:.4f}"
             if c["first_difference"] is not None else f"smallest top-2 gap {c['min_gap']:.4f} (new token {c['at']})")
    print(f"{p[:30]:30s} identical: {c['identical']}; {where}; rounding between the shapes {c['rounding']:.1e}")
print(f"[{pair.name}, {pair.target.dtype}, {pair.device}, workshop prompts, gamma=4, {N_NEW} new tokens]")

# %% [markdown]
# ## 3. Exactness when sampling, and the biased rule
#
# *The Machine Learning Practitioner's Guide to Speculative Decoding* (Machine Learning Mastery,
# 2026, https://machinelearningmastery.com/the-machine-learning-practitioners-guide-to-speculative-decoding/)
# keeps the accept rule but, after a rejection, says to "generate one new token from the target":
# a fresh sample from $p$, not from the residual. Exactly what that emits: the draft proposes $x$
# and it is accepted with probability $q(x)\min(1, p(x)/q(x)) = \min(p, q)(x)$, so a round rejects
# with probability $1 - \beta$, where $\beta = \sum_y \min(p, q)(y)$ is the acceptance probability,
# and then draws from $p$. A token $x$ comes out with probability
#
# $$\min(p, q)(x) + (1 - \beta)\,p(x) \;=\; p(x) + \big(\min(p, q)(x) - \beta\,p(x)\big).$$
#
# So the tokens that gain are those with $p(x) > 0$ and $q(x) > \beta\,p(x)$, not simply "the tokens
# the draft likes": a token the draft proposes exactly as often as the target can gain too. A token
# with $p(x) = 0$ never gains, however much the draft likes it: both terms are 0 (it is never
# accepted, and the fresh sample from $p$ never draws it). The rest lose or break even. The rule is
# harmless exactly when $q = \beta\,p$ wherever $p > 0$: then $\min(p, q) = \beta\,p$ and the sum
# is $p$ (an example with $q$ far from $p$ is computed below). $q = p$ ($\beta = 1$: nothing is ever
# rejected) and greedy decoding ($p$ one-hot: the residual and $p$ both give the target's arg max)
# are the usual cases. A small synthetic example: 6 tokens, `N_ROUNDS` rounds of $\gamma = 1$ each
# (set in the next cell).
#
# How to judge the counts: a **chi-square test** compares how often each token came out with how
# often $p$ says it should. Its **p-value** is the chance that a sampler that really follows $p$
# lands at least this far from it by luck. A tiny p-value (below the cell's `LEVEL`) is strong
# evidence against luck: this rule does not sample from $p$ (evidence, not proof: a correct sampler
# falls below `LEVEL` once in 1 / `LEVEL` runs). The **total variation** distance,
# $\tfrac12 \sum_x |\hat f(x) - p(x)|$, says how far the observed frequencies $\hat f$ are from $p$.

# %%
import numpy as np
from scipy.stats import chisquare

from utils.speculative import verify_step, verify_step_biased

p6 = torch.tensor([0.05, 0.10, 0.40, 0.25, 0.15, 0.05])  # target
q6 = torch.tensor([0.40, 0.30, 0.10, 0.10, 0.05, 0.05])  # an over-confident draft
N_ROUNDS, LEVEL = 20_000, 1e-3  # rounds of the simulation; the chi-square test's level
g = torch.Generator().manual_seed(0)
emitted = {"residual (correct)": [], "resample from p (biased)": []}
for _ in range(N_ROUNDS):
    x = torch.multinomial(q6, 1, generator=g)
    for name, rule in zip(emitted, (verify_step, verify_step_biased)):
        v = rule(torch.stack([p6, p6]), q6[None], x, generator=g)
        emitted[name].append(int(x) if v.n_accepted else v.token)

# %%
# NBVAL_CHECK_OUTPUT
for name, s in emitted.items():
    counts = np.bincount(s, minlength=6)
    pvalue = chisquare(counts, p6.double().numpy() * len(s)).pvalue
    tv = 0.5 * np.abs(counts / len(s) - p6.numpy()).sum()
    print(f"{name:26s} chi-square vs p: {'PASS' if pvalue > LEVEL else 'FAIL'} (total variation {'< 0.01' if tv < 0.01 else '> 0.05' if tv > 0.05 else 'in between'})")

# %% [markdown]
# The formula above, computed for this $p$ and $q$, and the total variation distance
# $\mathrm{TV} = \frac{1}{2}\sum_x |\text{emitted}(x) - p(x)|$ it predicts, against the simulation:

# %%
beta = float(torch.minimum(p6, q6).sum())
biased = torch.minimum(p6, q6) + (1 - beta) * p6  # what the Guide's rule emits
print(f"beta = sum min(p, q) = {beta:.3f}")
print("token             " + " ".join(f"{t:>6d}" for t in range(6)))
for name, d in (("p (target)", p6), ("q (draft)", q6), ("beta * p", beta * p6), ("biased rule emits", biased)):
    print(f"{name:17s} " + " ".join(f"{float(v):6.3f}" for v in d))
print("tokens that gain (p > 0 and q > beta * p):", [t for t in range(6) if p6[t] > 0 and q6[t] > beta * p6[t]])
print(f"total variation from p: predicted {0.5 * float((biased - p6).abs().sum()):.3f} for the biased rule, 0 for the correct one; "
      + ", ".join(f"{name} {0.5 * np.abs(np.bincount(s, minlength=6) / len(s) - p6.numpy()).sum():.3f}" for name, s in emitted.items())
      + " in the simulation")

# %%
# Exact whenever q = beta * p where p > 0, even with q far from p:
p3, q3 = torch.tensor([0.5, 0.5, 0.0]), torch.tensor([0.25, 0.25, 0.5])
m3 = torch.minimum(p3, q3)
print(f"p = {p3.tolist()}, q = {q3.tolist()}: beta = {float(m3.sum()):.2f}, "
      f"the biased rule emits {(m3 + (1 - m3.sum()) * p3).tolist()}")
print(f"tokens that gain (p > 0 and q > beta * p): {[t for t in range(3) if p3[t] > 0 and q3[t] > m3.sum() * p3[t]]}; "
      f"q > beta * p alone would say {[t for t in range(3) if q3[t] > m3.sum() * p3[t]]}")

# %%
fig, ax = plt.subplots(figsize=(7, 3), layout="constrained")
ax.bar(np.arange(6) - 0.27, p6, 0.27, label="target p")
for k, (name, s) in enumerate(emitted.items()):
    ax.bar(np.arange(6) + 0.27 * k, np.bincount(s, minlength=6) / len(s), 0.27, label=name)
ax.plot(np.arange(6) + 0.27, biased, "k_", ms=14, mew=2, label="biased rule, predicted")
ax.set(xlabel="token", ylabel="frequency", title=f"emitted tokens, {N_ROUNDS:,} rounds")
ax.legend(fontsize=8);

# %% [markdown]
# The correct rule matches $p$; the biased one matches the formula: it over-produces exactly the
# tokens with $p(x) > 0$ and $q(x) > \beta\,p(x)$ (printed above, including one where $q$ and $p$
# are equal) and under-produces the other tokens that $p$ can emit, by the total variation printed
# above.

# %% [markdown]
# The same check on the real pair: the first new token of `speculative_generate` at temperature 1,
# against the target's exact next-token distribution.

# %%
from utils.plots import plot_distribution_check
from utils.sampling import probs_from_logits

with torch.no_grad():
    p_first = probs_from_logits(pair.target(ids).logits[0, -1], temperature=1.0)  # (V,)
g, N_SAMPLES = torch.Generator().manual_seed(1), 300
firsts = [speculative_generate(pair.target, pair.draft, ids, max_new_tokens=3, gamma=2, temperature=1.0,
                               generator=g).sequences[0, ids.shape[1]].item() for _ in range(N_SAMPLES)]
plot_distribution_check({"speculative sampling": firsts}, p_first.cpu().numpy(), tok);

# %% [markdown]
# The numbers behind the plot: a chi-square test and the total variation distance, with tokens binned
# as the tests bin them (`utils.speculative.distribution_check`): the likeliest tokens one by one,
# then the rest in two bins, the tokens the draft over-weights ($q > p$) and the others; rare bins
# are pooled. Even exact samples are some distance from $p$, so the second line draws as many tokens
# from $p$ itself, as a yardstick:

# %%
from utils.sampling import multinomial
from utils.speculative import distribution_check

with torch.no_grad():
    q_first = probs_from_logits(pair.draft(ids).logits[0, -1], temperature=1.0)  # (V,)
direct = multinomial(p_first, len(firsts), g, replacement=True).tolist()  # exact samples (g: a CPU generator)
for name, s in (("speculative sampling", firsts), ("drawn from p directly", direct)):
    d = distribution_check(s, p_first, q=q_first)
    print(f"{name:21s}: {d['n']} samples, chi-square p-value {d['pvalue']:.2f}, total variation {d['tv']:.3f} "
          f"({d['bins']} bins): " + ("consistent with p" if d["pvalue"] > LEVEL else f"below the level {LEVEL:g}"))

# %% [markdown]
# Why split the rest? The Guide's rule gives the tokens with $q > \beta p$ too much (section 3), and many
# of them sit in the long tail. Its exact law at this position is $\min(p, q) + (1-\beta)\,p$,
# so we can ask how far from $p$ it lies as each binning sees it, with no sampling at all:

# %%
from utils.interactive import emitted_law
from utils.speculative import binned_tv, check_bins

guide = emitted_law(p_first.double(), q_first.double(), "p")  # (V,) the Guide's rule, exactly
whole = 0.5 * float((guide - p_first.double()).abs().sum())
print(f"the Guide's rule vs p, total variation over all {p_first.numel()} tokens: {whole:.3f}; as the bins see it: "
      f"rest pooled {binned_tv(guide, p_first, check_bins(p_first)):.3f}, "
      f"rest split by q > p {binned_tv(guide, p_first, check_bins(p_first, q_first)):.3f}")

# %% [markdown]
# A test only sees what its bins keep: a bias that stays inside one bin is invisible to it.
# `test_splitting_the_rest_by_q_over_p_catches_the_guides_rule_that_a_pooled_rest_misses` in
# `tests/test_notebook_helpers_0103.py` builds such a case: there the Guide's rule moves its whole
# bias into the tail, passes the test with the rest pooled, and fails it with the rest split by
# $q > p$, which exact samples pass. With `N_SAMPLES` samples (a few hundred) the check above can
# only catch a large bias.
# `test_sampling_matches_target_distribution` in `tests/test_speculative.py` runs the same check with
# more samples and under top-k and top-p warping, and `test_joint_distribution_of_the_first_two_tokens`
# checks the first two tokens jointly.

# %% [markdown]
# ## 4. Acceptance rate and tokens per round
#
# If each drafted token is accepted independently with probability $\alpha$, a round yields
# $\tau = \frac{1-\alpha^{\gamma+1}}{1-\alpha}$ tokens on average (Leviathan et al., Eq. 1). Two ways to
# measure $\alpha$ differ here: accepted / drafted (what the Practitioner's Guide defines) counts the
# tokens drafted *after* a rejection, which are thrown away unchecked, so it falls as $\gamma$ grows;
# the $\alpha$ of Eq. 1 is accepted / (accepted + rejections), the rate per *checked* token.
#
# Does $\alpha$ depend on the text? The tiny pair was trained on Python's documentation, and the
# **workshop** prompts come from the topics it was trained on;
# `load_prompts("heldout")` are prompts in the style of topics held out of training. A few workshop
# prompts at each $\gamma$ (the dots below), then a few held-out ones at $\gamma = 4$ for comparison,
# temperature 1 (`utils.speculative.acceptance_stats` pools the rounds of all runs; the counts are printed):

# %%
from utils.speculative import acceptance_stats
from utils.theory import expected_tokens_per_round


def report(label, s, gamma):
    print(f"gamma={gamma}, {label}: accepted/drafted={s['per_drafted']:.2f}  alpha per checked token={s['alpha']:.2f}  "
          f"tau measured={s['tau']:.2f}  Eq. 1 at this alpha: {expected_tokens_per_round(s['alpha'], gamma):.2f}")


runs, N_ACC = {}, 48  # gamma -> acceptance_stats; new tokens per run
for gamma in (1, 2, 4, 8):
    runs[gamma] = acceptance_stats(pair.target, pair.draft, tok, prompts[:6], gamma, max_new_tokens=N_ACC)
    report(f"{runs[gamma]['prompts']} workshop prompts", runs[gamma], gamma)
measured = {g: (s["alpha"], s["tau"]) for g, s in runs.items()}  # gamma -> (alpha, tau)

# %%
heldout = acceptance_stats(pair.target, pair.draft, tok, load_prompts("heldout")[:3], 4, max_new_tokens=N_ACC)
report(f"{heldout['prompts']} held-out prompts", heldout, 4)
print(f"[{pair.name}, {pair.device}, temperature 1, {N_ACC} new tokens; workshop prompts come from the training topics, "
      f"held-out ones from topics held out of training]")

# %%
from utils.plots import plot_tau

plot_tau(measured, title=f"{pair.name}, temperature 1, {runs[1]['prompts']} workshop prompts x {N_ACC} new tokens: "
                         "measured (dots) vs Eq. 1 (lines)");

# %% [markdown]
# Eq. 1 at each run's own $\alpha$ (the dots against their curves) is a consistency check, not a
# prediction: $\alpha$ and $\tau$ come from the same rounds, and at $\gamma = 1$, $\tau = 1 + \alpha$
# by construction, up to the last round of each generation, cut short by `max_new_tokens`. To
# *predict*, take $\alpha$ from one run and forecast the others: below, $\alpha$ from the
# $\gamma = 1$ rounds alone, with the band that its sampling error allows ($\pm 2$ binomial
# standard errors over the checked tokens). A measured $\tau$ outside the band would point at what
# Eq. 1 assumes: acceptances independent of each other, with one rate for every position and prompt.

# %%
from math import sqrt

acc, _, rej = runs[1]["counts"]  # pooled over the gamma = 1 runs: accepted, drafted, rejections
a1 = acc / (acc + rej)
se = sqrt(a1 * (1 - a1) / (acc + rej))  # binomial standard error of alpha
for gamma in (2, 4, 8):
    lo, hi = (expected_tokens_per_round(min(max(a, 0.0), 0.999), gamma) for a in (a1 - 2 * se, a1 + 2 * se))
    tau = runs[gamma]["tau"]
    print(f"gamma={gamma}: from gamma=1's alpha {a1:.2f} (+-{2 * se:.2f}, {acc + rej} checked tokens) Eq. 1 predicts "
          f"tau {expected_tokens_per_round(a1, gamma):.2f} ({lo:.2f} to {hi:.2f}); measured {tau:.2f}, "
          + ("inside the band" if lo <= tau <= hi else "OUTSIDE the band"))

# %% [markdown]
# Do the two sets of prompts accept alike? Compare the held-out line with the workshop line at
# $\gamma = 4$. A handful of prompts (their count is printed) is a small sample, so here is the
# committed benchmark of the tiny pair (notebook 05) for each set, at both temperatures: pooled over
# its prompts, and each prompt's own $\alpha$ (lowest to highest), which shows how much single
# prompts vary:

# %%
import json

from utils.models import ROOT

bench = {name: json.loads((ROOT / f"data/results/{f}.json").read_text())
         for name, f in (("workshop", "bench-tiny-cpu"), ("held-out", "bench-tiny-cpu-heldout"))}
for T in (0.0, 1.0):
    a = {name: next(s["alpha_checked"] for s in res["summary"] if s["gamma"] == 4 and s["temperature"] == T)
         for name, res in bench.items()}
    each = {name: sorted(r["alpha_checked"] for r in res["rows"] if r["method"] == "ours_speculative"
                         and r["gamma"] == 4 and r["temperature"] == T) for name, res in bench.items()}
    print(f"T={T}, gamma=4, alpha per checked token, pooled: workshop {a['workshop']:.2f}, held-out {a['held-out']:.2f} "
          f"(difference {a['workshop'] - a['held-out']:.2f}); per prompt: "
          + ", ".join(f"{name} {v[0]:.2f} to {v[-1]:.2f}" for name, v in each.items()))
print("[" + "; ".join(f"{name}: {len({r['prompt'] for r in res['rows']})} prompts, {res['meta']['max_new_tokens']} new "
                      f"tokens, {res['meta']['hardware']}, {res['meta']['date']}" for name, res in bench.items()) + "]")

# %% [markdown]
# Pooled, the held-out prompts accept less in greedy mode, and the gap is smaller at temperature 1;
# single prompts overlap (the ranges), so with the few prompts per set printed above read it as a
# tendency, not a law: $\alpha$ likely depends on the text too, and how much depends on the
# temperature: greedy acceptance only needs the two arg maxes to agree, which the
# draft manages best on text like its training data.

# %% [markdown]
# ## Try this
# - Change the seed in section 1 until you see a bonus token (every drafted token accepted), and until a round
#   keeps some of its draft but not all of it.
# - In section 3, make the draft *equal* to the target (`q6 = p6`): is the biased rule still biased? Why?
# - Make the draft bad: `q6 = torch.full((6,), 1/6)`. What happens to the acceptance rate, and does
#   the correct rule stay exact?
# - Warp the real-pair check of section 3 with top-k: pass `top_k=5` to both `speculative_generate`
#   (it warps draft and target alike) and `probs_from_logits` (the exact $p$ to compare with). Does
#   the check still pass? (Section 3's synthetic `verify_step` takes ready-made probabilities: no top-k there.)

# %% [markdown]
# ## Exercise: write `verify_step`
#
# Write one accept/reject step, `my_verify_step(p, q, draft_tokens, u, generator=None)`, with the
# rule of section 1 (`utils.speculative.verify_step` implements it; here the uniforms `u` are passed
# in so that every decision can be checked, and the function returns a plain tuple):
#
# - `p`: `(k + 1, V)` target probabilities, `q`: `(k, V)` draft probabilities, `draft_tokens`: `(k,)`, `u`: `(k,)`;
#   here `k` is section 1's $\gamma$, and rows, tokens and uniforms are indexed from 0 (section 1
#   counted $x_1..x_\gamma$ from 1): row `i` of `p` and `q` is the distribution of `draft_tokens[i]`;
# - accept `draft_tokens[i]` while `u[i] < p[i, x] / q[i, x]` (x that token); at the first rejection,
#   at row `i`, return `(i, token)`, the number accepted and a token sampled from the residual
#   $\mathrm{norm}(\max(0, p_i - q_i))$ of that row;
# - if all `k` are accepted, return `(k, token)` with the bonus token sampled from `p[k]`.
#
# Sample with `torch.multinomial(dist, 1, generator=generator)`. `check_03` first checks that each
# decision follows the `u` you pass, then checks decisions with known answers (greedy ones included), then runs thousands of rounds on two small vocabularies
# and asks a chi-square test whether the emitted tokens follow $p$: the biased rule of section 3
# fails it. The reference solution is in `notebooks/solutions/ex03_verify_step.py`.

# %%
from utils.exercises import check_03, hint  # stuck? hint("03"), one more hint per call


def my_verify_step(p, q, draft_tokens, u, generator=None):
    """p: (k + 1, V), q: (k, V), draft_tokens: (k,), u: (k,) -> (n_accepted, token)."""
    raise NotImplementedError("accept, reject, resample")


check_03(my_verify_step)

# %% [markdown]
# What a pass looks like: the reference solution, through the same checker.

# %%
from notebooks.solutions.ex03_verify_step import verify_step as reference

check_03(reference)

# %% [markdown]
# ## What you learned
# - One round: accept each drafted token with probability $\min(1, p/q)$, replace the first
#   rejected one by a sample from $\mathrm{norm}(\max(0, p - q))$, and add a bonus token from $p$
#   when all were accepted. Every emitted token is then distributed exactly as the target's.
# - Resampling from $p$ after a rejection (the Practitioner's Guide rule) emits
#   $\min(p, q) + (1 - \beta)\,p$: it over-produces the tokens with $p(x) > 0$ and
#   $q(x) > \beta\,p(x)$, where $\beta = \sum \min(p, q)$; a chi-square test against $p$ catches
#   it. It is harmless exactly when $q = \beta\,p$ wherever $p > 0$ ($q = p$ and greedy decoding
#   are the usual cases).
# - Greedy decoding is the same rule on one-hot distributions, so speculative greedy output equals
#   target greedy output token for token, up to floating-point rounding: in bf16/fp16 a near-tie
#   can flip, and the top-2 gap at the first differing token shows it.
# - Measure $\alpha$ per checked token, accepted / (accepted + rejections): with it, Eq. 1's
#   $\tau = \frac{1-\alpha^{\gamma+1}}{1-\alpha}$ predicts the tokens per round.

# %% [markdown]
# ## References
# - Leviathan, Kalman, Matias, *Fast Inference from Transformers via Speculative Decoding*, ICML 2023
#   (Algorithm 1, Eq. 1): https://arxiv.org/abs/2211.17192
# - Chen et al., *Accelerating Large Language Model Decoding with Speculative Sampling*, 2023
#   (the same rule, proved exact; their letters are swapped: $q$ is the target there, $p$ the draft,
#   so the ratio reads $q/p$): https://arxiv.org/abs/2302.01318
# - *The Machine Learning Practitioner's Guide to Speculative Decoding*, Machine Learning Mastery,
#   2026 (the rule that resamples from $p$, section 3):
#   https://machinelearningmastery.com/the-machine-learning-practitioners-guide-to-speculative-decoding/
# - SciPy, `scipy.stats.chisquare`: https://docs.scipy.org/doc/scipy/reference/generated/scipy.stats.chisquare.html
