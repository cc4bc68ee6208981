# %% [markdown]
# # 05 · Hugging Face assisted generation, side by side with ours
#
# Notebooks 03 and 04 built and explored our own loop. Transformers ships the same method as
# *assisted generation*: pass a draft model as
# `assistant_model` to `generate`. This notebook runs its options (draft length, schedules, the
# confidence threshold, prompt lookup without any draft model), checks that it agrees with our
# implementation, times both, and reruns the DataCamp tutorial's five-prompt benchmark honestly.
#
# **You will learn**
# - the `assistant_model` API, and where transformers 5.x really reads its settings from;
# - tokens/s of HF and of our code on the same pair, with $\alpha$ (the share of the drafted tokens
#   the target checks that it accepts) and $c$ (one draft step's time over one target step's) beside them;
# - what Gemma2-shaped pairs did on an H200, measured by this project (random weights, so timing
#   only; the results file carries its provenance), and why none clearly beat plain decoding there.
#
# **Time to run:** about 1–2 minutes on a laptop CPU with the tiny pair.

# %%
# SETUP

# %%
import torch

from utils.models import environment_report, load_pair, load_prompts

PAIR = None  # None: $SPECDEC_PAIR, else "tiny". On a GPU: "smollm2-135m-1.7b" (ungated), or "gemma2-2b-9b"
# (gated: accept the license and set HF_TOKEN; a T4 has no bfloat16, so there load_pair(PAIR, quantization="nf4"))
pair = load_pair(PAIR)
tok, target, draft = pair.tokenizer, pair.target, pair.draft
print(environment_report(pair))

# %% [markdown]
# ## 1. The API, and a pitfall
#
# ```python
# target.generate(input_ids, assistant_model=draft, do_sample=False, max_new_tokens=64)
# ```
#
# The draft length (`num_assistant_tokens`), its schedule (`"constant"`;
# `"heuristic"`: +2 after a fully accepted round, −1 otherwise; `"heuristic_transient"`: the same
# within one call, restarting from the configured length at the next call) and
# `assistant_confidence_threshold` (the draft stops early once the probability it gave the token it
# just drafted, the softmax of its scores, falls below it; `ConfidenceCriteria`) are read from
# **the assistant's** `generation_config`. Passed to `generate()` they are ignored.
# `utils.bench.configure_assistant` sets them there. Where the assistant's `generation_config`
# leaves them unset (`None`, as a fresh `GenerationConfig()` does), the candidate generator fills in
# transformers' own defaults:

# %%
from transformers import GenerationConfig

HF_DEFAULTS = {k: GenerationConfig._get_default_generation_params()[k]
               for k in ("num_assistant_tokens", "num_assistant_tokens_schedule", "assistant_confidence_threshold")}
print(f"a fresh GenerationConfig(): num_assistant_tokens={GenerationConfig().num_assistant_tokens}; "
      f"transformers' defaults where unset: {HF_DEFAULTS}")

# %% [markdown]
# Two more things move under your feet (transformers 5.23,
# `AssistedCandidateGenerator.update_candidate_strategy` and `generate`'s assisted loop):
# - with a non-zero threshold *and* scikit-learn importable, HF re-tunes the threshold after every
#   round, once it has seen accepted and rejected drafts: it picks the point of an ROC curve (the
#   draft's probabilities against which tokens the target accepted) that minimizes the
#   false-positive rate + 3 × the false-negative rate. Whether that happens depends on the environment (Colab ships
#   scikit-learn): the line below checks this one. A threshold of 0 switches it off everywhere.
# - only `"heuristic"` writes the draft length it ended with back into the assistant's
#   `generation_config`, so the next call starts from there; `"heuristic_transient"` does not:

# %%
from transformers.utils import is_sklearn_available

from utils.bench import configure_assistant, hf_generate

print(f"scikit-learn importable here: {is_sklearn_available()}: a non-zero confidence threshold is "
      + ("re-tuned from an ROC curve after every round" if is_sklearn_available() else "kept fixed"))

