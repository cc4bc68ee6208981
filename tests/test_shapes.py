"""utils.shapes: the real Gemma2 configurations, and the GPU measurement run on shrunken ones (CPU)."""

import pytest
import torch

from utils import shapes
from utils.models import PAIRS

SMALL = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
             head_dim=32, query_pre_attn_scalar=32, vocab_size=1024)


@pytest.mark.parametrize("size, params", [("2b", 2.61e9), ("9b", 9.24e9), ("27b", 27.2e9)])
def test_configs_have_the_published_parameter_counts(size, params):
    from transformers import Gemma2ForCausalLM

    with torch.device("meta"):  # shapes only, no memory
        model = Gemma2ForCausalLM(shapes.gemma2_config(size))
    assert sum(p.numel() for p in model.parameters()) == pytest.approx(params, rel=0.01)


def test_param_counts_agree_with_the_pair_registry():
    specs = {s.repo: s.params for p in PAIRS.values() for s in (p.draft, p.target)}
    assert specs["google/gemma-2-9b-it"] == pytest.approx(9.24e9) and specs["google/gemma-2-27b-it"] == pytest.approx(27.2e9)


def test_unknown_size_and_quant_type():
    with pytest.raises(ValueError, match="choose from"):
        shapes.gemma2_config("7b")
    with pytest.raises(ValueError, match="nf4"):
        shapes.to_4bit(torch.nn.Sequential(), "int8")


def test_nf4_replaces_linear_layers_and_shrinks_weights():
    import bitsandbytes as bnb

    full = shapes.random_model(shapes.gemma2_config("2b", **SMALL))
    q = shapes.random_model(shapes.gemma2_config("2b", **SMALL), quantization="nf4")
    assert isinstance(q.model.layers[0].mlp.up_proj, bnb.nn.Linear4bit)
    assert isinstance(q.lm_head, torch.nn.Linear) and not isinstance(q.lm_head, bnb.nn.Linear4bit)
    assert q.get_memory_footprint() < full.get_memory_footprint()
    with torch.inference_mode():
        logits = q(torch.tensor([[5, 6, 7]])).logits
    assert logits.shape == (1, 3, 1024) and torch.isfinite(logits).all()


def test_run_on_shrunken_configs():
    r = shapes.run(("2b",), (None, "nf4"), (("2b", "9b"),), max_new_tokens=8, repeats=1, overrides=SMALL, progress=False)
    assert r["meta"]["shrunk"] is True and "random weights" in r["meta"]["note"]
    assert [(m["size"], m["quantization"]) for m in r["models"]] == [("2b", None), ("2b", "nf4")]
    for m in r["models"]:
        assert m["weights_bytes"] > 0 and m["step_1_ms"] > 0 and m["hf_dynamic_tokens_per_s"] > 0 and m["hf_static_tokens_per_s"] > 0
    independent, itself = r["pairs"]
    assert itself["alpha"] == 1.0 and itself["tau"] == pytest.approx(5.0, abs=1.0)  # all accepted: gamma + 1 per round
    assert independent["alpha"] < 0.5  # random models rarely agree
    for p in r["pairs"]:
        assert p["same_as_hf_greedy"] == dict(hf_assisted=True, ours_speculative=True)
        assert p["c"] > 0 and set(p["tokens_per_s"]) == {"hf", "hf_assisted", "ours_speculative"}


def test_cli_writes_a_tagged_file_per_part(tmp_path, capsys):
    """A GPU session splits the run into parts that each fit one command; each part has its own file."""
    import json

    shapes.main(["--sizes", "--pairs", "--device", "cpu", "--out", str(tmp_path), "--tag", "part1"])
    data = json.loads((tmp_path / "shapes-cpu-part1.json").read_text())
    assert data["models"] == [] and data["pairs"] == [] and data["meta"]["device"] == "cpu"
    assert "shapes-cpu-part1.json" in capsys.readouterr().out
