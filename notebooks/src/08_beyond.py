# %% [markdown]
# # 08 · Beyond: adaptive drafting
#
# Every loop so far drafted the same $\gamma$ tokens in every round. Text is not that regular: some
# stretches are easy to guess (a closing bracket, the end of a common phrase) and the draft could
# run far ahead; others are not, and every token drafted past the first mistake is thrown away.
# Hugging Face's assisted generation has two rules that adapt the draft length as it goes. This
# notebook adds both to our loop (`speculative_generate(..., schedule=..., draft_confidence=...)`),
# checks that the output is still exactly the target's, and measures whether they pay, on prompts
# the tiny pair was not tuned on.
#
# **You will learn**
# - HF's two rules, read from its source: the *heuristic schedule* and the *confidence threshold*;
# - why neither changes the output (only how many tokens are drafted);
# - how far the draft's own confidence predicts whether the target will accept a token;
# - when each rule gains tokens/s over a constant $\gamma$, and when it loses, measured.
#
# **Time to run:** under a minute on a laptop CPU with the tiny pair (the benchmark itself is read
# from a file; rerun it with `python -m utils.beyond adaptive --threads 1`, the committed run's
# setting, which took the minutes its header prints).

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
# ## 1. Two rules from Hugging Face
#
# Both are read from the **assistant's** `generation_config` in transformers (notebook 05). In our
# loop they are two keyword arguments.
#
# **The heuristic schedule** (`num_assistant_tokens_schedule="heuristic"`; transformers'
# `generation/candidate_generator.py`, `AssistedCandidateGenerator.update_candidate_strategy`).
# Round $r$ drafts $k_r \le \gamma_r$ tokens and the target accepts $n_r$ of them; if it accepted all
# of them, the next round may draft two more, otherwise one fewer:
#
# $$\gamma_{r+1} = \begin{cases}\gamma_r + 2 & \text{if } n_r = k_r \text{ (every drafted token accepted)}\\
# \max(1,\ \gamma_r - 1) & \text{otherwise.}\end{cases}$$
#
# On average $\gamma$ stops moving where $2\,P(\text{all accepted}) = 1 - P(\text{all accepted})$,
# i.e. where a round is fully accepted one time in three. With a per-token acceptance $\alpha$
# (Leviathan et al.'s i.i.d. model), $P(\text{all } \gamma \text{ accepted}) = \alpha^\gamma$, so the
# schedule drifts towards $\gamma^\ast = \ln 3 / \ln(1/\alpha)$: long drafts on easy text, short ones
# on hard text. (HF keeps the last $\gamma$ in the assistant's config for the next call; ours starts
# again at the given $\gamma$, as HF's `"heuristic_transient"` does.)

# %% [markdown]
# **The confidence threshold** (`assistant_confidence_threshold`, default 0.4; transformers'
# `generation/stopping_criteria.py`, `ConfidenceCriteria`). The draft proposes $x_i \sim q_i$ and
# stops the round right after it when it was unsure of it:
#
# $$\text{stop after } x_i \quad\text{if}\quad q_i(x_i) < \theta .$$
#
# $x_i$ itself is still proposed. $q_i$ is the distribution the draft sampled from; at $T = 0$ it is
# the draft's plain softmax (HF applies no temperature when greedy), so $q_i(x_i)$ is its top
# probability. With scikit-learn installed HF also moves $\theta$ between rounds (a ROC curve over
# past tokens); ours keeps it fixed. ($\theta$, not $\tau$: $\tau$ stays the tokens per round.)
#
# **Why the output stays exact.** Both rules decide how many tokens to draft *before* the target
# sees them, from the draft's own tokens or from past rounds. Leviathan et al.'s accept/reject rule
# returns a token distributed as the target's for every draft length, so any such choice of length
# leaves the output unchanged; at $T = 0$ it is still exactly HF greedy. In our loop each rule is two
# lines:

