"""Self-speculation (notebook 11): the target's own first k layers, final norm and LM head as the draft.

    python -m utils.selfspec --out data/results --threads 1 --overwrite   # alpha, c, speedup against k (json)
    python -m utils.selfspec train --out data/models/early-exit --overwrite   # the exit adapters (a few minutes, 1 thread)

(--overwrite replaces the committed files that notebook 11 reads; without --out both go to runs/, ignored by git.)

`early_exit_draft(target, k)` builds a causal LM that runs the target's embeddings, its layers
0..k-1, its final norm and its LM head (with Gemma2's final logit soft-capping): every weight is the
target's own tensor, nothing is copied. Passed as the `draft` of `speculative_generate`, it drafts
with a shallow copy of the target's computation, and the target (all layers) still verifies, so the
output stays exactly the target's whatever k is. Only the speed depends on k: a draft step costs
about k / n_layers of a target step (c), and the draft agrees with the target (alpha) only as far as
layer k's hidden state already reads like the last layer's.

A model trained without an early-exit loss was never asked to make layer k readable by the LM head,
so alpha is low at small k. `ExitAdapter` is the cheap fix that keeps the target frozen: an RMSNorm
and a d x d linear map at layer k, added to the residual stream before the shared final norm, trained
to match the target's own next-token distribution (KL). Kangaroo (arXiv 2404.18911) trains such an
adapter on a shallow sub-network; LayerSkip (arXiv 2404.16710) instead trains the whole model with an
early-exit loss and layer dropout.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import numbers
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .models import ROOT, shipped_config

LOCAL_RUNS = ROOT / "runs"  # ignored by git: where runs go unless --out says otherwise
ADAPTERS = ROOT / "data" / "models" / "early-exit"  # the trained exit adapters and their report
KS = (1, 2, 4, 6, 8, 10, 12, 16)  # exit layers measured by default (the tiny target has 20)
MAX_ADAPTER_BYTES = 1 << 20  # adapters are committed only if they are this small

SUPPORTED = ("a Hugging Face decoder-only causal LM laid out like Gemma2ForCausalLM / LlamaForCausalLM: "
             "model.embed_tokens, model.layers (a ModuleList), model.norm, model.rotary_emb, lm_head and "
             "config.num_hidden_layers (tested on Gemma2ForCausalLM)")


# ----------------------------------------------------------------------------------------------
# The draft: a view of the target's first k layers
# ----------------------------------------------------------------------------------------------


class ExitAdapter(nn.Module):
    """h -> h + W RMSNorm(h): a residual correction of layer k's hidden state before the target's
    shared final norm. W starts at zero, so an untrained adapter is the plain early exit.
    h: (B, T, d) -> (B, T, d). Parameters: d (norm) + d * d (W)."""

    def __init__(self, hidden_size: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.norm_weight = nn.Parameter(torch.zeros(hidden_size))  # Gemma-style: scales by (1 + w)
        self.proj = nn.Linear(hidden_size, hidden_size, bias=False)
        nn.init.zeros_(self.proj.weight)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        x = h.float()
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * (1.0 + self.norm_weight.float())
        return h + self.proj(x.to(h.dtype))


class AdaptedNorm(nn.Module):
    """The draft's final norm with an adapter in front: norm(adapter(h)); `norm` is the target's."""

    def __init__(self, adapter: ExitAdapter, norm: nn.Module):
        super().__init__()
        self.adapter, self.norm = adapter, norm

    def forward(self, h: torch.Tensor) -> torch.Tensor:  # (B, T, d) -> (B, T, d)
        return self.norm(self.adapter(h))


def check_exit_target(target) -> int:
    """The target has the layout early_exit_draft needs; returns its number of layers."""
    from .speculative import check_model

    check_model(target, "target")
    inner = getattr(target, "model", None)
    missing = [name for name, obj in (("model", inner), ("lm_head", getattr(target, "lm_head", None))) if obj is None]
    if inner is not None:
        missing += [f"model.{a}" for a in ("embed_tokens", "layers", "norm", "rotary_emb") if getattr(inner, a, None) is None]
    n = getattr(target.config, "num_hidden_layers", None)
    if missing or not isinstance(getattr(inner, "layers", None), nn.ModuleList) or not isinstance(n, int):
        raise ValueError(f"early_exit_draft needs {SUPPORTED}; {type(target).__name__} lacks "
                         f"{', '.join(missing) or 'a layers ModuleList or config.num_hidden_layers'}.")
    return n


def check_k(k, n_layers: int) -> int:
    """1 <= k < n_layers (k = n_layers would be the target itself: c = 1, no gain possible)."""
    if isinstance(k, bool) or not isinstance(k, numbers.Integral):
        raise TypeError(f"k must be an integer number of layers (got {k!r}).")
    if not 1 <= k < n_layers:
        raise ValueError(f"k must be in [1, {n_layers - 1}] for a target of {n_layers} layers (got {k}): the draft runs "
                         f"layers 0..k-1, and k = {n_layers} would be the whole target (a draft as slow as it).")
    return int(k)


def early_exit_draft(target, k: int, adapter: ExitAdapter | None = None):
    """A causal LM (the target's class) running the target's embeddings, layers[:k], final norm and
    LM head, all shared with the target (no copy, no new weights except the optional `adapter`).
    Usable as the `draft` of speculative_generate; its KV cache is its own (layer indices 0..k-1).
    logits(input_ids) = softcap(lm_head(norm(adapter(h_k)))), h_k the residual stream after layer k.
    """
    n = check_exit_target(target)
    k = check_k(k, n)
    if adapter is not None and not isinstance(adapter, ExitAdapter):
        raise TypeError(f"adapter must be an ExitAdapter (or None), got {type(adapter).__name__}.")
    cfg = copy.deepcopy(target.config)  # keeps soft-capping, attention implementation, dtype
    cfg.num_hidden_layers = k
    if getattr(cfg, "layer_types", None) is not None:
        cfg.layer_types = list(cfg.layer_types[:k])  # sliding / global per layer, as in the target
    with torch.device("meta"):  # an empty shell: every submodule is replaced by the target's below
        draft = type(target)(cfg)
    inner, src = draft.model, target.model
    inner.embed_tokens, inner.rotary_emb = src.embed_tokens, src.rotary_emb
    inner.layers = nn.ModuleList(src.layers[:k])
    inner.norm = src.norm if adapter is None else AdaptedNorm(adapter, src.norm)
    draft.lm_head = target.lm_head
    draft.generation_config = copy.deepcopy(target.generation_config)
    left = [name for name, t in [*draft.named_parameters(), *draft.named_buffers()] if t.is_meta]
    if left:
        raise ValueError(f"early_exit_draft could not share {left} with the target; it needs {SUPPORTED}.")
    return draft.eval()


def softcap(logits: torch.Tensor, config) -> torch.Tensor:
    """Gemma2's final logit soft-capping, cap * tanh(logits / cap); the identity without it."""
    cap = getattr(config, "final_logit_softcapping", None)
    return logits if cap is None else torch.tanh(logits / cap) * cap


def exit_logits(target, hidden: torch.Tensor, adapter: ExitAdapter | None = None) -> torch.Tensor:
    """The early-exit head by hand: hidden (B, T, d), a layer's output -> logits (B, T, V)."""
    h = hidden if adapter is None else adapter(hidden)
    return softcap(target.lm_head(target.model.norm(h)), target.config)


def target_pass(target, input_ids: torch.Tensor) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
    """One target pass: (hidden states, logits (B, T, V)). The hidden states are n_layers + 1 tensors
    (B, T, d): [0] the embeddings, [k] for 0 < k < n the output of layer k, which is what an exit at k
    reads; transformers 5 returns [n] after the final norm (already normed), so use the logits there."""
    out = target(input_ids, output_hidden_states=True)
    return out.hidden_states, out.logits


@torch.inference_mode()
def hidden_states(target, input_ids: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """The residual stream of one target pass (see target_pass): [k] the output of layer k, k < n."""
    return target_pass(target, input_ids)[0]


@torch.inference_mode()
def exit_agreement(target, input_ids: torch.Tensor, ks=None, adapters: dict | None = None) -> list[dict]:
    """How close each exit is to the target on one text (1, T), from ONE target pass: per k, the share
    of positions where its arg max equals the target's and the mean KL(p_target || q_exit) at T = 1.
    The arg max agreement is what greedy drafting needs; the KL what sampling needs."""
    n = check_exit_target(target)
    bad = [k for k in (ks or []) if not 1 <= k < n]
    if bad:
        raise ValueError(f"ks must be exit layers from 1 to {n - 1} (the target has {n} layers; got {bad})")
    hs, logits = target_pass(target, input_ids)
    logp = F.log_softmax(logits.float(), -1)[0]  # (T, V)
    rows = []
    for k in ks or range(1, n):
        ad = (adapters or {}).get(k)
        logq = F.log_softmax(exit_logits(target, hs[k], ad).float(), -1)[0]  # (T, V)
        rows.append(dict(k=k, adapter=ad is not None, top1=(logq.argmax(-1) == logp.argmax(-1)).float().mean().item(),
                         kl=(logp.exp() * (logp - logq)).sum(-1).mean().item()))
    return rows


@torch.inference_mode()
def layer_update_norms(target, input_ids: torch.Tensor) -> list[float]:
    """Per layer i = 1..n, ||h_i - h_{i-1}|| / ||h_{i-1}||, each norm over every position of the text at
    once (the (B, T, d) tensor): how much layer i changes the residual stream it receives. h_n is the
    last layer's own output, taken by a forward hook: the hidden states of transformers 5 end with h_n
    after the final norm, which is not a layer's update."""
    last = []
    hook = target.model.layers[-1].register_forward_hook(lambda module, args, out: last.append(out))
    try:
        hs = list(hidden_states(target, input_ids))
    finally:
        hook.remove()
    hs[-1] = last[0][0] if isinstance(last[0], tuple) else last[0]  # (B, T, d), before the final norm
    return [((hs[i + 1] - hs[i]).norm() / hs[i].norm()).item() for i in range(len(hs) - 1)]


# ----------------------------------------------------------------------------------------------
# Training exit adapters (the target stays frozen)
# ----------------------------------------------------------------------------------------------


def target_growth() -> dict:
    """How scripts/train_tiny_pair.py built the shipped tiny target: trained at `stage1_layers` for
    `stage1_steps`, grown to `layers` by inserting layers that start as the identity (grow()), then
    trained `grow_steps` more (the step counts from data/models/training_report.json)."""
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        from train_tiny_pair import LAYERS, STAGE1_LAYERS
    finally:
        sys.path.pop(0)
    steps = json.loads((ROOT / "data" / "models" / "training_report.json").read_text())["steps"]
    return dict(stage1_layers=STAGE1_LAYERS, layers=LAYERS["target"], stage1_steps=steps["target_stage1"],
                grow_steps=steps["target_stage2"])


def training_text() -> tuple[str, str, dict]:
    """(train text, held-out text, info): the corpus scripts/train_tiny_pair.py trained the tiny pair
    on (Python's standard-library documentation, read from this Python installation)."""
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        from train_tiny_pair import load_corpus
    finally:
        sys.path.pop(0)
    return load_corpus()


def _batches(stream: torch.Tensor, block: int, batch: int, steps: int, seed: int):
    """`steps` batches of `batch` random windows (batch, block) of the token stream."""
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        starts = torch.randint(0, len(stream) - block, (batch,), generator=g).tolist()
        yield torch.stack([stream[s : s + block] for s in starts])


def _kl(logp: torch.Tensor, logq: torch.Tensor) -> torch.Tensor:
    """Mean over positions of KL(p || q); logp, logq: (..., V) log-probabilities."""
    return F.kl_div(logq.flatten(0, -2), logp.flatten(0, -2), log_target=True, reduction="batchmean")


def adapter_loss(target, x: torch.Tensor, adapters: dict) -> dict:
    """One frozen target pass over x (B, T); per k, KL(target's next-token distribution || the
    adapted exit's) at T = 1. Returns k -> loss (a tensor with a graph into adapter k only)."""
    with torch.no_grad():
        hs, logits = target_pass(target, x)
        logp = F.log_softmax(logits.float(), -1)  # (B, T, V)
    return {k: _kl(logp, F.log_softmax(exit_logits(target, hs[k], ad).float(), -1)) for k, ad in adapters.items()}


def evaluate_adapters(target, stream: torch.Tensor, adapters: dict, block: int = 128, n_blocks: int = 16) -> dict:
    """On held-out text: per k, KL and arg max agreement with the target, plain exit and adapted."""
    out = {}
    for i in range(min(n_blocks, (len(stream) - 1) // block)):
        x = stream[i * block : (i + 1) * block].view(1, -1).to(target.device)
        for row in exit_agreement(target, x, list(adapters), None) + exit_agreement(target, x, list(adapters), adapters):
            key = (row["k"], row["adapter"])
            out.setdefault(key, []).append(row)
    return {f"k{k}{' + adapter' if a else ''}": dict(top1=statistics.mean(r["top1"] for r in rs), kl=statistics.mean(r["kl"] for r in rs))
            for (k, a), rs in sorted(out.items())}


def train_adapters(target, stream: torch.Tensor, ks, *, steps=300, batch=8, block=128, lr=3e-3, seed=0, log_every=50) -> tuple[dict, dict]:
    """Train one ExitAdapter per k in ks on windows of `stream` (a 1-D tensor of token ids), the
    target frozen: AdamW, cosine schedule, KL to the target's own distribution. Returns
    (k -> adapter, dict(losses: k -> [first, last]; log; seconds))."""
    n = check_exit_target(target)
    ks = [check_k(k, n) for k in ks]
    for p in target.parameters():
        p.requires_grad_(False)
    d, eps = target.config.hidden_size, getattr(target.config, "rms_norm_eps", 1e-6)
    adapters = {k: ExitAdapter(d, eps).to(target.device, target.dtype) for k in ks}
    params = [p for ad in adapters.values() for p in ad.parameters()]
    opt = torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.95), weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps)))
    first, log, t0 = None, [], time.perf_counter()
    for step, x in enumerate(_batches(stream, block, batch, steps, seed)):
        losses = adapter_loss(target, x.to(target.device), adapters)
        opt.zero_grad(set_to_none=True)
        sum(losses.values()).backward()
        opt.step()
        sched.step()
        now = {k: v.item() for k, v in losses.items()}
        first = first or now
        if step % log_every == 0 or step == steps - 1:
            log.append(dict(step=step, seconds=round(time.perf_counter() - t0, 1), kl={str(k): round(v, 4) for k, v in now.items()}))
            print(f"  step {step:4d}/{steps}  " + "  ".join(f"k{k} {v:.3f}" for k, v in now.items())
                  + f"  {time.perf_counter() - t0:5.0f}s", flush=True)
    for ad in adapters.values():
        ad.eval().requires_grad_(False)
    return adapters, dict(first_kl={str(k): v for k, v in first.items()}, last_kl={str(k): v for k, v in now.items()},
                          log=log, train_seconds=time.perf_counter() - t0)


