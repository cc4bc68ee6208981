"""Is this machine ready for the workshop? `python run.py check` (or `python -m utils.preflight`)
runs a short check, offline, and prints one line per item: what works, and for what does not, which
notebook needs it and how to fix it. It ends with READY or NOT READY. Participants run it at home, after
`python run.py setup`, and bring the last line; an instructor learns of a missing compiler before
notebook 07, not during it.

Needed (NOT READY without them): the packages the notebooks import, the tiny pair loading offline,
speculative decoding equal to the target's own greedy text, and torch.compile building a kernel (notebook
07's compiled rows are eager ones without it). Optional: bitsandbytes (notebook 06 only).
"""

from __future__ import annotations

import argparse
import importlib
import time
import warnings
from dataclasses import dataclass


@dataclass
class Check:
    name: str
    ok: bool
    detail: str  # what was found, or what to do
    required: bool = True


def _packages() -> list[Check]:
    out = []
    for mod, needed_by in (("torch", "every notebook"), ("transformers", "every notebook"),
                           ("ipywidgets", "the playground (04)"), ("plotly", "the figures"), ("matplotlib", "the figures"),
                           ("jupyterlab", "`python run.py lab`")):
        try:
            m = importlib.import_module(mod)
            out.append(Check(f"import {mod}", True, getattr(m, "__version__", "installed")))
        except Exception as e:  # ImportError, or a library that fails to load (Windows: OSError, a missing DLL)
            out.append(Check(f"import {mod}", False, f"{type(e).__name__}: {e}; needed by {needed_by}: run "
                                                     "`python run.py setup` again"))
    try:
        import bitsandbytes

        out.append(Check("import bitsandbytes", True, bitsandbytes.__version__, required=False))
    except Exception as e:  # ImportError, or a build that fails to load its library
        out.append(Check("import bitsandbytes", False, f"{type(e).__name__}: {e}; only notebook 06 needs it (run it on "
                                                        "Colab instead)", required=False))
    return out


def _pair_and_exactness(max_new_tokens: int = 12) -> list[Check]:
    """The tiny pair loads offline, and greedy speculative decoding gives the target's own tokens."""
    import torch

    from .models import load_pair
    from .speculative import speculative_generate

    try:
        t0 = time.perf_counter()
        pair = load_pair("tiny")
        loaded = Check("tiny pair loads (offline)", True, f"{time.perf_counter() - t0:.1f} s on {pair.device}")
    except Exception as e:
        return [Check("tiny pair loads (offline)", False, f"{type(e).__name__}: {e}")]
    ids = pair.tokenizer("The quick brown fox", return_tensors="pt").input_ids.to(pair.device)
    try:
        with torch.inference_mode():
            ref = pair.target.generate(ids, max_new_tokens=max_new_tokens, do_sample=False)  # HF greedy, stops at EOS
        out = speculative_generate(pair.target, pair.draft, ids, max_new_tokens=max_new_tokens, gamma=4,
                                   eos_token_id=pair.tokenizer.eos_token_id)
    except Exception as e:
        return [loaded, Check("speculative decoding is exact (greedy)", False, f"{type(e).__name__}: {e}; please "
                                                                             "report it with this output")]
    same = out.sequences[0].tolist() == ref[0].tolist()
    detail = (f"{out.new_tokens} tokens equal to HF greedy on the target, alpha {out.acceptance_rate:.2f}" if same
              else "speculative decoding differs from the target's greedy text: please report it with this output")
    return [loaded, Check("speculative decoding is exact (greedy)", same, detail)]


def _compiler() -> Check:
    """Inductor finds a compiler for this machine's device and builds one small kernel with it."""
    import torch

    from .fast import compile_readiness, first_line

    device = "cuda" if torch.cuda.is_available() else "cpu"
    missing = compile_readiness(device)
    if missing:
        return Check("torch.compile", False, missing + " Without it notebook 07 runs eagerly.")
    t0 = time.perf_counter()
    try:  # caches off: a kernel cached by an earlier check (run.py keeps them) would prove nothing about today
        fn = torch.compile(lambda x: torch.sin(x) * 2 + 1, fullgraph=True)
        x = torch.linspace(0, 1, 64, device=device)
        with torch._inductor.config.patch(force_disable_caches=True), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="dynamo_pgo force disabled")  # what we asked for, not news
            ok = torch.allclose(fn(x), torch.sin(x) * 2 + 1)
    except Exception as e:  # the compiler was found but could not build (a broken toolchain)
        return Check("torch.compile", False, f"{type(e).__name__}: {first_line(e)[:300]}. Notebook 07 would run eagerly; "
                                             "on macOS install OpenMP (brew install libomp), elsewhere reinstall the C++ "
                                             "compiler (on a GPU: Triton and a C compiler)")
    return Check("torch.compile", ok, f"built a kernel for {device} in {time.perf_counter() - t0:.1f} s" if ok
                 else "the compiled kernel gave a wrong result: please report it with this output")


def run_checks() -> list[Check]:
    """Every check, in order; a check that needs an earlier one to pass is skipped when it failed."""
    checks = _packages()
    if all(c.ok for c in checks if c.name in ("import torch", "import transformers")):
        checks += _pair_and_exactness()
        checks.append(_compiler())
    return checks


def report(checks: list[Check]) -> tuple[str, bool]:
    """The lines to print, and whether every required check passed."""
    ready = all(c.ok for c in checks if c.required)
    lines = [f"[{'ok' if c.ok else 'FAIL' if c.required else 'warn'}] {c.name}: {c.detail}" for c in checks]
    lines.append("READY for the workshop" if ready else "NOT READY: fix the FAIL lines above, then run "
                 "`python run.py check` again")
    return "\n".join(lines), ready


def main(argv=None) -> int:
    argparse.ArgumentParser(prog="python run.py check", description=__doc__,
                            formatter_class=argparse.RawDescriptionHelpFormatter).parse_args(argv)
    checks = run_checks()
    try:
        from .models import environment_report

        print(environment_report())
    except Exception:  # torch or transformers does not import: the checks below say so
        pass
    text, ready = report(checks)
    print(text)
    return 0 if ready else 1


if __name__ == "__main__":
    raise SystemExit(main())
