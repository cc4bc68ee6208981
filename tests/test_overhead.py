"""utils.overhead: op counts, fits, step estimates, cache sizes, the H200 file's helpers, the backend race."""

import math

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from utils import overhead as oh  # noqa: E402
from utils.models import ROOT  # noqa: E402
from utils.shapes import GEMMA2_SHAPES, gemma2_config  # noqa: E402

H200 = ROOT / "data" / "results" / "gpu-h200-2026-11-24.json"


@pytest.fixture(scope="module")
def h200():
    return oh.load_gpu_results(H200)


def test_fit_line_recovers_intercept_slope_and_r2():
    x = np.array([1, 2, 5, 10, 20])
    fit = oh.fit_line(x, 0.5 + 0.25 * x)
    assert fit.a == pytest.approx(0.5) and fit.b == pytest.approx(0.25) and fit.r2 == pytest.approx(1.0)
    assert fit(4) == pytest.approx(1.5)
    noisy = oh.fit_line(x, 0.5 + 0.25 * x + np.array([0.3, -0.3, 0.3, -0.3, 0.3]))
    assert 0 < noisy.r2 < 1


def test_step_estimates_are_bytes_over_bandwidth_and_ops_times_per_op():
    bw, ops = oh.step_estimates([1e9, 1e6], 1e12, [100, 200], 1e-5)
    np.testing.assert_allclose(bw, [1e-3, 1e-6])
    np.testing.assert_allclose(ops, [1e-3, 2e-3])


def test_cpu_cache_sizes_reads_sysfs_or_returns_nothing():
    sizes = oh.cpu_cache_sizes()
    assert all(k in ("L1", "L2", "L3", "L4") and v > 0 for k, v in sizes.items())
    from pathlib import Path

    if list(Path("/sys/devices/system/cpu/cpu0/cache").glob("index*/size")):  # Linux says: it must be read
        assert "L1" in sizes, sizes
    if "L1" in sizes and "L2" in sizes:
        assert sizes["L1"] < sizes["L2"]
    assert oh.cpu_cache_sizes(cpu=10**6) == {}  # no such CPU: nothing, no error


def test_shrunk_model_keeps_gemma2_layer_pattern_and_scales_width(pair):
    m = oh.shrunk_model(pair.target.config, layers=3, hidden=64)
    cfg = m.config
    assert cfg.num_hidden_layers == 3
    assert cfg.layer_types == ["sliding_attention", "full_attention", "sliding_attention"]
    assert cfg.hidden_size == 64
    assert cfg.intermediate_size / 64 == pair.target.config.intermediate_size / pair.target.config.hidden_size
    assert pair.target.config.num_hidden_layers == 20  # the original config is untouched
    with torch.inference_mode():
        assert m(torch.tensor([[2, 5, 7]])).logits.shape == (1, 3, cfg.vocab_size)


def test_operator_count_grows_by_a_fixed_amount_per_layer_and_not_with_width(pair, encode):
    """Eager ops per step are a + b x layers exactly (every layer runs the same operators), and the
    width does not change the count: the basis of the overhead estimate."""
    prefix = encode("The for statement is used to")
    counts = [oh.count_ops(oh.dynamic_cache_step(oh.shrunk_model(pair.target.config, layers=L), prefix))
              for L in (1, 2, 3, 4)]
    per_layer = np.diff(counts)
    assert len(set(per_layer.tolist())) == 1 and per_layer[0] > 30
    wide = oh.count_ops(oh.dynamic_cache_step(oh.shrunk_model(pair.target.config, layers=2, hidden=256), prefix))
    assert wide == counts[1]


def test_a_prompt_of_a_larger_vocabulary_is_wrapped_into_the_models(pair):
    """Notebook 07 times random tiny-config models after the loaded pair's prompt; with Gemma2's
    tokenizer its ids pass the tiny vocabulary (an IndexError on a CPU, a device assert on a GPU)."""
    vocab = pair.target.config.vocab_size
    prefix = torch.tensor([[5, vocab + 7, 3 * vocab - 1]])  # (1, 3): ids of a larger tokenizer
    step = oh.dynamic_cache_step(oh.shrunk_model(pair.target.config, layers=1), prefix)
    assert step().shape == (1, 1, vocab)


