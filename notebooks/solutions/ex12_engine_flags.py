"""Exercise 12 (notebook 12): SGLang's flags for a chain of gamma drafted tokens. Checker: utils.exercises.check_12."""


def sglang_chain_flags(method: str, gamma: int, draft: str | None = None) -> list[str]:
    """The --speculative-* flags (after `--model TARGET`) that make SGLang draft a chain of gamma tokens per
    round. SGLang counts the draft tree's nodes INCLUDING its root (the last verified token), so gamma drafted
    tokens are gamma + 1 draft tokens; a chain is one branch per step: --speculative-eagle-topk 1 for a draft
    model, BFS breadth 1 for the n-gram tree (whose default max breadth, 10, branches)."""
    if method == "draft":  # a separate small draft model: SGLang's STANDALONE algorithm
        return ["--speculative-algorithm", "STANDALONE", "--speculative-draft-model-path", draft,
                "--speculative-num-steps", str(gamma), "--speculative-eagle-topk", "1",
                "--speculative-num-draft-tokens", str(gamma + 1)]
    if method == "ngram":  # prompt lookup: no draft model
        return ["--speculative-algorithm", "NGRAM", "--speculative-num-draft-tokens", str(gamma + 1),
                "--speculative-ngram-min-bfs-breadth", "1", "--speculative-ngram-max-bfs-breadth", "1"]
    raise ValueError(f"method must be 'draft' or 'ngram', got {method!r}")
