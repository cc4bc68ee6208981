# %% [markdown]
# # 04 · Playground: move gamma and temperature, watch the rounds
#
# Notebook 03 built speculative sampling and checked it: greedy output token for token against the
# target's own, sampled output by a chi-square test (evidence; the proof is Leviathan et al.'s and
# Chen et al.'s). Here you drive it. Pick a prompt, a
# draft length $\gamma$, a temperature (and top-k, top-p) and see every round of
# speculative sampling: which drafted tokens the target accepted, which one it rejected, which it
# never checked, and which tokens it put in their place, beside the text the target writes alone.
# Next to it: the measured acceptance rate, tokens per round, the cost ratio $c$ and the
# verification cost $v$ (the target's pass over $\gamma+1$ tokens, in one-token steps) as this run
# paid them, the speedup you actually got, and what the cost model makes of them (with the run's own
# $c$ and $v$ that is a decomposition of the run, not a prediction).
#
# **You will learn**
# - how $\gamma$ and temperature move the acceptance rate $\alpha$ (not always the way you expect);
# - why a larger $\gamma$ is not always faster: $\text{speedup} = \frac{1-\alpha^{\gamma+1}}{(1-\alpha)(\gamma c + v)}$ (Leviathan et al., Thm 3.8; the paper takes $v = 1$);
# - the best $\gamma$ for a measured $\alpha$, $c$ and $v$;
# - what the Practitioner's Guide's resampling rule does to the output distribution, live.
#
# **Time to run:** about 30 s on a laptop CPU with the tiny pair (the sliders need a live kernel).

# %%
# SETUP

# %%
from utils.models import describe_device, environment_report, load_pair, load_prompts

PAIR = None  # None: $SPECDEC_PAIR, else "tiny"
pair = load_pair(PAIR)
print(environment_report(pair))

# %% [markdown]
# ## The playground
#
# Colours: <span style="background:#c8f7c5">accepted draft token</span>
# <span style="background:#fecaca;text-decoration:line-through">rejected draft token</span>
# <span style="background:#f5f5f4;color:#78716c;outline:1px dashed #a8a29e">discarded, never checked</span>
# <span style="background:#fed7aa">resampled by the target</span>
# <span style="background:#bfdbfe">bonus token</span>
# <span style="background:#e5e7eb">target only</span>. Only the first rejected token of a round was
# checked: the tokens drafted after it are thrown away unseen. Hover a token for $p(x)$, $q(x)$,
# $\min(1, p/q)$, the uniform draw $u$ (when the round recorded it) and the decision. On the right,
# the target alone with the same settings and seed; below, the measured point on the curve of
# Leviathan et al.'s Eq. 1, the expected tokens per round $\tau(\alpha) = \frac{1-\alpha^{\gamma+1}}{1-\alpha}$,
# for this $\gamma$. Timings are wall-clock on this machine, so they move a little
# from run to run.

# %%
from utils.playground import Playground

pg = Playground(pair, load_prompts(), max_new_tokens=48)
pg.widget()

# %% [markdown]
# Not running a kernel (reading this on GitHub)? The same view as text: `~~struck~~` tokens were
# rejected, `{x}` discarded unchecked, `[x]` resampled, `<x>` bonus, `|` separates rounds. The
# playground object can be driven from code too, which is how the tests check it:
# `pg.run(gamma=6, temperature=1.0)` sets the controls and runs once, and raises a `ValueError` for a
# value outside a slider's range ($\gamma$ 1 to 10, temperature 0 to 3, 8 to 128 new tokens, top-k 0
# to 50, top-p 0.05 to 1), where assigning the slider (`pg.gamma.value = 12`) would silently clamp it.

# %%
from utils.render import rounds_text
from utils.speculative import speculative_generate

ids = pair.tokenizer(load_prompts()[0], return_tensors="pt").input_ids.to(pair.device)
out = speculative_generate(pair.target, pair.draft, ids, max_new_tokens=48, gamma=4)
print(rounds_text(out.rounds, pair.tokenizer))

# %% [markdown]
# **$c$ and $v$ in isolation.** The cost model needs $c$, a draft step over a target step, and
# $v(\gamma)$, the target's pass over $\gamma + 1$ tokens over its one-token step. Measured with each
# model stepping alone and warm (`utils.bench`); the figures and the exercise below use these:

# %%
from utils.bench import step_cost_ratio, verify_cost_ratios

