"""The repository keeps its promises: one package list, notebooks built from their sources,
the README's test command is what CI runs."""

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _reqs(lines):
    return sorted(l.strip() for l in lines if l.strip() and not l.strip().startswith("#"))


def test_requirements_and_environment_list_the_same_packages():
    reqs = _reqs((ROOT / "requirements.txt").read_text().splitlines())
    env = (ROOT / "environment.yml").read_text()
    pip_section = env.split("- pip:")[1].splitlines()
    env_reqs = _reqs(l.strip()[2:] for l in pip_section if l.strip().startswith("- "))
    assert reqs == env_reqs
    assert "torch==2.13.0" in reqs  # a pinned CPU-installable torch: an open range pulls a CUDA build


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    test_cmd = re.search(r"^(python run\.py test)\b", readme, re.M).group(1)
    assert re.search(r"^(python run\.py lab)\b", readme, re.M)
    ci = (ROOT / ".ci/run").read_text()
    assert test_cmd.replace("python ", "python3 ") in ci


def test_notebooks_are_built_from_their_sources():
    res = subprocess.run([sys.executable, "scripts/build_notebooks.py", "--check"], cwd=ROOT, capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr


def test_every_notebook_has_badge_setup_and_try_this():
    import nbformat

    nbs = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    assert [p.name[:2] for p in nbs] == [f"{i:02d}" for i in range(1, 13)]
    for p in nbs:
        nb = nbformat.read(p, as_version=4)
        assert "colab-badge.svg" in nb.cells[0].source and p.name in nb.cells[0].source
        assert any("google.colab" in c.source for c in nb.cells if c.cell_type == "code")
        assert any("## Try this" in c.source for c in nb.cells if c.cell_type == "markdown")
        assert any(o.get("output_type") == "display_data" and "image/png" in o.get("data", {})
                   for c in nb.cells if c.cell_type == "code" for o in c.outputs), f"{p.name}: no committed figure"


def test_every_committed_run_took_under_two_minutes_and_workshop_says_how_long():
    """README promises each notebook runs in under two minutes on a 2-core CPU: the committed runs'
    own timestamps must agree. WORKSHOP.md's "runs in" cells are generated from the same timestamps,
    and a mark after the number (07's "*") survives regeneration."""
    sys.path.insert(0, str(ROOT / "scripts"))
    from build_notebooks import run_seconds, workshop_text

    times = {p.name: run_seconds(p) for p in sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))}
    assert all(t is not None for t in times.values()), f"notebooks committed without a run: {times}"
    slow = {n: round(t) for n, t in times.items() if t >= 120}
    assert not slow, f"committed runs of two minutes or more: {slow}"
    row = "| 2:30 | 15 min | [07](notebooks/07_make_it_fast.ipynb) make it fast | 99 s* | what |"
    assert workshop_text(row) == f"| 2:30 | 15 min | [07](notebooks/07_make_it_fast.ipynb) make it fast | {times['07_make_it_fast.ipynb']:.0f} s* | what |"
    assert workshop_text("| setup | – | no notebook here |") == "| setup | – | no notebook here |"


def test_first_run_time_is_quoted_from_its_data_file(tmp_path, monkeypatch):
    """The README's and WORKSHOP's "first run of 07" time comes from data/results/first-run-tiny-cpu.json
    (written by build_notebooks.py 07 --time-first-run), not typed: spans exist, and they are filled."""
    import json

    monkeypatch.syspath_prepend(str(ROOT / "scripts"))
    import build_notebooks as bn

    data = json.loads(bn.FIRST_RUN.read_text())
    assert data["07"]["seconds"] > 0 and "empty" in data["07"]["cache"] and data["07"]["command"].endswith("--time-first-run")
    for doc in ("README.md", "WORKSHOP.md"):
        spans = bn.FIRST_RUN_SPAN.findall((ROOT / doc).read_text())
        assert spans and all(num == "07" and "?" not in said for _, num, said, _ in spans), (doc, spans)
    fake = tmp_path / "first-run.json"
    fake.write_text(json.dumps({"07": dict(seconds=130.4), "08": dict(seconds=42.0)}))
    monkeypatch.setattr(bn, "FIRST_RUN", fake)
    text = "a <!-- first-run 07 -->?<!-- /first-run --> b <!-- first-run 08 -->x<!-- /first-run --> <!-- first-run 09 -->y<!-- /first-run -->"
    assert bn.first_run_text(text) == ("a <!-- first-run 07 -->about 2.2 minutes (130 s)<!-- /first-run --> "
                                       "b <!-- first-run 08 -->42 s<!-- /first-run --> <!-- first-run 09 -->y<!-- /first-run -->")


