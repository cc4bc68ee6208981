# %% [markdown]
# # 02 · "Draft and score": a popular method that is not speculative decoding
#
# Notebook 01 ended on an idea: a decode step does too little arithmetic to be bound by it (reading
# the weights, or in eager code each operator's overhead, sets its time), so a big model can check
# several tokens in one pass for about the price of one step. How that pass is used matters. A
# widely read tutorial, DataCamp's *Speculative Decoding: A Guide With Implementation Examples*
# (2024, https://www.datacamp.com/tutorial/speculative-decoding), presents this as speculative
# decoding: the small model writes the whole answer, the big model reads it once and returns the
# average log-likelihood of the small model's tokens as a "verification score". It reports the
# method as faster than "normal inference" (its figures, as this project's notes on the tutorial
# record them, are printed beside our timing in section 1). We reproduce it on our pair, measure it,
# and then look at what it really returns.
#
# **You will learn**
# - the draft-and-score method and its latency against normal decoding;
# - why its output is the draft's text, whatever the score says;
# - what verification must be able to do: reject a drafted token and put a replacement there.
#
# **Time to run:** under a minute on a laptop CPU with the tiny pair.

# %%
# SETUP

# %%
import torch

from utils.models import describe_device, environment_report, load_pair, load_prompts

PAIR = None  # None: $SPECDEC_PAIR, else "tiny". The tutorial used "gemma2-2b-9b" (gated: accept the Gemma
# license and set HF_TOKEN): in bf16 it needs an A100; on a Colab T4 or L4 load it in 4 bits,
# load_pair(PAIR, quantization="nf4") (a T4 has no bf16, and in fp32 it does not fit).
# Ungated, and fits a T4: "smollm2-135m-1.7b".
pair = load_pair(PAIR)
tok = pair.tokenizer
print(environment_report(pair))

# %% [markdown]
# ## 1. The method, reproduced
#
# 1. the draft model generates the continuation (`generate`, greedy);
# 2. the text is tokenized again and the target runs **one** forward pass over it;
# 3. the "score" is the mean of $\log p_\text{target}(x_i \mid x_{<i})$ over the draft's tokens.
#
# `utils.decoding.draft_and_score` does exactly that. "Normal inference" is the target's own
# `generate`. Both get the tutorial's number of new tokens, `N` (printed with the timings).

# %%
from utils.bench import how_much_faster
from utils.decoding import best_of, draft_and_score, timed_generate

prompt, N = load_prompts()[2], 50
ids = tok(prompt, return_tensors="pt").input_ids.to(pair.device)
run = best_of(lambda: timed_generate(pair.target, ids, N), lambda r: r["time"])  # a warm-up, then best of 3
normal, t_normal = run["sequences"], run["time"]  # (1, T + N): the target's own greedy text
ds = best_of(lambda: draft_and_score(pair.draft, pair.target, tok, prompt, N), lambda r: r["draft_time"] + r["score_time"])
t_ds = ds["draft_time"] + ds["score_time"]
print(f"verification score: {ds['score']:.4f}")
print(f"latency, normal: {t_normal:.3f} s   draft-and-score: {t_ds:.3f} s   ({how_much_faster(t_normal, t_ds)})")
print(f"[{pair.name} on {describe_device(pair.device)}, {N} new tokens, greedy, best of 3 after a warm-up]")

# %% [markdown]
# The tutorial's figures as this project's notes record them (stored, with where they come from, in
# `data/results/datacamp-article.json`), beside ours:

# %%
import json

from utils.models import ROOT

article = json.loads((ROOT / "data/results/datacamp-article.json").read_text())
one = article["single_prompt"]
print(f"the tutorial ({one['setup']}): normal {one['normal_bf16_s']} s, draft-and-score {one['speculative_bf16_s']} s "
      f"({how_much_faster(one['normal_bf16_s'], one['speculative_bf16_s'])}), score {one['verification_score']}")
