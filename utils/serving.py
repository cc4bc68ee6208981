"""Notebook 12: the map of the field, and the serving engines readers grow into.

- The field: `load_field()` reads data/field.json (one entry per method, with the speedup each paper
  reports and its setup); `field_table()`, `method_paragraph()` and `plot_reported()` render it.
- The engines: `ENGINES` says, for vLLM, SGLang, TensorRT-LLM, llama.cpp and HF TGI, which speculative
  options each has, how each spells gamma, what the options map to in these notebooks, which docs (and
  version) that comes from and what the project reports. `mapping_table()` renders the mapping.
- Configurations: `vllm_config`, `sglang_config`, `trtllm_config`, `llamacpp_config`, `tgi_config` (or
  `engine_config(engine, ...)`) build the configuration for a pair of utils.models.PAIRS: the Python form
  where the engine has one, the equivalent command line, and any file the command reads (TensorRT-LLM's
  YAML). An unknown engine, method or pair raises ValueError naming what is supported.
- `engine_status()`: which of {CUDA GPU, vllm, sglang, text-generation-launcher} are present here, and
  why a run is skipped. `run_vllm()` runs a tiny benchmark only where a GPU and vLLM are present. Nothing
  here runs TensorRT-LLM, llama.cpp, SGLang or TGI: their configurations are written, never run.

Every option name below is taken from the engine's documentation or, for SGLang's NGRAM breadth flags, its
server arguments source (URLs in ENGINES); nothing here was run against an engine in this repository's CI,
which has neither a GPU nor the engines.
"""

from __future__ import annotations

import json
import shlex
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path

from utils.models import MODELS_DIR, PAIRS, ROOT

FIELD_PATH = ROOT / "data" / "field.json"

# ---------------------------------------------------------------------------------------------------
# The map of the field (data/field.json)
# ---------------------------------------------------------------------------------------------------


def load_field(path: Path | str = FIELD_PATH) -> list[dict]:
    """The methods of data/field.json, in file order."""
    return json.loads(Path(path).read_text(encoding="utf-8"))["methods"]


def speedup_text(r: dict) -> str:
    """'2.7x-3.5x' for a range, '2.15x' for one number (an 'up to' figure says so in r['what'])."""
    lo, hi = r["low"], r["high"]
    return f"{lo:g}x" if lo == hi else f"{lo:g}x-{hi:g}x"


def ref_text(m: dict, prefix: str = "arXiv ") -> str:
    """'arXiv [id](url)' (prefix="" in the table's arXiv column), or 'no paper; [repository](url)' for a
    method published without a paper (arxiv null)."""
    return f"{prefix}[{m['arxiv']}]({m['url']})" if m["arxiv"] else f"no paper; [repository]({m['url']})"


def source_kind(r: dict) -> str:
    """What kind of source a reported figure comes from: 'paper', 'README', 'HF blog' or 'web page'."""
    url = r["source"]["url"]
    if url.startswith(("https://arxiv.org/", "https://aclanthology.org/")):
        return "paper"
    if url.startswith("https://github.com/"):
        return "README"
    if url.startswith("https://huggingface.co/blog/"):
        return "HF blog"
    return "web page"


def implemented_text(m: dict) -> str:
    where = m["implemented_in"]
    return where if isinstance(where, str) else ", ".join(f"notebook {n}" for n in where)


def exact_text(m: dict) -> str:
    return {True: "yes", False: "no"}.get(m["exact"], str(m["exact"]))


def field_table(methods: list[dict] | None = None) -> str:
    """A markdown table: one row per method, its first reported figure and where it is implemented here."""
    methods = methods if methods is not None else load_field()
    rows = ["| method | arXiv | year | draft | trained? | exact? | reported (first figure) | setup | here |",
            "|---|---|---|---|---|---|---|---|---|"]
    for m in methods:
        r = m["reported"][0]
        rows.append(f"| {m['name']} | {ref_text(m, prefix='')} | {m['year']} | {m['family']} | "
                    f"{'yes' if m['needs_training'] else 'no'} | {exact_text(m)} | {speedup_text(r)} | "
                    f"{r['setup']} | {implemented_text(m)} |")
    return "\n".join(rows)


def method_paragraph(m: dict) -> str:
    """One markdown paragraph per method, every number taken from the JSON entry."""
    figures = "; ".join(
        f"**{speedup_text(r)}** ({r['what']}; measured: {r['metric']}; {r['setup']}; batch: {r['batch_size']}; "
        f"temperature: "
        f"{r['temperature']}; source: [{r['source']['where']}]({r['source']['url']}))" for r in m["reported"])
    trained = "needs training" if m["needs_training"] else "needs no training"
    return (f"**{m['name']}** ({m['authors']}, {m['year']}, {ref_text(m)}). "
            f"*Draft:* {m['draft']}. *Verification:* {m['verification']}. It {trained} ({m['training_note']}). "
            f"*Exact:* {exact_text(m)}: {m['exact_note']}. *Reported:* {figures}. "
            f"*Here:* {implemented_text(m)} ({m['implemented_note']}).")


def plot_label(m: dict, r: dict) -> str:
    """The y label of one bar: the method, its arXiv id, the kind of source and what was measured, e.g.
    'EAGLE-3 (2503.01840; paper, throughput at batch size 64, in SGLang)'."""
    name = m["name"].split(" (")[0]  # the short name; the metric says which variant
    return f"{name} ({m['arxiv'] or 'no paper'}; {source_kind(r)}, {r['metric']})"


FAMILY_COLORS = {"separate draft model": "tab:blue", "heads on the target": "tab:orange",
                 "the target's own layers": "tab:purple", "no draft model": "tab:green"}


