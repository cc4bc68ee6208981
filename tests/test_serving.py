"""Notebook 12's data and code: data/field.json is complete and well-formed, the engine configurations carry
the documented keys and flags (valid JSON where the CLI takes JSON), bad input raises ValueError naming what
is supported, and the notebook's engine cell skips cleanly where there is no GPU and no engine."""

import contextlib
import io
import json
import re
import shlex
import shutil
import sys

import pytest
import torch

from utils.models import PAIRS, ROOT
from utils.serving import (
    ENGINES,
    SUPPORTED,
    EngineStatus,
    EngineUnavailable,
    config_text,
    engine_config,
    engine_status,
    field_table,
    llamacpp_config,
    load_field,
    mapping_rows,
    mapping_table,
    method_paragraph,
    plot_label,
    plot_reported,
    run_vllm,
    sglang_config,
    tgi_config,
    trtllm_config,
    vllm_config,
    vllm_report,
)

PLANNED = {"09", "10", "11"}  # batched, prompt lookup, self-speculation: written alongside notebook 12
REQUIRED = {"key", "name", "authors", "arxiv", "url", "year", "family", "draft", "verification", "needs_training",
            "training_note", "exact", "exact_note", "reported", "implemented_in", "implemented_note"}
SETUP = {"low", "high", "what", "metric", "models", "hardware", "batch_size", "temperature", "dataset", "setup",
         "source"}
FAMILIES = {"separate draft model", "heads on the target", "the target's own layers", "no draft model"}
# The methods issue #15 asks the map to cover (pieces 5 and 6), by arXiv id.
EXPECTED = {"2211.17192": "Leviathan", "2302.01318": "Chen", "2401.10774": "Medusa", "2401.15077": "EAGLE",
            "2406.16858": "EAGLE-2", "2503.01840": "EAGLE-3", "2404.19737": "multi-token prediction",
            "2412.19437": "DeepSeek-V3 MTP", "2402.02057": "lookahead", "2305.09781": "SpecInfer",
            "2308.04623": "staged", "2502.05202": "heterogeneous vocabularies", "2404.15778": "BASS",
            # what notebooks 10 and 11 implement or discuss (the review of notebook 12)
            "2404.16710": "LayerSkip", "2309.08168": "Draft & Verify", "2404.18911": "Kangaroo",
            # retrieval drafting and draft alignment (the second review of notebook 12)
            "2311.08252": "REST", "2310.08461": "DistillSpec", "2310.07177": "online speculative decoding"}


def _notebooks() -> set[str]:
    return {p.name[:2] for p in (ROOT / "notebooks" / "src").glob("[0-9][0-9]_*.py")}


# --- data/field.json ---------------------------------------------------------------------------------


def test_field_json_is_strict_json_with_every_required_method():
    raw = (ROOT / "data" / "field.json").read_text(encoding="utf-8")
    data = json.loads(raw, parse_constant=lambda c: pytest.fail(f"non-standard JSON constant {c}"))
    methods = data["methods"]
    assert set(EXPECTED) <= {m["arxiv"] for m in methods}, "a method the issue asks for is missing"
    pld = [m for m in methods if m["key"] == "prompt_lookup"]  # Saxena 2023: a repository, no paper
    assert len(pld) == 1 and pld[0]["arxiv"] is None and pld[0]["implemented_in"] == ["10"]
    assert len({m["key"] for m in methods}) == len(methods), "duplicate keys"
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", data["_checked"])


def test_retrieval_and_draft_alignment_sit_in_their_families():
    """REST drafts from a datastore (no draft model, no training); DistillSpec and online speculative decoding
    train a separate draft against its target and stay exact; DistillSpec's figure is over standard SD."""
    by = {m["key"]: m for m in load_field()}
    assert by["rest"]["family"] == "no draft model" and by["rest"]["needs_training"] is False
    assert "datastore" in by["rest"]["draft"]
    for key in ("distillspec", "osd"):
        assert by[key]["family"] == "separate draft model" and by[key]["needs_training"] is True
        assert by[key]["exact"] is True and "distil" in by[key]["draft"] + by[key]["training_note"]
    assert "over standard SD" in by["distillspec"]["reported"][0]["metric"]
    assert (by["rest"]["reported"][0]["low"], by["rest"]["reported"][0]["high"]) == (1.62, 2.36)
    assert (by["osd"]["reported"][0]["low"], by["osd"]["reported"][0]["high"]) == (1.42, 2.17)
    assert "train_tiny_pair.py" in by["distillspec"]["implemented_note"]