ids = tok(load_prompts()[0], return_tensors="pt").input_ids.to(pair.device)
configure_assistant(draft, num_assistant_tokens=4, schedule="heuristic", confidence_threshold=0.0)
print("before:", draft.generation_config.num_assistant_tokens)
hf_generate(target, ids, 64, assistant=draft)
print("after one heuristic run:", draft.generation_config.num_assistant_tokens)
configure_assistant(draft, num_assistant_tokens=4, schedule="heuristic_transient", confidence_threshold=0.0)
hf_generate(target, ids, 64, assistant=draft)
print("after one heuristic_transient run:", draft.generation_config.num_assistant_tokens)

# %% [markdown]
# So set a *constant* schedule and threshold 0 before comparing at a known $\gamma$.

# %% [markdown]
# Some limits are hard (transformers 5.23, `generate`'s checks and `_assisted_decoding`):
# - one prompt at a time: a batch of more than one sequence is refused;
# - no static cache: `cache_implementation` `"static"`, `"hybrid"` or `"sliding_window"`, or a
#   `StaticCache` passed in, is refused, so assisted generation cannot take the static-cache,
#   compiled path of notebook 07;
# - one returned sequence per prompt: `num_return_sequences` must be 1;
# - a draft with another vocabulary needs both tokenizers passed to `generate()`, else "The main and
#   assistant models have different tokenizers. Please provide `tokenizer` and `assistant_tokenizer`
#   to `generate()`" (universal assisted decoding:
#   https://huggingface.co/docs/transformers/en/generation_strategies#universal-assisted-decoding).
#
# The first three, tried on this pair, in transformers' own words:

# %%
for what, x, kw in [("two prompts in one batch", ids.repeat(2, 1), {}),
                    ("a static cache", ids, dict(cache_implementation="static")),
                    ("two sequences per prompt (sampling)", ids, dict(temperature=1.0, num_return_sequences=2))]:
    try:
        hf_generate(target, x, 8, assistant=draft, **kw)
        print(f"{what}: accepted")
    except ValueError as e:
        print(f"{what}: ValueError: {e}")

# %% [markdown]
# ## 2. Same tokens: HF assisted, ours, and plain greedy

# %%
# NBVAL_CHECK_OUTPUT
from utils.speculative import speculative_generate

configure_assistant(draft, num_assistant_tokens=4, schedule="constant", confidence_threshold=0.0)
eos = target.generation_config.eos_token_id  # where HF's generate stops: ours stops there too
same = 0
for p in load_prompts()[:6]:
    x = tok(p, return_tensors="pt").input_ids.to(pair.device)
    greedy, _ = hf_generate(target, x, 64)
    assisted, _ = hf_generate(target, x, 64, assistant=draft)
    ours = speculative_generate(target, draft, x, max_new_tokens=64, gamma=4, eos_token_id=eos).sequences
    same += torch.equal(greedy, assisted) and torch.equal(greedy, ours)
print(f"{same}/6 prompts: HF greedy == HF assisted == ours, token for token")

# %% [markdown]
# ## 3. Speed on this machine
#
# Every option on three workshop prompts (from the topics the tiny pair was trained on, Python's
# documentation, so $\alpha$ is high for the tiny pair), 64 new tokens, greedy: the median of 3 runs after a
# warm-up, the methods taking turns so that a machine that slows down mid-way hurts them alike
# (`utils.bench.interleaved`). `python -m utils.bench` measures more prompts. `prompt lookup`
# (`prompt_lookup_num_tokens`) needs no draft model at all: it matches the last few tokens against
# all of `input_ids` so far (the prompt *and* the text generated up to now) and proposes the tokens
# that followed the earliest match.

# %%
from utils.bench import interleaved, step_cost_ratio

GAMMA, N_NEW = 4, 64
prompts = load_prompts()[:3]
cost = step_cost_ratio(pair, ids)
METHODS = ["hf", "hf_assisted", "hf_prompt_lookup", "ours_ar", "ours_speculative"]
per_prompt = [interleaved(METHODS, pair, tok(p, return_tensors="pt").input_ids.to(pair.device), N_NEW, GAMMA) for p in prompts]
runs = {m: [r[m] for r in per_prompt] for m in METHODS}  # method -> one median run per prompt
tps = {m: sum(r["new_tokens"] for r in rs) / sum(r["seconds"] for r in rs) for m, rs in runs.items()}
spec = runs["ours_speculative"]
alpha = sum(r["alpha"] * r["new_tokens"] for r in spec) / sum(r["new_tokens"] for r in spec)
alpha_checked = sum(r["alpha_checked"] * r["new_tokens"] for r in spec) / sum(r["new_tokens"] for r in spec)
for m, v in tps.items():
    print(f"{m:18s} {v:7.1f} tok/s")