def plot_reported(methods: list[dict] | None = None, ax=None):
    """Every reported speedup as a bar (a range as a span), labelled with the method, the kind of source
    (paper, README, blog) and what was measured. Not a ranking."""
    import matplotlib.pyplot as plt

    methods = methods if methods is not None else load_field()
    rows = [(m, r) for m in methods for r in m["reported"]]
    if ax is None:
        _, ax = plt.subplots(figsize=(11, 0.36 * len(rows) + 1.6), layout="constrained")
    for i, (m, r) in enumerate(rows):
        c = FAMILY_COLORS.get(m["family"], "tab:gray")
        ax.barh(i, r["high"], color=c, alpha=0.35 if r["low"] != r["high"] else 0.8)
        if r["low"] != r["high"]:
            ax.barh(i, r["low"], color=c, alpha=0.8)
        ax.text(r["high"] + 0.05, i, speedup_text(r), va="center", fontsize=7.5)
    ax.set_yticks(range(len(rows)), [plot_label(m, r) for m, r in rows], fontsize=7.5)
    ax.invert_yaxis()
    ax.axvline(1, color="k", lw=0.8)
    ax.set_xlim(0, max(r["high"] for _, r in rows) + 1)  # room for the largest bar's label
    ax.set_xlabel("speedup as its source reports it (x); a range: dark = low end, light = high end")
    ax.set_title("As reported, each on its own setup (model, hardware, batch, temperature, baseline): NOT comparable",
                 fontsize=10)
    from matplotlib.patches import Patch

    ax.legend(handles=[Patch(color=c, label=k) for k, c in FAMILY_COLORS.items()], loc="lower right", fontsize=8)
    return ax


# ---------------------------------------------------------------------------------------------------
# The engines
# ---------------------------------------------------------------------------------------------------

VLLM_DOCS = "https://docs.vllm.ai/en/latest/features/speculative_decoding/"
SGLANG_DOCS = "https://docs.sglang.io/docs/advanced_features/speculative_decoding"
TGI_DOCS = "https://huggingface.co/docs/text-generation-inference/conceptual/speculation"
TRTLLM_DOCS = "https://nvidia.github.io/TensorRT-LLM/features/speculative-decoding.html"
LLAMACPP_DOCS = "https://github.com/ggml-org/llama.cpp/blob/master/docs/speculative.md"
LLAMACPP_SERVER_DOCS = "https://github.com/ggml-org/llama.cpp/blob/master/tools/server/README.md"
NOT_RUN = "configuration only: this collection writes it and never runs it"