@pytest.mark.parametrize("m", load_field(), ids=lambda m: m["key"])
def test_field_entry_is_complete(m):
    assert REQUIRED <= set(m), f"missing fields: {REQUIRED - set(m)}"
    if m["arxiv"] is None:  # published without a paper: the url is its repository
        assert m["url"].startswith("https://github.com/") and 2022 <= m["year"] <= 2026
    else:
        assert re.fullmatch(r"\d{4}\.\d{4,5}", m["arxiv"]), m["arxiv"]
        assert m["url"].startswith("https://") and m["arxiv"] in m["url"]
        assert 2022 <= m["year"] <= 2026 and int(m["arxiv"][:2]) + 2000 == m["year"], "year and arXiv id disagree"
    assert m["family"] in FAMILIES, m["family"]
    assert isinstance(m["needs_training"], bool)
    assert m["exact"] in (True, False, "depends")
    for key in ("name", "authors", "draft", "verification", "training_note", "exact_note", "implemented_note"):
        assert isinstance(m[key], str) and len(m[key].strip()) > 3, key
    assert m["reported"], "no reported speedup"
    for r in m["reported"]:
        assert SETUP <= set(r), f"missing setup fields: {SETUP - set(r)}"
        assert isinstance(r["low"], (int, float)) and isinstance(r["high"], (int, float))
        assert 1 < r["low"] <= r["high"] < 20, (r["low"], r["high"])
        for key in SETUP - {"low", "high", "source"}:
            assert isinstance(r[key], str) and r[key].strip(), key
        assert len(r["setup"]) > 10
        assert r["source"]["url"].startswith("https://") and r["source"]["where"].strip()
    where = m["implemented_in"]
    if isinstance(where, str):
        assert where == "not implemented"
    else:
        assert where and all(re.fullmatch(r"\d{2}", n) for n in where)
        missing = set(where) - _notebooks() - PLANNED
        assert not missing, f"implemented_in names notebooks that do not exist: {missing}"


def test_field_renders_every_number_it_holds():
    methods = load_field()
    table = field_table(methods)
    assert table.count("\n") == len(methods) + 1
    for m in methods:
        text = method_paragraph(m)
        assert (m["arxiv"] or "no paper") in text and m["url"] in text
        for r in m["reported"]:
            assert f"{r['low']:g}x" in text and f"{r['high']:g}x" in text and r["source"]["url"] in text