print(f"[{pair.name}, {environment_report(pair).splitlines()[1]}, gamma={GAMMA}, greedy, {len(prompts)} workshop prompts, "
      f"alpha={alpha:.2f} per drafted / {alpha_checked:.2f} per checked token, c={cost['c']:.3f}: the draft model's; "
      "prompt lookup has neither]")

# %%
from utils.models import describe_device
from utils.plots import plot_bars

RUN = (f"{pair.name}, {describe_device(pair.device)}, gamma={GAMMA}, greedy,\ndraft model: alpha {alpha_checked:.2f} per checked token, "
       f"c={cost['c']:.3f} in isolation")
plot_bars(tps, "tokens / s", RUN);

# %% [markdown]
# Read the numbers with $c$ in mind: the expected speedup over plain decoding is
# $\frac{1-\alpha^{\gamma+1}}{(1-\alpha)(\gamma c+v)}$, with $\alpha$ the acceptance rate per
# *checked* token (drafted tokens after a rejection are never checked) and $v$ the cost of the
# target's pass over $\gamma+1$ tokens in one-token steps. The paper takes $v=1$ (on a
# bandwidth-bound GPU, checking 5 tokens should cost what generating 1 does: both read every
# weight once); on a CPU it is larger:

# %%
from utils.bench import verify_cost_ratios
from utils.theory import expected_speedup

v = verify_cost_ratios(target, [GAMMA])[str(GAMMA)]
print(f"v = {v:.2f}; cost model, predicting from c and v measured in isolation: {expected_speedup(alpha_checked, GAMMA, cost['c']):.2f}x with v = 1, "
      f"{expected_speedup(alpha_checked, GAMMA, cost['c'], v):.2f}x with v measured; "
      f"measured: ours vs our loop {tps['ours_speculative'] / tps['ours_ar']:.2f}x, "
      f"HF assisted vs HF greedy {tps['hf_assisted'] / tps['hf']:.2f}x")

# %% [markdown]
# The cost model is only as good as its inputs. $c$ and $v$ above were measured with each model
# stepping on its own. Inside the loop the models take turns: the first draft step after a target
# pass can run cold (the target just filled the CPU's caches), a draft step after a fully accepted
# round takes two tokens, and the target's pass follows the draft's. On a shared machine the
# isolated numbers also move from run to run. The forward clocks of the run above give $c$ and $v$
# as the loop actually paid them (each model's mean pass over the target's mean step in our plain
# loop). Fed with those, the cost model is no longer a prediction but a **decomposition** of the
# same run: its forward passes account for the part printed below, and the rest is the loop's own
# overhead. A small residual there validates nothing (the inputs came from the very run); the test
# of a prediction is out of sample, further down.

# %%
from utils.bench import in_loop_costs

measured = tps["ours_speculative"] / tps["ours_ar"]
loop = in_loop_costs([r for rs in runs.values() for r in rs], alpha_checked, GAMMA, measured)
print(f"c: {cost['c']:.3f} in isolation, {loop['c_in_loop']:.3f} in the loop; v: {v:.2f} in isolation, {loop['v_in_loop']:.2f} in the loop\n"
      f"decomposition of this run: its forward passes alone would give {loop['predicted_speedup_in_loop']:.2f}x, measured {measured:.2f}x; "
      f"the {loop['cost_model_error_in_loop']:+.0%} residual is the loop's own overhead")

