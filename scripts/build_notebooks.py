"""Build notebooks/NN_slug.ipynb from notebooks/src/NN_slug.py, run them, and refresh the README tables.

    python scripts/build_notebooks.py              # build + execute all (tiny pair, CPU, offline)
    python scripts/build_notebooks.py 03           # only notebooks whose name starts with 03
    python scripts/build_notebooks.py --check      # exit 1 if an .ipynb's code differs from its source
    python scripts/build_notebooks.py --no-execute # build without running (the notebooks lose their outputs)
    python scripts/build_notebooks.py 07 --time-first-run  # time a new machine's first run (empty compile caches)

The sources are jupytext "percent" scripts (one place to edit, reviewable diffs). A cell holding
only `# SETUP` becomes the shared setup cell below, and a Colab badge is put on top, so neither is
copied by hand. Both point to the repository set in pyproject.toml ([tool.specdec] repository;
a fork sets its own). The committed notebooks carry the outputs of one full run made by this script.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from pathlib import Path

import jupytext
import nbformat

ROOT = Path(__file__).resolve().parents[1]
NB_DIR = ROOT / "notebooks"
SRC_DIR = NB_DIR / "src"


def repository() -> tuple[str, str]:
    """(URL, "OWNER/NAME") of the GitHub repository the badges and the setup cell point to:
    [tool.specdec] repository in pyproject.toml."""
    text = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    try:
        import tomllib  # Python >= 3.11
    except ModuleNotFoundError:  # Python 3.10: tomli, which jupytext requires there
        import tomli as tomllib
    url = tomllib.loads(text).get("tool", {}).get("specdec", {}).get("repository", "")
    m = re.fullmatch(r"https://github\.com/([\w.-]+/[\w.-]+?)(?:\.git)?/?", url)
    if not m:
        raise SystemExit(f"pyproject.toml: [tool.specdec] repository = {url!r}: expected "
                         '"https://github.com/OWNER/NAME" (Colab opens notebooks from GitHub)')
    return f"https://github.com/{m.group(1)}", m.group(1)


REPO_URL, GITHUB_REPO = repository()
BADGE = (
    "[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]"
    f"(https://colab.research.google.com/github/{GITHUB_REPO}/blob/main/notebooks/{{name}})"
)
# Lines of requirements.txt the Colab setup cell skips (grep -E): Colab's own torch is kept, and its
# runtime pins its own Jupyter, so the front end and the test tools are not installed there. Colab's
# ipywidgets is kept too: its front end draws the ipywidgets 7 it preinstalls (7.7.1, see
# https://github.com/googlecolab/backend-info), and widgets from an upgraded ipywidgets 8 stay blank
# there (https://github.com/googlecolab/colabtools/issues/4525). utils' widgets work with both.
COLAB_SKIP = "^(torch|ipywidgets|jupyterlab|notebook|jupytext|pytest|nbval|playwright)[<>=!~ ]"
# SPECDEC_REPO_URL and SPECDEC_COLAB_DIR override where the clone comes from and goes (for a session,
# without a rebuild); tests/test_colab.py points them at a local copy to run a notebook as on Colab.
SETUP = f"""\
# Setup. In JupyterLab (python run.py lab) this only finds the repository; on Colab it first
# fetches the repository and the packages the notebooks use, keeping Colab's torch, ipywidgets
# and Jupyter.
import os, sys
if "google.colab" in sys.modules:
    REPO_URL = os.environ.get("SPECDEC_REPO_URL", "{REPO_URL}")
    REPO_DIR = os.environ.get("SPECDEC_COLAB_DIR", "/content/specdec-notebooks")
    if not os.path.isdir(REPO_DIR):
        !git clone -q --depth 1 {{REPO_URL}} {{REPO_DIR}}
        if not os.path.isdir(REPO_DIR):
            raise RuntimeError(f"git could not clone {{REPO_URL}} (its message is above): check the network, then rerun this cell")
    DONE = os.path.join(REPO_DIR, ".colab-installed")  # made only when pip succeeds: a rerun retries a failed install
    if not os.path.exists(DONE):
        !grep -v -E "{COLAB_SKIP}" {{REPO_DIR}}/requirements.txt > {{REPO_DIR}}/colab-requirements.txt
        # sys.executable's pip (what %pip runs), through the shell so that "&&" sees pip's exit status
        !{{sys.executable}} -m pip install -q -r {{REPO_DIR}}/colab-requirements.txt && touch {{DONE}}
        if not os.path.exists(DONE):
            raise RuntimeError("pip could not install the requirements (its message is above): rerun this cell")
    os.chdir(os.path.join(REPO_DIR, "notebooks"))
