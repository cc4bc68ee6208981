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