print(f"ours (above, {pair.name}): normal {t_normal:.3f} s, draft-and-score {t_ds:.3f} s "
      f"({how_much_faster(t_normal, t_ds)}), "
      f"score {ds['score']:.4f}")
print(f"[{article['source']['title']}, {article['source']['url']}; {one['note']}]")

# %% [markdown]
# It is faster wherever a draft step costs much less than a target step: the lines above show the
# tutorial's run (on a GPU its notes do not name) and this machine's. With a draft step costing about as much as a target step
# (a cost ratio $c$ = draft step / target step near 1; section 4 measures it here) it would not be. Now the question that matters: **faster at producing what?**

# %% [markdown]
# ## 2. What it returns

# %%
draft_alone = pair.draft.generate(ids, max_new_tokens=N, do_sample=False)
print("DRAFT-AND-SCORE:", repr(ds["text"]))
print("TARGET (normal):", repr(tok.decode(normal[0], skip_special_tokens=True)))

# %%
# NBVAL_CHECK_OUTPUT
print("returned text == the draft model's own text: ", ds["text"] == tok.decode(draft_alone[0], skip_special_tokens=True))
print("returned text == the target's own text:      ", ds["text"] == tok.decode(normal[0], skip_special_tokens=True))

# %% [markdown]
# The returned text *is* the draft's text. The target's forward pass only produces a number, and
# nothing in the method uses that number to change a token. However low the score, the same text
# comes back. Where do the two models disagree?

# %%
from IPython.display import HTML

from utils.render import comparison_html

d_new, t_new = ds["draft_ids"][0, ids.shape[1]:], normal[0, ids.shape[1]:]  # (N,) each
n = min(len(d_new), len(t_new))
agree = (d_new[:n] == t_new[:n]).float()
first = int((agree == 0).nonzero()[0]) if (agree == 0).any() else n
print(f"first disagreement at new token {first}; positions where the texts agree: {agree.mean():.0%}")
HTML(comparison_html(d_new.tolist(), t_new.tolist(), tok, reference_name="the target's text"))

# %% [markdown]
# The returned (draft's) text, marked where its token differs from the target's at the same position.
# Nothing was accepted or rejected here: the target never got a say. After the first difference the
# two texts drift apart, so this is only a rough picture. The next section checks more prompts: each
# time, the method returns exactly the **draft** model's own greedy text.

# %% [markdown]
# ## 3. The scores change nothing
#
# Scores for the first workshop prompts (`load_prompts()[:8]`), and for each, whether the
# returned text is the draft model's own greedy text (`draft.generate`, run separately) or the
# target's:

# %%
def own_text(model, p, n):  # the model's own greedy continuation, decoded
    x = tok(p, return_tensors="pt").input_ids.to(pair.device)
    return tok.decode(model.generate(x, max_new_tokens=n, do_sample=False)[0], skip_special_tokens=True)


rows = []
for p in load_prompts()[:8]:
    r = draft_and_score(pair.draft, pair.target, tok, p, 30)
    rows.append((r["score"], p, r["text"], r["text"] == own_text(pair.draft, p, 30), r["text"] == own_text(pair.target, p, 30)))
print(f"{'score':>8s}  {'prompt':28s}    {'returned text':52s} == draft's  == target's")
for score, p, text, is_draft, is_target in sorted(rows):
    print(f"{score:8.3f}  {p[:28]:28s} -> {text[len(p):len(p) + 50]!r:52s} {is_draft!s:9s}  {is_target}")

# %%
# NBVAL_CHECK_OUTPUT
print(f"returned text == the draft's own greedy text: {sum(r[3] for r in rows)}/{len(rows)} prompts")
print(f"returned text == the target's own greedy text: {sum(r[4] for r in rows)}/{len(rows)} prompts")

# %% [markdown]
# Good score or bad, every text comes back as the draft wrote it (the count above).