sys.path.insert(0, os.path.abspath(".."))"""
TABLE_START, TABLE_END = "<!-- notebooks:start -->", "<!-- notebooks:end -->"
BENCH_START, BENCH_END = "<!-- bench:start -->", "<!-- bench:end -->"
FAST_START, FAST_END = "<!-- fast:start -->", "<!-- fast:end -->"
GPU_START, GPU_END = "<!-- gpu:start -->", "<!-- gpu:end -->"
GPUFAST_START, GPUFAST_END = "<!-- gpufast:start -->", "<!-- gpufast:end -->"


def sources(prefix: str = "") -> list[Path]:
    return sorted(p for p in SRC_DIR.glob("[0-9][0-9]_*.py") if p.name.startswith(prefix))


def build(src: Path) -> nbformat.NotebookNode:
    """The notebook (without outputs) a source file describes."""
    nb = jupytext.read(src, fmt="py:percent")
    cells = [nbformat.v4.new_markdown_cell(BADGE.format(name=src.with_suffix(".ipynb").name))]
    for cell in nb.cells:
        if cell.cell_type == "code" and cell.source.strip() == "# SETUP":
            cell = nbformat.v4.new_code_cell(SETUP)
        cells.append(cell)
    for i, cell in enumerate(cells):
        cell["id"] = f"c{i:02d}"
        cell.pop("metadata", None)
        cell["metadata"] = {}
    out = nbformat.v4.new_notebook(cells=cells)
    out.metadata = {
        "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
        "language_info": {"name": "python"},
        "colab": {"provenance": []},
        "accelerator": "GPU",
    }
    return out


def execute(nb: nbformat.NotebookNode, timeout: int = 600) -> nbformat.NotebookNode:
    from nbclient import NotebookClient

    os.environ.setdefault("SPECDEC_PAIR", "tiny")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    NotebookClient(nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(NB_DIR)}}).execute()
    return nb


def title(nb) -> str:
    for cell in nb.cells:
        if cell.cell_type == "markdown" and cell.source.startswith("# "):
            return re.sub(r"^#\s*\d+\s*·\s*", "", cell.source.splitlines()[0])
    return ""


def readme_table() -> str:
    rows = ["| # | notebook | what it shows | Colab |", "|---|---|---|---|"]
    for src in sources():
        name = src.with_suffix(".ipynb").name
        nb = jupytext.read(src, fmt="py:percent")
        rows.append(f"| {name[:2]} | [{name}](notebooks/{name}) | {title(nb)} | {BADGE.format(name=name)} |")
    return "\n".join(rows)


def bench_table() -> str:
    """The README's speed table, from the benchmark results committed under data/results/."""
    import json

    rows, notes = [], []
    mib = 2**20
    for path in sorted((ROOT / "data" / "results").glob("bench-*.json")):
        r = json.loads(path.read_text())
        m = r["meta"]
        if "weights_bytes" in m:
            w, rss = m["weights_bytes"], m.get("process_peak_rss_bytes")
            note = f"Memory ({path.name}): weights {w['draft'] / mib:.1f} MiB (draft) + {w['target'] / mib:.1f} MiB (target)"
            peaks = [s["peak_bytes"] for s in r["summary"] if "peak_bytes" in s]
            if peaks:
                note += "; peak allocated per method: " + ", ".join(
                    f"{k} {max(p[k] for p in peaks) / mib:,.0f} MiB" for k in peaks[0])
            elif rss:
                note += f"; the whole benchmark process peaked at {rss / mib:,.0f} MiB resident (Python, PyTorch and transformers included)"
            notes.append(note + ".")
        for s in r["summary"]:
            tps = s["tokens_per_s"]
            rows.append(
                f"| {m['pair']} | {m.get('prompt_set', 'workshop')} | {m['hardware']} | {m['dtype'].replace('torch.', '')} | {s['gamma']} | {s['temperature']} "
                f"| {s['alpha']:.2f} / {s.get('alpha_checked', float('nan')):.2f} | {m['c']:.3f} / {s.get('c_in_loop', float('nan')):.3f} | {tps.get('hf', float('nan')):.1f} | {tps.get('hf_assisted', float('nan')):.1f} "
                f"| {tps.get('ours_ar', float('nan')):.1f} | {tps.get('ours_speculative', float('nan')):.1f} "
                f"| {s.get('predicted_speedup', float('nan')):.2f}x / {s.get('predicted_speedup_with_v', float('nan')):.2f}x / "
                f"{s.get('predicted_speedup_in_loop', float('nan')):.2f}x / {s.get('measured_speedup_vs_ours_ar', float('nan')):.2f}x "
                f"| {s.get('ours_vs_hf_assisted', float('nan')):.2f}x ({s.get('ceiling_vs_hf_assisted', float('nan')):.2f}x) "
                f"| [{path.name}](data/results/{path.name}) |"
            )
    head = (
        "| pair | prompts | hardware | dtype | gamma | T | alpha (per drafted / per checked token) | c (in isolation / in the loop) | HF greedy tok/s | HF assisted tok/s | our loop tok/s "
        "| ours speculative tok/s | speedup predicted (v = 1 / c, v in isolation / c, v in the loop) / measured | ours / HF assisted (bound at equal forward cost) | data |"
        "\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
    )
    if not rows:
        return "(no benchmark results yet: python -m utils.bench)"
    return head + "\n" + "\n".join(rows) + "".join(f"\n\n{n}" for n in notes)


def fast_table() -> str:
    """The README's table of the compiled backend against every baseline, from data/results/bench-*.json
    files whose summaries hold a "compiled" section."""
    import json

    nan = float("nan")
    rows = []
    for path in sorted((ROOT / "data" / "results").glob("bench-*.json")):
        r = json.loads(path.read_text())
        m = r["meta"]
        for s in r["summary"]:
            cs = s.get("compiled")
            if not cs:
                continue
            tps = s["tokens_per_s"]
            cells = " | ".join(f"{tps.get(k, nan):.1f}" for k in (
                "hf", "hf_static", "hf_assisted", "ours_ar", "ours_ar_compiled", "ours_speculative", "ours_speculative_compiled"))
            spec = "ours_speculative_compiled"
            ratios = " / ".join(f"{cs.get(f'{spec}_vs_{b}', nan):.2f}x" for b in ("hf_assisted", "hf", "hf_static"))
            comp = ", ".join(f"{v:.0f} s" for v in cs["compile_s"].values())
            rows.append(
                f"| {m['pair']} | {m['hardware']} | {m.get('prompt_set', 'workshop')} | {s['gamma']} | {s['temperature']} "
                f"| {cs.get('alpha_checked', nan):.2f} | {cs.get('c_in_loop', nan):.3f} | {cells} | {ratios} | {comp} "
                f"| [{path.name}](data/results/{path.name}) |"
            )
    if not rows:
        return "(no compiled benchmark results yet: python -m utils.bench)"
    head = (
        "| pair | hardware | prompts | gamma | T | alpha (per checked token) | c (compiled, in the loop) | HF greedy | HF static cache "
        "| HF assisted | our loop, eager | our loop, compiled | ours speculative, eager | ours speculative, compiled "
        "| compiled speculative / HF assisted / HF greedy / HF static | compile time (first runs: AR, speculative) | data |"
        "\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
    )
    return head + "\n" + "\n".join(rows) + "\n\n" + fast_goals()


