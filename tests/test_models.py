"""load_pair, the shipped tiny pair, and the errors users meet."""

import json
import os
from pathlib import Path

import pytest
import torch

from utils import models
from utils.models import (
    PAIRS,
    GatedModelError,
    HubUnreachableError,
    IncompatiblePairError,
    InsufficientMemoryError,
    PairError,
    UnknownPairError,
    check_memory,
    load_pair,
)

ROOT = Path(__file__).resolve().parents[1]


def test_tiny_pair_loads_offline(pair):
    assert os.environ["HF_HUB_OFFLINE"] == "1"
    for m in (pair.draft, pair.target):
        assert type(m).__name__ == "Gemma2ForCausalLM"
        assert m.device.type == "cpu" and m.dtype == torch.float32
    assert pair.target.config.num_hidden_layers > 4 * pair.draft.config.num_hidden_layers  # deep vs shallow
    assert {"sliding_attention", "full_attention"} <= set(pair.target.config.layer_types)
    assert pair.target.config.final_logit_softcapping and pair.target.config.attn_logit_softcapping
    text = str(pair)
    assert "draft" in text and "target" in text and "M params" in text and "cpu" in text


def test_draft_and_target_share_a_vocabulary(pair):
    from transformers import AutoTokenizer

    draft_tok = AutoTokenizer.from_pretrained(ROOT / "data/models/tiny-gemma2-draft")
    assert draft_tok.get_vocab() == pair.tokenizer.get_vocab()
    assert pair.draft.config.vocab_size == pair.target.config.vocab_size == len(pair.tokenizer)


def test_shipped_weights_are_small_and_window_is_exercised(prompts, pair):
    total = sum(f.stat().st_size for f in (ROOT / "data/models").rglob("*.safetensors"))
    assert 0 < total <= 40 * 2**20
    # notebooks generate up to 120 new tokens after a ~10-token prompt: past the sliding window
    assert pair.target.config.sliding_window < 100


def test_env_var_selects_the_pair(monkeypatch):
    monkeypatch.setenv("SPECDEC_PAIR", "no-such-pair")
    with pytest.raises(UnknownPairError, match="known pairs: tiny, gemma2-2b-9b"):
        load_pair()


def test_greedy_output_is_deterministic(pair, encode):
    ids = encode("The while statement is used to")
    runs = [pair.target.generate(ids, max_new_tokens=30, do_sample=False).tolist() for _ in range(2)]
    assert runs[0] == runs[1]
    new_text = pair.tokenizer.decode(runs[0][0][ids.shape[1] :])
    assert sum(ch.isalpha() for ch in new_text) > 0.5 * len(new_text)  # words, not noise


def test_card_alpha_is_reproduced(pair, prompts):
    """The model card's greedy alpha (gamma 4, held-out prompts) is reproduced. Greedy decoding is
    deterministic; the tolerance (0.03) only covers float differences between CPUs that could flip
    a near-tied argmax."""
    from utils.card import CARD, greedy_alpha

    card = json.loads(CARD.read_text())
    got = greedy_alpha(pair, prompts["heldout"])
    assert got["alpha"] == pytest.approx(card["greedy"]["alpha"], abs=0.03)
    assert card["greedy"]["alpha"] >= 0.6
    assert card["cost"]["c"] <= 0.25


# ---------------------------------------------------------------- errors


def test_unknown_pair_lists_known_ones():
    with pytest.raises(UnknownPairError) as e:
        load_pair("gemma-7b")
    for name in PAIRS:
        assert name in str(e.value)


def test_gated_pair_without_token(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HOME", str(tmp_path))  # empty cache, no stored token
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)
    monkeypatch.setattr(models, "_is_cached", lambda repo: False)
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "get_token", lambda: None)
    with pytest.raises(GatedModelError, match="accept the Gemma license") as e:
        load_pair("gemma2-2b-9b", device="cpu")
    assert "HF_TOKEN" in str(e.value) and "smollm2-135m-1.7b" in str(e.value)


