# %% [markdown]
# # 10 · Prompt lookup: a draft without a draft model
#
# Speculative decoding needs a cheap guess of the next few tokens. A draft model is one way to
# guess. When the answer repeats its context (editing a piece of code, quoting from a document,
# rewriting a passage) there is a cheaper one: **the context itself**. Saxena's *prompt lookup
# decoding* looks for the last few tokens earlier in the text and proposes what followed them
# there. No second model, no draft passes: the draft costs a search through a list of integers.
# The target checks the guess exactly as before, so the output is still exactly the target's.
#
# This notebook writes the lookup, shows why the accept/reject rule becomes "accept with probability
# $p(x)$", checks that the output is unchanged, and measures where it pays and where it does not,
# beside Hugging Face's `prompt_lookup_num_tokens`.
#
# **You will learn**
# - the n-gram lookup: the most recent earlier occurrence of the last $n$ tokens, longest $n$ first;
# - why a draft that is certain ($q$ one-hot) turns $\min(1, p/q)$ into $p(x)$, and the residual into
#   "$p$ without $x$";
# - that the output stays exactly the target's (greedy: HF greedy, token for token);
# - when copying from the context pays (repeated text, greedy decoding) and when it does not (free
#   writing, sampling), measured.
#
# **Time to run:** under a minute on a laptop CPU with the tiny pair (the benchmark itself is read
# from a file; rerun it with `python -m utils.lookup`, a few minutes).

# %%
# SETUP

# %%
import torch

from utils.models import describe_device, environment_report, load_pair, load_prompts

PAIR = None  # None: $SPECDEC_PAIR, else "tiny"
pair = load_pair(PAIR)
tok, target = pair.tokenizer, pair.target
eos = tok.eos_token_id
print(environment_report(pair))

# %% [markdown]
# ## 1. The draft: look the last tokens up in the context
#
# Write the sequence so far (prompt and the tokens generated) as $s_1 \dots s_L$. For
# $n = n_\text{max}, n_\text{max} - 1, \dots, 1$: take the last $n$ tokens $s_{L-n+1} \dots s_L$,
# find the latest position $j < L - n + 1$ where they occurred before, and propose the tokens that
# followed them there, at most $\gamma$:
#
# $$x_1 \dots x_k = s_{j+n} \dots s_{j+n+k-1}, \qquad k = \min(\gamma,\ L - (j + n) + 1).$$
#
# Longer $n$ first, because a longer match is more specific (after "is used to" the next word is
# more predictable than after "to"). No match of any size: nothing is proposed, and the round is a
# plain target step. `utils.lookup.find_draft` is the whole draft model:

# %%
import inspect

from utils.lookup import find_draft

print(inspect.getsource(find_draft))

# %%
# NBVAL_CHECK_OUTPUT
for seq, gamma in [([5, 6, 7, 8, 5, 6], 3), ([1, 2, 9, 1, 2, 8, 1, 2], 2), ([3, 9, 4, 5, 6, 4], 2), ([1, 2, 3, 4], 3)]:
    draft, n = find_draft(seq, gamma, max_ngram=2)
    print(f"{seq} -> draft {draft}" + (f" (matched the last {n} token{'s' * (n > 1)})" if n else " (no match: plain target step)"))

# %% [markdown]
# On real text the tokens are subwords. Here the sentence says "the loop" twice: at the end, the
# last two tokens occurred before and the lookup proposes what came after them.

# %%
text = "The else clause of the loop runs when the loop"
ids = tok(text, return_tensors="pt").input_ids[0].tolist()
draft, n = find_draft(ids, 4, max_ngram=2)
print("tokens:", [tok.decode([t]) for t in ids])
print(f"matched the last {n} tokens {[tok.decode([t]) for t in ids[-n:]]}; proposed {[tok.decode([t]) for t in draft]}")