# What each engine's speculative options are and what they map to here. "maps_to" names this
# collection's notebooks (09, 10, 11 are notebook 09 batched, 10 prompt lookup, 11 self-speculation).
ENGINES: dict[str, dict] = {
    "vllm": {
        "name": "vLLM",
        "gamma": '"num_speculative_tokens": G in speculative_config',
        "runs_here": "section 6's benchmark cell (run_vllm), only where a CUDA GPU and vLLM are present",
        "version": "docs v0.25.0 (draft-model page) and latest; draft models need vLLM > 0.10.0 "
                   "(the docs: 'not supported in vllm<=0.10.0'); the older speculative_model= flags are deprecated",
        "docs": {
            "overview and --speculative-config schema": VLLM_DOCS,
            "draft model": "https://docs.vllm.ai/en/v0.25.0/features/speculative_decoding/draft_model/",
            "n-gram": "https://docs.vllm.ai/en/latest/features/speculative_decoding/n_gram/",
            "EAGLE": "https://docs.vllm.ai/en/latest/features/speculative_decoding/eagle/",
            "MTP": "https://docs.vllm.ai/en/latest/features/speculative_decoding/mtp/",
            "method names (incl. medusa)": "https://docs.vllm.ai/en/v0.12.0/api/vllm/config/speculative/",
        },
        "options": {
            "draft": ('speculative_config={"method": "draft_model", "model": DRAFT, "num_speculative_tokens": G}',
                      "03, 05 (and 08, 09)", "a draft with the target's vocabulary; in recent vLLM (main branch), "
                      "'use_heterogeneous_vocab': true allows another tokenizer (greedy drafting only)"),
            "ngram": ('speculative_config={"method": "ngram", "num_speculative_tokens": G, "prompt_lookup_min": N, '
                      '"prompt_lookup_max": M}', "10 (and HF prompt_lookup_num_tokens in 05)", "no draft model"),
            "eagle": ('speculative_config={"method": "eagle" or "eagle3", "model": HEAD, "num_speculative_tokens": G}',
                      "not implemented (closest: 11)", "an EAGLE head trained for the target"),
            "medusa": ('speculative_config={"method": "medusa", "model": HEADS, ...}', "not implemented (closest: 11)",
                       "Medusa heads trained for the target; 'medusa' is a documented method name"),
            "mtp": ('speculative_config={"method": "mtp", "num_speculative_tokens": 1}', "not implemented (closest: 11)",
                    "a target with native MTP layers (e.g. MiMo, DeepSeek-V3); Gemma 2 has none"),
        },
        "reported": [
            {"speedup": "up to 1.5x", "setup": "draft model turboderp/Qwama-0.5B-Instruct for Llama3-70B, ShareGPT, "
             "4x H100, QPS = 1", "source": "https://blog.vllm.ai/2024/10/17/spec-decode.html"},
            {"speedup": "up to 2.8x", "setup": "n-gram lookup, Llama3-70B, CNN/DailyMail, 4x H100, QPS = 1",
             "source": "https://blog.vllm.ai/2024/10/17/spec-decode.html"},
            {"speedup": "1.4x and 1.8x slowdowns", "setup": "the same two runs at high QPS (ShareGPT, CNN/DailyMail): "
             "extra compute when the engine is already compute-bound",
             "source": "https://blog.vllm.ai/2024/10/17/spec-decode.html"},
        ],
        "note": "the blog (Oct 2024) measured vLLM of that time; its code uses the since-deprecated flags",
    },
    "sglang": {
        "name": "SGLang",
        "gamma": "--speculative-num-steps G, with --speculative-eagle-topk 1 and --speculative-num-draft-tokens G+1 "
                 "for a chain (the count includes the tree's root)",
        "runs_here": NOT_RUN,
        "version": "docs on the main branch (stored 2026 snapshot); the page does not pin a release",
        "docs": {"speculative decoding": SGLANG_DOCS,
                 "server arguments (NGRAM breadth flags)":
                     "https://github.com/sgl-project/sglang/blob/main/python/sglang/srt/server_args.py",
                 "n-gram draft tree (root included in the count)":
                     "https://github.com/sgl-project/sglang/tree/main/python/sglang/srt/speculative/cpp_ngram"},
        "options": {
            "draft": ("--speculative-algorithm STANDALONE --speculative-draft-model-path DRAFT",
                      "03, 05 (and 08, 09)", "a smaller draft LLM (token-level); no --enable-dp-attention"),
            "ngram": ("--speculative-algorithm NGRAM --speculative-num-draft-tokens G+1 "
                      "--speculative-ngram-min-bfs-breadth 1 --speculative-ngram-max-bfs-breadth 1", "10",
                      "no draft model; CUDA only; breadth 1 for a chain (the default max breadth, 10, drafts a tree)"),
            "eagle": ("--speculative-algorithm EAGLE (EAGLE-2) or EAGLE3 --speculative-draft-model-path HEAD",
                      "not implemented (closest: 11)", "an EAGLE/EAGLE-3 head trained for the target"),
            "mtp": ("--speculative-algorithm EAGLE (or NEXTN, its alias) on an MTP-enabled model",
                    "not implemented (closest: 11)", "a target with MTP layers; the draft path may be omitted"),
        },
        "separate_draft_model": "STANDALONE (any smaller draft LLM); EAGLE and EAGLE3 load a separate draft *head* "
                                "through the same --speculative-draft-model-path",
        "reported": [
            {"speedup": "158.34 -> 244.10 (EAGLE-2) -> 373.25 (EAGLE-3) tokens/s, i.e. 1.54x and 2.36x",
             "setup": "Llama-3.1-8B-Instruct, MT-bench, 1x H100 (batch size not stated on the page)",
             "source": SGLANG_DOCS},
        ],
    },
    "trtllm": {
        "name": "TensorRT-LLM",
        "gamma": "max_draft_len=G (LLM API config class, or the YAML's speculative_config)",
        "runs_here": NOT_RUN,
        "version": "docs on the main branch (stored 2026 snapshot): the LLM API (PyTorch backend) takes a "
                   "speculative_config object, trtllm-serve the same fields in a YAML file; Medusa, ReDrafter, "
                   "EAGLE-1/2 and lookahead are documented for its TensorRT engine backend",
        "docs": {
            "speculative decoding (LLM API, PyTorch backend; trtllm-serve YAML)": TRTLLM_DOCS,
            "speculative sampling (TensorRT backend: draft-target, Medusa, ReDrafter, EAGLE, lookahead)":
                "https://nvidia.github.io/TensorRT-LLM/advanced/speculative-decoding.html",
            "trtllm-serve": "https://nvidia.github.io/TensorRT-LLM/commands/trtllm-serve/trtllm-serve.html",
        },
        "options": {
            "draft": ("DraftTargetDecodingConfig(max_draft_len=G, speculative_model=DRAFT)", "03, 05 (and 08, 09)",
                      "decoding_type: DraftTarget in the YAML; the docs: draft and target must share a tokenizer"),
            "ngram": ("NGramDecodingConfig(max_draft_len=G, max_matching_ngram_size=N)", "10",
                      "decoding_type: NGram; the docs call it an implementation of prompt lookup decoding"),
            "eagle": ("Eagle3DecodingConfig(max_draft_len=G, speculative_model=HEAD)", "not implemented (closest: 11)",
                      "decoding_type: Eagle3; the docs: the PyTorch backend supports EAGLE-3 only, not EAGLE-1/2 "
                      "heads"),
            "medusa": ("MedusaDecodingConfig", "not implemented (closest: 11)",
                       "TensorRT engine backend only (an engine built with the heads; the docs' Medusa README)"),
            "mtp": ("MTPDecodingConfig(max_draft_len=G)", "not implemented (closest: 11)",
                    "decoding_type: MTP; the docs: 'currently only supported by Deepseek'"),
            "lookahead": ("LookaheadDecodingConfig", "not implemented (closest: 10)",
                          "lookahead decoding (Jacobi n-grams), TensorRT engine backend"),
        },
        "separate_draft_model": "DraftTarget (any smaller draft LLM with the target's tokenizer); ReDrafter and "
                                "EAGLE-1/2 on the TensorRT engine backend",
        "reported": [],
        "note": "no speedup quoted here: the docs state none for a setup this file could check",
    },
    "llamacpp": {
        "name": "llama.cpp",
        "gamma": "--spec-draft-n-max G (builds before the --spec-* renaming: --draft-max G)",
        "runs_here": NOT_RUN + " (it runs on a CPU: the natural next step from these notebooks)",
        "version": "master branch docs (stored 2026 snapshot). Its recent server README renames the draft options "
                   "--spec-draft-n-max / --spec-draft-n-min and says --draft-max / --draft-min 'has been removed'; "
                   "-md and --draft-p-min stay as aliases. Older builds: -md, --draft-max, --draft-min, --draft-p-min",
        "docs": {
            "speculative decoding": LLAMACPP_DOCS,
            "llama-server options": LLAMACPP_SERVER_DOCS,
            "llama-speculative (draft model, standalone example)":
                "https://github.com/ggml-org/llama.cpp/tree/master/examples/speculative",
            "llama-lookup (prompt lookup, standalone example)":
                "https://github.com/ggml-org/llama.cpp/tree/master/examples/lookup",
            "llama-lookahead (lookahead decoding, standalone example)":
                "https://github.com/ggml-org/llama.cpp/tree/master/examples/lookahead",
            "GGUF conversion (convert_hf_to_gguf.py)":
                "https://github.com/ggml-org/llama.cpp/blob/master/convert_hf_to_gguf.py",
        },
        "options": {
            "draft": ("llama-server -m TARGET.gguf -md DRAFT.gguf --spec-type draft-simple --spec-draft-n-max G "
                      "--spec-draft-p-min P",
                      "03, 05 (and 08: P is a confidence threshold)",
                      "both models in GGUF with the same vocabulary; the draft stops early when its token's "
                      "probability is below P ('minimum speculative decoding probability (greedy)'); also the "
                      "llama-speculative example"),
            "ngram": ("llama-server -m TARGET.gguf --spec-type ngram-simple", "10",
                      "no draft model: the tokens that followed the last match of the current n-gram in the history; "
                      "also the llama-lookup example"),
            "eagle": ("llama-server --spec-type draft-eagle3", "not implemented (closest: 11)",
                      "recent builds only: a one-layer EAGLE-3 draft converted to GGUF for its target (docs)"),
            "mtp": ("llama-server --spec-type draft-mtp", "not implemented (closest: 11)",
                    "recent builds only: listed among the --spec-type values of the server README"),
            "lookahead": ("llama-lookahead", "not implemented (closest: 10)",
                          "the lookahead-decoding example (examples/lookahead), a standalone program, not a server "
                          "option"),
        },
        "separate_draft_model": "-md / --model-draft (a GGUF draft; its vocabulary must match the target's)",
        "reported": [],
        "note": "no speedup quoted here: the docs print their acceptance statistics, not a benchmark",
    },
    "tgi": {
        "name": "HF Text Generation Inference",
        "gamma": "--speculate G",
        "runs_here": NOT_RUN,
        "version": "3.3.x (main branch, Jan 2026: Cargo.toml 3.3.6-dev0; latest tag v3.3.7); the README says TGI "
                   "is in maintenance mode and recommends vLLM and SGLang",
        "docs": {"speculation": TGI_DOCS,
                 "launcher --speculate": "https://huggingface.co/docs/text-generation-inference/reference/launcher#speculate"},
        "options": {
            "ngram": ("text-generation-launcher --model-id TARGET --speculate G", "10", "no draft model"),
            "medusa": ("text-generation-launcher --model-id MEDUSA_MODEL (heads picked up automatically)",
                       "not implemented (closest: 11)", "a model repository with Medusa heads"),
        },
        "separate_draft_model": "none: the docs list Medusa and n-gram only, and the launcher has no draft-model "
                                "flag (--speculate sets the number of tokens)",
        "reported": [
            {"speedup": "'2-3x faster inference' ('much more for code'); the README: '~2x latency'",
             "setup": "a general claim, no setup given", "source": TGI_DOCS},
        ],
    },
}

