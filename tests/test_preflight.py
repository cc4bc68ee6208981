"""`python run.py check`: the workshop's pre-flight check says READY on a machine that is, and names
what is missing, with the fix, on one that is not."""

import pytest

from utils import preflight


def test_this_machine_is_ready(capsys, monkeypatch):
    checks = preflight.run_checks()
    names = [c.name for c in checks]
    assert {"import torch", "tiny pair loads (offline)", "speculative decoding is exact (greedy)", "torch.compile"} <= set(names)
    assert all(c.ok for c in checks if c.required), [c for c in checks if not c.ok]
    monkeypatch.setattr(preflight, "run_checks", lambda: checks)  # main prints them: no second run
    assert preflight.main([]) == 0
    out = capsys.readouterr().out
    assert out.rstrip().endswith("READY for the workshop") and "[ok] torch.compile: built a kernel for" in out
    assert "[ok] speculative decoding is exact (greedy)" in out and "python " in out  # environment_report first


def test_a_missing_cpp_compiler_is_not_ready_and_says_what_to_install(monkeypatch, no_cpp_compiler):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # the CPU's compiler, also on a machine with a GPU
    with no_cpp_compiler():
        check = preflight._compiler()
    assert not check.ok and "C++ compiler" in check.detail and "install" in check.detail and "eagerly" in check.detail
    text, ready = preflight.report(preflight._packages() + [check])
    assert not ready and "[FAIL] torch.compile" in text and text.endswith("then run `python run.py check` again")


def test_a_missing_package_fails_and_optional_bitsandbytes_only_warns(monkeypatch):
    real = preflight.importlib.import_module

    def without(name, *a):
        if name in ("ipywidgets", "bitsandbytes"):
            raise ImportError(f"No module named '{name}'")
        return real(name, *a)

    monkeypatch.setattr(preflight.importlib, "import_module", without)
    monkeypatch.setitem(__import__("sys").modules, "bitsandbytes", None)  # `import bitsandbytes` raises ImportError
    checks = {c.name: c for c in preflight._packages()}
    assert not checks["import ipywidgets"].ok and "playground (04)" in checks["import ipywidgets"].detail
    bnb = checks["import bitsandbytes"]
    assert not bnb.ok and not bnb.required and "notebook 06" in bnb.detail
    text, ready = preflight.report([bnb])
    assert ready and "[warn] import bitsandbytes" in text  # optional: still READY


def test_help_loads_nothing(capsys):
    with pytest.raises(SystemExit) as e:
        preflight.main(["--help"])
    assert e.value.code == 0 and "READY" in capsys.readouterr().out