def fast_goals() -> str:
    """Issue #12's CPU goals against the measured ratios, and where the compiled loop's time goes,
    generated from the held-out benchmark files."""
    import json

    from utils.bench import CPU_GOALS as goals, GOAL_NAMES as names, cpu_goal_checks
    lines = ["Goals: the floors this project set for the compiled backend on a 2-core CPU with the tiny pair, "
             "held-out prompts, gamma 4: " + "; ".join(
                 f"T = {t:g}: " + ", ".join(f"{w:g}x {names[b]}" for b, w in g) for t, g in goals.items()) + ".", ""]
    for path in sorted((ROOT / "data" / "results").glob("bench-*heldout*.json")):
        r = json.loads(path.read_text())
        checks = cpu_goal_checks(r)
        for s in r["summary"]:
            cs = s.get("compiled")
            if not cs or s["temperature"] not in goals:
                continue
            for g in checks:
                if (g["gamma"], g["temperature"]) == (s["gamma"], s["temperature"]):
                    lines.append(f"- gamma {g['gamma']}, T = {g['temperature']:g}: compiled speculative / {names[g['baseline']]} "
                                 f"= **{g['ratio']:.2f}x** (goal {g['goal']:g}x: {'met' if g['met'] else 'not met'})")
            if "c_in_loop" in cs:
                lines.append(
                    f"  - where its time goes: {cs['loop_share']:.0%} inside the compiled forward passes, "
                    f"{cs['prefill_share']:.0%} in both models' eager prefill of the prompt; a draft step costs "
                    f"c = {cs['c_in_loop']:.3f} compiled target steps in the loop, the (gamma + 1)-token verify pass "
                    f"v = {cs['v_in_loop']:.2f} (steps of compiled plain decoding, its prefill left out); with alpha "
                    f"{cs['alpha_checked']:.2f} (per checked token) Thm 3.8 predicts {cs['predicted_speedup_in_loop']:.2f}x "
                    f"over compiled plain decoding for the decoding alone, measured "
                    f"{cs['measured_decode_speedup_vs_ours_ar_compiled']:.2f}x (end to end, prefills included: "
                    f"{cs['measured_speedup_vs_ours_ar_compiled']:.2f}x); compiled plain decoding alone is "
                    f"{cs['ours_ar_compiled_vs_hf']:.2f}x HF greedy")
        cold = r["meta"].get("cold_draft_steps")
        if cold:
            ms = lambda xs: ", ".join(f"{x:.2f}" for x in xs)  # noqa: E731
            lines.append(f"- compiled draft steps right after a target verify pass: {ms(cold['after_target_ms'])} ms; "
                         f"back to back: {ms(cold['back_to_back_ms'])} ms ({path.name}, `utils.bench.cold_draft_profile`)")
        mm = r["meta"].get("compiled_matmuls")
        if mm:
            parts = [f"{k.replace('_width_', ' width ')} {v['blas_calls_ms']:.2f} -> {v['loops_ms']:.2f} ms" for k, v in mm.items()]
            lines.append(f"- one compiled step, matrix products as BLAS calls -> as fused loops (the default): "
                         f"{'; '.join(parts)} ({path.name}, `utils.bench.matmul_variants`)")
    return "\n".join(lines)


def gpu_table() -> str:
    """The README's tables of GPU measurements, from data/results/gpu-*.json (with their provenance)."""
    import json

    out = []
    for path in sorted((ROOT / "data" / "results").glob("gpu-*.json")):
        r = json.loads(path.read_text())
        pv = r["provenance"]
        out.append(f"{pv['gpu']}, {pv['date']}, torch {pv['torch']}, transformers {pv['transformers']}; "
                   f"{pv['weights']}; {pv.get('note', '')} ([{path.name}](data/results/{path.name})).\n")
        out.append("| shape | dtype | weights | HF greedy, eager, dynamic cache | HF static cache (compiled) | bandwidth bound |")
        out.append("|---|---|---|---|---|---|")
        for m in r["models"]:
            bound = f"{m['bandwidth_bound_tok_s']:.0f} tok/s" if "bandwidth_bound_tok_s" in m else "–"
            out.append(f"| {m['model']} | {m['dtype']} | {m['weights_gb']:.1f} GB | {m['hf_greedy_dynamic_tok_s']:.1f} tok/s "
                       f"| {m['hf_greedy_static_tok_s']:.0f} tok/s | {bound} |")
        out.append("\n| pair, gamma 4, greedy (T 0), eager, dynamic cache | c | HF greedy | HF assisted | ours (eager loop) |")
        out.append("|---|---|---|---|---|")
        for q in r["pairs_gamma4_64_tokens"]:
            c = f"{q['c']:.2f}" if "c" in q else "–"
            out.append(f"| {q['pair']} ({q['draft']}) | {c} | {q['hf_greedy_tok_s']} tok/s | {q['hf_assisted_tok_s']} tok/s "
                       f"| {q['ours_tok_s']} tok/s |")
    return "\n".join(out) if out else "(no GPU measurements committed)"


def _cell(row: dict, key: str, fmt: str, step: str | None = None) -> str:
    """A measured value for a table, or why there is none (the step failed, was skipped, or never ran)."""
    if row.get(key) is not None:
        return format(row[key], fmt)
    if step and step in row.get("errors", {}):
        return "failed (" + row["errors"][step].split(":")[0] + ")"
    if step and step in row.get("skipped", []):
        return "skipped (time budget)"
    return "–"


