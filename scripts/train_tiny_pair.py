"""Train the tiny Gemma2 draft/target pair that ships in data/models/.

    python scripts/train_tiny_pair.py --out runs/tiny-pair    # full run (about an hour on 2 CPU cores)
    python scripts/train_tiny_pair.py --overwrite             # ... replacing the shipped pair in data/models
    python scripts/train_tiny_pair.py --smoke                 # a few steps into a temporary folder, to check the script

Deterministic: fixed seeds, fixed thread count, a corpus read from Python's own standard library
(`pydoc_data.topics`, the language reference topics, and the
docstrings of the pure-Python modules: PSF License). The same Python
version and torch build give the same weights; another Python ships a slightly different corpus.

Both models are real `Gemma2ForCausalLM` (sliding-window and global layers alternating, logit
soft-capping), sharing one byte-level BPE tokenizer. The target is deep (20 layers) and the draft
shallow (2 layers, wider): on a CPU a decoding step costs roughly per layer, so c = draft step /
target step is small. The target is trained at 12 layers, then grown to 20 without changing its
function (grow()) and trained on. The draft is distilled from the target (KL to the target's
next-token distribution plus cross-entropy), on the corpus and on text the target wrote itself
(on-policy distillation), which is how one builds a draft that agrees with its target.
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import json
import math
import platform
import re
import sysconfig
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
OUT_DIR = ROOT / "data" / "models"
SEED = 1234
BLOCK = 128  # training context; > sliding window, so training sees the sliding masks
VOCAB = 4096
SPECIAL = ["<pad>", "<eos>", "<bos>", "<unk>"]  # ids 0..3, the order Gemma2Config expects

COMMON = dict(
    vocab_size=VOCAB,
    hidden_size=128,
    intermediate_size=512,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=32,
    query_pre_attn_scalar=32,
    max_position_embeddings=1024,
    sliding_window=64,
    attn_logit_softcapping=50.0,
    final_logit_softcapping=30.0,
    pad_token_id=0,
    eos_token_id=1,
    bos_token_id=2,
    tie_word_embeddings=True,
)
LAYERS = {"target": 20, "draft": 2}
STAGE1_LAYERS = 12  # the target is trained at 12 layers, then grown to 20 (see grow())
DRAFT_SHAPE = dict(hidden_size=192, intermediate_size=768, head_dim=48, query_pre_attn_scalar=48)


def stdlib_docstrings(min_chars: int = 200) -> list[str]:
    """Module, class and function docstrings of the pure-Python standard library, in file order."""
    root = Path(sysconfig.get_paths()["stdlib"])
    skip = {"idlelib", "lib2to3", "site-packages", "dist-packages", "turtledemo", "ensurepip", "pydoc_data"}
    docs = []
    for f in sorted(root.rglob("*.py")):
        parts = f.relative_to(root).parts
        if any(p in skip or p.startswith(("test", "config-", "__phello__")) for p in parts):
            continue
        try:
            tree = ast.parse(f.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                d = ast.get_docstring(node)
                if d and len(d) >= min_chars:
                    docs.append(d)
    return docs


def load_corpus() -> tuple[str, str, dict]:
    """Return (train_text, heldout_text, info).

    Text: the language reference topics (pydoc_data) and the standard library's docstrings.
    Held out: every 10th reference topic, sorted by name.
    """
    import pydoc_data.topics as topics

    keys = sorted(topics.topics)
    docs = [_clean(topics.topics[k]) for k in keys]
    held = [d for i, d in enumerate(docs) if i % 10 == 5]
    train = [d for i, d in enumerate(docs) if i % 10 != 5] + stdlib_docstrings()
    raw = "\n\n".join(docs + train).encode()
    info = {
        "source": "Python %s standard library: pydoc_data.topics (the language reference topics) "
        "and module/class/function docstrings of 200+ characters" % platform.python_version(),
        "license": "PSF License Version 2 (Python documentation and source)",
        "topics": len(keys),
        "docstrings": len(train) - (len(keys) - len(held)),
        "heldout_topics": [k for i, k in enumerate(keys) if i % 10 == 5],
        "sha256": hashlib.sha256(raw).hexdigest(),
        "chars": len(raw),
    }
    return "\n\n".join(train), "\n\n".join(held), info


def _clean(text: str) -> str:
    text = re.sub(r"^[*=\-]{3,}\s*$", "", text, flags=re.M)  # reST underlines
    text = re.sub(r"\n{3,}", "\n\n", text)
    return text.strip()


def train_tokenizer(text: str, out_dirs: list[Path]):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB,
        special_tokens=SPECIAL,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator([text], trainer=trainer)
    tok.post_processor = processors.TemplateProcessing(
        single="<bos> $A", pair="<bos> $A <bos> $B", special_tokens=[("<bos>", 2)]
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<bos>",
        eos_token="<eos>",
        pad_token="<pad>",
        unk_token="<unk>",
        model_max_length=COMMON["max_position_embeddings"],
    )
    for d in out_dirs:
        fast.save_pretrained(d)
    return fast


def make_blocks(ids: list[int], block: int) -> torch.Tensor:
    n = (len(ids) - 1) // block
    return torch.tensor(ids[: n * block + 1])


def batches(stream: torch.Tensor, block: int, batch: int, steps: int, gen: torch.Generator):
    """Random windows of length block+1 from the token stream."""
    hi = len(stream) - block - 1
    for _ in range(steps):
        starts = torch.randint(0, hi, (batch,), generator=gen)
        x = torch.stack([stream[s : s + block + 1] for s in starts.tolist()])
        yield x[:, :-1], x[:, 1:]


@torch.no_grad()
def perplexity(model, stream: torch.Tensor, block: int = BLOCK) -> float:
    model.eval()
    nll, count = 0.0, 0
    for s in range(0, len(stream) - block - 1, block):
        x = stream[s : s + block + 1].unsqueeze(0)
        logits = model(x[:, :-1]).logits  # (1, T, V)
        nll += F.cross_entropy(logits[0], x[0, 1:], reduction="sum").item()
        count += block
    return math.exp(nll / count)


def grow(model, n_layers: int):
    """Function-preserving depth growth: a deeper Gemma2 that computes exactly what `model` does.

    Old layers keep their weights and their (sliding / global) type; new layers are inserted
    between them in sliding+global pairs. A new layer starts as the identity: Gemma2's post-attention
    and post-MLP RMSNorms scale by (1 + weight), so weight = -1 zeroes the layer's contribution
    while gradients still reach it through those norm weights.
    """
    from transformers import Gemma2Config, Gemma2ForCausalLM

    old = model.config
    cfg = Gemma2Config(**{**COMMON, "num_hidden_layers": n_layers})
    big = Gemma2ForCausalLM(cfg)
    big.config._attn_implementation = "eager"
    old_pairs, new_pairs = old.num_hidden_layers // 2, n_layers // 2
    extra = new_pairs - old_pairs
    # spread the new pairs over the middle: the first and last old pairs stay at the ends
    slots = [1 + j * (old_pairs - 2) // extra for j in range(extra)]
    order = []
    for i in range(old_pairs):
        order.append(("old", i))
        order += [("new", j) for j in range(extra) if slots[j] == i]
    sd = big.state_dict()
    src = model.state_dict()
    for name in ("model.embed_tokens.weight", "model.norm.weight"):
        sd[name] = src[name].clone()
    for pos, (kind, i) in enumerate(order):
        for j in (0, 1):  # the sliding and the global layer of the pair
            dst = f"model.layers.{2 * pos + j}."
            if kind == "old":
                for key, val in src.items():
                    if key.startswith(f"model.layers.{2 * i + j}."):
                        sd[dst + key.split(".", 3)[3]] = val.clone()
            else:
                for norm in ("post_attention_layernorm", "post_feedforward_layernorm"):
                    sd[f"{dst}{norm}.weight"] = torch.full_like(sd[f"{dst}{norm}.weight"], -1.0)
    big.load_state_dict(sd)
    big.tie_weights()
    return big


@torch.no_grad()
def target_samples(target, stream: torch.Tensor, n: int, seed: int, prefix: int = 16, batch: int = 64) -> torch.Tensor:
    """n sequences of BLOCK + 1 tokens written by the target from corpus prefixes: half greedy,
    half sampled at temperature 1. Training the draft on them (on-policy distillation) teaches it
    the text it will actually have to predict during speculative decoding."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    for b in range(0, n, batch):
        starts = torch.randint(0, len(stream) - prefix, (min(batch, n - b),), generator=gen)
        x = torch.stack([stream[s : s + prefix] for s in starts.tolist()])
        torch.manual_seed(seed + b)
        sample = (b // batch) % 2 == 1
        y = target.generate(x, max_new_tokens=BLOCK + 1 - prefix, min_new_tokens=BLOCK + 1 - prefix,
                            do_sample=sample, top_k=0 if sample else None, temperature=1.0 if sample else None, pad_token_id=0)
        out.append(y)
    return torch.cat(out)


def train(model, stream, steps, lr, batch, seed, teacher=None, log_every=100, extra=None):
    """AdamW + cosine. With a teacher: half cross-entropy, half KL to the teacher. With `extra`
    (a (n, BLOCK + 1) tensor), every other batch comes from it instead of the corpus."""
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.95), weight_decay=0.1)
    warm = max(1, steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warm) * 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps))
    )
    model.train()
    t0 = time.time()
    for step, (x, y) in enumerate(batches(stream, BLOCK, batch, steps, gen)):
        if extra is not None and step % 2 == 1:
            rows = extra[torch.randint(0, len(extra), (batch,), generator=gen)]
            x, y = rows[:, :-1], rows[:, 1:]
        logits = model(x).logits  # (B, T, V)
        loss = F.cross_entropy(logits.flatten(0, 1), y.flatten())
        if teacher is not None:
            with torch.no_grad():
                t_logp = F.log_softmax(teacher(x).logits, -1)
            kl = F.kl_div(F.log_softmax(logits, -1), t_logp, log_target=True, reduction="batchmean")
            loss = 0.5 * loss + 0.5 * kl / x.shape[1]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        if step % log_every == 0 or step == steps - 1:
            print(f"  step {step:4d}/{steps}  loss {loss.item():.3f}  {time.time() - t0:6.0f}s", flush=True)
    model.eval()
    return time.time() - t0


