# %% [markdown]
# # 12 · A map of the field, and where to go next: serving engines
#
# The notebooks so far built one method carefully: a small draft model proposes, the target checks in
# one pass, a rejection rule keeps the output exactly the target's. Papers since 2022 change every
# part of that sentence: *who drafts* (a separate model, heads grafted on the target, the target's own
# layers, n-grams of the text itself or of a datastore, a model with another tokenizer), *what is
# checked* (a chain or a
# tree), and *for how many
# users at once* (one sequence or a batch). This notebook is a map: one paragraph per method, each
# with the speedup its own paper reports and the setup it was measured on, and which of them this
# collection implements. Then it points to the engines that run these methods for real: llama.cpp,
# which runs on a CPU like these notebooks, and the GPU servers vLLM, SGLang and TensorRT-LLM (Hugging
# Face TGI too, now in maintenance mode): what each option corresponds to here, and the exact
# configuration you would write for the Gemma 2 pair `google/gemma-2-2b-it` drafting for
# `google/gemma-2-27b-it`.
#
# **You will learn**
# - the four families of drafts, what each changes in the verification step, and where training
#   (distilling) the draft sits;
# - which methods keep the output exactly the target's, and which trade that for speed;
# - why the speedups papers report cannot be ranked against each other;
# - how the ideas of notebooks 03–11 appear as options of llama.cpp, vLLM, SGLang, TensorRT-LLM and TGI,
#   and how to write SGLang's flags for the chain these notebooks draft (the exercise).
#
# **Time to run:** a few seconds. No model is loaded: the map is read from `data/field.json`, whose
# every number carries its source (a URL and the place in it); the configurations are built by
# `utils/serving.py` and printed, never run. The one cell that runs an engine, under "Run it" in
# section 6, runs a small vLLM benchmark only where a CUDA GPU and vLLM are present, and otherwise says
# why it skipped.

# %%
# SETUP

# %%
import json

from IPython.display import Markdown, display

from utils.models import ROOT
from utils.serving import ENGINES, field_table, load_field, method_paragraph, plot_reported

methods = load_field()
meta = json.loads((ROOT / "data" / "field.json").read_text())
print(f"{len(methods)} methods in data/field.json, checked against their sources on {meta['_checked']}; "
      f"{meta['_checked_note']}")

# %% [markdown]
# ## 1. The map in one table
#
# One row per method: the family of its draft, whether it needs training, whether the output is
# exactly the target's, the first speedup its paper reports with that figure's setup, and where this
# collection implements it (prompt lookup has no paper: its source is the author's repository). The
# table is rendered from the JSON, so the numbers here and in the file cannot drift apart.

# %%
display(Markdown(field_table(methods)))

