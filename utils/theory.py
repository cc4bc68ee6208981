"""The cost model of Leviathan et al. (2023), Section 3.

alpha: probability that a drafted token is accepted (assumed i.i.d. per position).
gamma: tokens drafted per round.
c:     time of one draft step / time of one target step.

    E[tokens per round]  tau = (1 - alpha^(gamma+1)) / (1 - alpha)            (Eq. 1)
    walltime speedup         = tau / (gamma * c + 1)                           (Thm 3.8)

With the paper's v = 1 a speedup exists for some gamma if and only if alpha > c. expected_speedup
also takes v, the cost of the target's verify pass in one-token steps (tau / (gamma * c + v)); with
v > 1 a gamma pays only where alpha > c + (v - 1) / gamma (notebook 04).
"""

from __future__ import annotations

import math
import numbers

from .sampling import check_count


def _check(alpha: float, gamma: int, c: float | None = None) -> None:
    if isinstance(alpha, bool) or not isinstance(alpha, numbers.Real) or not 0 <= alpha <= 1:
        raise ValueError(f"alpha must be a number in [0, 1] (got {alpha!r}): the chance a drafted token is accepted.")
    check_count("gamma", gamma, 1, "it is how many tokens the draft proposes per round")
    if c is not None and (isinstance(c, bool) or not isinstance(c, numbers.Real) or not c >= 0 or not math.isfinite(c)):
        raise ValueError(f"c must be a finite number >= 0 (got {c!r}): the draft's step time over the target's.")


def expected_tokens_per_round(alpha: float, gamma: int) -> float:
    """Expected new tokens per target pass, (1 - alpha^(gamma+1)) / (1 - alpha); gamma + 1 at alpha = 1."""
    _check(alpha, gamma)
    if alpha == 1:
        return float(gamma + 1)
    return (1 - alpha ** (gamma + 1)) / (1 - alpha)


def expected_speedup(alpha: float, gamma: int, c: float, v: float = 1.0) -> float:
    """Expected walltime improvement over target-only decoding (Leviathan Thm 3.8), with the
    target's verification pass costing v one-token steps (the paper: v = 1)."""
    _check(alpha, gamma, c)
    if isinstance(v, bool) or not isinstance(v, numbers.Real) or not (v > 0 and math.isfinite(v)):
        raise ValueError(f"v (verification pass / target step) must be a finite number > 0, got {v!r}")
    return expected_tokens_per_round(alpha, gamma) / (gamma * c + v)


def optimal_gamma(alpha: float, c: float, max_gamma: int = 16, v=1.0, gammas=None) -> int:
    """The gamma with the largest expected speedup, among 1..max_gamma (or the given `gammas`).

    alpha must be acceptance per *checked* token (accepted / (accepted + rejections)): the i.i.d.
    alpha of Eq. 1. Accepted / drafted is lower (tokens drafted after a rejection are never
    checked) and falls with gamma, so it would pull the optimum down. v: the target's verify pass
    over its one-token step, a number or a dict gamma -> v (it grows with the pass's width)."""
    _check(alpha, 1, c)
    if gammas is None:
        gammas = range(1, check_count("max_gamma", max_gamma, 1, "the largest gamma to consider") + 1)
    gammas = [check_count("gammas", g, 1, "each candidate gamma") for g in gammas]
    if not gammas:
        raise ValueError("gammas is empty: give the gammas to choose from, e.g. [1, 2, 4, 8].")

    def v_at(g):
        return float(v[g] if g in v else v[str(g)]) if isinstance(v, dict) else v

    return max(gammas, key=lambda g: expected_speedup(alpha, g, c, v_at(g)))


def best_speedups(c: float, alphas=(0.6, 0.7, 0.8), max_gamma: int = 16) -> list[tuple[float, int, float]]:
    """For each alpha: (alpha, optimal gamma, expected speedup at that gamma) for cost ratio c."""
    return [(a, g, expected_speedup(a, g, c)) for a in alphas for g in [optimal_gamma(a, c, max_gamma)]]


def check_pair_run(run: dict, c_sources: list[tuple[str, float]], gamma: int = 4) -> dict:
    """Test the cost model against one measured pair run (notebook 05 section 5). run: the draft
    and target ('pair' "d->t"), tokens/s of HF greedy, HF assisted and ours, and tau (tokens per
    round) where it was recorded. c_sources: (where it comes from, c) for each c on file. Returns
    the measured ratios over HF greedy; for each c the prediction tau / (gamma c + 1) (v = 1) and its
    relative error against HF assisted's ratio and ours (or, without tau, the tau needed to break
    even and what a perfect draft could gain); the c each measured ratio implies; and which c the
    measurements support (the prediction with the smallest error)."""
    d, t = run["pair"].split("->")
    measured = {k: run[f"{k}_tok_s"] / run["hf_greedy_tok_s"] for k in ("hf_assisted", "ours")}
    out = dict(pair=run["pair"], measured=measured, self_draft=d == t, tau=run.get("tau"), checks=[], implied=None,
               closest=None, farthest=None)
    if d == t:  # a model drafting for itself: c = 1, so at most (gamma + 1) / (gamma + 1)
        out["perfect"] = expected_speedup(1.0, gamma, 1.0)
        return out
    tau = run.get("tau")
    for how, c in c_sources:
        check = dict(how=how, c=c, break_even_tau=gamma * c + 1, perfect=expected_speedup(1.0, gamma, c))
        if tau is not None:
            pred = tau / (gamma * c + 1)
            check.update(predicted=pred, off_assisted=pred / measured["hf_assisted"] - 1, off_ours=pred / measured["ours"] - 1)
        out["checks"].append(check)
    if tau is not None:
        out["implied"] = {k: (tau / r - 1) / gamma for k, r in measured.items()}
        ranked = sorted(out["checks"], key=lambda ch: abs(ch["off_assisted"]))
        if len(ranked) > 1:
            out["closest"], out["farthest"] = ranked[0], ranked[-1]
    return out


