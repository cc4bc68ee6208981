"""Exercise 08 (notebook 08): Hugging Face's "heuristic" draft-length schedule.
Checker: utils.exercises.check_08. transformers 5.23, generation/candidate_generator.py,
AssistedCandidateGenerator.update_candidate_strategy."""


def next_gamma(gamma: int, n_drafted: int, n_accepted: int) -> int:
    """The draft length allowed in the next round, after a round allowed gamma, drafted n_drafted
    tokens (fewer than gamma when the confidence threshold or the end of max_new_tokens cut it short)
    and the target accepted n_accepted of them.

    Every drafted token accepted (HF: num_matches == the number of candidates): two more.
    Otherwise one fewer, but at least 1.
    """
    if n_accepted == n_drafted:
        return gamma + 2
    return max(1, gamma - 1)