# %% [markdown]
# ## 2. Four families of drafts
#
# - **A separate draft model** (Leviathan et al., Chen et al., SpecInfer, staged speculation, BASS,
#   universal assisted decoding). The draft is another network, smaller and cheaper. Verification is
#   the accept/reject rule of notebook 03. Variants change *how many* candidates are checked
#   (SpecInfer and staged speculation check a tree of them in one pass, with a tree-shaped attention
#   mask), *how many sequences* run together (BASS: rows of a
#   batch accept different numbers of tokens), or *which vocabulary* the draft speaks (universal
#   assisted decoding translates drafts through text).
# - **Heads on the target** (Medusa, EAGLE, EAGLE-2, EAGLE-3, multi-token prediction). No second
#   model: small trained heads read the target's own hidden features and guess the next few tokens.
#   They must be trained for each target; a draft step runs a small head, not a second network.
#   Verification is again one target pass, usually over a tree.
# - **The target's own layers** (LayerSkip, Draft & Verify, Kangaroo; notebook 11). The draft is the
#   target itself, cut short: its first layers read by its own head (LayerSkip; Kangaroo adds a small
#   adapter trained on the frozen target), or the whole stack with some intermediate layers skipped
#   (Draft & Verify). No second model in memory, and the full target verifies. LayerSkip's recipe
#   trains the model itself so that its early layers draft well; Draft & Verify trains nothing.
# - **No draft model at all** (lookahead decoding; prompt lookup, notebook 10; REST). Candidates are
#   n-grams taken from the prompt, produced by the target itself with Jacobi iterations, or retrieved
#   from a datastore of text built beforehand (REST, which checks a tree of the continuations found).
#
# **Where training the draft sits.** Training is not a fifth family but a question every family
# answers: how the drafter comes to agree with the target. Heads on the target are trained against it
# by construction. A separate draft model can be taken as it is (the SmolLM2 and Gemma 2 pairs of
# these notebooks) or *aligned* to its target by knowledge distillation: DistillSpec distils it once,
# before serving, on text the draft itself generates; online speculative decoding keeps distilling it
# on the queries a service receives. Neither touches the target or the accept/reject rule, so the
# output stays exact and only $\alpha$ rises. This collection does it too: its shipped tiny draft was
# distilled from its target by `scripts/train_tiny_pair.py` (KL to the target's next-token
# distribution plus cross-entropy, on the corpus and on text the target wrote), and notebook 11 trains
# its exit adapter with KL to the frozen target.
#
# **Exact or not.** A method is exact when what it outputs is distributed exactly as the target's
# samples (greedy: token for token the target's greedy output). Whatever drafts *one chain* of
# tokens, the accept/reject rule of notebook 03 makes it exact, provided the draft gives its
# probabilities $q$ over the target's own vocabulary: the rule compares $p(x)$ with $q(x)$ token by
# token. A draft with another tokenizer has no $q$ over the target's tokens; it needs algorithms made
# for that case (Timor et al., the universal assisted decoding entry), and vLLM's
# `use_heterogeneous_vocab` option drafts greedily only (the note under vLLM's draft-model
# configuration in section 6). A tree of candidates (several tokens
# per position: SpecInfer, Medusa, EAGLE) needs a rule made for several candidates, such as
# SpecInfer's multi-step speculative sampling, which tries the children one after another against a
# residual updated after each rejection: applying the chain rule branch by branch would bias the
# output. A method stops being exact when it changes that rule (Medusa's
# "typical acceptance" accepts any plausible token) or changes the target itself (Medusa-2 fine-tunes
# it; LayerSkip's recipe retrains it). The `exact` column says which; the paragraphs quote where each
# paper says so.

# %% [markdown]
# ## 3. One paragraph per method
#
# Each paragraph is generated from the method's JSON entry: the draft, the verification, training,
# exactness, every speedup the paper reports with its setup and the place it is stated, and where to
# find it here. "Not re-checked here" marks a setup detail that was not verified against the paper's
# text for this file; it is left open rather than guessed.

# %%
for m in methods:
    display(Markdown(method_paragraph(m)))

# %% [markdown]
# ## 4. What the papers report, side by side, and why not to rank them
#
# Every figure the JSON holds, as its source states it. A range is drawn dark to its low end and light
# to its high end; an "up to" figure is a single bar. Each label says where the figure comes from (the
# paper, a README, a blog) and what it measures: a README's figure that mixes in Medusa-2 (not exact),
# a blog's measurement of Hugging Face's implementation and a throughput at batch size 64 each measure
# something other than the paper's own speedup. The setups are in the table above and in section 3.

# %%
ax = plot_reported(methods)

# %% [markdown]
# Do not read this as a leaderboard. Each bar was measured on its own models, its own hardware, its
# own batch size, its own temperature, and against its own baseline (plain decoding in the same code,
# "optimized regular decoding", "existing LLM serving systems"). Notebooks 05 and 07 measured why this
# matters: the same algorithm gains or loses depending on what a draft step costs against a target
# step ($c$), and that depends on the hardware and on how the steps are run.
# The only comparable numbers are the ones you measure yourself, on one machine, against one baseline.
# The spread of setups, counted from the file:

# %%
# NBVAL_CHECK_OUTPUT
from utils.serving import speedup_text

figures = [(m, r) for m in methods for r in m["reported"]]
for key in ("models", "hardware", "batch_size", "temperature", "dataset"):
    values = [r[key] for _, r in figures]
    open_ = sum(("not re-checked" in v or "not stated" in v) for v in values)
    print(f"{key:12s}: {len(set(values)):2d} different entries over {len(values)} figures; {open_} not stated or not re-checked")
print()
for m, r in figures:
    print(f"{m['name'][:34]:34s} {speedup_text(r):12s} batch: {r['batch_size'][:40]:40s} hardware: {r['hardware'][:60]}")