def compiled_gpu_table(results: Path | None = None) -> str:
    """The README's tables of the compiled backend on real Gemma2 shapes, from
    data/results/shapes-compiled-cuda*.json (`python -m utils.shapes --compiled` on a GPU, by
    scripts/gpu_run.sh), with the goals of issue 12 and the aim past them as the file evaluates them;
    a line saying how to make one when none is committed."""
    import json

    sys.path.insert(0, str(ROOT))
    from utils.shapes import GOAL_ALPHA

    paths = sorted((results or ROOT / "data" / "results").glob("shapes-compiled-cuda*.json"))
    if not paths:
        return ("The compiled backend (`utils.fast`) has no GPU measurement committed yet: on a GPU machine "
                "`bash scripts/gpu_run.sh compiled-27b` (then `compiled-2b-9b`, `compiled-nf4`) makes one; copied into "
                "`data/results/`, `python scripts/build_notebooks.py 07` puts it here and in notebook 07.")
    out = []
    for path in paths:
        r = json.loads(path.read_text())
        m = r["meta"]
        state = "complete" if m["complete"] else f"stopped early ({m['stopped']})" if m["stopped"] else "incomplete"
        out.append(f"Compiled backend, {m['hardware']}, {m['date']}, torch {m['torch']}, transformers {m['transformers']}; "
                   f"{m['weights']}; batch 1, gamma {m['gamma']}, {m['max_new_tokens']} new tokens, {m['compile_mode']}; "
                   f"run {state}" + ("; SHRUNKEN configurations, not the real shapes" if m.get("shrunk") else "")
                   + f" ([{path.name}](data/results/{path.name})).\n")
        if r["models"]:
            out.append("| shape | dtype | compiled greedy: steady decode | of the bandwidth bound | compiled greedy, end to end "
                       "| HF eager, dynamic cache | HF static cache | compiled / HF dynamic | compiled / HF static "
                       "| same tokens as HF greedy |")
            out.append("|---|---|---|---|---|---|---|---|---|---|")
            for x in r["models"]:
                same = {True: "yes", False: "no"}.get(x.get("compiled_same_as_hf_greedy"), "–")
                out.append(f"| {x['size']} | {x['quantization'] or 'bf16'} | {_cell(x, 'compiled_decode_tok_s', '.1f', 'compiled')} tok/s "
                           f"| {_cell(x, 'compiled_vs_bound', '.0%', 'compiled')} | {_cell(x, 'compiled_tok_s', '.1f', 'compiled')} tok/s "
                           f"| {_cell(x, 'hf_dynamic_tok_s', '.1f', 'hf_dynamic')} tok/s "
                           f"| {_cell(x, 'hf_static_tok_s', '.1f', 'hf_static')} tok/s | {_cell(x, 'compiled_vs_hf_dynamic', '.2f')}x "
                           f"| {_cell(x, 'compiled_vs_hf_static', '.2f')}x | {same} |")
            out.append("\nSteady decode: tokens/s of the decoding steps alone (two run lengths differenced), what the "
                       "bandwidth bound limits; end to end: prompt included, as HF's figures, and the ratios to HF use it.")
        if r["pairs"]:
            alphas = m["alphas"]
            out.append("\n| pair (compiled, random draft) | c | v | round: all rejected / all accepted | "
                       + " | ".join(f"tok/s at alpha {a:g}" for a in alphas) + f" | at alpha {GOAL_ALPHA:g}: / HF dynamic, / HF static, / compiled greedy, / bandwidth bound |")
            out.append("|---|---|---|---|" + "---|" * len(alphas) + "---|")
            for q in r["pairs"]:
                at = {a["alpha"]: a for a in q.get("at_alpha", [])}
                rates = " | ".join(f"{at[a]['tok_s']:.1f}" if a in at else "–" for a in alphas)
                a8 = at.get(GOAL_ALPHA, {})
                vs = ", ".join(f"{a8[k]:.2f}x" if a8.get(k) is not None else "–"
                               for k in ("vs_hf_dynamic", "vs_hf_static", "vs_compiled_greedy", "vs_bandwidth_bound"))
                out.append(f"| {q['pair']} | {_cell(q, 'c', '.3f', 'compiled_steps')} | {_cell(q, 'v', '.2f', 'compiled_steps')} "
                           f"| {_cell(q, 'round_ms_rejected', '.1f', 'rounds')} / {_cell(q, 'round_ms_all_accepted', '.1f', 'rounds')} ms "
                           f"| {rates} | {vs} |")
        if r["self_draft"]:
            out.append("\n| model drafting for itself | alpha (measured; 1 in exact arithmetic) | tok/s | / compiled greedy "
                       "| same tokens as compiled greedy |")
            out.append("|---|---|---|---|---|")
            for d in r["self_draft"]:
                same = {True: "yes", False: "no"}.get(d.get("same_as_compiled_greedy"), "–")
                out.append(f"| {d['model']} | {_cell(d, 'alpha', '.3f', 'self_draft')} | {_cell(d, 'steady_tok_s', '.1f', 'self_draft')} "
                           f"| {_cell(d, 'vs_compiled_greedy', '.2f')}x | {same} |")
        skips = sorted({f"{x.get('pair') or x.get('model') or x['size'] + ' ' + (x['quantization'] or 'bf16')} {step}"
                        for x in r["models"] + r["pairs"] + r["self_draft"] for step in x.get("cudagraph_skips", {})})
        if skips:
            out.append("\n**CUDA graphs were skipped** for graphs compiled in: " + ", ".join(skips) + " (inductor's reasons "
                       "are in the file, `cudagraph_skips`); such a graph runs without CUDA graphs in every later step "
                       "that reuses it, so read the compiled numbers after those steps as slower than they need be.")
        breaks = sorted({f"{x.get('pair') or x.get('model') or x['size'] + ' ' + (x['quantization'] or 'bf16')} {step}"
                         for x in r["models"] + r["pairs"] + r["self_draft"] for step in x.get("compile_fallbacks", {})})
        if breaks:
            out.append("\n**Compiling fell back** (a graph break under fullgraph=True: compiled in pieces; or a compiler "
                       "failure: run eagerly) in: " + ", ".join(breaks) + " (why, in the file's `compile_fallbacks`): "
                       "those compiled numbers are exact but slower than one graph per step gives.")
        out.append("\n| goal (the floors this collection set; then the aim past any plain decoder) | measured | met |")
        out.append("|---|---|---|")
        for g in r["goals"]:
            met = {True: "yes", False: "**no**"}.get(g["met"], "not measured in this file")
            value = f"{g['value']:.0%}" if g["value"] is not None and g["threshold"] < 1 else (
                f"{g['value']:.2f}x" if g["value"] is not None else "–")
            out.append(f"| {g['goal']} | {value} | {met} |")
        out.append("")
    return "\n".join(out).rstrip()