# %% [markdown]
# ## 2. The rule, when the draft is certain
#
# Speculative sampling accepts a drafted $x_i$ with probability $\min\!\big(1, p_i(x_i)/q_i(x_i)\big)$
# and, at the first rejection, samples from the residual $\operatorname{norm}(\max(0, p_i - q_i))$
# (notebook 03). The lookup is a deterministic function of the sequence so far: given the prefix it
# proposes $x_i$ with certainty. Its "distribution" is one-hot, $q_i = \mathbb{1}_{x_i}$, and the rule
# simplifies:
#
# $$\Pr[\text{accept } x_i] = \min\!\Big(1, \frac{p_i(x_i)}{1}\Big) = p_i(x_i),
# \qquad
# \operatorname{norm}\big(\max(0,\ p_i - \mathbb{1}_{x_i})\big)(y) = \begin{cases}\dfrac{p_i(y)}{1 - p_i(x_i)} & y \neq x_i\\[4pt] 0 & y = x_i.\end{cases}$$
#
# After a rejection the target samples from $p_i$ with $x_i$ taken out. The token emitted at that
# position is then distributed as
# $p_i(x_i)\,\mathbb{1}[y = x_i] + \big(1 - p_i(x_i)\big)\frac{p_i(y)}{1 - p_i(x_i)}\mathbb{1}[y \neq x_i] = p_i(y)$:
# exactly the target's, whatever was copied. At $T = 0$, $p_i$ is one-hot at the argmax, so "accept
# with probability $p_i(x_i)$" means "accept if $x_i$ is the argmax": the output is target greedy.
#
# The choice of $k$ (how many tokens to copy, none when nothing matches) is also made from the prefix
# alone, before the target sees anything, so it cannot bias the output either (the same argument as
# for the adaptive rules of notebook 08).
#
# Our loop passes a one-hot $q$ to the same `verify_step` as notebook 03. Hugging Face's loop does it
# another way (transformers' `generation/utils.py`, assisted decoding without draft logits): it
# samples $y_i \sim p_i$ at every position, keeps the drafted tokens while $y_i = x_i$ and emits the
# first $y_i$ that differs. $\Pr[y_i = x_i] = p_i(x_i)$, and given $y_i \ne x_i$, $y_i$ follows $p_i$
# without $x_i$: the same rule.
#
# A quick check on a made-up $p$ over six tokens, with the copied token $x = 2$:

# %%
import numpy as np

from utils.lookup import verify_copied

p = torch.tensor([[0.10, 0.20, 0.35, 0.05, 0.20, 0.10], [0.30, 0.10, 0.10, 0.20, 0.20, 0.10]])  # (k + 1, V)
g = torch.Generator().manual_seed(0)
draws = [verify_copied(p, [2], 1.0, g) for _ in range(4000)]
emitted = np.bincount([2 if v.n_accepted else v.token for v in draws], minlength=6)
print(f"accepted {sum(v.n_accepted for v in draws) / len(draws):.3f} of the time; p(x) = {p[0, 2].item():.3f}")
print("emitted token frequencies:", np.round(emitted / len(draws), 3), "\ntarget p:                 ", p[0].numpy())

# %% [markdown]
# ## 3. The loop, and a check that nothing changed
#
# `prompt_lookup_generate(target, input_ids, max_new_tokens=..., gamma=4, max_ngram=2, temperature=...)`
# is `speculative_generate` (notebook 03) with the draft model replaced by `find_draft`: one target
# pass checks the copied tokens, the KV cache is rolled back to the accepted prefix. Checked here at
# $T = 0$ against Hugging Face greedy decoding on two prompts; `tests/test_lookup.py` adds EOS, the
# length limits, prompts past the sliding window and chi-square tests of sampling at $T > 0$.

# %%
# NBVAL_CHECK_OUTPUT
from utils.lookup import copy_prompt, prompt_lookup_generate

