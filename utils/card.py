"""Numbers for the tiny pair's model card: acceptance rate alpha, cost ratio c, samples.

    python -m utils.card            # measure, print, write runs/card.json (ignored by git)
    python -m utils.card --write    # ... and replace the committed data/models/card.json and README.md

alpha is measured exactly as speculative_generate reports it (accepted / drafted), greedy, gamma 4,
64 new tokens per held-out prompt. c is the median time of one cached single-token decode step of
the draft divided by the target's, on this machine.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys

import torch

from .decoding import autoregressive_generate
from .models import MODELS_DIR, ROOT, load_pair
from .bench import step_cost_ratio
from .results import command_errors, write_json
from .speculative import speculative_generate

CARD = MODELS_DIR / "card.json"


def greedy_alpha(pair, prompts: list[str], gamma: int = 4, max_new_tokens: int = 64) -> dict:
    """Pooled acceptance over all prompts: accepted / drafted (HF's way of counting) and per checked
    token (accepted / (accepted + rejections), the alpha of the cost model), and tokens per round."""
    acc = drafted = rejected = rounds = new = 0
    for text in prompts:
        ids = pair.tokenizer(text, return_tensors="pt").input_ids.to(pair.device)
        out = speculative_generate(pair.target, pair.draft, ids, max_new_tokens=max_new_tokens, gamma=gamma)
        acc, drafted, rejected = acc + out.n_accepted, drafted + out.n_drafted, rejected + out.n_rejected
        rounds, new = rounds + len(out.rounds), new + out.new_tokens
    return {"alpha": acc / drafted, "alpha_checked": acc / (acc + rejected), "tokens_per_round": new / rounds,
            "gamma": gamma, "max_new_tokens": max_new_tokens}


def cost_ratio(pair, text: str = "The if statement is used for") -> dict:
    ids = pair.tokenizer(text, return_tensors="pt").input_ids.to(pair.device)
    return step_cost_ratio(pair, ids, steps=64, repeats=5)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(prog="python -m utils.card", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--write", action="store_true",
                    help="replace the committed data/models/card.json and data/models/README.md (default: runs/card.json)")
    args = ap.parse_args(argv)
    prompts = json.loads((ROOT / "data" / "prompts.json").read_text())
    with command_errors(ap):  # the shipped pair missing or broken: say how to restore it
        pair = load_pair("tiny", device="cpu")
    card = {
        "hardware": f"{platform.machine()} CPU, {torch.get_num_threads()} threads",
        "torch": torch.__version__,
        "greedy": greedy_alpha(pair, prompts["heldout"]),
        "cost": cost_ratio(pair),
        "samples": {},
    }
    for text in prompts["workshop"][:4]:
        ids = pair.tokenizer(text, return_tensors="pt").input_ids
        out = autoregressive_generate(pair.target, ids, 40)
        card["samples"][text] = pair.tokenizer.decode(out.sequences[0, ids.shape[1] :])
    report = MODELS_DIR / "training_report.json"
    if report.exists():
        card["training"] = json.loads(report.read_text())
    if not args.write:
        out = ROOT / "runs" / "card.json"
        out.parent.mkdir(exist_ok=True)
        write_json(out, card)
        print(f"wrote {out} (pass --write to replace the committed card)")
        return
    write_json(CARD, card)
    (MODELS_DIR / "README.md").write_text(render_markdown(card))
    json.dump(card, sys.stdout, indent=2)
    print()


def _size(path) -> str:
    return f"{sum(f.stat().st_size for f in path.glob('*.safetensors')) / 2**20:.1f} MiB"


def _steps(tr: dict, role: str) -> str:
    st = tr.get("steps", {})
    if role == "target":
        return f"{st.get('target_stage1')} at 12 layers + {st.get('target_stage2')} grown to 20"
    return f"{st.get('draft')} (+ {st.get('target_samples')} sequences written by the target)"


def _minutes(tr: dict, role: str) -> str:
    t = tr.get("train_seconds", {})
    keys = ("target_stage1", "target_stage2") if role == "target" else ("target_samples", "draft")
    return f"{sum(t.get(k, 0) for k in keys) / 60:.0f} min"


def _heldout_speed() -> list[str]:
    """Speed on held-out prompts, from the committed benchmark (data/results/bench-tiny-cpu-heldout.json)."""
    path = ROOT / "data" / "results" / "bench-tiny-cpu-heldout.json"
    if not path.exists():
        return []
    r = json.loads(path.read_text())
    parts = [f"T = {s['temperature']:g}: {s['measured_speedup_vs_ours_ar']:.2f}x (alpha per checked token {s['alpha_checked']:.2f})"
             for s in r["summary"] if "measured_speedup_vs_ours_ar" in s]
    if not parts:
        return []
    m = r["meta"]
    return [f"**Speed on held-out prompts** (`{path.relative_to(ROOT)}`, {m['hardware']}, {m['date']}, gamma "
            f"{r['summary'][0]['gamma']}): speculative decoding over our plain loop, " + "; ".join(parts) + ".", ""]


def _against_layers(c: float, draft_layers: int, target_layers: int) -> str:
    """c set against the ratio of layer counts, in words that follow the numbers."""
    r = draft_layers / target_layers
    where = f"the ratio of layer counts ({draft_layers} / {target_layers} = {r:.2f})"
    if c > 1.2 * r:
        return (f"above {where}: a step also pays costs that do not shrink with the layers (the output layer over "
                "the whole vocabulary, the per-step overhead of Python and PyTorch), and they weigh more on the small model.")
    return f"close to {where}: on a CPU a step costs roughly per layer."


def render_markdown(card: dict) -> str:
    """data/models/README.md, generated from card.json (no number typed by hand)."""
    tr, g, c = card.get("training", {}), card["greedy"], card["cost"]
    corpus, ppl = tr.get("corpus", {}), tr.get("heldout_perplexity", {})
    lines = [
        "# Model card: the tiny Gemma2 pair",
        "",
        "Generated by `python -m utils.card` from `card.json` and `training_report.json` (do not edit by hand).",
        "",
        "Two `Gemma2ForCausalLM` models that share one byte-level BPE tokenizer (4,096 tokens), so the",
        "notebooks exercise the real Gemma2 code paths (alternating sliding-window and global attention,",
        "attention and final logit soft-capping, GQA) offline and in seconds. They know only Python's",
        "documentation: continuations read as English about Python, not as facts about the world.",
        "",
        "| | draft | target |",
        "|---|---|---|",
    ]
    from transformers import AutoConfig

    cfg = {k: AutoConfig.from_pretrained(MODELS_DIR / f"tiny-gemma2-{k}") for k in ("draft", "target")}
    rows = [
        ("layers", lambda k: cfg[k].num_hidden_layers),
        ("hidden size / MLP size", lambda k: f"{cfg[k].hidden_size} / {cfg[k].intermediate_size}"),
        ("attention heads / KV heads", lambda k: f"{cfg[k].num_attention_heads} / {cfg[k].num_key_value_heads}"),
        ("sliding window", lambda k: cfg[k].sliding_window),
        ("weights (fp32 safetensors)", lambda k: _size(MODELS_DIR / f"tiny-gemma2-{k}")),
        ("held-out perplexity", lambda k: ppl.get(k, "n/a")),
        ("training steps", lambda k: _steps(tr, k)),
        ("training time (wall)", lambda k: _minutes(tr, k)),
    ]
    lines += [f"| {name} | {f('draft')} | {f('target')} |" for name, f in rows]
    lines += [
        "",
        f"**Acceptance (greedy, gamma {g['gamma']}, {g['max_new_tokens']} new tokens on each of the held-out prompts "
        f"of `data/prompts.json`, text the pair was not trained on):** alpha = {g['alpha']:.3f} accepted / drafted"
        + (f", {g['alpha_checked']:.3f} per checked token (the alpha of the cost model)" if "alpha_checked" in g else "")
        + f", {g['tokens_per_round']:.2f} tokens per target pass.",
        "",
        *_heldout_speed(),
        f"**Cost ratio on {card['hardware']} (torch {card['torch']}):** one cached decode step of the draft takes "
        f"{c['draft_step_ms']:.2f} ms, of the target {c['target_step_ms']:.2f} ms: c = {c['c']:.3f}, "
        + _against_layers(c["c"], cfg["draft"].num_hidden_layers, cfg["target"].num_hidden_layers),
        "",
        "**Training.** `python scripts/train_tiny_pair.py --overwrite` replaces these files (`--out DIR` trains a copy "
        "elsewhere); deterministic: fixed seeds, 2 threads, deterministic "
        f"algorithms. Run on {tr.get('hardware', 'n/a')} with torch {tr.get('torch', 'n/a')}. The target is trained "
        "at 12 layers (cross-entropy), grown to 20 layers without changing its function (new layers start as the "
        "identity) and trained on. The draft is distilled from it: half cross-entropy, half KL to the target's "
        "next-token distribution, every other batch taken from text the target wrote itself (half greedy, half "
        f"sampled). Blocks of {tr.get('block', 'n/a')} tokens, batch {tr.get('batch', 'n/a')}, AdamW, cosine "
        "schedule. The times are wall-clock; in the recorded run, stage 2 and the draft shared the two cores with "
        "other jobs, so an idle machine is faster.",
        "",
        f"**Corpus.** {corpus.get('source', 'n/a')}; {corpus.get('chars', 0):,} characters, "
        f"{tr.get('tokens', {}).get('train', 0):,} training tokens (the text's, cut to whole training blocks). License: {corpus.get('license', 'n/a')}; the text "
        "is read from the Python installation, not shipped here. Held out (perplexity, alpha prompts): the reference "
        f"topics {', '.join(corpus.get('heldout_topics', []))}. sha256 of the text: `{corpus.get('sha256', 'n/a')}` "
        "(another Python version ships slightly different documentation, hence other weights).",
        "",
        "**Greedy continuations of workshop prompts (target):**",
        "",
    ]
    lines += [f"- *{p}* → {t!r}" for p, t in card["samples"].items()]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
