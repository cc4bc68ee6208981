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
