"""Show what happened in each speculative round, token by token.

accepted draft tokens  green
rejected draft tokens  red, struck through (the target threw them away)
resampled tokens       orange (drawn from norm(max(0, p - q)) after a rejection)
bonus tokens           blue (drawn from p after all drafted tokens were accepted)
target-only tokens     grey (a round with nothing drafted, at the very end)

`rounds_html` returns an HTML string (for notebooks and the playground); `rounds_text` a plain-text
version with markers, usable anywhere; `count_kinds` the numbers behind both.
"""

from __future__ import annotations

import html

STYLE = {
    "accepted": "background:#c8f7c5;color:#14532d",
    "rejected": "background:#fecaca;color:#7f1d1d;text-decoration:line-through",
    "resample": "background:#fed7aa;color:#7c2d12",
    "bonus": "background:#bfdbfe;color:#1e3a8a",
    "target": "background:#e5e7eb;color:#111827",
}
LABEL = {
    "accepted": "accepted draft token",
    "rejected": "rejected draft token",
    "resample": "resampled by the target",
    "bonus": "bonus token from the target",
    "target": "target only (nothing drafted)",
}
TEXT_MARK = {"accepted": "{}", "rejected": "~~{}~~", "resample": "[{}]", "bonus": "<{}>", "target": "({})"}


def token_spans(rounds, tokenizer) -> list[tuple[str, str, int]]:
    """(kind, text, round index) for every token shown: accepted, rejected, then the target's token."""
    spans = []
    for i, r in enumerate(rounds):
        for tok in r.emitted[: r.n_accepted]:  # (emitted is cut at EOS)
            spans.append(("accepted", tokenizer.decode([tok]), i))
        if r.kind == "resample":
            # the first rejected token is where the target disagreed; later drafts were never checked
            spans.extend(("rejected", tokenizer.decode([t]), i) for t in r.drafted[r.n_accepted :])
        if r.emitted and len(r.emitted) > r.n_accepted:  # the target's token was not cut by EOS
            spans.append((r.kind, tokenizer.decode([r.token]), i))
    return spans


def count_kinds(rounds) -> dict[str, int]:
    counts = dict.fromkeys(STYLE, 0)
    for r in rounds:
        counts["accepted"] += min(r.n_accepted, len(r.emitted))
        counts["rejected"] += len(r.drafted) - r.n_accepted if r.kind == "resample" else 0
        if r.emitted and len(r.emitted) > r.n_accepted:
            counts[r.kind] += 1
    return counts


def legend_html() -> str:
    items = "".join(
        f'<span class="specdec-{k}" style="{STYLE[k]};padding:1px 4px;margin-right:6px;border-radius:3px">'
        f"{LABEL[k]}</span>"
        for k in STYLE
    )
    return f'<div style="font-family:sans-serif;font-size:12px;margin-bottom:6px">{items}</div>'


def rounds_html(rounds, tokenizer, prompt: str = "", legend: bool = True) -> str:
    """The generated text as coloured spans; hovering a token shows its round number."""
    parts = [legend_html() if legend else ""]
    parts.append('<div style="font-family:monospace;white-space:pre-wrap;line-height:1.7">')
    if prompt:
        parts.append(f'<span style="font-weight:bold">{html.escape(prompt)}</span>')
    for kind, text, i in token_spans(rounds, tokenizer):
        parts.append(
            f'<span class="specdec-token specdec-{kind}" title="round {i + 1}: {LABEL[kind]}" '
            f'style="{STYLE[kind]};border-radius:3px">{html.escape(text)}</span>'
        )
    parts.append("</div>")
    return "".join(parts)


def rounds_text(rounds, tokenizer) -> str:
    """Plain text: accepted as is, ~~rejected~~, [resampled], <bonus>, (target only); | between rounds."""
    out, last = [], 0
    for kind, text, i in token_spans(rounds, tokenizer):
        if i != last:
            out.append("|")
            last = i
        out.append(TEXT_MARK[kind].format(text))
    return "".join(out)
