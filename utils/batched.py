"""Batched speculative decoding on Hugging Face models (notebook 09): B prompts at once, each row
accepting its own number of drafted tokens per round. `speculative_generate` calls this module when
input_ids has more than one row (or an attention mask with padding); the accept/reject rule is the
shared one (`speculative.accept_reject`), applied to each row.

    out = speculative_generate(target, draft, ids, attention_mask=mask, max_new_tokens=64)
    out.sequences          # (B, T + new), like HF generate: row b's new tokens start at column T,
                           # padded with pad_token_id after its EOS or its last token

The layout. Rows are left-padded, as HF `generate` expects for decoder-only models, and kept
right-aligned: every row's last token sits in the last column. A round drafts k tokens for all rows
(B, 1) at a time, then the target checks them in one (B, k + 1) pass. Row b accepts n_b of them and
adds one token of its own, so it grows by m_b = n_b + 1 (fewer at its EOS or its max_new_tokens).
The rows grow unevenly (ragged acceptance); to stay right-aligned, row b is shifted right by
M - m_b columns (M = max m_b), which become padding: one gather per cache tensor, no forward pass.
Finished rows leave the batch, and columns that are padding in every row are dropped.

Padding must not change a row's result. Rows only ever carry padding on the left (the realignment
shifts whole rows right), so a row's real tokens sit in consecutive columns, and a sliding window
counted in columns gives the same mask as one counted in the row's own tokens. What padding
changes is the position, which transformers would otherwise take from the column: we pass
position_ids = how many real tokens precede the token in its row, as HF generate does (rotary
embeddings see only differences of positions, so the column's offset would change the logits by
rounding only, but the row would no longer compute exactly what it computes alone). The masks are
built here, so that the layout stays under this module's control: a key is visible if it is a real
token of the same row at or before the query, and, for sliding-window layers (Gemma2 alternates
them), if it is fewer than `sliding_window` of the row's own tokens back. The result: each row is
computed as if it ran alone, and greedy rows equal HF greedy on that prompt alone, token for token
(tests/test_batched.py).

Why batching shrinks the gain: at batch 1 a decoding step reads every weight to compute one token,
so checking k + 1 tokens costs about as much as one (memory- or overhead-bound). With B rows the
verify pass computes B (k + 1) tokens per weight read; once that is enough work to be compute-bound,
it costs about k + 1 times a plain step, and the rejected drafts are paid for. `verify_cost` measures
that ratio; notebook 09 plots it against B next to the tokens/s.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch
from transformers import DynamicCache

from .sampling import check_sampling_args, eos_set, probs_from_logits, rand, sample
from . import speculative
from .speculative import (_Timer, check_generate_args, check_input_ids, check_length, check_lengths, check_model,
                          check_models)


@dataclass
class BatchedOutput:
    """What batched generation returns. Per-row lists are indexed like the input rows."""

    sequences: torch.Tensor  # (B, T + new): new tokens from column T, pad_token_id after a row ends
    new_tokens: list[int]  # per row: how many tokens it generated (EOS included)
    drafted: list[int]  # per row: drafted tokens
    accepted: list[int]  # per row: accepted drafted tokens
    rejected: list[int]  # per row: rounds that ended in a rejection
    rounds: int  # draft-verify rounds (target passes after the prompt)
    draft_time: float  # seconds in draft forward passes (NaN if not timed)
    target_time: float  # seconds in target forward passes (NaN if not timed)
    total_time: float
    batch_sizes: list[int] = field(default_factory=list)  # rows still running in each round
    widths: list[int] = field(default_factory=list)  # columns (cache length + 1) in each round
    ragged_rounds: int = 0  # rounds after which running rows had grown by different numbers of tokens
    draft_passes: int = 0  # the draft's batched forward passes after the prompt: k per round, plus each catch-up
    added: list[list[int]] = field(default_factory=list)  # per round, per input row: tokens it added (0: finished)

    @property
    def acceptance_rate(self) -> float:
        """accepted / drafted over all rows (NaN if nothing was drafted)."""
        d = sum(self.drafted)
        return sum(self.accepted) / d if d else float("nan")

    @property
    def checked_acceptance_rate(self) -> float:
        """accepted / (accepted + rejections) over all rows: the per-token alpha of the cost model."""
        c = sum(self.accepted) + sum(self.rejected)
        return sum(self.accepted) / c if c else float("nan")

    def row_acceptance(self) -> list[float]:
        """accepted / drafted per row."""
        return [a / d if d else float("nan") for a, d in zip(self.accepted, self.drafted)]


# ----------------------------------------------------------------------------------------------
# Input checks and masks
# ----------------------------------------------------------------------------------------------


def check_batch(input_ids: torch.Tensor, attention_mask, pad_token_id=None) -> torch.Tensor:
    """The attention mask as a bool tensor (B, T), after checking that it matches input_ids, is 0/1,
    has a token in every row and pads on the left (every row's real tokens are contiguous and end in
    the last column). Without a mask every column is a token: refused for a batch (B > 1) that holds
    pad_token_id (`declared_pad`), where Hugging Face generate would guess the mask and this code
    would read padding as text."""
    if attention_mask is None:
        if input_ids.shape[0] > 1 and pad_token_id is not None and bool((input_ids == pad_token_id).any()):
            raise ValueError(
                f"this batch holds padding (token {pad_token_id}) but no attention_mask was given: pass the one the "
                "tokenizer returns, enc = tokenizer(prompts, padding=True, return_tensors='pt') with "
                "tokenizer.padding_side = 'left', then input_ids=enc.input_ids, attention_mask=enc.attention_mask.")
        return torch.ones_like(input_ids, dtype=torch.bool)
    if not isinstance(attention_mask, torch.Tensor) or attention_mask.shape != input_ids.shape:
        got = tuple(attention_mask.shape) if isinstance(attention_mask, torch.Tensor) else type(attention_mask).__name__
        raise ValueError(f"attention_mask must be a tensor shaped like input_ids {tuple(input_ids.shape)} (got {got}): "
                         "pass the one the tokenizer returns with the ids.")
    if attention_mask.is_floating_point() or not bool(((attention_mask == 0) | (attention_mask == 1)).all()):
        raise ValueError("attention_mask must hold 0 (padding) and 1 (token), as tokenizers return it.")
    m = attention_mask.bool()
    empty = (~m.any(-1)).nonzero().flatten().tolist()
    if empty:
        raise ValueError(f"row(s) {empty} of attention_mask have no tokens (an empty prompt?): give every prompt at "
                         "least one token, or leave that row out.")
    if not bool(m[:, -1].all()) or bool((m[:, 1:].int() - m[:, :-1].int() < 0).any()):
        raise ValueError(
            "attention_mask pads on the right (or has holes): decoder-only models generate after the last column, so "
            'pad on the left: tokenizer.padding_side = "left" (as Hugging Face generate expects).')
    return m


def _positions(valid: torch.Tensor) -> torch.Tensor:
    """(B, L) position of each column in its own row: how many real tokens come before it (padding: 0)."""
    return (valid.long().cumsum(-1) - 1).clamp_min(0)


def build_masks(model, valid: torch.Tensor, width: int, dtype) -> dict | torch.Tensor:
    """Additive attention masks (B, 1, W, L) for the last `width` columns of `valid` (B, L) attending
    to all L columns: a key is visible if it is a real token at or before the query, and for
    sliding-window layers if fewer than `sliding_window` real tokens back (counted in the row; with
    padding only on the left the same as in columns). A dict by layer type for models with
    `layer_types` (Gemma2), else one tensor."""
    B, L = valid.shape
    pos = _positions(valid)  # (B, L)
    cols = torch.arange(L, device=valid.device)
    causal = cols[None, :] <= cols[L - width :, None]  # (W, L)
    visible = valid[:, None, :] & causal[None]  # (B, W, L)
    lo = torch.finfo(dtype).min

    def additive(allowed):
        return torch.zeros(allowed.shape, dtype=dtype, device=valid.device).masked_fill_(~allowed, lo)[:, None]

    cfg = model.config.get_text_config(decoder=True)
    types = getattr(cfg, "layer_types", None)
    if not types:
        return additive(visible)
    out = {}
    for kind in set(types):
        if kind == "full_attention":
            out[kind] = additive(visible)
        elif kind == "sliding_attention":
            back = pos[:, L - width :, None] - pos[:, None, :]  # (B, W, L) real tokens between key and query
            out[kind] = additive(visible & (back < cfg.sliding_window))
        else:
            raise ValueError(f"layer type {kind!r} is not supported by batched decoding (full and sliding attention are).")
    return out


def _forward(model, cache, x, valid, timer, keep: int = 0):
    """x: (B, W) the last W columns of `valid` (B, L) -> logits (B, W, V); keep=k > 0: only the last k
    columns' logits (B, k, V), for a pass that only fills the cache (a prompt's (B, T, V) logits in
    bfloat16 are 4 GB for 64 rows of 128 tokens at Gemma2's 256k vocabulary)."""
    W = x.shape[1]
    masks = build_masks(model, valid, W, model.dtype)
    pos = _positions(valid)[:, -W:]  # (B, W)
    with timer:
        return model(input_ids=x, attention_mask=masks, position_ids=pos, past_key_values=cache, use_cache=True,
                     logits_to_keep=keep).logits


