"""The notebooks' Colab setup cell, run as on Colab but on this machine.

A fresh virtual environment holds only what Colab preinstalls and the setup cell keeps (torch, and
Colab's own IPython 7.34, ipykernel, ipywidgets 7.7.1 and plotly 5.24.1, as listed in
https://github.com/googlecolab/backend-info); its kernel imports a stub `google.colab` at start, as
Colab's kernel does. The repository comes from a local bare copy through the cell's SPECDEC_REPO_URL
(the setting in pyproject.toml is the default), into SPECDEC_COLAB_DIR instead of
/content/specdec-notebooks. First the setup cell runs with pip cut off from the index: it must stop
with what to do, and the next run must retry the install. Then notebook 01, opened from outside the
clone, runs top to bottom: the cell installs the rest of requirements.txt from the package index like
Colab would, and the notebook imports `utils` from the clone. Notebook 04's playground then runs in the same environment:
its widgets are built, shown and driven with Colab's ipywidgets 7 (Colab's front end itself cannot run
here: what it draws is not tested). Takes minutes (marked slow; `python run.py test` and CI run it)."""

import json
import os
import re
import shutil
import subprocess
import sys
import venv
from importlib.metadata import version
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "01_autoregressive_decoding.ipynb"
PLAYGROUND = ROOT / "notebooks" / "04_playground.ipynb"
# Colab's kernel, ipywidgets and plotly as its runtime pins them (googlecolab/backend-info,
# pip-freeze.gpu.txt, 2026-08): the setup cell keeps them (plotly 5.24.1 meets requirements.txt), so the
# notebooks must run on them: IPython 7, ipywidgets 7.
COLAB_IPYWIDGETS, COLAB_PLOTLY = "7.7.1", "5.24.1"
COLAB_KERNEL = ["ipykernel==6.17.1", "ipython==7.34.0", "jupyter_client==7.4.9", "traitlets==5.7.1"]
# The test environment's own torch build (e.g. 2.13.0+cpu), pinned: pip takes it from where it came
# from (cache, find-links, index) and never pulls the multi-GB CUDA build an open "torch" would.
COLAB_PREINSTALLED = [f"torch=={version('torch')}", *COLAB_KERNEL, f"ipywidgets=={COLAB_IPYWIDGETS}", f"plotly=={COLAB_PLOTLY}"]
PROBE = """\
import json, os, sys, torch, transformers, utils
print(json.dumps({"utils": utils.__file__, "transformers": transformers.__file__, "torch": torch.__version__,
                  "cwd": os.getcwd(), "colab": "google.colab" in sys.modules}))"""
# Appended to notebook 04: drive the playground as a learner's slider would, then report.
PLAYGROUND_PROBE = """\
import json, IPython, ipywidgets, plotly
from utils.interactive import figure_of
pg.gamma.value = 2  # a slider moved: the observer re-runs
demo = pg.rule_demo
for rule in ("residual", "p"):
    demo.rule.value = rule  # the rule switch redraws its chart
print(json.dumps({"ipywidgets": ipywidgets.__version__, "plotly": plotly.__version__, "ipython": IPython.__version__,
                  "gamma": pg.last["gamma"],
                  "tau_figure": figure_of(pg.tau_plot) is not None, "tokens_html": len(pg.html.value),
                  "rule_shown": 'data-rule="p"' in demo.summary.value, "rule_figure": figure_of(demo.plot) is not None}))"""
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(os.name == "nt", reason="Colab is Linux: the setup cell uses git and grep through a POSIX shell"),
]


def _git(*args: str) -> str:
    return subprocess.run(["git", *args], check=True, capture_output=True, text=True).stdout.strip()


def publish_working_tree(bare: Path) -> str:
    """A bare repository whose branch main is one commit of the working tree (tracked files and
    untracked ones git does not ignore: what a push of the current work would publish; in CI, HEAD).
    Leaves this repository's own .git untouched. Returns the commit."""
    _git("init", "-q", "--bare", str(bare))
    git = ("-c", "user.name=test_colab", "-c", "user.email=test_colab@localhost",
           "--git-dir", str(bare), "--work-tree", str(ROOT))
    _git(*git, "add", "--all")
    commit = _git(*git, "commit-tree", _git(*git, "write-tree"), "-m", "working tree, published for tests/test_colab.py")
    _git(*git, "update-ref", "refs/heads/main", commit)
    _git(*git, "symbolic-ref", "HEAD", "refs/heads/main")
    return commit


def colab_like_environment(prefix: Path) -> Path:
    """A virtual environment with what Colab preinstalls, a stub google.colab, and a kernel spec
    "colab" (under <prefix>/share/jupyter) whose kernel imports google.colab first. Returns its python."""
    venv.EnvBuilder(with_pip=True, symlinks=True).create(prefix)
    py = prefix / "bin" / "python"
    subprocess.run([str(py), "-m", "pip", "install", "--quiet", *COLAB_PREINSTALLED], check=True)
    site = Path(subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                               check=True, capture_output=True, text=True).stdout.strip())
    (site / "google" / "colab").mkdir(parents=True)  # "google" stays a namespace package
    (site / "google" / "colab" / "__init__.py").write_text('"""Stub of Colab\'s runtime API: only its presence matters."""\n')
    (site / "colab_kernel_launcher.py").write_text(
        "import google.colab  # noqa: F401  (Colab's kernel has it imported before any cell runs)\n"
        "from ipykernel import kernelapp\n\nkernelapp.launch_new_instance()\n")
    spec = prefix / "share" / "jupyter" / "kernels" / "colab"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [str(py), "-m", "colab_kernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3 (simulated Colab)", "language": "python"}))
    return py


