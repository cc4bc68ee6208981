"""utils.bench and utils.datacamp on the tiny pair: what they record, and that it is consistent."""

import json
import os

import pytest
import torch

from utils import bench, fast, datacamp
from utils.models import ROOT
from utils.theory import expected_speedup


@pytest.fixture(scope="module")
def result(pair, prompts):
    return bench.benchmark(pair, prompts["workshop"][:2], max_new_tokens=12, repeats=1, progress=False)


def test_benchmark_rows_and_summary(result):
    rows, (s,) = result["rows"], result["summary"]
    assert {r["method"] for r in rows} == set(bench.METHODS) and len(rows) == 2 * len(bench.METHODS)
    for r in rows:
        assert r["new_tokens"] == 12 and r["seconds"] > 0
        assert 0 < r["forward_s"] < r["seconds"]  # hooks saw the forward passes, and something else ran too
        assert r["same_as_hf_greedy"] is True  # greedy: every method returns HF greedy's tokens
    plain = [r for r in rows if r["method"] in ("hf", "ours_ar")]
    assert all(r["forward_calls"] == 12 for r in plain)  # one forward pass per token, the first with the prompt
    assert s["all_equal_hf_greedy"] is True
    assert 0 < s["alpha"] <= s["alpha_checked"] <= 1
    assert 0 < s["c"] < 1
    assert s["ceiling_vs_hf_assisted"] == pytest.approx(1 / s["forward_share"]["hf_assisted"]) and s["ceiling_vs_hf_assisted"] > 1
    v = result["meta"]["verify_ratio"]["4"]  # target pass over 5 tokens / over 1 token
    assert v > 0 and s["predicted_speedup_with_v"] == pytest.approx(s["predicted_speedup"] * (4 * s["c"] + 1) / (4 * s["c"] + v))
    # Thm 3.8 fed alpha per checked token and c (test_theory.py checks the formula against a simulated clock)
    assert s["predicted_speedup"] == pytest.approx(expected_speedup(s["alpha_checked"], 4, s["c"]))
    assert s["cost_model_error"] == pytest.approx(s["predicted_speedup"] / s["measured_speedup_vs_ours_ar"] - 1)


def test_forward_clocks_per_model_and_in_loop_costs(result):
    rows, (s,) = result["rows"], result["summary"]
    for r in rows:
        assert r["forward_s"] == pytest.approx(r["target_forward_s"] + r["draft_forward_s"])
        assert r["forward_calls"] == r["target_forward_calls"] + r["draft_forward_calls"]
        if r["method"] in ("hf", "ours_ar"):
            assert r["draft_forward_calls"] == 0 and r["draft_forward_s"] == 0  # no draft: its clock stays at zero
    spec = [r for r in rows if r["method"] == "ours_speculative"]
    # the draft drafts up to gamma tokens per target pass; the target verifies once per round
    assert all(r["target_forward_calls"] < r["draft_forward_calls"] <= 4 * r["target_forward_calls"] for r in spec)
    ar = [r for r in rows if r["method"] == "ours_ar"]
    step = sum(r["target_forward_s"] for r in ar) / sum(r["target_forward_calls"] for r in ar)
    c = sum(r["draft_forward_s"] for r in spec) / sum(r["draft_forward_calls"] for r in spec) / step
    assert s["c_in_loop"] == pytest.approx(c) and 0 < c < 1  # a 2-layer draft costs less than the 20-layer target
    assert s["v_in_loop"] > 0.5  # one pass over up to 5 tokens costs at least about one step
    # the summary feeds the cost model (tested against a simulated clock in test_theory.py) with
    # alpha per checked token and the in-loop c and v
    assert s["predicted_speedup_in_loop"] == pytest.approx(expected_speedup(s["alpha_checked"], 4, c, s["v_in_loop"]))
    assert s["cost_model_error_in_loop"] == pytest.approx(s["predicted_speedup_in_loop"] / s["measured_speedup_vs_ours_ar"] - 1)