def _parse(argv):
    """Parse and check every flag before anything is read, trained or written: a bad one, or files of an
    earlier run (the shipped pair in data/models included) without --overwrite, exits with status 2."""
    import sys
    import tempfile

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--target-steps", type=int, default=1500)
    ap.add_argument("--grow-steps", type=int, default=600)
    ap.add_argument("--draft-steps", type=int, default=900)
    ap.add_argument("--samples", type=int, default=1024, help="target-written sequences for the draft")
    ap.add_argument("--stage1", type=Path, default=None, help="a saved 12-layer stage-1 target (skips stage 1)")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--out", type=Path, default=None,
                    help="folder for the pair (default data/models, the shipped pair: needs --overwrite)")
    ap.add_argument("--overwrite", action="store_true", help="replace the files of an earlier run (the shipped pair)")
    ap.add_argument("--smoke", action="store_true", help="3 steps each, to a temporary folder (or --out)")
    args = ap.parse_args(argv)
    for flag in ("target_steps", "grow_steps", "draft_steps", "samples", "batch"):
        if getattr(args, flag) < 1:
            ap.error(f"--{flag.replace('_', '-')} must be >= 1 (got {getattr(args, flag)})")
    if args.stage1 is not None and not (args.stage1 / "stage1.json").is_file():
        ap.error(f"--stage1 {args.stage1}: no stage-1 model there (a run without --stage1 saves one, with its "
                 "stage1.json, in <out>/stage1-target)")
    sys.path.insert(0, str(ROOT))
    from utils.results import check_output

    if args.out is None:
        args.out = Path(tempfile.mkdtemp(prefix="tiny-pair-smoke-")) if args.smoke else OUT_DIR
    out = args.out.resolve()
    if out != OUT_DIR.resolve() and out.is_relative_to(OUT_DIR.resolve()):
        ap.error(f"--out {args.out} is inside {OUT_DIR.relative_to(ROOT)}, among the shipped models: use "
                 f"{OUT_DIR.relative_to(ROOT)} itself (with --overwrite) or a folder outside it")
    for path in [args.out / "training_report.json",
                 *(args.out / f"tiny-gemma2-{k}" / name for k in LAYERS
                   for name in ("model.safetensors", "tokenizer.json", "tokenizer_config.json"))]:
        check_output(ap, path, args.out, args.overwrite)
    if args.smoke:
        args.target_steps = args.grow_steps = args.draft_steps = 3
        args.samples = 8
    return args