def save_adapters(adapters: dict, path: Path) -> int:
    """k -> ExitAdapter into one safetensors file (keys k<k>.norm_weight, k<k>.proj.weight); its size."""
    from safetensors.torch import save_file

    tensors = {f"k{k}.{name}": t.detach().cpu().contiguous() for k, ad in adapters.items() for name, t in ad.state_dict().items()}
    save_file(tensors, str(path), metadata={"ks": json.dumps(sorted(adapters))})
    return path.stat().st_size


def load_adapters(target, path: Path = ADAPTERS / "adapters.safetensors") -> dict:
    """k -> ExitAdapter (on the target's device and dtype) from save_adapters' file; a ValueError that
    says what to do where they were trained for a target of another width."""
    from safetensors.torch import load_file

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no exit adapters at {path}; train them with `python -m utils.selfspec train` "
                                "(a few minutes on one CPU thread).")
    tensors, out = load_file(str(path)), {}
    width = target.config.get_text_config().hidden_size
    trained = {t.shape[0] for key, t in tensors.items() if key.endswith(".norm_weight")}
    if not trained:
        raise ValueError(f"{path} holds no exit adapters; train them with `python -m utils.selfspec train`.")
    if trained != {width}:
        raise ValueError(
            f"the exit adapters in {path} were trained for a target whose hidden size is {sorted(trained)[0]} (the "
            f"shipped ones: the tiny target's), and this target's is {width}. Train adapters for this target: "
            f"`python -m utils.selfspec train --pair NAME --out FOLDER`, then load_adapters(target, FOLDER / "
            "'adapters.safetensors'); or measure the plain exits only (`--no-adapters`)."
        )
    for k in sorted({int(key.split(".")[0][1:]) for key in tensors}):
        ad = ExitAdapter(tensors[f"k{k}.norm_weight"].shape[0], getattr(target.config, "rms_norm_eps", 1e-6))
        ad.load_state_dict({name: tensors[f"k{k}.{name}"] for name in ad.state_dict()})
        out[k] = ad.to(target.device, target.dtype).eval().requires_grad_(False)
    return out