base = load_prompts("workshop")[0]
copy_text = copy_prompt(pair, base, passage_tokens=96)  # see section 4
for name, text in (("free writing", base), ("copy prompt", copy_text)):
    ids = tok(text, return_tensors="pt").input_ids.to(pair.device)
    with torch.inference_mode():
        ref = target.generate(ids, max_new_tokens=48, do_sample=False, eos_token_id=eos, pad_token_id=0)
    out = prompt_lookup_generate(target, ids, max_new_tokens=48, gamma=4, eos_token_id=eos)
    print(f"{name}: equal to HF greedy: {torch.equal(out.sequences, ref)}")

# %% [markdown]
# ## 4. Where the draft comes from: text that repeats its context
#
# Prompt lookup pays when the continuation copies its context. Large models do copy: given a
# passage and asked to repeat, fix or summarise it, they reuse its words (Saxena's measurements in
# section 7 rest on this). The tiny target does not: it seems not to have learnt to copy an
# arbitrary text (larger models do, through "induction heads": Olsson et al. 2022,
# https://arxiv.org/abs/2209.11895; we have not looked inside the tiny target for them). See for
# yourself: a sentence given twice, then its first words a third time.

# %%
sentence = "A list comprehension builds a new list from an iterable, keeping the elements for which a condition is true."
head = " ".join(sentence.split()[:3])
ids = tok(f"{sentence}\n\n{sentence}\n\n{head}", return_tensors="pt").input_ids.to(pair.device)
with torch.inference_mode():
    cont = target.generate(ids, max_new_tokens=20, do_sample=False, eos_token_id=eos, pad_token_id=0)[0, ids.shape[1]:]
want = tok(" " + " ".join(sentence.split()[3:]), add_special_tokens=False).input_ids
same = next((i for i, (a, b) in enumerate(zip(cont.tolist(), want)) if a != b), len(want))
print(f"the target wrote {tok.decode(cont)!r}\nthe sentence goes on {tok.decode(want[:20])!r}\n"
      f"it repeated {same} token(s) of it")

# %% [markdown]
# So for the tiny pair the text to repeat must be text in its own style. `utils.lookup.copy_prompt`
# builds such a prompt: the passage the target writes (greedy) after a workshop prompt, then the
# workshop prompt again, as if asked to write that passage once more. The target does not write the
# same passage again word for word (the count below says how many tokens it repeats before it
# departs), but it reuses the passage's phrases, which is what the lookup needs. The free-writing prompts are the same workshop prompts alone.
#
# Watch it, at $T = 0$: green tokens were copied from the context and accepted, red ones copied and
# rejected, grey-dashed ones copied after a rejection (never checked); orange, blue and grey tokens
# are the target's own (after a rejection, after a fully accepted copy, and in rounds where nothing
# matched). Hover a token for $p(x)$; $q(x)$ is 1 for every copied token.

# %%
from IPython.display import HTML, display

from utils.render import count_kinds, rounds_html

passage = tok(copy_text[len(base) : -len(base) - 2], add_special_tokens=False).input_ids  # the passage alone
runs = {}
for name, text in (("copy prompt", copy_text), ("free writing", base)):
    ids = tok(text, return_tensors="pt").input_ids.to(pair.device)
    runs[name] = out = prompt_lookup_generate(target, ids, max_new_tokens=64, gamma=4, eos_token_id=eos)
    c = count_kinds(out.rounds)
    print(f"{name} ({ids.shape[1]} prompt tokens): {len(out.rounds)} target passes for {out.new_tokens} tokens "
          f"({out.tokens_per_round:.2f} per pass); a match in {out.match_rate:.0%} of the rounds; "
          f"{c['accepted']} tokens copied and accepted, {c['rejected']} rejected")
    if name == "copy prompt":
        new = out.sequences[0, ids.shape[1]:].tolist()
        same = next((i for i, (a, b) in enumerate(zip(new, passage)) if a != b), min(len(new), len(passage)))
        print(f"  it wrote the passage's first {same} token(s) again, then departed from it")
    display(HTML(f"<b>{name}</b>" + rounds_html(out.rounds, tok, prompt="…" + text[-60:], legend=name == "copy prompt")))