def test_a_token_without_the_license_is_told_to_accept_it():
    """transformers raises the Hub's refusal (GatedRepoError: a token whose account has not accepted
    the license) as an OSError raised from it; that must say "accept the license", not "no network"."""
    import httpx
    from huggingface_hub.errors import GatedRepoError

    class Loader:  # what transformers' from_pretrained does with the Hub's 403 for a gated repo
        @staticmethod
        def from_pretrained(source, **kwargs):
            try:
                raise GatedRepoError("403 Client Error: access to model google/gemma-2-9b-it is restricted",
                                     response=httpx.Response(403, request=httpx.Request("GET", "https://huggingface.co")))
            except GatedRepoError as e:
                raise OSError(f"You are trying to access a gated repo.\nMake sure to have access to it. {e}") from e

    spec = PAIRS["gemma2-2b-9b"]
    with pytest.raises(GatedModelError, match="accept its license at https://huggingface.co/google/gemma-2-9b-it"):
        models._from_pretrained(Loader, "google/gemma-2-9b-it", spec)

    class Offline:
        @staticmethod
        def from_pretrained(source, **kwargs):
            raise OSError("We couldn't connect to 'https://huggingface.co' to load the files")

    with pytest.raises(HubUnreachableError, match="load_pair\\('tiny'\\)"):
        models._from_pretrained(Offline, "google/gemma-2-9b-it", spec)

    class Broken:
        @staticmethod
        def from_pretrained(source, **kwargs):
            raise ValueError("something else")

    with pytest.raises(ValueError, match="something else"):  # not every error is the network's
        models._from_pretrained(Broken, "google/gemma-2-9b-it", spec)


def test_no_network_suggests_tiny(monkeypatch):
    assert os.environ["HF_HUB_OFFLINE"] == "1"  # like a machine without network
    with pytest.raises(HubUnreachableError, match="load_pair\\('tiny'\\)"):
        load_pair("smollm2-135m-1.7b", device="cpu")


def test_incompatible_tokenizers(pair):
    from tokenizers import Tokenizer, models as tmodels
    from transformers import PreTrainedTokenizerFast

    other = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(tmodels.WordLevel({"a": 0, "<unk>": 1}, unk_token="<unk>")))
    with pytest.raises(IncompatiblePairError, match="tokenizers differ"):
        models.check_tokenizers(other, pair.tokenizer, "mixed")


def test_not_enough_gpu_memory_suggests_4bit_then_smaller_pair():
    gib = 2**30
    spec = PAIRS["gemma2-2b-27b"]
    with pytest.raises(InsufficientMemoryError, match="quantization='nf4'"):
        check_memory(spec, torch.bfloat16, None, "both", free_bytes=15 * gib, total_bytes=16 * gib)
    with pytest.raises(InsufficientMemoryError, match="smaller pair"):
        check_memory(spec, torch.bfloat16, "nf4", "both", free_bytes=15 * gib, total_bytes=16 * gib)
    check_memory(spec, torch.bfloat16, "nf4", "both", free_bytes=40 * gib, total_bytes=80 * gib)  # fits
    # 2b + 9b in NF4 with float32 compute (a T4's only safe choice for Gemma2) fits a 15 GiB T4
    check_memory(PAIRS["gemma2-2b-9b"], torch.float32, "nf4", "both", free_bytes=14.5 * gib, total_bytes=15 * gib)


def test_cuda_without_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(PairError, match="device='cpu'"):
        load_pair("tiny", device="cuda")