# ----------------------------------------------------------------------------------------------
# Measurement: alpha, c and speedup against k
# ----------------------------------------------------------------------------------------------


def _step_seconds(model, ids, steps: int = 24) -> float:
    """Median seconds of one cached greedy decode step of `model` (forward pass + sampling)."""
    from .decoding import autoregressive_generate

    return statistics.median(autoregressive_generate(model, ids, steps).step_times)


def step_costs(target, drafts: dict, ids: torch.Tensor, repeats: int = 5) -> dict:
    """c per draft: its decode step over the target's, medians over `repeats` runs after a warm-up,
    the models taking turns so that a drifting machine affects them alike. drafts: name -> model."""
    from .bench import take_turns

    models = {"target": target, **drafts}
    runs, _ = take_turns(lambda name: _step_seconds(models[name], ids), models, repeats, warmup=1)
    t = statistics.median(runs["target"])
    return dict(target_step_ms=1e3 * t, c={name: statistics.median(runs[name]) / t for name in drafts})


def _run(target, draft, ids, max_new_tokens, temperature, gamma, eos, seed=0) -> dict:
    """One timed run of our plain loop (draft None) or of speculative_generate with `draft`."""
    from .decoding import autoregressive_generate
    from .speculative import speculative_generate

    gen = torch.Generator(device=target.device).manual_seed(seed)
    t0 = time.perf_counter()
    if draft is None:
        out = autoregressive_generate(target, ids, max_new_tokens, temperature=temperature, eos_token_id=eos, generator=gen)
    else:
        out = speculative_generate(target, draft, ids, max_new_tokens=max_new_tokens, gamma=gamma, temperature=temperature,
                                   eos_token_id=eos, generator=gen)
    secs = time.perf_counter() - t0
    row = dict(new_tokens=out.sequences.shape[1] - ids.shape[1], seconds=secs, new_ids=out.sequences[0, ids.shape[1]:].tolist())
    if draft is not None:
        row.update(rounds=len(out.rounds), drafted=out.n_drafted, accepted=out.n_accepted, rejected=out.n_rejected,
                   draft_s=out.draft_time, target_s=out.target_time)
    return row