# %%
import inspect

from utils.speculative import speculative_generate

src = inspect.getsource(speculative_generate).splitlines()
for i, line in enumerate(src):
    if "if draft_confidence and" in line or 'if schedule == "heuristic"' in line:
        print("\n".join(src[i : i + 2]) + "\n")

# %% [markdown]
# Checked on the held-out prompts: greedy output with each rule equals HF greedy token for token.
# (`tests/test_adaptive.py` also checks sampling at $T = 1$ with chi-square tests.)

# %%
# NBVAL_CHECK_OUTPUT
prompts = load_prompts("heldout")
eos = tok.eos_token_id
RULES = {"heuristic": dict(schedule="heuristic"), "confidence 0.4": dict(draft_confidence=0.4),
         "both": dict(schedule="heuristic", draft_confidence=0.4)}
for name, rule in RULES.items():
    same = []
    for text in prompts[:3]:
        ids = tok(text, return_tensors="pt").input_ids.to(pair.device)
        with torch.inference_mode():
            ref = target.generate(ids, max_new_tokens=40, do_sample=False, eos_token_id=eos, pad_token_id=0)
        out = speculative_generate(target, draft, ids, max_new_tokens=40, gamma=4, eos_token_id=eos, **rule)
        same.append(torch.equal(out.sequences, ref))
    print(f"{name}: equal to HF greedy on {len(same)} prompts: {all(same)}")

# %% [markdown]
# ## 2. What the schedule does, round by round
#
# One held-out prompt, greedy, 64 new tokens; the orange line is the $\gamma$ each round was
# allowed, the bars what the draft proposed and what the target kept.

# %%
from utils.beyond import plot_schedules

ids = tok(prompts[0], return_tensors="pt").input_ids.to(pair.device)
outs = {f"{name}, gamma from 4": speculative_generate(target, draft, ids, max_new_tokens=64, gamma=4, eos_token_id=eos, **kw)
        for name, kw in [("constant", {}), ("heuristic", dict(schedule="heuristic")),
                         ("confidence 0.4", dict(draft_confidence=0.4))]}
for name, out in outs.items():
    short = sum(len(r.drafted) < r.gamma for r in out.rounds)  # rounds that drafted fewer than allowed
    print(f"{name:30s}: {len(out.rounds):2d} rounds (target passes), {short:2d} of them cut short, {out.n_drafted:3d} drafted, "
          f"alpha per drafted {out.acceptance_rate:.2f}, per checked {out.checked_acceptance_rate:.2f}")
plot_schedules(outs, f"{pair.name}, greedy, held-out prompt 1: {prompts[0]!r}");

# %% [markdown]
# The heuristic schedule climbs through runs of fully accepted rounds and falls back after a miss;
# the threshold keeps $\gamma = 4$ as a cap but ends rounds early (how many: "cut short" above; the
# last round can also be cut by `max_new_tokens`). Fewer drafted tokens means
# fewer draft passes, and more of them accepted; but a round cut short also yields fewer tokens,
# so the same text can take more rounds, each a target pass. Which effect wins depends on what a draft pass costs
# ($c$) and on how well the draft's confidence predicts a rejection.

# %% [markdown]
# ## 3. Is the draft's confidence a signal?
#
# For every drafted token the target checked (constant $\gamma = 4$, six held-out prompts): the
# draft's probability of that token, split by whether the target accepted it. The dotted lines are
# the thresholds measured below.

# %%
from utils.beyond import confidence_and_outcome, plot_confidence

THRESHOLDS = (0.2, 0.4, 0.6)
signal = {}
for T in (0.0, 1.0):
    g = torch.Generator(device=pair.device).manual_seed(0)
    signal[T] = []
    for text in prompts[:6]:
        ids = tok(text, return_tensors="pt").input_ids.to(pair.device)
        out = speculative_generate(target, draft, ids, max_new_tokens=48, gamma=4, temperature=T, eos_token_id=eos, generator=g)
        signal[T] += confidence_and_outcome(pair, ids, out, T)
