"""specdec-notebooks helpers: the code the notebooks import.

models      load_pair() and the registry of draft/target pairs (tiny, Gemma2, SmolLM2)
sampling    temperature / top-k / top-p, the same for draft and target
decoding    the autoregressive loop by hand, and the draft-and-score method (notebook 02)
speculative speculative sampling: verify_step (pure), speculative_generate (full algorithm)
theory      expected tokens per round, expected speedup, optimal gamma
bench       python -m utils.bench: ours vs Hugging Face, alpha, c, time inside forward passes
datacamp    python -m utils.datacamp: the DataCamp tutorial's five-prompt benchmark, on any pair
shapes      python -m utils.shapes: real Gemma2 shapes with random weights (made for a GPU)
"""

import importlib

# Imported on first use (PEP 562), so that `import utils.preflight` works, and can report it, on a
# machine where torch or transformers does not import.
_EXPORTS = {
    "autoregressive_generate": "decoding",
    "draft_and_score": "decoding",
    "PAIRS": "models",
    "load_pair": "models",
    "SpeculativeOutput": "speculative",
    "speculative_generate": "speculative",
    "verify_step": "speculative",
    "verify_step_biased": "speculative",
    "expected_speedup": "theory",
    "expected_tokens_per_round": "theory",
    "optimal_gamma": "theory",
}


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "PAIRS",
    "SpeculativeOutput",
    "autoregressive_generate",
    "draft_and_score",
    "expected_speedup",
    "expected_tokens_per_round",
    "load_pair",
    "optimal_gamma",
    "speculative_generate",
    "verify_step",
    "verify_step_biased",
]
