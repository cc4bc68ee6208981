"""Show what happened in each speculative round, token by token.

accepted draft tokens   green
rejected draft token    red, struck through (the first drafted token the target turned down)
discarded draft tokens  grey, dashed outline: drafted after the first rejection, so never checked
resampled tokens        orange (drawn from norm(max(0, p - q)) after a rejection)
bonus tokens            blue (drawn from p after all drafted tokens were accepted)
target-only tokens      grey (a round with nothing drafted, at the very end)

`rounds_html` returns an HTML string (for notebooks and the playground): hovering a token shows
p(x), q(x), min(1, p/q), the uniform draw u (when the round recorded it) and the decision, and
the same numbers sit in data- attributes. `rounds_text` is a plain-text version with markers,
usable anywhere; `count_kinds` the numbers behind both; `token_details` the records behind all.

`comparison_html` is for two texts with no verification between them (notebook 02, draft-and-score):
each token is marked "same" or "differs" against a reference at the same position, in neutral
colours: nothing there was accepted or rejected.
"""

from __future__ import annotations

import html

STYLE = {
    "accepted": "background:#c8f7c5;color:#14532d",
    "rejected": "background:#fecaca;color:#7f1d1d;text-decoration:line-through",
    "discarded": "background:#f5f5f4;color:#78716c;outline:1px dashed #a8a29e;outline-offset:-1px",
    "resample": "background:#fed7aa;color:#7c2d12",
    "bonus": "background:#bfdbfe;color:#1e3a8a",
    "target": "background:#e5e7eb;color:#111827",
}
LABEL = {
    "accepted": "accepted draft token",
    "rejected": "rejected draft token",
    "discarded": "discarded, never checked",
    "resample": "resampled by the target",
    "bonus": "bonus token from the target",
    "target": "target only (nothing drafted)",
}
TEXT_MARK = {
    "accepted": "{}",
    "rejected": "~~{}~~",
    "discarded": "{{{}}}",  # {x}
    "resample": "[{}]",
    "bonus": "<{}>",
    "target": "({})",
}
DECISION = {  # for drafted tokens: the first form when the round recorded u, the second otherwise
    "accepted": ("accepted: u < min(1, p/q)", "accepted (probability min(1, p/q))"),
    "rejected": ("rejected: u >= min(1, p/q); the target resamples here and the round ends",
                 "rejected (probability 1 - min(1, p/q)); the target resamples here and the round ends"),
    "discarded": "discarded: drafted after the first rejection, never checked",
    "resample": "drawn from norm(max(0, p - q)) after the rejection",
    "bonus": "drawn from p: all drafted tokens were accepted",
    "target": "drawn from p: nothing was drafted in this round",
}


def token_details(rounds, tokenizer) -> list[dict]:
    """One record per token shown, in order: kind, text, token id, round (0-based), and for drafted
    tokens their position j in the round with p = p(x_j), q = q(x_j), accept = min(1, p/q) and
    u (only if the Round carries uniforms as `u`; rounds from the compiled backend carry no p, q)."""
    out = []
    for i, r in enumerate(rounds):
        n, k = r.n_accepted, len(r.drafted)
        kinds = ["accepted"] * min(n, len(r.emitted))  # (emitted is cut at EOS)
        if r.kind == "resample":
            # the first rejected token is where the target disagreed; later drafts were never checked
            kinds += ["rejected"] + ["discarded"] * (k - n - 1)
        u = list(getattr(r, "u", None) or [])
        for j, kind in enumerate(kinds):
            tok = r.drafted[j]
            d = dict(kind=kind, text=tokenizer.decode([tok]), token=tok, round=i, position=j, k=k)
            if j < len(r.p) and j < len(r.q):
                d.update(p=r.p[j], q=r.q[j])
                if kind != "discarded":
                    d["accept"] = min(1.0, r.p[j] / r.q[j]) if r.q[j] > 0 else float("nan")
            if kind != "discarded" and j < len(u):
                d["u"] = u[j]
            out.append(d)
        if r.emitted and len(r.emitted) > n:  # the target's token was not cut by EOS
            out.append(dict(kind=r.kind, text=tokenizer.decode([r.token]), token=r.token, round=i, position=n, k=k))
    return out


def token_spans(rounds, tokenizer) -> list[tuple[str, str, int]]:
    """(kind, text, round index) for every token shown (token_details without the numbers)."""
    return [(d["kind"], d["text"], d["round"]) for d in token_details(rounds, tokenizer)]


def count_kinds(rounds) -> dict[str, int]:
    """How many tokens of each kind the renderers show. Emitted tokens are accepted + resample +
    bonus + target; every round that ended in a rejection has exactly one rejected token."""
    counts = dict.fromkeys(STYLE, 0)
    for r in rounds:
        counts["accepted"] += min(r.n_accepted, len(r.emitted))
        if r.kind == "resample":
            counts["rejected"] += 1
            counts["discarded"] += len(r.drafted) - r.n_accepted - 1
        if r.emitted and len(r.emitted) > r.n_accepted:
            counts[r.kind] += 1
    return counts


