"""The notebooks' Colab setup cell, run as on Colab but on this machine.

A fresh virtual environment holds only what Colab preinstalls and the setup cell keeps (torch,
ipykernel, ipywidgets); its kernel imports a stub `google.colab` at start, as Colab's kernel does.
The repository comes from a local bare copy through the cell's SPECDEC_REPO_URL (the setting in
pyproject.toml is the default), into SPECDEC_COLAB_DIR instead of /content/specdec-notebooks. Then
notebook 01, opened from outside the clone, runs top to bottom: the cell clones, installs the rest of
requirements.txt from the package index like Colab would, and the notebook imports `utils` from the
clone. Takes minutes (marked slow; `python run.py test` and CI run it)."""

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
# The test environment's own torch build (e.g. 2.13.0+cpu), pinned: pip takes it from where it came
# from (cache, find-links, index) and never pulls the multi-GB CUDA build an open "torch" would.
COLAB_PREINSTALLED = [f"torch=={version('torch')}", "ipykernel", "ipywidgets"]
PROBE = """\
import json, os, sys, torch, transformers, utils
print(json.dumps({"utils": utils.__file__, "transformers": transformers.__file__, "torch": torch.__version__,
                  "cwd": os.getcwd(), "colab": "google.colab" in sys.modules}))"""

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


def test_setup_cell_clones_installs_and_runs_notebook_01_as_on_colab(tmp_path, monkeypatch):
    from nbclient import NotebookClient

    nb = nbformat.read(NOTEBOOK, as_version=4)
    setup = next(c for c in nb.cells if c.cell_type == "code" and "google.colab" in c.source)
    assert "SPECDEC_REPO_URL" in setup.source, f"{NOTEBOOK.name}: old setup cell; run python scripts/build_notebooks.py"
    nb.cells.append(nbformat.v4.new_code_cell(PROBE))

    commit = publish_working_tree(tmp_path / "specdec-notebooks.git")
    env_dir = tmp_path / "colab-venv"
    colab_like_environment(env_dir)
    content = tmp_path / "content"  # Colab's working directory, /content
    content.mkdir()
    clone = content / "specdec-notebooks"

    kernel_env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}  # nothing from here
    kernel_env.update({
        "SPECDEC_REPO_URL": (tmp_path / "specdec-notebooks.git").as_uri(),  # file://: --depth 1 works as over https
        "SPECDEC_COLAB_DIR": str(clone),
        "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
        "PATH": os.pathsep.join([str(env_dir / "bin"), os.environ.get("PATH", "")]),
    })
    monkeypatch.setenv("JUPYTER_PATH", str(env_dir / "share" / "jupyter"))  # where the "colab" kernel spec is
    client = NotebookClient(nb, kernel_name="colab", timeout=1200, resources={"metadata": {"path": str(content)}})
    try:
        client.execute(env=kernel_env)  # raises CellExecutionError, with the cell and traceback, on any error
    finally:
        shutil.rmtree(env_dir, ignore_errors=True)  # 1.7 GB; pytest keeps the last three runs' tmp_path

    assert _git("-C", str(clone), "rev-parse", "HEAD") == commit
    printed = "".join(o.get("text", "") for o in nb.cells[-1].outputs if o.output_type == "stream")
    probe = json.loads(printed.strip().splitlines()[-1])
    assert probe["colab"]
    assert probe["cwd"] == str(clone / "notebooks")
    assert Path(probe["utils"]).is_relative_to(clone), probe  # the clone's code, not this checkout's
    assert Path(probe["transformers"]).is_relative_to(env_dir), probe  # installed by the setup cell
    assert probe["torch"] == version("torch"), "the setup cell replaced the preinstalled torch"
    installed = (clone / "colab-requirements.txt").read_text()  # what the cell gave pip
    assert re.search(r"^transformers==", installed, re.M) and not re.search(r"^(torch|jupyterlab)\b", installed, re.M)
