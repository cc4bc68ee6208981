"""Matplotlib figures for the notebooks (static PNGs, so GitHub shows them too)."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

from .theory import expected_tokens_per_round


def _need(data, name: str, what: str) -> None:
    """A clear error for empty input, instead of one from deep inside matplotlib."""
    if data is None or len(data) == 0:
        raise ValueError(f"{name} is empty: nothing to plot. Give {what}.")


def _ax(ax, size=(6, 3.5)):
    return ax if ax is not None else plt.subplots(figsize=size, layout="constrained")[1]


def plot_step_times(series: dict[str, list[float]], ax=None, title="time per new token"):
    """series: label -> seconds per step. x: step index (= tokens already generated)."""
    _need(series, "series", "a dict of label -> per-step seconds, e.g. {'no cache': result.step_times}")
    ax = _ax(ax)
    for label, times in series.items():
        ax.plot(np.arange(1, len(times) + 1), 1e3 * np.asarray(times), label=label, lw=1.2)
    ax.set(xlabel="new token #", ylabel="ms per token", title=title)
    ax.legend()
    return ax


def plot_round(p, q, drafted, verification, tokenizer, top: int = 8):
    """One bar chart per drafted position: q (draft) and p (target) over the most likely tokens,
    the drafted token outlined, with min(1, p/q) and the uniform draw u in the title."""
    _need(drafted, "drafted", "the drafted tokens of a round (utils.speculative.one_round)")
    k = len(drafted)
    p, q = p.cpu(), q.cpu()  # .numpy() below needs host tensors (the models may be on a GPU)
    fig, axes = plt.subplots(1, k, figsize=(3.2 * k, 3), layout="constrained", squeeze=False)
    for i, ax in enumerate(axes[0]):
        ids = np.argsort(-(p[i] + q[i]).numpy())[:top].tolist()
        if drafted[i] not in ids:
            ids[-1] = drafted[i]
        x = np.arange(len(ids))
        ax.bar(x - 0.2, q[i, ids].numpy(), 0.4, label="q (draft)", color="#f59e0b")
        ax.bar(x + 0.2, p[i, ids].numpy(), 0.4, label="p (target)", color="#2563eb")
        j = ids.index(drafted[i])
        ax.axvspan(j - 0.5, j + 0.5, color="k", alpha=0.08)
        ax.set_xticks(x, [repr(tokenizer.decode([t]))[1:-1][:8] for t in ids], rotation=60, fontsize=8)
        if i < len(verification.accept_prob):
            verdict = "accept" if i < verification.n_accepted else "REJECT"
            ax.set_title(
                f"x{i + 1}: min(1,p/q)={verification.accept_prob[i]:.2f}\nu={verification.uniforms[i]:.2f} -> {verdict}",
                fontsize=9,
            )
        else:
            ax.set_title(f"x{i + 1}: never checked", fontsize=9)
    axes[0][0].legend(fontsize=8)
    return fig


def plot_distribution_check(samples: dict[str, list[int]], target_probs, tokenizer, top: int = 10, ax=None):
    """Empirical frequencies of the first generated token for each method against the target's p."""
    _need(samples, "samples", "a dict of method -> sampled token ids")
    for label, s in samples.items():
        _need(s, f"samples[{label!r}]", "at least one sampled token id")
    ax = _ax(ax, (7, 3.5))
    target_probs = np.asarray(target_probs.cpu() if hasattr(target_probs, "cpu") else target_probs)  # a GPU tensor too
    ids = np.argsort(-np.asarray(target_probs))[:top]
    x = np.arange(len(ids))
    width = 0.8 / (len(samples) + 1)
    ax.bar(x, np.asarray(target_probs)[ids], width, label="target p (exact)", color="#2563eb")
    for n, (label, s) in enumerate(samples.items(), start=1):
        freq = np.bincount(np.asarray(s), minlength=len(target_probs))[ids] / len(s)
        ax.bar(x + n * width, freq, width, label=f"{label} (n={len(s)})", color=plt.cm.tab10.colors[n % 10])
    ax.set_xticks(x + width * len(samples) / 2, [repr(tokenizer.decode([int(t)]))[1:-1][:8] for t in ids], rotation=45)
    ax.set(ylabel="probability", title="first new token: empirical vs target")
    ax.legend(fontsize=8)
    return ax