def test_measure_step_on_the_tiny_models(pair, encode):
    prefix = encode("The for statement is used to")
    t, d = oh.measure_steps({"target": pair.target, "draft": pair.draft}, prefix, rounds=2, n=3)
    assert (t.layers, d.layers) == (20, 2)
    assert 0 <= pair.target.get_memory_footprint() - t.weight_bytes < 1024  # all but a few buffers (rotary)
    assert t.ops > 5 * d.ops  # 20 layers against 2
    assert t.seconds > 0 and d.seconds > 0
    # an eager step on utils.fast's static cache runs the same layers: about the same operator count
    from utils.fast import Engine

    static = oh.engine_step(Engine(pair.target, 64, compile=False), prefix)
    assert abs(oh.count_ops(static) - t.ops) < t.ops // 10


def test_config_weight_bytes_match_the_h200_file_and_the_tiny_model(h200, pair):
    file_gb = {m["model"]: m["weights_gb"] for m in h200["models"] if m["dtype"] == "bf16"}
    for size in ("2b", "9b"):
        assert oh.config_weight_bytes(gemma2_config(size)) / 1e9 == pytest.approx(file_gb[size], rel=0.01)
    assert oh.config_weight_bytes(pair.target.config, bytes_per_param=4) == oh.weight_bytes(pair.target)


def test_h200_helpers(h200):
    p = h200["provenance"]
    assert {"gpu", "date", "weights", "torch", "transformers"} <= set(p)
    label = oh.gpu_label(h200)
    assert "H200" in label and "2026-11-24" in label and "random weights" in label
    assert oh.gpu_bandwidth(h200) == pytest.approx(4.8e12, rel=0.02)  # the H200's HBM3e
    steps = oh.gpu_steps(h200)
    assert set(steps) == {"2b", "9b"}
    for s in steps.values():
        assert s["bandwidth floor"] < s["HF static cache (compiled)"] < s["eager step"]


def test_c_follows_layer_counts_not_bytes_on_the_h200(h200):
    """The committed measurement the notebook's section 1 rests on: eager HF on an H200 is
    overhead-bound, so c(2b/27b) is near the ratio of layer counts, far from the ratio of bytes."""
    layers = {s: v["num_hidden_layers"] for s, v in GEMMA2_SHAPES.items()}
    weights = {s: oh.config_weight_bytes(gemma2_config(s)) for s in GEMMA2_SHAPES}
    rows = {r["pair"]: r for r in oh.cost_ratio_predictions(h200, layers, weights)}
    assert set(rows) == {"2b->9b", "2b->27b"}  # self-drafting rows are skipped
    r = rows["2b->27b"]
    assert abs(r["measured"] - r["layers"]) < 0.05 < 0.4 < r["measured"] - r["bytes"]
    assert r["source"] == "pair run" and math.isnan(r["separate"])  # the file has no 27b step of its own
    # 2b->9b: both models' steps were timed alone, and that ratio is used; the pair run's outlier is kept apart
    r = rows["2b->9b"]
    steps = oh.gpu_steps(h200)
    assert r["source"] == "separate model runs"
    assert r["measured"] == r["separate"] == pytest.approx(steps["2b"]["eager step"] / steps["9b"]["eager step"])
    assert r["pair_run"] > 1 > r["layers"] > r["measured"] > r["bytes"]


def test_pair_run_step_ms(h200):
    """The 27b target's eager ms per token, from the 2b->27b pair run's HF greedy; NaN for a model no
    pair targets; for 9b it agrees with the 9b's own step (both launch-bound, a few % apart)."""
    assert oh.pair_run_step_ms(h200, "27b") == pytest.approx(1e3 / 22.9)
    assert math.isnan(oh.pair_run_step_ms(h200, "2b"))
    assert oh.pair_run_step_ms(h200, "9b") == pytest.approx(oh.gpu_steps(h200)["9b"]["eager step"], rel=0.05)