for T, pairs in signal.items():
    for t in THRESHOLDS:
        below = [a for c, a in pairs if c < t]
        above = [a for c, a in pairs if c >= t]
        print(f"T = {T:g}, threshold {t}: {len(below) / len(pairs):4.0%} of checked tokens below it, accepted "
              f"{sum(below) / max(1, len(below)):4.0%} of the time; above it accepted {sum(above) / max(1, len(above)):4.0%}")

# %%
import matplotlib.pyplot as plt

fig, axes = plt.subplots(1, 2, figsize=(10, 3), layout="constrained")
for ax, (T, pairs) in zip(axes, signal.items()):
    plot_confidence(pairs, THRESHOLDS, f"T = {T:g}, {pair.name}, held-out prompts", ax=ax)

# %% [markdown]
# A token the draft was sure of is accepted more often than one it was unsure of, so the rule has
# something to work with. But look at what it cuts: at $T = 1$ the draft *samples*, and a sampled
# token is often one it gave a small probability, which the target may accept all the same
# (acceptance is $\min(1, p/q)$, not a match of top choices). There the threshold ends a round at
# every token below it (their share is printed above), whatever the target would have said.

# %% [markdown]
# ## 4. Measured: held-out prompts, constant $\gamma$ against both rules
#
# `python -m utils.beyond adaptive --threads 1 --out data/results` ran our loop with a constant
# $\gamma$, the heuristic schedule starting from it, and several confidence thresholds (0.4 is HF's
# default) with that $\gamma$ as a cap, at $T = 0$ and $T = 1$, and our plain loop without a draft as
# the baseline; the first lines below print each configuration and the run's settings from the file.
# Per prompt the configurations took turns after a warm-up run, and each kept the median of its
# repeats. It ran on one thread: the machine's two cores were shared with other jobs, and two
# threads fighting a third process for two cores stall badly. The timings are still noisy (the file keeps every
# repeat, and `spread` below is the median over prompts of (slowest − fastest) / median).

# %%
import json

from utils.models import ROOT

res = json.loads((ROOT / "data/results/adaptive-tiny-cpu-heldout.json").read_text())
m = res["meta"]
print(f"[{m['pair']} pair, {m['hardware']}, torch {m['torch']}, transformers {m['transformers']}, {m['date']}; "
      f"{m['n_prompts']} {m['prompt_set']} prompts x {m['max_new_tokens']} new tokens, median of {m['repeats']} runs after "
      f"{m['warmup']} warm-up; the run took {m['wall_s'] / 60:.1f} min]")
print("configurations:", "; ".join(f"{name}: {kw or 'no draft'}" for name, kw in m["configs"].items()))
print(f"{'T':>3} {'configuration':16s} {'tok/s':>6} {'vs plain':>8} {'vs const':>8} {'alpha drafted/checked':>21} "
      f"{'drafted/round':>13} {'tokens/round':>12} {'mean gamma':>10} {'spread':>6}")
for s in res["summary"]:
    spec = "alpha" in s
    print(f"{s['temperature']:>3g} {s['config']:16s} {s['tokens_per_s']:6.1f} {s['speedup_vs_plain']:7.2f}x "
          + (f"{s['vs_constant']:7.2f}x " if "vs_constant" in s else " " * 9)
          + (f"{s['alpha']:10.2f} / {s['alpha_checked']:.2f}      {s['drafted_per_round']:13.2f} {s['tokens_per_round']:12.2f} "
             f"{s['mean_gamma']:10.2f}" if spec else " " * 62)
          + f" {s['noise_median_spread']:5.0%}")
print("greedy outputs equal to the plain loop's:", all(s["all_equal_plain"] for s in res["summary"] if s["temperature"] == 0))

# %%
from utils.overhead import plot_grouped