def test_plot_labels_name_the_source_kind_and_the_metric():
    """Each bar says where its figure comes from and what it measures: a blog's or a README's figure is not
    labelled as the paper's, and a throughput at batch 64 is not read as a latency speedup."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = load_field()
    labels = {(m["key"], r["low"], r["high"]): plot_label(m, r) for m in methods for r in m["reported"]}
    assert labels[("uad", 1.9, 1.9)] == ("Universal assisted decoding (2502.05202; HF blog, latency speedup of "
                                         "HF's implementation)")
    assert labels[("medusa", 2.2, 3.6)].startswith("Medusa (2401.10774; README, Medusa-1 and Medusa-2")
    assert "not exact" in labels[("medusa", 2.2, 3.6)]
    # the paper's abstract gives Medusa-2 alone (not exact); the README's range mixes both
    assert labels[("medusa", 2.3, 3.6)] == "Medusa (2401.10774; paper, Medusa-2 speedup; Medusa-2 is not exact)"
    assert labels[("eagle3", 1.38, 1.38)] == "EAGLE-3 (2503.01840; paper, throughput at batch size 64, in SGLang)"
    assert labels[("prompt_lookup", 2.4, 2.4)].startswith("Prompt lookup decoding (no paper; README, ")
    ax = plot_reported(methods)
    assert [t.get_text() for t in ax.get_yticklabels()] == list(labels.values())
    assert ax.get_xlim()[1] == max(r["high"] for m in methods for r in m["reported"]) + 1
    plt.close(ax.figure)


def test_the_notebook_types_no_speedup_by_hand():
    """Numbers in the notebook's prose come from the JSON (printed by code), not typed twice (titles of the
    references are quoted as they are)."""
    import jupytext

    nb = jupytext.read(ROOT / "notebooks" / "src" / "12_map_of_the_field.py", fmt="py:percent")
    prose = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown").split("## References")[0]
    assert not re.search(r"\d+(\.\d+)?\s*(x|×)\b", prose), re.findall(r".{30}\d+(?:\.\d+)?\s*(?:x|×)\b.{10}", prose)


# --- configurations ----------------------------------------------------------------------------------------


def test_vllm_draft_config_is_the_documented_form():
    cfg = vllm_config("gemma2-2b-27b", "draft", gamma=4)
    assert cfg.kwargs == {"model": "google/gemma-2-27b-it",
                          "speculative_config": {"method": "draft_model", "model": "google/gemma-2-2b-it",
                                                 "num_speculative_tokens": 4}}
    argv = shlex.split(cfg.cli)
    assert argv[:3] == ["vllm", "serve", "google/gemma-2-27b-it"] and argv[3] == "--speculative-config"
    assert json.loads(argv[4]) == cfg.kwargs["speculative_config"]
    assert cfg.python.startswith("LLM(model='google/gemma-2-27b-it', speculative_config={")


def test_vllm_ngram_and_head_configs():
    spec = vllm_config("gemma2-2b-27b", "ngram", gamma=6, prompt_lookup=(1, 3)).kwargs["speculative_config"]
    assert spec == {"method": "ngram", "num_speculative_tokens": 6, "prompt_lookup_min": 1, "prompt_lookup_max": 3}
    for method in ("eagle", "eagle3", "medusa"):
        cfg = vllm_config("gemma2-2b-27b", method, gamma=3, head="someone/heads")
        spec = json.loads(shlex.split(cfg.cli)[4])
        assert spec == {"method": method, "num_speculative_tokens": 3, "model": "someone/heads"}


def test_sglang_configs_use_the_documented_flags():
    argv = shlex.split(sglang_config("gemma2-2b-27b", "draft", gamma=4).cli)
    assert argv[:3] == ["python3", "-m", "sglang.launch_server"]
    flags = dict(zip(argv[3::2], argv[4::2]))
    assert flags == {"--model": "google/gemma-2-27b-it", "--speculative-algorithm": "STANDALONE",
                     "--speculative-draft-model-path": "google/gemma-2-2b-it", "--speculative-num-steps": "4",
                     "--speculative-eagle-topk": "1", "--speculative-num-draft-tokens": "5"}
    # NGRAM: the draft-token count includes the tree's root (the last verified token), and the n-gram tree
    # branches unless its BFS breadth is pinned to 1 (SGLang's default max breadth is 10).
    flags = dict(zip(*[iter(shlex.split(sglang_config("gemma2-2b-27b", "ngram", gamma=8).cli)[3:])] * 2))
    assert flags == {"--model": "google/gemma-2-27b-it", "--speculative-algorithm": "NGRAM",
                     "--speculative-num-draft-tokens": "9", "--speculative-ngram-min-bfs-breadth": "1",
                     "--speculative-ngram-max-bfs-breadth": "1"}
    flags = dict(zip(*[iter(shlex.split(sglang_config("gemma2-2b-27b", "eagle3", head="h/e3").cli)[3:])] * 2))
    assert flags["--speculative-algorithm"] == "EAGLE3" and flags["--speculative-draft-model-path"] == "h/e3"
    assert sglang_config("gemma2-2b-27b").kwargs is None  # SGLang's docs give a server command


def test_tgi_configs_and_no_draft_model():
    assert shlex.split(tgi_config("gemma2-2b-27b", "ngram", gamma=3).cli) == [
        "text-generation-launcher", "--model-id", "google/gemma-2-27b-it", "--speculate", "3"]
    argv = shlex.split(tgi_config("gemma2-2b-27b", "medusa", head="x/medusa-model").cli)
    assert argv[argv.index("--model-id") + 1] == "x/medusa-model"
    with pytest.raises(ValueError, match="no separate draft-model option.*ngram, medusa|ngram, medusa.*no separate"):
        tgi_config("gemma2-2b-27b", "draft")


def test_trtllm_configs_are_the_documented_llm_api_and_yaml():
    """TensorRT-LLM: gamma is max_draft_len; the Python form uses the documented config class, and trtllm-serve
    reads the same fields from a YAML file under speculative_config with decoding_type."""
    cfg = trtllm_config("gemma2-2b-27b", "draft", gamma=4)
    assert cfg.python_code.startswith("from tensorrt_llm import LLM; from tensorrt_llm.llmapi import "
                                      "DraftTargetDecodingConfig; llm = LLM('google/gemma-2-27b-it', ")
    assert "DraftTargetDecodingConfig(max_draft_len=4, speculative_model='google/gemma-2-2b-it')" in cfg.python
    argv = shlex.split(cfg.cli)
    assert argv[:2] == ["trtllm-serve", "google/gemma-2-27b-it"] and argv[2] == "--extra_llm_api_options"
    yaml_text = cfg.files[argv[3]]
    assert yaml_text.splitlines()[:4] == ["speculative_config:", "  decoding_type: DraftTarget", "  max_draft_len: 4",
                                          "  speculative_model: google/gemma-2-2b-it"]
    assert cfg.kwargs["speculative_config"] == {"decoding_type": "DraftTarget", "max_draft_len": 4,
                                                "speculative_model": "google/gemma-2-2b-it"}
    ng = trtllm_config("gemma2-2b-27b", "ngram", gamma=6, prompt_lookup=(1, 3))
    assert ng.kwargs["speculative_config"] == {"decoding_type": "NGram", "max_draft_len": 6,
                                               "max_matching_ngram_size": 3, "is_public_pool": False}
    assert "  is_public_pool: false" in ng.files["spec.yaml"].splitlines()
    e3 = trtllm_config("gemma2-2b-27b", "eagle3", gamma=3, head="h/e3")
    assert e3.kwargs["speculative_config"] == {"decoding_type": "Eagle3", "max_draft_len": 3,
                                               "speculative_model": "h/e3"}
    with pytest.raises(ValueError, match="EAGLE-3 only"):
        trtllm_config("gemma2-2b-27b", "eagle", head="h/e")
    with pytest.raises(ValueError, match="TensorRT engine backend"):
        trtllm_config("gemma2-2b-27b", "medusa", head="h/m")


def test_llamacpp_commands_use_the_server_flags_current_and_legacy():
    """llama.cpp: GGUF files, -md for the draft, gamma as the draft's maximum length, p-min 0 for a fixed chain;
    the current names (--spec-draft-*) by default and the older ones (--draft-max) on request, both in the notes."""
    cfg = llamacpp_config("gemma2-2b-27b", "draft", gamma=4)
    assert shlex.split(cfg.cli) == ["llama-server", "-m", "gemma-2-27b-it.gguf", "-md", "gemma-2-2b-it.gguf",
                                    "--spec-type", "draft-simple", "--spec-draft-n-max", "4", "--spec-draft-p-min", "0"]
    old = llamacpp_config("gemma2-2b-27b", "draft", gamma=4, legacy_flags=True)
    assert shlex.split(old.cli) == ["llama-server", "-m", "gemma-2-27b-it.gguf", "-md", "gemma-2-2b-it.gguf",
                                    "--draft-max", "4", "--draft-p-min", "0"]
    assert any(old.cli in n for n in cfg.notes) and cfg.python is None and cfg.kwargs is None
    ng = llamacpp_config("gemma2-2b-27b", "ngram", gamma=6, prompt_lookup=(1, 3))
    assert shlex.split(ng.cli)[3:] == ["--spec-type", "ngram-simple", "--spec-ngram-simple-size-n", "3",
                                       "--spec-ngram-simple-size-m", "6", "--spec-draft-n-max", "6"]
    ng_old = llamacpp_config("gemma2-2b-27b", "ngram", gamma=6, prompt_lookup=(1, 3), legacy_flags=True)
    assert shlex.split(ng_old.cli)[3:] == ["--spec-type", "ngram-simple", "--spec-ngram-size-n", "3",
                                           "--spec-ngram-size-m", "6", "--draft-max", "6"]
    assert "-md" not in ng.argv and ng.draft is None
    for alias in ("llama.cpp", "LLaMA.cpp", "llama-server", "llama_cpp"):  # the engine's other spellings, any case
        assert engine_config(alias, "gemma2-2b-27b", "draft", 4).cli == cfg.cli
    for method in ("eagle", "eagle3"):
        with pytest.raises(ValueError, match="draft-eagle3"):
            llamacpp_config("gemma2-2b-27b", method, head="h/e3")
    with pytest.raises(ValueError, match="draft-mtp"):
        llamacpp_config("gemma2-2b-27b", "mtp")
    with pytest.raises(ValueError, match="no Medusa"):
        llamacpp_config("gemma2-2b-27b", "medusa", head="h/m")


def test_config_text_prints_every_part_of_a_configuration():
    trt = engine_config("trtllm", "gemma2-2b-27b", "draft", 4)
    text = config_text(trt)
    assert text.startswith(f"[trtllm, draft]  docs: {trt.docs}") and f"  server: {trt.cli}" in text
    assert f"  python: {trt.python_code}" in text and all(f"  note:   {n}" in text for n in trt.notes)
    for name, body in trt.files.items():  # the YAML, indented under its file name
        assert f"  {name}:\n" in text and all(f"    {line}" in text for line in body.splitlines() if line)
    llama = config_text(engine_config("llamacpp", "gemma2-2b-27b", "draft", 4))
    assert "python:" not in llama  # llama.cpp documents a server command only


def test_local_pair_points_at_the_shipped_folders():
    cfg = vllm_config("tiny", "draft")
    assert cfg.target.endswith("tiny-gemma2-target") and cfg.draft.endswith("tiny-gemma2-draft")


@pytest.mark.parametrize("call, match", [
    (lambda: engine_config("not-an-engine", "gemma2-2b-27b"),
     "unknown engine 'not-an-engine'.*vllm, sglang, trtllm, llamacpp, tgi.*also spelt tensorrt-llm"),
    (lambda: vllm_config("gemma2-2b-27b", "ngram", prompt_lookup=(3, 2)), "prompt_lookup"),
    (lambda: vllm_config("gemma2-2b-27b", "lookahead"), "unknown method 'lookahead'.*draft, ngram, eagle"),
    (lambda: sglang_config("gemma2-2b-27b", "medusa"), "unknown method 'medusa'.*draft, ngram, eagle, eagle3, mtp"),
    (lambda: vllm_config("llama-70b", "draft"), "unknown pair 'llama-70b'.*gemma2-2b-27b"),
    (lambda: vllm_config("gemma2-2b-27b", "draft", gamma=0), "gamma"),
    (lambda: vllm_config("gemma2-2b-27b", "draft", gamma=2.5), "gamma"),
    (lambda: vllm_config("gemma2-2b-27b", "eagle3"), "pass head="),
    (lambda: sglang_config("gemma2-2b-27b", "eagle"), "pass head="),
    (lambda: vllm_config("gemma2-2b-27b", "mtp"), "no multi-token-prediction layers"),
    (lambda: engine_status().reason("tgi-x"), "unknown engine"),
])
def test_bad_input_raises_value_error(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_every_supported_method_builds_for_every_pair():
    for engine, methods in SUPPORTED.items():
        for method in methods:
            for pair in PAIRS:
                if method == "mtp":
                    continue  # no pair here has MTP layers: refused above
                cfg = engine_config(engine, pair, method, 2, **({"head": "h/x"} if method in
                                                                  ("eagle", "eagle3", "medusa") else {}))
                assert shlex.split(cfg.cli) == cfg.argv and cfg.docs.startswith("https://")


def test_mapping_and_engine_facts_are_sourced():
    rows = mapping_rows()
    assert [r[0].split()[0] for r in rows] == ["a", "n-gram", "EAGLE", "Medusa", "multi-token", "lookahead"]
    assert list(ENGINES) == ["vllm", "sglang", "trtllm", "llamacpp", "tgi"]
    assert all(len(r) == 2 + len(ENGINES) for r in rows)
    col = {e: 2 + i for i, e in enumerate(ENGINES)}
    assert rows[0][col["tgi"]] == "not supported"  # TGI: no separate draft model
    assert "-md DRAFT.gguf" in rows[0][col["llamacpp"]]
    assert rows[0][col["trtllm"]].startswith("DraftTargetDecodingConfig")
    table = mapping_table()
    assert table.count("\n") == len(rows) + 2 and "| TensorRT-LLM | llama.cpp | TGI |" in table
    for e in ENGINES.values():
        assert e["version"] and e["gamma"] and e["runs_here"]
        assert all(u.startswith("https://") for u in e["docs"].values())
        assert all(r["source"].startswith("https://") and r["setup"] for r in e["reported"])
    # only vLLM is run by this collection: every other engine is labelled as configuration only
    assert [k for k, e in ENGINES.items() if "never runs it" not in e["runs_here"]] == ["vllm"]


def test_gemma_pair_fits_an_h200_and_the_notebook_says_of_which_gpus():
    """The review: the 27b pair in bf16 fits an 80 GB GPU and also an H200 (141 GB, where the repo's GPU results
    were measured); the notebook's line names the GPUs of utils.models.GPUS it fits, and no longer 'only'."""
    from utils.models import GPUS, memory_fits

    assert GPUS["H200 141GB"][1] == 141.0 and GPUS["B200 180GB"][1] == 180.0
    bf16 = next(r for r in memory_fits("gemma2-2b-27b") if r["precision"] == "bf16")
    assert {"A100/H100 80GB", "H200 141GB", "B200 180GB"} <= set(bf16["fits"])
    nb = json.loads((ROOT / "notebooks" / "12_map_of_the_field.ipynb").read_text())
    printed = "".join("".join(o.get("text", [])) for c in nb["cells"] if c["cell_type"] == "code"
                      for o in c.get("outputs", []))
    assert f"of the GPUs in utils.models.GPUS, these hold it: {', '.join(bf16['fits'])}" in printed
    markdown = "".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "markdown")
    assert "fits only" not in markdown and "the 2b draft as well as the 27b target" in markdown


