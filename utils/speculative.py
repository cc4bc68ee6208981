"""Speculative sampling (Leviathan et al. 2023; Chen et al. 2023), written to be read.

One round:
1. the draft proposes k <= gamma tokens x_1..x_k, sampling each from its distribution q;
2. the target scores [last, x_1..x_k] in ONE forward pass, giving p at k + 1 positions;
3. left to right, x_i is accepted with probability min(1, p(x_i) / q(x_i));
4. at the first rejection, one token is sampled from norm(max(0, p - q)) and the round ends;
   if all k are accepted, a bonus token is sampled from p at position k + 1.

Every round emits between 1 and k + 1 tokens, and the emitted text has exactly the distribution of
sampling from the target alone. At temperature 0 both distributions are one-hot, so the rule reduces
to "accept while x_i is the target's argmax" and the output equals target greedy decoding (in
float32; in 16 bits a pass over several tokens can round differently from one-token steps, so a
near-tie between two tokens can flip: notebook 03 shows the check).
"""

from __future__ import annotations

import numbers
import time
import warnings
from dataclasses import dataclass, field

import torch
from transformers.cache_utils import Cache, DynamicCache, DynamicLayer

from .models import sync
from .sampling import check_count, check_sampling_args, eos_set, probs_from_logits, rand, sample

# ----------------------------------------------------------------------------------------------
# One verification step as a pure function on probabilities (unit-tested, used in notebook 03)
# ----------------------------------------------------------------------------------------------


@dataclass
class Verification:
    """What one verification step decided."""

    n_accepted: int  # how many drafted tokens were kept (0..k)
    token: int  # the token the target adds: a resample after a rejection, or a bonus
    kind: str  # "resample" (after a rejection) or "bonus" (all k accepted)
    accept_prob: list[float]  # min(1, p(x_i)/q(x_i)) for each drafted token
    uniforms: list[float]  # the uniform draws u_i compared against accept_prob
    residual: torch.Tensor | None = None  # (V,) the distribution the resample was drawn from