def test_unit_strides_keeps_the_tokens_and_gives_the_last_token_unit_strides(encode):
    ids = encode("The while statement is used to")
    u = oh._unit_strides(ids)
    assert torch.equal(u, ids)
    assert u.clone()[:, -1:].stride() == (1, 1)
    assert ids[:, -1:].clone().stride() == (ids.shape[1], 1)  # what a plain clone keeps, and dynamo guards on
    assert oh._unit_strides(ids[:, -1:]).stride() == (1, 1)


def test_race_outputs_equal_hf_greedy(pair, prompts):
    """Two prompts of different lengths, 12 tokens: every method returns HF greedy's tokens, the
    compiled speculative loop syncs once per round, and the statistics are in range."""
    res = oh.race(pair, prompts["heldout"][:2], max_new_tokens=12, gamma=4)
    assert list(res) == list(oh.METHODS)
    assert all(r["equal_to_hf_greedy"] for r in res.values())
    assert all(r["tokens"] == 24 and r["tokens_per_s"] > 0 for r in res.values())
    spec = res["compiled speculative"]
    assert spec["host_syncs_per_round"] == 1
    assert 0 <= spec["alpha"] <= 1 and 1 <= spec["tau"] <= 5 and spec["c"] > 0 and spec["v"] > 0
    assert spec["alpha"] == res["eager speculative"]["alpha"]  # same rule, same tokens
    assert res["eager AR"]["compile_s"] == 0
    # the round's bookkeeping adds up to the measured speedups, with the compiled loops' eager prefill
    # apart: end to end, and for the decoding alone
    for kind in ("eager", "compiled"):
        s, ar = res[f"{kind} speculative"], res[f"{kind} AR"]
        decode = s["draft_calls_per_round"] * s["c"] + s["v"] + s["o"]
        assert (s["tau"] + s["prefill_plain"]) / (decode + s["prefill"]) == pytest.approx(
            s["tokens_per_s"] / ar["tokens_per_s"], rel=1e-9)
        assert s["tau"] / decode == pytest.approx(s["decode_tokens_per_s"] / ar["decode_tokens_per_s"], rel=1e-9)
        assert (s["prefill_s"] > 0 and ar["prefill_s"] > 0) if kind == "compiled" else s["prefill_s"] == ar["prefill_s"] == 0
        # what is left after the passes and the prefill is the loop's own work: positive, so nothing counted twice
        assert s["o"] > 0
    assert res["compiled AR"]["decode_tokens_per_s"] > res["compiled AR"]["tokens_per_s"]
    assert res["eager AR"]["decode_tokens_per_s"] == res["eager AR"]["tokens_per_s"]


def test_figures_draw(h200):
    import matplotlib.pyplot as plt

    rows = [oh.StepRow(f"{L} layers", L, 128, 1e-3 * (0.5 + 0.5 * L), 80 + 94 * L, 10**6 * L) for L in (1, 2, 5)]
    rows += [oh.StepRow(f"width {h}", 4, h, 2e-3, 459, 1000 * h * h) for h in (32, 128)]
    fit = oh.fit_line([1, 2, 5], [r.seconds for r in rows[:3]])
    oh.plot_layer_sweep(rows, fit, 1e10, 5e-6, "t", fit_range="1-5 layers")
    layers = {s: v["num_hidden_layers"] for s, v in GEMMA2_SHAPES.items()}
    weights = {s: oh.config_weight_bytes(gemma2_config(s)) for s in GEMMA2_SHAPES}
    oh.plot_gpu_overhead(oh.gpu_steps(h200), oh.cost_ratio_predictions(h200, layers, weights), oh.gpu_label(h200))
    ax = oh.plot_cache_positions(10, 2, 3, 20)
    assert len(ax.get_legend().get_texts()) == 4
    oh.plot_backend_steps({"a": 1.0, "b": 2.0}, "t")
    shapes = {"meta": {"gpu": "NVIDIA H100 80GB HBM3", "date": "2026-12-01"},
              "models": [{"size": "2b", "quantization": None, "hf_dynamic_tokens_per_s": 40.0, "compiled_tok_s": 300.0,
                          "hf_static_first_call_s": 70.0, "step_1_ms": 20.0}]}
    table = oh.compiled_shapes_rows(shapes)
    assert table == {"2b bf16": {"hf dynamic": 40.0, "compiled": 300.0}}
    assert oh.shapes_label(shapes) == "NVIDIA H100 80GB HBM3, 2026-12-01, random weights"
    oh.plot_grouped(table, "tok/s", "t", log=True)
    plt.close("all")