def draft_set(pair, ks, adapters: dict | None = None) -> dict:
    """name -> draft (None: the plain loop): plain, the shipped draft model, exit k, exit k + adapter."""
    out = {"plain": None, "draft model": pair.draft}
    out.update({f"exit {k}": early_exit_draft(pair.target, k) for k in ks})
    out.update({f"exit {k} + adapter": early_exit_draft(pair.target, k, ad) for k, ad in sorted((adapters or {}).items())})
    return out


def compare_exits(pair, prompts, *, ks=KS, adapters=None, gamma=4, temperatures=(0.0, 1.0), max_new_tokens=48,
                  repeats=1, warmup=1, progress=True) -> dict:
    """Tokens/s and acceptance of every draft of `draft_set` on each prompt and temperature, with c
    measured per draft. Per prompt the drafts take turns after `warmup` runs; each keeps its median.
    Returns dict(meta, costs, rows (prompt x temperature x draft), summary (temperature x draft))."""
    from tqdm.auto import tqdm

    from .bench import median_run, metadata, take_turns

    drafts = draft_set(pair, ks, adapters)
    eos = pair.target.generation_config.eos_token_id
    ids0 = pair.tokenizer(prompts[0], return_tensors="pt").input_ids.to(pair.device)
    costs = step_costs(pair.target, {n: d for n, d in drafts.items() if d is not None}, ids0)
    rows, t_start = [], time.perf_counter()
    for text, t in tqdm([(p, t) for p in prompts for t in temperatures], disable=not progress, desc="selfspec"):
        ids = pair.tokenizer(text, return_tensors="pt").input_ids.to(pair.device)
        runs, _ = take_turns(lambda n: _run(pair.target, drafts[n], ids, max_new_tokens, t, gamma, eos), drafts, repeats, warmup)
        plain_ids = runs["plain"][0]["new_ids"]
        for name, rs in runs.items():
            med = dict(median_run(rs))
            new_ids = med.pop("new_ids")
            rows.append(dict(prompt=text, temperature=t, draft=name, **med, seconds_all=[r["seconds"] for r in rs],
                             **({"same_as_plain": new_ids == plain_ids} if t == 0 else {})))
    meta = metadata(pair, dict(c_draft_model=costs["c"]["draft model"]), max_new_tokens, repeats)
    meta.update(gamma=gamma, ks=list(ks), adapter_ks=sorted(adapters or {}), temperatures=list(temperatures), warmup=warmup,
                n_layers=pair.target.config.num_hidden_layers, n_prompts=len(prompts), wall_s=time.perf_counter() - t_start,
                timing="per prompt the drafts take turns after a warm-up; each keeps the median of its repeats; "
                       "tokens/s = all new tokens / all median seconds. Shared CPU: noisy.")
    return dict(meta=meta, costs=costs, rows=rows, summary=summarize(rows, costs["c"], gamma))