# --- what is present, and the engine cell --------------------------------------------------------------


@pytest.fixture
def no_gpu_no_engines(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for name in ("vllm", "sglang"):
        monkeypatch.setitem(sys.modules, name, None)  # find_spec -> None; `import vllm` -> ImportError
    monkeypatch.setattr(shutil, "which", lambda name, *a, **k: None)


def test_engine_status_without_gpu_or_engines(no_gpu_no_engines):
    st = engine_status()
    assert not st.cuda and st.packages == {"vllm": None, "sglang": None} and st.tgi_launcher is None
    assert "no CUDA GPU" in st.reason("vllm") and "vllm is not installed" in st.reason("vllm")
    assert "text-generation-launcher" in st.reason("tgi")
    with pytest.raises(EngineUnavailable, match="no CUDA GPU"):
        run_vllm("smollm2-135m-1.7b")


def _fake_vllm(monkeypatch, llm_class) -> EngineStatus:
    """Install a stand-in `vllm` module whose LLM is `llm_class`; the status says a GPU and vLLM are present."""
    import types

    fake = types.ModuleType("vllm")
    fake.LLM = llm_class
    fake.SamplingParams = lambda temperature, max_tokens: types.SimpleNamespace(temperature=temperature, max_tokens=max_tokens)
    monkeypatch.setitem(sys.modules, "vllm", fake)
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: None)
    return EngineStatus(True, "H100", {"vllm": "0.0-test", "sglang": None}, None)