# %% [markdown]
# One configuration proves little. `python -m utils.bench --gammas 1 2 4 8 --temperatures 0 1`
# measured every $\gamma$ at $T=0$ and $T=1$ on the workshop prompts (committed in
# `data/results/bench-tiny-cpu.json` from this repository's CPU; rerun it to measure yours; the
# header lines below give each file's prompts, runs and hardware).
# The same at one $\gamma$ on prompts from topics held out of training (`--prompts heldout`,
# `data/results/bench-tiny-cpu-heldout.json`) shows how much of it carries over to unseen text.
# Their $c$ (in the headers, beside how far it is from the live one above) differs from it, on the same pair
# and the same kind of CPU: each is one process's measurement on a shared 2-core machine, so read
# every $c$ with the run it came from, never across runs. Per row: the prediction from $c$, $v$ in isolation; the decomposition with the run's own $c$, $v$
# in the loop (its residual is loop overhead, not a test); and, for the held-out run, an
# out-of-sample prediction (`utils.bench.out_of_sample`): $c$ and $v$ as the *workshop* run's loop
# paid them, with the held-out run's own $\alpha$:

# %%
import json

from utils.bench import RESULTS, out_of_sample
from utils.plots import plot_cost_model

sweep = json.loads((RESULTS / "bench-tiny-cpu.json").read_text())
held = json.loads((RESULTS / "bench-tiny-cpu-heldout.json").read_text())
for label, res in (("workshop prompts (training topics)", sweep), ("held-out prompts (topics not trained on)", held)):
    mt = res["meta"]
    print(f"{label}: {len({r['prompt'] for r in res['rows']})} prompts, {mt['max_new_tokens']} new tokens, "
          f"median of {mt['repeats']} timed runs, {mt['hardware']}, {mt['date']}; c {mt['c']:.3f} in isolation "
          f"({mt['c'] / cost['c'] - 1:+.0%} against this notebook's live {cost['c']:.3f})")
    for s in res["summary"]:
        print(f"  gamma={s['gamma']} T={s['temperature']}: alpha {s['alpha_checked']:.2f} per checked token, measured {s['measured_speedup_vs_ours_ar']:.2f}x; "
              f"predicted from c, v in isolation {s['predicted_speedup_with_v']:.2f}x ({s['cost_model_error_with_v']:+.0%}); "
              f"decomposition with its own in-loop c, v {s['predicted_speedup_in_loop']:.2f}x (residual {s['cost_model_error_in_loop']:+.0%})")
for r in out_of_sample(sweep, held):
    err = f"{r['error']:+.0%}" if round(r["error"], 2) else "within 0.5%"
    print(f"out of sample, gamma={r['gamma']} T={r['temperature']}: c {r['c']:.3f}, v {r['v']:.2f} from the {r['calibration']} run's loop "
          f"predict {r['predicted']:.2f}x on the {r['evaluation'].replace('heldout', 'held-out')} prompts, measured {r['measured']:.2f}x ({err})")
plot_cost_model(sweep["summary"], f"tiny pair, workshop prompts, {sweep['meta']['hardware']}, c={sweep['meta']['c']:.2f} in isolation "
                "(the in-loop curves are decompositions)");

# %% [markdown]
# ### Where the time goes
#
# Ours and HF assisted call the forward passes of the same two models, equally often. A forward
# hook (`utils.bench.ForwardClock`) times what happens inside them; the rest is the decoding loop's
# own work (sampling, bookkeeping, HF's candidate generator and logits processors). If a share $\varphi$
# of HF assisted's time is spent in forward passes, a loop whose passes cost the same can be at most
# $1/\varphi$ times faster than it. Going further takes cheaper passes: a leaner cache and fewer
# arguments help a little; fewer kernel launches (static shapes, CUDA graphs, `torch.compile`, fused
# kernels) help a lot.

# %%
from utils.plots import plot_time_split

split = {m: (sum(r["forward_s"] for r in runs[m]), sum(r["seconds"] - r["forward_s"] for r in runs[m]))
         for m in ["hf", "ours_ar", "hf_assisted", "ours_speculative"]}
phi = split["hf_assisted"][0] / sum(split["hf_assisted"])  # the share in forward passes
per_call = {m: 1e3 * split[m][0] / sum(r["forward_calls"] for r in runs[m]) for m in ["hf_assisted", "ours_speculative"]}
print(f"HF assisted spends {phi:.0%} of its time in forward passes (ours {split['ours_speculative'][0] / sum(split['ours_speculative']):.0%}): "
      f"with passes of equal cost, a loop could be at most {1 / phi:.2f}x faster than it.\n"
      f"Per forward pass: HF assisted {per_call['hf_assisted']:.2f} ms, ours {per_call['ours_speculative']:.2f} ms. "
      f"Measured: ours {tps['ours_speculative'] / tps['hf_assisted']:.2f}x HF assisted.")