# The configuration builders: which methods each engine supports.
SUPPORTED = {"vllm": ("draft", "ngram", "eagle", "eagle3", "medusa", "mtp"),
             "sglang": ("draft", "ngram", "eagle", "eagle3", "mtp"),
             "trtllm": ("draft", "ngram", "eagle3", "mtp"),
             "llamacpp": ("draft", "ngram"),
             "tgi": ("ngram", "medusa")}
# Other spellings of the engines' names that engine_config accepts.
ALIASES = {"tensorrt-llm": "trtllm", "tensorrt_llm": "trtllm", "trt-llm": "trtllm", "llama.cpp": "llamacpp",
           "llama-cpp": "llamacpp", "llama_cpp": "llamacpp", "llama-server": "llamacpp"}
NEEDS_HEAD = {"eagle", "eagle3", "medusa"}
MTP_TARGETS: frozenset[str] = frozenset()  # none of utils.models.PAIRS has MTP layers (Gemma 2, SmolLM2)
_LLAMACPP_EAGLE = ("recent llama.cpp builds list --spec-type draft-eagle3 (an EAGLE-3 draft converted to GGUF, "
                   "docs/speculative.md); this builder writes only the draft-model and n-gram commands.")
# Why a method is missing from an engine's builder, where its docs say something about it.
WHY_NOT = {
    ("tgi", "draft"): "TGI has no separate draft-model option: its docs list Medusa and n-gram speculation only.",
    ("trtllm", "eagle"): "TensorRT-LLM's docs: the PyTorch backend supports EAGLE-3 only (EAGLE-1/2 heads are for its "
                         "TensorRT engine backend); use method 'eagle3' with an EAGLE-3 head.",
    ("trtllm", "medusa"): "TensorRT-LLM serves Medusa heads on its TensorRT engine backend only (an engine built "
                          "with the heads: its docs' Medusa README); this builder writes the LLM API (PyTorch "
                          "backend) form.",
    ("llamacpp", "eagle"): _LLAMACPP_EAGLE,
    ("llamacpp", "eagle3"): _LLAMACPP_EAGLE,
    ("llamacpp", "mtp"): "recent llama.cpp builds list --spec-type draft-mtp; this builder writes only the "
                         "draft-model and n-gram commands, and no pair here has MTP layers.",
    ("llamacpp", "medusa"): "llama.cpp's docs list no Medusa option.",
}


@dataclass
class EngineConfig:
    """One engine configuration: `kwargs` for the Python entry point (None where the engine documents only a
    server command; for TensorRT-LLM, whose entry point takes a config class, the fields as its YAML spells
    them, and `python_expr` the call itself), `argv` for the server command line, `files` the files that
    command reads (name -> text,
    e.g. TensorRT-LLM's YAML), and where the option names come from. None of it is run here."""

    engine: str
    method: str
    pair: str
    target: str
    draft: str | None
    kwargs: dict | None
    argv: list[str]
    docs: str
    notes: list[str] = field(default_factory=list)
    python_import: str | None = None  # the import line the Python form needs
    python_expr: str | None = None  # the Python form where kwargs cannot spell it (a config class)
    files: dict[str, str] = field(default_factory=dict)

    @property
    def cli(self) -> str:
        return shlex.join(self.argv)

    @property
    def python(self) -> str | None:
        if self.python_expr is not None:
            return self.python_expr
        if self.kwargs is None:
            return None
        args = ", ".join(f"{k}={json.dumps(v) if isinstance(v, (dict, list)) else repr(v)}"
                         for k, v in self.kwargs.items())
        return f"LLM({args})"

    @property
    def python_code(self) -> str | None:
        """The Python form as one line with its import: 'from vllm import LLM; llm = LLM(...)'."""
        if self.python is None:
            return None
        return f"{self.python_import}; llm = {self.python}" if self.python_import else f"llm = {self.python}"


def _models(pair_name: str) -> tuple[str, str]:
    if pair_name not in PAIRS:
        raise ValueError(f"unknown pair {pair_name!r}; known pairs: {', '.join(PAIRS)}.")
    p = PAIRS[pair_name]
    path = (lambda s: str(MODELS_DIR / s.repo)) if p.local else (lambda s: s.repo)
    return path(p.target), path(p.draft)


def _check(engine: str, method: str, gamma: int, head: str | None, pair_name: str) -> tuple[str, str]:
    if engine not in SUPPORTED:
        raise ValueError(f"unknown engine {engine!r}; supported engines: {', '.join(SUPPORTED)}.")
    if method not in SUPPORTED[engine]:
        extra = f" {WHY_NOT[engine, method]}" if (engine, method) in WHY_NOT else ""
        raise ValueError(f"{engine}: unknown method {method!r}; supported methods: "
                         f"{', '.join(SUPPORTED[engine])}.{extra}")
    if not isinstance(gamma, int) or isinstance(gamma, bool) or gamma < 1:
        raise ValueError(f"gamma (tokens drafted per round) must be a positive int, got {gamma!r}.")
    target, draft = _models(pair_name)
    if method in NEEDS_HEAD and not head:
        raise ValueError(f"{engine}, method {method!r}: pass head='<Hub id or path of {method} weights trained for "
                         f"{target}>'; none ships with this collection, and a head trained for another target "
                         "will not work.")
    if method == "mtp" and target not in MTP_TARGETS:
        raise ValueError(f"{engine}, method 'mtp': {target} has no multi-token-prediction layers; MTP serves targets "
                         "trained with them (e.g. DeepSeek-V3, MiMo). Use 'draft', 'ngram' or an EAGLE head instead.")
    return target, draft