# %% [markdown]
# At $T = 1$ the target samples, and a copied token is accepted with probability $p(x)$ only: the
# target must pick, by chance, the very token the context suggests.

# %%
g = torch.Generator(device=pair.device).manual_seed(0)
ids = tok(copy_text, return_tensors="pt").input_ids.to(pair.device)
out = prompt_lookup_generate(target, ids, max_new_tokens=64, gamma=4, temperature=1.0, eos_token_id=eos, generator=g)
print(f"copy prompt, T = 1: {out.tokens_per_round:.2f} tokens per pass, a match in {out.match_rate:.0%} of the rounds, "
      f"alpha per checked token {out.checked_acceptance_rate:.2f}")
HTML(rounds_html(out.rounds, tok, legend=False))

# %% [markdown]
# ## 5. Measured: copy prompts against free writing
#
# `python -m utils.lookup` ran, on copy prompts and on the workshop prompts they start from (the
# header below gives the exact command, the counts, the lengths, $\gamma$ and $n_\text{max}$):
# HF's plain `generate`, our plain loop, ours with prompt lookup, HF's
# `generate(prompt_lookup_num_tokens=gamma, max_matching_ngram_size=n_max)`, and our speculative
# decoding with the tiny draft model at the same $\gamma$, for reference. Per prompt the methods took turns
# after a warm-up run and each kept the median of its repeats. At $T = 0$ every output was checked
# equal to HF greedy. The machine (its hardware string, from the file, opens the header below) was
# shared with other jobs: the file keeps every repeat, and `spread` below is the median over prompts
# of (slowest − fastest) / median. "vs plain" is all tokens / all median seconds of the method over
# the same for our plain loop; section 7 also gives the ratio repeat by repeat.
#
# **In-sample prompts.** The workshop prompts come from the topics the tiny pair was trained on, so
# on them the draft model drafts at its best: on held-out topics its acceptance is lower (the
# header's last line prints both, from notebook 05's benchmarks). The copy prompts are built from
# the same prompts. So the comparison below leans towards the draft model; the lookup needs no
# training on anything.
#
# The file times the draft model but does not measure its cost $c$ (a draft step over a target
# step); the header takes $c$ from `data/results/selfspec-tiny-cpu.json` (notebook 11's benchmark:
# one draft step over one target step, each timed alone, not in the loop; the code checks that it
# is the same pair on the same hardware), and says when and on which hardware that was measured.

# %%
import json

from utils.lookup import lookup_table
from utils.models import ROOT

res = json.loads((ROOT / "data/results/lookup-tiny-cpu.json").read_text())
m = res["meta"]
print(f"[{m['pair']} pair, {m['hardware']}, torch {m['torch']}, transformers {m['transformers']}, "
      f"{m['date']}; {m['n_prompts']['copy']} copy + {m['n_prompts']['free']} free prompts x {m['max_new_tokens']} new tokens, "
      f"gamma {m['gamma']}, max n-gram {m['max_ngram']}, {m['repeats']} repeats; the run took {m['wall_s'] / 60:.1f} min: "
      f"{m['command']}]")
sm = json.loads((ROOT / "data/results/selfspec-tiny-cpu.json").read_text())["meta"]
assert (sm["pair"], sm["hardware"]) == (m["pair"], m["hardware"]), "the draft model's c must come from the same pair and setup"
c_draft = {T: f"{sm['c_draft_model']:.3f}" for T in m["temperatures"]}  # one eager draft step / one target step
print(f"[draft model's c (draft step / target step, in isolation): {sm['c_draft_model']:.3f}; from selfspec-tiny-cpu.json, "
      f"measured on the same {sm['hardware']}, {sm['date']}, not in this run. Prompt lookup: c ≈ 0, no draft model]")
alpha_05 = {name: {s["temperature"]: s["alpha_checked"] for s in json.loads((ROOT / f"data/results/{f}.json").read_text())["summary"]
                   if s["gamma"] == m["gamma"]} for name, f in (("workshop", "bench-tiny-cpu"), ("held-out", "bench-tiny-cpu-heldout"))}