cheaper, TOL = 1 - per_call["ours_speculative"] / per_call["hf_assisted"], 0.03  # within 3%: the same cost (timing noise)
verdict = ("the same cost within 3%, so the equal-cost bound applies" if abs(cheaper) < TOL else
           "so the equal-cost bound does not apply to them" if cheaper > 0 else "so the equal-cost bound is generous")
print(f"Ours' passes cost {abs(cheaper):.1%} {'less' if cheaper > 0 else 'more'} per call than HF assisted's: {verdict}. "
      f"With ours' passes and no loop overhead at all, ours could be at most "
      f"{sum(split['hf_assisted']) / split['ours_speculative'][0]:.2f}x faster than HF assisted.")
plot_time_split(split, f"{len(prompts)} prompts x {N_NEW} tokens; {RUN}");

# %% [markdown]
# ## 4. The DataCamp benchmark, honestly
#
# The tutorial timed five prompts at 200 new tokens: "normal inference" against its draft-and-score
# method (notebook 02). `utils.datacamp` reruns it on any pair (`python -m utils.datacamp --pair
# ...` from a terminal) and adds the two methods that really are speculative decoding. On the tiny
# pair the prompts are far from its training text (Python's documentation), so $\alpha$ is low.
# With the tiny pair this cell decodes fewer new tokens than the tutorial's 200; with any other pair,
# the tutorial's length. Every pair gets one timed run after a warm-up. On a big pair that takes minutes: every method decodes every
# prompt once per run, warm-up included. Before it starts, the cell prints how many tokens that is
# and roughly how long they take at section 3's plain HF speed; raise `REPEATS` for the median of
# several timed runs, steadier and slower.

# %%
from utils import datacamp

N_DC, REPEATS = (200, 1) if pair.name != "tiny" else (48, 1)
N_PROMPTS, n_methods = 5, len(datacamp.METHODS) + 1  # + draft+score
n_tokens = N_PROMPTS * n_methods * (1 + REPEATS) * N_DC  # at most: a run can stop early at EOS
print(f"{N_PROMPTS} prompts x {n_methods} methods x {1 + REPEATS} runs x {N_DC} new tokens = {n_tokens} tokens, "
      f"about {n_tokens / tps['hf'] / 60:.1f} min if all ran at section 3's HF greedy speed ({tps['hf']:.0f} tok/s)")
dc = datacamp.run(pair, max_new_tokens=N_DC, gamma=GAMMA, repeats=REPEATS, n_prompts=N_PROMPTS, progress=False)
print(datacamp.table(dc))
m = dc["meta"]
print(f"[{m['pair']}, {m['hardware']}, {m['dtype']}, gamma={m['gamma']}, greedy (T = 0), c={m['c']:.3f}, {m['max_new_tokens']} new tokens, "
      f"{'median of ' + str(m['repeats']) + ' timed runs' if m['repeats'] > 1 else 'one timed run'} per prompt after a warm-up; "
      "alpha: ours' accepted / drafted tokens (per drafted token)]")

# %%
import statistics

means = {n: statistics.mean(r["seconds"][n] for r in dc["rows"]) for n in dc["rows"][0]["seconds"]}
plot_bars(means, f"seconds (mean of {len(dc['rows'])} prompts)", f"DataCamp prompts, {N_DC} new tokens, {pair.name}, {m['hardware']}, "
          f"gamma={GAMMA}, greedy,\nalpha {statistics.mean(r['alpha_checked'] for r in dc['rows']):.2f} per checked token "
          f"(mean over prompts), c={m['c']:.3f} in isolation", fmt="{:.3f}");