def _prompt_lookup(prompt_lookup) -> tuple[int, int]:
    lo, hi = prompt_lookup
    if not all(isinstance(n, int) and not isinstance(n, bool) for n in (lo, hi)) or not 1 <= lo <= hi:
        raise ValueError(f"prompt_lookup must be (min, max) n-gram sizes with 1 <= min <= max, got {prompt_lookup!r}.")
    return lo, hi


def vllm_config(pair_name: str, method: str = "draft", gamma: int = 4, head: str | None = None,
                prompt_lookup: tuple[int, int] = (2, 5)) -> EngineConfig:
    """vLLM: `LLM(model=target, speculative_config={...})` and `vllm serve target --speculative-config '{...}'`.
    gamma becomes num_speculative_tokens; prompt_lookup = (prompt_lookup_min, prompt_lookup_max) for 'ngram'."""
    target, draft = _check("vllm", method, gamma, head, pair_name)
    spec: dict = {"method": {"draft": "draft_model"}.get(method, method), "num_speculative_tokens": gamma}
    notes = []
    if method == "draft":
        spec["model"] = draft
        notes.append("draft and target must share a vocabulary (each pair here does: one family, one tokenizer); "
                     "for a draft with another "
                     "tokenizer, recent vLLM (SpeculativeConfig on its main branch; older releases lack it) has "
                     "\"use_heterogeneous_vocab\": true (greedy drafting only).")
    elif method == "ngram":
        spec["prompt_lookup_min"], spec["prompt_lookup_max"] = _prompt_lookup(prompt_lookup)
        notes.append("no draft model: proposals are n-grams matched in the prompt and output so far.")
    elif method in NEEDS_HEAD:
        spec["model"] = head
    kwargs = {"model": target, "speculative_config": spec}
    argv = ["vllm", "serve", target, "--speculative-config", json.dumps(spec)]
    docs = ENGINES["vllm"]["docs"]["draft model" if method == "draft" else "overview and --speculative-config schema"]
    return EngineConfig("vllm", method, pair_name, target, spec.get("model"), kwargs, argv, docs, notes,
                        python_import="from vllm import LLM")


def sglang_config(pair_name: str, method: str = "draft", gamma: int = 4, head: str | None = None) -> EngineConfig:
    """SGLang: `python3 -m sglang.launch_server --model target --speculative-algorithm ...` (its docs give the
    server command). --speculative-num-draft-tokens counts the nodes of the draft tree INCLUDING its root (the
    last verified token), so a chain of gamma drafted tokens is gamma + 1 of them: with
    --speculative-num-steps gamma and --speculative-eagle-topk 1 (STANDALONE, EAGLE, EAGLE3), or, for NGRAM,
    with its BFS breadth pinned to 1 (--speculative-ngram-min/max-bfs-breadth; the default max, 10, branches).
    Checked in SGLang's source: the n-gram cache drafts draft_token_num - 1 tokens and puts the last verified
    token first (cpp_ngram/param.h get_draft_token_num, result.cpp fillResult); server_args.py sets
    speculative_eagle_topk = speculative_ngram_max_bfs_breadth for NGRAM."""
    target, draft = _check("sglang", method, gamma, head, pair_name)
    argv = ["python3", "-m", "sglang.launch_server", "--model", target]
    chain = ["--speculative-num-steps", str(gamma), "--speculative-eagle-topk", "1",
             "--speculative-num-draft-tokens", str(gamma + 1)]
    notes = []
    if method == "draft":
        argv += ["--speculative-algorithm", "STANDALONE", "--speculative-draft-model-path", draft] + chain
        notes.append("STANDALONE is SGLang's separate-small-draft-model algorithm (no --enable-dp-attention).")
    elif method == "ngram":
        argv += ["--speculative-algorithm", "NGRAM", "--speculative-num-draft-tokens", str(gamma + 1),
                 "--speculative-ngram-min-bfs-breadth", "1", "--speculative-ngram-max-bfs-breadth", "1"]
        notes.append("NGRAM is CUDA-only and builds its n-gram cache from previous tokens. Breadth 1 makes each "
                     "match a chain of gamma tokens (plus the root); SGLang's default max breadth (10) drafts a "
                     "tree, and a shorter match can still add a branch when the longest one runs out.")
    else:  # eagle, eagle3 (mtp was refused above for every target here)
        argv += ["--speculative-algorithm", {"eagle": "EAGLE", "eagle3": "EAGLE3"}[method],
                 "--speculative-draft-model-path", head] + chain
        notes.append("topk > 1 drafts a tree (EAGLE-2's dynamic tree); topk 1 is the chain of these notebooks.")
    drafter = draft if method == "draft" else head
    return EngineConfig("sglang", method, pair_name, target, drafter, None, argv, SGLANG_DOCS, notes)


TRTLLM_CLASSES = {"draft": ("DraftTarget", "DraftTargetDecodingConfig"), "ngram": ("NGram", "NGramDecodingConfig"),
                  "eagle3": ("Eagle3", "Eagle3DecodingConfig"), "mtp": ("MTP", "MTPDecodingConfig")}


def _yaml(d: dict, indent: str = "") -> str:
    """The few YAML lines TensorRT-LLM's option file needs (nested dicts of str / int / bool scalars)."""
    out = []
    for k, v in d.items():
        if isinstance(v, dict):
            out.append(f"{indent}{k}:\n{_yaml(v, indent + '  ')}")
        else:
            out.append(f"{indent}{k}: {str(v).lower() if isinstance(v, bool) else v}")
    return "\n".join(out)