def _cache_tensors(cache):
    for layer in cache.layers:
        if getattr(layer, "keys", None) is not None and layer.keys.numel():
            yield layer


def _take_rows(cache, rows: torch.Tensor) -> None:
    """Keep the batch rows `rows` (1-d long) of every layer."""
    for layer in _cache_tensors(cache):
        layer.keys, layer.values = layer.keys.index_select(0, rows), layer.values.index_select(0, rows)


def _realign(cache, index: torch.Tensor) -> None:
    """New column j of row b := old column index[b, j] (index (B, L'), clamped; padding where it was < 0)."""
    for layer in _cache_tensors(cache):
        i = index.clamp(0, layer.keys.shape[2] - 1)[:, None, :, None]  # (B, 1, L', 1)
        layer.keys = layer.keys.gather(2, i.expand(-1, layer.keys.shape[1], -1, layer.keys.shape[3]))
        layer.values = layer.values.gather(2, i.expand(-1, layer.values.shape[1], -1, layer.values.shape[3]))


def _crop_left(cache, n: int) -> None:
    """Drop the first n columns (padding in every row)."""
    for layer in _cache_tensors(cache):
        layer.keys, layer.values = layer.keys[:, :, n:], layer.values[:, :, n:]


def _config_pad(model) -> int | None:
    """pad_token_id as the model's configs declare it (generation_config first), or None."""
    gc = getattr(model, "generation_config", None)  # a toy model (tests) may have none
    for v in (getattr(gc, "pad_token_id", None), getattr(model.config.get_text_config(decoder=True), "pad_token_id", None)):
        if v is not None:
            return int(v if not isinstance(v, (list, tuple)) else v[0])
    return None