def _k_of(name: str) -> int | None:
    return int(name.split()[1]) if name.startswith("exit ") else None


def summarize(rows, c: dict, gamma: int) -> list[dict]:
    """One row per temperature x draft: tokens/s, speedup over the plain loop, alpha per drafted and
    per checked token, c, Leviathan's predicted speedup at this gamma and the best gamma for (alpha, c)."""
    from .theory import expected_speedup, optimal_gamma

    out = []
    for t in sorted({r["temperature"] for r in rows}):
        sel = [r for r in rows if r["temperature"] == t]
        by = {n: [r for r in sel if r["draft"] == n] for n in dict.fromkeys(r["draft"] for r in sel)}
        tps = {n: sum(r["new_tokens"] for r in rs) / sum(r["seconds"] for r in rs) for n, rs in by.items()}
        for name, rs in by.items():
            s = dict(temperature=t, draft=name, k=_k_of(name), adapter=name.endswith("adapter"), tokens_per_s=tps[name],
                     speedup_vs_plain=tps[name] / tps["plain"])
            if name != "plain":
                acc, dr, rej, rounds = (sum(r[key] for r in rs) for key in ("accepted", "drafted", "rejected", "rounds"))
                a = acc / (acc + rej) if acc + rej else math.nan
                best = optimal_gamma(a, c[name]) if math.isfinite(a) else None
                s.update(alpha=acc / dr if dr else math.nan, alpha_checked=a, c=c[name],
                         tokens_per_round=sum(r["new_tokens"] for r in rs) / rounds,
                         predicted=expected_speedup(a, gamma, c[name]) if math.isfinite(a) else math.nan,
                         best_gamma=best, predicted_best=expected_speedup(a, best, c[name]) if best else math.nan,
                         speedup_possible=a > c[name])
            if t == 0:
                s["all_equal_plain"] = all(r["same_as_plain"] for r in rs)
            out.append(s)
    return out


