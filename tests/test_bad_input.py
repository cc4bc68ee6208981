"""Issue 14: bad or edge input meets a clear error from the project's own checks (ValueError or
TypeError with a message that says what to do), or a warning where Hugging Face warns; nothing runs
on silently with wrong output. Each command's own flag checks live beside its tests (test_bench.py,
test_shapes.py, ...); what every command line shares (the device, the pair, load and memory errors as
one message, never writing over the shipped files) and run.py's and scripts/' cases are at the end
of this file."""

import json
import math
import warnings

import numpy as np
import pytest
import torch

from utils import models, plots, theory
from utils.decoding import autoregressive_generate
from utils.playground import Playground
from utils.results import to_json
from utils.sampling import check_sampling_args, eos_set, probs_from_logits
from utils.speculative import check_length, one_round, speculative_generate, verify_step

# ---------------------------------------------------------------------------------------------
# Sampling arguments: every entry point shares check_sampling_args
# ---------------------------------------------------------------------------------------------

BAD_SAMPLING = [
    (dict(temperature=-1), ValueError, "temperature must be a finite number >= 0"),
    (dict(temperature=float("inf")), ValueError, "finite"),
    (dict(temperature=float("nan")), ValueError, "finite"),
    (dict(temperature="1"), TypeError, "temperature must be a number"),
    (dict(temperature=None), TypeError, "temperature must be a number"),
    (dict(temperature=True), TypeError, "temperature must be a number"),
    (dict(top_k=0), ValueError, "top_k must be a positive integer"),
    (dict(top_k=True), ValueError, "top_k must be a positive integer"),
    (dict(top_k=2.5), ValueError, "top_k must be a positive integer"),
    (dict(top_p=0), ValueError, "top_p must be in (0, 1]"),
    (dict(top_p=1.5), ValueError, "top_p must be in (0, 1]"),
    (dict(top_p="0.9"), ValueError, "top_p must be in (0, 1]"),
]


