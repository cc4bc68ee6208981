"""Real Gemma2 shapes with random weights: memory and speed without downloading anything.

    python -m utils.shapes                                  # on a GPU: 2b, 9b, 27b in bf16 and NF4
    python -m utils.shapes --sizes 2b 9b --quant none       # bf16 only, two sizes
    python -m utils.shapes --pairs 2b:9b 2b:27b             # ours vs HF assisted on those pairs

Gemma2's weights are gated and this project's machines cannot reach the Hub, so this builds
`Gemma2ForCausalLM` from the published configurations (2b, 9b, 27b) with random weights. Memory
and time do not depend on the values of the weights, so those numbers are real; acceptance does, so
none is reported as a Gemma2 acceptance rate. Instead the pairs are bracketed: alpha ~ 0 (the draft
is an independent random model) and alpha = 1 (the target drafts for itself, c = 1). Results go to
data/results/shapes-<device>.json. Made for a GPU; it runs on a CPU too, slowly (tests use shrunken
configurations).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from .bench import RESULTS, _sync, forward_latency, hf_generate
from .models import describe_device
from .speculative import speculative_generate

# From the published config.json files of google/gemma-2-{2b,9b,27b}.
GEMMA2_SHAPES = {
    "2b": dict(hidden_size=2304, intermediate_size=9216, num_hidden_layers=26, num_attention_heads=8,
               num_key_value_heads=4, head_dim=256, query_pre_attn_scalar=256),
    "9b": dict(hidden_size=3584, intermediate_size=14336, num_hidden_layers=42, num_attention_heads=16,
               num_key_value_heads=8, head_dim=256, query_pre_attn_scalar=256),
    "27b": dict(hidden_size=4608, intermediate_size=36864, num_hidden_layers=46, num_attention_heads=32,
                num_key_value_heads=16, head_dim=128, query_pre_attn_scalar=144),
}
GEMMA2_COMMON = dict(vocab_size=256000, max_position_embeddings=8192, sliding_window=4096, attn_logit_softcapping=50.0,
                     final_logit_softcapping=30.0, hidden_activation="gelu_pytorch_tanh", rms_norm_eps=1e-6,
                     bos_token_id=2, eos_token_id=1, pad_token_id=0)


def gemma2_config(size: str, **overrides):
    """The Gemma2ForCausalLM configuration of a published size; overrides shrink it for tests."""
    from transformers import Gemma2Config

    if size not in GEMMA2_SHAPES:
        raise ValueError(f"unknown Gemma2 size {size!r}; choose from {sorted(GEMMA2_SHAPES)}")
    return Gemma2Config(**{**GEMMA2_COMMON, **GEMMA2_SHAPES[size], **overrides})


def random_model(config, *, device="cpu", dtype=torch.float32, quantization: str | None = None, seed: int = 0):
    """A randomly initialised Gemma2ForCausalLM built directly on `device` in `dtype` (no float32
    copy first, so a 27b model needs only its bf16 size), optionally with 4-bit linear layers."""
    from transformers import Gemma2ForCausalLM

    torch.manual_seed(seed)
    with torch.device(device):
        model = Gemma2ForCausalLM._from_config(config, dtype=dtype).eval()
    if quantization:
        to_4bit(model, quantization, compute_dtype=dtype)
    model.generation_config.eos_token_id = None  # random models must not stop early at "EOS"
    model.generation_config.pad_token_id = 0
    return model


@torch.no_grad()
def to_4bit(model, quant_type: str = "nf4", compute_dtype=torch.bfloat16) -> None:
    """Replace every linear layer but the output head by bitsandbytes' Linear4bit, in place: the same
    layers `from_pretrained(quantization_config=BitsAndBytesConfig(load_in_4bit=True))` quantizes."""
    import bitsandbytes as bnb

    if quant_type not in ("nf4", "fp4"):
        raise ValueError(f'quant_type must be "nf4" or "fp4" (got {quant_type!r})')
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, torch.nn.Linear) and child is not model.get_output_embeddings():
                device = child.weight.device
                q = bnb.nn.Linear4bit(child.in_features, child.out_features, bias=child.bias is not None,
                                      compute_dtype=compute_dtype, quant_type=quant_type)
                q.weight = bnb.nn.Params4bit(child.weight.data.to("cpu"), requires_grad=False, quant_type=quant_type)
                if child.bias is not None:
                    q.bias = torch.nn.Parameter(child.bias.data, requires_grad=False)
                setattr(parent, name, q.to(device))  # moving to the device quantizes the weight
                del child


def _peak_reset(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.reset_peak_memory_stats()


def _peak(device) -> int | None:
    return torch.cuda.max_memory_allocated() if torch.device(device).type == "cuda" else None


def _timed(fn, repeats: int):
    fn()  # warm-up with the same shapes as the timed runs (a static cache compiles per shape)
    runs = sorted((fn() for _ in range(repeats)), key=lambda r: r[1])
    return runs[len(runs) // 2]


def measure_model(model, *, max_new_tokens: int = 64, gamma: int = 4, repeats: int = 3, static: bool = True) -> dict:
    """Weights and peak memory, step latency for 1 and gamma+1 tokens, HF greedy tokens/s with the
    dynamic (and the static) cache."""
    device = model.device
    ids = torch.randint(3, 1000, (1, 16), device=device)
    row = dict(weights_bytes=model.get_memory_footprint(),
               step_1_ms=1e3 * forward_latency(model, 1), step_gamma1_ms=1e3 * forward_latency(model, gamma + 1))
    _peak_reset(device)
    out, secs = _timed(lambda: hf_generate(model, ids, max_new_tokens), repeats)
    row.update(hf_dynamic_tokens_per_s=(out.shape[1] - ids.shape[1]) / secs, peak_bytes_dynamic=_peak(device))
    if static:
        _peak_reset(device)
        out, secs = _timed(lambda: hf_generate(model, ids, max_new_tokens, cache_implementation="static"), repeats)
        row.update(hf_static_tokens_per_s=(out.shape[1] - ids.shape[1]) / secs, peak_bytes_static=_peak(device))
    return row


def measure_pair(draft, target, *, max_new_tokens: int = 64, gamma: int = 4, repeats: int = 3) -> dict:
    """Ours vs HF assisted generation (greedy, constant schedule) on one draft/target pair, plus HF
    greedy without a draft, c from one-token step latencies, and alpha as measured."""
    from .bench import configure_assistant

    ids = torch.randint(3, 1000, (1, 16), device=target.device)
    configure_assistant(draft, gamma)

    def ours():
        _sync(target.device)
        t0 = time.perf_counter()
        res = speculative_generate(target, draft, ids, max_new_tokens=max_new_tokens, gamma=gamma, time_models=False)
        _sync(target.device)
        return res, time.perf_counter() - t0

    greedy, t_greedy = _timed(lambda: hf_generate(target, ids, max_new_tokens), repeats)
    assisted, t_assisted = _timed(lambda: hf_generate(target, ids, max_new_tokens, assistant=draft), repeats)
    res, t_ours = _timed(ours, repeats)
    n = max_new_tokens
    return dict(
        gamma=gamma, max_new_tokens=n, c=forward_latency(draft, 1) / forward_latency(target, 1),
        alpha=res.acceptance_rate, alpha_checked=res.checked_acceptance_rate, tau=res.tokens_per_round,
        tokens_per_s=dict(hf=n / t_greedy, hf_assisted=n / t_assisted, ours_speculative=n / t_ours),
        same_as_hf_greedy=dict(hf_assisted=torch.equal(greedy, assisted), ours_speculative=torch.equal(greedy, res.sequences)),
    )


def _free() -> None:
    """Give memory back after the caller dropped its references (models are GBs on a GPU)."""
    import gc

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def run(sizes=("2b", "9b", "27b"), quants=(None, "nf4"), pairs=(("2b", "9b"), ("2b", "27b")), *, device=None,
        dtype=None, max_new_tokens: int = 64, gamma: int = 4, repeats: int = 3, overrides: dict | None = None,
        progress: bool = True) -> dict:
    """Everything the module docstring lists; `overrides` shrinks the configurations (tests)."""
    import transformers
    from tqdm.auto import tqdm

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = dtype or (torch.bfloat16 if torch.device(device).type == "cuda" else torch.float32)
    overrides = overrides or {}
    models, pair_rows = [], []
    for size in tqdm(sizes, desc="models", disable=not progress):
        for quant in quants:
            m = random_model(gemma2_config(size, **overrides), device=device, dtype=dtype, quantization=quant)
            models.append(dict(size=size, quantization=quant, **measure_model(m, max_new_tokens=max_new_tokens, gamma=gamma,
                                                                              repeats=repeats)))
            del m
            _free()
    for d_size, t_size in tqdm(pairs, desc="pairs", disable=not progress):
        target = random_model(gemma2_config(t_size, **overrides), device=device, dtype=dtype, seed=1)
        draft = random_model(gemma2_config(d_size, **overrides), device=device, dtype=dtype, seed=2)
        kw = dict(max_new_tokens=max_new_tokens, gamma=gamma, repeats=repeats)
        pair_rows.append(dict(draft=d_size, target=t_size, bracket="alpha~0: independent random draft", **measure_pair(draft, target, **kw)))
        pair_rows.append(dict(draft=t_size, target=t_size, bracket="alpha=1: the target drafts for itself", **measure_pair(target, target, **kw)))
        del target, draft
        _free()
    meta = dict(hardware=describe_device(torch.device(device)), device=str(device), dtype=str(dtype), torch=torch.__version__,
                transformers=transformers.__version__, date=time.strftime("%Y-%m-%d"), shrunk=bool(overrides),
                note="real Gemma2 shapes, random weights: memory and time are real, acceptance is not")
    return dict(meta=meta, models=models, pairs=pair_rows)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", nargs="*", default=["2b", "9b", "27b"], choices=list(GEMMA2_SHAPES))
    ap.add_argument("--quant", nargs="+", default=["none", "nf4"], choices=["none", "nf4", "fp4"])
    ap.add_argument("--pairs", nargs="*", default=["2b:9b", "2b:27b"], help="draft:target sizes")
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--gamma", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default=None)
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--tag", default="", help="file name suffix, for a run split into parts: shapes-cuda-<tag>.json")
    args = ap.parse_args(argv)
    result = run(args.sizes, [None if q == "none" else q for q in args.quant], [tuple(p.split(":")) for p in args.pairs],
                 device=args.device, max_new_tokens=args.max_new_tokens, gamma=args.gamma, repeats=args.repeats)
    args.out.mkdir(parents=True, exist_ok=True)
    stem = "-".join(filter(None, ["shapes", result["meta"]["device"].split(":")[0], args.tag]))
    path = args.out / f"{stem}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    for row in result["models"] + result["pairs"]:
        print(json.dumps(row))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