# %% [markdown]
# ## 5. What this collection implements
#
# The collection builds the separate-draft-model family from scratch and stays exact throughout: the
# algorithm (03), its behaviour round by round (04), Hugging Face's implementation beside ours (05),
# the same algorithm on a compiled, static-cache engine (07), adaptive draft lengths (08), batches
# (09), and two ways to draft without a second model: n-grams from the prompt (10) and the
# target's own first layers (11). Its tiny draft is itself distilled from its target (section 2).
# Trained heads, trees, retrieval and cross-vocabulary drafting are the next steps, and the engines
# below serve most of them.

# %%
# NBVAL_CHECK_OUTPUT
done = [m for m in methods if m["implemented_in"] != "not implemented"]
todo = [m for m in methods if m["implemented_in"] == "not implemented"]
for m in done:
    print(f"implemented: {m['name']:48s} -> notebooks {', '.join(m['implemented_in'])}")
for m in todo:
    print(f"not here:    {m['name']:48s} ({m['implemented_note']})")

# %% [markdown]
# ## 6. Where next, at scale: the serving engines
#
# A serving engine batches many requests together (continuous batching) and runs the models' steps
# with optimized kernels: the step costs that notebook 07 fought in eager PyTorch are the engine's job.
# That is also where notebook 09's lesson bites: when the batch is large, the target's step is no
# longer almost free to widen, and speculation can slow the engine down. Five engines, as their
# documentation describes them (versions and URLs printed below):
#
# - **llama.cpp**: the natural next step from these notebooks, because it runs on a CPU (and on GPUs),
#   from GGUF files. `llama-server` takes a draft model (`-md`), a maximum draft length, and a
#   probability under which the draft stops early (`--draft-p-min`: notebook 08's confidence
#   threshold); `--spec-type ngram-simple` drafts n-grams from the history instead (notebook 10). The
#   standalone examples `llama-speculative` and `llama-lookup` do the same offline. Recent builds
#   renamed the length options (`--spec-draft-n-max`; before: `--draft-max`, `--draft-min`), so the
#   builder below prints both forms.
# - **vLLM**: one `speculative_config` dictionary (Python) or `--speculative-config '{...}'` (server)
#   with a `method`: a separate draft model, n-gram lookup, EAGLE and EAGLE-3 heads, Medusa heads, MTP.
# - **SGLang**: `--speculative-*` server flags. A separate small draft model is its `STANDALONE`
#   algorithm; `EAGLE` (EAGLE-2) and `EAGLE3` load a trained head through the same
#   `--speculative-draft-model-path`; `NGRAM` needs no draft.
# - **TensorRT-LLM** (NVIDIA GPUs): a `speculative_config` object in its Python LLM API
#   (`DraftTargetDecodingConfig`, `NGramDecodingConfig`, `Eagle3DecodingConfig`, `MTPDecodingConfig`),
#   or the same fields in a YAML file given to `trtllm-serve`. Its docs also describe Medusa, ReDrafter,
#   EAGLE-1/2 and lookahead decoding for its older TensorRT engine backend.
# - **Hugging Face TGI**: Medusa heads, and n-gram speculation with `--speculate N`. It has no option
#   for a separate draft model, and its README says it is now in maintenance mode.
#
# Only vLLM runs here (the benchmark cell below, on a GPU); every other configuration in this section
# is written, never run: check it against your installed version (`--help`, and the docs printed
# with it). How each idea of these notebooks maps to the engines' options, starting with how each
# spells $\gamma$:

# %%
from utils.serving import mapping_table

display(Markdown(mapping_table()))
for key, e in ENGINES.items():
    print(f"{e['name']}: {e['version']}")
    print(f"  run here: {e['runs_here']}")
    if "separate_draft_model" in e:
        print(f"  separate draft model: {e['separate_draft_model']}")

