"""Shared fixtures. Tests run offline on the shipped tiny pair, on the CPU."""

import json
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def pair():
    from utils.models import load_pair

    return load_pair("tiny", device="cpu")


@pytest.fixture(scope="session")
def prompts():
    return json.loads((ROOT / "data" / "prompts.json").read_text())


@pytest.fixture(scope="session")
def encode(pair):
    def _encode(text: str) -> torch.Tensor:
        return pair.tokenizer(text, return_tensors="pt").input_ids  # (1, T)

    return _encode


@pytest.fixture(scope="session")
def greedy_refs(pair, prompts, encode):
    """Target greedy continuations (HF generate) of 20 workshop prompts: 40 new tokens, and 100 for
    every 4th (prompt + 100 > the sliding window of 64, so the sliding layers' masks and cache matter).
    Shared by the eager and the compiled loops' tests."""
    eos = pair.tokenizer.eos_token_id
    refs = []
    for i, text in enumerate(prompts["workshop"][:20]):
        ids = encode(text)
        n = 100 if i % 4 == 0 else 40
        with torch.inference_mode():
            ref = pair.target.generate(ids, max_new_tokens=n, do_sample=False, eos_token_id=eos, pad_token_id=0)
        refs.append((ids, n, ref))
    assert sum(r[2].shape[1] > pair.target.config.sliding_window for r in refs) >= 5
    return refs