def plot_exits(result: dict, title: str = ""):
    """Two panels from a compare_exits result: alpha per checked token and c against k (left), the
    measured speedup over the plain loop against k (right); the shipped draft model as horizontal
    lines. Returns the figure."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    n = result["meta"]["n_layers"]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 3.8), layout="constrained")
    colors = {0.0: "#4c72b0", 1.0: "#dd8452"}
    for t in sorted({s["temperature"] for s in result["summary"]}):
        sel = [s for s in result["summary"] if s["temperature"] == t]
        col = colors.get(t, None)
        for adapter, style in ((False, "o-"), (True, "s--")):
            rows = sorted((s for s in sel if s["k"] is not None and s["adapter"] == adapter), key=lambda s: s["k"])
            if not rows:
                continue
            lab = f"T = {t:g}, exit{' + adapter' if adapter else ''}"
            a1.plot([s["k"] for s in rows], [s["alpha_checked"] for s in rows], style, color=col, label=lab, ms=4)
            a2.plot([s["k"] for s in rows], [s["speedup_vs_plain"] for s in rows], style, color=col, label=lab, ms=4)
        dm = next(s for s in sel if s["draft"] == "draft model")
        a1.axhline(dm["alpha_checked"], color=col, ls=":", lw=1, label=f"T = {t:g}, draft model")
        a2.axhline(dm["speedup_vs_plain"], color=col, ls=":", lw=1, label=f"T = {t:g}, draft model")
    exits = sorted((s for s in result["summary"] if s["k"] is not None and not s["adapter"] and s["temperature"] == 0),
                   key=lambda s: s["k"])
    a1.plot([s["k"] for s in exits], [s["c"] for s in exits], "^-", color="k", ms=4, label="c (draft step / target step)")
    a1.plot([0, n], [0, 1], color="grey", lw=0.8, label="k / n_layers")
    a1.set(xlabel="exit layer k", ylabel="alpha per checked token, c", ylim=(0, 1.05), xlim=(0, n),
           title="acceptance and cost against k")
    a2.axhline(1.0, color="grey", lw=0.8)
    a2.set(xlabel="exit layer k", ylabel="tokens/s over the plain loop", xlim=(0, n),
           title=f"measured speedup (gamma {result['meta']['gamma']})")
    for ax in (a1, a2):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # k is a whole number of layers
    a1.legend(fontsize=7, loc="upper left")
    a2.legend(fontsize=7, loc="upper right")
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def plot_lens(lens: list[dict], updates: list[float], title: str = ""):
    """Notebook 11 section 3, two panels: each exit k against the target (left: share of positions
    where the arg max agrees, and KL(p || q_k) on a second axis), from `exit_agreement` rows averaged
    over texts (dicts k, top1, kl); and how much each layer changes the residual stream (right), from
    `layer_update_norms` averaged over texts. Returns the figure."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 3.5), layout="constrained")
    a1.plot([r["k"] for r in lens], [r["top1"] for r in lens], "o-", label="arg max = target's")
    a1b = a1.twinx()
    a1b.plot([r["k"] for r in lens], [r["kl"] for r in lens], "s--", color="#c44e52", label="KL(p || q_k)")
    a1.set(xlabel="exit layer k", ylabel="share of positions", title="exit k against the target (held-out text)")
    a1b.set_ylabel("nats")
    a1.legend(handles=a1.get_lines() + a1b.get_lines(), loc="upper center", fontsize=8)
    a2.bar(range(1, len(updates) + 1), updates, color="#4c72b0")
    a2.set(xlabel="layer i", ylabel="||h_i - h_(i-1)|| / ||h_(i-1)||", title="how much each layer changes the residual stream")
    for ax in (a1, a2):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # layers are whole numbers
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def exits_table(result: dict) -> str:
    """A `compare_exits` result as the text table of notebook 11 section 4: per temperature and
    draft, c, alpha (per drafted / per checked token), tokens per round, tokens/s, the measured
    speedup over the plain loop, the cost model's (v = 1) at the run's gamma and at its best gamma."""
    lines = [f"{'T':>3} {'draft':18s} {'c':>5} {'alpha drafted/checked':>21} {'tokens/round':>12} {'tok/s':>6} "
             f"{'measured':>8} {'predicted':>9} {'best gamma':>10}"]
    for s in result["summary"]:
        if s["draft"] == "plain":
            lines.append(f"{s['temperature']:>3g} {'plain loop':18s} {'':>5} {'':>21} {'':>12} {s['tokens_per_s']:6.1f}")
            continue
        lines.append(f"{s['temperature']:>3g} {s['draft']:18s} {s['c']:5.2f} {s['alpha']:10.2f} / {s['alpha_checked']:.2f}      "
                     f"{s['tokens_per_round']:12.2f} {s['tokens_per_s']:6.1f} {s['speedup_vs_plain']:7.2f}x "
                     f"{s['predicted']:8.2f}x {s['best_gamma']:>4} ({s['predicted_best']:.2f}x)")
    return "\n".join(lines)


def speed_against_model(result: dict) -> list[dict]:
    """Notebook 11 section 4, per temperature over the exits (with and without adapter): which are
    faster than the plain loop; the cost model's best promise (v = 1) at the run's gamma and at an
    exit's best gamma; v as the loop paid it (the target's seconds per round over its one-token step,
    prefill spread over the rounds); and measured minus predicted speedup, with v = 1 and with the
    loop's v (`utils.theory.expected_speedup`)."""
    from .theory import expected_speedup

    gamma, step_s = result["meta"]["gamma"], result["costs"]["target_step_ms"] / 1e3
    out = []
    for t in sorted({s["temperature"] for s in result["summary"]}):
        rows = [s for s in result["summary"] if s["temperature"] == t and s["k"] is not None]
        v, err1, errv = {}, [], []
        for s in rows:
            rs = [r for r in result["rows"] if r["temperature"] == t and r["draft"] == s["draft"]]
            v[s["draft"]] = sum(r["target_s"] for r in rs) / sum(r["rounds"] for r in rs) / step_s
            err1.append(s["speedup_vs_plain"] - s["predicted"])
            errv.append(s["speedup_vs_plain"] - expected_speedup(s["alpha_checked"], gamma, s["c"], v[s["draft"]]))
        out.append(dict(temperature=t, n_exits=len(rows), slower=sum(s["speedup_vs_plain"] < 1 for s in rows),
                        faster=sorted((s for s in rows if s["speedup_vs_plain"] >= 1), key=lambda s: -s["speedup_vs_plain"]),
                        promised=max(s["predicted"] for s in rows), promised_best=max(s["predicted_best"] for s in rows),
                        v=(min(v.values()), max(v.values())), error_v1=(min(err1), max(err1)), error_v=(min(errv), max(errv))))
    return out