@pytest.fixture(scope="module")
def colab(tmp_path_factory):
    """A Colab-like runtime shared by this module's tests: run(nb) executes a notebook there, in a fresh
    "colab" kernel whose working directory is /content's stand-in (the first notebook's setup cell clones
    and installs; a later one finds the clone, as a second notebook in one Colab runtime would)."""
    from nbclient import NotebookClient

    tmp = tmp_path_factory.mktemp("colab")
    commit = publish_working_tree(tmp / "specdec-notebooks.git")
    env_dir = tmp / "colab-venv"
    colab_like_environment(env_dir)
    content = tmp / "content"  # Colab's working directory, /content
    content.mkdir()
    clone = content / "specdec-notebooks"
    kernel_env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}  # nothing from here
    kernel_env.update({
        "SPECDEC_REPO_URL": (tmp / "specdec-notebooks.git").as_uri(),  # file://: --depth 1 works as over https
        "SPECDEC_COLAB_DIR": str(clone),
        "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
        "PATH": os.pathsep.join([str(env_dir / "bin"), os.environ.get("PATH", "")]),
    })

    def run(nb, **env) -> None:
        client = NotebookClient(nb, kernel_name="colab", timeout=1200, resources={"metadata": {"path": str(content)}})
        client.execute(env={**kernel_env, **env})  # raises CellExecutionError, with the cell and traceback, on any error

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("JUPYTER_PATH", str(env_dir / "share" / "jupyter"))  # where the "colab" kernel spec is
        try:
            yield dict(run=run, commit=commit, clone=clone, env_dir=env_dir)
        finally:
            shutil.rmtree(env_dir, ignore_errors=True)  # 1.7 GB; pytest keeps the last three runs' tmp_path


def _printed_json(cell) -> dict:
    printed = "".join(o.get("text", "") for o in cell.outputs if o.output_type == "stream")
    return json.loads(printed.strip().splitlines()[-1])


def _setup_cell(nb) -> nbformat.NotebookNode:
    cell = next(c for c in nb.cells if c.cell_type == "code" and "google.colab" in c.source)
    assert "SPECDEC_REPO_URL" in cell.source, "old setup cell; run python scripts/build_notebooks.py"
    return cell


def test_a_failed_install_raises_and_the_next_run_retries_it(colab):
    """pip fails (no package index): the setup cell stops with what to do and leaves no "installed"
    mark, so that running it again installs (the next test runs it again in the same clone)."""
    from nbclient.exceptions import CellExecutionError

    nb = nbformat.v4.new_notebook(cells=[_setup_cell(nbformat.read(NOTEBOOK, as_version=4))])
    with pytest.raises(CellExecutionError, match="pip could not install the requirements"):
        colab["run"](nb, PIP_NO_INDEX="1", PIP_FIND_LINKS="")
    clone = colab["clone"]
    assert (clone / "requirements.txt").is_file()  # cloned,
    assert not (clone / ".colab-installed").exists()  # but not marked as installed


def test_setup_cell_clones_installs_and_runs_notebook_01_as_on_colab(colab):
    nb = nbformat.read(NOTEBOOK, as_version=4)
    _setup_cell(nb)
    nb.cells.append(nbformat.v4.new_code_cell(PROBE))
    colab["run"](nb)

    clone, env_dir = colab["clone"], colab["env_dir"]
    assert _git("-C", str(clone), "rev-parse", "HEAD") == colab["commit"]
    probe = _printed_json(nb.cells[-1])
    assert probe["colab"]
    assert probe["cwd"] == str(clone / "notebooks")
    assert Path(probe["utils"]).is_relative_to(clone), probe  # the clone's code, not this checkout's
    assert Path(probe["transformers"]).is_relative_to(env_dir), probe  # installed by the setup cell
    assert probe["torch"] == version("torch"), "the setup cell replaced the preinstalled torch"
    assert (clone / ".colab-installed").exists()  # a later notebook's setup cell skips pip
    installed = (clone / "colab-requirements.txt").read_text()  # what the cell gave pip
    assert re.search(r"^transformers==", installed, re.M)
    assert not re.search(r"^(torch|ipywidgets|jupyterlab)\b", installed, re.M)


def test_playground_widgets_work_with_colabs_ipywidgets_7(colab):
    """Notebook 04 on Colab's own ipywidgets (the setup cell keeps it): every widget cell shows a
    widget, and moving a slider or the rule switch re-runs and redraws."""
    nb = nbformat.read(PLAYGROUND, as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell(PLAYGROUND_PROBE))
    colab["run"](nb)

    probe = _printed_json(nb.cells[-1])
    assert probe["ipywidgets"] == COLAB_IPYWIDGETS and probe["plotly"] == COLAB_PLOTLY, probe  # kept, not upgraded
    assert probe["ipython"] == "7.34.0", probe
    assert probe["gamma"] == 2 and probe["tau_figure"] and probe["tokens_html"] > 0, probe
    assert probe["rule_shown"] and probe["rule_figure"], probe
    committed = nbformat.read(PLAYGROUND, as_version=4).cells
    for mine, ran in zip(committed, nb.cells):  # a widget wherever the committed run (ipywidgets 8) shows one
        if any(WIDGET_VIEW in o.get("data", {}) for o in mine.get("outputs", [])):
            views = [o["data"][WIDGET_VIEW] for o in ran.outputs if WIDGET_VIEW in o.get("data", {})]
            assert views and all(v["version_major"] == 2 for v in views), ran.source