print("[the draft model's alpha per checked token in notebook 05's benchmarks, gamma " + str(m["gamma"]) + ": "
      + "; ".join(f"{name} prompts " + ", ".join(f"{a:.2f} at T = {T:g}" for T, a in by_t.items()) for name, by_t in alpha_05.items())
      + "]")
print(lookup_table(res["summary"]))
print("greedy outputs equal to HF greedy:", all(s["all_equal_hf"] for s in res["summary"] if s["temperature"] == 0))

# %% [markdown]
# "match": the share of rounds whose lookup found something to copy; "copied": the share of the new
# tokens that came from the draft (copied from the context, or the draft model's for the reference);
# "tokens/pass": new tokens per target forward pass (for HF, counted with a forward hook).

# %%
import matplotlib.pyplot as plt

from utils.lookup import plot_lookup

fig, axes = plt.subplots(1, 2, figsize=(13, 4.2), layout="constrained")
plot_lookup(res["summary"], "speedup over our plain loop (tokens/s ratio, median times)", ax=axes[0])
plot_lookup(res["summary"], "new tokens per target pass", key="tokens_per_target_pass", ax=axes[1])
handles, labels = axes[1].get_legend_handles_labels()
for ax in axes:
    ax.get_legend().remove()
fig.legend(handles, labels, loc="outside lower center", ncol=len(labels), fontsize=8)
fig.suptitle(f"Prompt lookup vs a draft model: {m['pair']} pair, {m['hardware']}; gamma {m['gamma']}, "
             f"max n-gram {m['max_ngram']}, {m['max_new_tokens']} new tokens, {m['n_prompts']['copy']} copy + "
             f"{m['n_prompts']['free']} free prompts\ndraft model: c (in isolation) = {sm['c_draft_model']:.3f} (measured on {sm['hardware']}); "
             f"prompt lookup: c ≈ 0; alpha per bar group printed below", fontsize=9)
plt.show()
print("The bars carry no error bars: the `spread` column above gives the run-to-run noise, and section 7 says which\n"
      "speedups are beyond it. alpha per drafted / per checked token, by bar group:")
for kind in ("copy", "free"):
    for T in m["temperatures"]:
        o, s = (next(r for r in res["summary"] if (r["kind"], r["temperature"], r["method"]) == (kind, T, meth))
                for meth in ("ours_lookup", "ours_speculative"))
        print(f"  {kind}, T = {T:g}: ours, prompt lookup {o['alpha']:.2f} / {o['alpha_checked']:.2f} (c ≈ 0); "
              f"ours, draft model {s['alpha']:.2f} / {s['alpha_checked']:.2f} (c = {c_draft[T]})")

# %% [markdown]
# ## 6. Beside Hugging Face's `prompt_lookup_num_tokens`
#
# In transformers the same idea is one argument of `generate` (no `assistant_model`):
#
# ```python
# target.generate(ids, prompt_lookup_num_tokens=4, max_matching_ngram_size=2, do_sample=False)
# ```
#
# Its candidate generator (`PromptLookupCandidateGenerator` in `generation/candidate_generator.py`)
# differs from ours in small ways: it scans the matches **from the left**, taking the *first* earlier
# occurrence that has a token after it, where ours takes the *most recent* one (Saxena's original
# function also scans from the left, but takes the first occurrence followed by a *full* draft of
# `num_pred_tokens` tokens); and it cuts a copied
# draft before an EOS token, where ours keeps the EOS (the target may accept it, and then the output
# stops there). Both check the draft with the exact rule, so both give target greedy at $T = 0$
# (checked for every prompt of the benchmark); they can draft different tokens, hence different
# numbers of tokens per pass. The speed ratio is taken repeat by repeat (`utils.lookup.versus`:
# the median and the range over the repeats), and called "faster" or "slower" only when every
# repeat clears the larger of the two methods' `spread`:

# %%
from utils.lookup import versus

by = {(s["kind"], s["temperature"], s["method"]): s for s in res["summary"]}
for kind in ("copy", "free"):
    for T in m["temperatures"]:
        o, h = by[(kind, T, "ours_lookup")], by[(kind, T, "hf_lookup")]
        v = versus(o, h)
        print(f"{kind:4} T = {T:g}: tokens per target pass ours {o['tokens_per_target_pass']:.2f}, HF {h['tokens_per_target_pass']:.2f}; "
              f"tokens/s ours {o['tokens_per_s']:.1f}, HF {h['tokens_per_s']:.1f}; ours / HF {v['median']:.3f}x "
              f"({v['lo']:.3f} to {v['hi']:.3f} over repeats, spread {v['noise']:.0%}: {v['word']} HF)")

# %% [markdown]
# ## 7. When it helps, and when it does not
#
# With a draft that costs nothing ($c \approx 0$), notebook 04's cost model (Leviathan et al.'s
# Thm 3.8 with a verify cost $v$) with $c = 0$ leaves only the verify pass: a round yields
# $\bar\tau$ tokens for one target pass over $k + 1$ tokens, which costs $v$ plain steps ($v$ close
# to 1 on a bandwidth-bound GPU at batch 1 by the roofline of notebook 09, larger on a CPU: notebook
# 05 measures it), so
#
# $$\text{speedup} \approx \frac{\bar\tau}{v}.$$
#
# Prompt lookup helps when $\bar\tau$ is well above $v$: the text repeats its context **and** the
# target would write the repeated words. The numbers from the file, side by side (the header of
# section 5 gives the hardware, pair, $\gamma$ and the draft model's $c$). Each speedup is the
# median over the repeats of that repeat's ratio, with the range over the repeats, and a verdict
# against the larger of the two methods' `spread` (`utils.lookup.versus`, as in section 6):

# %%
for kind in ("copy", "free"):
    for T in m["temperatures"]:
        p_, o, s = (by[(kind, T, meth)] for meth in ("ours_plain", "ours_lookup", "ours_speculative"))
        vo, vs = versus(o, p_), versus(s, p_)
        print(f"{kind} T = {T:g}, gamma {m['gamma']}:\n"
              f"  lookup:      a match in {o['match_rate']:.0%} of rounds, alpha per drafted / checked token "
              f"{o['alpha']:.2f} / {o['alpha_checked']:.2f}, c ≈ 0, {o['tokens_per_round']:.2f} tokens per pass -> "
              f"{vo['median']:.3f}x our plain loop ({vo['lo']:.3f} to {vo['hi']:.3f} over repeats, spread {vo['noise']:.0%}: "
              f"{vo['word']} it)\n"
              f"  draft model: alpha per drafted / checked token {s['alpha']:.2f} / {s['alpha_checked']:.2f}, "
              f"c = {c_draft[T]}, {s['tokens_per_round']:.2f} tokens per pass -> {vs['median']:.3f}x our plain loop "
              f"({vs['lo']:.3f} to {vs['hi']:.3f}, spread {vs['noise']:.0%}: {vs['word']} it)")
for kind in ("copy", "free"):
    o, s = by[(kind, 0.0, "ours_lookup")], by[(kind, 0.0, "ours_speculative")]
    v = versus(o, s)
    print(f"{kind} T = 0: lookup / draft model = {v['median']:.3f}x in tokens/s ({v['lo']:.3f} to {v['hi']:.3f} over repeats, "
          f"spread {v['noise']:.0%}: {v['word']} it) with {o['tokens_per_round'] / s['tokens_per_round']:.2f}x the tokens per pass")
look = [s for s in res["summary"] if s["method"] == "ours_lookup"]
print(f"time spent searching the context: {min(s['search_share'] for s in look):.1%} to {max(s['search_share'] for s in look):.1%} of a run")