def test_sweep_verdicts_follow_the_numbers():
    """Notebook 07's sentences about its layer sweep come from the numbers: each branch, at its edges."""
    from utils.overhead import Fit, StepRow, sweep_verdicts

    t = StepRow("tiny target", 20, 256, 0.010, 1000, 8 * 2**20)  # 1000 ops
    d = StepRow("tiny draft", 2, 256, 0.002, 120, 2**20)
    small = Fit(0.001, 0.0004, 0.99)
    per_op = 8e-6  # target: 1000 x 8 us = 8 ms of its 10 ms (80%); draft: 0.96 ms of 2 ms (48%)
    lines = sweep_verdicts(t, d, small, Fit(0.0, 0.0004 * 1.10, 0.99), 1e10, per_op, 4.0, 1.2)
    assert len(lines) == 3
    assert "1.10x" in lines[0] and "describes the whole range" in lines[0]
    assert "4.0x the bytes cost 1.2x the time" in lines[1] and "operators set most of it" in lines[1]
    assert "explain 48% of the tiny draft's step and 80% of the tiny target's" in lines[2]
    assert "only the tiny target's step is mostly operator overhead" in lines[2]
    edge = sweep_verdicts(t, d, small, Fit(0.0, 0.0004 * 1.14, 0.99), 1e10, per_op, 4.0, 2.0)
    assert "just inside that band" in edge[0] and "bytes count" in edge[1]
    grows = sweep_verdicts(t, d, small, Fit(0.0, 0.0004 * 1.5, 0.99), 1e10, 1e-5, 4.0, 1.2)
    # the small models' line at 20 layers: 0.001 + 20 x 0.0004 = 9 ms, 10% under the target's 10 ms
    assert "grows with the model's size" in grows[0] and "-10% off the tiny target's step" in grows[0]
    assert "both steps are mostly operator overhead" in grows[2]  # 1000 x 10 us = 10 ms; 120 x 10 us = 1.2 ms of 2
    falls = sweep_verdicts(t, d, small, Fit(0.0, 0.0004 / 1.5, 0.99), 1e10, 1e-6, 4.0, 1.2)
    assert "falls with the model's size" in falls[0] and "neither step is mostly operator overhead" in falls[2]


def test_gpu_quantization_report_reads_the_committed_file():
    """Notebook 06's H200 lines: every number from the file, the 'lost most' row and NF4's extra
    milliseconds per step computed from it (checked here against the file independently)."""
    from utils.models import ROOT
    from utils.overhead import gpu_quantization_report, load_gpu_results

    h200 = load_gpu_results(ROOT / "data/results/gpu-h200-2026-11-24.json")
    text = gpu_quantization_report(h200)
    by = {(m["model"], m["dtype"]): m for m in h200["models"]}
    keys = {"dynamic": "hf_greedy_dynamic_tok_s", "static": "hf_greedy_static_tok_s"}
    ratios = {(s, c): by[(s, "nf4")][k] / by[(s, "bf16")][k] for s in ("2b", "9b") for c, k in keys.items()}
    worst = min(ratios, key=ratios.get)
    assert f"it lost most at gemma-2-{worst[0]} with the {worst[1]} cache" in text
    assert f"NF4 slower than bf16 in {sum(r < 1 for r in ratios.values())} of 4 rows" in text
    assert h200["provenance"]["gpu"] in text and h200["pairs_note"] in text
    assert "double quant" in h200["provenance"]["nf4"] and h200["provenance"]["nf4"] in text
    ms = {c: 1e3 / by[("9b", "nf4")][k] - 1e3 / by[("9b", "bf16")][k] for c, k in keys.items()}
    assert (f"gemma-2-9b {ms['dynamic']:+.1f} ms with the dynamic cache, "
            f"{ms['static']:+.1f} ms with the static one") in text
    s9 = by[("9b", "bf16")]
    assert f"static cache {s9['hf_greedy_static_tok_s']:.1f} -> {by[('9b', 'nf4')]['hf_greedy_static_tok_s']:.1f} tok/s" in text
