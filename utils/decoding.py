"""Baselines: the autoregressive loop written out by hand, and the "draft and score" method.

`autoregressive_generate` is what `model.generate` does for one sequence, without the machinery:
one forward pass per new token, with or without a KV cache. `draft_and_score` reproduces the
method a popular tutorial presents as speculative decoding (it is not; see notebook 02).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from .models import sync as _sync
from .sampling import check_count, check_sampling_args, eos_set, probs_from_logits, sample
from .speculative import _new_cache, _Timer, check_backend, check_generate_args, check_input_ids, check_length, check_model


@dataclass
class ARResult:
    sequences: torch.Tensor  # (1, prompt + new)
    step_times: list[float]  # seconds for each new token (forward pass + sampling); eager backend only
    total_time: float | None = None  # backend="compiled": seconds for all new tokens (no per-step split)
    n_new: int | None = None  # backend="compiled": how many tokens were generated
    compile_time: float = 0.0  # backend="compiled": seconds spent compiling (inside total_time)
    forward_time: float | None = None  # backend="compiled": seconds inside the compiled steps (CUDA: timing events)
    prefill_time: float = 0.0  # backend="compiled": seconds of the eager pass over the prompt (in total_time)

    @property
    def new_tokens(self) -> int:
        return self.n_new if self.n_new is not None else len(self.step_times)

    @property
    def tokens_per_second(self) -> float:
        """New tokens per second (compiled: excluding the compile time of a first call)."""
        if self.total_time is not None:
            secs = self.total_time - self.compile_time
            return self.new_tokens / secs if self.new_tokens and secs > 0 else float("nan")
        return self.new_tokens / sum(self.step_times) if self.step_times else float("nan")


@torch.inference_mode()
def autoregressive_generate(
    model,
    input_ids: torch.Tensor,
    max_new_tokens: int,
    *,
    temperature: float = 0.0,
    top_k: int | None = None,
    top_p: float | None = None,
    eos_token_id: int | list[int] | None = None,
    use_cache: bool = True,
    generator: torch.Generator | None = None,
    backend: str = "eager",
) -> ARResult:
    """Decode token by token. Greedy (temperature 0) equals `model.generate(do_sample=False)`.

    use_cache=False feeds the whole sequence every step (quadratic work), which is what the KV cache
    saves: with it, each step feeds only the newest token and reads the cached keys and values.
    backend="compiled" runs `utils.fast`: a static cache, a compiled 1-token step (CUDA graphs on a
    GPU), tokens sampled on the device and read by the host every 16 steps; it needs use_cache.
    """
    max_new_tokens = check_generate_args(max_new_tokens)
    check_sampling_args(temperature, top_k, top_p, generator)
    check_model(model, "model")
    input_ids = check_input_ids(input_ids, model)
    check_backend(backend)
    eos = eos_set(eos_token_id)
    if backend == "compiled":
        if not use_cache:
            raise ValueError('backend="compiled" decodes with a static KV cache: leave use_cache=True.')
        from .fast import autoregressive_compiled

        new, stats, total = autoregressive_compiled(model, input_ids, max_new_tokens, temperature=temperature,
                                                    top_k=top_k, top_p=top_p, eos=eos, generator=generator)
        seq = torch.cat([input_ids.to(model.device), torch.tensor([new], dtype=torch.long, device=model.device)], 1)
        return ARResult(seq, [], total_time=total, n_new=len(new), compile_time=stats.compile_time,
                        forward_time=stats.forward_time, prefill_time=stats.prefill_time)
    seq = input_ids.to(model.device)  # (1, T)
    n_alloc = check_length(model, input_ids.shape[1], max_new_tokens)
    cache = _new_cache(capacity=n_alloc) if use_cache else None
    timer, times = _Timer(model.device), []
    feed = seq
    for _ in range(max_new_tokens):
        with timer:
            out = model(input_ids=feed, past_key_values=cache, use_cache=use_cache)
            probs = probs_from_logits(out.logits[0, -1], temperature, top_k, top_p, check=False)  # (V,)
            nxt = sample(probs, generator) if temperature > 0 else probs.argmax()
        times.append(timer.last)
        seq = torch.cat([seq, nxt.view(1, 1)], dim=1)
        feed = seq[:, -1:] if use_cache else seq
        if int(nxt) in eos:
            break
    return ARResult(seq, times)


@torch.inference_mode()
def draft_and_score(draft, target, tokenizer, prompt: str, max_new_tokens: int) -> dict:
    """The "draft, then score" method of the DataCamp tutorial, reproduced for notebook 02.

    What it does: the draft writes the whole continuation (greedy `generate`); the text is
    re-tokenized; the target runs ONE forward pass over it and returns the average log-probability
    of the draft's tokens. What it is NOT: speculative decoding. Nothing the target computes can
    change a token: the returned text is always the draft's, so the output follows the draft's
    distribution, not the target's. It is faster than target decoding only because the target
    never decodes.

    Returns dict(text, score, draft_ids, draft_time, score_time).
    """
    ids = tokenizer(prompt, return_tensors="pt").input_ids.to(draft.device)  # (1, T)
    t0 = time.perf_counter()
    out = draft.generate(ids, max_new_tokens=max_new_tokens, do_sample=False)
    draft_time = time.perf_counter() - t0
    text = tokenizer.decode(out[0], skip_special_tokens=True)
    t1 = time.perf_counter()
    re_ids = tokenizer(text, return_tensors="pt").input_ids.to(target.device)  # the tutorial re-tokenizes
    logp = torch.log_softmax(target(re_ids).logits[0, :-1].float(), -1)  # (T-1, V)
    tok_logp = logp.gather(-1, re_ids[0, 1:, None])[:, 0]  # (T-1,)
    n_prompt = ids.shape[1]
    score = tok_logp[n_prompt - 1 :].mean().item()  # average over the drafted tokens
    return dict(text=text, score=score, draft_ids=out, draft_time=draft_time, score_time=time.perf_counter() - t1)


# ----------------------------------------------------------------------------------------------
# Timing helpers for notebooks 01 and 02
# ----------------------------------------------------------------------------------------------


def autoregressive_timed(model, input_ids: torch.Tensor, max_new_tokens: int, *, use_cache: bool = True,
                         repeats: int = 3, warmup_tokens: int = 8) -> ARResult:
    """Greedy `autoregressive_generate`, timed robustly: a short warm-up run (`warmup_tokens`), then
    `repeats` full runs. Returns the last run's ARResult with `step_times` replaced by the median, step
    by step, over the runs (so a one-off hiccup of the machine does not show as a spike)."""
    import statistics

    repeats = check_count("repeats", repeats, 1, "the number of timed runs, after the warm-up")
    warmup_tokens = check_count("warmup_tokens", warmup_tokens, 1, "the new tokens of the untimed warm-up run")
    autoregressive_generate(model, input_ids, min(warmup_tokens, max_new_tokens), use_cache=use_cache)  # warm-up
    runs = [autoregressive_generate(model, input_ids, max_new_tokens, use_cache=use_cache) for _ in range(repeats)]
    result = runs[-1]
    result.step_times = [statistics.median(t) for t in zip(*(r.step_times for r in runs))]  # (n,) seconds
    return result


@torch.inference_mode()
def timed_generate(model, input_ids: torch.Tensor, max_new_tokens: int) -> dict:
    """`model.generate` greedy, timed: dict(sequences (1, T + n), time in seconds)."""
    _sync(model.device)
    t0 = time.perf_counter()
    out = model.generate(input_ids, max_new_tokens=max_new_tokens, do_sample=False)
    _sync(model.device)
    return dict(sequences=out, time=time.perf_counter() - t0)


def best_of(run, time_of, repeats: int = 3):
    """Call `run()` once as a warm-up, then `repeats` times, and return the result of the fastest
    call; `time_of(result)` reads a call's seconds from its result."""
    run()  # warm-up: first calls allocate memory and pick kernels
    return min((run() for _ in range(repeats)), key=time_of)


