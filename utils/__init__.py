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

from .decoding import autoregressive_generate, draft_and_score
from .models import PAIRS, load_pair
from .speculative import SpeculativeOutput, speculative_generate, verify_step, verify_step_biased
from .theory import expected_speedup, expected_tokens_per_round, optimal_gamma

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