cost = step_cost_ratio(pair, ids)  # c: one draft step / one target step, both one token, KV cache
v_iso = verify_cost_ratios(pair.target, range(1, 11))  # v: pass over gamma + 1 tokens / one-token step
print(f"in isolation: c = {cost['c']:.3f}, v = {v_iso['2']:.2f} / {v_iso['4']:.2f} / {v_iso['8']:.2f} at gamma 2 / 4 / 8")

# %% [markdown]
# **Three runs of the playground.** Per run: $\alpha$ per checked token, $\tau$, $k$ (draft passes
# per round), $c$ and $v$ as the run paid them in the loop, and three speedups over the target alone:
# measured, predicted and decomposed (the next two cells say what the last two are).

# %%
from utils.playground import runs_table

runs = [pg.run(gamma=g, temperature=t) for g, t in [(2, 0.0), (8, 0.0), (4, 1.0)]]  # each: checked, one run
print(runs_table(runs, cost["c"], v_iso))
print(f"[{pair.name} pair, {describe_device(pair.device)}, prompt {pg.prompt.value[:40]!r}..., "
      f"{pg.max_new_tokens.value} new tokens, seed {int(pg.seed.value)}; one run per row, so each speedup "
      "carries a single run's noise]")

# %% [markdown]
# **Predict or decompose.** *Predicted* feeds the cost model the $c$ and $v$ measured in isolation
# and Eq. 1's $\tau$ at the run's $\alpha$: a prediction, and the column gives its error.
# *Decomposed* divides the run's own $\tau$ by its own passes per round, $k c + v$ with the loop's
# $c$ and $v$: it only takes apart the run it came from, so its agreement with the measured speedup
# validates nothing (the gap is the loop's own work outside the forward passes).

# %% [markdown]
# **Why $c$ in the loop tends to be higher.** On a CPU, the first draft step after each target pass
# runs cold, and after a fully accepted round the draft's next step takes two tokens. One run's
# timings are noisy, though: the table's last line says how these runs came out.

# %% [markdown]
# Back to the starting settings ($\gamma = 4$, $T = 0$), so that the saved widgets show the run the
# text view printed; its $\tau$ chart, for readers without a live kernel:

# %%
pg.reset()
pg.static_figure();

# %% [markdown]
# ## The Practitioner's Guide's rule, live
#
# After a rejection the correct rule samples from $\text{norm}(\max(0, p - q))$; the Practitioner's
# Guide samples from $p$ again. Flip the switch: the bars are the emitted token's frequencies over
# thousands of rounds at one position (the first new token of the playground's prompt), the dashes
# are $p$ (in the static figure below, the crosses are $q$ and the title gives $\beta$). With the
# Guide's rule the tokens with $p(x) > 0$ and $q(x) > \beta\,p(x)$,
# $\beta = \sum_x \min(p(x), q(x))$, come out too often (notebook 03).
#
# The demo uses the playground's temperature, except when the playground is greedy (as now): at
# $T = 0$, $p$ and $q$ are one-hot, a rejection emits the target's arg max under either rule, and
# there is nothing to see; so it samples at $T = 1$. The lines below print the temperature used.

# %% [markdown]
# **The distance.** Between a distribution $f$ and $p$ it is the total variation distance,
# $\mathrm{TV} = \frac12 \sum_x |f(x) - p(x)|$ over the whole vocabulary. The frequencies of a few
# thousand draws leave most tokens drawn a few times or never, so for them the lines below take the
# sum over the chart's buckets instead: the 16 tokens likeliest under $p$ or $q$, and all others
# together as one. Merging tokens can only cancel differences, so a TV over buckets is a *lower
# bound* of the TV over all tokens. Beside it: what sampling noise alone gives over the same buckets,
# and the rule's exact law (its output distribution, computed without sampling), over the buckets and
# over all tokens.

# %%
pg.rule_widget()

# %%
for rule in ("p", "residual"):  # the Guide's rule first, then back to the correct one
    pg.rule_demo.rule.value = rule
    d = pg.rule_demo.last
    print(f"{rule:>8} at T = {d['temperature']:g}: TV from p over {len(d['freq'])} buckets {d['tv']:.3f} "
          f"(noise alone {d['noise']:.3f}); exact law {d['exact_tv']:.3f} over the buckets, "
          f"{d['exact_tv_all_tokens']:.3f} over all tokens")
print(pg.rule_demo.note)
pg.rule_demo.static_figure();  # both rules side by side, static (what the switch shows one at a time)

