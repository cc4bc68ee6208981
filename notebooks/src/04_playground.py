# %% [markdown]
# # 04 · Playground: move gamma and temperature, watch the rounds
#
# Pick a prompt, a draft length $\gamma$ and a temperature, and see every round of speculative
# sampling: which drafted tokens the target accepted, which it rejected, and which tokens it put in
# their place. Next to it: the measured acceptance rate, tokens per round, the cost ratio $c$ and
# the verification cost $v$ (the target's pass over $\gamma+1$ tokens, in one-token steps) as this
# run paid them, the speedup you actually got, and the speedup the cost model predicts from them.
#
# **You will learn**
# - how $\gamma$ and temperature move the acceptance rate $\alpha$;
# - why a larger $\gamma$ is not always faster: $\text{speedup} = \frac{1-\alpha^{\gamma+1}}{(1-\alpha)(\gamma c + v)}$ (Leviathan et al., Thm 3.8; the paper takes $v = 1$);
# - the best $\gamma$ for a measured $\alpha$ and $c$.
#
# **Time to run:** about 30 s on a laptop CPU with the tiny pair (the sliders need a live kernel).

# %%
# SETUP

# %%
from utils.models import environment_report, load_pair, load_prompts

PAIR = None  # None: $SPECDEC_PAIR, else "tiny"
pair = load_pair(PAIR)
print(environment_report(pair))

# %% [markdown]
# ## The playground
#
# Colours: <span style="background:#c8f7c5">accepted draft token</span>
# <span style="background:#fecaca;text-decoration:line-through">rejected draft token</span>
# <span style="background:#fed7aa">resampled by the target</span>
# <span style="background:#bfdbfe">bonus token</span>. Hover a token for its round number. Timings
# are wall-clock on this machine, so they move a little from run to run.

# %%
from utils.playground import Playground

pg = Playground(pair, load_prompts(), max_new_tokens=48)
pg.widget()

# %% [markdown]
# Not running a kernel (reading this on GitHub)? The same view as text: `~~struck~~` tokens were
# rejected, `[x]` resampled, `<x>` bonus, `|` separates rounds. The playground object can be driven
# from code too, which is how the tests check it:

# %%
from utils.render import rounds_text
from utils.speculative import speculative_generate

ids = pair.tokenizer(load_prompts()[0], return_tensors="pt").input_ids.to(pair.device)
out = speculative_generate(pair.target, pair.draft, ids, max_new_tokens=48, gamma=4)
print(rounds_text(out.rounds, pair.tokenizer))

# %%
for gamma, temperature in [(2, 0.0), (8, 0.0), (4, 1.0)]:
    pg.gamma.value, pg.temperature.value = gamma, temperature  # each change re-runs the callback
    s = pg.last
    print(f"gamma={gamma} T={temperature}: alpha={s['alpha']:.2f} tau={s['tokens_per_round']:.2f} c={s['c']:.3f} v={s['v']:.2f} "
          f"speedup measured {s['measured_speedup']:.2f}x, predicted {s['predicted_speedup']:.2f}x  counts={s['counts']}")

# %% [markdown]
# ## Acceptance across gamma and temperature
#
# $\alpha$ depends on how alike $p$ and $q$ are after warping: at temperature 0 only the arg max
# has to agree; at higher temperatures the whole distributions have to overlap
# ($\alpha = \sum_x \min(p(x), q(x))$ at each position).

# %%
from utils.playground import acceptance_grid
from utils.plots import plot_heatmap

gammas, temps = [1, 2, 4, 6, 8], [0.0, 0.5, 1.0, 1.5]
grid = acceptance_grid(pair, load_prompts()[0], gammas, temps, max_new_tokens=40)
plot_heatmap(grid, temps, gammas, "temperature", "gamma", f"acceptance rate, {pair.name}");

# %% [markdown]
# ## The best gamma for this pair
#
# With $c$ measured as one draft step over one target step (both one token, KV cache, this
# machine), the cost model gives the expected speedup for each $\gamma$:

# %%
import matplotlib.pyplot as plt

from utils.bench import step_cost_ratio
from utils.theory import expected_speedup, optimal_gamma

cost = step_cost_ratio(pair, ids)
c = cost["c"]
fig, ax = plt.subplots(figsize=(6, 3.2), layout="constrained")
for t, row in zip(temps, grid):
    alpha = sum(row) / len(row)
    ax.plot(range(1, 11), [expected_speedup(alpha, g, c) for g in range(1, 11)], marker="o", label=f"T={t}: alpha={alpha:.2f}, best gamma={optimal_gamma(alpha, c, 10)}")
ax.axhline(1, color="k", lw=0.8)
ax.set(xlabel="gamma", ylabel="expected speedup", title=f"{pair.name} on {pair.device}: c = {c:.3f} "
       f"({cost['draft_step_ms']:.1f} ms / {cost['target_step_ms']:.1f} ms)")
ax.legend(fontsize=8);

# %% [markdown]
# ## Try this
# - Find the temperature where speculative sampling stops paying off for this pair.
# - Set $\gamma = 10$ at temperature 0 and at 1.5: how many drafted tokens are wasted per round?
# - Type your own prompt into the box, far from Python's documentation: what happens to $\alpha$?
# - The measured speedup includes Python overhead that the cost model ignores: when does the
#   prediction overshoot, and why?

# %% [markdown]
# ## Exercise: the cost model, by hand
#
# Write the two functions behind the figure above:
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
from utils.exercises import check_04_gamma, check_04_tau


def tokens_per_round(alpha, gamma):
    """Expected new tokens per target pass."""
    raise NotImplementedError("Eq. 1 here")


def best_gamma(alpha, c, max_gamma=16):
    """The gamma in 1..max_gamma with the largest expected speedup."""
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
print(f"c = {c:.3f} here: " + ", ".join(f"alpha {a}: best gamma {reference_gamma(a, c)}" for a in (0.5, 0.7, 0.9)))

# %% [markdown]
# ## What you learned
# - $\alpha$ measures how much the draft's and the target's distributions overlap after the same
#   warping ($\sum_x \min(p(x), q(x))$ per position); at temperature 0 only the arg max has to agree.
# - A round yields $\tau = \frac{1-\alpha^{\gamma+1}}{1-\alpha}$ tokens on average and costs
#   $\gamma c + v$ target steps; their ratio is the expected speedup, and a speedup exists only
#   when $\alpha > c$.
# - A larger $\gamma$ is not always faster: every drafted token costs $c$ whether it is kept or not,
#   so the best $\gamma$ grows with $\alpha$ and falls as $c$ grows.
# - The measured speedup sits below the prediction by the loop's own overhead, which the cost model
#   leaves out.
#
# ## References
# - Leviathan, Kalman, Matias, *Fast Inference from Transformers via Speculative Decoding*, 2023
#   (Eq. 1, Thm 3.8, the optimal $\gamma$): https://arxiv.org/abs/2211.17192
# - Chen et al., *Accelerating Large Language Model Decoding with Speculative Sampling*, 2023:
#   https://arxiv.org/abs/2302.01318
# - ipywidgets, the sliders of the playground: https://ipywidgets.readthedocs.io/