# ----------------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------------


def _positive(ap, flag, value):
    if value is not None and value < 1:
        ap.error(f"{flag} must be >= 1 (got {value})")


def _check_adapters_file(ap, path: Path, pair_name: str) -> None:
    """--adapters: a readable safetensors file of exit adapters and, where the target's width is known
    before loading (a shipped pair), adapters of that width; else ap.error with what to do."""
    from safetensors import SafetensorError, safe_open

    from .models import PAIRS

    train = "train them with `python -m utils.selfspec train`, or pass --no-adapters"
    if not path.exists():
        ap.error(f"--adapters {path} does not exist; {train}")
    if not path.is_file():
        ap.error(f"--adapters {path} is not a file; {train}")
    try:
        with safe_open(str(path), "pt") as f:
            widths = {f.get_slice(k).get_shape()[0] for k in f.keys() if k.endswith(".norm_weight")}
    except (SafetensorError, OSError, ValueError) as e:
        ap.error(f"--adapters {path} is not a safetensors file of exit adapters ({e}); {train}")
    if not widths:
        ap.error(f"--adapters {path} holds no exit adapters; {train}")
    if not PAIRS[pair_name].local and path.resolve() == (ADAPTERS / "adapters.safetensors").resolve():
        ap.error(f"the shipped exit adapters are the tiny target's: for --pair {pair_name} train its own with "
                 f"`python -m utils.selfspec train --pair {pair_name} --out FOLDER`, then pass --adapters "
                 "FOLDER/adapters.safetensors; or pass --no-adapters")
    width = shipped_config(pair_name, "hidden_size")
    if width is not None and widths != {width}:
        ap.error(f"--adapters {path} were trained for a target of hidden size {sorted(widths)[0]}, and {pair_name}'s "
                 f"is {width}; {train}")


def _check_ks(ap, ks, pair_name: str) -> None:
    """--ks: exit layers >= 1 and, where the layer count is known before loading, below the target's."""
    if any(k < 1 for k in ks):
        ap.error(f"--ks must all be >= 1 (got {ks}): exit layers; each must also be below the target's layer count")
    n = shipped_config(pair_name, "num_hidden_layers")
    if n is not None and any(k >= n for k in ks):
        ap.error(f"--ks must all be below the target's {n} layers (got {ks})")


def _check_bench_args(ap, args) -> Path:
    """Every flag checked before any model is loaded. Returns the output json path."""
    from .results import check_bench_flags, check_pair

    pair_name = check_pair(ap, args.pair)
    _check_ks(ap, args.ks, pair_name)
    if args.adapters is not None:
        _check_adapters_file(ap, args.adapters, pair_name)
    counts = {"--" + f.replace("_", "-"): getattr(args, f) for f in ("n_prompts", "max_new_tokens", "repeats", "gamma", "threads")}
    return check_bench_flags(ap, args, "selfspec", counts)[0]


def _check_train_args(ap, args) -> None:
    from .results import check_output, check_pair

    for flag in ("steps", "batch", "block", "threads"):
        _positive(ap, "--" + flag, getattr(args, flag))
    _check_ks(ap, args.ks, check_pair(ap, args.pair))
    if not (math.isfinite(args.lr) and args.lr > 0):
        ap.error(f"--lr must be a finite number > 0 (got {args.lr})")
    for name in ("adapters.safetensors", "training_report.json"):
        check_output(ap, args.out / name, args.out, args.overwrite)


def bench_main(args, path: Path) -> int:
    from .models import load_pair, load_prompts
    from .results import write_json

    pair = load_pair(args.pair, device=args.device)
    n = pair.target.config.num_hidden_layers
    if any(k >= n for k in args.ks):
        raise SystemExit(f"--ks must all be below the target's {n} layers (got {args.ks})")
    adapters = load_adapters(pair.target, args.adapters) if args.adapters else {}
    prompts = load_prompts(args.prompts)[: args.n_prompts]
    result = compare_exits(pair, prompts, ks=args.ks, adapters=adapters, gamma=args.gamma, temperatures=args.temperatures,
                           max_new_tokens=args.max_new_tokens, repeats=args.repeats, warmup=args.warmup)
    result["meta"].update(prompt_set=args.prompts, adapters=str(args.adapters.relative_to(ROOT)) if args.adapters and
                          args.adapters.resolve().is_relative_to(ROOT) else (str(args.adapters) if args.adapters else None),
                          command="python -m utils.selfspec " + " ".join(sys.argv[1:]))
    write_json(path, result)
    print(json.dumps({k: v for k, v in result["meta"].items()}, indent=1))
    for s in result["summary"]:
        print(json.dumps(s))
    print(f"wrote {path}")
    return 0