# %% [markdown]
# ### The configuration for Gemma 2: 2b drafting for 27b
#
# `utils.serving` builds each engine's configuration for a pair of `utils.models.PAIRS`; $\gamma$ (the
# tokens drafted per round) becomes what the table's first row says: `num_speculative_tokens` in vLLM,
# `--speculative-num-steps` in SGLang (a chain: `--speculative-eagle-topk 1`), `max_draft_len` in
# TensorRT-LLM, the draft's maximum length in llama.cpp, and `--speculate` in TGI. SGLang's
# `--speculative-num-draft-tokens` counts the nodes of the draft tree *including its root*, the last
# verified token, so a chain of $\gamma$ is $\gamma + 1$ of them; its n-gram tree branches unless
# `--speculative-ngram-min-bfs-breadth` and `--speculative-ngram-max-bfs-breadth` are 1 (both read
# in SGLang's source, linked in `ENGINES["sglang"]["docs"]`). TensorRT-LLM's server reads its options
# from a YAML file, printed under its command; llama.cpp reads GGUF files, so its commands name the
# converted files. Both models share Gemma's tokenizer, so the draft-model method applies directly.
# These configurations quantize nothing: both models load with unquantized 16-bit weights. The first
# line below (`memory_fits`, notebook 06) says what those take and which GPUs of the table
# `utils.models.GPUS` hold them; the engine then reserves more of the GPU for its KV cache, so a GPU
# of that table which the line leaves out cannot run these configurations as written. For a GPU not
# in the table, compare its memory with the figure. Notebook 06's 4-bit figure is for Hugging Face's
# loader, not for these engines (llama.cpp's GGUF files can be quantized too, which this line does not
# count). Both models are gated, the 2b draft as well as the 27b target: accept the license on each
# model page and log in first.

# %%
# NBVAL_CHECK_OUTPUT
from utils.models import memory_fits
from utils.serving import config_text, engine_config

PAIR_AT_SCALE = "gemma2-2b-27b"
GAMMA = 4
bf16 = next(row for row in memory_fits(PAIR_AT_SCALE) if row["precision"] == "bf16")
print(f"{PAIR_AT_SCALE} unquantized, in bf16, as the configurations below load it: about {bf16['gib']:.0f} GiB "
      f"(weights + 15%, before the engine's KV cache); of the GPUs in utils.models.GPUS, these hold it: "
      f"{', '.join(bf16['fits']) or 'none'}")
for engine, method in [("llamacpp", "draft"), ("llamacpp", "ngram"), ("vllm", "draft"), ("vllm", "ngram"),
                       ("sglang", "draft"), ("sglang", "ngram"), ("trtllm", "draft"), ("trtllm", "ngram"),
                       ("tgi", "ngram")]:
    print("\n" + config_text(engine_config(engine, PAIR_AT_SCALE, method, GAMMA)))

# %% [markdown]
# The methods that need weights trained for this target, and what the builders say when asked for
# them. No EAGLE or Medusa head for `gemma-2-27b-it` ships with this collection, Gemma 2 has no MTP
# layers, TensorRT-LLM serves Medusa only on its older TensorRT engine backend, this collection's
# llama.cpp builder writes only the draft-model and n-gram commands, and TGI has no draft-model
# option; the error names what is supported instead.

# %%
# NBVAL_CHECK_OUTPUT
for engine, method in [("vllm", "eagle3"), ("vllm", "mtp"), ("sglang", "eagle"), ("trtllm", "medusa"),
                       ("llamacpp", "eagle3"), ("tgi", "draft")]:
    try:
        engine_config(engine, PAIR_AT_SCALE, method, GAMMA)
    except ValueError as e:
        print(f"{engine}, {method}: ValueError: {e}")
print("\nwith a head you trained (a placeholder name):")
print(engine_config("vllm", PAIR_AT_SCALE, "eagle3", GAMMA, head="you/eagle3-gemma-2-27b-it").cli)

# %% [markdown]
# ### What the projects report
#
# As the projects state them, with their setups. vLLM's own blog shows both sides: a gain at low load
# and a slowdown at high load, where the batch already keeps the GPU busy (notebook 09 measures the
# same effect on a CPU).

# %%
for e in ENGINES.values():
    for r in e["reported"]:
        print(f"{e['name']}: {r['speedup']}\n    setup: {r['setup']}\n    source: {r['source']}")
    if "note" in e:
        print(f"{e['name']}, note: {e['note']}")

