"""Draft/target pairs and `load_pair()`.

    pair = load_pair()               # $SPECDEC_PAIR, else "tiny" (ships in data/models, offline)
    pair = load_pair("gemma2-2b-9b", quantization="nf4")
    print(pair)                      # parameters, bytes, device, dtype of each model

Pairs:
- tiny           two small Gemma2ForCausalLM trained by scripts/train_tiny_pair.py (2 / 20 layers)
- gemma2-2b-9b   google/gemma-2-2b-it drafting for google/gemma-2-9b-it (gated: HF token + license)
- gemma2-2b-27b  google/gemma-2-2b-it drafting for google/gemma-2-27b-it (gated)
- smollm2-135m-1.7b  HuggingFaceTB/SmolLM2-135M-Instruct drafting for SmolLM2-1.7B-Instruct:
                 Apache-2.0, ungated (no token needed), one family and one tokenizer, a 13x size
                 ratio, and small enough for a free Colab T4 or a laptop CPU.

Device and dtype defaults: CUDA if available, else CPU. On CUDA, bfloat16 where the GPU supports
it (Ampere and newer). A T4 (Turing) has no bfloat16; Gemma2 in float16 overflows (its activations
exceed the float16 range and the logits become inf/NaN), so on such GPUs Gemma2 pairs load in
float32, which only fits with quantization="nf4" (4-bit weights, float32 compute). Other pairs use
float16 there. On CPU: float32.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
MODELS_DIR = Path(os.environ.get("SPECDEC_MODELS_DIR", ROOT / "data" / "models"))  # override: a retrained pair


@dataclass(frozen=True)
class ModelSpec:
    repo: str  # Hub id, or a folder under data/models
    params: float  # parameters (approximate, for memory checks before downloading)
    embed_params: float  # embedding parameters (bitsandbytes keeps these unquantized)


@dataclass(frozen=True)
class PairSpec:
    name: str
    draft: ModelSpec
    target: ModelSpec
    gated: bool
    about: str
    local: bool = False


_G2B = ModelSpec("google/gemma-2-2b-it", 2.61e9, 0.59e9)
PAIRS: dict[str, PairSpec] = {
    p.name: p
    for p in [
        PairSpec(
            "tiny",
            ModelSpec("tiny-gemma2-draft", 1.89e6, 0.79e6),
            ModelSpec("tiny-gemma2-target", 5.45e6, 0.52e6),
            gated=False,
            local=True,
            about="shipped Gemma2-architecture pair (2 and 20 layers), trained on Python's docs; offline",
        ),
        PairSpec(
            "gemma2-2b-9b",
            _G2B,
            ModelSpec("google/gemma-2-9b-it", 9.24e9, 0.92e9),
            gated=True,
            about="the DataCamp tutorial's pair; memory_fits('gemma2-2b-9b') says which GPU holds it",
        ),
        PairSpec(
            "gemma2-2b-27b",
            _G2B,
            ModelSpec("google/gemma-2-27b-it", 27.2e9, 1.18e9),
            gated=True,
            about="the pair HF quotes for Gemma 2; in bf16 it needs a GPU of 80 GB or more (memory_fits)",
        ),
        PairSpec(
            "smollm2-135m-1.7b",
            ModelSpec("HuggingFaceTB/SmolLM2-135M-Instruct", 0.135e9, 0.028e9),
            ModelSpec("HuggingFaceTB/SmolLM2-1.7B-Instruct", 1.71e9, 0.10e9),
            gated=False,
            about="ungated Apache-2.0 pair, one family and tokenizer; fits a T4 or a laptop",
        ),
    ]
}


class PairError(RuntimeError):
    """Base class: a pair could not be loaded. The message says what to do."""


class UnknownPairError(PairError, ValueError):
    pass


class GatedModelError(PairError, PermissionError):
    pass


class HubUnreachableError(PairError, ConnectionError):
    pass


class IncompatiblePairError(PairError, ValueError):
    pass


class DeviceError(PairError, ValueError):
    """The device asked for does not exist here or cannot hold a pair."""


class InsufficientMemoryError(PairError, MemoryError):
    pass


@dataclass
class Pair:
    name: str
    draft: torch.nn.Module
    target: torch.nn.Module
    tokenizer: object
    device: torch.device
    dtype: torch.dtype
    quantization: str | None

    def summary(self) -> str:
        rows = [f"pair {self.name!r} on {self.device} ({describe_device(self.device)})"]
        for role, m in (("draft", self.draft), ("target", self.target)):
            n = parameter_count(m)
            q = getattr(m, "_specdec_quant", None) or "none"
            rows.append(
                f"  {role:6s} {m.name_or_path.split('/')[-1]:32s} {n / 1e6:10.2f} M params "
                f"{weight_bytes(m) / 2**20:10.1f} MiB  dtype={m.dtype}  4-bit={q}"
            )
        return "\n".join(rows)

    def __str__(self) -> str:
        return self.summary()


def weight_bytes(model) -> int:
    """Bytes the weights really take: HF's `get_memory_footprint()` plus the block scales of bitsandbytes
    4-bit weights, which live in each weight's quant_state (not a parameter or buffer), so that
    get_memory_footprint leaves them out (about 1/9 of a 4-bit layer's bytes)."""
    extra = 0
    for p in model.parameters():
        qs = getattr(p, "quant_state", None)
        if qs is None or getattr(qs, "absmax", None) is None:
            continue
        extra += qs.absmax.numel() * qs.absmax.element_size()
        if getattr(qs, "nested", False) and getattr(qs, "state2", None) is not None:
            extra += qs.state2.absmax.numel() * qs.state2.absmax.element_size() + qs.offset.numel() * qs.offset.element_size()
    return int(model.get_memory_footprint()) + extra


def parameter_count(model) -> int:
    """Parameters as the model was defined: a bitsandbytes 4-bit weight stores two values per byte
    (its numel() is half), so its quant_state's shape is counted instead."""
    n = 0
    for p in model.parameters():
        qs = getattr(p, "quant_state", None)
        n += int(torch.Size(qs.shape).numel()) if qs is not None and getattr(qs, "shape", None) is not None else p.numel()
    return n


def sync(device) -> None:
    """Wait until `device` has finished the work queued so far (CUDA and Apple's MPS run
    asynchronously; a CPU needs nothing): call it before reading a clock."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def describe_device(device) -> str:
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    import platform

    if device.type == "mps":
        return f"Apple GPU (MPS) on {platform.machine()}"

    n = torch.get_num_threads()
    return f"{platform.machine()} CPU, {n} thread{'' if n == 1 else 's'}"


def resolve_device(device=None) -> torch.device:
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise DeviceError(
            f"device={device!r} is not a PyTorch device: use 'cuda' (or 'cuda:0') for an NVIDIA GPU, 'mps' on a "
            "Mac, 'cpu' otherwise, or None to pick the best one here."
        ) from None
    if device.type not in ("cpu", "cuda", "mps"):
        raise DeviceError(
            f"device={str(device)!r}: the pairs load on 'cpu', 'cuda' (an NVIDIA GPU) or 'mps' (Apple); "
            "'meta' and other devices hold no weights to decode with."
        )
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise DeviceError("device='mps' was asked for, but this PyTorch sees no Apple GPU. Use device='cpu'.")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise DeviceError(
            f"device={str(device)!r} was asked for, but PyTorch sees no CUDA GPU "
            f"(torch {torch.__version__}, CUDA build: {torch.version.cuda is not None}). "
            "Use device='cpu' (the tiny pair runs fine there), or on Colab pick Runtime > Change runtime type > GPU."
        )
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise DeviceError(f"device={str(device)!r}: this machine has {torch.cuda.device_count()} CUDA GPU(s), numbered "
                          f"from 0: use 'cuda' or 'cuda:0'.")
    return device


def cuda_dtype(pair: PairSpec, has_bf16: bool) -> torch.dtype:
    """The dtype a pair loads in on a GPU with (or without) bfloat16: float32 for a pair that ships with
    the project (the tiny pair: a few MiB, trained in float32), so the notebooks' token-for-token checks
    against HF greedy hold on a Colab GPU too (in 16 bits, a batched or fused kernel rounds differently
    and a near-tie can flip a token); else bfloat16 where the GPU has it, float16 where not, and float32
    for Gemma2 there (it overflows in float16)."""
    if pair.local:
        return torch.float32
    if has_bf16:
        return torch.bfloat16
    return torch.float32 if pair.target.repo.startswith("google/gemma-2") else torch.float16


def default_dtype(device: torch.device, pair: PairSpec, quantization: str | None = None) -> torch.dtype:
    """float32 on a CPU; on CUDA `cuda_dtype` for this GPU (with a warning when Gemma2 must take float32
    and was not asked for in 4 bits)."""
    if device.type != "cuda":
        return torch.float32
    dtype = cuda_dtype(pair, torch.cuda.is_bf16_supported(including_emulation=False))
    if dtype == torch.float32 and not pair.local and quantization is None:
        warnings.warn(
            "This GPU has no bfloat16 (e.g. a T4). Gemma2 overflows in float16, so it loads in float32: "
            "pass quantization='nf4' for it to fit.",
            stacklevel=3,
        )
    return dtype


BNB_BLOCK = 64  # bitsandbytes' default block size for 4-bit weights: one scale (absmax) per 64 weights
BNB_BLOCK2 = 256  # double quantization: the 8-bit scales are themselves scaled by one float32 per 256 blocks


def nf4_bytes(n_params: float, double_quant: bool = False) -> float:
    """Bytes bitsandbytes stores for n_params weights in 4 bits: half a byte per weight plus each block's
    scale (a float32 per 64 weights; with double quantization one byte per block + a float32 per 256
    blocks). 0.5625 byte/param, 0.5159 with double quantization."""
    if double_quant:
        return n_params / 2 + n_params / BNB_BLOCK + 4 * n_params / (BNB_BLOCK * BNB_BLOCK2)
    return n_params / 2 + 4 * n_params / BNB_BLOCK


def estimate_bytes(spec: ModelSpec, dtype: torch.dtype, quantization: str | None, double_quant: bool = False) -> float:
    """Weight bytes of one model: 4-bit layers cost `nf4_bytes` (scales included); bitsandbytes keeps the
    embeddings (and the tied output layer) in dtype."""
    width = torch.finfo(dtype).bits / 8
    if quantization is None:
        return spec.params * width
    return nf4_bytes(spec.params - spec.embed_params, double_quant) + spec.embed_params * width


def check_memory(pair: PairSpec, dtype, quantization, quantize: str, free_bytes: float, total_bytes: float) -> None:
    """Raise InsufficientMemoryError if the weights (plus 15% for activations and cache) cannot fit."""
    need = 0.0
    for role in ("draft", "target"):
        q = quantization if quantize in ("both", role) else None
        need += estimate_bytes(getattr(pair, role), dtype, q)
    need *= 1.15
    if need > free_bytes:
        hint = (
            "pass quantization='nf4' (4-bit weights)"
            if quantization is None
            else "use a smaller pair (e.g. 'smollm2-135m-1.7b' or 'gemma2-2b-9b') or a larger GPU"
        )
        raise InsufficientMemoryError(
            f"pair {pair.name!r} needs about {need / 2**30:.1f} GiB of GPU memory in {dtype} "
            f"(quantization={quantization}), but only {free_bytes / 2**30:.1f} GiB of "
            f"{total_bytes / 2**30:.1f} GiB are free: {hint}."
        )


# Usual GPUs: (GiB free when a notebook starts, total GiB, has bfloat16). Totals are the vendors' "GB", which
# for these boards is about the GiB the driver reports (an A100 80GB: 80 GiB; an H200 "141 GB": about 140 GiB;
# a B200 "180 GB": about 179 GiB); the free figures leave a margin for the CUDA context.
GPUS = {"T4 16GB": (15.0, 16.0, False), "L4 24GB": (22.5, 24.0, True), "A100 40GB": (39.5, 40.0, True),
        "A100/H100 80GB": (79.0, 80.0, True), "H200 141GB": (138.0, 141.0, True), "B200 180GB": (177.0, 180.0, True)}


def memory_fits(name: str) -> list[dict]:
    """Which usual GPU holds pair `name`, in each precision, as `load_pair` decides it: check_memory's
    estimate (weights + 15%) against the GPU's free memory, in the dtype load_pair would pick there
    (no bfloat16 on a T4: float16, or float32 for Gemma2, which overflows in float16). One row per
    precision: dict(precision, gib (on a bf16 GPU), fits=[GPU names], by_gpu={GPU name: (dtype name,
    gib in that dtype)}); on a T4 the unquantized layers of Gemma2 (its embeddings, in NF4) are float32,
    so its figure there is larger than `gib`."""
    if name not in PAIRS:
        raise ValueError(f"unknown pair {name!r}: one of {', '.join(PAIRS)}")
    pair = PAIRS[name]
    rows = []
    for label, q in (("bf16", None), ("NF4", "nf4")):
        fits, gib, by_gpu = [], None, {}
        for gpu, (free, total, bf16) in GPUS.items():
            dtype = cuda_dtype(pair, bf16)
            need = 1.15 * sum(estimate_bytes(getattr(pair, r), dtype, q) for r in ("draft", "target")) / 2**30
            by_gpu[gpu] = (str(dtype).split(".")[-1], need)
            if gib is None and bf16:
                gib = need
            try:
                check_memory(pair, dtype, q, "both", free * 2**30, total * 2**30)
                fits.append(gpu if bf16 or dtype == torch.bfloat16 else f"{gpu} ({str(dtype).split('.')[-1]})")
            except InsufficientMemoryError:
                pass
        rows.append(dict(precision=label, gib=gib, fits=fits, by_gpu=by_gpu))
    return rows


def quantization_config(quantization: str, compute_dtype: torch.dtype, double_quant: bool = False):
    """'nf4' or 'fp4' -> a transformers BitsAndBytesConfig (4-bit weights, compute in compute_dtype)."""
    if quantization not in ("nf4", "fp4"):
        raise ValueError(f"quantization must be None, 'nf4' or 'fp4' (got {quantization!r}).")
    try:
        # On CPUs with AVX512-BF16, bitsandbytes tries to fetch an optional faster 4-bit kernel from the
        # Hugging Face Hub (the `kernels` package) and logs a warning when it cannot; its own kernel is
        # used instead and the results are the same. Offline and without `kernels` that is expected here.
        logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)
        import bitsandbytes  # noqa: F401
    except ImportError as e:
        raise PairError('4-bit loading needs bitsandbytes: %pip install "bitsandbytes>=0.48"') from e
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=quantization,
        bnb_4bit_compute_dtype=compute_dtype,
        bnb_4bit_use_double_quant=double_quant,
    )


def bnb_cpu_path(model) -> dict:
    """What bitsandbytes did (or will do) with `model`'s 4-bit layers, read from the layers themselves.

    On a CPU with AVX512-BF16 (bitsandbytes.functional.has_avx512bf16()), each `Linear4bit` sets
    `support_avx512bf16_for_cpu` when it is built, and its first forward pass in inference (no
    gradients, eval mode) repacks the weight into a CPU layout (`_convert_weight_packed_for_cpu`):
    double-quantized scales are de-quantized back (`nested` becomes False), every scale is stored
    in bf16, and the matmul then runs in the fused `gemv_4bit` CPU kernel, which rounds its input
    and the scales to bf16 and computes in bf16 whatever `bnb_4bit_compute_dtype` says (read in
    bitsandbytes 0.50.2: nn/modules.py Linear4bit.forward, functional.py, backends/cpu/ops.py).
    Elsewhere (a GPU, or a CPU without AVX512-BF16) the stored layout stays and each matmul
    de-quantizes the blocks to the compute dtype.

    Returns dict(layers, avx512bf16 (this CPU), bf16_enabled (layers allowed the fused path),
    repacked (layers already converted), nested (layers keeping double-quantized scales),
    was_nested (repacked layers that were double-quantized before), scale_dtypes, compute_dtypes,
    device); layers == 0 for a model without 4-bit weights."""
    try:
        import bitsandbytes as bnb
        from bitsandbytes.functional import has_avx512bf16
    except ImportError:
        return dict(layers=0, avx512bf16=False, bf16_enabled=0, repacked=0, nested=0, was_nested=0, scale_dtypes=[],
                    compute_dtypes=[], device=str(next(model.parameters()).device))
    layers = [m for m in model.modules() if isinstance(m, bnb.nn.Linear4bit)]
    states = [m.weight.quant_state for m in layers]
    return dict(
        layers=len(layers),
        avx512bf16=bool(has_avx512bf16()),
        bf16_enabled=sum(bool(getattr(m, "support_avx512bf16_for_cpu", False)) for m in layers),
        repacked=sum(bool(getattr(s, "packing_format_for_cpu", False)) for s in states),
        nested=sum(bool(getattr(s, "nested", False)) for s in states),
        was_nested=sum(bool(getattr(s, "packing_format_for_cpu", False) and getattr(s, "original_nested", False))
                       for s in states),
        scale_dtypes=sorted({str(s.absmax.dtype).split(".")[-1] for s in states}),
        compute_dtypes=sorted({str(m.compute_dtype).split(".")[-1] for m in layers}),
        device=str(next(model.parameters()).device),
    )


def describe_bnb_cpu_path(info: dict) -> str:
    """One sentence from a `bnb_cpu_path` result: which kernel path the 4-bit layers take here, with
    what happened to their scales and in what precision they compute."""
    n, compute = info["layers"], "/".join(info["compute_dtypes"]) or "-"
    if n == 0:
        return "no bitsandbytes 4-bit layers in this model"
    cpu = "this CPU has AVX512-BF16" if info["avx512bf16"] else "this CPU has no AVX512-BF16"
    if info["device"] != "cpu":
        return (f"{n} 4-bit layers on {info['device']}: each matmul de-quantizes the weight blocks to the compute "
                f"dtype ({compute}); scales stored as {'/'.join(info['scale_dtypes'])}, {info['nested']} layers double-quantized")
    if info["repacked"]:
        return (f"{cpu}: on the first forward pass bitsandbytes repacked {info['repacked']} of {n} 4-bit layers into its "
                f"CPU layout with {'/'.join(info['scale_dtypes'])} scales"
                + (f" (the double-quantized scales of {info['was_nested']} layers de-quantized back: double "
                   "quantization is undone)" if info["was_nested"] else "")
                + f", and the fused CPU kernel rounds each input and scale to bf16 and computes in bf16, although "
                f"the compute dtype is {compute}")
    if info["bf16_enabled"]:
        return (f"{cpu}: bitsandbytes will repack the {n} 4-bit layers for its bf16 CPU kernel on their first "
                f"forward pass (none has run yet)")
    return (f"{cpu}{' but its bf16 kernel is switched off' if info['avx512bf16'] else ''}: the {n} 4-bit layers keep "
            f"their stored layout ({info['nested']} double-quantized) and each matmul de-quantizes the blocks to "
            f"{compute}")


def set_bnb_cpu_bf16(model, enabled: bool) -> int:
    """Allow or forbid bitsandbytes' fused bf16 CPU kernel (see `bnb_cpu_path`) on every 4-bit layer of
    `model`; forbidden, each matmul de-quantizes to the compute dtype instead. Call it before the first
    forward pass: a layer already repacked keeps its CPU layout (ValueError). Returns the layers set."""
    import bitsandbytes as bnb

    layers = [m for m in model.modules() if isinstance(m, bnb.nn.Linear4bit)]
    if any(getattr(m.weight.quant_state, "packing_format_for_cpu", False) for m in layers):
        raise ValueError("these 4-bit layers were already repacked by a forward pass: call set_bnb_cpu_bf16 on a "
                         "freshly loaded model, before it runs.")
    for m in layers:
        m.support_avx512bf16_for_cpu = bool(enabled)
    return len(layers)


@torch.inference_mode()
def step_block_gap(model, ids: torch.Tensor, max_new_tokens: int) -> tuple[torch.Tensor, float]:
    """Greedy `generate` from ids (1, T), and the largest absolute difference between the logits its
    one-token steps produced and those of one forward pass over the same text (the shape of a
    verification pass). In float32 it stays near rounding noise; a kernel that rounds to bf16 can
    turn those last-bit differences into whole bf16 steps, enough to flip a near-tied arg max."""
    gen = model.generate(ids, max_new_tokens=max_new_tokens, do_sample=False, output_scores=True,
                         return_dict_in_generate=True)
    n = len(gen.scores)
    block = model(gen.sequences[:, :-1]).logits[0, -n:]
    steps = torch.stack([s[0] for s in gen.scores]).to(block.dtype)
    return gen.sequences, float((steps - block).abs().max())


def _source(spec: ModelSpec, pair: PairSpec) -> str:
    return str(MODELS_DIR / spec.repo) if pair.local else spec.repo


def shipped_config(pair_name: str, key: str, role: str = "target") -> int | None:
    """A number from a shipped pair's config.json ("max_position_embeddings", "num_hidden_layers", ...)
    read before any model loads, so a command can check its flags first. None for a Hub pair (known
    once it is loaded) and for a missing or broken shipped model (load_pair then says what to do)."""
    import json

    spec = PAIRS[pair_name]
    if not spec.local:
        return None
    try:
        return int(json.loads((MODELS_DIR / getattr(spec, role).repo / "config.json").read_text())[key])
    except (OSError, ValueError, KeyError):
        return None


def _is_cached(repo: str) -> bool:
    from huggingface_hub import try_to_load_from_cache

    return isinstance(try_to_load_from_cache(repo, "config.json"), str)


def _offline() -> bool:
    """Whether HF_HUB_OFFLINE tells huggingface_hub not to reach the Hub."""
    return os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False")


def _check_access(pair: PairSpec) -> None:
    from huggingface_hub import get_token

    if pair.local:
        return
    missing = [s.repo for s in (pair.draft, pair.target) if not _is_cached(s.repo)]
    if pair.gated and missing and not get_token():
        raise GatedModelError(
            f"{', '.join(missing)} are gated: (1) accept the Gemma license on each model's page "
            f"(https://huggingface.co/{missing[-1]}), (2) create a read token at "
            "https://huggingface.co/settings/tokens, (3) run `hf auth login` (the `hf` command of this "
            "environment) or set HF_TOKEN (on Colab: the key icon > Secrets > HF_TOKEN). Or use an ungated pair: "
            "load_pair('smollm2-135m-1.7b')."
            + (" Downloading also needs the Hub online: HF_HUB_OFFLINE is set here; unset it (or start the notebooks "
               "with `python run.py lab --online`)." if _offline() else "")
        )


def _caused_by(error: BaseException, cls) -> bool:
    """Whether `error` or an error it was raised from (its __cause__ / __context__ chain) is a `cls`:
    transformers turns the Hub's GatedRepoError into an OSError raised from it."""
    seen = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, cls):
            return True
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return False