table = {s["config"]: {} for s in res["summary"]}
for s in res["summary"]:
    table[s["config"]][f"T = {s['temperature']:g}"] = s["tokens_per_s"]
k4 = {s["temperature"]: s for s in res["summary"] if s["config"] == f"constant {m['gamma']}"}
ax = plot_grouped(table, "tokens / s (median runs, all prompts)",
                  f"{m['pair']} on {m['hardware']}, {m['date']}, {m['n_prompts']} {m['prompt_set']} prompts\n"
                  f"constant gamma {m['gamma']}: " + "; ".join(f"T = {T:g}: alpha per checked token {s['alpha_checked']:.2f}, "
                                                              f"c = {s['c_in_loop']:.2f}" for T, s in k4.items()))
ax.tick_params(axis="x", rotation=15)

# %% [markdown]
# ## 5. When it helps, and when it does not
#
# A rule changes two numbers of a round: the tokens it yields, $\bar\tau$ on average, and the
# tokens drafted, $\bar k$ (one draft pass each: this eager loop folds the last drafted token after a
# full acceptance into the next round's first pass, so it has no extra pass like the compiled loop
# of notebook 07 and the batched loop of notebook 09, which count theirs in their $\bar k$). With a draft pass
# costing $c$ target steps and the verify pass one ($v = 1$, as in the paper), Leviathan et al.'s
# Thm 3.8 (constant $\gamma$, i.i.d. acceptance) extends to rounds of any length as
#
# $$\text{speedup} \approx \frac{\bar\tau}{\bar k\,c + 1}.$$
#
# A rule that drafts less ($\bar k$ below the constant's) also yields less ($\bar\tau$ below): it
# wins exactly when draft passes are dear, above a break-even cost
# $c^\ast = \frac{\bar\tau_\text{const} - \bar\tau}{\bar\tau\,\bar k_\text{const} - \bar\tau_\text{const}\,\bar k}$
# (`utils.beyond.break_even_c`). The counts are exact (no clock), so $c^\ast$ is exact under the
# model, whose verify pass costs one target step whatever $k$ is ($v = 1$); on a CPU a verify pass
# costs more, growing with the tokens it checks (the line `[v: ...]` below).

# %% [markdown]
# **Model against clock.** Each line below sets $c^\ast$ beside the $c$ this loop paid (a draft
# pass over the plain loop's step, from the file) and beside the measured ratio of tokens/s
# (`utils.beyond.adaptive_verdicts`). The clock is noisy, so it is read two ways:
#
# - over repeats: the same ratio from each repeat alone (in repeat $i$ all configurations ran one
#   after the other, so each repeat is a fair comparison); a rule counts as faster or slower only if
#   every repeat clears the spread between repeats of one configuration
#   (`utils.bench.noise_verdict`, the rule of notebooks 09-11 and the README);
# - over prompts: on how many prompts the rule was faster, with a sign test
#   (`scipy.stats.binomtest`): the chance of a split at least that uneven if each prompt were a
#   coin flip.

# %%
from utils.beyond import adaptive_verdicts, describe_verdict

verdicts = adaptive_verdicts(res)  # one dict per rule and temperature: counts, cost model, clock
for v in verdicts:
    print(describe_verdict(v))
const = {s["temperature"]: s for s in res["summary"] if s["config"] == f"constant {m['gamma']}"}
print(f"[c: {m['c']:.3f} in isolation; in the loop with constant gamma "
      + ", ".join(f"{k['c_in_loop']:.3f} at T = {T:g}" for T, k in const.items()) + "]")
bench = json.loads((ROOT / "data/results/bench-tiny-cpu.json").read_text())["meta"]  # notebook 05's benchmark
other = "" if bench["hardware"] == m["hardware"] else f"; not this run's setup ({m['hardware']})"
print(f"[v: a verify pass over gamma + 1 tokens costs, in target steps ({bench['hardware']}, {bench['date']}{other}), "
      + ", ".join(f"{v:.2f} at gamma = {g}" for g, v in bench["verify_ratio"].items()) + "]")