def test_compiled_methods_in_the_summary(result):
    """The compiled rows: same tokens as HF greedy, same acceptance as the eager loop (same rule, same
    tokens at T = 0), one host sync per round, ratios consistent with the tokens/s, compile time kept
    apart (paid in the warm-up run, not in the timed ones)."""
    rows, (s,) = result["rows"], result["summary"]
    cs, tps = s["compiled"], s["tokens_per_s"]
    comp = [r for r in rows if r["method"] in bench.COMPILED]
    assert comp and all(r["same_as_hf_greedy"] and r["compile_s"] == 0 for r in comp)
    assert set(cs["compile_s"]) == set(bench.COMPILED) and all(v >= 0 for v in cs["compile_s"].values())
    assert cs["alpha_checked"] == pytest.approx(s["alpha_checked"]) and cs["alpha"] == pytest.approx(s["alpha"])
    assert cs["host_syncs_per_round"] == 1
    spec = "ours_speculative_compiled"
    for base in ("hf", "hf_static", "hf_assisted", "ours_ar", "ours_speculative", "ours_ar_compiled"):
        assert cs[f"{spec}_vs_{base}"] == pytest.approx(tps[spec] / tps[base])
    assert 0 < cs["c_in_loop"] < 1 and cs["v_in_loop"] > 0.5 and 0 < cs["loop_share"] <= 1
    # the eager prefill before the compiled loops' first step: outside the forward passes (each run's
    # passes and prefill fit in its time), and left out of both for the decoding-alone ratio, which the
    # prediction is compared with
    assert all(r["prefill_s"] > 0 for r in comp)
    assert all(r["forward_s"] + r["prefill_s"] < r["seconds"] for r in comp)
    assert 0 < cs["prefill_share"] < 1 - cs["loop_share"]
    decode = {m: sum(r["new_tokens"] for r in rows if r["method"] == m)
              / sum(r["seconds"] - r["prefill_s"] for r in rows if r["method"] == m) for m in bench.COMPILED}
    assert cs["measured_decode_speedup_vs_ours_ar_compiled"] == pytest.approx(decode[spec] / decode["ours_ar_compiled"])
    assert cs["cost_model_error_in_loop"] == pytest.approx(
        cs["predicted_speedup_in_loop"] / cs["measured_decode_speedup_vs_ours_ar_compiled"] - 1)
    assert cs["predicted_speedup_in_loop"] == pytest.approx(
        expected_speedup(cs["alpha_checked"], 4, cs["c_in_loop"], cs["v_in_loop"]))
    meta = result["meta"]  # how the engine compiled, and both matmul variants timed
    assert meta["compiled_engine"]["small_matmuls_as_loops_up_to_rows"] == fast.SMALL_MM_ROWS
    assert set(meta["compiled_matmuls"]) == {"draft_width_1", "target_width_1", "target_width_5"}
    assert all(v["blas_calls_ms"] > 0 and v["loops_ms"] > 0 for v in meta["compiled_matmuls"].values())


def test_memory_is_recorded(result, pair):
    m = result["meta"]
    w = m["weights_bytes"]
    assert w["target"] == pair.target.get_memory_footprint() > w["draft"] > 0  # no 4-bit weights: no scales to add  # 20.8 MiB vs 7.2 MiB in fp32
    if os.name == "nt":  # Windows: the OS does not say
        assert m["process_peak_rss_bytes"] is None
    else:
        assert m["process_peak_rss_bytes"] > w["target"] + w["draft"]  # the process holds both models and more
    assert all(r["peak_bytes"] is None for r in result["rows"])  # CPU: no per-run counter, none invented
    assert "peak_bytes" not in result["summary"][0]


def test_benchmark_saves_json_and_csv(result, tmp_path):
    path = bench.save(result, tmp_path)
    assert path.name == "bench-tiny-cpu.json"
    assert json.loads(path.read_text())["meta"]["torch_threads"] >= 1
    lines = (tmp_path / "bench-tiny-cpu.csv").read_text().splitlines()
    assert lines[0].startswith("prompt,gamma,temperature,method") and len(lines) == 1 + len(result["rows"])