# %% [markdown]
# ### Run it: a small vLLM benchmark, only where it can run
#
# The next cell measures tokens/s of plain decoding and of draft-model speculative decoding in vLLM,
# on the datacamp prompts (`data/prompts.json`'s "datacamp" set: the prompts of the DataCamp tutorial
# that notebook 02 reproduces) at temperature 0. It needs a CUDA GPU and `pip install vllm`; anywhere else
# it prints why it skipped (the repository's tests run it without a GPU and check exactly that).
# Install vLLM in a fresh runtime or virtual environment, not into this collection's: it brings its
# own torch and may conflict with the transformers version pinned in `requirements.txt` (on Colab,
# restart the runtime after installing). The engines, plain and speculative, then the draft model
# alone, run one after the other in this process, each allowed the share `GPU_SHARE` of the GPU
# (vLLM's `gpu_memory_utilization`; `None` keeps vLLM's default), small enough that the second starts
# even if the first is not freed; if an engine still fails for lack of memory (or finds too little
# room for its KV cache in that share), run each configuration in its own process with a larger
# share. The draft-alone run measures $c$ as vLLM runs the two models: the target's seconds per token
# over the draft's, both decoding plainly on the same prompts (plain target tokens/s over draft
# tokens/s). With it the cell prints the cost model's prediction $\tau/(\gamma c + v)$ at $v = 1$, from
# vLLM's own tokens per round $\tau$; if that third engine cannot start, the cell says why and the
# two main measurements stand.
# The default pair is the small, ungated SmolLM2 pair, which fits a Colab T4; set
# `VLLM_PAIR = "gemma2-2b-27b"` and `GPU_SHARE = None` on a GPU that the memory line of the Gemma 2
# configuration above lists.

# %%
# Runs only with a CUDA GPU and vLLM installed; otherwise prints why it skipped.
from utils.serving import EngineUnavailable, engine_status, run_vllm, vllm_report

VLLM_PAIR = "smollm2-135m-1.7b"
GPU_SHARE = 0.45  # each engine's gpu_memory_utilization: two fit at once; None: vLLM's default
status = engine_status()
print(status.summary())
try:
    res = run_vllm(VLLM_PAIR, method="draft", gamma=4, max_tokens=64, status=status, gpu_memory_utilization=GPU_SHARE)
except EngineUnavailable as e:
    print(f"\nskipped: {e}")
else:
    print("\n" + vllm_report(res))

# %% [markdown]
# ## 7. Exercise: SGLang's flags for a chain
#
# Complete `sglang_chain_flags(method, gamma, draft)`: the `--speculative-*` flags (a list of strings,
# the ones that follow `--model TARGET`) that make SGLang draft a *chain* of `gamma` tokens per round,
# as these notebooks do. `method="draft"` is a separate draft model (SGLang's `STANDALONE`; `draft` is
# its path); `method="ngram"` is prompt lookup (`NGRAM`, no draft model; `draft` is `None`). The two
# facts of section 6 decide the numbers: the draft-token count includes the root, and the n-gram tree
# branches unless its breadth is 1. `check_12` compares your flags, in any order, with
# `utils.serving.sglang_config` for several $\gamma$ on two pairs (its PASSED line lists them): the
# same set, so a flag it does not expect fails too.

# %%
from utils.exercises import check_12, hint  # stuck? hint("12"), one more hint per call


def sglang_chain_flags(method, gamma, draft=None):
    # YOUR CODE HERE: e.g. ["--speculative-algorithm", "NGRAM", "--speculative-num-draft-tokens", ...]
    raise NotImplementedError


check_12(sglang_chain_flags)

# %% [markdown]
# The reference solution through the same checker:

# %%
from notebooks.solutions.ex12_engine_flags import sglang_chain_flags as reference

check_12(reference)