def tooltip(d: dict) -> str:
    """The hover text of one token record (see token_details)."""
    where = (f"drafted token {d['position'] + 1} of {d['k']}" if d["kind"] in ("accepted", "rejected", "discarded")
             else "the target's token")
    lines = [f"round {d['round'] + 1}, {where}: {LABEL[d['kind']]}"]
    if "p" in d:
        lines += [f"p(x) = {d['p']:.4g} (target)", f"q(x) = {d['q']:.4g} (draft)"]
    if "accept" in d:
        lines.append(f"min(1, p/q) = {d['accept']:.4g}")
    if "u" in d:
        lines.append(f"u = {d['u']:.4g}")
    decision = DECISION[d["kind"]]
    if isinstance(decision, tuple):
        decision = decision[0 if "u" in d else 1]
    lines.append(f"decision: {decision}")
    return "\n".join(lines)


def legend_html() -> str:
    items = "".join(
        f'<span class="specdec-legend specdec-{k}" '
        f'style="{STYLE[k]};padding:1px 4px;margin-right:6px;border-radius:3px">'
        f"{LABEL[k]}</span>"
        for k in STYLE
    )
    return f'<div style="font-family:sans-serif;font-size:12px;margin-bottom:6px">{items}</div>'


def _data_attrs(d: dict) -> str:
    attrs = [f'data-round="{d["round"] + 1}"', f'data-kind="{d["kind"]}"']
    attrs += [f'data-{key}="{d[key]!r}"' for key in ("p", "q", "accept", "u") if key in d]
    return " ".join(attrs)


def rounds_html(rounds, tokenizer, prompt: str = "", legend: bool = True) -> str:
    """The generated text as coloured spans. Hovering a token shows its round, p(x), q(x),
    min(1, p/q), u (when recorded) and the decision (the title attribute); the same numbers are in
    data-p, data-q, data-accept and data-u, at full precision."""
    parts = [legend_html() if legend else ""]
    parts.append('<div style="font-family:monospace;white-space:pre-wrap;overflow-wrap:anywhere;line-height:1.7">')
    if prompt:
        parts.append(f'<span style="font-weight:bold">{html.escape(prompt)}</span>')
    for d in token_details(rounds, tokenizer):
        parts.append(
            f'<span class="specdec-token specdec-{d["kind"]}" title="{html.escape(tooltip(d))}" {_data_attrs(d)} '
            f'style="{STYLE[d["kind"]]};border-radius:3px;cursor:help">{html.escape(d["text"])}</span>'
        )
    parts.append("</div>")
    return "".join(parts)


def rounds_text(rounds, tokenizer) -> str:
    """Plain text: accepted as is, ~~rejected~~, {discarded}, [resampled], <bonus>, (target only);
    | between rounds."""
    out, last = [], 0
    for kind, text, i in token_spans(rounds, tokenizer):
        if i != last:
            out.append("|")
            last = i
        out.append(TEXT_MARK[kind].format(text))
    return "".join(out)


COMPARE_STYLE = {  # comparison_html: no accept/reject here, so neither green nor red
    "same": "background:#f3f4f6;color:#111827",
    "differs": "background:#e0e7ff;color:#312e81;border-bottom:2px solid #6366f1",
}
COMPARE_LABEL = {"same": "same token as the reference at this position", "differs": "differs from the reference here"}


def comparison_html(tokens, reference, tokenizer, reference_name: str = "the reference") -> str:
    """`tokens` (token ids) as spans marked "same" or "differs" (COMPARE_STYLE) against `reference` at
    the same position, with a legend. Both are cut to the shorter length. A plain position-by-position
    comparison: after a first difference the texts usually drift apart, so later marks say little."""
    n = min(len(tokens), len(reference))
    labels = {k: v.replace("the reference", reference_name) for k, v in COMPARE_LABEL.items()}
    legend = "".join(f'<span style="{COMPARE_STYLE[k]};padding:1px 4px;margin-right:6px;border-radius:3px">'
                     f"{html.escape(labels[k])}</span>" for k in COMPARE_STYLE)
    spans = "".join(
        f'<span class="specdec-{kind}" style="{COMPARE_STYLE[kind]}">{html.escape(tokenizer.decode([int(t)]))}</span>'
        for t, r in zip(list(tokens)[:n], list(reference)[:n])
        for kind in ["same" if int(t) == int(r) else "differs"]
    )
    return (f'<div style="font-family:sans-serif;font-size:12px;margin-bottom:6px">{legend}</div>'
            f'<div style="font-family:monospace;white-space:pre-wrap">{spans}</div>')