def test_default_dtype_keeps_the_tiny_pair_in_float32_on_a_gpu(monkeypatch):
    """The shipped pair stays float32 on CUDA (the notebooks' exact checks hold there); the Hub pairs get
    bf16 where the GPU has it, float16 where not, and Gemma2 float32 (it overflows in float16)."""
    cuda, pairs = torch.device("cuda", 0), models.PAIRS
    for bf16 in (True, False):
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True, bf16=bf16: bf16)
        assert models.default_dtype(cuda, pairs["tiny"]) is torch.float32
        assert models.default_dtype(cuda, pairs["smollm2-135m-1.7b"]) is (torch.bfloat16 if bf16 else torch.float16)
    with pytest.warns(UserWarning, match="no bfloat16"):
        assert models.default_dtype(cuda, pairs["gemma2-2b-9b"]) is torch.float32
    import warnings

    with warnings.catch_warnings():  # asked for in NF4 already: nothing to advise
        warnings.simplefilter("error")
        assert models.default_dtype(cuda, pairs["gemma2-2b-9b"], "nf4") is torch.float32
    assert models.default_dtype(torch.device("cpu"), pairs["smollm2-135m-1.7b"]) is torch.float32


def test_bad_quantization_name():
    with pytest.raises(ValueError, match="'nf4' or 'fp4'"):
        load_pair("tiny", device="cpu", quantization="int3")


def test_quantization_config_maps_to_bitsandbytes():
    cfg = models.quantization_config("nf4", torch.bfloat16, double_quant=True)
    assert cfg.load_in_4bit and cfg.bnb_4bit_quant_type == "nf4"
    assert cfg.bnb_4bit_compute_dtype == torch.bfloat16 and cfg.bnb_4bit_use_double_quant
    assert models.quantization_config("fp4", torch.float32).bnb_4bit_quant_type == "fp4"


def test_tiny_pair_in_nf4_on_cpu(encode):
    """bitsandbytes >= 0.48 runs NF4 on the CPU: the tiny target loads 4-bit and still decodes."""
    q = load_pair("tiny", device="cpu", quantization="nf4", quantize="target")
    assert q.target._specdec_quant == "nf4" and q.draft._specdec_quant is None
    assert q.target.get_memory_footprint() < load_pair("tiny", device="cpu").target.get_memory_footprint()
    out = q.target.generate(encode("The if statement is used for"), max_new_tokens=5, do_sample=False)
    assert out.shape[1] == encode("The if statement is used for").shape[1] + 5


@pytest.mark.parametrize("double_quant", [False, True])
def test_weight_bytes_counts_the_4bit_scales(double_quant):
    """get_memory_footprint leaves out each 4-bit weight's block scales (they live in its quant_state);
    weight_bytes adds exactly what nf4_bytes says bitsandbytes stores beyond the packed weights."""
    q = load_pair("tiny", device="cpu", quantization="nf4", double_quant=double_quant).target
    four_bit = [int(torch.Size(p.quant_state.shape).numel()) for p in q.parameters()
                if getattr(p, "quant_state", None) is not None]
    assert four_bit and all(n % models.BNB_BLOCK == 0 for n in four_bit)  # whole blocks; the second level rounds up (8 bytes at most)
    scales = sum(models.nf4_bytes(n, double_quant) - n / 2 for n in four_bit)
    assert models.weight_bytes(q) - q.get_memory_footprint() == pytest.approx(scales, abs=8 * len(four_bit))
    full = load_pair("tiny", device="cpu").target
    assert models.weight_bytes(full) == full.get_memory_footprint()  # nothing 4-bit: nothing to add


def test_nf4_estimate_of_gemma2_9b():
    """NF4 costs 0.5625 byte per quantized parameter (0.516 with double quantization); the embeddings stay
    in bf16. Without the scales the estimate is the 6.0 GB get_memory_footprint gave on the H200."""
    spec = models.PAIRS["gemma2-2b-9b"].target
    assert models.nf4_bytes(2**20) == 2**20 * 0.5625
    assert models.nf4_bytes(2**20, double_quant=True) == pytest.approx(2**20 * 0.51587, rel=1e-4)
    packed = spec.embed_params * 2 + (spec.params - spec.embed_params) / 2
    h200 = json.loads((models.ROOT / "data/results/gpu-h200-2026-11-24.json").read_text())
    nf4 = next(m for m in h200["models"] if m["model"] == "9b" and m["dtype"] == "nf4")
    assert packed / 1e9 == pytest.approx(nf4["weights_gb"], abs=0.05)
    est = models.estimate_bytes(spec, torch.bfloat16, "nf4")
    assert est - packed == pytest.approx((spec.params - spec.embed_params) / 16)
    assert models.estimate_bytes(spec, torch.bfloat16, "nf4", double_quant=True) < est