# %% [markdown]
# ## Try this
# - Pick one method of the table and open its source (the URL in `data/field.json`): is the reported
#   figure at batch size 1? Against which baseline? Fill in one "not re-checked here" with what you
#   find, and its place in the paper.
# - `engine_config("vllm", "gemma2-2b-27b", "ngram", 8, prompt_lookup=(1, 3))`: what changes in the
#   JSON? Which notebook's parameter is `prompt_lookup_max`?
# - On a GPU with vLLM, run section 6's benchmark cell with `gamma=1, 2, 4, 8`: where does the
#   speedup peak, and does the cost model predict it? The cell measures $c$ (the draft run alone) and
#   prints $\tau/(\gamma c + v)$ at $v = 1$ from vLLM's tokens per round $\tau$: feed the cost model
#   $\tau$, not vLLM's acceptance, which is per *drafted* token, not the per-checked $\alpha$ that
#   Leviathan et al.'s Eq. 1 (expected tokens per round) and Thm 3.8 (the speedup) take (notebook 03,
#   section 4). Where the prediction overshoots, $v > 1$: by how much?
# - On your laptop, convert the SmolLM2 pair to GGUF and run the llama.cpp command that
#   `engine_config("llamacpp", "smollm2-135m-1.7b", "draft", 4)` prints: how does the speedup on your
#   CPU compare with what these notebooks measured? Then set `--spec-draft-p-min` (or `--draft-p-min`)
#   to 0.8: which notebook's rule is that?
# - Rerun it with several copies of the prompt list (a larger batch): at what size does speculation
#   stop paying? Compare with notebook 09.
# - Recent vLLM has `"use_heterogeneous_vocab": true` (a field of `SpeculativeConfig` on its main branch:
#   https://github.com/vllm-project/vllm/blob/main/vllm/config/speculative.py; older releases have no such
#   option, so check yours): a draft with another tokenizer proposes only tokens both vocabularies share.
#   Which draft from another family would you try for `gemma-2-27b-it`, and why must its drafting be
#   greedy there?

# %% [markdown]
# ## What you learned
# - Drafts come in four families: a separate model, heads trained on the target, the target's own
#   layers (an early exit or skipped layers), or no model at all (n-grams from the text or retrieved
#   from a datastore). Trees let one target pass check many candidates; batches make that pass dearer.
#   Distilling the draft from its target (DistillSpec, offline; online speculative decoding, while
#   serving; this collection's tiny draft) raises $\alpha$ without touching exactness.
# - Exactness comes from the accept/reject rule, not from the draft: any chain of drafted tokens
#   verified by it leaves the output the target's, provided the draft's probabilities are over the
#   target's vocabulary; another tokenizer needs its own algorithms, and trees a rule for several
#   candidates per position; relaxed acceptance or a fine-tuned target gives exactness up.
# - A paper's speedup belongs to its setup (model, hardware, batch, temperature, baseline); the
#   figures of different papers cannot be ranked, and only your own measurement on your hardware counts.
# - The engines expose the same ideas as options: llama.cpp's `llama-server` (`-md` draft model,
#   `--spec-type ngram-simple`, a draft-probability floor like notebook 08's threshold), vLLM's
#   `speculative_config` (`draft_model`, `ngram`, `eagle`/`eagle3`, `medusa`, `mtp`), SGLang's
#   `--speculative-algorithm` (`STANDALONE`, `NGRAM`, `EAGLE`, `EAGLE3`), TensorRT-LLM's
#   `*DecodingConfig` classes (`DraftTarget`, `NGram`, `Eagle3`, `MTP`), TGI's `--speculate` (n-gram,
#   Medusa). An engine's counts and names need reading: SGLang's draft-token count includes the tree's
#   root, its n-gram drafts are trees unless told otherwise, and llama.cpp renamed its draft options.