def trtllm_config(pair_name: str, method: str = "draft", gamma: int = 4, head: str | None = None,
                  prompt_lookup: tuple[int, int] = (2, 5), options_file: str = "spec.yaml") -> EngineConfig:
    """TensorRT-LLM (LLM API, PyTorch backend): `LLM(target, speculative_config=<Method>DecodingConfig(...))`, and
    `trtllm-serve target --extra_llm_api_options spec.yaml` with the same fields under `speculative_config:` plus
    `decoding_type` (its docs). gamma becomes max_draft_len; for 'ngram', max_matching_ngram_size is
    prompt_lookup's max (TensorRT-LLM has no minimum). Written, never run here."""
    target, draft = _check("trtllm", method, gamma, head, pair_name)
    decoding_type, cls = TRTLLM_CLASSES[method]
    fields: dict = {"max_draft_len": gamma}
    notes = []
    if method == "draft":
        fields["speculative_model"] = draft
        notes.append("the docs: draft and target must be trained with the same tokenizer (each pair here is: "
                     "one family).")
    elif method == "ngram":
        fields["max_matching_ngram_size"] = _prompt_lookup(prompt_lookup)[1]
        fields["is_public_pool"] = False
        notes.append("is_public_pool false: each request keeps its own n-gram pool (the docs), as notebook 10's lookup "
                     "searches only its own prompt and output; max_matching_ngram_size is the longest n-gram matched.")
    elif method == "eagle3":
        fields["speculative_model"] = head
    extra = {"disable_overlap_scheduler": True} if method in ("draft", "ngram") else {}
    if extra:
        notes.append("the docs' examples pass disable_overlap_scheduler=True with DraftTarget and NGram.")
    notes.append("--config is the newer name of --extra_llm_api_options (the docs: an equivalent alias); "
                 "speculative_model_dir is accepted for speculative_model. Check that your release supports the "
                 "target's architecture.")
    args = ", ".join(f"{k}={v!r}" for k, v in fields.items())
    python_expr = (f"LLM({target!r}, speculative_config={cls}({args})"
                   + "".join(f", {k}={v!r}" for k, v in extra.items()) + ")")
    yaml = _yaml({"speculative_config": {"decoding_type": decoding_type, **fields}, **extra}) + "\n"
    argv = ["trtllm-serve", target, "--extra_llm_api_options", options_file]
    kwargs = {"model": target, "speculative_config": {"decoding_type": decoding_type, **fields}, **extra}
    drafter = fields.get("speculative_model")
    return EngineConfig("trtllm", method, pair_name, target, drafter, kwargs, argv, TRTLLM_DOCS, notes,
                        python_import=f"from tensorrt_llm import LLM; from tensorrt_llm.llmapi import {cls}",
                        python_expr=python_expr, files={options_file: yaml})


def _gguf(path: str) -> str:
    """The GGUF file name these commands assume for a model (its Hub name or folder name + '.gguf')."""
    return Path(path).name + ".gguf"


def llamacpp_config(pair_name: str, method: str = "draft", gamma: int = 4, head: str | None = None,
                    prompt_lookup: tuple[int, int] = (2, 5), legacy_flags: bool = False) -> EngineConfig:
    """llama.cpp's server: `llama-server -m TARGET.gguf -md DRAFT.gguf ...` (draft model) or `--spec-type
    ngram-simple` (n-gram lookup, no draft model). gamma becomes --spec-draft-n-max (draft) or
    --spec-ngram-simple-size-m (n-gram); --spec-draft-p-min 0 keeps the draft from stopping early, so each round
    drafts a chain of gamma tokens as these notebooks do (a P > 0 is notebook 08's confidence threshold).
    legacy_flags=True writes the names of builds before the --spec-* renaming (--draft-max, --spec-ngram-size-n/m),
    which the current server README says have been removed. The models must first be converted to GGUF.
    Written, never run here."""
    target, draft = _check("llamacpp", method, gamma, head, pair_name)
    n = _prompt_lookup(prompt_lookup)[1]
    argv = ["llama-server", "-m", _gguf(target)]
    if method == "draft":
        argv += (["-md", _gguf(draft), "--draft-max", str(gamma), "--draft-p-min", "0"] if legacy_flags else
                 ["-md", _gguf(draft), "--spec-type", "draft-simple", "--spec-draft-n-max", str(gamma),
                  "--spec-draft-p-min", "0"])
    else:  # ngram
        argv += (["--spec-type", "ngram-simple", "--spec-ngram-size-n", str(n), "--spec-ngram-size-m", str(gamma),
                  "--draft-max", str(gamma)] if legacy_flags else
                 ["--spec-type", "ngram-simple", "--spec-ngram-simple-size-n", str(n),
                  "--spec-ngram-simple-size-m", str(gamma), "--spec-draft-n-max", str(gamma)])
    files = ", ".join(dict.fromkeys(a for a in argv if a.endswith(".gguf")))
    notes = [f"GGUF files, not Hub repositories: convert each model with llama.cpp's convert_hf_to_gguf.py (or "
             f"download a GGUF build of it) and name it as above ({files})."]
    if method == "draft":
        notes.append("the draft proposes its most likely token by default (the server README's --spec-draft-sampling: "
                     "greedy, or probabilistic with rejection sampling, in recent builds); draft and target must share "
                     "a vocabulary. The same pair runs offline in the llama-speculative example.")
    else:
        notes.append(f"ngram-simple matches the last {n} tokens (--spec-ngram-simple-size-n, default 12) and drafts "
                     f"the {gamma} that followed; notebook 10's lookup also falls back to shorter n-grams. The "
                     "llama-lookup example does prompt lookup offline.")
    if not legacy_flags:
        old = llamacpp_config(pair_name, method, gamma, head, prompt_lookup, legacy_flags=True)
        notes.append(f"builds before the --spec-* renaming: {old.cli}")
    drafter = _gguf(draft) if method == "draft" else None
    return EngineConfig("llamacpp", method, pair_name, target, drafter, None, argv,
                        LLAMACPP_DOCS if method == "ngram" else LLAMACPP_SERVER_DOCS, notes)


def tgi_config(pair_name: str, method: str = "ngram", gamma: int = 4, head: str | None = None) -> EngineConfig:
    """HF TGI: `text-generation-launcher --model-id target --speculate gamma` (n-gram), or a Medusa model.
    There is no separate draft-model option: method='draft' raises ValueError."""
    target, _ = _check("tgi", method, gamma, head, pair_name)
    if method == "ngram":
        argv = ["text-generation-launcher", "--model-id", target, "--speculate", str(gamma)]
        notes = ["without Medusa heads, --speculate uses n-gram speculation (TGI docs)."]
        drafter = None
    else:  # medusa: point --model-id at a model with Medusa heads; they are picked up automatically
        argv = ["text-generation-launcher", "--model-id", head, "--speculate", str(gamma)]
        notes = ["the Medusa heads are loaded from the model repository given as --model-id."]
        drafter = head
    return EngineConfig("tgi", method, pair_name, target, drafter, None, argv, TGI_DOCS, notes)


BUILDERS = {"vllm": vllm_config, "sglang": sglang_config, "trtllm": trtllm_config, "llamacpp": llamacpp_config,
            "tgi": tgi_config}


