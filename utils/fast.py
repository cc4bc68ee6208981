"""The fast engine: a fixed-shape KV cache rolled back in place, compiled forward passes, one host
sync per round. The eager loops in `decoding.py` and `speculative.py` stay the readable reference;
this module is what `backend="compiled"` runs. Same maths, same accept/reject rule
(`speculative.accept_reject`), cheaper passes.

Why it is faster (notebook 07 measures each part):
- eager decoding pays per-operator overhead on every step (Python, dispatch, a kernel launch per op);
  for small models on a CPU and for any model on a fast GPU that overhead, not the weights, sets the
  step time;
- torch.compile (inductor) fuses the ~30 operators of a layer into a few kernels; on CUDA,
  mode="reduce-overhead" also records the whole step as one CUDA graph, replayed with one launch;
- compiling needs fixed shapes: the cache is a `StaticCache` of fixed length, every token width the
  loop uses is compiled once (the target's verify pass is padded to gamma + 1 tokens), and a
  rejection rolls the cache back by setting each layer's length tensor, no copy, no reallocation;
- the tokens stay on the device; the host reads them once per round (`.tolist()`), to learn how many
  were accepted and to look for EOS;
- on a CPU, a step's matrix products (one row per token) are compiled as inductor's own fused loops
  instead of one BLAS call each (`small_matmuls_as_loops`): for so few rows the call costs more
  than the arithmetic;
- once a width is compiled, dynamo checks only the guards that tell its graphs apart, not one per
  parameter and cache tensor on every call.

Gemma2 alternates sliding-window and global attention layers. transformers' `StaticSlidingWindowLayer`
keeps its fill level as a Python int that dynamo guards on, so every step would recompile (or
re-record a CUDA graph). Here every layer's cache is a plain `StaticLayer` holding all positions,
built from a copy of the config whose `layer_types` are all "full_attention"; the model itself keeps
its own config, so it still builds a sliding-window mask from absolute positions for its sliding
layers. Attention is therefore identical at every length, inside and past the window, and the cache
stays fully static. The price: sliding layers keep (and on a GPU read past the mask of) the whole
sequence instead of the last `sliding_window` positions, which costs memory past the window.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import time
from dataclasses import dataclass, field

import torch
from transformers import StaticCache

from .sampling import check_sampling_args, exponential, probs_from_logits, rand

RECOMPILE_LIMIT = 64  # compiled graphs of Engine._forward (all engines, all widths)
BUCKET = 256  # cache lengths are rounded up to a multiple of this, so most calls reuse a compiled graph
SMALL_MM_ROWS = 8  # on a CPU, matrix products with at most this many rows compile to fused loops


@contextlib.contextmanager
def small_matmuls_as_loops(rows: int = SMALL_MM_ROWS):
    """While compiling on a CPU: let inductor write every matrix product of at most `rows` rows (a
    decoding step's, W = 1 .. gamma + 1 tokens) as an elementwise product and a sum, which it fuses
    into its own C++ loops, instead of calling the BLAS library (aten::mm) once per projection: for
    one token, that call's fixed cost (about 20 us here) is most of a small layer's time. Inductor's
    `decompose_mm_pass` does this, but on a CPU only for one row and at most 2048 columns (an LM head
    has more). Costs compile time: with an empty inductor cache the tiny target's step took about
    45-50 s to compile instead of about 30 s here; its on-disk cache makes later runs quick."""
    try:
        from torch._inductor.fx_passes import decompose_mem_bound_mm as d
        saved = d.cpu_max_first_dimension_decomposition, d.cpu_max_other_dimension_decomposition
    except (ImportError, AttributeError):  # another torch: compile as usual
        yield
        return
    limits = dict(cpu_max_first_dimension_decomposition=rows, cpu_max_other_dimension_decomposition=1 << 30)
    d.cpu_max_first_dimension_decomposition, d.cpu_max_other_dimension_decomposition = rows, 1 << 30
    try:  # the limits also go in the config, so inductor's cache tells graphs compiled with other limits apart
        with torch._inductor.config.patch(post_grad_fusion_options={"decompose_mm_pass": limits}):
            yield
    finally:
        d.cpu_max_first_dimension_decomposition, d.cpu_max_other_dimension_decomposition = saved


def static_cache(model, max_len: int) -> StaticCache:
    """A StaticCache of `max_len` positions whose layers are all plain StaticLayers (see the module
    docstring: exact for sliding-window models at every length, and free of dynamo recompiles)."""
    cfg = copy.deepcopy(model.config.get_text_config(decoder=True))
    if getattr(cfg, "layer_types", None) is not None:
        cfg.layer_types = ["full_attention"] * len(cfg.layer_types)
    cfg.sliding_window = None  # the cache only: the model's own config still has its window
    return StaticCache(config=cfg, max_cache_len=max_len)


def rollback(cache: StaticCache, length: int) -> None:
    """Keep the first `length` positions: the next write goes to position `length`. No copy: entries
    past it are overwritten later and masked until then (the mask is built from positions)."""
    for layer in cache.layers:
        layer.cumulative_length.fill_(length)


def cache_length(cache: StaticCache) -> int:
    """Positions held (reads a device scalar: a host sync, so only for checks and tests)."""
    return int(cache.layers[0].cumulative_length) if cache.layers[0].is_initialized else 0


CUDAGRAPH_LOGGER = "torch._inductor.cudagraph_utils.__cudagraphs"  # inductor's log of CUDA-graph skips


@contextlib.contextmanager
def cudagraph_watch():
    """Collect inductor's messages about CUDA graphs while the block runs: why it skipped them for a
    compiled graph ("skipping cudagraphs due to mutated inputs", "... cpu device", ...) and whether it
    re-recorded one for too many distinct sizes. Either means mode="reduce-overhead" did not give one
    replayed graph per step, and the step pays every kernel launch again. Inductor only prints a
    warning, which scrolls past in a long run's output (and the run goes on, exact but slow); this keeps
    the messages, so a result can record them, and adds a line per skip inductor counted without this
    hearing its message. Yields a list that fills as the block runs (empty: no skip). Nothing to hear
    on a CPU."""
    from torch._dynamo.utils import counters

    heard: list[str] = []
    counted = []  # messages of the function that also bumps inductor's skip counter

    class _Keep(logging.Handler):
        def emit(self, record):
            heard.append(record.getMessage())
            if record.funcName == "log_cudagraph_skip_and_bump_counter":
                counted.append(record.getMessage())

    logger, handler = logging.getLogger(CUDAGRAPH_LOGGER), _Keep(logging.WARNING)
    logger.addHandler(handler)
    before = counters["inductor"]["cudagraph_skips"]
    try:
        yield heard
    finally:
        logger.removeHandler(handler)
        unheard = counters["inductor"]["cudagraph_skips"] - before - len(counted)
        heard += ["skipping cudagraphs (counted by inductor, its reason not heard)"] * max(0, unheard)


COMPILE_FALLBACKS: list[str] = []  # every fallback below, in this process (utils.shapes and beyond record them)


def compile_step(fn, cuda: bool, fullgraph: bool = True):
    """torch.compile for a decoding step: CUDA graphs on CUDA (mode="reduce-overhead"), fixed shapes."""
    return torch.compile(fn, mode="reduce-overhead" if cuda else "default", fullgraph=fullgraph, dynamic=False)


def first_line(error: BaseException) -> str:
    """An exception's first line of text (compiler errors run to pages), or its type's name."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def compile_fallback(error: Exception, where: str, device=None) -> str:
    """Record and announce that compiling a step failed in `where`, before the caller falls back:
    - a graph break under fullgraph=True (torch._dynamo.exc.Unsupported: a torch or transformers
      version whose code dynamo cannot trace in one piece): the caller compiles the step again with
      fullgraph=False; still exact, but each break returns to Python and on CUDA each piece is its own
      CUDA graph;
    - the compiler itself failed (ShortenTraceback: BackendCompilerFailed, InductorError, or
      inductor's GPUTooOldForTriton / TritonMissing on a GPU Triton cannot serve): the caller runs
      the step eagerly on its static cache; still exact, without the speed of compiling.
    Either way the step is slower than this module promises. Where the machine lacks what compiling
    needs (compile_readiness(device): a C++ compiler, Triton), the warning says how to add it. Returns
    the message (also kept in COMPILE_FALLBACKS, so a benchmark's result can say how its speed was
    measured)."""
    import warnings

    inner = getattr(error, "inner_exception", None)  # BackendCompilerFailed: the compiler's own error
    why = f" {type(inner).__name__}: {first_line(inner)}" if inner else ""
    msg = f"{where}: {type(error).__name__}: {first_line(error)}{why}"[:500]
    COMPILE_FALLBACKS.append(msg)
    instead = ("compiling with graph breaks instead" if isinstance(error, torch._dynamo.exc.Unsupported)
               else "running this step eagerly instead (backend='eager' would do the same)")
    checked = device is not None and torch.device(device).type in ("cpu", "cuda")  # what compile_readiness knows
    missing = compile_readiness(device) if checked else None
    advice = f"To compile: {missing}" if missing else "Tell us your GPU and your torch and transformers versions."
    warnings.warn(f"torch.compile could not compile the step as one graph ({msg}); {instead}: exact, but slower. "
                  + advice, stacklevel=3)
    return msg


def compile_readiness(device) -> str | None:
    """None when torch.compile can build kernels for `device` here; else what is missing and how to add
    it. Without it compiling fails, and the engine falls back to eager steps (compile_fallback): exact,
    but its "compiled" timings are then eager ones. A CPU needs a C++ compiler (inductor writes C++; on
    macOS also OpenMP); a CUDA GPU needs Triton, which needs a C compiler to build its launcher. Only
    presence is checked here: `python run.py check` also builds a kernel."""
    import shutil
    import sys

    kind = torch.device(device).type
    again = "then start again (restart the kernel; on Windows, JupyterLab itself)"
    if kind == "cpu":
        from torch._inductor import cpp_builder

        try:
            cpp_builder.get_cpp_compiler()
            return None
        except Exception as e:  # InvalidCxxCompiler (a RuntimeError), or a Windows compiler check failing
            how = {"darwin": "install Apple's command line tools (xcode-select --install) and OpenMP (brew install libomp)",
                   "win32": "install Visual Studio Build Tools with the C++ workload, then start `python run.py check` "
                            "and `python run.py lab` from the 'x64 Native Tools Command Prompt' so that cl.exe is on "
                            "PATH"}.get(
                sys.platform, "install g++ (Debian/Ubuntu: sudo apt install g++; Fedora: sudo dnf install gcc-c++)")
            return f"torch.compile cannot compile for the CPU here ({first_line(e)}): {how}; {again}."
    if kind == "cuda":
        from torch.utils._triton import has_triton

        if not has_triton():
            return ("torch.compile cannot compile for this GPU: Triton is missing or does not support it "
                    f"(pip install triton, on Linux; an older GPU may be below Triton's minimum); {again}.")
        import os

        if not (os.environ.get("CC") or any(shutil.which(c) for c in ("cc", "gcc", "clang"))):
            return ("torch.compile cannot compile for this GPU: Triton needs a C compiler to build its launcher and "
                    f"none was found (install gcc, or set CC); {again}.")
        return None
    return f"torch.compile's support for {kind} is not checked here: the engine may fall back to eager steps."


def _only_differentiating_guards():
    """torch.compiler.set_stance(skip_guard_eval_unsafe=True) where this torch has it."""
    try:
        return torch.compiler.set_stance("default", skip_guard_eval_unsafe=True)
    except (AttributeError, TypeError):  # an older torch: check every guard
        return contextlib.nullcontext()


class Engine:
    """One model's static cache and compiled forward passes, reused across calls.

    `forward(ids)` runs the model on ids (1, W) at the cache's current length and returns float32
    logits (W, V). The first call at each width W compiles (its time is kept in `compile_time[W]`, plus
    any recompile: after a change of global state dynamo guards on, such as torch.set_num_threads);
    prefill (any width, once per prompt) runs eagerly, uncompiled, as transformers advises.
    """

    def __init__(self, model, max_len: int, compile: bool = True, small_mm_rows: int = SMALL_MM_ROWS):
        self.model, self.max_len = model, max_len
        self.small_mm_rows = small_mm_rows if model.device.type == "cpu" else 0
        self.device = model.device
        self.cache = static_cache(model, max_len)
        self.compiled = compile
        self.compile_time: dict[int, float] = {}  # width -> seconds of the first (compiling) call
        self.compile_fallbacks: list[str] = []  # set when compiling failed and the step fell back (compile_fallback)
        self._step = compile_step(self._forward, self.device.type == "cuda") if compile else self._forward

    def _forward(self, ids):  # (1, W) -> (W, V)
        if self.small_mm_rows:  # a branch on the setting makes dynamo keep one graph per setting
            pass
        return self.model(input_ids=ids, past_key_values=self.cache, use_cache=True).logits[0].float()

    @torch.inference_mode()
    def prefill(self, ids: torch.Tensor) -> None:
        """Write ids (1, T) into an empty cache, eagerly (T differs per prompt: not worth a compile).
        With nothing to write (a one-token prompt) a cache never used before is still initialised
        eagerly, by one pass over a dummy token rolled back at once: its first use would otherwise be
        inside a compiled graph, where transformers allocates the cache without marking its tensors
        static (on CUDA: no CUDA graphs for a graph that writes them)."""
        rollback(self.cache, 0)
        if ids.shape[1]:
            self._fill(ids)
        elif not self.cache.layers[0].is_initialized:
            self._fill(torch.zeros(1, 1, dtype=torch.long, device=self.device))
            rollback(self.cache, 0)

    def _fill(self, ids):  # (1, T) -> nothing kept: the logits of a prefill are unused, so only the last is made
        self.model(input_ids=ids, past_key_values=self.cache, use_cache=True, logits_to_keep=1)

    @torch.inference_mode()
    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        width = ids.shape[1]
        if not ids.is_inference():  # a tensor made outside inference mode would make dynamo recompile
            ids = ids.clone()
        if width in self.compile_time:
            if not self.compiled:
                return self._step(ids)
            if self.device.type == "cuda":
                torch.compiler.cudagraph_mark_step_begin()
            # A width compiled before: same shapes, dtypes and devices as then, so dynamo's guards
            # would pass; checking all of them (one per parameter and cache tensor) costs about as much
            # as a draft step's kernels on a CPU. Run only the guards that tell this width's and
            # this engine's graph from the others.
            try:
                with _only_differentiating_guards():
                    return self._step(ids)
            except RuntimeError as e:  # a guard failed after all: the global state changed since (e.g.
                if "skip_guard_eval_unsafe" not in str(e):  # torch.set_num_threads); raised before the step
                    raise  # ran, so the cache is untouched: check every guard below, and recompile
        t0 = time.perf_counter()
        # Every (model shape, width, setting) is one more compiled graph of the same function: allow more than
        # dynamo's default 8, only here, where a new one is compiled (a global change would also let
        # other compiled code, such as HF's static-cache generate, recompile more often).
        loops = small_matmuls_as_loops(self.small_mm_rows) if self.small_mm_rows else contextlib.nullcontext()
        with torch._dynamo.config.patch(recompile_limit=RECOMPILE_LIMIT), loops:
            try:
                out = self._step(ids)
            except (torch._dynamo.exc.Unsupported, torch._dynamo.exc.ShortenTraceback) as e:
                # raised while tracing or compiling, before the step ran: the cache is untouched
                if not self.compiled or self.compile_fallbacks:
                    raise
                self.compile_fallbacks.append(compile_fallback(e, f"{type(self.model).__name__} step, width {width}", self.device))
                if isinstance(e, torch._dynamo.exc.Unsupported):
                    self._step = compile_step(self._forward, self.device.type == "cuda", fullgraph=False)
                else:
                    self._step, self.compiled = self._forward, False
                self.compile_time.clear()  # widths compiled before go through this branch again, for the new step
                out = self._step(ids)
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        self.compile_time[width] = self.compile_time.get(width, 0.0) + time.perf_counter() - t0  # + a recompile
        return out


class ContextLengthError(ValueError):
    """A fixed-size cache would need more positions than the model has (max_position_embeddings)."""


def engine_for(model, needed_len: int, compile: bool = True, second: bool = False,
               what: str = "prompt + max_new_tokens", fix: str = "shorten the prompt or lower max_new_tokens") -> Engine:
    """The model's engine for a cache of at least needed_len positions (one per length bucket).
    second=True gives another engine with its own cache: a model drafting for itself needs two caches
    over one set of weights. Engines live on the model (`model._specdec_engines`), so they go when
    the model goes. what / fix: how the error names needed_len's parts and what to change."""
    limit = getattr(model.config.get_text_config(), "max_position_embeddings", None)
    max_len = -(-needed_len // BUCKET) * BUCKET
    if limit:
        if needed_len > limit:
            raise ContextLengthError(
                f"{what} needs {needed_len} positions, but the model holds {limit} (max_position_embeddings): {fix}."
            )
        max_len = min(max_len, limit)
    engines = model.__dict__.setdefault("_specdec_engines", {})  # a plain attribute, not a submodule
    # dtype and device in the key: a model moved or cast since gets a new cache and new graphs
    key = (max_len, compile, second, model.dtype, str(model.device))
    if key not in engines:
        engines[key] = Engine(model, max_len, compile)
    return engines[key]


def engine_fallbacks(*models) -> list[str]:
    """Every step of these models' engines that could not be compiled as one graph (compile_fallback),
    sorted; empty when every engine compiled its steps whole."""
    return sorted({f for m in models for e in m.__dict__.get("_specdec_engines", {}).values() for f in e.compile_fallbacks})


def clear_engines(model, reset_dynamo: bool = False) -> None:
    """Drop a model's engines (their caches and compiled graphs); reset_dynamo=True also empties
    dynamo's cache for every model, e.g. before measuring compile time."""
    model.__dict__.pop("_specdec_engines", None)
    if reset_dynamo:
        torch._dynamo.reset()


# ----------------------------------------------------------------------------------------------
# Sampling without a host sync
# ----------------------------------------------------------------------------------------------


def sample_with_noise(probs: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """argmax(probs / noise) with noise ~ Exp(1) i.i.d. is a sample from probs (the exponential race,
    equivalent to Gumbel-max); unlike torch.multinomial it never synchronises with the host.
    noise = ones gives the argmax (greedy). probs, noise: (..., V) -> (...)."""
    return (probs / noise).argmax(-1)


def exp_noise(shape, device, generator=None, greedy: bool = False) -> torch.Tensor:
    if greedy:
        return torch.ones(shape, device=device)
    return exponential(shape, device, generator)


@dataclass
class FastStats:
    """What the compiled loop measured besides its tokens."""

    compile_time: float = 0.0  # seconds of first calls that compiled a new shape during this call
    prefill_time: float = 0.0  # the eager, uncompiled pass(es) over the prompt (CUDA: synchronised, exact)
    forward_time: float = 0.0  # plain decoding: seconds inside the compiled steps (speculative._Timer: CUDA timing events)
    rounds: int = 0
    host_syncs: int = 0
    n_accepted_per_round: list[int] = field(default_factory=list)


def _eos_cut(tokens: list[int], eos: set[int]) -> tuple[list[int], bool]:
    """Tokens up to and including the first EOS, and whether one was found."""
    for j, tok in enumerate(tokens):
        if tok in eos:
            return tokens[: j + 1], True
    return tokens, False


def _clock(device: torch.device):
    """A `speculative._Timer` for a part of the compiled loops: a CPU's clock, CUDA timing events read
    once a later host sync has completed them (a round's `.tolist()`; timing adds no sync of its own),
    NaN on other devices (an Apple GPU would need a sync per mark, which these one-sync loops do not
    pay)."""
    from .speculative import _Timer  # late: speculative imports this module

    return _Timer(device, enabled=device.type in ("cpu", "cuda"))


@torch.inference_mode()
def autoregressive_compiled(model, input_ids, max_new_tokens, *, temperature=0.0, top_k=None, top_p=None,
                            eos=frozenset(), generator=None, sync_every: int = 16, compile: bool = True):
    """Plain decoding on the fast engine: one compiled 1-token pass per step, the token sampled on
    the device, the host looking at the tokens only every `sync_every` steps (for EOS; the steps after
    an EOS are computed and dropped, so the output is exact). Returns (new tokens, FastStats, seconds);
    FastStats.forward_time is timed like the speculative loop's passes (`_clock`: a CPU's clock, CUDA
    timing events read after a sync, NaN elsewhere)."""
    from .speculative import check_generate_args  # late: speculative imports this module

    max_new_tokens = check_generate_args(max_new_tokens)  # autoregressive_generate checks these too; a direct call gets them here
    check_sampling_args(temperature, top_k, top_p, generator)
    t_start = time.perf_counter()
    ids = input_ids.to(model.device).clone()  # (1, T); a clone made in inference mode, like every later input
    eng = engine_for(model, ids.shape[1] + max_new_tokens, compile)
    stats, known = FastStats(), set(eng.compile_time)
    t0 = time.perf_counter()
    eng.prefill(ids[:, :-1])
    if model.device.type == "cuda":  # once per call, before any step: the prefill's time is then its own
        torch.cuda.synchronize(model.device)
    stats.prefill_time = time.perf_counter() - t0
    warp = dict(temperature=temperature, top_k=top_k, top_p=top_p, check=False)
    # last: (1, 1) on the device, contiguous like every later step's input (other strides recompile)
    last, pending, new = ids[0, -1:].clone().view(1, 1), [], []
    forward = _clock(model.device)
    for i in range(max_new_tokens):
        with forward:
            logits = eng.forward(last)[-1]  # (V,)
        probs = probs_from_logits(logits, **warp)  # (V,)
        noise = exp_noise(probs.shape, probs.device, generator, greedy=temperature == 0)
        last = sample_with_noise(probs, noise).view(1, 1)
        pending.append(last)
        if len(pending) == sync_every or i == max_new_tokens - 1:
            new += torch.cat(pending).view(-1).tolist()  # the host sync
            stats.host_syncs += 1
            pending = []
            new, hit = _eos_cut(new, eos)
            if hit:
                break
    stats.compile_time = sum(t for w, t in eng.compile_time.items() if w not in known)
    stats.forward_time = forward.total
    return new, stats, time.perf_counter() - t_start


@torch.inference_mode()
def speculative_compiled(target, draft, input_ids, *, max_new_tokens, gamma, temperature=0.0, top_k=None,
                         top_p=None, eos=frozenset(), generator=None, compile: bool = True):
    """Speculative sampling on the fast engine. Same rule as the eager loop, with fixed shapes:
    the draft steps one token at a time (width 1), the target verifies [last, x_1..x_k] padded to
    gamma + 1 tokens, `accept_reject` decides on the device, and ONE `.tolist()` per round brings the
    accepted count, the added token and the drafted tokens to the host.

    Returns (rounds, new tokens, FastStats, draft seconds, target seconds, total seconds). The draft
    seconds span each round's draft steps, the target seconds its verify pass through the host sync
    (accept_reject and sampling included); on a CPU by the clock (execution is synchronous), on CUDA by
    timing events read after the round's sync (no extra sync), NaN on other devices.
    """
    from .speculative import Round, accept_reject, check_generate_args  # late: speculative imports this module

    max_new_tokens = check_generate_args(max_new_tokens, gamma)  # speculative_generate checks these too; a direct call gets them here
    gamma = int(gamma)
    check_sampling_args(temperature, top_k, top_p, generator)
    t_start = time.perf_counter()
    device = target.device
    ids = input_ids.to(device).clone()  # (1, T); a clone made in inference mode, like every later input
    width = gamma + 1
    need = ids.shape[1] + max_new_tokens + width
    what = (f"prompt ({ids.shape[1]}) + max_new_tokens ({max_new_tokens}) + gamma + 1 ({width}: the compiled verify "
            "pass always has this width)")
    fix = "lower gamma or max_new_tokens, or shorten the prompt"
    te = engine_for(target, need, compile, what=what, fix=fix)
    de = engine_for(draft, need, compile, second=draft is target, what=what, fix=fix)
    known_t, known_d = set(te.compile_time), set(de.compile_time)
    stats = FastStats()
    t0 = time.perf_counter()
    te.prefill(ids[:, :-1])
    de.prefill(ids[:, :-1])
    if device.type == "cuda":  # once per call, before the first round: the prefill's time is then its own
        torch.cuda.synchronize(device)
    stats.prefill_time = time.perf_counter() - t0
    greedy = temperature == 0
    warp = dict(temperature=temperature, top_k=top_k, top_p=top_p, check=False)
    V = target.config.get_text_config().vocab_size
    pad_tok = torch.zeros(gamma, dtype=torch.long, device=device)  # (gamma,)
    pad_q = torch.zeros(gamma, V, device=device)  # (gamma, V)
    zeros_u = torch.zeros(gamma, device=device)
    rounds, new = [], []
    draft_t, target_t = _clock(device), _clock(device)
    mark = draft_t.mark  # marks are shared: the draft part ends where the verify part starts
    L = ids.shape[1]  # sequence length; both caches hold L - 1 positions between rounds
    last = ids[0, -1:].clone()  # (1,) on the device
    while len(new) < max_new_tokens:
        k = min(gamma, max_new_tokens - len(new) - 1)  # never overshoot
        noise = exp_noise((k + 1, V), device, generator, greedy)  # k draft samples + the added token
        u = zeros_u if greedy else rand(gamma, device, generator)
        # Draft: k width-1 compiled steps, tokens stay on the device.
        td = mark()
        x, toks, qs = last, [], []
        for i in range(k):
            q = probs_from_logits(de.forward(x.view(1, 1))[-1], **warp)  # (V,)
            x = sample_with_noise(q, noise[i]).view(1)
            toks.append(x)
            qs.append(q)
        tt = mark()
        # Target: one compiled pass over [last, x_1..x_k, padding] (1, gamma + 1).
        d = torch.cat(toks + [pad_tok[: gamma - k]])  # (gamma,)
        p = probs_from_logits(te.forward(torch.cat([last, d]).view(1, width)), **warp)  # (gamma + 1, V)
        q_all = torch.cat([torch.stack(qs), pad_q[: gamma - k]]) if k else pad_q  # (gamma, V)
        n_t, dist, _ = accept_reject(p, q_all, d, u, k)
        token = sample_with_noise(dist, noise[k])  # ()
        info = torch.cat([n_t.view(1), token.view(1), d[:k]])
        t_end = mark()  # CUDA: recorded before the sync, which completes it
        info = info.tolist()  # the round's one host sync
        draft_t.add(td, tt)
        target_t.add(tt, t_end)
        stats.host_syncs += 1
        n, tok, drafted = info[0], info[1], info[2:]
        emitted, hit = _eos_cut(drafted[:n] + [tok], eos)
        kind = "target" if k == 0 else ("bonus" if n == k else "resample")
        rounds.append(Round(drafted, n, tok, kind, [], [], emitted))
        new += emitted
        L += len(emitted)
        if hit or len(new) >= max_new_tokens:
            break
        rollback(te.cache, L - 1)
        if n == k and k > 0:  # the draft never saw x_k: one more width-1 step writes it
            td = mark()
            de.forward(toks[-1].view(1, 1))
            draft_t.add(td, mark())
        else:
            rollback(de.cache, L - 1)
        last = token.view(1)
    stats.rounds = len(rounds)
    stats.compile_time = sum(t for w, t in te.compile_time.items() if w not in known_t) + sum(
        t for w, t in de.compile_time.items() if w not in known_d
    )
    return rounds, new, stats, draft_t.total, target_t.total, time.perf_counter() - t_start