@torch.inference_mode()
def read_bandwidth(device, mib: int = 256, repeats: int = 5) -> float:
    """Measured memory read bandwidth of `device`, in bytes/s: the fastest of `repeats` sums of a
    float32 array of `mib` MiB (far larger than a CPU's caches), after a warm-up (other load on the
    machine only slows a sum down, so the fastest is the nearest to what the memory delivers). A
    rough STREAM-like figure; on a shared virtual machine it can move by tens of percent from run
    to run, so each notebook measures its own. The datasheet peak of a GPU is higher. Notebooks 01,
    06 and 07 all use this one."""
    x = torch.ones(mib * 2**20 // 4, dtype=torch.float32, device=device)  # (n,)
    times = []
    for i in range(repeats + 1):
        _sync(device)
        t0 = time.perf_counter()
        x.sum()
        _sync(device)
        if i:  # the first sum is the warm-up
            times.append(time.perf_counter() - t0)
    return x.numel() * 4 / min(times)


# theory.GPU_BANDWIDTH's names -> models.GPUS's (free GiB, total GiB, bf16) entries
_GPU_MEMORY = {"T4 (16 GB)": "T4 16GB", "A100 (80 GB SXM)": "A100/H100 80GB", "H100 (80 GB SXM)": "A100/H100 80GB"}


_SHORT_DTYPE = {torch.bfloat16: "bf16", torch.float16: "fp16", torch.float32: "fp32"}


def bandwidth_bounds(pair: str, role: str = "target", quantization: str | None = None) -> dict[str, dict]:
    """For each GPU of utils.theory.GPU_BANDWIDTH: the batch-1 decoding bound of one model of registry
    pair `pair` (`role` "draft" or "target"), loaded as load_pair would load it there
    (utils.models.cuda_dtype: no bfloat16 on a T4, so Gemma2 takes float32 there, its embeddings too
    when quantized). dict(dtype="bf16" / "fp16" / "fp32", bytes=weight bytes, tok_s=bandwidth / bytes, or None where the
    weights do not fit: bytes + 15% (activations and cache, as check_memory estimates) above the
    GPU's free memory in utils.models.GPUS)."""
    from .models import GPUS, PAIRS, cuda_dtype, estimate_bytes
    from .theory import GPU_BANDWIDTH, bandwidth_bound_tokens_per_s

    spec = PAIRS[pair]
    bounds = {}
    for gpu, bw in GPU_BANDWIDTH.items():
        free_gib, _, has_bf16 = GPUS[_GPU_MEMORY[gpu]]
        dtype = cuda_dtype(spec, has_bf16)
        nbytes = estimate_bytes(getattr(spec, role), dtype, quantization)
        fits = 1.15 * nbytes <= free_gib * 2**30
        bounds[gpu] = dict(dtype=_SHORT_DTYPE[dtype], bytes=nbytes,
                           tok_s=bandwidth_bound_tokens_per_s(nbytes, bw) if fits else None)
    return bounds


def datasheet_bandwidth(device) -> tuple[str, float] | None:
    """(GPU name, bytes/s) from the data-sheet table utils.theory.GPU_BANDWIDTH_BY_NAME for the CUDA
    GPU `device`, or None on a CPU or on a GPU that is not in that table."""
    if torch.device(device).type != "cuda":
        return None
    from .theory import gpu_bandwidth

    name = torch.cuda.get_device_name(device)
    bandwidth, _ = gpu_bandwidth(name)
    return None if bandwidth is None else (name, bandwidth)
