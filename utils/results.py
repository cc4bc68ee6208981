"""Result files: strict JSON (no NaN or Infinity, which many JSON readers reject; they become null)."""

from __future__ import annotations

import json
import math
from pathlib import Path


def finite(obj):
    """A copy of obj with every non-finite float (NaN, inf) replaced by None."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite(v) for v in obj]
    return obj


def to_json(obj, **kwargs) -> str:
    """json.dumps that writes null for NaN/inf and refuses anything else non-standard."""
    return json.dumps(finite(obj), allow_nan=False, **kwargs)


def write_json(path: Path, obj) -> None:
    Path(path).write_text(to_json(obj, indent=2) + "\n")


def check_output(ap, path: Path, out: Path, overwrite: bool, other: str = "another --out") -> None:
    """For a command line: refuse (ap.error, exit 2) an existing result file without --overwrite, and
    an --out folder that cannot be written, before any work starts rather than after a long run."""
    import os

    if path.exists() and not overwrite:
        ap.error(f"{path} exists; pass --overwrite to replace it, or {other}")
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".write-test-{os.getpid()}"
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        ap.error(f"cannot write to --out {out}: {e.strerror or e}")