def test_run_vllm_sends_batch_size_prompts_at_a_time_and_reads_acceptance(monkeypatch):
    """With a stand-in vLLM module (the real one needs a CUDA GPU): run_vllm gives generate()
    batch_size prompts at a time, and turns vLLM's counters into alpha and tokens per round,
    counting only the timed run (not the warm-up)."""
    import types

    class Counter:
        def __init__(self, name, value):
            self.name, self.value = name, value

    class FakeLLM:
        def __init__(self, **kwargs):
            self.spec = "speculative_config" in kwargs
            self.batches, self.n = [], 0
            assert kwargs["disable_log_stats"] is False  # vLLM keeps no counters otherwise

        def generate(self, prompts, params, use_tqdm=True):
            self.batches.append(len(prompts))
            self.n += len(prompts)
            calls.append((self.spec, len(prompts)))
            return [types.SimpleNamespace(outputs=[types.SimpleNamespace(token_ids=[1] * params.max_tokens)])
                    for _ in prompts]

        def get_metrics(self):  # per prompt: 4 rounds of 4 drafted tokens, 10 accepted
            if not self.spec:
                return []
            return [Counter("vllm:spec_decode_num_drafts", 4 * self.n), Counter("vllm:spec_decode_num_draft_tokens", 16 * self.n),
                    Counter("vllm:spec_decode_num_accepted_tokens", 10 * self.n), Counter("vllm:other", 1)]

    calls = []
    status = _fake_vllm(monkeypatch, FakeLLM)
    res = run_vllm("smollm2-135m-1.7b", prompts=["a", "b", "c"], max_tokens=8, batch_size=2, status=status)
    assert [n for spec, n in calls if spec] == [1, 2, 1]  # the warm-up, then 2 + 1
    assert res["batch_size"] == 2 and res["plain"]["tokens"] == res["speculative"]["tokens"] == 24
    sp = res["speculative"]
    assert (sp["rounds"], sp["drafted"], sp["accepted"]) == (12, 48, 30)  # three timed prompts, warm-up excluded
    assert sp["alpha_drafted"] == pytest.approx(30 / 48) and sp["tokens_per_round"] == pytest.approx(1 + 30 / 12)
    # c: the draft alone, plainly, on the same prompts and batches; the cost model's prediction at v = 1
    assert res["draft_alone"]["tokens"] == 24 and [n for spec, n in calls if not spec] == [1, 2, 1, 1, 2, 1]
    cm = res["cost_model"]
    assert cm["c"] == pytest.approx(res["plain"]["tokens_per_s"] / res["draft_alone"]["tokens_per_s"])
    assert cm["tau"] == sp["tokens_per_round"] and cm["v"] == 1.0
    assert cm["predicted_speedup"] == pytest.approx(sp["tokens_per_round"] / (4 * cm["c"] + 1))
    text = vllm_report(res)
    assert f"alpha per drafted token {30 / 48:.2f}" in text and f"so c = {cm['c']:.3f}" in text
    assert f"with v = 1: {cm['predicted_speedup']:.2f}x, measured {res['speedup']:.2f}x" in text
    calls.clear()
    res = run_vllm("smollm2-135m-1.7b", prompts=["a"], max_tokens=8, status=status, measure_c=False)
    assert res["cost_model"]["c"] is None and "draft_alone" not in res and len(calls) == 4
    assert "c not measured: c is measured for method 'draft' with measure_c=True" in vllm_report(res)
    with pytest.raises(ValueError, match="batch_size"):
        run_vllm("smollm2-135m-1.7b", batch_size=0, status=status)