def test_datacamp_benchmark(pair, tmp_path):
    r = datacamp.run(pair, max_new_tokens=10, repeats=1, n_prompts=2, progress=False)
    assert len(r["rows"]) == 2 and r["meta"]["gamma"] == 4
    for row in r["rows"]:
        assert set(row["seconds"]) == {"normal", "draft+score", "HF assisted", "ours"}
        assert all(v > 0 for v in row["seconds"].values())
        # the two speculative methods return the target's greedy text; normal is the reference
        assert row["same_as_target"]["HF assisted"] and row["same_as_target"]["ours"] and row["same_as_target"]["normal"]
    text = datacamp.table(r)
    assert "speedup over normal" in text and "returns the target text" in text
    path = datacamp.save(r, tmp_path)
    assert path.name == "datacamp-tiny-cpu.json" and json.loads(path.read_text())["rows"][0]["new_tokens"] == 10


@pytest.mark.parametrize("flags, says", [
    (["--repeats", "0"], "--repeats must be >= 1"),
    (["--n-prompts", "0"], "--n-prompts must be >= 1"),
    (["--n-prompts", "-19"], "--n-prompts must be >= 1"),
    (["--n-prompts", "99"], "more than the"),
    (["--gammas", "-1"], "--gammas must all be >= 1"),
    (["--max-new-tokens", "0"], "--max-new-tokens must be >= 1"),
    (["--temperatures", "inf"], "--temperatures must be finite"),
    (["--temperatures", "-1"], "--temperatures must be finite and >= 0"),
    (["--prompts", "_about"], "--prompts must be one of"),
    (["--pair", "gemma3"], "--pair must be one of"),
    (["--tag", "a/b"], "--tag must be"),
    (["--out", "/proc/specdec"], "cannot write to --out"),
])
def test_bench_cli_checks_flags_before_loading(flags, says, tmp_path):
    """Each bad flag: exit 2 within seconds, a message naming the flag, no traceback, nothing written."""
    import subprocess
    import sys
    import time

    out = [] if "--out" in flags else ["--out", str(tmp_path)]
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "utils.bench", *flags, *out], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 2, r.stderr
    assert says in r.stderr and "Traceback" not in r.stderr
    assert time.perf_counter() - t0 < 60  # importing torch and a tokenizer (check_context) is most of it
    assert not list(tmp_path.iterdir())