# %% [markdown]
# Lower is faster: compare "HF assisted" and "ours" with "normal", the three that return the
# target's text ("draft+score" does not, see below). One timed run per prompt is a noisy basis for
# "slower". The committed run (`python -m utils.datacamp` at its defaults: more new tokens, the median of several timed runs, as its line
# says) is the better one. Both lines list the prompts where ours or HF assisted took longer than
# normal decoding:

# %%
committed = json.loads((RESULTS / "datacamp-tiny-cpu.json").read_text())
tol = abs(expected_speedup(alpha_checked, GAMMA, cost["c"], v) / (tps["ours_speculative"] / tps["ours_ar"]) - 1)
print(f"[the cost model's error in section 3 (predicted vs measured, ours): {tol:.0%}; a prediction closer to 1 "
      "than that cannot tell]")


def slow_line(r, m):  # a prompt where ours or HF assisted took longer than normal decoding
    x = expected_speedup(r["alpha_checked"], m["gamma"], m["c"], v)
    why = "alpha explains it" if x < 1 - tol else "not alpha" if x > 1 + tol else "too close to 1 to tell"
    who = ", ".join(n for n in ("HF assisted", "ours") if r["seconds"][n] > r["seconds"]["normal"])
    return (f"{r['prompt'][:24].strip()!r} ({who}; alpha {r['alpha']:.2f} per drafted / {r['alpha_checked']:.2f} per "
            f"checked token; ours measured {r['seconds']['normal'] / r['seconds']['ours']:.2f}x, the cost model at this "
            f"alpha and c predicts {x:.2f}x with section 3's v: {why})")


for label, res in (("this run", dc), ("committed, data/results/datacamp-tiny-cpu.json", committed)):
    m = res["meta"]
    slow = [slow_line(r, m) for r in res["rows"]
            if max(r["seconds"]["HF assisted"], r["seconds"]["ours"]) > r["seconds"]["normal"]]
    print(f"{label} [{m['pair']}, {m['hardware']}, {m['date']}, gamma={m['gamma']}, greedy, c={m['c']:.3f}, "
          f"{m['max_new_tokens']} tokens, {m['repeats']} timed run(s)]: slower than normal on {len(slow)} of {len(res['rows'])} prompts"
          + (": " + "; ".join(slow) if slow else ""))

# %% [markdown]
# Only "HF assisted" and "ours" return the target's text; "draft+score" is fast because the target
# never decodes, and returns the draft's text (notebook 02). When $\alpha$ is low, speculative
# decoding can be *slower* than the target alone: each rejected round still paid for $\gamma$ draft
# steps. The prompts listed above, if any, are where it happened, with their $\alpha$ and what the
# cost model of section 3 predicts at that $\alpha$ (with that run's $c$ and section 3's $v$), read
# against the model's own error in section 3 (first line). Where the prediction is below 1 by more
# than that error, low $\alpha$ explains the slowdown; where it is above 1 by more, $\alpha$ does
# not: the time went to noise between timed runs (one run per prompt in this one) or to costs the
# isolated $c$ and $v$ leave out (section 3's decomposition shows how much); in between, the
# numbers cannot tell.

# %% [markdown]
# ## 5. What Gemma2 does on a GPU: measured
#
# This project measured real Gemma2 shapes (random weights: timing does not depend on their values,
# acceptance does) on an H200 with transformers' eager `generate` and with this notebook's loop. The
# file carries its provenance; note that its figures were transcribed from the run's printed output
# (the run's own result files were not kept), so they carry the rounding of that output:

# %%
from utils.models import ROOT

h200 = json.loads((ROOT / "data/results/gpu-h200-2026-11-24.json").read_text())
pv = h200["provenance"]
print(f"{pv['gpu']}, {pv['date']}, torch {pv['torch']}, transformers {pv['transformers']}; {pv['weights']}; {pv['note']}")
for q in h200["pairs_gamma4_64_tokens"]:
    c = f"c = {q['c']:.2f}" if "c" in q else "c: self-draft"
    acc = f", alpha {q['alpha_measured']:.2f} per drafted token, tau {q['tau']:.1f}" if "alpha_measured" in q else ""
    print(f"{q['pair']:9s} ({q['draft']:17s}, gamma 4, {c:13s}{acc}): HF greedy {q['hf_greedy_tok_s']:5.1f}, "
          f"HF assisted {q['hf_assisted_tok_s']:5.1f}, ours {q['ours_tok_s']:5.1f} tok/s")