def declared_pad(model) -> int | None:
    """The declared padding id, or None; None too where it is one of the model's EOS ids (as for
    SmolLM2), where HF generate guesses no mask either: an EOS inside an unpadded prompt is text."""
    pad = _config_pad(model)
    eos = eos_set(getattr(getattr(model, "generation_config", None), "eos_token_id", None))
    return None if pad in eos else pad


def pad_id(model, eos: set[int]) -> int:
    """The id HF generate pads finished rows with: pad_token_id, else an EOS id, else 0."""
    pad = _config_pad(model)
    return pad if pad is not None else min(eos) if eos else 0


# ----------------------------------------------------------------------------------------------
# The loops
# ----------------------------------------------------------------------------------------------


def realign_index(m: torch.Tensor, L: int, M: int | None = None) -> torch.Tensor:
    """Where each column of the grown, right-aligned layout comes from. Rows had L columns; this round
    row b keeps m[b] of its candidate columns L, L+1, ... (m: (B,) long). The new layout has L + M
    columns (M = max m by default) and row b is shifted right by M - m[b]: returns index (B, L + M)
    with index[b, j] = j - (M - m[b]), the source column, or a negative number where the new column
    is padding. In the loop every running row adds at least one token (m[b] >= 1). Example: L = 3,
    m = [3, 1] -> [[0, 1, 2, 3, 4, 5], [-2, -1, 0, 1, 2, 3]]."""
    M = int(m.max()) if M is None else M
    return torch.arange(L + M, device=m.device)[None, :] - (M - m)[:, None]  # (B, L + M)