def engine_config(engine: str, pair_name: str, method: str = "draft", gamma: int = 4, **kw) -> EngineConfig:
    """The configuration of `engine` (a key of BUILDERS, or a spelling in ALIASES) for a pair of PAIRS."""
    engine = ALIASES.get(str(engine).lower(), str(engine).lower())
    if engine not in BUILDERS:
        raise ValueError(f"unknown engine {engine!r}; supported engines: {', '.join(BUILDERS)} "
                         f"(also spelt {', '.join(ALIASES)}).")
    return BUILDERS[engine](pair_name, method, gamma, **kw)


IDEAS = [("draft", "a separate small draft model"), ("ngram", "n-gram / prompt lookup (no draft model)"),
         ("eagle", "EAGLE heads (trained on the target's features)"), ("medusa", "Medusa heads"),
         ("mtp", "multi-token prediction (native MTP layers)"), ("lookahead", "lookahead decoding (Jacobi n-grams)")]


def mapping_rows() -> list[tuple[str, ...]]:
    """(idea, notebooks here, then one option per engine of ENGINES, in its order) for the mapping table;
    'not supported' where the engine's docs list no such option."""
    out = []
    for key, idea in IDEAS:
        opts = {e: ENGINES[e]["options"].get(key) for e in ENGINES}
        here = next(o[1] for o in opts.values() if o)
        out.append((idea, here, *[(o[0] if o else "not supported") for o in opts.values()]))
    return out


def mapping_table() -> str:
    """The markdown table of mapping_rows: options as code, and a first row saying how each engine spells gamma."""
    names = [e["name"].replace("HF Text Generation Inference", "TGI") for e in ENGINES.values()]
    code = lambda c: c if c == "not supported" else f"`{c}`"  # noqa: E731
    rows = ["| idea | here | " + " | ".join(names) + " |", "|" + "---|" * (len(names) + 2),
            "| $\\gamma$, tokens drafted per round | 03-11 | "
            + " | ".join(e["gamma"] for e in ENGINES.values()) + " |"]
    rows += ["| " + " | ".join([r[0], r[1], *map(code, r[2:])]) + " |" for r in mapping_rows()]
    return "\n".join(rows)


# ---------------------------------------------------------------------------------------------------
# What is present here, and a tiny vLLM benchmark
# ---------------------------------------------------------------------------------------------------


class EngineUnavailable(RuntimeError):
    """An engine run was asked for where it cannot run; the message says why."""


@dataclass
class EngineStatus:
    cuda: bool
    cuda_detail: str
    packages: dict[str, str | None]  # name -> version, or None when absent
    tgi_launcher: str | None  # path of text-generation-launcher, or None

    def reason(self, engine: str) -> str | None:
        """Why `engine` cannot run here (None: it can)."""
        if engine not in ("vllm", "sglang", "tgi"):
            raise ValueError(f"unknown engine {engine!r}; supported engines: vllm, sglang, tgi.")
        missing = []
        if not self.cuda:
            missing.append(f"no CUDA GPU ({self.cuda_detail})")
        if engine in ("vllm", "sglang") and self.packages.get(engine) is None:
            missing.append(f"{engine} is not installed (pip install {engine}, on a machine with a CUDA GPU)")
        if engine == "tgi" and self.tgi_launcher is None:
            missing.append("text-generation-launcher is not on PATH (TGI runs from its Docker image)")
        return "; ".join(missing) or None

    def summary(self) -> str:
        lines = [f"CUDA GPU: {'yes, ' + self.cuda_detail if self.cuda else 'no (' + self.cuda_detail + ')'}"]
        for name, ver in self.packages.items():
            lines.append(f"{name}: {ver if ver else 'not installed'}")
        lines.append(f"text-generation-launcher: {self.tgi_launcher or 'not on PATH'}")
        return "\n".join(lines)


def engine_status() -> EngineStatus:
    """Which of {CUDA GPU, vllm, sglang, text-generation-launcher} are present, without importing the engines."""
    import importlib.util
    import shutil
    from importlib.metadata import PackageNotFoundError, version

    import torch

    if torch.cuda.is_available():
        cuda, detail = True, torch.cuda.get_device_name(0)
    else:
        cuda, detail = False, f"torch {torch.__version__} sees none" + ("" if torch.version.cuda else ", CPU build")
    packages = {}
    for name in ("vllm", "sglang"):
        try:
            found = importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):
            found = False
        try:
            packages[name] = version(name) if found else None
        except PackageNotFoundError:
            packages[name] = "present (version unknown)"
    return EngineStatus(cuda, detail, packages, shutil.which("text-generation-launcher"))


SPEC_COUNTERS = {"vllm:spec_decode_num_drafts": "rounds", "vllm:spec_decode_num_draft_tokens": "drafted",
                 "vllm:spec_decode_num_accepted_tokens": "accepted"}


def _spec_counters(llm) -> dict:
    """vLLM's speculative-decoding counters so far (rounds, drafted and accepted tokens), from
    `LLM.get_metrics()` (the engine must be built with disable_log_stats=False); {} where this vLLM
    does not report them."""
    try:
        metrics = llm.get_metrics()
    except Exception:  # noqa: BLE001 - an older vLLM without get_metrics, or stats off
        return {}
    return {SPEC_COUNTERS[m.name]: float(m.value) for m in metrics if m.name in SPEC_COUNTERS and hasattr(m, "value")}


