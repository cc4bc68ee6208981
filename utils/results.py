"""Result files: strict JSON (no NaN or Infinity, which many JSON readers reject; they become null)."""

from __future__ import annotations

import json
import math
import os
from contextlib import contextmanager
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

    if out.exists() and not out.is_dir():
        ap.error(f"--out {out} is a file: --out takes a folder, and the command names its file inside it ({path.name})")
    if path.exists() and not overwrite:
        ap.error(f"{path} exists; pass --overwrite to replace it, or {other}")
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".write-test-{os.getpid()}"
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        ap.error(f"cannot write to --out {out}: {e.strerror or e}")


def check_pair(ap, name: str | None) -> str:
    """--pair checked before any model is loaded: a key of utils.models.PAIRS, and where it is not
    given $SPECDEC_PAIR (else "tiny"), as load_pair picks it. Returns the pair's name."""
    from .models import PAIRS

    if name is not None and name not in PAIRS:
        ap.error(f"--pair must be one of {', '.join(PAIRS)} (got {name!r})")
    env = os.environ.get("SPECDEC_PAIR")
    if name is None and env and env not in PAIRS:
        ap.error(f"SPECDEC_PAIR={env!r} is not a pair: set it to one of {', '.join(PAIRS)}, unset it (tiny), "
                 "or pass --pair")
    return name or env or "tiny"


def check_device(ap, device: str | None) -> str:
    """--device checked before any model is loaded (utils.models.resolve_device): a device this machine
    has, so that --device cuda without a GPU stops here. Returns it ('cuda' if there is one, else 'cpu',
    when not given)."""
    from .models import DeviceError, resolve_device

    try:
        return str(resolve_device(device))
    except DeviceError as e:
        ap.error(f"--device {device}: {e}")


@contextmanager
def command_errors(ap, oom: str = "ask for less (a lower --max-new-tokens, smaller --batch-sizes), 4-bit weights "
                                  "(--quantization nf4 where the command has it), or a smaller --pair"):
    """Around a command's loading and running: an error whose message says what to do ends it through
    ap.error (that message, exit status 2) rather than a traceback from inside transformers. That is a
    utils.models.PairError (a gated model without a token, no network, mismatched tokenizers, too
    little memory), a run longer than the model's context on the compiled engine
    (utils.fast.ContextLengthError) or CUDA running out of memory (`oom` says what to ask for instead)."""
    import torch

    from .fast import ContextLengthError
    from .models import PairError

    try:
        yield
    except (PairError, ContextLengthError) as e:
        ap.error(str(e))
    except torch.cuda.OutOfMemoryError:
        ap.error(f"out of GPU memory: {oom}")


def check_bench_flags(ap, args, kind: str, counts: dict, suffix: str = "",
                      other: str = "another --out") -> tuple[Path, list[str]]:
    """The flags the benchmark commands share, checked before any model is loaded: --pair (check_pair),
    --device (check_device), each of `counts` ({"--flag": value}, None allowed) >= 1, --warmup >= 0 and
    --temperatures finite and >= 0 where the command has them, --prompts a set of data/prompts.json
    (with at least --n-prompts prompts where given), and the output file
    <kind>-<pair>-<device><suffix>.json (check_output; `other` says how else to keep an existing one).
    Returns (that path, the prompt set)."""
    from .models import ROOT
    from .sampling import MIN_TEMPERATURE

    pair = check_pair(ap, args.pair)
    device = check_device(ap, args.device)
    for flag, value in counts.items():
        if value is not None and value < 1:
            ap.error(f"{flag} must be >= 1 (got {value})")
    if getattr(args, "warmup", 0) < 0:
        ap.error(f"--warmup must be >= 0 (got {args.warmup})")
    temps = getattr(args, "temperatures", [])
    if any(not math.isfinite(t) or t < 0 or 0 < t < MIN_TEMPERATURE for t in temps):
        ap.error(f"--temperatures must be finite and >= 0: 0 (greedy) or at least {MIN_TEMPERATURE:g} (got {temps})")
    sets = {k: v for k, v in json.loads((ROOT / "data" / "prompts.json").read_text()).items() if not k.startswith("_")}
    if args.prompts not in sets:
        ap.error(f"--prompts must be one of {', '.join(sets)} (got {args.prompts!r})")
    n = getattr(args, "n_prompts", None)
    if n is not None and n > len(sets[args.prompts]):
        ap.error(f"--n-prompts {n} is more than the {len(sets[args.prompts])} prompts of {args.prompts!r}")
    mnt = getattr(args, "max_new_tokens", None)
    if mnt is not None and mnt >= 1:
        gammas = getattr(args, "gammas", None) or [getattr(args, "gamma", None) or 0]
        check_context(ap, pair, mnt, max(gammas), sets[args.prompts][:n] if n else sets[args.prompts])
    path = args.out / f"{kind}-{pair}-{device.split(':')[0]}{suffix}.json"
    check_output(ap, path, args.out, args.overwrite, other)  # fail now, not after a run of minutes
    return path, sets[args.prompts]


def check_context(ap, pair_name: str, max_new_tokens: int, gamma: int = 0, prompts=()) -> None:
    """--max-new-tokens checked against a shipped pair's context before loading it: the longest of
    `prompts` + max_new_tokens (+ a round's gamma + 1 positions when gamma is given: a speculative run)
    must fit both models' max_position_embeddings (HF's generate would only warn past it, and the text degrades). A Hub
    pair's context is known once it is loaded, where the compiled engine checks it; a command whose
    prompts are built later (longer) than `prompts` gets a floor here."""
    from .models import MODELS_DIR, PAIRS, shipped_config

    ctxs = [shipped_config(pair_name, "max_position_embeddings", role) for role in ("draft", "target")]
    if None in ctxs:  # a Hub pair, or a missing shipped model (load_pair says what to do)
        return
    ctx, longest = min(ctxs), 0
    if prompts:
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(MODELS_DIR / PAIRS[pair_name].target.repo)
        longest = max(len(tok(p).input_ids) for p in prompts)
    extra = gamma + 1 if gamma else 0  # a speculative round's verify pass may reach gamma + 1 positions past the text
    need = longest + max_new_tokens + extra
    if need <= ctx:
        return
    parts = f"the longest prompt ({longest} tokens) + the new tokens" + (f" + a round's gamma + 1 ({extra})" if extra else "")
    fits = ctx - longest - extra
    ap.error(f"--max-new-tokens {max_new_tokens} does not fit the {pair_name} pair's context of {ctx} positions: {parts} "
             f"make {need}; " + (f"use --max-new-tokens {fits} or less" if fits >= 1 else
                                 "the longest prompt" + (" and a round's gamma + 1" if extra else "") + " already fill it: "
                                 "shorten the prompts" + (" or lower gamma" if extra else "")))
