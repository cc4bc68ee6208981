"""The DataCamp tutorial's benchmark, rerun honestly: its five prompts, 200 new tokens, any pair.

    python -m utils.datacamp                                 # tiny pair on the CPU (about 3 minutes)
    python -m utils.datacamp --pair gemma2-2b-9b             # on a GPU, with a Hugging Face token
    python -m utils.datacamp --pair gemma2-2b-9b --quantization nf4 --max-new-tokens 200

The tutorial timed "normal inference" (the target alone) against its draft-and-score method, which
is not speculative decoding: it returns the draft's text (notebook 02). This adds the two methods
that are: Hugging Face assisted generation and our `speculative_generate`, all greedy, and checks
which outputs are the target's own greedy text. Results go to
runs/datacamp-<pair>-<device>[-<quantization>].json (--out data/results: the committed one) with
hardware and versions.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import torch

from .bench import RESULTS, interleaved, metadata, step_cost_ratio
from .decoding import draft_and_score
from .models import ROOT, load_pair, load_prompts
from .results import check_context, check_device, check_output, check_pair, command_errors, write_json

METHODS = {"normal": "hf", "HF assisted": "hf_assisted", "ours": "ours_speculative"}


def run(pair, *, max_new_tokens: int = 200, gamma: int = 4, repeats: int = 3, n_prompts: int = 5, progress: bool = True) -> dict:
    """Time every method on each DataCamp prompt (median of `repeats` after a warm-up).

    Returns dict(meta, rows): one row per prompt with seconds per method, alpha (per drafted
    token), tokens per round, and `same_as_target` (does the method return the target's greedy text?).
    """
    from tqdm.auto import tqdm

    tok = pair.tokenizer
    prompts = load_prompts("datacamp")[:n_prompts]
    cost = step_cost_ratio(pair, tok(prompts[0], return_tensors="pt").input_ids.to(pair.device))
    rows = []
    for prompt in tqdm(prompts, disable=not progress, desc="datacamp"):
        ids = tok(prompt, return_tensors="pt").input_ids.to(pair.device)  # (1, T)
        by_method = interleaved(list(METHODS.values()), pair, ids, max_new_tokens, gamma, repeats=repeats)
        runs = {name: by_method[m] for name, m in METHODS.items()}
        draft_and_score(pair.draft, pair.target, tok, prompt, max_new_tokens)  # warm-up
        ds_runs = sorted((draft_and_score(pair.draft, pair.target, tok, prompt, max_new_tokens) for _ in range(repeats)),
                         key=lambda r: r["draft_time"] + r["score_time"])
        ds = ds_runs[len(ds_runs) // 2]  # the median run
        target_ids = runs["normal"]["new_ids"]
        rows.append(dict(
            prompt=prompt,
            new_tokens=runs["normal"]["new_tokens"],
            seconds={"normal": runs["normal"]["seconds"], "draft+score": ds["draft_time"] + ds["score_time"],
                     "HF assisted": runs["HF assisted"]["seconds"], "ours": runs["ours"]["seconds"]},
            same_as_target={"normal": True, "draft+score": ds["draft_ids"][0, ids.shape[1]:].tolist() == target_ids,
                            "HF assisted": runs["HF assisted"]["new_ids"] == target_ids, "ours": runs["ours"]["new_ids"] == target_ids},
            draft_and_score_logprob=ds["score"],
            alpha=runs["ours"]["alpha"], alpha_checked=runs["ours"]["alpha_checked"], tau=runs["ours"]["tau"],
        ))
    meta = dict(metadata(pair, cost, max_new_tokens, repeats), gamma=gamma, prompts="datacamp")
    return dict(meta=meta, rows=rows)


def table(result: dict) -> str:
    """A text table: seconds per prompt and method, then the mean and the speedup over "normal"."""
    rows, names = result["rows"], list(result["rows"][0]["seconds"])
    lines = [f"{'prompt':44s} " + " ".join(f"{n:>12s}" for n in names) + f" {'alpha':>6s}"]
    for r in rows:
        lines.append(f"{r['prompt'][:44]:44s} " + " ".join(f"{r['seconds'][n]:11.3f}s" for n in names) + f" {r['alpha']:6.2f}")
    mean = {n: statistics.mean(r["seconds"][n] for r in rows) for n in names}
    lines.append(f"{'mean':44s} " + " ".join(f"{mean[n]:11.3f}s" for n in names))
    lines.append(f"{'speedup over normal':44s} " + " ".join(f"{mean['normal'] / mean[n]:11.2f}x" for n in names))
    same = {n: all(r["same_as_target"][n] for r in rows) for n in names}
    lines.append(f"{'returns the target text':44s} " + " ".join(f"{str(same[n]):>12s}" for n in names))
    return "\n".join(lines)


def save(result: dict, out_dir: Path = RESULTS) -> Path:
    m = result["meta"]
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = f"datacamp-{m['pair']}-{m['device'].split(':')[0]}" + (f"-{m['quantization']}" if m["quantization"] else "")
    path = out_dir / f"{stem}.json"
    write_json(path, result)
    return path


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m utils.datacamp", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pair", default=None, help="a key of utils.models.PAIRS (default $SPECDEC_PAIR or tiny)")
    ap.add_argument("--max-new-tokens", type=int, default=200)
    ap.add_argument("--gamma", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--n-prompts", type=int, default=5)
    ap.add_argument("--device", default=None)
    ap.add_argument("--quantization", default=None, choices=["nf4", "fp4"])
    ap.add_argument("--out", type=Path, default=ROOT / "runs",
                    help="folder for the JSON (default runs/, ignored by git; the committed result is in data/results)")
    ap.add_argument("--overwrite", action="store_true", help="replace an existing result file")
    args = ap.parse_args(argv)
    pair_name = check_pair(ap, args.pair)
    device = check_device(ap, args.device)
    for flag, value in (("--max-new-tokens", args.max_new_tokens), ("--gamma", args.gamma),
                        ("--repeats", args.repeats), ("--n-prompts", args.n_prompts)):
        if value < 1:
            ap.error(f"{flag} must be >= 1 (got {value})")
    if args.n_prompts > 5:
        ap.error(f"--n-prompts: the DataCamp tutorial has 5 prompts (got {args.n_prompts})")
    check_context(ap, pair_name, args.max_new_tokens, args.gamma, load_prompts("datacamp")[: args.n_prompts])
    path = args.out / (f"datacamp-{pair_name}-{device.split(':')[0]}" + (f"-{args.quantization}" if args.quantization else "") + ".json")
    check_output(ap, path, args.out, args.overwrite)  # fail now, not after minutes
    with command_errors(ap), torch.inference_mode():
        pair = load_pair(args.pair, device=args.device, quantization=args.quantization)
        result = run(pair, max_new_tokens=args.max_new_tokens, gamma=args.gamma, repeats=args.repeats, n_prompts=args.n_prompts)
    print(table(result))
    m = result["meta"]
    print(f"[{m['pair']}, {m['hardware']}, {m['dtype']}, gamma={m['gamma']}, greedy, c={m['c']:.3f}]")
    print(f"wrote {save(result, args.out)}")


if __name__ == "__main__":
    main()