class _Batch:
    """The running rows: tokens (B, L) right-aligned, valid (B, L), their original row numbers, and
    the caches of one or two models, which hold every column but the last."""

    def __init__(self, input_ids, valid, caches):
        self.tokens, self.valid, self.caches = input_ids, valid, caches
        self.rows = list(range(input_ids.shape[0]))

    def grow(self, ext_tokens, ext_valid, m: torch.Tensor, M: int) -> None:
        """Columns L.. of ext_* are the round's candidates; row b keeps m[b] of them and is shifted
        right by M - m[b] so that all rows end in the last column again."""
        L = self.tokens.shape[1]
        index = realign_index(m, L, M)  # (B, L + M)
        keep = index >= 0
        i = index.clamp_min(0)
        self.tokens = ext_tokens.gather(1, i)
        self.valid = ext_valid.gather(1, i) & keep
        for cache in self.caches:
            if bool((m == M).all()):  # no row shifts: cut the extra columns off
                _crop_right(cache, L + M - 1)
            else:
                _realign(cache, index[:, : L + M - 1])

    def select(self, keep: list[int]) -> None:
        """Keep the listed batch positions (rows that have not finished)."""
        if len(keep) < len(self.rows):
            idx = torch.tensor(keep, dtype=torch.long, device=self.tokens.device)
            self.tokens, self.valid = self.tokens[idx], self.valid[idx]
            for cache in self.caches:
                _take_rows(cache, idx)
            self.rows = [self.rows[i] for i in keep]

    def trim(self) -> None:
        """Drop the columns that are padding in every row."""
        if not self.rows:
            return
        lead = int((~self.valid).long().cumprod(1).sum(1).min())  # leading pad columns shared by all rows
        if lead:
            self.tokens, self.valid = self.tokens[:, lead:], self.valid[:, lead:]
            for cache in self.caches:
                _crop_left(cache, lead)


def _crop_right(cache, length: int) -> None:
    for layer in _cache_tensors(cache):
        layer.keys, layer.values = layer.keys[:, :, :length], layer.values[:, :, :length]


def _finish(input_ids, outs: list[list[int]], pad: int) -> torch.Tensor:
    """(B, T + max new): the prompt, then each row's new tokens, padded with `pad`."""
    B, T = input_ids.shape
    width = max((len(o) for o in outs), default=0)
    seq = torch.full((B, T + width), pad, dtype=torch.long, device=input_ids.device)
    seq[:, :T] = input_ids
    for b, o in enumerate(outs):
        seq[b, T : T + len(o)] = torch.tensor(o, dtype=torch.long, device=seq.device)
    return seq


def _prefill(models_caches_timers, batch: _Batch) -> None:
    """Every model reads the prompt but its last column (the first round feeds that one)."""
    if batch.tokens.shape[1] > 1:
        for model, cache, timer in models_caches_timers:
            _forward(model, cache, batch.tokens[:, :-1], batch.valid[:, :-1], timer, keep=1)


def _cut(tokens: list[int], eos: set[int]) -> list[int]:
    for j, t in enumerate(tokens):
        if t in eos:
            return tokens[: j + 1]
    return tokens