def residual_distribution(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """norm(max(0, p - q)): where to sample from after a rejection. p, q: (V,) -> (V,).

    If p == q exactly the residual is all zeros; a rejection then has probability 0, but we fall
    back to p so the function is total.
    """
    r = (p - q).clamp_min(0)
    s = r.sum()
    return r / s if s > 0 else p


def verify_step(
    p: torch.Tensor,
    q: torch.Tensor,
    draft_tokens: torch.Tensor,
    *,
    generator: torch.Generator | None = None,
    resample_from: str = "residual",
    check: bool = True,
) -> Verification:
    """Accept/reject k drafted tokens.

    p: (k + 1, V) target probabilities at each drafted position plus the bonus position.
    q: (k, V) draft probabilities the tokens were sampled from.
    draft_tokens: (k,) the drafted token ids.
    resample_from: "residual" is the correct rule. "p" is the WRONG rule of the Practitioner's
        Guide (sample a fresh token from p after a rejection); it is here only to show its bias.
    check: validate the inputs first (shapes, probabilities, q(x_i) > 0); speculative_generate,
        whose p and q are right by construction, passes False to save the host syncs.
    """
    if resample_from not in ("residual", "p"):
        raise ValueError('resample_from must be "residual" (correct) or "p" (the biased rule, for demos)')
    if check:
        check_verify_inputs(p, q, draft_tokens)
    k = draft_tokens.shape[0]
    u = rand(k, p.device, generator)
    n_t, dist, accept = accept_reject(p, q, draft_tokens, u)
    n = int(n_t)
    accept_l, u_l = accept.tolist(), u.tolist()
    if n == k:  # all accepted: bonus token from p at position k + 1
        return Verification(k, int(sample(p[k], generator)), "bonus", accept_l, u_l)
    if resample_from == "p":
        dist = p[n]
    return Verification(n, int(sample(dist, generator)), "resample", accept_l[: n + 1], u_l[: n + 1], dist)


def _check_probs(x: torch.Tensor, name: str, what: str) -> None:
    if not torch.isfinite(x).all() or (x < 0).any():
        raise ValueError(
            f"{name} must hold probabilities ({what}), but it has negative, NaN or infinite entries: "
            "did you pass logits? Turn them into probabilities with utils.sampling.probs_from_logits."
        )
    sums = x.sum(-1)
    if not torch.allclose(sums, torch.ones_like(sums), atol=1e-3):
        raise ValueError(
            f"every row of {name} must sum to 1 ({what}); row sums are {[round(v, 4) for v in sums.tolist()]}. "
            "Did you pass logits? Use utils.sampling.probs_from_logits."
        )


def check_verify_inputs(p: torch.Tensor, q: torch.Tensor, draft_tokens: torch.Tensor) -> None:
    """Cheap checks of verify_step's inputs, with messages for the usual mistakes (logits instead of
    probabilities, p and q swapped, a token the draft could not have sampled)."""
    for name, x in (("p", p), ("q", q), ("draft_tokens", draft_tokens)):
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor (got {type(x).__name__}).")
    if draft_tokens.dim() != 1 or draft_tokens.is_floating_point() or draft_tokens.dtype == torch.bool:
        raise ValueError(f"draft_tokens must be a 1-D tensor of k token ids (got shape {tuple(draft_tokens.shape)}, "
                         f"dtype {draft_tokens.dtype}).")
    k = draft_tokens.shape[0]
    if q.dim() != 2 or p.dim() != 2 or q.shape[0] != k or p.shape[0] != k + 1 or p.shape[1] != q.shape[1]:
        hint = " Did you swap p and q? p (the target) has one more row: the bonus position." if (
            p.dim() == 2 and q.dim() == 2 and p.shape[0] + 1 == q.shape[0]) else ""
        raise ValueError(
            f"for k = {k} drafted tokens, p must be (k + 1, V) and q (k, V); got p {tuple(p.shape)}, "
            f"q {tuple(q.shape)}.{hint}"
        )
    V = p.shape[1]
    if k and (int(draft_tokens.min()) < 0 or int(draft_tokens.max()) >= V):
        raise ValueError(f"draft_tokens must be ids in [0, {V}) (got {draft_tokens.tolist()}).")
    _check_probs(p, "p", "the target's distribution at each position, shape (k + 1, V)")
    _check_probs(q, "q", "the draft's distribution each token was sampled from, shape (k, V)")
    if k and (q[torch.arange(k, device=q.device), draft_tokens.to(q.device)] <= 0).any():
        raise ValueError(
            "q gives probability 0 to a drafted token, so the draft could not have sampled it: pass the q "
            "each token was drawn from (with the same temperature, top-k and top-p)."
        )


def accept_reject(p: torch.Tensor, q: torch.Tensor, draft_tokens: torch.Tensor, u: torch.Tensor, k=None):
    """The accept/reject rule on device tensors, with no host sync: shared by `verify_step` (eager,
    readable) and the compiled engine (`utils.fast`).

    p: (K + 1, V) target probabilities; q: (K, V) draft probabilities; draft_tokens: (K,);
    u: (K,) uniform draws. k: how many of the K drafted tokens are real (an int or a 0-d tensor;
    default K); positions >= k are padding and never accepted.
    Returns (n, dist, accept): n, a 0-d long tensor, how many drafted tokens are accepted (the prefix
    before the first u_i >= min(1, p(x_i)/q(x_i))); dist (V,), the distribution of the token the target
    adds: norm(max(0, p - q)) at position n after a rejection, p at position n when all k were accepted
    (the bonus); accept (K,), min(1, p(x_i)/q(x_i)).
    """
    K = draft_tokens.shape[0]
    idx = torch.arange(K, device=p.device)
    p_x, q_x = p[idx, draft_tokens], q[idx, draft_tokens]  # (K,)
    accept = torch.minimum(torch.ones_like(p_x), p_x / q_x)  # q_x > 0: x_i was sampled from q
    ok = u < accept
    if k is not None:
        ok = ok & (idx < k)
    n = ok.long().cumprod(0).sum()  # length of the accepted prefix, () on the device
    p_n = p.index_select(0, n.view(1))[0]  # (V,)
    q_n = torch.cat([q, torch.zeros_like(q[:1])]).index_select(0, n.view(1))[0]  # row K: zeros
    r = (p_n - q_n).clamp_min(0)
    s = r.sum()
    bonus = n == (K if k is None else k)
    # After a rejection sample from the residual; if it is all zeros (p == q: a rejection had
    # probability 0) fall back to p, as residual_distribution does.
    dist = torch.where(bonus | (s <= 0), p_n, r / s.clamp_min(torch.finfo(r.dtype).tiny))
    return n, dist, accept


def verify_step_biased(p, q, draft_tokens, *, generator=None) -> Verification:
    """WRONG on purpose: after a rejection, resample from p instead of norm(max(0, p - q))."""
    return verify_step(p, q, draft_tokens, generator=generator, resample_from="p")


# ----------------------------------------------------------------------------------------------
# The full algorithm on two Hugging Face causal LMs
# ----------------------------------------------------------------------------------------------


@dataclass
class Round:
    """One draft-verify round, for inspection and for the token renderer."""

    drafted: list[int]  # x_1..x_k
    n_accepted: int
    token: int  # emitted by the target after the accepted prefix
    kind: str  # "resample", "bonus", or "target" (k = 0: plain target step near the end)
    p: list[float]  # p(x_i) under the target for each drafted token
    q: list[float]  # q(x_i) under the draft
    emitted: list[int] = field(default_factory=list)  # accepted tokens + token, cut at EOS
    gamma: int | None = None  # eager loop: the draft length the schedule allowed this round (None: not recorded)
    u: list[float] = field(default_factory=list)  # uniform draws u_i for the checked tokens (empty when greedy)


@dataclass
class SpeculativeOutput:
    sequences: torch.Tensor  # (1, prompt + new)
    rounds: list[Round]
    draft_time: float  # seconds spent in draft forward passes
    target_time: float  # seconds spent in target forward passes
    total_time: float
    compile_time: float = 0.0  # backend="compiled": seconds of first calls that compiled a shape (in total_time)
    host_syncs: int | None = None  # backend="compiled": how often the host read device values
    draft_first_time: float = 0.0  # eager: the draft's first pass, which also reads the prompt (in draft_time)
    target_first_time: float = 0.0  # eager: the target's first pass, prompt included (in target_time)
    # backend="compiled": seconds of both models' eager passes over the prompt, before the first round
    # (in total_time, in neither draft_time nor target_time); eager: 0, each model's
    # first pass reads the prompt (draft_first_time, target_first_time)
    prefill_time: float = 0.0

    @property
    def n_drafted(self) -> int:
        return sum(len(r.drafted) for r in self.rounds)

    @property
    def n_accepted(self) -> int:
        return sum(r.n_accepted for r in self.rounds)

    @property
    def acceptance_rate(self) -> float:
        """accepted / drafted (alpha-hat). NaN if nothing was drafted."""
        return self.n_accepted / self.n_drafted if self.n_drafted else float("nan")

    @property
    def n_rejected(self) -> int:
        """Rounds that ended in a rejection (each checks and rejects exactly one drafted token)."""
        return sum(r.kind == "resample" for r in self.rounds)

    @property
    def checked_acceptance_rate(self) -> float:
        """accepted / (accepted + rejections): the per-token acceptance probability alpha of the
        cost model (Leviathan Eq. 1). accepted / drafted is lower at large gamma, because drafted
        tokens after a rejection are thrown away unchecked."""
        checked = self.n_accepted + self.n_rejected
        return self.n_accepted / checked if checked else float("nan")

    @property
    def tokens_per_round(self) -> float:
        """New tokens per target forward pass (tau-hat)."""
        return sum(len(r.emitted) for r in self.rounds) / max(1, len(self.rounds))

    @property
    def new_tokens(self) -> int:
        return sum(len(r.emitted) for r in self.rounds)


def check_backend(backend) -> None:
    if backend not in ("eager", "compiled"):
        raise ValueError(
            f'backend must be "eager" (the readable loop) or "compiled" (utils.fast: static cache + '
            f"torch.compile), got {backend!r}."
        )


def check_model(model, name: str = "model") -> None:
    """A Hugging Face causal LM (anything with a config that can be called), not None or a string."""
    if model is None or isinstance(model, str) or not hasattr(model, "config") or not callable(model):
        raise TypeError(
            f"{name} must be a loaded Hugging Face causal language model (got {type(model).__name__}); "
            f"load one with utils.models.load_pair(...), e.g. pair.{name if name in ('target', 'draft') else 'target'}."
        )


def check_models(target, draft) -> None:
    """Both are models, and they share a vocabulary (same ids for the same tokens)."""
    check_model(target, "target")
    check_model(draft, "draft")
    vt, vd = target.config.get_text_config().vocab_size, draft.config.get_text_config().vocab_size
    if vt != vd:
        raise ValueError(
            f"draft and target vocabularies differ (draft vocab_size={vd}, target vocab_size={vt}). "
            "Speculative sampling compares p and q token by token, so both models need the same tokenizer: "
            "pick a draft from the target's family (see utils.models.PAIRS)."
        )


def check_input_ids(input_ids, model=None, batched: bool = False) -> torch.Tensor:
    """A (1, T) integer tensor ((B, T) when `batched`), T >= 1, every id inside the model's vocabulary
    (when a model is given). Returns it as torch.long (int32 ids, e.g. from NumPy on Windows, would
    otherwise give the compiled engine a second set of graphs)."""
    if (not isinstance(input_ids, torch.Tensor) or input_ids.dim() != 2 or input_ids.is_floating_point()
            or input_ids.is_complex()):
        shape = tuple(input_ids.shape) if isinstance(input_ids, torch.Tensor) else type(input_ids).__name__
        raise ValueError(
            f"input_ids must be a 2-D integer tensor of shape (1, prompt_length), got {shape}; "
            'use tokenizer(prompt, return_tensors="pt").input_ids.'
        )
    if input_ids.shape[0] < 1 or (input_ids.shape[0] != 1 and not batched):
        raise ValueError(
            f"batch size must be 1 here (got {input_ids.shape[0]}): this function decodes one sequence at a time. "
            "speculative_generate (eager backend) takes a (B, T) batch with its attention_mask; or loop over your prompts."
        )
    if input_ids.shape[1] < 1:
        raise ValueError("input_ids is empty: give at least one token (e.g. the BOS token).")
    if input_ids.dtype == torch.bool:
        raise ValueError("input_ids is a boolean tensor (an attention mask?): pass the token ids.")
    if model is not None:
        V = model.config.get_text_config().vocab_size
        lo, hi = int(input_ids.min()), int(input_ids.max())
        if lo < 0 or hi >= V:
            raise ValueError(
                f"input_ids holds ids outside the model's vocabulary [0, {V}) (min {lo}, max {hi}): "
                "encode the prompt with this model's own tokenizer."
            )
    return input_ids.long()


def _caller_level() -> int:
    """For warnings.warn in the function calling this one: the stacklevel of the first frame outside
    this package and torch (the learner's cell, not a wrapper such as torch.inference_mode's)."""
    import os
    import sys

    inside = (os.path.dirname(os.path.abspath(__file__)), os.path.dirname(os.path.abspath(torch.__file__)))
    frame, level = sys._getframe(1), 1  # the warning function's own frame is level 1
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(inside):
        frame, level = frame.f_back, level + 1
    return level


def check_length(model, prompt_len: int, max_new_tokens: int, role: str = "model") -> int:
    """Warn, as Hugging Face does, when prompt + max_new_tokens passes the model's context length.
    Returns how many positions a cache should allocate up front (capped, so that a huge
    max_new_tokens does not allocate memory it will never use; buffers grow if needed)."""
    limit = getattr(model.config.get_text_config(), "max_position_embeddings", None)
    need = prompt_len + max_new_tokens
    if limit is not None and need > limit:
        warnings.warn(
            f"prompt ({prompt_len} tokens) + max_new_tokens ({max_new_tokens}) = {need} is more than the {role}'s "
            f"context ({limit} positions, max_position_embeddings): text past it is usually degenerate"
            + (" (a draft past its context drafts poorly: fewer tokens accepted, the output stays exact)" if role == "draft" else "")
            + ". Lower max_new_tokens or shorten the prompt.",
            UserWarning,
            stacklevel=_caller_level(),
        )
        return max(limit, prompt_len)
    return need


def check_lengths(target, draft, prompt_len: int, max_new_tokens: int) -> int:
    """check_length for the target and, when its context is shorter, for the draft too (its own
    warning; its cache grows as needed). Returns the target's allocation."""
    ctx = lambda m: getattr(m.config.get_text_config(), "max_position_embeddings", None) or float("inf")  # noqa: E731
    n_alloc = check_length(target, prompt_len, max_new_tokens, "target")
    if ctx(draft) < ctx(target):
        check_length(draft, prompt_len, max_new_tokens, "draft")
    return n_alloc


SCHEDULES = ("constant", "heuristic")


def check_adaptive_args(draft_confidence, schedule) -> None:
    """draft_confidence None or a number in [0, 1); schedule one of SCHEDULES."""
    what = ("the draft stops a round after a token it gave less than this probability (Hugging Face's "
            "assistant_confidence_threshold, default 0.4); None never stops early")
    if draft_confidence is not None and (isinstance(draft_confidence, bool) or not isinstance(draft_confidence, numbers.Real)):
        raise TypeError(f"draft_confidence must be None or a number in [0, 1) (got {draft_confidence!r}): {what}.")
    if draft_confidence is not None and not 0 <= draft_confidence < 1:
        raise ValueError(f"draft_confidence must be None or a number in [0, 1) (got {draft_confidence!r}): {what}.")
    if schedule not in SCHEDULES:
        raise ValueError(
            f'schedule must be "constant" (gamma tokens every round) or "heuristic" (Hugging Face\'s rule: gamma + 2 '
            f"after a round whose drafted tokens were all accepted, else gamma - 1, at least 1), got {schedule!r}."
        )


def check_generate_args(max_new_tokens, gamma=None) -> int:
    """max_new_tokens an integer >= 0 and (when drafting) gamma an integer >= 1; returns max_new_tokens."""
    if gamma is not None:
        check_count("gamma", gamma, 1, "it is how many tokens the draft proposes per round")
    return check_count("max_new_tokens", max_new_tokens, 0, "how many tokens to add after the prompt")


class PreallocatedLayer(DynamicLayer):
    """One layer's keys and values in buffers allocated once: `update` writes by index, `crop` moves
    the index back. transformers' DynamicLayer instead concatenates (allocates and copies the whole
    past) on every forward pass. The buffers double if a sequence outgrows them. Sliding-window
    layers keep their full past too: the sliding mask is applied from positions, so cropping stays
    exact after the sequence has outgrown the window.
    """

    def __init__(self, capacity: int = 256):
        super().__init__()
        self.capacity, self.length = capacity, 0

    def lazy_initialization(self, key_states, value_states):
        super().lazy_initialization(key_states, value_states)
        B, H, _, D = key_states.shape
        self.k_buf = key_states.new_empty(B, H, self.capacity, D)
        self.v_buf = value_states.new_empty(B, H, self.capacity, value_states.shape[-1])

    def update(self, key_states, value_states, *args, **kwargs):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        start, end = self.length, self.length + key_states.shape[-2]
        while end > self.k_buf.shape[-2]:  # rare: double the buffers
            self.k_buf = torch.cat([self.k_buf, torch.empty_like(self.k_buf)], dim=-2)
            self.v_buf = torch.cat([self.v_buf, torch.empty_like(self.v_buf)], dim=-2)
        self.k_buf[:, :, start:end] = key_states  # (B, H, T_new, D), written in place
        self.v_buf[:, :, start:end] = value_states
        self.length = end
        self.keys, self.values = self.k_buf[:, :, :end], self.v_buf[:, :, :end]  # views, no copy
        return self.keys, self.values

    def get_seq_length(self) -> int:
        return self.length

    def crop(self, tokens_to_remove: int) -> None:  # transformers' convention: a negative count
        if self.is_initialized and tokens_to_remove:
            self.length = max(0, self.length - abs(tokens_to_remove))
            self.keys, self.values = self.k_buf[:, :, : self.length], self.v_buf[:, :, : self.length]


def _new_cache(kind: str = "preallocated", capacity: int = 256) -> Cache:
    """A KV cache for one sequence: "preallocated" (PreallocatedLayer, the default) or "dynamic"
    (transformers' DynamicCache, which concatenates on every step)."""
    if kind == "dynamic":
        return DynamicCache()
    if kind != "preallocated":
        raise ValueError(f'cache must be "preallocated" or "dynamic" (got {kind!r})')
    return Cache(layer_class_to_replicate=lambda: PreallocatedLayer(capacity))


def _crop(cache, length: int) -> None:
    extra = cache.get_seq_length() - length
    if extra > 0:
        cache.crop(-extra)


class _Timer:
    """Accumulates the time of a model's forward passes. On a CPU the wall clock (execution is
    synchronous); on CUDA timing events recorded around each pass, read only when `total` is asked
    for, so timing adds no host sync of its own (the GPU's time between the two events: the pass's
    kernels, and any wait for their launches); on an Apple GPU (MPS, no timing events here) it waits
    for the GPU at each mark, then reads the clock. `enabled=False`, or another device, skips it (total
    is NaN). Use it as a context manager around a pass, or `add(mark(), mark())` for spans whose ends
    are shared with another timer (the compiled loop's draft and verify parts)."""

    def __init__(self, device, enabled: bool = True):
        self.device = torch.device(device)
        self.enabled = enabled and self.device.type in ("cpu", "cuda", "mps")
        self.cuda = self.enabled and self.device.type == "cuda"
        self.spans = []  # (start, end): perf_counter seconds, or CUDA events

    def mark(self):
        """A point in time on this device (None when disabled)."""
        if not self.enabled:
            return None
        if self.cuda:
            event = torch.cuda.Event(enable_timing=True)
            event.record(torch.cuda.current_stream(self.device))
            return event
        if self.device.type == "mps":  # asynchronous, with no timing events here: wait, then read the clock
            sync(self.device)
        return time.perf_counter()

    def add(self, start, end) -> None:
        """Count the span between two marks of this device (of this timer or another)."""
        if self.enabled:
            self.spans.append((start, end))

    def __enter__(self):
        self.t0 = self.mark()

    def __exit__(self, *exc):
        self.add(self.t0, self.mark())

    def _seconds(self, start, end) -> float:
        return start.elapsed_time(end) / 1e3 if self.cuda else end - start

    @property
    def total(self) -> float:
        if not self.enabled:
            return float("nan")
        if self.cuda and self.spans:
            self.spans[-1][1].synchronize()  # completes every earlier event too
        return sum((self._seconds(*span) for span in self.spans), 0.0)

    @property
    def last(self) -> float:
        """The last pass alone (waits for it on CUDA); NaN when disabled or before any pass."""
        if not self.spans:
            return float("nan")
        if self.cuda:
            self.spans[-1][1].synchronize()
        return self._seconds(*self.spans[-1])

    @property
    def first(self) -> float | None:
        """The first pass alone: it also processes the prompt (the prefill)."""
        if not self.spans:
            return None
        if self.cuda:
            self.spans[0][1].synchronize()
        return self._seconds(*self.spans[0])


@torch.inference_mode()
def speculative_generate(
    target,
    draft,
    input_ids: torch.Tensor,
    *,
    max_new_tokens: int,
    gamma: int = 4,
    temperature: float = 0.0,
    top_k: int | None = None,
    top_p: float | None = None,
    eos_token_id: int | list[int] | None = None,
    generator: torch.Generator | None = None,
    cache: str = "preallocated",
    time_models: bool = True,
    backend: str = "eager",
    draft_confidence: float | None = None,
    schedule: str = "constant",
    attention_mask: torch.Tensor | None = None,
) -> SpeculativeOutput:
    """Generate up to max_new_tokens with speculative sampling; the output is distributed exactly as
    sampling from `target` (temperature/top-k/top-p applied to both models), and at temperature 0 it
    equals `target.generate(do_sample=False)` token for token.

    input_ids: (1, T) prompt, or (B, T) prompts left-padded with their attention_mask (0 for padding),
    as the tokenizer returns them with padding_side="left": then `utils.batched` decodes all rows at
    once (eager backend, constant gamma) and returns a `batched.BatchedOutput` whose `sequences` is
    shaped like HF generate's, each row exact on its own (notebook 09). generator: a torch.Generator on the models' device, for reproducible
    sampling. cache: "preallocated" (KV buffers written by index, cropped by moving an index) or
    "dynamic" (transformers' DynamicCache). time_models: measure draft and target time separately
    (on CUDA with timing events, read at the end: no host sync of its own; False skips it).
    backend: "eager" (this function's loop, the one the notebooks read) or "compiled" (`utils.fast`:
    a static cache rolled back in place, torch.compile, CUDA graphs on a GPU, one host sync per
    round; same rule and same exactness; `cache` and `time_models` do not apply; the first call for
    each model and token width compiles, reported as `compile_time`).

    Adaptive drafting (eager backend only), as Hugging Face assisted generation does it:
    draft_confidence: stop drafting in a round right after a token x_i whose probability under the
        draft, q(x_i), is below this threshold; x_i itself stays in the draft. This is transformers'
        `assistant_confidence_threshold` (generation/stopping_criteria.py, ConfidenceCriteria: the
        softmax of the assistant's processed scores at the token it just chose, checked after that
        token is appended). So q is the warped draft distribution when sampling, and the draft's plain
        softmax (temperature 1) at temperature 0, where HF applies no warper. HF also retunes the
        threshold between rounds when scikit-learn is installed (update_candidate_strategy, a ROC
        curve); here it stays fixed. None (default) or 0: never stop early. Costs one host sync per
        drafted token.
    schedule: "constant" drafts gamma tokens every round; "heuristic" starts at gamma and, after each
        round, adds 2 if every drafted token was accepted, else subtracts 1 (at least 1): HF's
        `num_assistant_tokens_schedule="heuristic"` (generation/candidate_generator.py,
        AssistedCandidateGenerator.update_candidate_strategy), restarted at gamma on every call, as
        HF's "heuristic_transient" does. Each round records its gamma in `Round.gamma`.
    Both only choose how many tokens to draft, from what the draft has already drafted or from past
    rounds, before the target checks them: the output stays exactly the target's.
    """
    check_backend(backend)
    check_adaptive_args(draft_confidence, schedule)
    max_new_tokens = check_generate_args(max_new_tokens, gamma)
    gamma = int(gamma)
    check_sampling_args(temperature, top_k, top_p, generator)
    check_models(target, draft)
    input_ids = check_input_ids(input_ids, target, batched=True)
    eos = eos_set(eos_token_id)
    device = target.device
    from .batched import check_batch, declared_pad

    check_batch(input_ids, attention_mask, declared_pad(target))
    if input_ids.shape[0] > 1 or (attention_mask is not None and not bool(attention_mask.bool().all())):
        if backend != "eager" or draft_confidence is not None or schedule != "constant":
            raise ValueError(
                "a batch (B > 1, or an attention_mask with padding) runs on the eager backend with a constant gamma: "
                'leave backend="eager", draft_confidence=None and schedule="constant", or pass one prompt at a time.')
        from .batched import speculative_batched  # it checks the lengths (and the arguments, for direct calls)

        return speculative_batched(target, draft, input_ids, attention_mask, max_new_tokens=max_new_tokens, gamma=gamma,
                                   temperature=temperature, top_k=top_k, top_p=top_p, eos=eos, generator=generator,
                                   time_models=time_models)
    if backend == "compiled":
        if draft_confidence is not None or schedule != "constant":
            raise ValueError(
                'draft_confidence and schedule="heuristic" need backend="eager": the compiled engine drafts a fixed '
                "gamma tokens per round with one host sync per round (stopping on the draft's confidence needs one per token)."
            )
        from .fast import speculative_compiled

        rounds, new, stats, t_d, t_t, total = speculative_compiled(
            target, draft, input_ids, max_new_tokens=max_new_tokens, gamma=gamma, temperature=temperature,
            top_k=top_k, top_p=top_p, eos=eos, generator=generator)
        seq = torch.cat([input_ids.to(device), torch.tensor([new], dtype=torch.long, device=device)], dim=1)
        return SpeculativeOutput(seq, rounds, t_d, t_t, total, compile_time=stats.compile_time, host_syncs=stats.host_syncs,
                                 prefill_time=stats.prefill_time)
    n_alloc = check_lengths(target, draft, input_ids.shape[1], max_new_tokens)
    seq = input_ids.to(device)[0].tolist()
    warp = dict(temperature=temperature, top_k=top_k, top_p=top_p, check=False)
    capacity = n_alloc + min(gamma, max_new_tokens) + 1  # the most either cache holds (a round drafts < max_new_tokens)
    t_cache, d_cache = _new_cache(cache, capacity), _new_cache(cache, capacity)
    t_timer, d_timer = _Timer(device, time_models), _Timer(device, time_models)
    rounds: list[Round] = []
    t_start = time.perf_counter()

    def forward(model, cache, x, timer):  # x: (1, n) token ids -> logits (n, V)
        with timer:
            return model(input_ids=x, past_key_values=cache, use_cache=True).logits[0]

    def ids(tokens):  # list[int] -> (1, n) on the device
        return torch.tensor([tokens], device=device)

    # Invariant between rounds: each cache holds a prefix of seq[:-1]. The first forward pass of
    # each model also processes the prompt (no separate prefill pass, as in Hugging Face).
    n_new = 0
    while n_new < max_new_tokens:
        k = min(gamma, max_new_tokens - n_new - 1)  # never overshoot: a round emits <= k + 1 tokens
        drafted, q_rows = [], []
        if k > 0:
            # Draft: catch up on tokens it has not seen (the prompt, 1 token, or 2 after a bonus), then
            # propose k. Tokens stay on the device: one host sync per round, not one per token (but one
            # per token with draft_confidence, which reads the draft's probability of each token it drafts).
            x, toks = ids(seq[d_cache.get_seq_length() :]), []
            for _ in range(k):
                logits_d = forward(draft, d_cache, x, d_timer)[-1]  # (V,)
                q = probs_from_logits(logits_d, **warp)  # (V,)
                tok = sample(q, generator) if temperature > 0 else q.argmax()  # () on the device
                toks.append(tok)
                q_rows.append(q)
                x = tok.view(1, 1)
                if draft_confidence and (q if temperature > 0 else logits_d.float().softmax(-1))[tok] < draft_confidence:
                    break  # HF's ConfidenceCriteria: the draft is unsure of x_i; keep it, draft no further
            drafted = torch.stack(toks).tolist()
            for j, tok in enumerate(drafted):  # the target would stop at EOS too: drop what follows
                if tok in eos:
                    drafted, q_rows = drafted[: j + 1], q_rows[: j + 1]
                    break
            k = len(drafted)
        # Target: ONE pass over [unseen tokens, x_1..x_k] gives p at the last k + 1 positions.
        logits = forward(target, t_cache, ids(seq[t_cache.get_seq_length() :] + drafted), t_timer)
        p = probs_from_logits(logits[-(k + 1) :], **warp)  # (k+1, V)
        if k == 0:
            v = Verification(0, int(sample(p[0], generator)) if temperature > 0 else int(p[0].argmax()), "target", [], [])
            p_x = q_x = []
        else:
            q = torch.stack(q_rows)  # (k, V)
            d = torch.tensor(drafted, device=p.device)
            if temperature == 0:  # greedy: accept while x_i is the target's argmax, no random draws
                match = (p[:k].argmax(-1) == d).tolist() + [False]
                n = match.index(False)
                v = Verification(n, int(p[n].argmax()), "bonus" if n == k else "resample", [], [])
            else:
                v = verify_step(p, q, d, generator=generator, check=False)
            idx = torch.arange(k, device=p.device)
            p_x, q_x = p[idx, d].tolist(), q[idx, d].tolist()
        emitted = drafted[: v.n_accepted] + [v.token]
        for j, tok in enumerate(emitted):  # stop at EOS, exactly where target sampling would
            if tok in eos:
                emitted = emitted[: j + 1]
                break
        rounds.append(Round(drafted, v.n_accepted, v.token, v.kind, p_x, q_x, emitted, gamma, u=v.uniforms))
        seq.extend(emitted)
        n_new += len(emitted)
        if schedule == "heuristic":  # transformers 5.23, generation/candidate_generator.py, update_candidate_strategy
            gamma = gamma + 2 if v.n_accepted == len(drafted) else max(1, gamma - 1)
        # Roll both caches back to the accepted prefix (the new last token is not cached yet).
        _crop(t_cache, len(seq) - 1)
        _crop(d_cache, len(seq) - 1)
        if emitted[-1] in eos:
            break

    return SpeculativeOutput(
        sequences=torch.tensor([seq], device=device),
        rounds=rounds,
        draft_time=d_timer.total,
        target_time=t_timer.total,
        total_time=time.perf_counter() - t_start,
        draft_first_time=d_timer.first or 0.0,
        target_first_time=t_timer.first or 0.0,
    )


@torch.inference_mode()
def one_round(target, draft, input_ids, *, gamma=4, temperature=1.0, top_k=None, top_p=None, generator=None):
    """A single round, spelled out without caches, for the step-by-step walk-through of notebook 03.

    Returns dict(drafted (k,), q (k, V), p (k+1, V), verification). Same maths as
    speculative_generate, which adds KV caches, EOS and length handling.
    """
    check_count("gamma", gamma, 1, "it is how many tokens the draft proposes")
    check_sampling_args(temperature, top_k, top_p, generator)
    check_models(target, draft)
    input_ids = check_input_ids(input_ids, target)
    warp = dict(temperature=temperature, top_k=top_k, top_p=top_p, check=False)
    x, q_rows, drafted = input_ids.to(target.device), [], []
    for _ in range(gamma):  # the draft proposes gamma tokens, one at a time
        q = probs_from_logits(draft(x).logits[0, -1], **warp)  # (V,)
        tok = sample(q, generator) if temperature > 0 else q.argmax()
        drafted.append(int(tok))
        q_rows.append(q)
        x = torch.cat([x, tok.view(1, 1)], dim=1)
    n = input_ids.shape[1]
    p = probs_from_logits(target(x).logits[0, n - 1 :], **warp)  # (gamma + 1, V): ONE target pass
    d, q = torch.tensor(drafted, device=p.device), torch.stack(q_rows)
    return dict(drafted=d, q=q, p=p, verification=verify_step(p, q, d, generator=generator))


# ----------------------------------------------------------------------------------------------
# Checks and measurements for notebook 03 (greedy rounding, sampling exactness, acceptance)
# ----------------------------------------------------------------------------------------------


@torch.inference_mode()
def verification_logits(target, sequences: torch.Tensor, prompt_len: int, rounds, cache: str = "preallocated") -> torch.Tensor:
    """Replay the target's verification passes of a speculative_generate run and return, for every
    new token, the target logits that decided it.

    sequences: (1, prompt_len + n) the run's output; rounds: its `Round` records. Each round's pass is
    the one `speculative_generate` made: [tokens not cached yet, x_1..x_k] on top of a KV cache, then
    the cache is cropped to the accepted prefix. Of its k + 1 output rows the first len(emitted)
    decided the round's tokens. Returns (n, V) float32; row j holds the logits that predicted new
    token j (one row per token in `emitted`, so the run's tokens are the rows' arg max in greedy mode).
    """
    seq = sequences[0, :prompt_len].tolist()
    kv = _new_cache(cache, capacity=sequences.shape[1] + max((len(r.drafted) for r in rounds), default=0) + 1)
    rows = []
    for r in rounds:
        x = torch.tensor([seq[kv.get_seq_length():] + list(r.drafted)], device=target.device)  # (1, m + k)
        logits = target(input_ids=x, past_key_values=kv, use_cache=True).logits[0, -(len(r.drafted) + 1):]  # (k + 1, V)
        rows.append(logits[: len(r.emitted)].float())
        seq.extend(r.emitted)
        _crop(kv, len(seq) - 1)
    return torch.cat(rows) if rows else torch.empty(0, target.config.get_text_config().vocab_size, device=target.device)


def greedy_check(target, input_ids: torch.Tensor, gen, spec: SpeculativeOutput) -> dict:
    """Compare a greedy speculative run with the target's own greedy `generate`, and say how close
    each greedy choice came to flipping under floating-point rounding.

    input_ids: (1, T) the prompt; gen: `target.generate(input_ids, do_sample=False, output_logits=True,
    return_dict_in_generate=True)`, whose logits come from one-token steps; spec: the
    `speculative_generate(..., temperature=0)` output for the same prompt. The speculative run's logits
    are recomputed as its verification computed them (`verification_logits`: (k + 1)-token passes over
    a KV cache). Both ways score the same prefixes up to and including the first differing token.
    Returns dict(identical, first_difference (index of the first differing new token, or None),
    gap_there (the one-token steps' top-2 logit gap at that token), min_gap and at (the smallest gap over
    the compared tokens and its index), rounding (the largest |logit difference| between the two ways of
    scoring, over the compared tokens), compared (how many tokens were compared)).
    """
    T = input_ids.shape[1]
    steps = torch.stack(gen.logits)[:, 0].float()  # (n_gen, V): generate's one-token steps
    block = verification_logits(target, spec.sequences, T, spec.rounds)  # (n_spec, V): verification passes
    ours, ref = spec.sequences[0, T:], gen.sequences[0, T:]  # new tokens
    n = min(len(ours), len(ref), len(steps), len(block))
    diff = (ours[:n] != ref[:n]).nonzero()
    first = int(diff[0]) if len(diff) else None
    m = n if first is None else first + 1  # after the first difference the prefixes differ
    top2 = steps[:m].topk(2, dim=-1).values
    gaps = top2[:, 0] - top2[:, 1]  # (m,): how far each greedy choice was from a tie
    return dict(identical=torch.equal(spec.sequences, gen.sequences), first_difference=first,
                gap_there=None if first is None else float(gaps[first]), min_gap=float(gaps.min()),
                at=int(gaps.argmin()), rounding=float((steps[:m] - block[:m]).abs().max()), compared=m)


def check_bins(p: torch.Tensor, q: torch.Tensor | None = None, top: int = 5) -> list[torch.Tensor]:
    """The bins of distribution_check, as (V,) boolean masks chosen from the distributions alone (never
    from samples): the `top` likeliest tokens of p one by one, then the rest; with the draft's q, the
    rest split in two, the tokens q over-weights (q > p) and the others. A wrong rule after a rejection
    (resampling from p) moves probability towards the draft's favourites, many of them in the tail:
    pooled into one bin that shift is invisible, split by q > p the test sees it."""
    p = p.double().cpu()
    ids = torch.argsort(p, descending=True)[:top]
    rest = torch.ones_like(p, dtype=torch.bool)
    rest[ids] = False
    singles = [torch.nn.functional.one_hot(i, p.numel()).bool() for i in ids]
    if q is None:
        return singles + [rest]
    over = rest & (q.double().cpu() > p)
    return singles + [over, rest & ~over]


def binned_tv(a: torch.Tensor, b: torch.Tensor, bins: list[torch.Tensor]) -> float:
    """Total variation distance between two distributions over the vocabulary as a check sees them:
    summed within each bin (check_bins) first. At most their distance over all tokens."""
    return 0.5 * sum(abs(float(a.double().cpu()[m].sum() - b.double().cpu()[m].sum())) for m in bins)


def distribution_check(samples, p: torch.Tensor, top: int = 5, min_expected: float = 5.0,
                       q: torch.Tensor | None = None) -> dict:
    """Do sampled token ids follow the exact distribution p? Binned as the tests bin them
    (check_bins): the `top` likeliest tokens of p, then the rest, split by q > p when the draft's q is
    given; for the chi-square test, bins expecting fewer than `min_expected` counts are pooled into one.

    samples: sequence of n token ids; p, q: (V,) probabilities. Returns dict(pvalue (chi-square
    goodness of fit; 0.0 when a token with probability 0 was sampled), tv (total variation distance
    between the empirical and exact frequencies of the bins, not of the whole vocabulary), n, bins
    (how many bins the test used)). Even exact samples have tv > 0: about sqrt(bins / n).
    """
    import numpy as np

    samples = [int(s) for s in samples]
    n = len(samples)
    if n == 0:
        raise ValueError("samples is empty: pass the sampled token ids.")
    p = p.double().cpu()
    masks = check_bins(p, q, top)
    probs = np.array([float(p[m].sum()) for m in masks])  # (bins,)
    at = torch.tensor(samples)
    counts = np.array([int(m[at].sum()) for m in masks])  # (bins,)
    tv = 0.5 * float(np.abs(counts / n - probs).sum())
    if bool((p[at] <= 0).any()):  # a token the target never emits (top-k or top-p cut it): not a sample of p
        return dict(pvalue=0.0, tv=tv, n=n, bins=len(masks))
    probs, counts = probs[probs > 0], counts[probs > 0]  # top-k warping: an empty rest bin goes
    pvalue, bins = pooled_chisquare(counts, probs, min_expected)
    return dict(pvalue=pvalue, tv=tv, n=n, bins=bins)


def pooled_chisquare(counts, probs, min_expected: float = 5.0) -> tuple[float, int]:
    """Chi-square goodness of fit of `counts` to `probs` (same length, probs > 0, summing to about 1),
    with the bins expecting fewer than `min_expected` counts pooled into one. Returns (p-value, how
    many bins the test used)."""
    import numpy as np
    from scipy.stats import chisquare

    counts, probs = np.asarray(counts, dtype=float), np.asarray(probs, dtype=float)
    n = counts.sum()
    keep = probs * n >= min_expected
    if (~keep).any():
        probs = np.append(probs[keep], probs[~keep].sum())
        counts = np.append(counts[keep], counts[~keep].sum())
    return float(chisquare(counts, probs / probs.sum() * n).pvalue), len(probs)


def acceptance_stats(target, draft, tokenizer, prompts, gamma: int, *, max_new_tokens: int = 48,
                     temperature: float = 1.0, **kwargs) -> dict:
    """Run `speculative_generate` on each prompt (prompt k sampled with torch.Generator seed k) and pool
    the rounds of all runs.

    Returns dict(per_drafted = accepted / drafted, alpha = accepted / (accepted + rejections), the
    per-checked-token rate of Leviathan Eq. 1, tau = new tokens per round, prompts = how many,
    counts = (accepted, drafted, rejections) pooled).
    kwargs go to speculative_generate (top_k, top_p, ...). One string is one prompt.
    """
    from .models import check_prompts

    prompts = check_prompts(prompts)
    acc = drafted = rejected = toks = rounds = 0
    for k, text in enumerate(prompts):
        x = tokenizer(text, return_tensors="pt").input_ids.to(target.device)  # (1, T)
        o = speculative_generate(target, draft, x, max_new_tokens=max_new_tokens, gamma=gamma, temperature=temperature,
                                 generator=torch.Generator(device=target.device).manual_seed(k), **kwargs)
        acc, drafted, rejected = acc + o.n_accepted, drafted + o.n_drafted, rejected + o.n_rejected
        toks, rounds = toks + o.new_tokens, rounds + len(o.rounds)
    nan = float("nan")
    return dict(per_drafted=acc / drafted if drafted else nan, alpha=acc / (acc + rejected) if acc + rejected else nan,
                tau=toks / rounds if rounds else nan, prompts=len(prompts), counts=(acc, drafted, rejected))