def run_vllm(pair_name: str = "gemma2-2b-27b", method: str = "draft", gamma: int = 4, prompts: list[str] | None = None,
             max_tokens: int = 128, temperature: float = 0.0, batch_size: int = 1, status: EngineStatus | None = None,
             gpu_memory_utilization: float | None = None, measure_c: bool = True, **config) -> dict:
    """A tiny vLLM benchmark: the same prompts without and with speculative decoding, tokens/s of each.

    batch_size prompts go to `generate` at a time (default 1, the setting of notebooks 01-08: vLLM
    batches whatever it is given, and speculative decoding gains less in a batch, notebook 09). The
    speculative run also records what vLLM counted: rounds, drafted and accepted tokens, hence alpha
    per drafted token and tokens per round tau.

    measure_c (method 'draft' only): a third engine runs the draft model alone, plainly, on the same prompts
    and batches, and c = (draft's seconds per token) / (target's seconds per token) = plain target tokens/s /
    draft tokens/s, both as vLLM runs them; result["cost_model"] then holds c, tau and the cost model's
    prediction tau / (gamma c + v) with v = 1 (Leviathan et al.'s Thm 3.8; the verify pass over gamma + 1
    tokens costs at least one target step, so with v = 1 the prediction errs high). If that third engine
    cannot start (for instance the GPU memory of the first two was not freed), result["cost_model"] says why
    and the two main measurements stand.

    Raises EngineUnavailable (with the reason) unless a CUDA GPU and vLLM are present. Each configuration gets
    its own engine, released before the next starts; if GPU memory is not freed in one process, run them in
    separate processes, or pass gpu_memory_utilization (the share of the GPU each engine may take, in (0, 1])
    small enough for them to fit at once. None: vLLM's default, for every engine."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1 (got {batch_size!r}): how many prompts go to vLLM at once.")
    if gpu_memory_utilization is not None and (isinstance(gpu_memory_utilization, bool)
                                               or not isinstance(gpu_memory_utilization, (int, float))
                                               or not 0 < gpu_memory_utilization <= 1):
        raise ValueError(f"gpu_memory_utilization must be None (vLLM's default) or a share of the GPU in (0, 1] "
                         f"(got {gpu_memory_utilization!r}).")
    status = status or engine_status()
    why = status.reason("vllm")
    if why:
        raise EngineUnavailable(f"vLLM benchmark skipped: {why}.")
    cfg = vllm_config(pair_name, method, gamma, **config)
    import gc

    import torch
    from vllm import LLM, SamplingParams

    from utils.models import load_prompts

    prompts = prompts or load_prompts("datacamp")
    params = SamplingParams(temperature=temperature, max_tokens=max_tokens)
    result = {"pair": pair_name, "method": method, "gamma": gamma, "config": cfg.kwargs, "cli": cfg.cli,
              "vllm": status.packages["vllm"], "gpu": status.cuda_detail, "n_prompts": len(prompts),
              "max_tokens": max_tokens, "temperature": temperature, "batch_size": batch_size,
              "gpu_memory_utilization": gpu_memory_utilization}
    memory = {} if gpu_memory_utilization is None else {"gpu_memory_utilization": gpu_memory_utilization}

    def timed(label: str, kwargs: dict) -> None:
        llm = LLM(**kwargs, **memory, disable_log_stats=False)
        try:
            llm.generate(prompts[:1], params, use_tqdm=False)  # warm-up
            before = _spec_counters(llm)
            t0 = time.perf_counter()
            outs = [o for i in range(0, len(prompts), batch_size)
                    for o in llm.generate(prompts[i:i + batch_size], params, use_tqdm=False)]
            dt = time.perf_counter() - t0
            n = sum(len(o.outputs[0].token_ids) for o in outs)
            result[label] = {"tokens": n, "seconds": dt, "tokens_per_s": n / dt}
            if label == "speculative":
                after = _spec_counters(llm)
                counts = {k: after[k] - before.get(k, 0.0) for k in after}
                ok = counts.get("rounds", 0) > 0 and counts.get("drafted", 0) > 0
                result[label].update(counts, alpha_drafted=counts["accepted"] / counts["drafted"] if ok else None,
                                     tokens_per_round=1 + counts["accepted"] / counts["rounds"] if ok else None)
        finally:
            del llm
            gc.collect()
            torch.cuda.empty_cache()

    timed("plain", {"model": cfg.target})
    timed("speculative", cfg.kwargs)
    result["speedup"] = result["speculative"]["tokens_per_s"] / result["plain"]["tokens_per_s"]
    if method == "draft" and measure_c:
        try:
            timed("draft_alone", {"model": cfg.draft})
        except Exception as e:  # noqa: BLE001 - the third engine is optional; say why it did not run
            result["cost_model"] = {"c": None, "why": f"the draft-alone engine did not run: {type(e).__name__}: {e}"}
        else:
            c = result["plain"]["tokens_per_s"] / result["draft_alone"]["tokens_per_s"]
            tau = result["speculative"].get("tokens_per_round")
            result["cost_model"] = {"c": c, "v": 1.0, "tau": tau,
                                    "predicted_speedup": tau / (gamma * c + 1.0) if tau is not None else None,
                                    "how": "c = plain target tokens/s / plain draft tokens/s, same prompts and batches"}
    else:
        result["cost_model"] = {"c": None, "why": "c is measured for method 'draft' with measure_c=True"}
    return result


def config_text(cfg: EngineConfig) -> str:
    """Notebook 12's printout of one configuration: its docs, the Python form, the server command, the
    files that command reads and the notes."""
    lines = [f"[{cfg.engine}, {cfg.method}]  docs: {cfg.docs}"]
    if cfg.python_code:
        lines.append(f"  python: {cfg.python_code}")
    lines.append(f"  server: {cfg.cli}")
    for name, text in cfg.files.items():
        lines.append(f"  {name}:\n{textwrap.indent(text.rstrip(), '    ')}")
    lines += [f"  note:   {note}" for note in cfg.notes]
    return "\n".join(lines)


def vllm_report(res: dict) -> str:
    """Notebook 12's reading of a run_vllm result: the setting and both speeds, acceptance where vLLM
    reported it, and c with the cost model's prediction (v = 1) where c was measured."""
    sp, cm = res["speculative"], res["cost_model"]
    acc = (f"alpha per drafted token {sp['alpha_drafted']:.2f}, {sp['tokens_per_round']:.2f} tokens per round"
           if sp.get("alpha_drafted") is not None else "acceptance not reported by this vLLM")
    lines = [f"{res['pair']} on {res['gpu']}, vLLM {res['vllm']}, {res['n_prompts']} prompts, batch size "
             f"{res['batch_size']}, T = {res['temperature']:g}: plain {res['plain']['tokens_per_s']:.1f} tok/s, "
             f"speculative (gamma {res['gamma']}) {sp['tokens_per_s']:.1f} tok/s, speedup {res['speedup']:.2f}x; {acc}"]
    if cm["c"] is None:
        lines.append(f"c not measured: {cm['why']}")
    else:
        pred = (f"{cm['predicted_speedup']:.2f}x" if cm["predicted_speedup"] is not None
                else "no prediction (this vLLM reports no tokens per round)")
        lines.append(f"draft alone {res['draft_alone']['tokens_per_s']:.1f} tok/s, so c = {cm['c']:.3f} ({cm['how']}); "
                     f"cost model tau / (gamma c + v) with v = 1: {pred}, measured {res['speedup']:.2f}x")
    return "\n".join(lines)