def _replace_between(text: str, start_mark: str, end_mark: str, body: str) -> str:
    start, end = text.index(start_mark) + len(start_mark), text.index(end_mark)
    return text[:start] + "\n" + body + "\n" + text[end:]


COST_START, COST_END = "<!-- costmodel:start -->", "<!-- costmodel:end -->"
PAIRS_START, PAIRS_END = "<!-- pairs:start -->", "<!-- pairs:end -->"


def _span(values, fmt="{:.0%}") -> str:
    lo, hi = min(values), max(values)
    return fmt.format(lo) if fmt.format(lo) == fmt.format(hi) else f"{fmt.format(lo)} to {fmt.format(hi)}"


def cost_model_text() -> str:
    """The README's cost-model paragraph and out-of-sample table, generated from the committed sweep
    (bench-tiny-cpu.json) and the held-out run (bench-tiny-cpu-heldout.json)."""
    import json

    sys.path.insert(0, str(ROOT))
    from utils.bench import out_of_sample

    sweep = json.loads((ROOT / "data/results/bench-tiny-cpu.json").read_text())
    held = json.loads((ROOT / "data/results/bench-tiny-cpu-heldout.json").read_text())
    S = [s for s in sweep["summary"] if "cost_model_error_in_loop" in s]
    pct = "{:+.0%}"
    share = lambda m: [s["forward_share"][m] for s in S]  # noqa: E731
    lines = [
        f"From `bench-tiny-cpu.json` ({len(S)} configurations, workshop prompts, {sweep['meta']['hardware']}): fed with "
        f"c and v as the loop paid them, the cost model's error is {_span([s['cost_model_error_in_loop'] for s in S], pct)} "
        "(the loop's own work is not in the model); with c and v measured in isolation it is "
        f"{_span([s['cost_model_error_with_v'] for s in S], pct)}, with the paper's v = 1 "
        f"{_span([s['cost_model_error'] for s in S], pct)}. Inside the loop the draft's pass cost "
        f"{_span([s['c_in_loop'] for s in S], '{:.2f}')} target steps, against {sweep['meta']['c']:.3f} measured alone: "
        "the first draft step after a target pass runs cold, and after a fully accepted round the draft's first pass "
        "takes two tokens. Share of each run spent inside the models' forward passes: HF assisted "
        f"{_span(share('hf_assisted'))}, our loop {_span(share('ours_speculative'))}.",
        "",
        "Out of sample: c and v from that sweep (one process, one day) predict the held-out run (another process, "
        "other prompts, with its own alpha per checked token):",
        "",
        "| gamma | T | alpha per checked token (held-out) | c, v (from the sweep) | predicted | measured | error out of sample | error in sample |",
        "|---|---|---|---|---|---|---|---|",
    ]
    rows = out_of_sample(sweep, held)
    for r in rows:
        lines.append(f"| {r['gamma']} | {r['temperature']} | {r['alpha_checked']:.2f} | {r['c']:.3f}, {r['v']:.2f} | "
                     f"{r['predicted']:.2f}x | {r['measured']:.2f}x | {r['error']:+.1%} | {r['in_sample_error']:+.1%} |")
    lines += ["", "Error in sample: the same prediction with the held-out run's own c and v as its loop paid them "
              "(a decomposition of that run; what is left is the loop's own work, which the model leaves out)."]
    luck = [r for r in rows if abs(r["error"]) < abs(r["in_sample_error"]) and r["c"] > r["own_c"]]
    if luck:
        lines[-1] += (" Where the out-of-sample error is the smaller, it is partly a cancellation: the sweep's c, v ("
                      + "; ".join(f"{r['c']:.3f}, {r['v']:.2f}" for r in luck) + ") exceed the held-out run's own ("
                      + "; ".join(f"{r['own_c']:.3f}, {r['own_v']:.2f}" for r in luck)
                      + "), and that excess happens to cover the loop's own work.")
    return "\n".join(lines)


def pairs_table() -> str:
    """The README's pairs table; the "fits" column comes from utils.models.check_memory (the check
    load_pair makes before it downloads anything)."""
    sys.path.insert(0, str(ROOT))
    from utils.models import PAIRS, memory_fits

    rows = ["| name | draft → target | parameters (draft / target) | access | fits (from `check_memory`: weights + 15%) |",
            "|---|---|---|---|---|"]
    for name, spec in PAIRS.items():
        d, t = spec.draft.repo.split("/")[-1], spec.target.repo.split("/")[-1]
        n = lambda x: f"{x / 1e9:.2g} B" if x >= 1e9 else f"{x / 1e6:.3g} M"  # noqa: E731
        size = f"{n(spec.draft.params)} / {n(spec.target.params)} ({spec.target.params / spec.draft.params:.1f}x)"
        if name == "tiny":
            rows.append(f"| `{name}` | {d} → {t} | {size} | ships here, offline | anything, CPU |")
            continue
        access = "gated (token + license)" if spec.target.repo.startswith("google/") else "ungated"
        fits = "; ".join(f"{r['precision']} ({r['gib']:.1f} GiB): {', '.join(r['fits']) or 'none of these'}"
                         for r in memory_fits(name))
        rows.append(f"| `{name}` | {d} → {t} | {size} | {access} | {fits} |")
    return "\n".join(rows)


