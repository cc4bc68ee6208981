"""A toy causal LM whose exact joint distribution is known: shared by the statistical tests of
prompt lookup (test_lookup.py) and of the speculative rule (test_exactness_mutations.py)."""

from types import SimpleNamespace

import torch


class BigramLM:
    """A toy causal LM on 6 tokens whose next-token distribution depends only on the last token
    (a fixed table), so the target's exact joint distribution is known. It keeps no KV cache (the
    loop's cache stays empty and every pass sees the whole sequence), and runs in microseconds."""

    def __init__(self, table: torch.Tensor):
        self.log_table = table.log()  # (V, V): row a is p(. | a)
        V = table.shape[0]
        self.config = SimpleNamespace(vocab_size=V, max_position_embeddings=1024)
        self.config.get_text_config = lambda decoder=False: self.config
        self.device = torch.device("cpu")

    def __call__(self, input_ids, **kwargs):  # (1, n) -> logits (1, n, V)
        return SimpleNamespace(logits=self.log_table[input_ids])


TABLE = torch.tensor([  # p(next | last); rows sum to 1
    [0.30, 0.20, 0.10, 0.15, 0.15, 0.10],
    [0.10, 0.05, 0.40, 0.15, 0.20, 0.10],
    [0.25, 0.25, 0.05, 0.35, 0.05, 0.05],
    [0.05, 0.45, 0.10, 0.10, 0.20, 0.10],
    [0.20, 0.10, 0.30, 0.10, 0.10, 0.20],
    [0.15, 0.15, 0.15, 0.15, 0.20, 0.20],
])