@torch.inference_mode()
def speculative_batched(target, draft, input_ids, attention_mask, *, max_new_tokens, gamma, temperature=0.0, top_k=None,
                        top_p=None, eos=frozenset(), generator=None, time_models=True) -> BatchedOutput:
    """Speculative decoding of B left-padded prompts at once (`speculative.speculative_generate`
    dispatches here for B > 1 or a padded mask). Arguments are checked as there, so a direct call
    gets the same clear errors (a padded batch without its mask among them)."""
    max_new_tokens = check_generate_args(max_new_tokens, gamma)
    gamma = int(gamma)
    check_sampling_args(temperature, top_k, top_p, generator)
    check_models(target, draft)
    device = target.device
    input_ids = check_input_ids(input_ids, target, batched=True).to(device)
    eos = eos_set(eos)
    check_lengths(target, draft, input_ids.shape[1], max_new_tokens)
    valid = check_batch(input_ids, attention_mask.to(device) if attention_mask is not None else None, declared_pad(target))
    B = input_ids.shape[0]
    warp = dict(temperature=temperature, top_k=top_k, top_p=top_p, check=False)
    t_cache, d_cache = DynamicCache(), DynamicCache()
    t_timer, d_timer = _Timer(device, time_models), _Timer(device, time_models)
    t0 = time.perf_counter()
    batch = _Batch(input_ids, valid, [t_cache, d_cache])
    _prefill([(target, t_cache, t_timer), (draft, d_cache, d_timer)], batch)
    outs = [[] for _ in range(B)]
    drafted, accepted, rejected = [0] * B, [0] * B, [0] * B
    out = BatchedOutput(None, [], [], [], [], 0, 0.0, 0.0, 0.0)

    if max_new_tokens == 0:
        batch.rows = []
    while batch.rows:
        Bn = len(batch.rows)
        rem = torch.tensor([max_new_tokens - len(outs[r]) for r in batch.rows], device=device)  # (Bn,)
        k = min(gamma, int(rem.max()) - 1)  # never draft what no row may keep
        k_row = (rem - 1).clamp(max=k)  # (Bn,) row b may accept at most k_row[b]
        out.batch_sizes.append(Bn)
        out.widths.append(batch.tokens.shape[1])
        # Draft k tokens for every row, (Bn, 1) at a time.
        x, valid, q_rows, d = batch.tokens[:, -1:], batch.valid, [], []
        out.draft_passes += k
        for _ in range(k):
            q = probs_from_logits(_forward(draft, d_cache, x, valid, d_timer)[:, -1], **warp)  # (Bn, V)
            tok = sample(q, generator) if temperature > 0 else q.argmax(-1)  # (Bn,)
            q_rows.append(q)
            d.append(tok)
            x = tok[:, None]
            valid = torch.cat([valid, torch.ones_like(valid[:, :1])], 1)
        d = torch.stack(d, 1) if k else batch.tokens[:, :0]  # (Bn, k)
        # The target checks [last token, d_1..d_k] of every row in ONE pass.
        x = torch.cat([batch.tokens[:, -1:], d], 1)  # (Bn, k + 1)
        v_all = torch.cat([batch.valid, torch.ones_like(d, dtype=torch.bool)], 1)
        p = probs_from_logits(_forward(target, t_cache, x, v_all, t_timer), **warp)  # (Bn, k + 1, V)
        n, nxt = _verify_rows(p, torch.stack(q_rows, 1) if k else None, d, k_row, temperature, generator)
        # ONE host sync per round: what each row accepted and its next token.
        n_l, nxt_l, d_l = n.tolist(), nxt.tolist(), d.tolist()
        m, keep = [], []
        out.added.append([0] * B)
        for i, r in enumerate(batch.rows):
            new = _cut(d_l[i][: n_l[i]] + [nxt_l[i]], eos)
            outs[r] += new
            drafted[r] += int(k_row[i])
            accepted[r] += min(n_l[i], len(new))
            rejected[r] += n_l[i] < int(k_row[i])
            m.append(len(new))
            out.added[-1][r] = len(new)
            if new[-1] not in eos and len(outs[r]) < max_new_tokens:
                keep.append(i)
        out.rounds += 1
        if not keep:
            break
        M = max(m[i] for i in keep)  # the most tokens a running row added
        out.ragged_rounds += any(m[i] != M for i in keep)
        if k and M == k + 1:  # a running row kept all k drafts: the draft has not cached d_k yet
            _forward(draft, d_cache, d[:, -1:], valid, d_timer, keep=1)
            out.draft_passes += 1
        # Candidates of this round as columns L..L+k: d_1..d_k, with row b's own token at L + n_b.
        ext_tokens = torch.cat([batch.tokens, d, torch.zeros_like(d[:, :1])], 1)  # (Bn, L + k + 1)
        ext_tokens[torch.arange(Bn, device=device), batch.tokens.shape[1] + n] = nxt
        m_t = torch.tensor(m, device=device)
        ext_valid = torch.cat([batch.valid, torch.arange(k + 1, device=device)[None, :] < m_t[:, None]], 1)
        if len(keep) < Bn:  # finished rows leave the batch
            idx = torch.tensor(keep, dtype=torch.long, device=device)
            ext_tokens, ext_valid, m_t = ext_tokens[idx], ext_valid[idx], m_t[idx]
            batch.select(keep)
        batch.grow(ext_tokens, ext_valid, m_t, M)
        batch.trim()

    out.sequences = _finish(input_ids, outs, pad_id(target, eos))
    out.new_tokens, out.drafted, out.accepted, out.rejected = [len(o) for o in outs], drafted, accepted, rejected
    out.draft_time, out.target_time, out.total_time = d_timer.total, t_timer.total, time.perf_counter() - t0
    return out