def plot_tau(measured: dict[int, tuple[float, float]], ax=None, title: str = "measured (dots) vs Eq. 1 (lines)"):
    """measured: gamma -> (alpha per checked token, tokens per round). Curves: (1 - a^(g+1)) / (1 - a).
    title: say which pair, temperature and prompts the dots come from."""
    _need(measured, "measured", "a dict of gamma -> (alpha, tokens per round)")
    ax = _ax(ax)
    a = np.linspace(0, 0.99, 100)
    for g, (alpha, tau) in sorted(measured.items()):
        (line,) = ax.plot(a, [expected_tokens_per_round(x, g) for x in a], lw=1, label=f"theory, gamma={g}")
        ax.plot([alpha], [tau], "o", color=line.get_color(), ms=7)
    ax.set(xlabel="alpha per checked token", ylabel="tokens per round tau")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    return ax


def plot_heatmap(values, rows, cols, row_label, col_label, title, ax=None, fmt="{:.2f}"):
    _need(values, "values", "a list of rows of numbers")
    ax = _ax(ax, (6, 3.5))
    im = ax.imshow(np.asarray(values), cmap="viridis", aspect="auto")
    ax.set_xticks(range(len(cols)), cols)
    ax.set_yticks(range(len(rows)), rows)
    ax.set(xlabel=col_label, ylabel=row_label, title=title)
    for i, row in enumerate(values):
        for j, v in enumerate(row):
            ax.text(j, i, fmt.format(v), ha="center", va="center", color="w", fontsize=8)
    plt.colorbar(im, ax=ax)
    return ax


def plot_bars(table: dict[str, float], ylabel: str, title: str, ax=None, fmt: str = "{:.1f}"):
    """One bar per entry, each labelled with its value written with `fmt` (e.g. "{:.3f}" for seconds)."""
    _need(table, "table", "a dict of name -> value")
    ax = _ax(ax)
    names = list(table)
    ax.bar(names, [table[n] for n in names], color=plt.cm.tab10.colors[: len(names)])
    for i, n in enumerate(names):
        ax.text(i, table[n], fmt.format(table[n]), ha="center", va="bottom", fontsize=9)
    ax.set(ylabel=ylabel, title=title)
    ax.tick_params(axis="x", rotation=20)
    return ax


def plot_time_split(split: dict[str, tuple[float, float]], title: str, ax=None):
    """Stacked bars per method: (seconds inside the models' forward passes, seconds elsewhere)."""
    _need(split, "split", "a dict of method -> (forward seconds, other seconds)")
    ax = _ax(ax)
    names = list(split)
    fwd, other = [split[n][0] for n in names], [split[n][1] for n in names]
    ax.bar(names, fwd, color="#4c72b0", label="inside the models' forward passes")
    ax.bar(names, other, bottom=fwd, color="#dd8452", label="the loop's own work")
    for i, n in enumerate(names):
        ax.text(i, fwd[i] + other[i], f"{fwd[i] / (fwd[i] + other[i]):.0%}", ha="center", va="bottom", fontsize=9)
    ax.set(ylabel="seconds (sum over prompts)", title=title, ylim=(0, 1.15 * max(f + o for f, o in zip(fwd, other))))
    ax.tick_params(axis="x", rotation=20)
    ax.legend(fontsize=8)
    return ax


def plot_cost_model(summary: list[dict], title: str, ax=None):
    """Speedup over our own loop per gamma: measured (dots) vs Thm 3.8 with v = 1 (dashed), with c and
    v measured in isolation (solid) and as paid inside the loop (dotted), one colour per temperature.
    summary: rows of utils.bench's summary."""
    _need(summary, "summary", "the rows of a utils.bench result's summary")
    ax = _ax(ax)
    for i, t in enumerate(sorted({s["temperature"] for s in summary})):
        rows = sorted((s for s in summary if s["temperature"] == t and "measured_speedup_vs_ours_ar" in s), key=lambda s: s["gamma"])
        g = [s["gamma"] for s in rows]
        color = plt.cm.tab10.colors[i]
        ax.plot(g, [s["predicted_speedup"] for s in rows], "--", color=color, lw=1, label=f"T={t}: Thm 3.8, v = 1")
        if all("predicted_speedup_with_v" in s for s in rows):
            ax.plot(g, [s["predicted_speedup_with_v"] for s in rows], "-", color=color, lw=1, label=f"T={t}: c, v in isolation")
        if all("predicted_speedup_in_loop" in s for s in rows):
            ax.plot(g, [s["predicted_speedup_in_loop"] for s in rows], ":", color=color, lw=1.5, label=f"T={t}: c, v in the loop")
        ax.plot(g, [s["measured_speedup_vs_ours_ar"] for s in rows], "o", color=color, ms=7, label=f"T={t}: measured")
    ax.axhline(1, color="grey", lw=0.8)
    gammas = sorted({s["gamma"] for s in summary})
    ax.set(xlabel="gamma", ylabel="speedup over our loop", title=title, xscale="log")
    ax.set_xticks(gammas, [str(g) for g in gammas])
    ax.minorticks_off()
    ax.legend(fontsize=7)
    return ax