def _from_pretrained(loader, source: str, pair: PairSpec, **kwargs):
    from huggingface_hub.errors import GatedRepoError, OfflineModeIsEnabled

    try:
        return loader.from_pretrained(source, **kwargs)
    except Exception as e:
        # transformers raises the Hub's refusal as an OSError "from" it: check the chain before OSError
        if _caused_by(e, GatedRepoError):
            raise GatedModelError(
                f"access to {source} was refused: accept its license at https://huggingface.co/{source} "
                "with the account whose token you use, then try again."
            ) from e
        if isinstance(e, torch.cuda.OutOfMemoryError):
            raise InsufficientMemoryError(
                f"out of GPU memory while loading {source}: pass quantization='nf4', or use a smaller pair."
            ) from e
        if not isinstance(e, (OSError, OfflineModeIsEnabled)):
            raise
        if pair.local:
            moved = "SPECDEC_MODELS_DIR" in os.environ
            raise PairError(
                f"the shipped model {source} is missing or broken: "
                + (f"SPECDEC_MODELS_DIR points to {MODELS_DIR}; fix or unset it, or " if moved else "")
                + "run `git checkout -- data/models` or rebuild it with `python scripts/train_tiny_pair.py --overwrite`."
            ) from e
        offline = _offline()
        raise HubUnreachableError(
            f"could not load {source} from the Hugging Face Hub "
            f"({'HF_HUB_OFFLINE is set: unset it, or start the notebooks with `python run.py lab --online`' if offline else 'no network, or the Hub is unreachable'}). "
            "Or use the shipped pair, which needs no network: load_pair('tiny') or SPECDEC_PAIR=tiny."
        ) from e