greedy = {}  # HF greedy of one target, measured again in each row that has it: the run-to-run spread
for q in h200["pairs_gamma4_64_tokens"]:
    greedy.setdefault(q["pair"].split("->")[1], []).append(q["hf_greedy_tok_s"])
print("HF greedy of the same target in different rows: " + "; ".join(
    f"{t} {' and '.join(f'{x:.1f}' for x in xs)} tok/s ({max(xs) / min(xs) - 1:.0%} apart)" for t, xs in greedy.items()))

# %% [markdown]
# The self-draft rows ($\alpha = 1$: every drafted token accepted) are not expected to gain: a model
# drafting for itself has $c = 1$ by construction (each draft step *is* a target step), so
# Leviathan et al.'s Thm 3.8 gives at most $\frac{\gamma + 1}{\gamma \cdot 1 + 1} = 1$, even with
# every drafted token accepted. The random 2b draft's acceptance says nothing about a trained Gemma2
# draft, so no speedup for a real pair is predicted here. The $\alpha$ in the table is per *drafted*
# token (accepted / drafted); the cost model needs tokens per round, which the file records as
# $\tau$, so the check below uses $\tau / (\gamma c + 1)$ ($v = 1$) directly. For 2b → 9b the file
# holds two $c$ values that disagree: the pair run's (one run), and the ratio of the two models'
# eager steps timed separately. Each, checked against the speedups the same pair run measured:

# %%
from utils.theory import check_pair_run, describe_pair_check

steps = {m["model"]: m["hf_eager_step_ms"] for m in h200["models"] if "hf_eager_step_ms" in m}
for q in h200["pairs_gamma4_64_tokens"]:
    d, t = q["pair"].split("->")
    c_sources = ([("the pair run", q["c"])] if "c" in q else []) + \
        ([("separate eager steps", steps[d] / steps[t])] if d != t and t in steps else [])
    print("\n".join(describe_pair_check(check_pair_run(q, c_sources, gamma=4))))

# %% [markdown]
# The "closest" line says which $c$ the measured speedups support. Read every ratio against the
# spread printed above (the same HF greedy run twice, in two rows): a measured speedup that
# differs from a bound by less than that spread does not differ from it. A $c$ that the same run's
# measured ratio contradicts is a noisy figure from one run (eager steps on a GPU host vary from run
# to run), and no verdict about what a better draft could do should rest on it. The measured ratios
# are printed first for every row: below 1 means slower than HF greedy. Both levers matter: at
# these $c$ a draft must reach $\alpha > c$ to gain at all (and a perfect one gains only what the
# lines above allow), and cheaper steps can lower $c$ itself, where they cut the draft's fixed cost
# per step more than the target's. Notebook 07 compiles both models (static cache, `torch.compile`,
# CUDA graphs), which is built to let $c$ fall towards the ratio of the models' weight bytes on a
# GPU, and measures which way $c$ moves when it compiles on this CPU (a fixed cost per call stays);
# its section 6 draws a compiled GPU run once one is committed (none is yet).
# Measure $c$ on your hardware, more than once, before promising a speedup.

# %% [markdown]
# ## Try this
# - Time HF assisted at transformers' defaults (`HF_DEFAULTS`, printed in section 1), then with the
#   `"heuristic"` schedule. Not through section 3: `interleaved` calls
#   `configure_assistant(draft, GAMMA)` before every HF assisted run, which puts back a constant
#   $\gamma$ and threshold 0. Instead, for `schedule` in `"constant"`, `"heuristic"`:
#   `configure_assistant(draft, HF_DEFAULTS["num_assistant_tokens"], schedule,
#   HF_DEFAULTS["assistant_confidence_threshold"])`, then for each prompt `x` of section 3, after one
#   warm-up call, `hf_generate(target, x, N_NEW, assistant=draft)` (it returns
#   `(sequences, seconds)`) against `hf_generate(target, x, N_NEW)`.
# - Run section 3 after `torch.set_num_threads(1)`: on a tiny model, is one CPU thread slower or faster than two, and why?
# - `!cd .. && "{sys.executable}" -m utils.datacamp --max-new-tokens 200` in a cell (it runs from
#   the repository's root with this kernel's Python, locally and on Colab): the full DataCamp
#   benchmark on this pair.
# - Raise `GAMMA` to 8: does HF assisted or ours gain more?
# - Does $c$ in the loop move towards $c$ in isolation with one thread, or with a longer prompt
#   (more work per pass, so the cold start matters less)?
# - `prompt lookup` shines when the output repeats the prompt: give it a prompt that contains the
#   text it should continue.