BEYOND_START, BEYOND_END = "<!-- beyond:start -->", "<!-- beyond:end -->"


def _load(name: str):
    import json

    path = ROOT / "data" / "results" / name
    return (json.loads(path.read_text()), path) if path.exists() else (None, path)


def _per_repeat(rows, i) -> float:
    """Tokens/s over rows (one per prompt, each holding every timed repeat's seconds) in repeat i."""
    return sum(r["new_tokens"] for r in rows) / sum(r["seconds_all"][i] for r in rows)


def _ratio_cells(ratios, noise) -> str:
    """'1.95x | 1.90-2.01x, faster': the median of the per-repeat ratios, their range, and the verdict
    they give: faster or slower only when every repeat clears the timing spread between repeats
    (utils.bench.noise_verdict, the rule the notebooks use too)."""
    import statistics

    sys.path.insert(0, str(ROOT))
    from utils.bench import noise_verdict

    lo, hi = min(ratios), max(ratios)
    return f"{statistics.median(ratios):.2f}x | {lo:.2f}-{hi:.2f}x (spread {noise:.0%}): {noise_verdict(ratios, noise)}"


def beyond_table() -> str:
    """Notebooks 08-11's committed measurements, one row per configuration worth reading: adaptive
    drafting (the best rule against a constant gamma), batched (smallest and largest batch), prompt
    lookup (copy and free prompts), self-speculation (the best exit with and without its adapter).
    Every speedup is computed one way: the ratio of tokens/s in each timed repeat (the methods took
    turns), its median as the headline, its range and a verdict against the spread between repeats."""
    import statistics

    sys.path.insert(0, str(ROOT))
    from utils.bench import repeat_spread

    head = ("| notebook | what | T | compared with | tokens/s | speedup (median of repeats) | range over repeats: verdict | "
            "alpha (per drafted / per checked) | c | hardware | data |\n"
            "|---|---|---|---|---|---|---|---|---|---|---|")
    rows = []

    def link(path):
        return f"[{path.name}](data/results/{path.name})"

    def hw(meta):
        return meta["hardware"]

    def a(x, key="alpha", key2="alpha_checked"):
        return f"{x[key]:.2f} / {x[key2]:.2f}" if x.get(key) is not None and x.get(key2) is not None else "–"

    res, path = _load("adaptive-tiny-cpu-heldout.json")
    if res:
        m = res["meta"]
        for t in m["temperatures"]:
            at_t = [r for r in res["summary"] if r["temperature"] == t]
            const = next(r for r in at_t if r["config"] == f"constant {m['gamma']}" or r["config"].startswith("constant"))
            rules = [r for r in at_t if "vs_constant_by_repeat" in r and r["config"] != "plain" and not r["config"].startswith("constant")]
            if rules:
                best = max(rules, key=lambda r: statistics.median(r["vs_constant_by_repeat"]))
                noise = max(best["noise_median_spread"], const["noise_median_spread"])
                rows.append(f"| 08 | adaptive: {best['config']} (best rule; {m['prompt_set']} prompts) | {t:g} | constant gamma {m['gamma']} | "
                            f"{best['tokens_per_s']:.0f} | {_ratio_cells(best['vs_constant_by_repeat'], noise)} | {a(best)} | "
                            f"{m['c']:.2f} | {hw(m)} | {link(path)} |")
    from utils.beyond import batched_table

    for path in sorted((ROOT / "data" / "results").glob("batched-tiny-*.json")):  # CPU, and CUDA once a GPU ran it
        res, _ = _load(path.name)
        for t in res["meta"]["temperatures"]:
            table = batched_table(res, t)
            for r in (table[0], table[-1]) if table else ():
                sel = {w: [x for x in res["rows"] if x["B"] == r["B"] and x["temperature"] == t and x["method"] == w]
                       for w in ("speculative (ours)", "plain (ours)")}
                n_rep = len(sel["plain (ours)"][0]["seconds_all"])
                ratios = [_per_repeat(sel["speculative (ours)"], i) / _per_repeat(sel["plain (ours)"], i) for i in range(n_rep)]
                noise = max(repeat_spread(x) for w in sel.values() for x in w)
                rows.append(f"| 09 | batched speculative, B = {r['B']} (gamma {res['meta']['gamma']}; {res['meta']['prompt_set']} prompts) | "
                            f"{t:g} | plain batched (ours), same B | {r['speculative (ours) tok/s']:.0f} | {_ratio_cells(ratios, noise)} | "
                            f"{a(r)} | {r['c']:.2f} (v {r['v']:.2f}) | {hw(res['meta'])} | {link(path)} |")
    res, path = _load("lookup-tiny-cpu.json")
    if res:
        plain = {(r["kind"], r["temperature"]): r for r in res["summary"] if r["method"] == "ours_plain"}
        for r in res["summary"]:
            if r["method"] == "ours_lookup":
                p = plain[(r["kind"], r["temperature"])]
                ratios = [x / y for x, y in zip(r["speedup_vs_plain_by_repeat"], p["speedup_vs_plain_by_repeat"])]
                noise = max(r["noise_median_spread"], p["noise_median_spread"])
                rows.append(f"| 10 | prompt lookup, {r['kind']} prompts (gamma {res['meta']['gamma']}, n-gram {res['meta']['max_ngram']}; built from "
                            f"{res['meta']['prompt_set']} prompts) | "
                            f"{r['temperature']:g} | our plain loop | {r['tokens_per_s']:.0f} | {_ratio_cells(ratios, noise)} | {a(r)} | 0 | "
                            f"{hw(res['meta'])} | {link(path)} |")
    res, path = _load("selfspec-tiny-cpu.json")
    if res:
        n_rep = res["meta"]["repeats"]
        for t in res["meta"]["temperatures"]:
            plain = [x for x in res["rows"] if x["temperature"] == t and x["draft"] == "plain"]
            for adapter in (False, True):
                exits = [r for r in res["summary"] if r["temperature"] == t and r.get("k") and r["adapter"] == adapter]
                if exits:
                    best = max(exits, key=lambda r: r["speedup_vs_plain"])
                    mine = [x for x in res["rows"] if x["temperature"] == t and x["draft"] == best["draft"]]
                    ratios = [_per_repeat(mine, i) / _per_repeat(plain, i) for i in range(n_rep)]
                    noise = max(statistics.median(repeat_spread(x) for x in rs) for rs in (mine, plain))
                    rows.append(f"| 11 | self-speculation, best exit: {best['draft']} (gamma {res['meta']['gamma']}; {res['meta']['prompt_set']} prompts) | {t:g} | our plain loop | "
                                f"{best['tokens_per_s']:.0f} | {_ratio_cells(ratios, noise)} | {a(best)} | {best['c']:.2f} | "
                                f"{hw(res['meta'])} | {link(path)} |")
    return head + "\n" + "\n".join(rows) if rows else head