# %% [markdown]
# ## Acceptance across gamma and temperature
#
# $\alpha$ depends on how alike $p$ and $q$ are after warping (the same temperature, top-k and top-p
# applied to both models' logits, notebook 03, section 1): at temperature 0 only the arg max
# has to agree; at higher temperatures the whole distributions have to overlap. At one position a
# drafted token is accepted with probability
# $\beta = \sum_x \min(p(x), q(x)) = 1 - \mathrm{TV}(p, q)$ (notebook 03's $\beta$); $\alpha$
# is its average over positions. Each cell is $\alpha$ per *checked* token
# (accepted / (accepted + rejections)), the $\alpha$ of the cost model.

# %%
from utils.playground import acceptance_grid
from utils.plots import plot_heatmap

gammas, temps = [1, 2, 4, 6, 8], [0.0, 0.5, 1.0, 1.5]
grid = acceptance_grid(pair, load_prompts()[0], gammas, temps, max_new_tokens=40)
plot_heatmap(grid, temps, gammas, "temperature", "gamma", f"acceptance per checked token, {pair.name}");

# %%
from utils.playground import expected_acceptance

for t, row in zip(temps, grid):
    print(f"T={t}: measured alpha, mean over gamma {sum(row) / len(row):.2f} (cells {min(row):.2f} to {max(row):.2f})")
overlap = expected_acceptance(pair, load_prompts()[0], [0.0, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0])
print("expected alpha, no sampling noise:", "  ".join(f"T={t}: {a:.2f}" for t, a in overlap.items()))
t_min = min((t for t in overlap if t > 0), key=overlap.get)
print(f"lowest at T={t_min}; higher at T=3.0 than at T={t_min}: {overlap[3.0] > overlap[t_min]}")

# %% [markdown]
# **What the data shows.** Acceptance does not fall steadily with temperature. The line "expected
# alpha, no sampling noise" is the mean of $\sum_x \min(p(x), q(x))$ along one fixed text (the
# target's greedy continuation, the same at every temperature): no sampling at all, so its shape
# comes from the distributions alone. At $T = 0$, $p$ and $q$ are one-hot, and a position counts 1
# if their arg maxes agree, else 0. Once $T > 0$ neither is one-hot: a position where the arg maxes
# agree counts less than 1 wherever $p$ and $q$ differ at all, one where they disagree more than 0.
# For a draft that mostly agrees with the target the first effect usually wins: the line drops. At a high
# temperature both flatten toward uniform and become alike again, so it rises (as $T \to \infty$
# both are uniform and it tends to 1); the line below it says where it is lowest. The measured
# $\alpha$ of the heatmap is taken along the text actually sampled at each temperature, which can
# add an effect of its own (sampling visits positions, some in the tails, that the greedy text never
# reaches). The heatmap is one prompt and one seed with 40 new tokens per
# cell, a few dozen accept/reject decisions each, so neighbouring cells differ by noise as large
# as the trend: compare rows, not cells, and try other prompts and seeds in the playground.

# %% [markdown]
# ## The best gamma for this pair
#
# With $c$ measured in isolation as one draft step over one target step (both one token, KV cache,
# this machine) and $v(\gamma)$ as the target's pass over $\gamma + 1$ tokens over its one-token
# pass (Thm 3.8 takes $v = 1$), the cost model gives the expected speedup $\tau / (\gamma c + v)$
# for each $\gamma$. Single timings of $v(\gamma)$ wiggle from one $\gamma$ to the next (the first
# line below says by how much), and near a flat optimum those wiggles alone would pick "the best" $\gamma$; so the
# curves use a straight line fitted through the measured $v(\gamma)$ (`linear_verify_cost`; the
# first line below gives it and how far the measurements sit from it), and the legend lists every
# $\gamma$ within 1% of the best:

# %%
import matplotlib.pyplot as plt

from utils.playground import linear_verify_cost, near_best_gammas
from utils.theory import expected_speedup, optimal_gamma