def describe_pair_check(r: dict, gamma: int = 4, tolerance: float = 0.15) -> list[str]:
    """`check_pair_run` as the lines notebook 05 prints; a c whose prediction misses HF assisted's
    measured ratio by more than `tolerance` is called contradicted by its own run."""
    m = r["measured"]
    lines = [f"{r['pair']}: measured vs HF greedy: HF assisted {m['hf_assisted']:.2f}x, ours {m['ours']:.2f}x"]
    if r["self_draft"]:
        return lines + [f"  self-draft, c = 1: the cost model allows at most {r['perfect']:.2f}x"]
    for ch in r["checks"]:
        if "predicted" in ch:
            lines.append(f"  c = {ch['c']:.2f} ({ch['how']}): with tau {r['tau']:.1f} the cost model predicts {ch['predicted']:.2f}x, "
                         f"{ch['off_assisted']:+.0%} off HF assisted's measured ratio, {ch['off_ours']:+.0%} off ours'")
        else:
            lines.append(f"  c = {ch['c']:.2f} ({ch['how']}): no tau recorded, so no prediction; breaking even would need "
                         f"tau >= {ch['break_even_tau']:.2f} tokens per round, and even a perfect draft gains at most "
                         f"{ch['perfect']:.2f}x")
    if r["implied"]:
        lines.append(f"  the c the measured ratios imply (v = 1): {r['implied']['hf_assisted']:.2f} (HF assisted), "
                     f"{r['implied']['ours']:.2f} (ours)")
    if r["closest"]:
        far = r["farthest"]
        lines.append(f"  closest to what was measured: the c from {r['closest']['how']} ({r['closest']['off_assisted']:+.0%}); "
                     f"the c from {far['how']} is {far['off_assisted']:+.0%} off: "
                     + ("contradicted by the speedup its own run measured" if abs(far["off_assisted"]) > tolerance
                        else "close enough, given the noise"))
    return lines


# Peak memory bandwidth in bytes/s, from NVIDIA's datasheets: T4 320 GB/s
# (https://www.nvidia.com/en-us/data-center/tesla-t4/), A100 80GB SXM 2,039 GB/s
# (https://www.nvidia.com/en-us/data-center/a100/), H100 SXM 3.35 TB/s
# (https://www.nvidia.com/en-us/data-center/h100/). Measured decoding reaches a fraction of these.
GPU_BANDWIDTH = {"T4 (16 GB)": 320e9, "A100 (80 GB SXM)": 2039e9, "H100 (80 GB SXM)": 3350e9}

# Peak memory bandwidth, bytes/s, matched against torch.cuda.get_device_name (first match wins). The
# T4, A100 80GB SXM and H100 SXM figures are GPU_BANDWIDTH's; the others are the vendors'
# data sheets (H200: 4.8 TB/s, as in this project's H200 measurements).
GPU_BANDWIDTH_BY_NAME = (
    ("GH200", 4.0e12, "NVIDIA GH200 480GB data sheet"),
    ("H200", 4.8e12, "NVIDIA H200 data sheet"),
    ("H100 PCIe", 2.0e12, "NVIDIA H100 PCIe data sheet"),
    ("H100 NVL", 3.9e12, "NVIDIA H100 NVL data sheet"),
    ("H100", "H100 (80 GB SXM)", "GPU_BANDWIDTH"),
    ("A100-SXM4-40GB", 1.555e12, "NVIDIA A100 40GB SXM data sheet"),
    ("A100-PCIE-40GB", 1.555e12, "NVIDIA A100 40GB PCIe data sheet"),
    ("A100 80GB PCIe", 1.935e12, "NVIDIA A100 80GB PCIe data sheet"),
    ("A100", "A100 (80 GB SXM)", "GPU_BANDWIDTH"),
    ("L40", 864e9, "NVIDIA L40 / L40S data sheets"),
    ("L4", 300e9, "NVIDIA L4 data sheet"),
    ("T4", "T4 (16 GB)", "GPU_BANDWIDTH"),
)


def gpu_bandwidth(name: str) -> tuple[float | None, str | None]:
    """(bytes/s, source) for a GPU name, or (None, None) if unknown."""
    for key, value, source in GPU_BANDWIDTH_BY_NAME:
        if key.lower() in name.lower():
            return (GPU_BANDWIDTH[value] if isinstance(value, str) else value), f"{source} (matched {key!r})"
    return None, None


def bandwidth_bound_tokens_per_s(bytes_per_token: float, bandwidth: float) -> float:
    """Upper bound on decoding speed at batch 1: every step must read all the weights once."""
    return bandwidth / bytes_per_token


def arithmetic_intensity(params: float, bytes_per_param: float) -> float:
    """FLOPs per byte read in one batch-1 decode step: 2 FLOPs (multiply + add) per weight."""
    return 2 * params / (params * bytes_per_param)