def test_memory_fits_gives_the_figure_in_the_dtype_of_each_gpu():
    """On a T4 Gemma2 runs in float32, so its unquantized embeddings cost twice their bf16 bytes: the
    T4 figure of the NF4 row is larger than the bf16-GPU one, and it is the one checked against the T4."""
    for name in ("gemma2-2b-9b", "smollm2-135m-1.7b"):
        pair = models.PAIRS[name]
        for row, q in zip(models.memory_fits(name), (None, "nf4")):
            assert set(row["by_gpu"]) == set(models.GPUS)
            for gpu, (dtype, gib) in row["by_gpu"].items():
                want = 1.15 * sum(models.estimate_bytes(getattr(pair, r), getattr(torch, dtype), q)
                                  for r in ("draft", "target")) / 2**30
                assert gib == pytest.approx(want)
                assert any(f.startswith(gpu) for f in row["fits"]) == (gib * 2**30 <= models.GPUS[gpu][0] * 2**30)
            assert row["by_gpu"]["L4 24GB"] == ("bfloat16", row["gib"])
    t4 = models.memory_fits("gemma2-2b-9b")[1]["by_gpu"]["T4 16GB"]
    assert t4[0] == "float32" and t4[1] > 1.3 * models.memory_fits("gemma2-2b-9b")[1]["gib"]


def test_describe_device_counts_threads_in_words(monkeypatch):
    """The hardware label every result file and notebook prints: '1 thread', '2 threads'."""
    monkeypatch.setattr(torch, "get_num_threads", lambda: 1)
    assert models.describe_device("cpu").endswith("CPU, 1 thread")
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    assert models.describe_device("cpu").endswith("CPU, 2 threads")


@pytest.mark.parametrize("double_quant", [False, True])
def test_bnb_cpu_path_reports_what_bitsandbytes_did(encode, double_quant):
    """Before any forward pass the 4-bit layers are as loaded (double quantization nested). On a CPU
    with AVX512-BF16 the first pass repacks every layer for the fused bf16 kernel: bf16 scales,
    double quantization undone, and the same bytes whether or not it was asked for. Elsewhere nothing
    is repacked and the scales stay float32 (nested with double quantization)."""
    from bitsandbytes.functional import has_avx512bf16

    q = load_pair("tiny", device="cpu", quantization="nf4", double_quant=double_quant).target
    before = models.bnb_cpu_path(q)
    assert before["layers"] > 0 and before["repacked"] == 0 and before["avx512bf16"] == bool(has_avx512bf16())
    assert before["nested"] == (before["layers"] if double_quant else 0) and before["compute_dtypes"] == ["float32"]
    with torch.inference_mode():
        q(encode("The if statement is used for"))
    after, text = models.bnb_cpu_path(q), models.describe_bnb_cpu_path(models.bnb_cpu_path(q))
    if has_avx512bf16():
        assert after["repacked"] == after["layers"] and after["nested"] == 0 and after["scale_dtypes"] == ["bfloat16"]
        assert after["was_nested"] == (after["layers"] if double_quant else 0)
        assert "repacked" in text and "computes in bf16" in text and ("undone" in text) == double_quant
        fresh = load_pair("tiny", device="cpu", quantization="nf4", double_quant=not double_quant).target
        with torch.inference_mode():
            fresh(encode("The if statement is used for"))
        assert models.weight_bytes(fresh) == models.weight_bytes(q)  # the double-quant saving is gone
    else:
        assert after["repacked"] == 0 and after["nested"] == before["nested"] and "de-quantizes" in text
    assert models.describe_bnb_cpu_path(models.bnb_cpu_path(load_pair("tiny", device="cpu").target)).startswith("no bitsandbytes")