def train_main(args) -> int:
    import platform

    from .models import load_pair
    from .results import write_json

    pair = load_pair(args.pair, device="cpu")
    n = pair.target.config.num_hidden_layers
    if any(k >= n for k in args.ks):
        raise SystemExit(f"--ks must all be below the target's {n} layers (got {args.ks})")
    t0 = time.perf_counter()
    train_text, held_text, info = training_text()
    tok = pair.tokenizer
    train_ids, held_ids = (torch.tensor(tok(t)["input_ids"]) for t in (train_text, held_text))
    print(f"corpus: {len(train_ids):,} train tokens, {len(held_ids):,} held-out tokens ({time.perf_counter() - t0:.0f}s)")
    torch.manual_seed(args.seed)
    adapters, report = train_adapters(pair.target, train_ids, args.ks, steps=args.steps, batch=args.batch, block=args.block,
                                      lr=args.lr, seed=args.seed)
    size = save_adapters(adapters, args.out / "adapters.safetensors")
    if size > MAX_ADAPTER_BYTES and args.out.resolve().is_relative_to((ROOT / "data").resolve()):
        (args.out / "adapters.safetensors").unlink()
        raise SystemExit(f"the adapters take {size:,} bytes, over the {MAX_ADAPTER_BYTES:,} allowed under data/: use fewer --ks")
    shipped = json.loads((ROOT / "data" / "models" / "training_report.json").read_text())["corpus"]["sha256"]
    report.update(
        command="python -m utils.selfspec train " + " ".join(sys.argv[2:]), pair=pair.name, ks=list(args.ks),
        steps=args.steps, batch=args.batch, block=args.block, lr=args.lr, seed=args.seed,
        tokens_seen=args.steps * args.batch * args.block, adapter_parameters=sum(p.numel() for a in adapters.values() for p in a.parameters()),
        adapter_bytes=size, loss="KL(target || adapted exit) at T = 1, mean over positions; target frozen",
        data=dict(info, train_tokens=len(train_ids), heldout_tokens=len(held_ids), same_as_shipped_pair=info["sha256"] == shipped),
        heldout=evaluate_adapters(pair.target, held_ids, adapters, args.block),
        hardware=f"{platform.machine()}, {torch.get_num_threads()} thread(s)", torch=torch.__version__,
        date=time.strftime("%Y-%m-%d"), wall_s=time.perf_counter() - t0)
    write_json(args.out / "training_report.json", report)
    print(json.dumps(report["heldout"], indent=1))
    print(f"wrote {args.out / 'adapters.safetensors'} ({size:,} bytes) and {args.out / 'training_report.json'}")
    return 0


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in ("bench", "train", "-h", "--help"):
        argv = ["bench", *argv]  # `python -m utils.selfspec --out ...` runs the benchmark
    ap = argparse.ArgumentParser(prog="python -m utils.selfspec", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True, metavar="{bench,train}")
    b = sub.add_parser("bench", help="alpha, c and speedup against k (the default command)", description=compare_exits.__doc__)
    b.add_argument("--pair", default=None, help="a key of utils.models.PAIRS (default $SPECDEC_PAIR or tiny)")
    b.add_argument("--prompts", default="heldout", help="a key of data/prompts.json (default heldout)")
    b.add_argument("--n-prompts", type=int, default=None, help="the first N prompts of the set (default all)")
    b.add_argument("--ks", type=int, nargs="+", default=list(KS), help="exit layers to measure")
    b.add_argument("--adapters", type=Path, default=ADAPTERS / "adapters.safetensors",
                   help="trained exit adapters to measure too (default data/models/early-exit/adapters.safetensors)")
    b.add_argument("--no-adapters", dest="adapters", action="store_const", const=None, help="measure the plain exits only")
    b.add_argument("--max-new-tokens", type=int, default=48)
    b.add_argument("--gamma", type=int, default=4)
    b.add_argument("--temperatures", type=float, nargs="+", default=[0.0, 1.0])
    b.add_argument("--repeats", type=int, default=3, help="timed runs per draft and prompt (default 3)")
    b.add_argument("--warmup", type=int, default=1, help="untimed runs per draft and prompt first (default 1)")
    b.add_argument("--device", default=None)
    b.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    b.add_argument("--out", type=Path, default=LOCAL_RUNS, help="folder for the .json (default runs/, ignored by git)")
    b.add_argument("--overwrite", action="store_true", help="replace an existing result file")
    t = sub.add_parser("train", help="train exit adapters on the tiny pair's training text, the target frozen",
                       description=train_adapters.__doc__)
    t.add_argument("--pair", default=None, help="a key of utils.models.PAIRS (default $SPECDEC_PAIR or tiny)")
    t.add_argument("--ks", type=int, nargs="+", default=list(KS), help="one adapter per exit layer")
    t.add_argument("--steps", type=int, default=300)
    t.add_argument("--batch", type=int, default=8)
    t.add_argument("--block", type=int, default=128)
    t.add_argument("--lr", type=float, default=3e-3)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (default 1)")
    t.add_argument("--out", type=Path, default=LOCAL_RUNS / "early-exit", help="folder (default runs/early-exit; "
                   "the committed adapters are in data/models/early-exit)")
    t.add_argument("--overwrite", action="store_true", help="replace existing adapters")
    args = ap.parse_args(argv)
    if args.command == "bench":
        path = _check_bench_args(b, args)
    else:
        _check_train_args(t, args)
    if args.threads:
        torch.set_num_threads(args.threads)
    from .results import command_errors

    with command_errors(b if args.command == "bench" else t):
        return bench_main(args, path) if args.command == "bench" else train_main(args)


if __name__ == "__main__":
    sys.exit(main())