# %% [markdown]
# And where the heuristic schedule settles, against the constant $\gamma$ the cost model calls best
# for the measured $\alpha$ and $c$ (`utils.theory.optimal_gamma`, verify pass at one step):

# %%
import math

from utils.theory import optimal_gamma

for T, k in const.items():
    a = k["alpha_checked"]
    h = next(s for s in res["summary"] if s["temperature"] == T and s["config"].startswith("heuristic"))
    print(f"T = {T:g}: alpha per checked token {a:.2f} -> the schedule's fixed point ln 3 / ln(1/alpha) = "
          f"{math.log(3) / math.log(1 / a):.1f}; best constant gamma at c = {k['c_in_loop']:.2f}: {optimal_gamma(a, k['c_in_loop'])}; "
          f"mean gamma of the schedule over {m['max_new_tokens']}-token runs from {m['gamma']}: {h['mean_gamma']:.1f}")

# %%
from utils.beyond import verdict_summary

print("\n".join(verdict_summary(verdicts, m["gamma"])))

# %% [markdown]
# How to read it:
#
# - **The heuristic schedule** follows $\alpha$: its mean $\gamma$ moves towards
#   $\ln 3/\ln(1/\alpha)$, up on easy text, down on hard text. That fixed point ignores $c$, so it
#   is not the cost model's best $\gamma$ and can settle above or below it; and on short runs the
#   schedule spends much of its time moving from where it started. It helps most where the
#   acceptance changes along the text (long easy stretches between hard ones), which a constant
#   cannot follow. Where it drafts as many tokens per round as the constant but yields more (k and
#   tau in section 5's lines), it wins at every $c$: its gain is fewer rounds, so fewer target
#   passes, not fewer draft passes.
# - **The confidence threshold** drafts less and yields less per round: it saves draft passes (and,
#   on a CPU, narrows the verify pass) but spends more target passes on the same text. It pays above
#   the break-even $c^\ast$, and how high that is depends on what is cut: rounds cut where the draft
#   is unsure lose tokens the target would often have rejected anyway (section 3), and where the
#   constant $\gamma$ is longer than the cost model's best (printed above, per temperature), any
#   shorter draft moves towards that best; with a draft cheaper than $c^\ast$ it loses. The line
#   before last puts the thresholds' $c^\ast$ beside the $c$ this tiny pair paid, and the last line
#   sets each threshold's predicted verdict beside the clock's: a prediction counts as confirmed
#   here only where every repeat cleared the spread in its direction (and the sign-test line says
#   whether any rule's prompts split significantly).

# %% [markdown]
# Two cautions:
#
# - At $T = 1$ the threshold reads the probability of a *sampled* token, often a small one by
#   design (section 3), so it ends rounds after few drafted tokens (drafted/round in section 4's
#   table): speculative decoding shrinks towards $\gamma = 1$, whatever $\gamma$ was asked for.
# - Differences of a few percent sit inside the timing noise of a shared machine: a verdict from
#   a few repeats must clear the spread between repeats to count, and a rule faster on most of a
#   few prompts is not significant (the sign test's $p$). The counts ($\bar\tau$, $\bar k$) are
#   exact, and with them $c^\ast$ under the model's $v = 1$; they say which way a rule leans on
#   other hardware.

# %% [markdown]
# ## Try this
# - Start the heuristic at `gamma=1` and at `gamma=12` on the prompt of section 2: how many rounds
#   until it reaches the same level?
# - Combine both rules (`schedule="heuristic", draft_confidence=0.4`): the threshold caps rounds
#   that the schedule wants to grow. Which wins?
# - Rerun the benchmark with `--thresholds 0.05 0.1` and with `--gamma 8`: with a longer cap, does
#   the threshold become worth it?
# - Put the predicted ratio of section 5 in a loop over $c$ from 0.05 to 1: from which $c$ does the
#   threshold 0.4 beat the constant $\gamma$ at $T = 0$?
# - Section 3 at `temperature=0.5`: how does the split between accepted and rejected tokens move?