def test_bench_cli_refuses_to_overwrite(tmp_path):
    import subprocess
    import sys

    (tmp_path / "bench-tiny-cpu.json").write_text("{}")
    r = subprocess.run([sys.executable, "-m", "utils.bench", "--out", str(tmp_path), "--device", "cpu"],
                       capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 2 and "--overwrite" in r.stderr
    assert (tmp_path / "bench-tiny-cpu.json").read_text() == "{}"


@pytest.mark.parametrize("argv, says", [
    (["utils.datacamp", "--gamma", "-3"], "--gamma must be >= 1"),
    (["utils.datacamp", "--max-new-tokens", "0"], "--max-new-tokens must be >= 1"),
    (["utils.datacamp", "--n-prompts", "9"], "5 prompts"),
    (["utils.datacamp", "--pair", "nope"], "--pair must be one of"),
])
def test_datacamp_cli_checks_flags_before_loading(argv, says, tmp_path):
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-m", *argv, "--out", str(tmp_path)], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 2 and says in r.stderr and "Traceback" not in r.stderr
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("module", ["utils.bench", "utils.datacamp", "utils.card", "utils.shapes"])
def test_commands_honour_help_and_write_nothing(module):
    """--help prints usage and exits 0 without measuring anything or touching a tracked file."""
    import subprocess
    import sys

    before = subprocess.run(["git", "status", "--porcelain"], capture_output=True, text=True, cwd=ROOT).stdout
    r = subprocess.run([sys.executable, "-m", module, "--help"], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert r.returncode == 0 and "usage" in r.stdout
    assert subprocess.run(["git", "status", "--porcelain"], capture_output=True, text=True, cwd=ROOT).stdout == before


def test_out_of_sample_cost_model_check_on_the_committed_runs():
    """c and v from the workshop sweep (one process, 2026-11-24) predict the held-out run (another
    process, other prompts) with the held-out alpha; the error is reported beside the in-sample one."""
    calib = json.loads((ROOT / "data/results/bench-tiny-cpu.json").read_text())
    held = json.loads((ROOT / "data/results/bench-tiny-cpu-heldout.json").read_text())
    rows = bench.out_of_sample(calib, held)
    assert {(r["gamma"], r["temperature"]) for r in rows} == {(4, 0.0), (4, 1.0)}
    for r in rows:
        assert r["calibration"] == "workshop" and r["evaluation"] == "heldout"
        assert r["c"] != pytest.approx(next(s["c_in_loop"] for s in held["summary"] if s["temperature"] == r["temperature"]))
        assert r["predicted"] == pytest.approx(expected_speedup(r["alpha_checked"], 4, r["c"], r["v"]))
        assert r["error"] == pytest.approx(r["predicted"] / r["measured"] - 1)
        assert abs(r["error"]) < 0.5 and r["in_sample_error"] is not None  # a sanity bound, not a goal
        own = next(s for s in held["summary"] if s["temperature"] == r["temperature"] and s["gamma"] == 4)
        assert (r["own_c"], r["own_v"]) == (own["c_in_loop"], own["v_in_loop"])  # the in-sample c, v
        assert r["in_sample_error"] == pytest.approx(
            expected_speedup(r["alpha_checked"], 4, r["own_c"], r["own_v"]) / r["measured"] - 1, abs=1e-3)


def test_the_committed_cpu_benchmark_meets_the_speed_goals():
    """The README reports issue #12's CPU goals as met from bench-tiny-cpu-heldout.json; that claim
    is checked here against the same floors (utils.bench.CPU_GOALS), so a committed run that misses
    one fails the suite instead of printing 'not met' in a table."""
    held = json.loads((ROOT / "data/results/bench-tiny-cpu-heldout.json").read_text())
    checks = bench.cpu_goal_checks(held)
    assert {(c["temperature"], c["baseline"]) for c in checks} == {(0.0, "hf_assisted"), (0.0, "hf"), (1.0, "hf_assisted")}
    assert all(c["gamma"] == 4 for c in checks)
    missed = [c for c in checks if not c["met"]]
    assert not missed, missed
    low = dict(held, summary=[dict(s, compiled=dict(s["compiled"], ours_speculative_compiled_vs_hf=2.9))
                              for s in held["summary"]])  # one ratio under its 3x floor
    assert [c["baseline"] for c in bench.cpu_goal_checks(low) if not c["met"]] == ["hf"]


@pytest.mark.slow
def test_compiled_speculative_beats_hf_greedy_live(pair, prompts):
    """The collection's promise, measured now on this machine (CPU CI, shared and noisy): compiled
    speculative decoding, greedy, gamma 4, against HF greedy on a held-out prompt, the two taking
    turns. The committed run measured 4.8x; a floor of 1.5x leaves room for a slow or busy machine
    and still fails if the compiled path regresses to eager speed (about 1x)."""
    ids = pair.tokenizer(prompts["heldout"][0], return_tensors="pt").input_ids
    runs = bench.interleaved(["hf", "ours_speculative_compiled"], pair, ids, 48, 4, repeats=3)
    hf, ours = runs["hf"], runs["ours_speculative_compiled"]
    assert ours["new_ids"] == hf["new_ids"] and len(hf["new_ids"]) >= 16  # the same tokens (greedy), enough of them
    ratio = (ours["new_tokens"] / ours["seconds"]) / (hf["new_tokens"] / hf["seconds"])
    assert ratio > 1.5, f"compiled speculative / HF greedy = {ratio:.2f}x (committed run: 4.8x)"


def test_noise_verdict_counts_a_gain_only_when_every_repeat_clears_the_spread():
    """The one rule notebooks 08-11 and the README's tables use to call a method faster or slower."""
    from utils.bench import noise_verdict

    assert noise_verdict([1.20, 1.31, 1.25], 0.10) == "faster"
    assert noise_verdict([1.05, 1.31, 1.25], 0.10) == "within noise"  # one repeat inside the spread
    assert noise_verdict([0.80, 0.85], 0.10) == "slower"
    assert noise_verdict([0.95, 0.85], 0.10) == "within noise"
    assert noise_verdict([1.01, 1.02], 0.0) == "faster"  # no spread: every repeat above 1 is enough


def test_moved_judges_at_the_printed_digits():
    from utils.bench import moved

    assert moved(0.2241, 0.2243, 3) == "kept"  # printed 0.224 -> 0.224
    assert moved(0.224, 0.226, 3) == "raised" and moved(1.26, 1.14, 2) == "lowered"
    assert moved(0.206, 0.212, 3, rel_tol=0.05) == "barely changed"  # a 3% change in a noisy timing
    assert moved(0.206, 0.240, 3, rel_tol=0.05) == "raised" and moved(0.2241, 0.2243, 3, rel_tol=0.05) == "kept"


def test_how_much_faster_says_slower_when_it_is():
    """Notebook 02 prints its latency ratio in words that stay true where the order flips."""
    from utils.bench import how_much_faster

    assert how_much_faster(2.0, 1.0) == "2.0x faster" and how_much_faster(1.0, 1.0) == "1.0x faster"
    assert how_much_faster(1.0, 1.25) == "1.2x slower"  # 1.25: rounds to even
    assert how_much_faster(0.5, 1.5) == "3.0x slower"


def test_compiled_rows_say_when_a_step_fell_back(monkeypatch):
    """A compiled method whose engines could not compile a step as one graph (utils.fast.compile_fallback)
    says so in every row it times, not only in the run that first met it; the plain compiled decoder
    reports its target's engines only."""
    from types import SimpleNamespace

    from utils import bench

    monkeypatch.setattr(bench, "_run_method", lambda method, *a: dict(method=method, seconds=1.0))
    target, draft = SimpleNamespace(), SimpleNamespace()
    draft._specdec_engines = {"k": SimpleNamespace(compile_fallbacks=["draft step, width 1: Unsupported: ..."])}
    pair = SimpleNamespace(target=target, draft=draft, device="cpu")
    spec = bench.run_method("ours_speculative_compiled", pair, None, 8, 4)
    assert spec["compile_fallbacks"] == ["draft step, width 1: Unsupported: ..."]
    assert "compile_fallbacks" not in bench.run_method("ours_ar_compiled", pair, None, 8, 4)
    draft._specdec_engines["k"].compile_fallbacks = []
    assert "compile_fallbacks" not in bench.run_method("ours_speculative_compiled", pair, None, 8, 4)


def test_timed_runs_pause_the_garbage_collector():
    """A full collection (tenths of a second once torch.compile has run) would land inside one timed run
    and not the others: take_turns runs each timed run with the collector off, as timeit does, and puts it back
    as it was, also after an error."""
    import gc

    from utils.bench import paused_gc, take_turns

    seen = []
    runs, first = take_turns(lambda n: seen.append(gc.isenabled()) or n, ["a", "b"], repeats=2, warmup=1)
    # warm-ups (which may compile: much garbage) with the collector on, timed runs with it off
    assert seen == [True, True] + [False] * 4 and runs == {"a": ["a", "a"], "b": ["b", "b"]} and gc.isenabled()
    with pytest.raises(ZeroDivisionError), paused_gc():
        1 / 0
    assert gc.isenabled()
    gc.disable()
    try:
        with paused_gc():
            pass
        assert not gc.isenabled()  # it was off before: left off
    finally:
        gc.enable()


def test_sampled_runs_are_seeded_and_leave_the_callers_random_state_alone(pair, encode):
    """HF generate samples from torch's global generator, so run_method seeds it; it restores the caller's
    state afterwards (a notebook's own torch.rand after a benchmark is not decided by the benchmark's seed)."""
    ids = encode("Once upon a time")
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    a = bench.run_method("hf", pair, ids, 12, 4, temperature=1.0, seed=3)
    assert torch.equal(torch.rand(3), expected)
    b = bench.run_method("hf", pair, ids, 12, 4, temperature=1.0, seed=3)
    c = [bench.run_method("hf", pair, ids, 12, 4, temperature=1.0, seed=s)["new_ids"] for s in range(4, 8)]
    assert a["new_ids"] == b["new_ids"] and any(x != a["new_ids"] for x in c)