def check_tokenizers(draft_tok, target_tok, pair_name: str) -> None:
    if draft_tok.get_vocab() != target_tok.get_vocab():
        raise IncompatiblePairError(
            f"pair {pair_name!r}: the draft's and the target's tokenizers differ, so token ids mean different "
            "things and p(x)/q(x) is meaningless. Choose a draft from the target's family with the same tokenizer."
        )


def load_pair(
    name: str | None = None,
    *,
    device=None,
    dtype: torch.dtype | None = None,
    quantization: str | None = None,
    quantize: str = "both",
    double_quant: bool = False,
) -> Pair:
    """Load a draft/target pair with its shared tokenizer.

    name: a key of PAIRS; default $SPECDEC_PAIR, else "tiny".
    quantization: None, "nf4" or "fp4" (bitsandbytes 4-bit); quantize: "both", "draft" or "target".
    """
    name = name or os.environ.get("SPECDEC_PAIR") or "tiny"
    if name not in PAIRS:
        raise UnknownPairError(f"unknown pair {name!r}; known pairs: {', '.join(PAIRS)}.")
    if quantize not in ("both", "draft", "target"):
        raise ValueError(f"quantize must be 'both', 'draft' or 'target' (got {quantize!r}).")
    if dtype is not None and not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        raise ValueError(f"dtype must be a floating-point torch.dtype such as torch.bfloat16, torch.float16 or "
                         f"torch.float32 (got {dtype!r}), or None for the best one on this device; for 4 bits pass "
                         "quantization='nf4'.")
    if double_quant and not quantization:
        raise ValueError("double_quant=True applies to 4-bit weights: pass quantization='nf4' (or 'fp4') with it.")
    spec = PAIRS[name]
    dev = resolve_device(device)
    if quantization and dev.type not in ("cpu", "cuda"):
        raise DeviceError(f"4-bit weights (quantization={quantization!r}) run on a CPU or an NVIDIA GPU with bitsandbytes, "
                          f"not on {dev.type!r}: pass device='cpu' (4-bit on the CPU), or leave out quantization.")
    dtype = dtype or default_dtype(dev, spec, quantization)
    qconfig = quantization_config(quantization, dtype, double_quant) if quantization else None
    if dev.type == "cuda":
        free, total = torch.cuda.mem_get_info(dev)
        check_memory(spec, dtype, quantization, quantize, free, total)
    _check_access(spec)

    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # a "Loading weights" bar per model is noise in a notebook
    toks = {r: _from_pretrained(AutoTokenizer, _source(getattr(spec, r), spec), spec) for r in ("draft", "target")}
    check_tokenizers(toks["draft"], toks["target"], name)
    models = {}
    for role in ("draft", "target"):
        q = qconfig if quantize in ("both", role) else None
        kwargs = dict(dtype=dtype, quantization_config=q)
        if dev.type == "cuda":
            kwargs["device_map"] = {"": dev.index or 0}
        m = _from_pretrained(AutoModelForCausalLM, _source(getattr(spec, role), spec), spec, **kwargs)
        if dev.type != "cuda" and q is None:
            m = m.to(dev)
        m._specdec_quant = quantization if q is not None else None
        models[role] = m.eval()
    vd, vt = models["draft"].config.vocab_size, models["target"].config.vocab_size
    if vd != vt:
        raise IncompatiblePairError(f"pair {name!r}: draft vocab_size {vd} != target vocab_size {vt}.")
    return Pair(name, models["draft"], models["target"], toks["target"], dev, dtype, quantization)