# %% [markdown]
# The formula against the file: the $v$ that $\text{speedup} = \bar\tau / v$ implies, $\bar\tau$ over
# the measured speedup, beside the cost of a verify pass measured alone. The implied $v$ is an
# average over all rounds, and a round with no match passes a single token (a plain step, $v = 1$),
# so it should sit between 1 and the full pass's cost; anything above is the loop's own work per
# round. A pass's cost moves with the thread count (notebook 09), so the comparison takes the pass
# measured with this file's threads: two committed benchmarks measured it, and both are printed
# with their setups.

# %%
bench05 = json.loads((ROOT / "data/results/bench-tiny-cpu.json").read_text())  # notebook 05's benchmark
bench09 = json.loads((ROOT / "data/results/batched-tiny-cpu.json").read_text())  # notebook 09's, at B = 1
alone = {f"notebook 05's benchmark ({bench05['meta']['hardware']})": (bench05["meta"]["hardware"],
                                                                      bench05["meta"]["verify_ratio"][str(m["gamma"])])}
if bench09["meta"]["gamma"] == m["gamma"]:
    alone[f"notebook 09's benchmark, B = 1 ({bench09['meta']['hardware']})"] = (
        bench09["meta"]["hardware"], next(c["v"] for c in bench09["costs"] if c["B"] == 1))
for name, (hw_, v) in alone.items():
    print(f"a verify pass over gamma + 1 = {m['gamma'] + 1} tokens, alone, {name}: v = {v:.2f}"
          + ("  <- this file's setup" if hw_ == m["hardware"] else ""))
v_same = next((v for hw_, v in alone.values() if hw_ == m["hardware"]), None)
for kind in ("copy", "free"):
    for T in m["temperatures"]:
        o = by[(kind, T, "ours_lookup")]
        implied = o["tokens_per_round"] / versus(o, by[(kind, T, "ours_plain")])["median"]
        where = ("" if v_same is None else "; above the pass alone: the loop's own work shows" if implied > v_same
                 else "; below 1: within the timing noise" if implied < 1 else "; between 1 and the pass alone")
        print(f"{kind} T = {T:g}: tau {o['tokens_per_round']:.2f} / measured {versus(o, by[(kind, T, 'ours_plain')])['median']:.3f}x "
              f"-> implied v {implied:.2f}; rounds with a match: {o['match_rate']:.0%}{where}")

# %% [markdown]
# How to read it:
#
# - **Copying, greedy:** the best case. Most rounds find a match, and the target accepts much of
#   what the context suggests, for nearly nothing: the search is a fraction of a percent of a run.
#   On a real model the same holds for code edits, quoting answers, summaries that reuse phrases of
#   the source: Saxena's own figures are printed below this list, with their setups (from
#   `data/field.json`; his numbers, not measured here; $c \approx 0$ by construction).
# - **Free writing:** there is less in the context to copy; the tiny target, decoding greedily,
#   still repeats its own phrases, so some copies land. Whether a larger model repeats itself less,
#   and so gains less here, is not tested in this notebook.
# - **Sampling ($T = 1$):** a copied token is accepted with probability $p(x)$, and a sampling
#   target spreads its probability over many tokens: few copies survive, and each round still pays a
#   verify pass over the copied tokens (see the verdicts above against the plain loop). A draft model
#   does better, because it proposes tokens *sampled from its own* $q$, which follows $p$, instead of
#   one fixed guess.
# - **Against the draft model:** the draft model guesses from what it learnt, the lookup only from
#   what is on the page. The draft model's round costs $\bar k\,c + v$ target steps, the lookup's
#   only $v$: so where the page holds the answer the lookup can win with *fewer* tokens per pass
#   than the draft model (compare the two ratios printed above), and it needs no second model in
#   memory. Elsewhere the draft model wins here, on prompts from the topics it was trained on (on
#   held-out topics its alpha is lower: section 5's header). The two combine: look up
#   first, fall back to the draft model when nothing matches (not done here).

# %%
from utils.serving import load_field, speedup_text