# %% [markdown]
# ## Exercise: the heuristic schedule
#
# Write `next_gamma(gamma, n_drafted, n_accepted)`: the $\gamma$ the next round may draft, after a
# round that was allowed `gamma`, drafted `n_drafted` tokens and saw the target accept `n_accepted`
# of them (section 1's rule, HF's `num_assistant_tokens_schedule="heuristic"`). Mind the rounds that
# draft fewer tokens than they were allowed: the confidence threshold (or the end of
# `max_new_tokens`) can stop a round early, and HF calls a round fully accepted when the target kept
# every token that was *drafted*. `check_08` compares your function with transformers' own
# `update_candidate_strategy` on every case up to $\gamma = 8$, replays the rounds of two runs of
# our loop with both rules on (your function must give the $\gamma$ each next round used), and
# simulates where your schedule settles for a few values of $\alpha$.

# %%
from utils.exercises import check_08, hint  # stuck? hint("08"), one more hint per call


def next_gamma(gamma, n_drafted, n_accepted):
    """The next round's draft length (an int) after a round allowed gamma that drafted n_drafted and kept n_accepted."""
    raise NotImplementedError  # your code here


check_08(next_gamma, pair)

# %% [markdown]
# The reference solution through the same checker:

# %%
from notebooks.solutions.ex08_heuristic_schedule import next_gamma as reference

check_08(reference, pair)

# %% [markdown]
# ## What you learned
# - HF's heuristic schedule adds 2 to $\gamma$ after a fully accepted round and removes 1 otherwise;
#   it settles where one round in three is fully accepted, $\gamma^\ast = \ln 3/\ln(1/\alpha)$.
# - HF's confidence threshold ends a round after a token the draft gave less than $\theta$; the
#   token is still proposed.
# - Both only choose the draft length before the target checks it, so the output is exactly the
#   target's (greedy: HF greedy), as the tests and section 1 check.
# - Whether either pays is again a matter of $\bar\tau$, $\bar k$ and $c$: a rule that yields more
#   tokens per round for as many drafted wins at every $c$ (fewer target passes); one that drafts
#   less trades draft passes for target passes and pays above a break-even $c^\ast$, which is low
#   when the constant $\gamma$ is longer than the best one or the draft's confidence flags the
#   tokens the target would reject. Few-percent differences need a test over prompts (a sign test),
#   not a count of faster prompts.

# %% [markdown]
# ## References
# - Hugging Face transformers, generation strategies (assisted decoding, `num_assistant_tokens`,
#   `num_assistant_tokens_schedule`, `assistant_confidence_threshold`):
#   https://huggingface.co/docs/transformers/generation_strategies
# - Mamou et al. (Intel Labs and Hugging Face), *Faster Assisted Generation with Dynamic
#   Speculation*, Hugging Face blog, 2024: https://huggingface.co/blog/dynamic_speculation_lookahead;
#   the paper: *Dynamic Speculation Lookahead Accelerates Speculative Decoding of Large Language
#   Models*, https://arxiv.org/abs/2405.04304
# - Leviathan, Kalman, Matias, *Fast Inference from Transformers via Speculative Decoding*, ICML 2023:
#   https://arxiv.org/abs/2211.17192
# - transformers 5.23 source: `generation/candidate_generator.py` (`update_candidate_strategy`),
#   https://github.com/huggingface/transformers/blob/v5.23.0/src/transformers/generation/candidate_generator.py,
#   and `generation/stopping_criteria.py` (`ConfidenceCriteria`),
#   https://github.com/huggingface/transformers/blob/v5.23.0/src/transformers/generation/stopping_criteria.py