def main(argv=None):
    args = _parse(argv)

    from transformers import Gemma2Config, Gemma2ForCausalLM

    torch.manual_seed(SEED)
    torch.set_num_threads(2)
    torch.use_deterministic_algorithms(True)
    dirs = {k: args.out / f"tiny-gemma2-{k}" for k in LAYERS}
    train_text, held_text, corpus = load_corpus()
    tok = train_tokenizer(train_text, list(dirs.values()))
    train_ids = make_blocks(tok(train_text)["input_ids"], BLOCK)
    held_ids = make_blocks(tok(held_text)["input_ids"], BLOCK)
    print(f"corpus: {len(train_ids):,} train tokens, {len(held_ids):,} held-out tokens")

    models, times = {}, {}
    # 1. the target: 12 layers from scratch, then grown to 20 and trained on
    torch.manual_seed(SEED + STAGE1_LAYERS)
    target = Gemma2ForCausalLM(Gemma2Config(num_hidden_layers=STAGE1_LAYERS, **COMMON))
    target.config._attn_implementation = "eager"
    if args.stage1 is not None:  # resume from a stage-1 model saved by this same code and seeds
        target = Gemma2ForCausalLM.from_pretrained(args.stage1, attn_implementation="eager")
        times["target_stage1"] = json.loads((args.stage1 / "stage1.json").read_text())["seconds"]
    else:
        print(f"target stage 1: {STAGE1_LAYERS} layers, {args.target_steps} steps")
        times["target_stage1"] = train(target, train_ids, args.target_steps, 3e-3, args.batch, SEED)
        target.save_pretrained(args.out / "stage1-target")  # ignored by git; lets a later run resume
        (args.out / "stage1-target" / "stage1.json").write_text(json.dumps({"seconds": times["target_stage1"]}))
    torch.manual_seed(SEED + LAYERS["target"])
    target = grow(target, LAYERS["target"])
    print(f"target stage 2: grown to {LAYERS['target']} layers, {args.grow_steps} steps")
    times["target_stage2"] = train(target, train_ids, args.grow_steps, 1e-3, args.batch, SEED + 1)
    models["target"] = target.eval()

    # 2. the draft: distilled from the target, on the corpus and on the target's own text
    t0 = time.time()
    samples = target_samples(target, train_ids, args.samples, SEED)
    times["target_samples"] = time.time() - t0
    torch.manual_seed(SEED + LAYERS["draft"])
    draft = Gemma2ForCausalLM(Gemma2Config(num_hidden_layers=LAYERS["draft"], **{**COMMON, **DRAFT_SHAPE}))
    draft.config._attn_implementation = "eager"
    print(f"draft: {LAYERS['draft']} layers, {args.draft_steps} steps, {len(samples)} target samples")
    times["draft"] = train(draft, train_ids, args.draft_steps, 4e-3, args.batch, SEED, teacher=target, extra=samples)
    models["draft"] = draft.eval()
    for name, model in models.items():
        print(f"{name}: {sum(p.numel() for p in model.parameters()):,} parameters")
        model.generation_config.pad_token_id = 0
        model.save_pretrained(dirs[name])

    report = {
        "corpus": corpus,
        "tokens": {"train": len(train_ids), "heldout": len(held_ids)},
        "train_seconds": {k: round(v, 1) for k, v in times.items()},
        "steps": {"target_stage1": args.target_steps, "target_stage2": args.grow_steps, "draft": args.draft_steps,
                  "target_samples": args.samples},
        "batch": args.batch,
        "block": BLOCK,
        "hardware": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads",
        "torch": torch.__version__,
        "heldout_perplexity": {k: round(perplexity(m, held_ids), 2) for k, m in models.items()},
        "train_perplexity_sample": {k: round(perplexity(m, train_ids[: len(held_ids)]), 2) for k, m in models.items()},
    }
    (args.out / "training_report.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    print(f"wrote the pair to {args.out}")


if __name__ == "__main__":
    main()