def update_readme() -> None:
    readme = ROOT / "README.md"
    text = _replace_between(readme.read_text(), TABLE_START, TABLE_END, readme_table())
    if BENCH_START in text:
        text = _replace_between(text, BENCH_START, BENCH_END, bench_table())
    if FAST_START in text:
        text = _replace_between(text, FAST_START, FAST_END, fast_table())
    if GPU_START in text:
        text = _replace_between(text, GPU_START, GPU_END, gpu_table())
    if GPUFAST_START in text:
        text = _replace_between(text, GPUFAST_START, GPUFAST_END, compiled_gpu_table())
    if COST_START in text:
        text = _replace_between(text, COST_START, COST_END, cost_model_text())
    if PAIRS_START in text:
        text = _replace_between(text, PAIRS_START, PAIRS_END, pairs_table())
    if BEYOND_START in text:
        text = _replace_between(text, BEYOND_START, BEYOND_END, beyond_table())
    readme.write_text(first_run_text(text))


def run_seconds(ipynb) -> float | None:
    """Seconds the committed run of a notebook (a path, or an executed notebook) took, from nbclient's
    timestamps: the first code cell's start to the last one's reply (None if the notebook holds no
    timing, e.g. built --no-execute)."""
    from datetime import datetime

    nb = ipynb if isinstance(ipynb, nbformat.NotebookNode) else nbformat.read(ipynb, as_version=4)
    stamps = [c.metadata.get("execution", {}) for c in nb.cells if c.cell_type == "code"]
    stamps = [e for e in stamps if "iopub.execute_input" in e and "shell.execute_reply" in e]
    if not stamps:
        return None
    t = lambda x: datetime.fromisoformat(x.replace("Z", "+00:00"))  # noqa: E731
    return (t(stamps[-1]["shell.execute_reply"]) - t(stamps[0]["iopub.execute_input"])).total_seconds()


NB_LINK = re.compile(r"\]\(notebooks/(\d\d)_[\w]+\.ipynb\)")


def workshop_text(text: str) -> str:
    """WORKSHOP.md with the "runs in" cell of every table row that links a notebook set from that
    notebook's committed run (`run_seconds`); a mark after the number (such as *) is kept."""
    lines = []
    for line in text.split("\n"):
        cells = line.split("|")
        hit = [i for i, c in enumerate(cells) if NB_LINK.search(c)]
        if line.startswith("|") and hit and hit[0] + 1 < len(cells) - 1:
            i = hit[0] + 1
            ipynb = next(NB_DIR.glob(NB_LINK.search(cells[hit[0]]).group(1) + "_*.ipynb"), None)
            secs = run_seconds(ipynb) if ipynb else None
            if secs is not None:
                mark = re.sub(r"^[\s\d.–-]*s?", "", cells[i].strip())  # what follows the number, e.g. "*"
                cells[i] = f" {secs:.0f} s{mark} "
                line = "|".join(cells)
        lines.append(line)
    return "\n".join(lines)


FIRST_RUN = ROOT / "data" / "results" / "first-run-tiny-cpu.json"
FIRST_RUN_SPAN = re.compile(r"(<!-- first-run (\d\d) -->)(.*?)(<!-- /first-run -->)")


FIRST_RUN_CODE = ("utils/fast.py", "utils/sampling.py", "utils/speculative.py")  # what the compiled steps run


def first_run_digest(src: Path) -> str:
    """What a first-run time was measured on: a hash of the notebook's own code cells (its source's, not
    the generated setup cell, which a fork's repository setting changes), of FIRST_RUN_CODE and of the
    torch version, which decide what gets compiled. Prose edits leave it alone; `--check` flags a recorded
    time whose digest differs (rerun --time-first-run)."""
    import hashlib

    import torch

    code = [c.source for c in jupytext.read(src, fmt="py:percent").cells
            if c.cell_type == "code" and c.source.strip() != "# SETUP"]
    # torch's release, without the build's local tag (+cpu, +cu130): the same pin gives the same digest everywhere
    parts = [*code, *((ROOT / f).read_text() for f in FIRST_RUN_CODE), torch.__version__.split("+")[0]]
    return hashlib.sha256("\n\x00".join(parts).encode()).hexdigest()[:16]