# %% [markdown]
# ## Exercise: acceptance per checked token
#
# Section 3 reports $\alpha$ two ways. Write `acceptance_rates(rounds)` for a list of
# `utils.speculative.Round` (what `speculative_generate(...).rounds` holds: each round's `drafted`
# tokens, `n_accepted`, and `kind`, which is `"resample"` when the round ended in a rejection,
# `"bonus"` when every drafted token was kept, and `"target"` when nothing was drafted, a plain
# target step near the end, with no rejection). Return `(per_drafted, per_checked)`:
# accepted / drafted, and accepted / (accepted + rejections), each pooled over all rounds (not a mean
# of per-round rates), and `float("nan")` where a denominator is 0. Drafted tokens after a rejection are
# thrown away without being checked, which is why the two differ, and why the cost model takes the
# second.
#
# `check_05` grades it on hand-made rounds and on real runs at $\gamma$ 2 and 8. The reference
# solution is in `notebooks/solutions/ex05_acceptance.py`.

# %%
from utils.exercises import check_05, hint  # stuck? hint("05"), one more hint per call


def acceptance_rates(rounds):
    """rounds: list of utils.speculative.Round -> (accepted / drafted, accepted / (accepted + rejections))."""
    raise NotImplementedError("count here")


check_05(acceptance_rates, pair)

# %% [markdown]
# What a pass looks like: the reference solution, through the same checker.

# %%
from notebooks.solutions.ex05_acceptance import acceptance_rates as reference

check_05(reference, pair)

# %% [markdown]
# ## What you learned
# - Assisted generation is `generate(..., assistant_model=draft)`; in transformers 5.x its draft
#   length, schedule and confidence threshold are read from the assistant's `generation_config`,
#   and the heuristic schedule rewrites it as it runs. Fix them before comparing at a known $\gamma$.
# - HF assisted, our loop and plain greedy decoding return the same tokens at temperature 0 (here in
#   fp32; in bf16/fp16 a near-tie can flip, notebook 03 shows the check).
# - The cost model takes $\alpha$ per checked token, $c$ and $v$. Fed with $c$ and $v$ from the run
#   it is compared with, it only decomposes that run (the residual is loop overhead); a prediction
#   needs them from another run, on your hardware (the out-of-sample line of section 3).
# - On the H200 of section 5 (Gemma2 shapes, random weights, eager HF `generate`, its setting printed
#   there), eager steps are launch-bound (the GPU waits on Python to launch each small kernel, so
#   a step costs far more than reading its weights) and $c$ stays high: no pair clearly beats plain greedy
#   decoding. Both levers matter: a better draft raises $\alpha$; cheaper steps
#   (notebook 07) can lower $c$, where they cut the draft's fixed cost per step more than the
#   target's (notebook 07 measures which way compiling moves it).

# %% [markdown]
# ## References
# - Hugging Face transformers, generation strategies (assisted decoding, prompt lookup):
#   https://huggingface.co/docs/transformers/generation_strategies
# - Hugging Face, *Assisted Generation: a new direction toward low-latency text generation*, 2023:
#   https://huggingface.co/blog/assisted-generation
# - Saxena, *Prompt Lookup Decoding*, 2023: https://github.com/apoorvumang/prompt-lookup-decoding
# - Leviathan, Kalman, Matias, *Fast Inference from Transformers via Speculative Decoding*, ICML 2023
#   (Thm 3.8, the cost model): https://arxiv.org/abs/2211.17192
# - DataCamp, *Speculative Decoding: A Guide With Implementation Examples*, 2024 (the benchmark of
#   section 4): https://www.datacamp.com/tutorial/speculative-decoding
