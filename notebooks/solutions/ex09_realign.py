"""Exercise 09 (notebook 09): keep ragged rows right-aligned. Checker: utils.exercises.check_09."""

import torch


def realign(m: torch.Tensor, L: int) -> torch.Tensor:
    """Row b had L columns and keeps m[b] of its new candidate columns (L, L+1, ...). All rows must
    end in the same last column, so row b moves right by M - m[b] (M = max m): new column j of row b
    comes from column j - (M - m[b]). Returns (B, L + M); a negative entry marks padding."""
    M = int(m.max())
    j = torch.arange(L + M, device=m.device)[None, :]  # (1, L + M)
    return j - (M - m)[:, None]  # (B, L + M)
