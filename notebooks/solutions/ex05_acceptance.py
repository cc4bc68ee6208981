"""Exercise 05 (notebook 05): acceptance per drafted and per checked token. Checker: utils.exercises.check_05."""


def acceptance_rates(rounds) -> tuple[float, float]:
    """(accepted / drafted, accepted / (accepted + rejections)) over a list of utils.speculative.Round.

    A round that ended in a rejection (kind "resample") checked its accepted tokens plus one rejected
    token; the drafted tokens after it were thrown away unchecked.
    """
    drafted = sum(len(r.drafted) for r in rounds)
    accepted = sum(r.n_accepted for r in rounds)
    rejected = sum(r.kind == "resample" for r in rounds)
    nan = float("nan")
    return (accepted / drafted if drafted else nan,
            accepted / (accepted + rejected) if accepted + rejected else nan)
