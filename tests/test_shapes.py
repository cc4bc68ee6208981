"""utils.shapes: the real Gemma2 configurations, and the GPU measurement run on shrunken ones (CPU)."""

import json
import os
import re
import subprocess
import sys
import weakref
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from utils import shapes
from utils.models import PAIRS
from utils.theory import expected_tokens_per_round

SMALL = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
             head_dim=32, query_pre_attn_scalar=32, vocab_size=1024)


@pytest.fixture
def one_thread():
    """On a 2-core CPU shared with other work, torch's thread pool stalls on tiny matrices: one thread."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.mark.parametrize("size, params", [("2b", 2.61e9), ("9b", 9.24e9), ("27b", 27.2e9)])
def test_configs_have_the_published_parameter_counts(size, params):
    from transformers import Gemma2ForCausalLM

    with torch.device("meta"):  # shapes only, no memory
        model = Gemma2ForCausalLM(shapes.gemma2_config(size))
    assert sum(p.numel() for p in model.parameters()) == pytest.approx(params, rel=0.01)


def test_param_counts_agree_with_the_pair_registry():
    specs = {s.repo: s.params for p in PAIRS.values() for s in (p.draft, p.target)}
    assert specs["google/gemma-2-9b-it"] == pytest.approx(9.24e9) and specs["google/gemma-2-27b-it"] == pytest.approx(27.2e9)


def test_unknown_size_and_quant_type():
    with pytest.raises(ValueError, match="choose from"):
        shapes.gemma2_config("7b")
    with pytest.raises(ValueError, match="nf4"):
        shapes.to_4bit(torch.nn.Sequential(), "int8")


def test_nf4_frees_each_replaced_layer_as_it_goes(monkeypatch):
    """to_4bit on 27b must not hold every bf16 layer until it returns (52 GB beside the 4-bit copy on
    an 80 GB GPU): when the last layer is quantized, the layers replaced before it are gone."""
    import gc
    import weakref

    import bitsandbytes as bnb

    model = shapes.random_model(shapes.gemma2_config("2b", **SMALL))
    head = model.get_output_embeddings()
    layers = [weakref.ref(m) for m in model.modules() if isinstance(m, torch.nn.Linear) and m is not head]
    alive_at_each_call, real = [], bnb.nn.Params4bit

    def counting(*a, **k):
        gc.collect()
        alive_at_each_call.append(sum(r() is not None for r in layers))
        return real(*a, **k)

    monkeypatch.setattr(bnb.nn, "Params4bit", counting)
    shapes.to_4bit(model)
    assert len(alive_at_each_call) == len(layers) > 4
    assert alive_at_each_call[-1] == 1  # only the layer being quantized


def test_random_model_is_seeded_and_leaves_the_callers_random_state_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    a = shapes.random_model(shapes.gemma2_config("2b", **SMALL), seed=5)
    assert torch.equal(torch.rand(3), expected)  # the caller's stream goes on where it was
    b = shapes.random_model(shapes.gemma2_config("2b", **SMALL), seed=5)
    c = shapes.random_model(shapes.gemma2_config("2b", **SMALL), seed=6)
    w = [m.model.layers[0].mlp.up_proj.weight for m in (a, b, c)]
    assert torch.equal(w[0], w[1]) and not torch.equal(w[0], w[2])


def test_nf4_replaces_linear_layers_and_shrinks_weights():
    import bitsandbytes as bnb

    full = shapes.random_model(shapes.gemma2_config("2b", **SMALL))
    q = shapes.random_model(shapes.gemma2_config("2b", **SMALL), quantization="nf4")
    assert isinstance(q.model.layers[0].mlp.up_proj, bnb.nn.Linear4bit)
    assert isinstance(q.lm_head, torch.nn.Linear) and not isinstance(q.lm_head, bnb.nn.Linear4bit)
    assert q.get_memory_footprint() < full.get_memory_footprint()
    with torch.inference_mode():
        logits = q(torch.tensor([[5, 6, 7]])).logits
    assert logits.shape == (1, 3, 1024) and torch.isfinite(logits).all()


def test_4bit_quantizes_as_bitsandbytes_config_does_by_default():
    """BitsAndBytesConfig(load_in_4bit=True) has no double quantization; bitsandbytes' own Linear4bit and
    Params4bit default to it (compress_statistics=True): to_4bit follows the config, and says so in meta."""
    import bitsandbytes as bnb
    from transformers import BitsAndBytesConfig

    assert BitsAndBytesConfig(load_in_4bit=True).bnb_4bit_use_double_quant is shapes.DOUBLE_QUANT is False
    for double in (False, True):
        q = shapes.random_model(shapes.gemma2_config("2b", **SMALL))
        shapes.to_4bit(q, "nf4", torch.float32, double_quant=double)
        layers = [m for m in q.modules() if isinstance(m, bnb.nn.Linear4bit)]
        # quantized (uint8 blocks), with nested (8-bit) scales exactly when double quantization was asked for
        assert layers and all(m.weight.dtype == torch.uint8 and m.weight.quant_state.nested is double for m in layers)
    assert shapes.run((), (), (), progress=False)["meta"]["double_quant"] is shapes.DOUBLE_QUANT


def test_run_on_shrunken_configs(one_thread):
    r = shapes.run(("2b",), (None, "nf4"), (("2b", "9b"),), max_new_tokens=8, repeats=1, overrides=SMALL, progress=False)
    assert r["meta"]["shrunk"] is True and "random weights" in r["meta"]["note"]
    assert [(m["size"], m["quantization"]) for m in r["models"]] == [("2b", None), ("2b", "nf4")]
    for m in r["models"]:
        assert m["weights_bytes"] > 0 and m["step_1_ms"] > 0 and m["hf_dynamic_tokens_per_s"] > 0 and m["hf_static_tokens_per_s"] > 0
    independent, itself = r["pairs"]
    # all accepted: each round emits min(gamma + 1, what is left), so tau = n / ceil(n / (gamma + 1))
    n, g = itself["max_new_tokens"], itself["gamma"]
    assert itself["alpha"] == 1.0 and itself["tau"] == n / -(-n // (g + 1))
    assert independent["alpha"] < 0.5  # random models rarely agree
    for p in r["pairs"]:
        assert p["same_as_hf_greedy"] == dict(hf_assisted=True, ours_speculative=True)
        assert p["c"] > 0 and set(p["tokens_per_s"]) == {"hf", "hf_assisted", "ours_speculative"}


def test_cli_writes_a_tagged_file_per_part(tmp_path, capsys):
    """A GPU session splits the run into parts that each fit one command; each part has its own file."""
    shapes.main(["--sizes", "--pairs", "--device", "cpu", "--out", str(tmp_path), "--tag", "part1"])
    data = json.loads((tmp_path / "shapes-cpu-part1.json").read_text())
    assert data["models"] == [] and data["pairs"] == [] and data["meta"]["device"] == "cpu"
    assert "shapes-cpu-part1.json" in capsys.readouterr().out
    with pytest.raises(SystemExit) as e:  # an earlier part's file is kept unless --overwrite says otherwise
        shapes.main(["--sizes", "--pairs", "--device", "cpu", "--out", str(tmp_path), "--tag", "part1"])
    assert e.value.code == 2 and "exists; pass --overwrite" in capsys.readouterr().err
    shapes.main(["--sizes", "--pairs", "--device", "cpu", "--out", str(tmp_path), "--tag", "part1", "--overwrite"])
    assert shapes._parser().get_default("out").name == "runs"  # untracked by default, like every other command


# ---------------------------------------------------------------- the compiled backend (--compiled)
# compile=False runs the same engine, loop and measurements without torch.compile (plumbing, seconds);
# one test compiles for real (one shape: 5-40 s on this CPU, less with inductor's cache).

ROOT = Path(__file__).resolve().parents[1]
BW = 1e9  # a made-up bandwidth (bytes/s) so that the CPU run computes the bound and its ratios


@pytest.fixture(scope="module")
def compiled_run(tmp_path_factory):
    """A whole compiled run on shrunken shapes: model rows 9b (asked) and 27b (the pair's target),
    the pair 2b->27b, the self-draft of 27b; written to disk as it goes."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    path = tmp_path_factory.mktemp("compiled") / "run.json"
    made, logs = [], []
    real = shapes.random_model

    def tracked(*a, **k):
        m = real(*a, **k)
        made.append(weakref.ref(m))
        return m

    shapes.random_model = tracked
    try:
        result = shapes.run_compiled(("9b",), (None,), (("2b", "27b"),), device="cpu", gamma=2, max_new_tokens=12,
                                     repeats=2, rounds=6, bandwidth=BW, compile=False, path=path, overrides=SMALL,
                                     log=logs.append)
    finally:
        shapes.random_model = real
        torch.set_num_threads(n)
    return SimpleNamespace(result=result, path=path, made=made, logs=logs)


def test_compiled_steps_run_most_needed_first(compiled_run):
    """A time budget skips the tail: the goals' inputs come first, the 27b target's HF static (a
    compile on CUDA) after its pair, the self-draft last; 9b, no pair's target, does HF static at once."""
    done = [m.group(1) for line in compiled_run.logs for m in [re.match(r"\[ *\d+ s\] (.+): [\d.]+ s$", line)] if m]
    assert done == ["9b load", "9b compiled", "9b hf_dynamic", "9b hf_static", "27b load", "27b compiled",
                    "27b hf_dynamic", "2b->27b compiled_steps", "2b->27b rounds", "27b hf_static",
                    "self-draft 27b self_draft"]


def _size_label(m):
    return m["size"] + " " + (m["quantization"] or "bf16")


def test_readme_tables_of_a_compiled_gpu_run(compiled_run, tmp_path):
    """scripts/build_notebooks.py turns a committed shapes-compiled-cuda*.json into the README's tables
    (models, pairs, self-draft, goals as the file evaluates them), flags shrunken shapes, a failed
    step, skipped CUDA graphs and graph breaks, and says how to make one when none is committed."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
    from build_notebooks import compiled_gpu_table

    assert "no GPU measurement committed yet" in compiled_gpu_table(tmp_path)
    r = json.loads(compiled_run.path.read_text())
    r["models"][0]["errors"] = {"hf_static": "OutOfMemoryError: CUDA out of memory"}
    r["models"][0].pop("hf_static_tok_s", None)
    r["pairs"][0]["cudagraph_skips"] = {"rounds": ["skipping cudagraphs due to mutated inputs (1 instances)"]}
    r["models"][1]["compile_fallbacks"] = {"compiled": ["Gemma2ForCausalLM step, width 1: Unsupported: ..."]}
    (tmp_path / "shapes-compiled-cuda-27b.json").write_text(json.dumps(r))
    text = compiled_gpu_table(tmp_path)
    pair, goals = r["pairs"][0], {g["id"]: g for g in r["goals"]}
    assert "SHRUNKEN configurations" in text and "[shapes-compiled-cuda-27b.json](data/results/shapes-compiled-cuda-27b.json)" in text
    assert "| 9b | bf16 |" in text and "failed (OutOfMemoryError)" in text
    m27 = next(m for m in r["models"] if m["size"] == "27b")  # the ratio to HF is of the columns shown beside it
    assert (f"| {m27['compiled_tok_s']:.1f} tok/s | {m27['hf_dynamic_tok_s']:.1f} tok/s | {m27['hf_static_tok_s']:.1f} tok/s "
            f"| {m27['compiled_tok_s'] / m27['hf_dynamic_tok_s']:.2f}x |") in text
    assert f"| 2b->27b | {pair['c']:.3f} | {pair['v']:.2f} |" in text
    assert "CUDA graphs were skipped** for graphs compiled in: 2b->27b rounds" in text
    assert ("**Compiling fell back** (a graph break under fullgraph=True: compiled in pieces; or a compiler failure: "
            f"run eagerly) in: {_size_label(r['models'][1])} compiled") in text
    spec = goals["spec_2b_27b_vs_hf_dynamic"]
    assert f"| {spec['goal']} | {spec['value']:.2f}x | {'yes' if spec['met'] else '**no**'} |" in text
    assert f"| {goals['compiled_greedy_vs_bound_9b']['goal']} | " in text
    aim = goals["spec_2b_27b_vs_bandwidth_bound"]  # a ratio to the bound (threshold 1): written as a multiple
    assert f"| {aim['goal']} | {aim['value']:.2f}x | {'yes' if aim['met'] else '**no**'} |" in text
    at = next(a for a in pair["at_alpha"] if a["alpha"] == 0.8)
    assert (f"| {at['vs_hf_dynamic']:.2f}x, {at['vs_hf_static']:.2f}x, {at['vs_compiled_greedy']:.2f}x, "
            f"{at['vs_bandwidth_bound']:.2f}x |") in text
    sd = r["self_draft"][0]  # its alpha as measured (1 in exact arithmetic; bf16 can flip a near-tie)
    assert f"| 27b | {sd['alpha']:.3f} | {sd['steady_tok_s']:.1f} |" in text.split("drafting for itself")[1]


def test_notebook_07_figure_of_a_compiled_run(compiled_run):
    """utils.overhead.plot_compiled_pairs draws a real result: the pair's implied tok/s at each alpha
    (the file's own numbers), its target's baselines as lines, the self-draft's measured point at
    alpha = 1; a result without measured rounds draws nothing."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from utils.overhead import plot_compiled_pairs

    r = json.loads(compiled_run.path.read_text())
    ax = plot_compiled_pairs(r)
    (pair,) = r["pairs"]
    curve, *rest = ax.get_lines()
    assert list(curve.get_xdata()) == [a["alpha"] for a in pair["at_alpha"]]
    assert list(curve.get_ydata()) == [a["tok_s"] for a in pair["at_alpha"]]
    levels = {line.get_ydata()[0] for line in rest}
    assert {pair["target_hf_dynamic_tok_s"], pair["target_compiled_decode_tok_s"], pair["target_bandwidth_bound_tok_s"],
            r["self_draft"][0]["steady_tok_s"]} <= levels
    star = next(line for line in rest if "drafting for itself" in line.get_label())
    assert list(star.get_xdata()) == [r["self_draft"][0]["alpha"]]  # at the alpha it measured
    assert "random weights" in ax.get_title()
    assert plot_compiled_pairs(dict(r, pairs=[])) is None
    plt.close("all")


def test_compiled_run_is_saved_with_provenance(compiled_run):
    result, path = compiled_run.result, compiled_run.path
    assert json.loads(path.read_text()) == json.loads(json.dumps(result))  # the file holds the final state
    meta = result["meta"]
    assert meta["complete"] is True and meta["stopped"] is None and meta["shrunk"] is True
    assert "random weights" in meta["weights"] and meta["date"] and meta["hardware"]
    assert {"torch", "transformers", "bitsandbytes", "cuda", "python"} <= set(meta)
    assert meta["gpu"] is None and meta["compile_mode"].startswith("none")  # a CPU, compile=False
    assert meta["bandwidth_bytes_per_s"] == BW and meta["bandwidth_source"].startswith("given")
    assert meta["plan"]["compiled_shapes"] == ["9b width 1", "27b width 1", "2b width 1", "27b width 3",
                                               "27b (self-draft copy) width 1"]
    assert meta["plan"]["hf_static_compiles"] == ["9b", "27b"]
    assert not list(path.parent.glob("*.tmp"))


def test_compiled_model_rows(compiled_run):
    result = compiled_run.result
    assert [(m["size"], m["quantization"]) for m in result["models"]] == [("9b", None), ("27b", None)]
    for m in result["models"]:
        assert "errors" not in m and "skipped" not in m, m
        assert m["bandwidth_bound_tok_s"] == pytest.approx(BW / m["weights_bytes"])
        assert m["compiled_vs_bound"] == pytest.approx(m["compiled_decode_tok_s"] / m["bandwidth_bound_tok_s"])
        assert m["compiled_step_vs_bound"] == pytest.approx(m["bound_step_ms"] / m["compiled_step_ms"])
        for base in ("hf_dynamic", "hf_static"):
            assert m[f"{base}_tok_s"] > 0
            assert m[f"compiled_vs_{base}"] == pytest.approx(m["compiled_tok_s"] / m[f"{base}_tok_s"])
        assert m["compiled_tok_s"] > 0 and m["compiled_decode_tok_s"] > 0 and m["compiled_step_ms"] > 0
        assert m["compiled_same_as_hf_greedy"] is True  # float32 on a CPU: token for token
        assert set(m["compile_s"]) >= {"1"} and m["recompiled_in_timed_runs"] is False
        assert set(m["step_s"]) == {"load", "compiled", "hf_dynamic", "hf_static"}


def test_compiled_pair_round_times_and_implied_rates(compiled_run):
    result = compiled_run.result
    (pair,) = result["pairs"]
    target = next(m for m in result["models"] if m["size"] == "27b")
    assert pair["pair"] == "2b->27b" and pair["gamma"] == 2 and "errors" not in pair
    assert pair["c"] == pytest.approx(pair["draft_step_ms"] / pair["target_step_ms"])
    assert pair["target_step_ms"] == target["compiled_step_ms"]  # one measurement per model and width
    assert pair["v"] == pytest.approx(pair["verify_ms"] / pair["target_step_ms"])
    for label in ("rejected", "all_accepted"):
        check = pair[f"round_check_{label}"]
        assert pair[f"round_ms_{label}"] > 0
        assert check["full_rounds_as_forced"] is True and check["recompiled_in_timed_runs"] is False
        assert check["rounds_long"] - check["rounds_short"] == 6
    assert set(pair["compile_s"]) == {"draft", "target"} and set(pair["compile_s"]["target"]) == {"1", "3"}
    assert pair["target_hf_dynamic_tok_s"] == target["hf_dynamic_tok_s"]
    assert pair["target_hf_static_tok_s"] == target["hf_static_tok_s"]
    assert pair["target_bandwidth_bound_tok_s"] == target["bandwidth_bound_tok_s"] == BW / target["weights_bytes"]
    assert [a["alpha"] for a in pair["at_alpha"]] == [0.6, 0.7, 0.8, 0.9]
    rej, acc = pair["round_ms_rejected"], pair["round_ms_all_accepted"]
    for a in pair["at_alpha"]:
        assert a["tau"] == pytest.approx(expected_tokens_per_round(a["alpha"], 2))
        assert a["round_ms"] == pytest.approx((1 - a["alpha"] ** 2) * rej + a["alpha"] ** 2 * acc)
        assert a["tok_s"] == pytest.approx(1e3 * a["tau"] / a["round_ms"])  # implied tokens/s = tau / round time
        assert a["vs_hf_dynamic"] == pytest.approx(a["tok_s"] / target["hf_dynamic_tok_s"])
        assert a["vs_hf_static"] == pytest.approx(a["tok_s"] / target["hf_static_tok_s"])
        assert a["vs_compiled_greedy"] == pytest.approx(a["tok_s"] / target["compiled_decode_tok_s"])
        assert a["vs_bandwidth_bound"] == pytest.approx(a["tok_s"] / target["bandwidth_bound_tok_s"])
        assert a["theory_speedup_vs_compiled_greedy"] == pytest.approx(a["tau"] / (2 * pair["c"] + pair["v"]))


def test_compiled_self_draft_is_target_greedy(compiled_run):
    result = compiled_run.result
    (sd,) = result["self_draft"]
    assert sd["model"] == "27b" and "errors" not in sd
    assert sd["same_as_compiled_greedy"] is True and sd["same_as_hf_greedy"] is True
    assert sd["first_mismatch_compiled_greedy"] is None
    assert sd["alpha"] == 1.0 and sd["tau"] == 3.0 and sd["new_tokens"] == 12 and sd["rounds"] == 4
    assert sd["round_check_all_accepted"]["full_rounds_as_forced"] is True
    assert sd["round_model_error"] == pytest.approx(sd["steady_tok_s"] / sd["predicted_tok_s_rounds"] - 1)
    # the replayed rounds: 4 full rounds, the draft's extra write step in the first 3
    d, v = sd["draft_step_ms"], sd["verify_ms"]
    assert sd["predicted_tok_s_components"] == pytest.approx(1e3 * 12 / (3 * (3 * d + v) + (2 * d + v)))
    assert sd["predicted_tok_s_rounds"] == pytest.approx(1e3 * 12 / (4 * sd["round_ms_all_accepted"] - d))
    assert set(sd["compile_s"]["draft"]) == {"1"}  # the self-draft's second engine


def test_compiled_goals_are_read_from_the_rows(compiled_run):
    result = compiled_run.result
    goals = {g["id"]: g for g in result["goals"]}
    assert set(goals) == {"compiled_greedy_vs_bound_9b", "compiled_greedy_vs_bound_27b", "spec_2b_27b_vs_hf_dynamic",
                          "spec_2b_27b_vs_hf_static", "spec_2b_27b_vs_compiled_greedy", "spec_2b_27b_vs_bandwidth_bound"}
    rows = {m["size"]: m for m in result["models"]}
    at = next(a for a in result["pairs"][0]["at_alpha"] if a["alpha"] == 0.8)
    expect = dict(compiled_greedy_vs_bound_9b=(rows["9b"]["compiled_vs_bound"], 0.6),
                  compiled_greedy_vs_bound_27b=(rows["27b"]["compiled_vs_bound"], 0.6),
                  spec_2b_27b_vs_hf_dynamic=(at["vs_hf_dynamic"], 1.8),
                  spec_2b_27b_vs_hf_static=(at["vs_hf_static"], 1.3),
                  spec_2b_27b_vs_compiled_greedy=(at["vs_compiled_greedy"], 2.0),
                  spec_2b_27b_vs_bandwidth_bound=(at["vs_bandwidth_bound"], 1.0))
    for gid, (value, threshold) in expect.items():
        assert goals[gid]["value"] == value and goals[gid]["threshold"] == threshold
        assert goals[gid]["met"] is (value >= threshold)
    assert shapes.evaluate_goals(dict(models=[], pairs=[]))[0] == dict(
        id="compiled_greedy_vs_bound_9b", goal=goals["compiled_greedy_vs_bound_9b"]["goal"], threshold=0.6, value=None,
        met=None, note="not measured in this file")


def test_compiled_run_lets_go_of_its_models(compiled_run):
    import gc

    made = compiled_run.made
    gc.collect()
    assert len(made) == 3 and all(ref() is None for ref in made)  # engines dropped with their models


def test_forced_acceptance_replaces_only_the_count():
    """The timing runs force the accepted count; the rule is back afterwards, even after an error."""
    from utils import speculative

    real = speculative.accept_reject
    p, q, x, u = torch.tensor([[0.0, 1.0]] * 4), torch.tensor([[1.0, 0.0]] * 3), torch.tensor([0, 0, 0]), torch.zeros(3)
    assert int(real(p, q, x, u, 3)[0]) == 0  # p(x_1) = 0: the rule rejects x_1
    with pytest.raises(KeyError), shapes.forced_acceptance(2):
        assert int(speculative.accept_reject(p, q, x, u, 3)[0]) == 2
        assert int(speculative.accept_reject(p, q, x, u, 1)[0]) == 1  # never more than k
        raise KeyError
    assert speculative.accept_reject is real


def test_compiled_failures_budget_and_stops_are_recorded(tmp_path, monkeypatch, one_thread):
    """A step that raises (NF4 under torch.compile, say) is recorded and the run goes on; a spent
    budget skips steps but still writes the file; Ctrl-C or SIGTERM leaves the file marked stopped."""
    from utils import fast

    def broken(*a, **k):
        raise RuntimeError("Linear4bit under fullgraph: nope")

    monkeypatch.setattr(fast, "autoregressive_compiled", broken)
    path = tmp_path / "nf4.json"
    r = shapes.run_compiled(("2b",), ("nf4",), (), device="cpu", gamma=2, max_new_tokens=8, repeats=1, compile=False,
                            hf_static=False, path=path, overrides=SMALL, log=lambda s: None)
    (row,) = json.loads(path.read_text())["models"]
    assert row["quantization"] == "nf4"
    assert row["errors"] == {"compiled": "RuntimeError: Linear4bit under fullgraph: nope"}
    assert row["hf_dynamic_tok_s"] > 0 and "compiled_tok_s" not in row and r["meta"]["complete"] is True
    monkeypatch.undo()

    from torch._inductor.cudagraph_utils import log_cudagraph_skip_and_bump_counter

    real_hf_rate = shapes.hf_rate

    def no_graphs(*a, **k):  # what inductor says on CUDA when a compiled step cannot run as a CUDA graph
        log_cudagraph_skip_and_bump_counter("skipping cudagraphs due to mutated inputs (2 instances)")
        return real_hf_rate(*a, **k)

    monkeypatch.setattr(shapes, "hf_rate", no_graphs)
    path = tmp_path / "skips.json"
    shapes.run_compiled(("2b",), (None,), (), device="cpu", gamma=2, max_new_tokens=8, repeats=1, compile=False,
                        hf_static=False, path=path, overrides=SMALL, log=lambda s: None)
    (row,) = json.loads(path.read_text())["models"]
    assert row["cudagraph_skips"] == {"hf_dynamic": ["skipping cudagraphs due to mutated inputs (2 instances)"]}
    assert row["hf_dynamic_tok_s"] > 0  # the step itself went on
    monkeypatch.undo()

    from utils.fast import compile_fallback

    def in_pieces(*a, **k):  # what utils.fast does when fullgraph=True meets a graph break
        with pytest.warns(UserWarning, match="could not compile"):
            compile_fallback(RuntimeError("Call to `torch._dynamo.graph_break()`"), "Gemma2ForCausalLM step, width 1")
        return real_hf_rate(*a, **k)

    monkeypatch.setattr(shapes, "hf_rate", in_pieces)
    path = tmp_path / "breaks.json"
    shapes.run_compiled(("2b",), (None,), (), device="cpu", gamma=2, max_new_tokens=8, repeats=1, compile=False,
                        hf_static=False, path=path, overrides=SMALL, log=lambda s: None)
    (row,) = json.loads(path.read_text())["models"]
    assert row["compile_fallbacks"] == {"hf_dynamic": ["Gemma2ForCausalLM step, width 1: RuntimeError: Call to "
                                                  "`torch._dynamo.graph_break()`"]}
    assert row["hf_dynamic_tok_s"] > 0 and "compile_fallbacks" not in row.get("step_s", {})
    monkeypatch.undo()

    path = tmp_path / "budget.json"
    shapes.run_compiled(("2b",), (None,), (("2b", "9b"),), device="cpu", gamma=2, max_new_tokens=8, budget_s=1e-9,
                        compile=False, path=path, overrides=SMALL, log=lambda s: None)
    r = json.loads(path.read_text())
    assert [m["skipped"] for m in r["models"]] == [["load"], ["load"]]
    assert r["pairs"][0]["skipped"] == ["compiled_steps"] and r["self_draft"][0]["skipped"] == ["self_draft"]
    assert r["meta"]["complete"] is True and all(g["value"] is None for g in r["goals"])

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(shapes, "hf_rate", interrupted)
    path = tmp_path / "stopped.json"
    with pytest.raises(KeyboardInterrupt):
        shapes.run_compiled(("2b",), (None,), (), device="cpu", gamma=2, max_new_tokens=8, repeats=1, compile=False,
                            path=path, overrides=SMALL, log=lambda s: None)
    r = json.loads(path.read_text())
    assert r["meta"]["complete"] is False and r["meta"]["stopped"].startswith("KeyboardInterrupt")
    assert r["models"][0]["compiled_tok_s"] > 0  # measured before the stop, kept


def test_compiled_run_really_compiles(tmp_path, one_thread):
    """compile=True: inductor compiles the 1-token step once (its time kept apart), the timed runs
    reuse it, and compiled greedy equals HF greedy."""
    from torch._dynamo.utils import counters

    tiny = dict(SMALL, num_hidden_layers=1)
    graphs = counters["stats"]["unique_graphs"]
    r = shapes.run_compiled(("2b",), (None,), (), device="cpu", gamma=2, max_new_tokens=8, repeats=1, hf_static=False,
                            path=tmp_path / "c.json", overrides=tiny, log=lambda s: None)
    (m,) = r["models"]
    assert "errors" not in m, m.get("errors")
    assert r["meta"]["compile_mode"] == "default (inductor)" and r["meta"]["plan"]["compiled_shapes"] == ["2b width 1"]
    assert m["compile_s"]["1"] > 0
    assert m["compiled_first_call_compile_s"] == pytest.approx(m["compile_s"]["1"], abs=0.01)
    assert m["recompiled_in_timed_runs"] is False and m["compiled_same_as_hf_greedy"] is True
    # one graph in all: the 1-token prompt's first step has the layout of the later ones (a longer
    # prompt makes utils.fast compile a second width-1 graph, outside its compile clock)
    assert counters["stats"]["unique_graphs"] - graphs == 1


# ---------------------------------------------------------------- the command line


@pytest.fixture
def no_models(monkeypatch):
    def refuse(*a, **k):
        raise AssertionError("a model was loaded before the flags were checked")

    monkeypatch.setattr(shapes, "random_model", refuse)


@pytest.mark.parametrize("argv, message", [
    (["--compiled", "--gamma", "0"], "--gamma must be >= 1"),
    (["--compiled", "--gamma", "x"], "invalid int value"),
    (["--max-new-tokens", "0"], "--max-new-tokens must be >= 1"),
    (["--compiled", "--max-new-tokens", "300"], "fit one 256-position cache bucket"),
    (["--compiled", "--gamma", "8", "--max-new-tokens", "6"], ">= max(4, gamma + 1)"),
    (["--compiled", "--repeats", "0"], "--repeats must be >= 1"),
    (["--compiled", "--rounds", "0"], "--rounds must be >= 1"),
    (["--pairs", "2b-9b"], "draft:target"),
    (["--pairs", "2b:7b"], "draft:target"),
    (["--compiled", "--pairs", "9b:9b"], "--self-draft 9b"),
    (["--sizes", "7b"], "invalid choice"),
    (["--compiled", "--self-draft", "7b"], "invalid choice"),
    (["--compiled", "--alphas", "1.5"], "--alphas must be in (0, 1]"),
    (["--compiled", "--alphas", "0"], "--alphas must be in (0, 1]"),
    (["--compiled", "--budget-s", "-1"], "--budget-s must be > 0"),
    (["--compiled", "--bandwidth-gbs", "0"], "--bandwidth-gbs must be > 0"),
    (["--device", "cuda"] if not torch.cuda.is_available() else ["--device", "tpu"], "--device"),
    (["--device", "nonsense"], "--device"),
    (["--tag", "a/b"], "--tag must be"),
    (["--self-draft", "9b"], "only with --compiled"),
    (["--budget-s", "100", "--no-compile"], "--budget-s, --no-compile: only with --compiled"),
])
def test_cli_rejects_bad_flags_before_loading(argv, message, no_models, capsys):
    with pytest.raises(SystemExit) as e:
        shapes.main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_cli_bad_flag_exits_2_without_traceback():
    p = subprocess.run([sys.executable, "-m", "utils.shapes", "--compiled", "--gamma", "-3"], cwd=ROOT,
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and "--gamma must be >= 1" in p.stderr and "Traceback" not in p.stderr


def test_cli_help_and_dry_run(no_models, capsys, tmp_path):
    with pytest.raises(SystemExit) as e:
        shapes.main(["--help"])
    assert e.value.code == 0 and "--compiled" in capsys.readouterr().out
    shapes.main(["--compiled", "--sizes", "--pairs", "2b:27b", "--device", "cpu", "--out", str(tmp_path), "--tag", "t",
                 "--dry-run"])
    plan = json.loads(capsys.readouterr().out)
    assert plan["models"] == [dict(size="27b", quantization=None)] and plan["self_draft"] == ["27b"]
    assert plan["output"] == str(tmp_path / "shapes-compiled-cpu-t.json") and not list(tmp_path.iterdir())


def test_cli_compiled_writes_its_file(tmp_path, capsys):
    shapes.main(["--compiled", "--sizes", "--pairs", "--self-draft", "--device", "cpu", "--out", str(tmp_path),
                 "--tag", "p"])
    data = json.loads((tmp_path / "shapes-compiled-cpu-p.json").read_text())
    assert data["models"] == data["pairs"] == data["self_draft"] == [] and data["meta"]["complete"] is True
    assert data["meta"]["argv"][0] == "--compiled" and len(data["goals"]) == len(shapes.GOALS) == 6
    out = capsys.readouterr().out
    assert "wrote" in out and '"compiled_greedy_vs_bound_9b"' in out


def test_cli_never_overwrites_a_tracked_file(monkeypatch, no_models, capsys, tmp_path):
    assert shapes._is_tracked(ROOT / "README.md") and not shapes._is_tracked(tmp_path / "x.json")
    monkeypatch.setattr(shapes, "_is_tracked", lambda p: True)
    for argv in (["--compiled", "--sizes", "--pairs"], ["--sizes", "--pairs"]):
        with pytest.raises(SystemExit) as e:
            shapes.main(argv + ["--device", "cpu", "--out", str(tmp_path)])
        assert e.value.code == 2 and "tracked by git" in capsys.readouterr().err


def test_bandwidth_table():
    from utils.theory import GPU_BANDWIDTH, gpu_bandwidth

    assert gpu_bandwidth("NVIDIA H100 80GB HBM3")[0] == GPU_BANDWIDTH["H100 (80 GB SXM)"]
    assert gpu_bandwidth("NVIDIA H100 PCIe")[0] == 2.0e12
    assert gpu_bandwidth("NVIDIA H200")[0] == 4.8e12
    assert gpu_bandwidth("NVIDIA A100-SXM4-80GB")[0] == GPU_BANDWIDTH["A100 (80 GB SXM)"]
    assert gpu_bandwidth("Tesla T4")[0] == GPU_BANDWIDTH["T4 (16 GB)"]
    assert gpu_bandwidth("Some Future GPU") == (None, None)


# ---------------------------------------------------------------- scripts/gpu_run.sh


def _gpu_run(*args):
    script = ROOT / "scripts" / "gpu_run.sh"
    return subprocess.run(["bash", str(script), *args], capture_output=True, text=True, timeout=60)


def test_gpu_run_usage_and_unknown_parts():
    assert _gpu_run("--help").returncode == 0
    for args in ((), ("bogus",), ("compiled-27b", "extra")):
        p = _gpu_run(*args)
        assert p.returncode == 2 and "parts:" in p.stderr and "pip" not in p.stderr  # refused before installing


def test_gpu_run_parts_parse_and_stay_small(no_models, capsys, monkeypatch):
    """Every part's command is valid, and a compiled part compiles few shapes (each took 60-130 s on a
    GPU) and keeps a time budget inside the 10-minute command."""
    monkeypatch.setattr(shapes, "available_memory_bytes", lambda: None)  # parsed with --device cpu, meant for a GPU
    parts = _gpu_run("--list").stdout.split()
    assert {"compiled-27b", "compiled-2b-9b", "compiled-nf4"} <= set(parts)
    plans = {}
    for part in parts:
        cmd = _gpu_run("--print", part).stdout.split()
        assert cmd[:2] == ["python3", "-m"]
        if part.startswith("compiled-"):
            assert cmd[2] == "utils.shapes" and "--budget-s" in cmd
            shapes.main(cmd[3:] + ["--device", "cpu", "--dry-run"])
            plans[part] = json.loads(capsys.readouterr().out)
            assert len(plans[part]["compiled_shapes"]) + len(plans[part]["hf_static_compiles"]) <= 6
        elif cmd[2] == "utils.shapes":  # the eager parts: their flags parse too
            assert shapes._parse(cmd[3:] + ["--device", "cpu"]).compiled is False
    assert plans["compiled-27b"]["pairs"] == ["2b->27b"] and plans["compiled-27b"]["self_draft"] == ["27b"]
    assert {m["size"] for m in plans["compiled-27b"]["models"]} == {"27b"}
    assert {m["size"] for m in plans["compiled-2b-9b"]["models"]} == {"2b", "9b"}
    assert {m["quantization"] for m in plans["compiled-nf4"]["models"]} == {"nf4"}


class _ChecksPassed(Exception):
    """Raised where a command would start loading models: every flag check before it passed."""


@pytest.mark.parametrize("part", ["batched-cost", "batched-cost-compiled", "batched", "tiny"])
def test_gpu_run_eager_parts_pass_their_checks_on_a_gpu(part, monkeypatch, tmp_path):
    """The parts that are not utils.shapes (utils.beyond, utils.bench) get as far as loading on a
    machine with CUDA: --device cuda and every other flag pass their checks (CUDA faked here, the
    loading stopped), so a GPU session's scarce minutes are not lost to a refused flag."""
    from utils import beyond, bench, models

    cmd = _gpu_run("--print", part).stdout.split()
    assert cmd[:2] == ["python3", "-m"] and "--device" in cmd and cmd[cmd.index("--device") + 1] == "cuda"
    argv = cmd[3:]
    argv[argv.index("--out") + 1] = str(tmp_path)  # not data/results: nothing tracked is touched
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)

    def stop(*a, **k):
        raise _ChecksPassed

    monkeypatch.setattr(beyond, "shape_costs", stop)
    monkeypatch.setattr(models, "describe_device", lambda d: f"{d} (faked)")  # no GPU to name here
    monkeypatch.setattr(models, "load_pair", stop)
    monkeypatch.setattr(bench, "load_pair", stop)
    main = {"utils.beyond": beyond.main, "utils.bench": bench.main}[cmd[2]]
    with pytest.raises(_ChecksPassed):
        main(argv)
    assert not any(tmp_path.iterdir())  # stopped before writing


def test_gpu_run_cuda_tests_part_selects_the_cuda_cases(tmp_path):
    """cuda-tests runs tests/test_device.py's CUDA cases without the project's pytest addopts (the
    device has no nbval); here, without a GPU, the same selection collects them and skips each."""
    cmd = _gpu_run("--print", "cuda-tests").stdout.split()
    assert cmd[:3] == ["python3", "-m", "pytest"] and "-o" in cmd and cmd[cmd.index("-o") + 1] == "addopts="
    argv = [sys.executable, *cmd[1:]]
    argv[argv.index("--junitxml") + 1] = str(tmp_path / "cuda-tests.xml")
    r = subprocess.run(argv + ["-p", "no:nbval"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    if not torch.cuda.is_available():
        n = int(re.search(r"(\d+) skipped", r.stdout).group(1))
        assert n >= 6 and "passed" not in r.stdout and "no CUDA GPU here" in r.stdout


def test_sigterm_leaves_the_json_behind(tmp_path):
    """`timeout` (scripts/gpu_run.sh) sends SIGTERM: the part exits with what it measured on disk."""
    import signal

    code = f"""
import time, torch
from utils import shapes
torch.set_num_threads(1)
real = shapes.gemma2_config
shapes.gemma2_config = lambda size, **o: real(size, **{{**{SMALL!r}, **o}})
def slow(*a, **k):
    print("hf started", flush=True)
    time.sleep(60)
shapes.hf_rate = slow
shapes.main(["--compiled", "--sizes", "2b", "--pairs", "--device", "cpu", "--no-compile", "--out", {str(tmp_path)!r}])
"""
    p = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True)
    try:
        assert "hf started" in p.stdout.readline()
        p.send_signal(signal.SIGTERM)
        p.wait(timeout=30)
    finally:
        p.kill()
    assert p.returncode == 128 + signal.SIGTERM
    r = json.loads((tmp_path / "shapes-compiled-cpu.json").read_text())
    assert r["meta"]["complete"] is False and r["meta"]["stopped"] == f"SystemExit: {128 + signal.SIGTERM}"
    assert r["models"][0]["compiled_tok_s"] > 0 and r["models"][0]["step_s"]["hf_dynamic"] >= 0


def test_the_time_budget_stops_new_compiles_not_steps_that_compile_nothing(monkeypatch):
    """Past the budget a compiling step is skipped and listed, but a pair's rounds (graphs compiled
    before) and HF's eager generate still run: the goals then get their values."""
    from utils import shapes

    rec = shapes._Recorder(dict(meta={}), None, budget_s=1.0, log=lambda s: None)
    monkeypatch.setattr(rec, "elapsed", lambda: 5.0)  # past the budget
    monkeypatch.setattr(shapes, "derive", lambda result: None)
    row = dict(pair="2b->27b")
    assert rec.attempt(row, "compiled_steps", lambda: "ran") is None and row["skipped"] == ["compiled_steps"]
    assert rec.attempt(row, "rounds", lambda: "ran", budgeted=False) == "ran" and row["skipped"] == ["compiled_steps"]


def _stub_machine(tmp_path, cuda: bool):
    """A PATH where python3 logs its arguments and succeeds (the CUDA check fails if not `cuda`) and
    nvidia-smi names a GPU; an install directory already marked as installed."""
    bin_dir, site = tmp_path / "bin", tmp_path / "site"
    bin_dir.mkdir()
    site.mkdir()
    (site / ".specdec-installed").write_text(_gpu_run("--carried").stdout)  # this checkout's .whl/ is installed
    log = tmp_path / "calls.log"
    (bin_dir / "python3").write_text(
        "#!/bin/bash\n"
        f'echo "$*" >> {log}\n'
        f'if [[ "$*" == *"sys.exit(not torch.cuda.is_available())"* ]]; then exit {0 if cuda else 1}; fi\n'
        "exit 0\n")
    (bin_dir / "nvidia-smi").write_text("#!/bin/bash\necho 'NVIDIA H100 80GB HBM3, 81559 MiB, 580.00'\n")
    for f in bin_dir.iterdir():
        f.chmod(0o755)
    env = dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}", SPECDEC_SITE=str(site), OUT=str(tmp_path / "out"))
    env.pop("BUDGET_S", None)
    return env, log


def test_gpu_run_shares_one_command_between_parts(tmp_path):
    """`cuda-tests@240 compiled-27b`: installed once, the first part under its own 240 s, the last
    under the time left of TOTAL_S, its compile budget 150 s less; each part's output kept in a log."""
    env, log = _stub_machine(tmp_path, cuda=True)
    r = subprocess.run(["bash", str(ROOT / "scripts" / "gpu_run.sh"), "cuda-tests@240", "compiled-27b"], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "== part cuda-tests (timeout 240 s)" in r.stderr
    t = int(re.search(r"== part compiled-27b \(timeout (\d+) s\)", r.stderr).group(1))
    assert t == 550  # the time left of TOTAL_S (570, less the seconds the stubbed parts took), capped at PART_TIMEOUT
    calls = log.read_text().splitlines()
    assert not any("pip install" in c for c in calls)  # the marker says installed
    shapes_call = next(c for c in calls if c.startswith("-m utils.shapes"))
    assert f"--budget-s {t - 150}" in shapes_call and "--device cuda" in shapes_call
    assert {p.name for p in (tmp_path / "out").iterdir()} >= {"cuda-tests.log", "compiled-27b.log"}


def test_gpu_run_stops_when_torch_sees_no_gpu(tmp_path):
    env, log = _stub_machine(tmp_path, cuda=False)
    r = subprocess.run(["bash", str(ROOT / "scripts" / "gpu_run.sh"), "compiled-27b"], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 3 and "torch sees no CUDA GPU" in r.stderr
    assert not any(c.startswith("-m utils.shapes") for c in log.read_text().splitlines())


def test_gpu_run_refuses_bad_seconds():
    for spec in ("cuda-tests@soon", "cuda-tests@30"):
        p = _gpu_run(spec)
        assert p.returncode == 2 and "whole number of at least 60" in p.stderr, spec


def test_gpu_run_print_shows_the_budget_a_part_gets():
    assert "--budget-s 250" in _gpu_run("--print", "compiled-27b@400").stdout  # 400 s less the longest compile
    assert "--budget-s 400" in _gpu_run("--print", "compiled-27b").stdout  # PART_TIMEOUT 550 less 150


def test_gpu_run_without_carried_wheels_says_to_prepare_them(tmp_path):
    """A machine where nothing is installed yet and no .whl/ came along: one line saying what to run."""
    (tmp_path / "whl").mkdir()  # the script works from the repository root, whose own .whl/ may hold wheels
    env = dict(os.environ, SPECDEC_SITE=str(tmp_path / "site"), OUT=str(tmp_path / "out"), SPECDEC_WHL=str(tmp_path / "whl"))
    r = subprocess.run(["bash", str(ROOT / "scripts" / "gpu_run.sh"), "tiny"], env=env, capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 2 and "scripts/gpu_prepare.sh" in r.stderr and "not a valid wheel" not in r.stderr