@pytest.mark.parametrize("kw, exc, says", BAD_SAMPLING)
def test_probs_from_logits_checks_its_arguments(kw, exc, says):
    args = dict(temperature=1.0, top_k=None, top_p=None) | kw
    with pytest.raises(exc, match=says.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        probs_from_logits(torch.randn(5), **args)


def test_probs_from_logits_negative_temperature_is_refused_not_inverted():
    with pytest.raises(ValueError):
        probs_from_logits(torch.tensor([0.0, 1.0, 2.0]), temperature=-1.0)


def test_probs_from_logits_all_minus_inf_row():
    logits = torch.tensor([[0.0, 1.0], [float("-inf"), float("-inf")]])
    with pytest.raises(ValueError, match="every logit of a row is -inf"):
        probs_from_logits(logits)
    with pytest.raises(TypeError, match="torch.Tensor"):
        probs_from_logits([0.0, 1.0])


def test_numpy_numbers_are_accepted():
    check_sampling_args(np.float32(0.7), np.int64(5), np.float64(0.9))
    p = probs_from_logits(torch.randn(10), np.float64(0.7), np.int64(3), None)
    assert (p > 0).sum() == 3 and torch.isclose(p.sum(), torch.tensor(1.0))


@pytest.mark.parametrize("eos, want", [
    (None, set()), (1, {1}), (np.int64(1), {1}), ([1, 2], {1, 2}), (torch.tensor(1), {1}), (torch.tensor([1, 2]), {1, 2}),
])
def test_eos_forms_hugging_face_accepts(eos, want):
    assert eos_set(eos) == want


@pytest.mark.parametrize("eos", ["</s>", ["</s>"], 1.0, torch.tensor([[1]]), torch.tensor([1.0]), True])
def test_eos_text_or_float_is_refused(eos):
    with pytest.raises(TypeError, match="eos_token_id"):
        eos_set(eos)


# ---------------------------------------------------------------------------------------------
# The generation API
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ids(encode):
    return encode("The if statement")  # (1, T)


BAD_GENERATE = [
    (dict(gamma=0), ValueError, "gamma must be an integer >= 1"),
    (dict(gamma=True), TypeError, "gamma must be an integer"),
    (dict(gamma=2.0), TypeError, "gamma must be an integer"),
    (dict(gamma="4"), TypeError, "gamma must be an integer"),
    (dict(max_new_tokens=-1), ValueError, "max_new_tokens must be an integer >= 0"),
    (dict(max_new_tokens=4.0), TypeError, "max_new_tokens must be an integer"),
    (dict(temperature=-1), ValueError, "temperature"),
    (dict(temperature="hot"), TypeError, "temperature"),
    (dict(temperature=float("inf")), ValueError, "finite"),
    (dict(top_k=True), ValueError, "top_k"),
    (dict(top_p=0.0), ValueError, "top_p"),
    (dict(eos_token_id="</s>"), TypeError, "not the token's text"),
    (dict(backend="fast"), ValueError, "backend must be"),
    (dict(temperature=1e-40), ValueError, "too small to sample with"),  # logits / T overflowed to NaN probabilities
    (dict(temperature=1.0, generator=42), TypeError, "torch.Generator"),
]


@pytest.mark.parametrize("kw, exc, says", BAD_GENERATE)
@pytest.mark.parametrize("backend", ["eager", "compiled"])
def test_speculative_generate_refuses(pair, ids, kw, exc, says, backend):
    args = dict(max_new_tokens=4, backend=backend) | kw
    with pytest.raises(exc, match=says):
        speculative_generate(pair.target, pair.draft, ids, **args)


@pytest.mark.parametrize("kw, exc, says", [c for c in BAD_GENERATE if "gamma" not in c[0]])
def test_autoregressive_generate_refuses(pair, ids, kw, exc, says):
    args = dict(max_new_tokens=4) | kw
    n = args.pop("max_new_tokens")
    with pytest.raises(exc, match=says):
        autoregressive_generate(pair.target, ids, n, **args)


@pytest.mark.parametrize("kw, exc, says", [
    (dict(gamma=0), ValueError, "gamma must be an integer >= 1"),
    (dict(temperature=-1), ValueError, "temperature"),
    (dict(top_p=2), ValueError, "top_p"),
])
def test_one_round_checks_like_the_loop(pair, ids, kw, exc, says):
    with pytest.raises(exc, match=says):
        one_round(pair.target, pair.draft, ids, **kw)


def test_models_and_ids_are_checked(pair, ids):
    for draft in (None, "google/gemma-2-2b", pair.tokenizer):
        with pytest.raises(TypeError, match="draft must be a loaded Hugging Face causal language model"):
            speculative_generate(pair.target, draft, ids, max_new_tokens=4)
    with pytest.raises(TypeError, match="model must be a loaded"):
        autoregressive_generate(None, ids, 4)
    V = pair.target.config.vocab_size
    for bad in (ids + V, ids - 1000):
        with pytest.raises(ValueError, match=f"outside the model's vocabulary \\[0, {V}\\)"):
            speculative_generate(pair.target, pair.draft, bad, max_new_tokens=4)
        with pytest.raises(ValueError, match="outside the model's vocabulary"):
            autoregressive_generate(pair.target, bad, 4)
    for bad, says in ((ids[0], "2-D integer tensor"), (ids.float(), "2-D integer tensor"), (torch.zeros(0, 3, dtype=torch.long), "batch size"),
                      (ids[:, :0], "empty"), ([[2, 3]], "2-D integer tensor")):
        with pytest.raises(ValueError, match=says):
            speculative_generate(pair.target, pair.draft, bad, max_new_tokens=4)


def test_ids_of_any_integer_dtype_run_and_complex_ones_are_refused(pair, ids):
    """int32 ids (NumPy on Windows) run like int64 on both backends; the compiled engine used to fail on
    them, and then on every later call in the process, with a dynamo guard error."""
    ref = speculative_generate(pair.target, pair.draft, ids, max_new_tokens=5, gamma=2)
    for backend in ("eager", "compiled"):
        out = speculative_generate(pair.target, pair.draft, ids.int(), max_new_tokens=5, gamma=2, backend=backend)
        assert torch.equal(out.sequences, ref.sequences) and out.sequences.dtype == torch.long
    again = speculative_generate(pair.target, pair.draft, ids, max_new_tokens=5, gamma=2, backend="compiled")
    assert torch.equal(again.sequences, ref.sequences)
    assert torch.equal(autoregressive_generate(pair.target, ids.int(), 4).sequences, autoregressive_generate(pair.target, ids, 4).sequences)
    with pytest.raises(ValueError, match="2-D integer tensor"):
        speculative_generate(pair.target, pair.draft, ids.to(torch.complex64), max_new_tokens=4)


def test_a_huge_gamma_allocates_no_more_than_max_new_tokens_needs(pair, ids):
    """A round drafts fewer than max_new_tokens tokens, so gamma = 10**9 sizes no cache by gamma (it
    used to ask for 256 GB); the compiled verify pass really is gamma + 1 wide, and its error says so."""
    from utils.lookup import prompt_lookup_generate

    ref = speculative_generate(pair.target, pair.draft, ids, max_new_tokens=4, gamma=4)
    assert torch.equal(speculative_generate(pair.target, pair.draft, ids, max_new_tokens=4, gamma=10**9).sequences, ref.sequences)
    assert prompt_lookup_generate(pair.target, ids, max_new_tokens=4, gamma=10**9).sequences.shape[1] == ids.shape[1] + 4
    with pytest.raises(ValueError, match=r"gamma \+ 1 .* lower gamma"):
        speculative_generate(pair.target, pair.draft, ids, max_new_tokens=4, gamma=10**6, backend="compiled")


def test_numpy_and_tensor_arguments_work(pair, ids):
    """What HF accepts runs here too: NumPy integers for gamma/top_k/max_new_tokens, eos as a tensor."""
    ref = speculative_generate(pair.target, pair.draft, ids, max_new_tokens=6, gamma=3, eos_token_id=1)
    out = speculative_generate(pair.target, pair.draft, ids, max_new_tokens=np.int64(6), gamma=np.int32(3),
                               eos_token_id=torch.tensor([1]))
    assert torch.equal(out.sequences, ref.sequences)
    gen = torch.Generator().manual_seed(0)
    out = speculative_generate(pair.target, pair.draft, ids, max_new_tokens=6, gamma=np.int64(2), temperature=np.float32(0.8),
                               top_k=np.int64(5), generator=gen)
    assert out.new_tokens == 6
    ar = autoregressive_generate(pair.target, ids, np.int64(5), eos_token_id=np.int64(1))
    assert ar.sequences.shape[1] <= ids.shape[1] + 5


def test_past_the_context_warns_as_hf_does_and_allocates_only_the_context(pair):
    limit = pair.target.config.max_position_embeddings
    with pytest.warns(UserWarning, match="more than the model's context"):
        assert check_length(pair.target, 10, 10**12) == limit  # not 10**12 positions (384 GB)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert check_length(pair.target, 10, 100) == 110


def test_a_draft_with_a_shorter_context_warns_too(pair, ids):
    import copy

    draft = copy.deepcopy(pair.draft)
    draft.config.max_position_embeddings = ids.shape[1] + 2
    with pytest.warns(UserWarning, match="more than the draft's context .* the output stays exact"):
        out = speculative_generate(pair.target, draft, ids, max_new_tokens=6, gamma=2)
    assert torch.equal(out.sequences, speculative_generate(pair.target, pair.draft, ids, max_new_tokens=6, gamma=2).sequences)


def test_huge_max_new_tokens_warns_before_any_work(pair, ids):
    """The warning comes first (turned into an error here, so nothing runs after it)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(UserWarning, match="max_new_tokens"):
            speculative_generate(pair.target, pair.draft, ids, max_new_tokens=10**12)
        with pytest.raises(UserWarning, match="max_new_tokens"):
            autoregressive_generate(pair.target, ids, 10**12)


def test_compiled_backend_refuses_past_the_context(pair, ids):
    with pytest.raises(ValueError, match="max_position_embeddings"):
        speculative_generate(pair.target, pair.draft, ids, max_new_tokens=10**12, backend="compiled")


# ---------------------------------------------------------------------------------------------
# verify_step: the function learners call in exercises
# ---------------------------------------------------------------------------------------------


def _pq(k=3, V=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    p = torch.rand(k + 1, V, generator=g).softmax(-1)
    q = torch.rand(k, V, generator=g).softmax(-1)
    d = torch.multinomial(q, 1, generator=g)[:, 0]
    return p, q, d


def test_verify_step_refuses_logits():
    p, q, d = _pq()
    with pytest.raises(ValueError, match="logits"):
        verify_step(p.log(), q, d)  # log-probabilities: negative
    with pytest.raises(ValueError, match="sum to 1"):
        verify_step(p * 3, q, d)  # positive but not normalised
    with pytest.raises(ValueError, match="NaN"):
        verify_step(p, q.masked_fill(q > 0.2, float("nan")), d)


def test_verify_step_refuses_swapped_p_and_q():
    p, q, d = _pq()
    with pytest.raises(ValueError, match="Did you swap p and q"):
        verify_step(q, p, d)


@pytest.mark.parametrize("mutate, says", [
    (lambda p, q, d: (p[:-1], q, d), r"p must be \(k \+ 1, V\)"),
    (lambda p, q, d: (p, q[:, :-1], d), r"p must be \(k \+ 1, V\)"),
    (lambda p, q, d: (p, q, d.float()), "1-D tensor of k token ids"),
    (lambda p, q, d: (p, q, d.view(1, -1)), "1-D tensor of k token ids"),
    (lambda p, q, d: (p, q, d + 100), r"ids in \[0, 6\)"),
    (lambda p, q, d: (p, q, d.tolist()), "torch.Tensor"),
])
def test_verify_step_checks_shapes(mutate, says):
    with pytest.raises((ValueError, TypeError), match=says):
        verify_step(*mutate(*_pq()))


def test_verify_step_refuses_a_token_q_could_not_have_sampled():
    p, q, d = _pq()
    q = q.clone()
    q[0, d[0]] = 0
    q[0] /= q[0].sum()
    with pytest.raises(ValueError, match="probability 0 to a drafted token"):
        verify_step(p, q, d)


def test_verify_step_acceptance_probabilities_are_probabilities():
    for seed in range(20):
        v = verify_step(*_pq(seed=seed), generator=torch.Generator().manual_seed(seed))
        assert all(0 <= a <= 1 for a in v.accept_prob) and not any(math.isnan(a) for a in v.accept_prob)


# ---------------------------------------------------------------------------------------------
# Loading, prompts, theory, plots, the playground, result files
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("device, says", [
    ("meta", "hold no weights"), ("gpu", "use 'cuda'"), ("tpu", "not a PyTorch device"), (3.5, "not a PyTorch device"),
    pytest.param("cuda", "PyTorch sees no CUDA GPU", marks=pytest.mark.skipif(torch.cuda.is_available(), reason="has a GPU")),
])
def test_load_pair_device_errors(device, says):
    with pytest.raises(ValueError, match=says):
        models.load_pair("tiny", device=device)


def test_a_gpu_index_this_machine_lacks_is_refused(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(models.DeviceError, match="has 1 CUDA GPU"):
        models.resolve_device("cuda:3")
    assert models.resolve_device("cuda:0") == torch.device("cuda:0")


@pytest.mark.parametrize("kw, says", [
    (dict(dtype="half-ish"), "floating-point torch.dtype"),
    (dict(dtype=torch.int8), "quantization='nf4'"),
    (dict(double_quant=True), "applies to 4-bit weights"),
])
def test_load_pair_dtype_and_double_quant(kw, says):
    with pytest.raises(ValueError, match=says):
        models.load_pair("tiny", device="cpu", **kw)


def test_load_prompts_unknown_set():
    with pytest.raises(ValueError, match=r"choose one of \['datacamp', 'heldout', 'workshop'\]"):
        models.load_prompts("nonexistent")
    with pytest.raises(ValueError):
        models.load_prompts("_about")  # the file's own notes are not a prompt set


def test_summary_counts_4bit_parameters_like_the_original(pair):
    pytest.importorskip("bitsandbytes")
    q = models.load_pair("tiny", device="cpu", quantization="nf4")
    assert models.parameter_count(q.target) == models.parameter_count(pair.target) == sum(
        p.numel() for p in pair.target.parameters())
    assert sum(p.numel() for p in q.target.parameters()) < models.parameter_count(q.target)  # packed: 2 per byte
    n = f"{models.parameter_count(pair.target) / 1e6:10.2f} M params"
    assert n in q.summary() and n in pair.summary()


@pytest.mark.parametrize("call, says", [
    (lambda: theory.optimal_gamma(0.8, 0.1, max_gamma=0), "max_gamma must be an integer >= 1"),
    (lambda: theory.expected_tokens_per_round(1.5, 4), "alpha must be a number in"),
    (lambda: theory.expected_tokens_per_round(float("nan"), 4), "alpha must be a number in"),
    (lambda: theory.expected_tokens_per_round(0.5, True), "gamma must be an integer"),
    (lambda: theory.expected_speedup(0.5, 4, float("nan")), "c must be a finite number"),
    (lambda: theory.expected_speedup(0.5, 4, 0.1, v=0), "v .* must be a finite number > 0"),
])
def test_theory_checks(call, says):
    with pytest.raises((ValueError, TypeError), match=says):
        call()


def test_theory_accepts_numpy():
    assert theory.optimal_gamma(np.float64(0.8), np.float32(0.1), max_gamma=np.int64(8)) >= 1


@pytest.mark.parametrize("call", [
    lambda: plots.plot_step_times({}),
    lambda: plots.plot_distribution_check({}, [0.5, 0.5], None),
    lambda: plots.plot_distribution_check({"ours": []}, [0.5, 0.5], None),
    lambda: plots.plot_tau({}),
    lambda: plots.plot_heatmap([], [], [], "r", "c", "t"),
    lambda: plots.plot_bars({}, "y", "t"),
    lambda: plots.plot_time_split({}, "t"),
    lambda: plots.plot_cost_model([], "t"),
    lambda: plots.plot_round(torch.zeros(1, 3), torch.zeros(0, 3), [], None, None),
])
def test_plots_with_empty_input(call):
    import matplotlib

    matplotlib.use("Agg")
    with pytest.raises(ValueError, match="is empty: nothing to plot"):
        call()


@pytest.mark.parametrize("prompts", [[], [""], [None], None])
def test_playground_needs_prompts(pair, prompts):
    with pytest.raises(ValueError, match="non-empty list of non-empty strings"):
        Playground(pair, prompts)


def test_notebook_helpers_say_what_to_pass(pair, ids):
    from utils.bench import benchmark
    from utils.beyond import compare_adaptive, left_padded
    from utils.selfspec import exit_agreement

    with pytest.raises(TypeError, match="the Pair that utils.models.load_pair returns"):
        Playground(pair.target, ["The if statement"])
    for call in (lambda: benchmark(pair, []), lambda: compare_adaptive(pair, []), lambda: left_padded(pair.tokenizer, [])):
        with pytest.raises(ValueError, match="non-empty list of non-empty strings"):
            call()
    with pytest.raises(ValueError, match="unknown pair 'nope'"):
        models.memory_fits("nope")
    with pytest.raises(ValueError, match="exit layers from 1 to 19"):
        exit_agreement(pair.target, ids, ks=[99])


def test_result_files_are_strict_json():
    from pathlib import Path

    def refuse(const):
        raise ValueError(f"non-standard JSON constant {const}")

    assert json.loads(to_json({"a": float("nan"), "b": [float("inf"), 1.5]})) == {"a": None, "b": [None, 1.5]}
    root = Path(__file__).resolve().parents[1]
    files = sorted((root / "data").rglob("*.json"))
    assert len(files) >= 5
    for f in files:
        json.loads(f.read_text(), parse_constant=refuse)  # NaN / Infinity would raise here


# ---------------------------------------------------------------------------------------------
# run.py: our flags before --, theirs after; the lab starts without the news pop-up
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def run_py(monkeypatch, tmp_path):
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location("run_py", Path(__file__).resolve().parents[1] / "run.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    calls = []

    class Done:
        returncode = 0

    monkeypatch.setattr(mod, "ensure_env", lambda: tmp_path / "bin" / "python")
    monkeypatch.setattr(mod, "VENV", tmp_path)
    monkeypatch.setattr(mod.subprocess, "run", lambda cmd, **kw: calls.append((cmd, kw)) or Done())
    return mod, calls


def test_run_lab_online_is_ours_not_jupyters(run_py):
    mod, calls = run_py
    assert mod.main(["lab", "--online"]) == 0
    cmd, kw = calls[-1]
    assert "--online" not in cmd  # jupyter-lab exits 2 on a flag it does not know
    assert "HF_HUB_OFFLINE" not in kw["env"] and "TRANSFORMERS_OFFLINE" not in kw["env"]
    assert mod.main(["lab"]) == 0
    assert calls[-1][1]["env"]["HF_HUB_OFFLINE"] == "1"
    mod.main(["lab", "--", "--port=9999"])
    assert "--port=9999" in calls[-1][0]


def test_run_test_online_is_refused_and_pytest_args_pass_through(run_py, capsys):
    mod, calls = run_py
    with pytest.raises(SystemExit) as e:
        mod.main(["test", "--online"])
    assert e.value.code == 2 and "--online only applies to `lab`" in capsys.readouterr().err and not calls
    mod.main(["test", "--", "-k", "greedy"])
    assert calls[-1][0][-2:] == ["-k", "greedy"] and calls[-1][1]["env"]["HF_HUB_OFFLINE"] == "1"


def test_lab_and_check_keep_compiled_kernels_beside_the_environment(run_py, tmp_path, monkeypatch):
    """Notebook 07 compiled at home must stay compiled on the day: /tmp is emptied at reboot on many
    systems. lab and check point inductor's cache into the environment's folder, unless the user set one;
    the tests keep PyTorch's default."""
    mod, calls = run_py
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    for command in ("lab", "check"):
        mod.main([command])
        assert calls[-1][1]["env"]["TORCHINDUCTOR_CACHE_DIR"] == str(tmp_path / "inductor-cache")
    mod.main(["test"])
    assert "TORCHINDUCTOR_CACHE_DIR" not in calls[-1][1]["env"]
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", "/mine")
    mod.main(["lab"])
    assert calls[-1][1]["env"]["TORCHINDUCTOR_CACHE_DIR"] == "/mine"


def test_run_lab_turns_the_news_pop_up_off(run_py, tmp_path):
    mod, calls = run_py
    (tmp_path / "share/jupyter/lab/settings").mkdir(parents=True)
    (tmp_path / "share/jupyter/lab/settings/overrides.json").write_text(json.dumps({"other:plugin": {"x": 1}}))
    mod.main(["lab"])
    cmd = calls[-1][0]
    assert "--LabApp.news_url=None" in cmd
    written = json.loads((tmp_path / "share/jupyter/lab/settings/overrides.json").read_text())
    assert written["@jupyterlab/apputils-extension:notification"]["fetchNews"] == "false"
    assert written["other:plugin"] == {"x": 1}  # other settings kept


def test_shapes_on_a_cpu_refuses_what_does_not_fit(monkeypatch, capsys, tmp_path):
    """`python -m utils.shapes` with defaults on a CPU used to climb past 11 GiB with no warning."""
    from utils import shapes

    monkeypatch.setattr(shapes, "available_memory_bytes", lambda: 22 * 2**30)
    with pytest.raises(SystemExit) as e:
        shapes._parse(["--device", "cpu", "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "need about 111 GiB in float32" in err and "meant for a GPU" in err
    args = shapes._parse(["--device", "cpu", "--sizes", "2b", "--pairs", "--out", str(tmp_path)])
    assert args.device == "cpu" and "about 10 GiB and slow" in capsys.readouterr().err


def test_run_py_says_what_to_install_when_ensurepip_is_missing(tmp_path, monkeypatch):
    """Debian/Ubuntu's system Python without python3-venv: venv cannot put pip in. run.py removes the
    half-made environment and says what to install, instead of a CalledProcessError."""
    import importlib.util
    import subprocess
    import venv
    from pathlib import Path

    spec = importlib.util.spec_from_file_location("run_py_venv", Path(__file__).resolve().parents[1] / "run.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    target = tmp_path / "env"
    monkeypatch.setattr(mod, "VENV", target)

    def no_ensurepip(self, env_dir):
        Path(env_dir).mkdir(parents=True)
        raise subprocess.CalledProcessError(1, ["python", "-m", "ensurepip"])

    monkeypatch.setattr(venv.EnvBuilder, "create", no_ensurepip)
    with pytest.raises(SystemExit) as err:
        mod.ensure_env()
    assert "python3-venv" in str(err.value) and not target.exists()


def test_run_py_says_what_to_do_when_pip_fails(tmp_path, monkeypatch):
    """Offline, or a package the index lacks: one message and the advice, not a CalledProcessError."""
    import importlib.util
    import subprocess
    from pathlib import Path

    spec = importlib.util.spec_from_file_location("run_py_pip", Path(__file__).resolve().parents[1] / "run.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    monkeypatch.setattr(mod, "VENV", tmp_path)
    mod.venv_python().parent.mkdir(parents=True)
    mod.venv_python().touch()  # an environment that exists, with no requirements stamp

    class Failed:
        returncode = 1

    monkeypatch.setattr(mod.subprocess, "run", lambda cmd, **kw: Failed() if "install" in cmd else subprocess.CompletedProcess(cmd, 0))
    with pytest.raises(SystemExit, match="pip could not install requirements.txt .* run the same command again"):
        mod.ensure_env()
    assert not (tmp_path / ".requirements.sha256").exists()  # the next run tries again


def test_run_py_on_macs_pytorch_or_bitsandbytes_do_not_build_for(tmp_path, monkeypatch):
    """Intel Macs: no PyTorch of our version exists, so run.py stops before making .venv and points to
    Colab. Apple Silicon before macOS 14: no bitsandbytes (checked on PyPI for 0.48-0.50), so it is
    left out with a note instead of failing the whole install; elsewhere nothing is skipped."""
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location("run_py_mac", Path(__file__).resolve().parents[1] / "run.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert "Colab" in mod.unsupported_computer("Darwin", "x86_64")
    assert mod.unsupported_computer("Darwin", "arm64") is None and mod.unsupported_computer("Linux", "x86_64") is None
    assert mod.unsupported_computer("Windows", "AMD64") is None
    assert set(mod.skipped_requirements("Darwin", "arm64", "13.6.1")) == {"bitsandbytes"}
    assert mod.skipped_requirements("Darwin", "arm64", "14.2") == {} == mod.skipped_requirements("Darwin", "arm64", "15.1")
    assert mod.skipped_requirements("Linux", "x86_64", "") == {} == mod.skipped_requirements("Windows", "AMD64", "")
    monkeypatch.setattr(mod, "VENV", tmp_path)
    here = mod.requirements_here({"bitsandbytes": "no build"}).read_text()
    assert "bitsandbytes" not in here and "transformers==" in here and "torch==" in here
    assert mod.requirements_here({}) == mod.REQS
    monkeypatch.setattr(mod.platform, "system", lambda: "Darwin")
    monkeypatch.setattr(mod.platform, "machine", lambda: "x86_64")
    monkeypatch.setattr(mod, "VENV", tmp_path / "env")
    with pytest.raises(SystemExit, match="Intel Macs"):
        mod.ensure_env()
    assert not (tmp_path / "env").exists()


# ---------------------------------------------------------------------------------------------
# Every command line: flags checked before a model loads; load and memory errors as one message
# ---------------------------------------------------------------------------------------------

NO_GPU = pytest.mark.skipif(torch.cuda.is_available(), reason="has a GPU")
COMMANDS = [  # (module, argv before the flags under test)
    ("bench", []), ("datacamp", []), ("lookup", []), ("selfspec", ["bench"]),
    ("beyond", ["adaptive"]), ("beyond", ["batched"]),
]


def _main(module):
    import importlib

    return importlib.import_module(f"utils.{module}").main


@pytest.fixture
def no_load(monkeypatch):
    """load_pair, wherever a command finds it, fails the test: nothing may load."""
    from utils import bench, card, datacamp

    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded")

    for mod in (models, bench, datacamp, card):
        monkeypatch.setattr(mod, "load_pair", refuse)


def _exits_2(call, capsys, *says):
    with pytest.raises(SystemExit) as e:
        call()
    err = capsys.readouterr().err
    assert e.value.code == 2, err
    for s in says:
        assert s in err, err
    assert "Traceback" not in err


@pytest.mark.parametrize("device", ["tpu", pytest.param("cuda", marks=NO_GPU)])
@pytest.mark.parametrize("module, argv", COMMANDS)
def test_commands_check_the_device_before_loading(module, argv, device, no_load, capsys, tmp_path):
    """--device cuda on a machine without a GPU (or a device PyTorch does not know): exit 2 and a
    message saying what to use, before any model loads (was: a DeviceError traceback from load_pair)."""
    _exits_2(lambda: _main(module)(argv + ["--device", device, "--out", str(tmp_path)]), capsys, f"--device {device}")
    assert not list(tmp_path.iterdir())


def test_batched_cost_checks_the_device_and_the_memory(monkeypatch, capsys, tmp_path):
    """batched-cost builds 2b + 27b in bf16 (about 60 GiB): on a CPU without that memory it is refused
    up front, as utils.shapes does, instead of swapping or being killed."""
    from utils import beyond, shapes

    monkeypatch.setattr(beyond, "shape_costs", lambda *a, **k: pytest.fail("built the models"))
    monkeypatch.setattr(shapes, "available_memory_bytes", lambda: 22 * 2**30)
    out = ["--out", str(tmp_path)]
    _exits_2(lambda: beyond.main(["batched-cost", "--device", "tpu"] + out), capsys, "--device tpu")
    _exits_2(lambda: beyond.main(["batched-cost", "--device", "cpu"] + out), capsys, "GiB", "22 GiB available")
    _exits_2(lambda: beyond.main(["batched-cost", "--device", "cpu", "--shapes", "2b:2b", "--prompt-len", "100000"] + out),
             capsys, "context of 8192 positions")


@pytest.mark.parametrize("module, argv", COMMANDS)
def test_commands_check_specdec_pair_before_loading(module, argv, no_load, monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("SPECDEC_PAIR", "nope")
    _exits_2(lambda: _main(module)(argv + ["--device", "cpu", "--out", str(tmp_path)]), capsys, "SPECDEC_PAIR='nope'")


@pytest.mark.parametrize("error", [
    models.GatedModelError("google/gemma-2-9b-it is gated: accept the license"),
    models.HubUnreachableError("could not load it from the Hugging Face Hub"),
    models.IncompatiblePairError("the draft's and the target's tokenizers differ"),
    models.InsufficientMemoryError("needs about 40 GiB of GPU memory: pass quantization='nf4'"),
])
@pytest.mark.parametrize("module, argv", COMMANDS + [("card", []), ("selfspec", ["train"])])
def test_commands_turn_load_errors_into_one_message(module, argv, error, monkeypatch, capsys, tmp_path):
    """A pair that cannot load (gated without a token, offline, mismatched tokenizers, too little
    memory): its message and exit 2, not a traceback through transformers."""
    from utils import bench, card, datacamp

    def fail(*args, **kwargs):
        raise error

    for mod in (models, bench, datacamp, card):
        monkeypatch.setattr(mod, "load_pair", fail)
    flags = [] if module == "card" else ["--out", str(tmp_path)] + ([] if argv == ["train"] else ["--device", "cpu"])
    _exits_2(lambda: _main(module)(argv + flags), capsys, str(error))


def test_commands_turn_cuda_out_of_memory_into_one_message(monkeypatch, capsys, tmp_path):
    from utils import bench

    monkeypatch.setattr(bench, "load_pair", lambda *a, **k: object())

    def oom(*args, **kwargs):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(bench, "benchmark", oom)
    _exits_2(lambda: bench.main(["--device", "cpu", "--out", str(tmp_path)]), capsys, "out of GPU memory", "--max-new-tokens")


def test_commands_turn_a_run_past_the_context_into_one_message(monkeypatch, capsys, tmp_path):
    """The compiled engine's fixed cache past max_position_embeddings: exit 2 and what to lower."""
    from utils import bench, fast

    monkeypatch.setattr(bench, "load_pair", lambda *a, **k: object())

    def too_long(*args, **kwargs):
        raise fast.ContextLengthError("prompt (7) + max_new_tokens (1100) needs 1107 positions, but the model holds 1024")

    monkeypatch.setattr(bench, "benchmark", too_long)
    _exits_2(lambda: bench.main(["--device", "cpu", "--out", str(tmp_path)]), capsys, "the model holds 1024")


def test_commands_refuse_a_temperature_too_small_to_sample_with(capsys, tmp_path):
    from utils import bench

    _exits_2(lambda: bench.main(["--device", "cpu", "--temperatures", "1e-40", "--out", str(tmp_path)]), capsys,
             "0 (greedy) or at least 1e-30")


def test_gated_pair_without_a_token_is_one_message(tmp_path):
    """The real path, offline and without a token: exit 2, the message, no traceback."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    env = {k: v for k, v in os.environ.items() if k not in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")} | {"HF_HUB_OFFLINE": "1"}
    r = subprocess.run([sys.executable, "-m", "utils.bench", "--pair", "gemma2-2b-9b", "--device", "cpu", "--out",
                        str(tmp_path)], capture_output=True, text=True, env=env,
                       cwd=Path(__file__).resolve().parents[1], timeout=120)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert "gated" in r.stderr or "Hugging Face Hub" in r.stderr


@pytest.mark.parametrize("argv", [["bench", "--ks", "99", "--no-adapters"], ["train", "--ks", "99"]])
def test_selfspec_checks_exit_layers_before_loading(argv, no_load, capsys, tmp_path):
    from utils import selfspec

    _exits_2(lambda: selfspec.main(argv + ["--out", str(tmp_path)]), capsys, "below the target's 20 layers")


def test_selfspec_checks_the_adapters_file_before_loading(no_load, capsys, tmp_path):
    """A file that is not safetensors, a folder, adapters of another width, and the shipped (tiny)
    adapters with a Hub pair: each refused with what to do, before the pair loads."""
    from safetensors.torch import save_file

    from utils import selfspec

    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a safetensors file at all")
    wide = tmp_path / "wide.safetensors"
    save_file({"k1.norm_weight": torch.ones(192), "k1.proj.weight": torch.zeros(192, 192)}, str(wide))
    out = ["--out", str(tmp_path)]
    for adapters, says in ((junk, "not a safetensors file"), (tmp_path, "is not a file"),
                           (wide, "hidden size 192, and tiny's is 128")):
        _exits_2(lambda: selfspec.main(["bench", "--adapters", str(adapters)] + out), capsys, says, "--no-adapters")
    _exits_2(lambda: selfspec.main(["bench", "--pair", "smollm2-135m-1.7b"] + out), capsys, "the tiny target's")


def test_selfspec_train_checks_the_pair(no_load, capsys, tmp_path):
    from utils import selfspec

    _exits_2(lambda: selfspec.main(["train", "--pair", "nope", "--out", str(tmp_path)]), capsys, "--pair must be one of")


# ---------------------------------------------------------------------------------------------
# scripts/: train_tiny_pair.py never writes over the shipped pair by default; build_notebooks.py
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def train_script(monkeypatch):
    """scripts/train_tiny_pair.py with its corpus stubbed and its first write (the tokenizer) stopped:
    returns (module, run(argv) -> the folders it would write to, or None when it never got there)."""
    import importlib.util
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "scripts" / "train_tiny_pair.py"
    spec = importlib.util.spec_from_file_location("train_tiny_pair", script)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)

    class Stop(Exception):
        pass

    seen = {}

    def tokenizer(text, out_dirs):
        seen["dirs"] = out_dirs
        raise Stop

    monkeypatch.setattr(mod, "load_corpus", lambda: ("text", "held", {}))
    monkeypatch.setattr(mod, "train_tokenizer", tokenizer)
    for name in ("use_deterministic_algorithms", "set_num_threads", "manual_seed"):  # process-wide settings
        monkeypatch.setattr(torch, name, lambda *a, **k: None)

    def run(argv):
        seen.clear()
        try:
            mod.main(argv)
        except Stop:
            pass
        return seen.get("dirs")

    return mod, run


def test_train_tiny_pair_never_overwrites_the_shipped_pair_by_default(train_script, capsys):
    import shutil

    mod, run = train_script
    with pytest.raises(SystemExit) as e:
        run([])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "--overwrite" in err and "Traceback" not in err
    dirs = run(["--smoke"])  # documented as "to a temporary folder"
    try:
        assert dirs and not any(d.resolve().is_relative_to(mod.ROOT) for d in dirs)
    finally:
        if dirs:
            shutil.rmtree(dirs[0].parent, ignore_errors=True)


@pytest.mark.parametrize("flags, says", [
    (["--target-steps", "0"], "--target-steps must be >= 1"),
    (["--draft-steps", "-1"], "--draft-steps must be >= 1"),
    (["--batch", "0"], "--batch must be >= 1"),
    (["--samples", "0"], "--samples must be >= 1"),
    (["--stage1", "no-such-folder"], "--stage1"),
])
def test_train_tiny_pair_checks_flags_before_writing(train_script, flags, says, capsys, tmp_path):
    mod, run = train_script
    with pytest.raises(SystemExit) as e:
        run(flags + ["--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert e.value.code == 2 and says in err and "Traceback" not in err
    assert not list(tmp_path.iterdir())


def test_build_notebooks_refuses_a_prefix_that_matches_nothing(monkeypatch, capsys):
    """A typo such as `3` (not `03`) built nothing and still rewrote README.md and WORKSHOP.md."""
    import sys
    from pathlib import Path

    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "scripts"))
    import build_notebooks

    calls = []
    for name in ("update_readme", "update_workshop", "execute", "build"):
        monkeypatch.setattr(build_notebooks, name, lambda *a, _n=name, **k: calls.append(_n))
    _exits_2(lambda: build_notebooks.main(["3", "--no-execute"]), capsys, "no notebook source", "03")
    assert not calls and "build_notebooks" in sys.modules


def test_run_check_runs_the_preflight_offline(run_py):
    mod, calls = run_py
    assert mod.main(["check"]) == 0
    cmd, kw = calls[-1]
    assert cmd[-2:] == ["-m", "utils.preflight"] and kw["env"]["HF_HUB_OFFLINE"] == "1"


# --- checks added after an audit of every command line and the notebook-facing helpers ---


@pytest.mark.parametrize("module, argv", COMMANDS)
def test_commands_check_max_new_tokens_against_the_context_before_loading(module, argv, no_load, capsys, tmp_path):
    """A run past the shipped pair's 1024 positions: HF generate only warns and the text degrades, so
    every command refuses it before loading, with the largest value that fits."""
    _exits_2(lambda: _main(module)(argv + ["--max-new-tokens", "5000", "--out", str(tmp_path)]), capsys,
             "--max-new-tokens 5000 does not fit", "context of 1024 positions", "or less")
    assert not list(tmp_path.iterdir())


def test_an_out_that_is_a_file_is_named_as_such(no_load, capsys, tmp_path):
    f = tmp_path / "bench-tiny-cpu.json"
    f.write_text("{}")
    _exits_2(lambda: _main("bench")(["--out", str(f)]), capsys, "is a file: --out takes a folder")


def test_speculative_batched_called_directly_checks_its_arguments(pair, monkeypatch):
    """utils.batched.speculative_batched is public: a direct call gets speculative_generate's errors,
    a padded batch without its mask among them (it was read as text, silently)."""
    from utils.batched import speculative_batched

    tok = pair.tokenizer
    monkeypatch.setattr(tok, "padding_side", "left")  # the session's tokenizer: put back afterwards
    b = tok(["A list", "A lambda expression"], return_tensors="pt", padding=True)
    run = lambda **kw: speculative_batched(pair.target, pair.draft, **{  # noqa: E731
        "input_ids": b.input_ids, "attention_mask": b.attention_mask, "max_new_tokens": 4, "gamma": 2, **kw})
    for kw, err, says in [(dict(attention_mask=None), ValueError, "attention_mask"),
                          (dict(gamma=0), ValueError, "gamma must be an integer >= 1"),
                          (dict(gamma=2.5), TypeError, "gamma must be an integer"),
                          (dict(top_p=2), ValueError, "top_p must be in"),
                          (dict(input_ids=b.input_ids + 10**6), ValueError, "vocabulary"),
                          (dict(input_ids=b.input_ids.float()), ValueError, "integer tensor")]:
        with pytest.raises(err, match=says):
            run(**kw)
    assert run().sequences.shape == (2, b.input_ids.shape[1] + 4)


def test_acceptance_stats_takes_one_string_as_one_prompt(pair):
    from utils.speculative import acceptance_stats

    one = acceptance_stats(pair.target, pair.draft, pair.tokenizer, "Hello there", 2, max_new_tokens=4)
    assert one["prompts"] == 1
    with pytest.raises(ValueError, match="non-empty list"):
        acceptance_stats(pair.target, pair.draft, pair.tokenizer, [], 2, max_new_tokens=4)


def test_train_tiny_pair_refuses_an_out_inside_the_shipped_models(train_script, capsys):
    mod, run = train_script
    with pytest.raises(SystemExit) as e:
        run(["--out", str(mod.OUT_DIR / "tiny-gemma2-target")])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "among the shipped models" in err


def test_build_notebooks_check_takes_no_other_argument(monkeypatch, capsys):
    from pathlib import Path

    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "scripts"))
    import build_notebooks

    monkeypatch.setattr(build_notebooks, "check", lambda: pytest.fail("--check ran with a prefix"))
    for argv in (["--check", "zz"], ["--check", "--no-execute"], ["03", "--check", "--time-first-run"]):
        _exits_2(lambda: build_notebooks.main(argv), capsys, "give it alone")


def test_run_py_points_unknown_flags_to_after_the_double_dash(run_py, capsys):
    mod, calls = run_py
    with pytest.raises(SystemExit) as e:
        mod.main(["lab", "--port", "9999"])
    assert e.value.code == 2 and "python run.py lab -- --port 9999" in capsys.readouterr().err and not calls


def test_notebook_03_helpers_check_rule_shapes_and_counts():
    from utils.interactive import emitted_law, emitted_tokens, tau_figure

    p, q = torch.tensor([0.5, 0.5]), torch.tensor([0.9, 0.1])
    with pytest.raises(ValueError, match='rule must be "residual"'):
        emitted_law(p, q, rule="x")
    with pytest.raises(ValueError, match="n must be an integer >= 1"):
        emitted_tokens(p, q, -1)
    with pytest.raises(ValueError, match="same vocabulary"):
        emitted_tokens(p, torch.tensor([0.2, 0.3, 0.5]), 10)
    with pytest.raises(ValueError, match="alpha is a probability"):
        tau_figure(1.5, 4, 1.0)


def test_the_fast_engines_called_directly_check_their_arguments(pair, ids):
    from utils import fast

    with pytest.raises(ValueError, match="temperature"):
        fast.autoregressive_compiled(pair.target, ids, 3, temperature=-1.0, compile=False)
    with pytest.raises(ValueError, match="gamma must be an integer >= 1"):
        fast.speculative_compiled(pair.target, pair.draft, ids, max_new_tokens=3, gamma=0, compile=False)


def test_step_cost_ratio_needs_steps(pair, ids):
    from utils.bench import step_cost_ratio

    with pytest.raises(ValueError, match="steps must be an integer >= 1"):
        step_cost_ratio(pair, ids, steps=0)


def test_the_gated_message_says_offline_is_set(monkeypatch):
    from utils import models

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setattr(models, "_is_cached", lambda repo: False)
    monkeypatch.setattr("huggingface_hub.get_token", lambda: None)
    with pytest.raises(models.GatedModelError, match="HF_HUB_OFFLINE is set here"):
        models._check_access(models.PAIRS["gemma2-2b-9b"])


def test_check_context_counts_gamma_only_for_speculative_runs(capsys):
    import argparse

    from utils.results import check_context

    ap = argparse.ArgumentParser(prog="cmd")
    check_context(ap, "tiny", 1024, 0)  # plain decoding: exactly the 1024 positions fit
    _exits_2(lambda: check_context(ap, "tiny", 1024, 4), capsys, "a round's gamma + 1 (5)", "use --max-new-tokens 1019 or less")
    _exits_2(lambda: check_context(ap, "tiny", 1025, 0), capsys, "make 1025", "use --max-new-tokens 1024 or less")
    _exits_2(lambda: check_context(ap, "tiny", 5, 4, ["word " * 1100]), capsys, "already fill it: shorten the prompts")


def test_a_batch_past_the_drafts_shorter_context_warns_once_for_the_draft(pair, encode, monkeypatch):
    """A draft with a shorter context than the target's: the batched path warns for it, as the
    single-prompt path does, from the learner's line (not from inside torch's inference_mode wrapper)."""
    import warnings

    from utils.speculative import speculative_generate

    monkeypatch.setattr(pair.draft.config, "max_position_embeddings", 8)
    ids = encode("A list").repeat(2, 1)  # (2, T): a batch, no padding
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        speculative_generate(pair.target, pair.draft, ids, max_new_tokens=8, gamma=2)
    draft = [w for w in caught if "draft's context" in str(w.message)]
    assert len(draft) == 1 and draft[0].filename == __file__, [(str(w.message)[:60], w.filename) for w in caught]


@pytest.mark.parametrize("kw, says", [
    (dict(schedule="heuristc"), "schedule must be one of"),
    (dict(num_assistant_tokens=0), "integer >= 1"),
    (dict(confidence_threshold=-0.1), r"in \[0, 1\]"),
    (dict(confidence_threshold=float("nan")), r"in \[0, 1\]"),
    (dict(confidence_threshold=True), r"in \[0, 1\]"),
    (dict(confidence_threshold=1.5), r"in \[0, 1\]"),
])
def test_configure_assistant_refuses_what_hf_would_run_silently(pair, kw, says):
    """transformers checks none of these: a misspelt schedule runs as a constant one."""
    from utils.bench import configure_assistant

    before = pair.draft.generation_config.to_dict()
    with pytest.raises(ValueError, match=says):
        configure_assistant(pair.draft, **kw)
    assert pair.draft.generation_config.to_dict() == before  # nothing half-set


def test_configure_assistant_refuses_a_fractional_draft_length(pair):
    from utils.bench import configure_assistant

    with pytest.raises(TypeError, match="integer >= 1"):  # as gamma is refused everywhere (check_count)
        configure_assistant(pair.draft, 2.5)


def test_configure_assistant_sets_every_valid_schedule(pair):
    from utils.bench import SCHEDULES, configure_assistant

    gc = pair.draft.generation_config
    knobs = ("num_assistant_tokens", "num_assistant_tokens_schedule", "assistant_confidence_threshold")
    before = [getattr(gc, k) for k in knobs]
    try:
        for schedule in SCHEDULES:
            configure_assistant(pair.draft, 3, schedule, 0.4)
            assert [getattr(gc, k) for k in knobs] == [3, schedule, 0.4]
    finally:  # the pair is shared by the session's other tests
        for k, v in zip(knobs, before):
            setattr(gc, k, v)


@pytest.mark.parametrize("kw, exc", [(dict(repeats=0), ValueError), (dict(repeats=1.5), TypeError),
                                     (dict(warmup_tokens=0), ValueError)])
def test_autoregressive_timed_checks_its_counts(pair, ids, kw, exc):
    from utils.decoding import autoregressive_timed

    with pytest.raises(exc, match="must be an integer >= 1"):
        autoregressive_timed(pair.target, ids, 4, **kw)
