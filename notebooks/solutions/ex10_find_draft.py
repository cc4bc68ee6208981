"""Exercise 10 (notebook 10): the prompt-lookup draft. Checker: utils.exercises.check_10."""


def find_draft(seq: list[int], gamma: int, max_ngram: int) -> tuple[list[int], int]:
    """Copy up to gamma tokens from earlier in seq: for n = max_ngram down to 1, find the most recent
    earlier occurrence of seq's last n tokens (one with a token after it) and return what followed
    it, with n. ([], 0) when no n-gram recurs."""
    L = len(seq)
    for n in range(min(max_ngram, L - 1), 0, -1):
        tail = seq[L - n :]
        starts = [s for s in range(L - n) if seq[s : s + n] == tail]  # earlier occurrences, left to right
        if starts:
            s = starts[-1]  # the most recent
            return seq[s + n : s + n + gamma], n
    return [], 0