def test_run_vllm_passes_gpu_memory_utilization_to_every_engine(monkeypatch):
    """With a stand-in vLLM module: gpu_memory_utilization goes to every engine (plain, speculative, the draft
    alone) and into the result; None leaves vLLM's default (the argument is not passed); a share outside (0, 1]
    raises."""
    import types

    built = []

    class FakeLLM:
        def __init__(self, **kwargs):
            built.append(kwargs)

        def generate(self, prompts, params, use_tqdm=True):
            return [types.SimpleNamespace(outputs=[types.SimpleNamespace(token_ids=[1])]) for _ in prompts]

        def get_metrics(self):
            return []

    status = _fake_vllm(monkeypatch, FakeLLM)
    res = run_vllm("smollm2-135m-1.7b", prompts=["a"], max_tokens=1, status=status, gpu_memory_utilization=0.4)
    assert [k.get("gpu_memory_utilization") for k in built] == [0.4, 0.4, 0.4]
    assert "speculative_config" in built[1] and res["gpu_memory_utilization"] == 0.4
    assert built[2]["model"] == "HuggingFaceTB/SmolLM2-135M-Instruct" and "speculative_config" not in built[2]
    built.clear()
    res = run_vllm("smollm2-135m-1.7b", prompts=["a"], max_tokens=1, status=status)
    assert res["gpu_memory_utilization"] is None
    # no counters from this stand-in: c is measured, but there is no tau to predict from
    assert "acceptance not reported" in vllm_report(res) and "no prediction" in vllm_report(res)
    assert len(built) == 3 and all("gpu_memory_utilization" not in k for k in built)
    for bad in (0, 1.5, -0.1, True, "0.5"):
        with pytest.raises(ValueError, match="gpu_memory_utilization"):
            run_vllm("smollm2-135m-1.7b", status=status, gpu_memory_utilization=bad)