class Variants(Mapping):
    """A pair in full precision and in the 4-bit variants notebook 06 compares, by name, each variant
    loaded (`load_pair(name, **options)`) the first time it is used. On a CPU every variant stays
    loaded (the tiny pair's take a few MiB). On a GPU only the variant used last stays beside the full
    pair: the one before is dropped and its memory returned before the next one loads, so what must
    fit is the full pair plus one 4-bit copy, not four copies (gemma2-2b-9b: about 22 + 8 GiB in
    bf16, an A100 40GB). A dropped variant loads again when used again; a model still held elsewhere
    (a variable) keeps its memory until that is deleted."""

    def __init__(self, full: Pair, options: dict[str, dict], full_name: str = "full precision"):
        if getattr(full, "quantization", None):
            raise ValueError(
                f"the pair {full.name!r} was loaded with quantization={full.quantization!r}, so it is not the {full_name} "
                "pair its 4-bit variants are compared with: load it without `quantization` (the variants load their "
                "own 4-bit copies). Where a pair fits only in 4-bit (Gemma2 on a T4 or an L4), choose one that fits "
                "unquantized: PAIR = \"smollm2-135m-1.7b\", or gemma2-2b-9b in bf16 on a 40 GB GPU.")
        self.full, self.options, self.full_name, self._loaded = full, options, full_name, {}

    def __getitem__(self, key: str) -> Pair:
        if key == self.full_name:
            return self.full
        if key not in self.options:
            raise KeyError(f"{key!r}: the variants are {list(self)}")
        if key not in self._loaded:
            if self.full.device.type == "cuda" and self._loaded:
                import gc

                self._loaded.clear()
                gc.collect()
                torch.cuda.empty_cache()
            self._loaded[key] = load_pair(self.full.name, device=self.full.device, **self.options[key])
        return self._loaded[key]

    def __iter__(self):
        yield self.full_name
        yield from self.options

    def __contains__(self, key) -> bool:  # without loading anything (Mapping's would load the variant)
        return key == self.full_name or key in self.options

    def __len__(self) -> int:
        return 1 + len(self.options)

    def resident(self) -> list[str]:
        """The variants loaded now (besides the full pair)."""
        return list(self._loaded)


