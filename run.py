"""One entry point that does all set-up: a virtual environment in .venv, the requirements, then
JupyterLab or the tests. Works the same on Linux, macOS and Windows (only the standard library).

    python run.py lab      # open the notebooks in JupyterLab (offline, on the shipped tiny pair)
    python run.py test     # run every test: unit tests and the notebooks (nbval), offline
    python run.py check    # is this machine ready for the workshop? (a minute; READY or what to fix)
    python run.py test -- -k greedy     # anything after -- goes to pytest

Environment: SPECDEC_PAIR picks the pair for `lab` (default tiny); `python run.py lab --online`
lets the notebooks reach the Hugging Face Hub (for Gemma2 or SmolLM2 pairs).
PIP_EXTRA_INDEX_URL is honoured by pip as usual, e.g. the PyTorch CPU index on a Linux laptop.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import platform
import shutil
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = Path(os.environ.get("SPECDEC_VENV", ROOT / ".venv")).resolve()  # absolute: child processes start elsewhere
REQS = ROOT / "requirements.txt"


def venv_python() -> Path:
    return VENV / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def unsupported_computer(system: str, machine: str) -> str | None:
    """Why requirements.txt cannot be installed on this computer at all, or None."""
    if system == "Darwin" and machine == "x86_64":
        return ("[run.py] PyTorch builds no longer exist for Intel Macs (2.2 was the last; these notebooks need "
                "the torch of requirements.txt). Open the notebooks on Colab instead: the badges in README.md.")
    return None


def skipped_requirements(system: str, machine: str, mac_version: str) -> dict[str, str]:
    """Requirements with no build for this computer, each with what it costs: skipped, not fatal."""
    major = int(mac_version.split(".")[0] or 0) if system == "Darwin" else 0
    if system == "Darwin" and machine == "arm64" and major < 14:
        return {"bitsandbytes": f"it has no build for macOS {mac_version or 'before 14'} (it needs macOS 14 or newer): "
                                "notebook 06 (4-bit) stops at its first 4-bit cell, and `run.py test` fails on the tests "
                                "that load 4-bit models; run 06 on Colab. The other notebooks work."}
    return {}


def requirements_here(skipped: dict[str, str]) -> Path:
    """requirements.txt, or a copy in .venv without the lines of `skipped`."""
    if not skipped:
        return REQS
    keep = [line for line in REQS.read_text().splitlines()
            if not any(line.strip().lower().startswith(name) for name in skipped)]
    here = VENV / "requirements-here.txt"
    here.write_text("\n".join(keep) + "\n")
    return here


def ensure_env() -> Path:
    """Create .venv and install requirements.txt into it, unless already done for this file."""
    problem = unsupported_computer(platform.system(), platform.machine())
    if problem:
        sys.exit(problem)
    py = venv_python()
    stamp = VENV / ".requirements.sha256"
    skipped = skipped_requirements(platform.system(), platform.machine(), platform.mac_ver()[0])
    # what was left out counts too: after an upgrade to macOS 14 the next run installs it
    want = hashlib.sha256(REQS.read_bytes() + " ".join(sorted(skipped)).encode()).hexdigest()
    if py.exists() and stamp.exists() and stamp.read_text().strip() == want:
        return py
    if py.exists() and subprocess.run([str(py), "-m", "pip", "--version"], capture_output=True).returncode != 0:
        sys.exit(f"[run.py] {VENV} has no pip (an interrupted set-up?): delete that folder and run the same command again.")
    if not py.exists():
        print(f"[run.py] creating virtual environment {VENV}", flush=True)
        try:
            venv.EnvBuilder(with_pip=True).create(VENV)
        except subprocess.CalledProcessError:  # ensurepip failed: Debian/Ubuntu's system Python ships without it
            shutil.rmtree(VENV, ignore_errors=True)
            sys.exit(f"[run.py] could not put pip into {VENV}: this Python has no working ensurepip. On Debian or "
                     f"Ubuntu install it with `sudo apt install python3-venv` (or python3.X-venv for your version), "
                     f"then run the same command again.")
    for name, why in skipped.items():
        print(f"[run.py] skipping {name}: {why}", flush=True)
    print("[run.py] installing requirements.txt (first time: a few minutes)", flush=True)
    done = subprocess.run([str(py), "-m", "pip", "install", "--quiet", "-r", str(requirements_here(skipped))])
    if done.returncode != 0:
        sys.exit("[run.py] pip could not install requirements.txt (its message is above): check the network, or "
                 "PIP_INDEX_URL / PIP_EXTRA_INDEX_URL if you set them, then run the same command again (it resumes).")
    stamp.write_text(want + "\n")
    return py


def child_env(offline: bool, lasting_compile_cache: bool = False) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env.setdefault("SPECDEC_PAIR", "tiny")
    if lasting_compile_cache:  # lab and check: torch.compile's kernels kept beside the environment, not in the
        # system's temporary folder, which many systems empty at reboot: notebook 07 compiled at home stays compiled
        env.setdefault("TORCHINDUCTOR_CACHE_DIR", str(VENV / "inductor-cache"))
    if offline:
        env["HF_HUB_OFFLINE"] = env["TRANSFORMERS_OFFLINE"] = "1"
    else:  # --online asked for the Hub: an offline switch left in the shell would silently win
        env.pop("HF_HUB_OFFLINE", None)
        env.pop("TRANSFORMERS_OFFLINE", None)
    return env


# JupyterLab's first start asks "Would you like to get notified about official Jupyter news?" in a
# pop-up that covers the playground; these defaults (in this project's environment only, not the
# user's own settings) answer no and skip the update check: the notebooks run offline anyway.
LAB_DEFAULTS = {"@jupyterlab/apputils-extension:notification": {"fetchNews": "false", "checkForUpdates": False}}
LAB_FLAGS = ["--LabApp.news_url=None", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"]


def write_lab_defaults(prefix: Path) -> Path:
    """Merge LAB_DEFAULTS into <env>/share/jupyter/lab/settings/overrides.json (JupyterLab's
    application-level setting defaults) and return its path."""
    import json

    path = prefix / "share" / "jupyter" / "lab" / "settings" / "overrides.json"
    current = json.loads(path.read_text()) if path.exists() else {}
    for plugin, values in LAB_DEFAULTS.items():
        current.setdefault(plugin, {}).update(values)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(current, indent=2) + "\n")
    return path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("command", choices=["lab", "test", "setup", "check"])
    ap.add_argument("--online", action="store_true", help="lab: allow the Hugging Face Hub")
    ap.epilog = "Arguments after -- go to pytest (test) or jupyter lab (lab)."
    argv = list(sys.argv[1:] if argv is None else argv)
    cut = argv.index("--") if "--" in argv else len(argv)
    args, unknown = ap.parse_known_args(argv[:cut])
    if unknown:
        ap.error(f"unrecognized arguments: {' '.join(unknown)}; flags for jupyter lab or pytest go after --, e.g. "
                 f"`python run.py {args.command} -- {' '.join(unknown)}`")
    rest = argv[cut + 1 :]  # our flags before --, theirs after
    if args.online and args.command != "lab":
        ap.error("--online only applies to `lab` (the tests always run offline)")
    py = ensure_env()
    if args.command == "setup":
        return 0
    if args.command in ("test", "check"):
        cmd = [str(py), "-m", *(["pytest"] if args.command == "test" else ["utils.preflight"]), *rest]
        return subprocess.run(cmd, cwd=ROOT, env=child_env(offline=True, lasting_compile_cache=args.command == "check")
                              ).returncode
    write_lab_defaults(VENV)
    cmd = [str(py), "-m", "jupyter", "lab", f"--ServerApp.root_dir={ROOT / 'notebooks'}", *LAB_FLAGS, *rest]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        cmd.append("--allow-root")  # containers and cloud machines often run as root
    return subprocess.run(cmd, cwd=ROOT, env=child_env(offline=not args.online, lasting_compile_cache=True)).returncode


if __name__ == "__main__":
    sys.exit(main())