def test_bf16_cpu_kernel_is_what_widens_the_step_block_gap(pair, encode):
    """generate's one-token steps and one pass over the same text agree to float32 rounding in the fp32
    target and in the NF4 target with bitsandbytes' bf16 CPU kernel switched off; with the kernel (on a
    CPU that has it) the gap grows by orders of magnitude. The switch must come before the first pass."""
    from bitsandbytes.functional import has_avx512bf16

    ids = encode("The if statement is used for")
    seq, gap_fp32 = models.step_block_gap(pair.target, ids, 24)
    assert seq.shape[1] == ids.shape[1] + 24 and gap_fp32 < 1e-3
    off = load_pair("tiny", device="cpu", quantization="nf4").target
    assert models.set_bnb_cpu_bf16(off, False) == models.bnb_cpu_path(off)["layers"] > 0
    _, gap_off = models.step_block_gap(off, ids, 24)
    assert gap_off < 1e-3 and models.bnb_cpu_path(off)["repacked"] == 0
    on = load_pair("tiny", device="cpu", quantization="nf4").target
    _, gap_on = models.step_block_gap(on, ids, 24)
    if has_avx512bf16():
        assert gap_on > 100 * max(gap_off, gap_fp32)
        with pytest.raises(ValueError, match="already repacked"):
            models.set_bnb_cpu_bf16(on, False)
    else:
        assert gap_on < 1e-3  # no bf16 kernel here: the same path as switched off


def test_variants_load_when_used_and_keep_one_on_a_gpu(monkeypatch):
    """Notebook 06's variants load on first use; on a GPU the one used before is let go before the next
    loads (the full pair and one 4-bit copy must fit, not four copies), on a CPU all stay."""
    import weakref
    from types import SimpleNamespace

    loads = []

    class Loaded(SimpleNamespace):  # a pair stand-in that a weak reference can watch
        pass

    def fake_load(name, *, device, **options):
        loads.append(options)
        return Loaded(name=name, device=device, options=options)

    monkeypatch.setattr(models, "load_pair", fake_load)
    options = {"NF4": dict(quantization="nf4"), "FP4": dict(quantization="fp4")}
    for device, kept in (("cpu", ["NF4", "FP4"]), ("cuda", ["FP4"])):
        loads.clear()
        full = SimpleNamespace(name="tiny", device=torch.device(device))
        v = models.Variants(full, options)
        assert list(v) == ["full precision", "NF4", "FP4"] and v["full precision"] is full and loads == []
        nf4 = weakref.ref(v["NF4"])
        assert v["NF4"] is nf4() and loads == [dict(quantization="nf4")]  # loaded once
        v["FP4"]
        assert v.resident() == kept and (nf4() is None) == (device == "cuda"), device
        with pytest.raises(KeyError, match="the variants are"):
            v["INT8"]
    with pytest.raises(ValueError, match="load it without `quantization`"):  # a 4-bit pair against 4-bit variants
        models.Variants(SimpleNamespace(name="tiny", device=torch.device("cpu"), quantization="nf4"), options)


def test_an_apple_gpu_is_named_and_refused_for_4_bit(monkeypatch):
    """MPS: the label says GPU, not CPU; 4-bit weights (bitsandbytes: CPU or CUDA) are refused before
    any load, with what to do (they used to stay on the CPU while the pair said mps)."""
    assert models.describe_device("mps").startswith("Apple GPU (MPS)")
    monkeypatch.setattr(models, "resolve_device", lambda device=None: torch.device("mps"))
    with pytest.raises(models.DeviceError, match="pass device='cpu'"):
        models.load_pair("tiny", device="mps", quantization="nf4")