def environment_report(pair: Pair | None = None) -> str:
    """Versions, device and (if given) the loaded pair: the first thing every notebook prints."""
    import platform
    from importlib.metadata import PackageNotFoundError, version

    def v(name):
        try:
            return version(name)
        except PackageNotFoundError:
            return "not installed"

    pkgs = ["torch", "transformers", "accelerate", "bitsandbytes", "ipywidgets"]
    lines = [f"python {platform.python_version()} | " + " | ".join(f"{p} {v(p)}" for p in pkgs)]
    dev = pair.device if pair is not None else resolve_device()
    lines.append(f"device: {dev} ({describe_device(dev)}), offline: {os.environ.get('HF_HUB_OFFLINE', '0')}")
    if pair is not None:
        lines.append(pair.summary())
    return "\n".join(lines)


def check_prompts(prompts) -> list[str]:
    """prompts as a list of non-empty strings (one string is one prompt), or a ValueError that says so."""
    prompts = [prompts] if isinstance(prompts, str) else list(prompts or [])
    if not prompts or not all(isinstance(t, str) and t for t in prompts):
        raise ValueError(f"prompts must be a non-empty list of non-empty strings (got {prompts!r}); "
                         'e.g. utils.models.load_prompts("workshop").')
    return prompts


def load_prompts(kind: str = "workshop") -> list[str]:
    """Prompts from data/prompts.json: 'workshop' (tiny pair), 'heldout', 'datacamp' (Gemma2 runs)."""
    import json

    sets = json.loads((ROOT / "data" / "prompts.json").read_text())
    kinds = sorted(k for k in sets if not k.startswith("_"))
    if kind not in kinds:
        raise ValueError(f"no prompt set {kind!r} in data/prompts.json; choose one of {kinds}.")
    return sets[kind]