def time_first_run(prefix: str) -> dict:
    """Run one notebook as a new machine's first run: PyTorch's compile caches (Inductor's, Triton's)
    in an empty temporary folder, so every kernel is compiled. Writes nothing but its entry in
    FIRST_RUN (seconds, machine, date, command), which the README and WORKSHOP quote."""
    import json
    import platform
    import tempfile
    from datetime import date

    import torch

    src, = sources(prefix)
    keys = ("TORCHINDUCTOR_CACHE_DIR", "TRITON_CACHE_DIR", "SPECDEC_PAIR", "CUDA_VISIBLE_DEVICES")
    saved = {k: os.environ.get(k) for k in keys}
    with tempfile.TemporaryDirectory(prefix="specdec-cold-") as tmp:  # the tiny pair on the CPU, as the file says
        os.environ.update(TORCHINDUCTOR_CACHE_DIR=f"{tmp}/inductor", TRITON_CACHE_DIR=f"{tmp}/triton",
                          SPECDEC_PAIR="tiny", CUDA_VISIBLE_DEVICES="")
        try:
            secs = run_seconds(execute(build(src)))
        finally:
            for k, v in saved.items():
                os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)
    if secs is None:
        raise SystemExit(f"{src.name}: the run recorded no cell timings, so there is no first-run time to write")
    data = json.loads(FIRST_RUN.read_text()) if FIRST_RUN.exists() else {}
    data[src.name[:2]] = dict(notebook=src.with_suffix(".ipynb").name, seconds=round(secs, 1),
                              cache="empty TORCHINDUCTOR_CACHE_DIR and TRITON_CACHE_DIR (every kernel compiled)",
                              machine=f"{platform.machine()} CPU, {os.cpu_count()} cores, torch threads {torch.get_num_threads()}",
                              pair="tiny", date=date.today().isoformat(), code_digest=first_run_digest(src),
                              command=f"python scripts/build_notebooks.py {src.name[:2]} --time-first-run")
    FIRST_RUN.write_text(json.dumps(data, indent=1) + "\n")
    return data[src.name[:2]]


def first_run_text(text: str) -> str:
    """Every `<!-- first-run NN -->...<!-- /first-run -->` span set to notebook NN's first-run time
    from FIRST_RUN (left alone where the file has no entry for NN)."""
    import json

    data = json.loads(FIRST_RUN.read_text()) if FIRST_RUN.exists() else {}

    def fill(m):
        run = data.get(m.group(2))
        if run is None:
            return m.group(0)
        secs = run["seconds"]
        when = f"{secs:.0f} s" if secs < 90 else f"about {secs / 60:.1f} minutes ({secs:.0f} s)"
        return f"{m.group(1)}{when}{m.group(4)}"

    return FIRST_RUN_SPAN.sub(fill, text)


def update_workshop() -> None:
    path = ROOT / "WORKSHOP.md"
    path.write_text(first_run_text(workshop_text(path.read_text())))


def check() -> int:
    """1 if any committed notebook's cells differ from what its source builds, or the README table
    or WORKSHOP's run times are stale, or a first-run time was measured on other code."""
    bad = []
    for src in sources():
        ipynb = src.parent.parent / src.with_suffix(".ipynb").name
        want = [(c.cell_type, c.source) for c in build(src).cells]
        have = [(c.cell_type, c.source) for c in nbformat.read(ipynb, as_version=4).cells] if ipynb.exists() else None
        if want != have:
            bad.append(ipynb.name)
    text = (ROOT / "README.md").read_text()
    if (readme_table() not in text or (BENCH_START in text and bench_table() not in text)
            or (FAST_START in text and fast_table() not in text)
            or (GPU_START in text and gpu_table() not in text)
            or (GPUFAST_START in text and compiled_gpu_table() not in text)
            or (COST_START in text and cost_model_text() not in text)
            or (PAIRS_START in text and pairs_table() not in text)
            or (BEYOND_START in text and beyond_table() not in text)):
        bad.append("README.md tables")
    if first_run_text(text) != text:
        bad.append("README.md first-run time")
    workshop = (ROOT / "WORKSHOP.md").read_text()
    if first_run_text(workshop_text(workshop)) != workshop:
        bad.append("WORKSHOP.md run times")
    for b in bad:
        print(f"stale: {b} (run python scripts/build_notebooks.py)")
    runs = json.loads(FIRST_RUN.read_text()) if FIRST_RUN.exists() else {}
    for src in sources():  # a rebuild does not mend these: only timing the first run again does
        run = runs.get(src.name[:2])
        if run is not None and run.get("code_digest") != first_run_digest(src):
            bad.append(src.name)
            print(f"stale: the first-run time of {src.name[:2]}: its code, {', '.join(FIRST_RUN_CODE)} or torch "
                  f"changed since it was measured (python scripts/build_notebooks.py {src.name[:2]} --time-first-run, "
                  "on a quiet machine)")
    return 1 if bad else 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("prefix", nargs="?", default="", help="only the notebooks whose name starts with it (default: all)")
    ap.add_argument("--check", action="store_true",
                    help="write nothing; exit 1 if a notebook, README table or WORKSHOP time is stale")
    ap.add_argument("--no-execute", action="store_true",
                    help="build without running: the notebooks lose their committed outputs")
    ap.add_argument("--time-first-run", action="store_true",
                    help="run ONE notebook with empty compile caches (a new machine's first run) and record its "
                         f"time in {FIRST_RUN.relative_to(ROOT)} (the notebook itself is not written)")
    args = ap.parse_args(argv)
    if args.check:
        if args.prefix or args.no_execute or args.time_first_run:
            ap.error("--check checks every notebook and writes nothing: give it alone")
        return check()
    srcs = sources(args.prefix)
    if not srcs:
        ap.error(f"no notebook source in notebooks/src starts with {args.prefix!r}; use a number such as "
                 f"{', '.join(p.name[:2] for p in sources())}, or none for all")
    if args.time_first_run:
        if len(srcs) != 1:
            ap.error("--time-first-run times one notebook: give its number, e.g. 07")
        print(time_first_run(args.prefix))
        update_readme()
        update_workshop()
        return 0
    for src in srcs:
        nb = build(src)
        t0 = time.perf_counter()
        if not args.no_execute:
            execute(nb)
        target = NB_DIR / src.with_suffix(".ipynb").name
        nbformat.write(nb, target)
        print(f"{target.relative_to(ROOT)}: {time.perf_counter() - t0:.0f} s", flush=True)
    update_readme()
    update_workshop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