# %% [markdown]
# ## 4. Why it is faster, and what real verification does
#
# Its time is one draft `generate` plus **one** target forward pass. The target never decodes, so it
# is faster than target decoding wherever a draft step is cheaper than a target step: it is draft
# decoding with a number attached. The same speed could be had by using the small model alone.
#
# Speculative decoding uses the same ingredients, a cheap draft and one target pass over the guess,
# but the target's pass over a draft of $\gamma$ tokens is used to **decide**: each drafted token
# $x_i$ is kept with probability
# $\min(1, p(x_i)/q(x_i))$ ($p$ the target's next-token distribution, $q$ the draft's), and at the first rejection a replacement is sampled from
# $\mathrm{norm}(\max(0, p - q))$ (in greedy mode: the target's arg max). If all $\gamma$ are
# accepted, the same pass has already computed $p$ at the position after them, and one more
# **bonus** token is drawn from it. The output is then distributed exactly as the target's
# (identical token for token in greedy mode), and the speedup comes from accepting several tokens
# per target pass: up to $\gamma + 1$. Two numbers say how well that went: the **acceptance rate**
# $\alpha$, the share of the drafted tokens the target *checked* that it kept (the drafts after a
# rejection are never checked; accepted / drafted, a smaller number, is printed beside it), and the
# **tokens per target pass**, what each pass adds to the text (accepted tokens plus the replacement
# or bonus one). Notebook 03 builds it.
#
# One caveat on "token for token": it holds up to floating-point rounding. In bf16 or fp16 on a GPU,
# the target's pass over $\gamma + 1$ tokens and its one-token steps can round differently, so where
# its two likeliest tokens are nearly tied the arg max can flip and the texts part ways. In fp32 on a
# CPU (the tiny pair here) the two are identical in every test. Notebook 03 shows how to check it.

# %%
from utils.bench import step_cost_ratio
from utils.speculative import speculative_generate

eos = pair.target.generation_config.eos_token_id  # where generate stops: ours must stop there too
spec = best_of(lambda: speculative_generate(pair.target, pair.draft, ids, max_new_tokens=N, gamma=4, eos_token_id=eos),
               lambda o: o.total_time)  # a warm-up, then best of 3, as for the two timings above
alpha, c = spec.checked_acceptance_rate, step_cost_ratio(pair, ids)["c"]
print("speculative decoding == target greedy:", torch.equal(spec.sequences, normal))
print(f"acceptance rate {spec.acceptance_rate:.2f} per drafted token (accepted / drafted), "
      f"{alpha:.2f} per checked token (accepted / (accepted + rejections); notebook 03 section 4 tells them apart)")
print(f"c = draft step / target step = {c:.3f} (one-token steps; notebook 04 explains why it matters)")
print(f"{spec.tokens_per_round:.2f} tokens per target pass, {spec.total_time:.3f} s vs normal {t_normal:.3f} s")
setting = (f"{pair.name} on {describe_device(pair.device)}, gamma=4, temperature 0, alpha {alpha:.2f} per checked "
           f"token, c = draft/target step = {c:.3f}, {N} new tokens")
print(f"[{setting}, one workshop prompt, each time best of 3 after a warm-up; normal = HF generate, "
      "speculative = our own loop (notebook 01 times HF generate against our plain loop)]")

# %%
from utils.plots import plot_bars

plot_bars({"normal (target)": t_normal, "draft+score\n(draft's text)": t_ds, "speculative\n(target's text)": spec.total_time},
          "seconds (best of 3)", setting.replace(", alpha", ",\nalpha"), fmt="{:.3f}");

# %% [markdown]
# Speculative decoding against each: it returns the target's own text, so the fair comparison is
# normal decoding. Draft-and-score is a different task at a different price: it returns the draft's
# text after one target pass over it, so it runs at about the draft's speed and speculative decoding,
# which must also verify and correct, cannot match it.

# %%
from utils.bench import how_much_faster