pld = next(m for m in load_field() if m["key"] == "prompt_lookup")
for r in pld["reported"]:
    print(f"Saxena: {speedup_text(r)} ({r['what']}); {r['setup']}; data: {r['dataset']}; temperature {r['temperature']}; "
          f"batch size: {r['batch_size']} [{r['source']['where']}: {r['source']['url']}]")

# %% [markdown]
# ## Exercise: write the lookup yourself
#
# Write `my_find_draft(seq, gamma, max_ngram)` returning `(draft, n)` like `find_draft`: for
# $n$ from `max_ngram` down to 1, the most recent earlier occurrence of the last $n$ tokens that has
# a token after it, and up to `gamma` tokens that followed; `([], 0)` when nothing matches. The
# checker compares it with `find_draft` on hand-made cases (each says what it checks) and on random
# sequences (it prints how many in all).

# %%
from utils.exercises import check_10, hint  # stuck? hint("10"), one more hint per call


def my_find_draft(seq: list[int], gamma: int, max_ngram: int) -> tuple[list[int], int]:
    raise NotImplementedError  # your code here


check_10(my_find_draft)

# %% [markdown]
# The reference solution through the same checker:

# %%
from notebooks.solutions.ex10_find_draft import find_draft as reference

check_10(reference)

# %% [markdown]
# ## Try this
# - Section 4 with `max_ngram=1` and `max_ngram=3`: does a longer n-gram find fewer but better
#   matches on the copy prompt?
# - `gamma=8` and `gamma=2` on the copy prompt: tokens per pass rise with $\gamma$, but on a CPU the
#   verify pass widens too. Time both (`out.total_time`).
# - Change `find_draft` to take the *first* occurrence, as Hugging Face does, and compare the tokens
#   per pass on the copy prompts of the benchmark (`res["meta"]["prompts"]["copy"]`).
# - A prompt of your own with a long repeated block (a table, a list of names): how close to
#   $\gamma + 1$ tokens per pass does the lookup get at $T = 0$?
# - Rerun the benchmark with `--temperatures 0 0.5 1`: where does the gain of the copy prompts go?

# %% [markdown]
# ## What you learned
# - Prompt lookup drafts by copying: the tokens that followed the latest earlier occurrence of the
#   last $n$ tokens (longest $n$ first), with no draft model and a draft cost close to zero.
# - A certain draft has a one-hot $q$: the rule accepts $x$ with probability $p(x)$ and resamples
#   from $p$ without $x$, so the output is exactly the target's; greedy equals HF greedy.
# - It pays when the output repeats the context and the target is confident (greedy, copying); it
#   gains less on free writing and little or nothing when sampling, where a draft model still helps
#   (section 7 says which differences are beyond the noise).
# - Hugging Face's `prompt_lookup_num_tokens` is the same method, with the first rather than the
#   most recent occurrence and the same exact check written as "sample and compare".

# %% [markdown]
# ## References
# - Apoorv Saxena, *Prompt Lookup Decoding*, 2023: https://github.com/apoorvumang/prompt-lookup-decoding
# - Hugging Face transformers, generation strategies (prompt lookup decoding, `prompt_lookup_num_tokens`,
#   `max_matching_ngram_size`): https://huggingface.co/docs/transformers/generation_strategies
# - transformers source (the version the header of section 5 prints): `PromptLookupCandidateGenerator`
#   in https://github.com/huggingface/transformers/blob/main/src/transformers/generation/candidate_generator.py
#   and assisted decoding without draft logits in
#   https://github.com/huggingface/transformers/blob/main/src/transformers/generation/utils.py
# - Olsson et al., *In-context Learning and Induction Heads*, 2022: https://arxiv.org/abs/2209.11895
# - Leviathan, Kalman, Matias, *Fast Inference from Transformers via Speculative Decoding*, ICML 2023:
#   https://arxiv.org/abs/2211.17192
# - Chen et al., *Accelerating Large Language Model Decoding with Speculative Sampling*, 2023:
#   https://arxiv.org/abs/2302.01318