# %% [markdown]
# ## References
# - Leviathan, Kalman, Matias, *Fast Inference from Transformers via Speculative Decoding*, arXiv 2022 (ICML 2023):
#   https://arxiv.org/abs/2211.17192
# - Chen et al., *Accelerating Large Language Model Decoding with Speculative Sampling*, 2023:
#   https://arxiv.org/abs/2302.01318
# - Cai et al., *Medusa: Simple LLM Inference Acceleration Framework with Multiple Decoding Heads*,
#   2024: https://arxiv.org/abs/2401.10774; code: https://github.com/FasterDecoding/Medusa
# - Li, Wei, Zhang, Zhang, *EAGLE: Speculative Sampling Requires Rethinking Feature Uncertainty*, 2024:
#   https://arxiv.org/abs/2401.15077; *EAGLE-2: Faster Inference of Language Models with Dynamic Draft
#   Trees*, 2024: https://arxiv.org/abs/2406.16858; *EAGLE-3: Scaling up Inference Acceleration of
#   Large Language Models via Training-Time Test*, 2025: https://arxiv.org/abs/2503.01840
# - Gloeckle et al., *Better & Faster Large Language Models via Multi-token Prediction*, 2024:
#   https://arxiv.org/abs/2404.19737
# - DeepSeek-AI, *DeepSeek-V3 Technical Report*, 2024 (Section 5.4.3): https://arxiv.org/abs/2412.19437
# - Fu et al., *Break the Sequential Dependency of LLM Inference Using Lookahead Decoding*, 2024:
#   https://arxiv.org/abs/2402.02057
# - Miao et al., *SpecInfer: Accelerating Generative Large Language Model Serving with Tree-based
#   Speculative Inference and Verification*, 2023: https://arxiv.org/abs/2305.09781
# - Spector, Ré, *Accelerating LLM Inference with Staged Speculative Decoding*, 2023:
#   https://arxiv.org/abs/2308.04623
# - Timor et al., *Accelerating LLM Inference with Lossless Speculative Decoding Algorithms for
#   Heterogeneous Vocabularies*, ICML 2025: https://arxiv.org/abs/2502.05202; Intel Labs and Hugging
#   Face, *Universal Assisted Generation*, 2024: https://huggingface.co/blog/universal_assisted_generation
# - Qian et al., *BASS: Batched Attention-optimized Speculative Sampling*, Findings of ACL 2024:
#   https://arxiv.org/abs/2404.15778
# - Elhoushi et al., *LayerSkip: Enabling Early Exit Inference and Self-Speculative Decoding*, ACL 2024:
#   https://arxiv.org/abs/2404.16710
# - Zhang et al., *Draft & Verify: Lossless Large Language Model Acceleration via Self-Speculative
#   Decoding*, ACL 2024: https://arxiv.org/abs/2309.08168 (ACL version: https://aclanthology.org/2024.acl-long.607)
# - Liu et al., *Kangaroo: Lossless Self-Speculative Decoding via Double Early Exiting*, 2024:
#   https://arxiv.org/abs/2404.18911; code: https://github.com/Equationliu/Kangaroo
# - Apoorv Saxena, *Prompt Lookup Decoding*, 2023: https://github.com/apoorvumang/prompt-lookup-decoding
# - He, Zhong, Cai, Lee, He, *REST: Retrieval-Based Speculative Decoding*, NAACL 2024:
#   https://arxiv.org/abs/2311.08252 (NAACL version: https://aclanthology.org/2024.naacl-long.88); code:
#   https://github.com/FasterDecoding/REST
# - Zhou et al., *DistillSpec: Improving Speculative Decoding via Knowledge Distillation*, ICLR 2024:
#   https://arxiv.org/abs/2310.08461
# - Liu, Hu, Bailis, Cheung, Deng, Stoica, Zhang, *Online Speculative Decoding*, ICML 2024:
#   https://arxiv.org/abs/2310.07177
# - vLLM speculative decoding docs: https://docs.vllm.ai/en/latest/features/speculative_decoding/
#   (draft models: https://docs.vllm.ai/en/v0.25.0/features/speculative_decoding/draft_model/); vLLM
#   blog, *How Speculative Decoding Boosts vLLM Performance by up to 2.8x*, 2024:
#   https://blog.vllm.ai/2024/10/17/spec-decode.html
# - SGLang speculative decoding docs: https://docs.sglang.io/docs/advanced_features/speculative_decoding;
#   server arguments: https://github.com/sgl-project/sglang/blob/main/python/sglang/srt/server_args.py;
#   the n-gram draft tree: https://github.com/sgl-project/sglang/tree/main/python/sglang/srt/speculative/cpp_ngram
# - TensorRT-LLM speculative decoding (LLM API, PyTorch backend, trtllm-serve YAML):
#   https://nvidia.github.io/TensorRT-LLM/features/speculative-decoding.html; TensorRT backend (Medusa,
#   ReDrafter, EAGLE, lookahead): https://nvidia.github.io/TensorRT-LLM/advanced/speculative-decoding.html;
#   `trtllm-serve`: https://nvidia.github.io/TensorRT-LLM/commands/trtllm-serve/trtllm-serve.html
# - llama.cpp speculative decoding: https://github.com/ggml-org/llama.cpp/blob/master/docs/speculative.md;
#   `llama-server` options: https://github.com/ggml-org/llama.cpp/blob/master/tools/server/README.md;
#   examples `llama-speculative`, `llama-lookup`, `llama-lookahead`:
#   https://github.com/ggml-org/llama.cpp/tree/master/examples
# - Hugging Face TGI, speculation: https://huggingface.co/docs/text-generation-inference/conceptual/speculation;
#   launcher `--speculate`: https://huggingface.co/docs/text-generation-inference/reference/launcher#speculate