def test_run_vllm_keeps_its_measurements_when_the_draft_alone_cannot_start(monkeypatch):
    """If the third engine (the draft alone, for c) fails to start, say why and keep the two main measurements."""
    import types

    class FakeLLM:
        def __init__(self, **kwargs):
            if "speculative_config" not in kwargs and "135M" in kwargs["model"]:
                raise RuntimeError("not enough free GPU memory")

        def generate(self, prompts, params, use_tqdm=True):
            return [types.SimpleNamespace(outputs=[types.SimpleNamespace(token_ids=[1])]) for _ in prompts]

        def get_metrics(self):
            return []

    res = run_vllm("smollm2-135m-1.7b", prompts=["a"], max_tokens=1, status=_fake_vllm(monkeypatch, FakeLLM))
    assert res["speedup"] > 0 and res["cost_model"]["c"] is None
    assert "RuntimeError: not enough free GPU memory" in res["cost_model"]["why"]


def test_engine_status_reasons_each_missing_piece():
    gpu_only = EngineStatus(True, "H100", {"vllm": None, "sglang": "0.5"}, None)
    assert gpu_only.reason("sglang") is None
    assert gpu_only.reason("vllm") == "vllm is not installed (pip install vllm, on a machine with a CUDA GPU)"
    assert EngineStatus(False, "none", {"vllm": "0.25.0", "sglang": None}, "/bin/tgl").reason("vllm").startswith("no CUDA")


def test_notebook_engine_cell_skips_cleanly_without_gpu_or_vllm(no_gpu_no_engines):
    """The CI check of issue #15: the notebook's engine cell, run with CUDA reported unavailable and vLLM
    absent, raises nothing and prints why it skipped."""
    import jupytext

    nb = jupytext.read(ROOT / "notebooks" / "src" / "12_map_of_the_field.py", fmt="py:percent")
    cells = [c.source for c in nb.cells if c.cell_type == "code" and "run_vllm(" in c.source]
    assert len(cells) == 1
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(cells[0], "12_map_of_the_field.py:engine-cell", "exec"), {"__name__": "__main__"})
    text = out.getvalue()
    assert "skipped: vLLM benchmark skipped: no CUDA GPU" in text and "vllm is not installed" in text
    assert "CUDA GPU: no" in text and "vllm: not installed" in text