def test_first_run_time_is_tied_to_the_code_it_measured(tmp_path, monkeypatch):
    """A first-run time records a digest of the notebook's code cells and utils/fast.py: a prose edit
    keeps it, a code edit changes it, and --check then calls the time stale."""
    import json

    monkeypatch.syspath_prepend(str(ROOT / "scripts"))
    import build_notebooks as bn

    src = ROOT / "notebooks" / "src" / "07_make_it_fast.py"
    text = src.read_text()
    copy = tmp_path / src.name
    digest = bn.first_run_digest(src)
    copy.write_text(text + "\n# %% [markdown]\n# one more sentence of prose\n")
    assert bn.first_run_digest(copy) == digest
    monkeypatch.setattr(bn, "SETUP", bn.SETUP + "\n# a fork's repository setting")  # the generated setup cell
    assert bn.first_run_digest(src) == digest
    copy.write_text(text + "\n# %%\nprint('one more line of code')\n")
    assert bn.first_run_digest(copy) != digest
    fake = tmp_path / "first-run.json"
    fake.write_text(json.dumps({"07": dict(seconds=100.0, code_digest="0" * 16)}))
    monkeypatch.setattr(bn, "FIRST_RUN", fake)
    monkeypatch.setattr(bn, "first_run_text", lambda text: text)  # only the digest is under test here
    bad = []
    monkeypatch.setattr("builtins.print", lambda *a, **k: bad.append(" ".join(map(str, a))))
    assert bn.check() == 1 and any("first-run time of 07" in line for line in bad)


# Each notebook's "Time to run" words and the seconds they allow (the committed run on this repository's
# 2-core CPU must not take longer); 07 points to WORKSHOP.md instead (its first run compiles).
TIME_WORDS = {"a few seconds": 15, "about 30 s": 45, "under a minute": 60, "about a minute": 90,
              "about 1–2 minutes": 120}


def test_every_time_to_run_line_agrees_with_the_committed_run():
    """The intro's "Time to run" is typed once in each source, so it can drift as a notebook grows (a
    checker that runs more tests, a longer benchmark): it must use one of TIME_WORDS, whose bound the
    committed run's own timestamps respect, or point to WORKSHOP.md, whose times are generated."""
    sys.path.insert(0, str(ROOT / "scripts"))
    from build_notebooks import run_seconds

    for src in sorted((ROOT / "notebooks/src").glob("[0-9][0-9]_*.py")):
        line = re.search(r"\*\*Time to run:\*\* (.*)", src.read_text(encoding="utf-8"))
        assert line, f"{src.name}: no '**Time to run:**' line in the introduction"
        words = line.group(1)
        if words.startswith("[WORKSHOP.md]"):
            continue
        said = [w for w in TIME_WORDS if words.startswith(w)]
        assert said, f"{src.name}: 'Time to run: {words}' should start with one of {list(TIME_WORDS)} or point to WORKSHOP.md"
        took = run_seconds(ROOT / "notebooks" / src.with_suffix(".ipynb").name)
        assert took <= TIME_WORDS[said[0]], f"{src.name} says '{said[0]}' but its committed run took {took:.0f} s"


def test_badges_and_setup_cell_point_to_the_repository_setting():
    """One setting, [tool.specdec] repository in pyproject.toml, makes the Colab badges and the clone URL."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10: tomli comes with jupytext there
        import tomli as tomllib
    sys.path.insert(0, str(ROOT / "scripts"))
    from build_notebooks import BADGE, SETUP

    url = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["specdec"]["repository"]
    owner_name = re.fullmatch(r"https://github\.com/([^/]+/[^/]+?)(\.git)?/?", url).group(1)
    assert f"colab.research.google.com/github/{owner_name}/blob/main/notebooks/" in BADGE
    assert f'os.environ.get("SPECDEC_REPO_URL", "https://github.com/{owner_name}")' in SETUP
    readme = (ROOT / "README.md").read_text()
    assert readme.count(f"colab.research.google.com/github/{owner_name}/blob/main/notebooks/") == len(list((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")))


def test_colab_setup_installs_what_the_notebooks_import_and_no_jupyter():
    """The setup cell's grep keeps the runtime packages and drops torch, ipywidgets (Colab's front end
    draws only the ipywidgets 7 it preinstalls) and the Jupyter/test tools."""
    sys.path.insert(0, str(ROOT / "scripts"))
    from build_notebooks import COLAB_SKIP, SETUP

    assert COLAB_SKIP in SETUP
    lines = (ROOT / "requirements.txt").read_text().splitlines()
    kept = {re.split(r"[<>=!~ ]", l)[0] for l in lines if l.strip() and not l.startswith("#") and not re.search(COLAB_SKIP, l)}
    assert {"transformers", "accelerate", "bitsandbytes", "plotly", "matplotlib", "scipy", "tqdm"} <= kept
    assert not kept & {"torch", "ipywidgets", "jupyterlab", "notebook", "jupytext", "pytest", "nbval", "playwright"}