print(f"speculative decoding, against normal decoding (the same text): {how_much_faster(t_normal, spec.total_time)}; "
      f"against draft+score (the draft's text): {how_much_faster(t_ds, spec.total_time)}\n[{setting}]")

# %% [markdown]
# ## Try this
# - Put a prompt far from the training text (the tiny pair read Python's documentation), e.g. one
#   of `load_prompts("datacamp")`: does the score drop? Does the returned text change?
# - Replace the draft by an *untrained* model of the same shape: the method still returns its
#   (nonsense) text, with a bad score. Speculative decoding would still return the target's text,
#   only slower.
# - The tutorial also claims "only greedy and sampling supported" and "no batch support": which of
#   these hold for `speculative_generate`, and why? (Its docstring lists top-k and top-p;
#   notebook 09 runs it on a batch of left-padded prompts.)

# %% [markdown]
# ## Exercise: verification that can change a token
#
# Draft-and-score runs one target pass over the draft and keeps only a number. Use the same single
# pass to *decide*. Write `greedy_verify(target, ids, k)`: `ids` is `(1, T + k)`, a prompt of $T$ tokens followed
# by `k` drafted tokens. With **one** call `target(ids)`, return `(n_accepted, token)`: how many
# drafted tokens, from the left, equal the target's arg max at their position, and the target's own
# arg max right after them (its replacement for the first rejected token, or a bonus token when all
# `k` are kept). Mind the shift: the logits at position `i` predict the token at `i + 1`.
#
# `check_02` grades it on drafts the draft model wrote, on the target's own text, and on the target's
# text with one token replaced, for several k, and counts your forward passes. The reference solution is in
# `notebooks/solutions/ex02_greedy_verify.py`.

# %%
from utils.exercises import check_02, hint  # stuck? hint("02"), one more hint per call


def greedy_verify(target, ids, k):
    """ids: (1, T + k), ending with k drafted tokens -> (n_accepted, token). One target pass."""
    # logits = target(ids).logits[0]  # (T + k, V)
    raise NotImplementedError("verify here")


check_02(greedy_verify, pair)

# %% [markdown]
# What a pass looks like: the reference solution, through the same checker.

# %%
from notebooks.solutions.ex02_greedy_verify import greedy_verify as reference

check_02(reference, pair)

# %% [markdown]
# ## What you learned
# - Draft-and-score returns the draft model's text: the target's pass yields a score, and nothing
#   uses it to change a token, so the output follows the draft's distribution.
# - Where it is faster than target decoding, that is only because the target never decodes: it is
#   draft decoding with a number attached.
# - Verification must be able to reject a drafted token and put a replacement there: at the first
#   rejection a replacement is sampled from $\mathrm{norm}(\max(0, p - q))$ (in greedy mode: the
#   target's arg max), and when every drafted token is accepted a bonus token comes from $p$. The
#   same single target pass gives everything needed to do it.
# - Done that way (speculative decoding), the output is distributed exactly as the target's, and in
#   greedy mode equals target greedy decoding token for token (up to floating-point rounding in
#   bf16/fp16, where a near-tie can flip; notebook 03 checks it); the speed comes from accepting
#   several tokens per target pass.

# %% [markdown]
# ## References
# - DataCamp, *Speculative Decoding: A Guide With Implementation Examples*, 2024 (the method
#   reproduced in section 1): https://www.datacamp.com/tutorial/speculative-decoding
# - Leviathan, Kalman, Matias, *Fast Inference from Transformers via Speculative Decoding*, ICML 2023:
#   https://arxiv.org/abs/2211.17192
# - Chen et al., *Accelerating Large Language Model Decoding with Speculative Sampling*, 2023:
#   https://arxiv.org/abs/2302.01318
# - Hugging Face, *Assisted Generation: a new direction toward low-latency text generation*, 2023:
#   https://huggingface.co/blog/assisted-generation