def _verify_rows(p, q, d, k_row, temperature, generator):
    """Per row: how many drafted tokens it accepts (n, (B,)) and the token it adds (B,).
    p: (B, k + 1, V); q: (B, k, V) or None when k = 0; d: (B, k); k_row: (B,) the most row b may accept."""
    B, K1, _ = p.shape
    rows = torch.arange(B, device=p.device)
    if temperature == 0:  # greedy: accept while x_i is the target's argmax
        ok = (p[:, :-1].argmax(-1) == d) & (torch.arange(K1 - 1, device=p.device)[None, :] < k_row[:, None])
        n = ok.long().cumprod(1).sum(1)  # (B,)
        return n, p[rows, n].argmax(-1)
    if q is None:
        return torch.zeros(B, dtype=torch.long, device=p.device), sample(p[:, 0], generator)
    u = rand(d.shape, p.device, generator)  # (B, k)
    ns, dists = [], []
    for b in range(B):  # the shared rule, one row at a time (k_row[b] masks what that row may not keep)
        n_b, dist_b, _ = speculative.accept_reject(p[b], q[b], d[b], u[b], k=k_row[b])  # looked up per call: tests patch it
        ns.append(n_b)
        dists.append(dist_b)
    return torch.stack(ns), sample(torch.stack(dists), generator)


@torch.inference_mode()
def autoregressive_batched(model, input_ids, attention_mask=None, *, max_new_tokens, temperature=0.0, top_k=None,
                           top_p=None, eos=frozenset(), generator=None) -> BatchedOutput:
    """Plain batched decoding with the same layout and masks (the baseline of notebook 09): one
    (B, 1) step per token, finished rows leave the batch."""
    max_new_tokens = check_generate_args(max_new_tokens)
    check_sampling_args(temperature, top_k, top_p, generator)
    check_model(model, "model")
    device = model.device
    input_ids = check_input_ids(input_ids, model, batched=True).to(device)
    eos = eos_set(eos)
    check_length(model, input_ids.shape[1], max_new_tokens)
    valid = check_batch(input_ids, attention_mask.to(device) if attention_mask is not None else None, declared_pad(model))
    B = input_ids.shape[0]
    warp = dict(temperature=temperature, top_k=top_k, top_p=top_p, check=False)
    cache, timer = DynamicCache(), _Timer(device, False)
    t0 = time.perf_counter()
    batch = _Batch(input_ids, valid, [cache])
    _prefill([(model, cache, timer)], batch)
    outs = [[] for _ in range(B)]
    out = BatchedOutput(None, [], [0] * B, [0] * B, [0] * B, 0, float("nan"), float("nan"), 0.0)
    if max_new_tokens == 0:
        batch.rows = []
    while batch.rows:
        out.batch_sizes.append(len(batch.rows))
        out.widths.append(batch.tokens.shape[1])
        p = probs_from_logits(_forward(model, cache, batch.tokens[:, -1:], batch.valid, timer)[:, -1], **warp)
        nxt = sample(p, generator) if temperature > 0 else p.argmax(-1)  # (B,)
        keep = []
        for i, (r, t) in enumerate(zip(batch.rows, nxt.tolist())):
            outs[r].append(t)
            if t not in eos and len(outs[r]) < max_new_tokens:
                keep.append(i)
        out.rounds += 1
        ones = torch.ones_like(batch.valid[:, :1])
        batch.tokens, batch.valid = torch.cat([batch.tokens, nxt[:, None]], 1), torch.cat([batch.valid, ones], 1)
        batch.select(keep)
        batch.trim()
    out.sequences = _finish(input_ids, outs, pad_id(model, eos))
    out.new_tokens = [len(o) for o in outs]
    out.total_time = time.perf_counter() - t0
    return out