c, fit = cost["c"], linear_verify_cost(v_iso)
v = fit["v"]  # v["4"]: the fitted pass over 5 tokens / one-token pass
print(f"v(gamma) = {fit['intercept']:.3f} + {fit['slope']:.4f} gamma; measurements at most {fit['max_residual']:.3f} off the line")
fig, ax = plt.subplots(figsize=(6, 4.6), layout="constrained")
for t, row in zip(temps, grid):
    alpha = sum(row) / len(row)
    ties = near_best_gammas(alpha, c, v)
    ax.plot(range(1, 11), [expected_speedup(alpha, g, c, v[str(g)]) for g in range(1, 11)], marker="o",
            label=f"T={t}: alpha={alpha:.2f}, best gamma={optimal_gamma(alpha, c, 10, v=v)}"
                  + (f" (within 1%: {ties[0]}-{ties[-1]})" if len(ties) > 1 else ""))
ax.axhline(1, color="k", lw=0.8)
ax.set(xlabel="gamma", ylabel="expected speedup", title=f"{pair.name} on {describe_device(pair.device)}: c = {c:.3f} in isolation "
       f"({cost['draft_step_ms']:.1f} ms / {cost['target_step_ms']:.1f} ms),\nv = {v['1']:.2f} (gamma 1) to "
       f"{v['10']:.2f} (gamma 10), a line fitted to measurements")
fig.legend(fontsize=8, loc="outside lower center");  # below the axes: it never covers a curve

# %% [markdown]
# **When can drafting pay at all?** A round yields $\tau = 1 + \alpha + \dots + \alpha^\gamma$ tokens
# and costs $\gamma c + v$ target steps, while plain decoding makes $\tau$ tokens in $\tau$ steps; so
# speculative decoding is faster exactly when $\tau > \gamma c + v$. Each of the $\gamma$ terms of
# $\tau - 1 = \alpha + \alpha^2 + \dots + \alpha^\gamma$ is at most $\alpha$, so a speedup needs
# $\gamma\alpha \ge \tau - 1 > \gamma c + v - 1$, that is
#
# $$\alpha \;>\; c + \frac{v - 1}{\gamma}.$$
#
# With $v = 1$ (Thm 3.8's assumption) this reads $\alpha > c$: a drafted token must be accepted more
# often than a draft step costs, in target steps. At $\gamma = 1$ the bound is exact ($\tau - 1 =
# \alpha$), so there the condition is also enough; at larger $\gamma$ it is only necessary (it
# replaced $\tau - 1$ by its upper bound $\gamma\alpha$). So below the lowest bar over all $\gamma$
# no draft length helps; above it, the cost model's curves say whether one does. For this pair,
# with the fitted $v(\gamma)$:

# %%
bar = {g: c + (v[str(g)] - 1) / g for g in range(1, 11)}  # the same for every temperature: c and v only
g_low = min(bar, key=bar.get)
print(f"c + (v - 1)/gamma: {bar[1]:.2f} at gamma 1, lowest {bar[g_low]:.2f} at gamma {g_low} (of 1..10)")
for t, row in zip(temps, grid):
    alpha = sum(row) / len(row)
    best = max(range(1, 11), key=lambda g: expected_speedup(alpha, g, c, v[str(g)]))
    print(f"T={t}: alpha {alpha:.2f} " + (f"clears it; the best gamma, {best}, is expected to give "
          f"{expected_speedup(alpha, best, c, v[str(best)]):.2f}x" if alpha > bar[g_low] else "is below it: no gamma up to 10 gives a speedup"))

# %% [markdown]
# The same model with sliders (hover the curve for the numbers), starting from this pair's greedy
# $\alpha$, the same $c$ and the same fitted $v(\gamma)$ as the figure: where does the best
# $\gamma$ go as $\alpha$ rises or $c$ grows?

# %%
from utils.interactive import CostModelExplorer

CostModelExplorer(alpha=round(sum(grid[0]) / len(grid[0]), 2), gamma=4, c=round(c, 3), v=v, max_gamma=10).widget()

# %% [markdown]
# ## Try this
# - Move the temperature from 0 to 3: where is $\alpha$ lowest for this pair, and does speculative
#   sampling pay off again at the top? Repeat with two or three seeds before you believe a difference.
# - Set $\gamma = 10$ at temperature 0 and at 1.5: how many drafted tokens are discarded unchecked
#   per round?
# - At temperature 1, set top-k to 1: why are the text and $\alpha$ now exactly the greedy ones?
# - Type your own prompt into the box, far from Python's documentation: what happens to $\alpha$,
#   and to the Guide's rule's drift?
# - The measured speedup includes Python overhead that the cost model ignores, and the in-loop $c$
#   and $v$ differ from the isolated ones: rerun the cell with the three settings a few times. Does
#   the prediction from $c$, $v$ in isolation overshoot or undershoot, and does that stay the same
#   from run to run?

