"""Exercise 04 (notebook 04): the cost model of Leviathan et al. (2023).
Checkers: utils.exercises.check_04_tau and check_04_gamma."""


def tokens_per_round(alpha: float, gamma: int) -> float:
    """Expected tokens per target pass, (1 - alpha^(gamma + 1)) / (1 - alpha) (Eq. 1); gamma + 1 at alpha = 1."""
    if alpha == 1:
        return float(gamma + 1)
    return (1 - alpha ** (gamma + 1)) / (1 - alpha)


def best_gamma(alpha: float, c: float, max_gamma: int = 16) -> int:
    """The gamma in 1..max_gamma with the largest expected speedup tau / (gamma c + 1) (Thm 3.8)."""
    return max(range(1, max_gamma + 1), key=lambda g: tokens_per_round(alpha, g) / (g * c + 1))