# %% [markdown]
# ## Exercise: the cost model, by hand
#
# Write the two functions of the cost model in its paper form (Thm 3.8, $v = 1$; the figure above
# also divides by $v(\gamma)$, the line fitted through the measured values):
#
# - `tokens_per_round(alpha, gamma)`: the expected tokens per target pass,
#   $\tau = \frac{1-\alpha^{\gamma+1}}{1-\alpha}$ (and its limit at $\alpha = 1$);
# - `best_gamma(alpha, c, max_gamma=16)`: the $\gamma$ in 1..`max_gamma` with the largest
#   expected speedup $\tau / (\gamma c + 1)$ (Thm 3.8 with $v = 1$).
#
# `check_04_tau` and `check_04_gamma` compare them with `utils.theory` on a grid of $\alpha$, $c$
# and $\gamma$, and the first also with a simulation. The reference solution is in
# `notebooks/solutions/ex04_cost_model.py`.

# %%
from utils.exercises import check_04_gamma, check_04_tau, hint  # stuck? hint("04"), one more hint per call


def tokens_per_round(alpha, gamma):
    """Expected new tokens per target pass."""
    raise NotImplementedError("Eq. 1 here")


def best_gamma(alpha, c, max_gamma=16):
    """The gamma (an int) in 1..max_gamma with the largest expected speedup."""
    raise NotImplementedError("try every gamma")


check_04_tau(tokens_per_round)
check_04_gamma(best_gamma)

# %% [markdown]
# What a pass looks like: the reference solution, through the same checkers, then used on this
# pair's $c$:

# %%
from notebooks.solutions.ex04_cost_model import best_gamma as reference_gamma
from notebooks.solutions.ex04_cost_model import tokens_per_round as reference_tau

check_04_tau(reference_tau)
check_04_gamma(reference_gamma)
print(f"c = {c:.3f} in isolation, v = 1: " + ", ".join(f"alpha {a}: best gamma {reference_gamma(a, c)}" for a in (0.5, 0.7, 0.9)))

# %% [markdown]
# ## What you learned
# - $\alpha$ measures how much the draft's and the target's distributions overlap after the same
#   warping: the average over positions of $\beta = \sum_x \min(p(x), q(x))$; at temperature 0 only
#   the arg max has to agree.
# - Acceptance is not monotone in temperature: above $T = 0$ neither distribution is one-hot, so
#   $\sum_x \min(p, q) < 1$ wherever they differ at all and the overlap drops; high temperatures
#   flatten both toward uniform and it rises again.
# - A round yields $\tau = \frac{1-\alpha^{\gamma+1}}{1-\alpha}$ tokens on average and costs
#   $\gamma c + v$ target steps; their ratio is the expected speedup. With $v = 1$ (Thm 3.8) a
#   speedup exists only when $\alpha > c$; with $v > 1$, a draft length $\gamma$ can pay off only
#   if $\alpha > c + (v - 1)/\gamma$ (at $\gamma = 1$ exactly when $\alpha > c + v - 1$), since
#   $\tau - 1 = \alpha + \dots + \alpha^\gamma \le \gamma\alpha$.
# - A larger $\gamma$ is not always faster: every drafted token costs $c$ whether it is kept or not,
#   so the best $\gamma$ grows with $\alpha$ and falls as $c$ grows.
# - Fed with $c$ and $v$ measured in isolation, the cost model predicts (the table of three runs
#   prints how far off it was for each); fed with the $c$ and $v$ a run paid in the loop,
#   it only decomposes that run, and what it leaves unexplained is the loop's own overhead.

# %% [markdown]
# ## References
# - Leviathan, Kalman, Matias, *Fast Inference from Transformers via Speculative Decoding*, ICML 2023
#   (Eq. 1, Thm 3.8, the optimal $\gamma$): https://arxiv.org/abs/2211.17192
# - Chen et al., *Accelerating Large Language Model Decoding with Speculative Sampling*, 2023:
#   https://arxiv.org/abs/2302.01318
# - *The Machine Learning Practitioner's Guide to Speculative Decoding* (Machine Learning Mastery,
#   2026; its resampling rule is the one switched on above):
#   https://machinelearningmastery.com/the-machine-learning-practitioners-guide-to-speculative-decoding/
# - ipywidgets, the sliders of the playground: https://ipywidgets.readthedocs.io/
