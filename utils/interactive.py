"""Interactive plotly figures for notebook 04 (hover for the numbers), shown inside ipywidgets.

    show(out, fig)                      # put a plotly figure into a w.Output (replaces what was there)
    RuleDemo()                          # correct rule / the Guide's rule -> emitted-token frequencies vs p
    CostModelExplorer(alpha, gamma, c)  # sliders -> expected speedup over gamma (Thm 3.8)
    tau_figure(alpha, gamma, tau)       # Eq. 1's tau(alpha) for one gamma, with a measured point
    tau_static(alpha, gamma, tau)       # the same as a matplotlib figure (shows on GitHub)
    RuleDemo().static_figure()          # both rules' emitted frequencies vs p, matplotlib

No FigureWidget: with plotly >= 6 it needs the extra `anywidget` package. A figure goes into a
w.Output as plotly's own MIME bundle (application/vnd.plotly.v1+json), which the jupyterlab-plotly
renderer shipped inside the plotly package draws in JupyterLab and Notebook 7 (VS Code draws it
natively); a text/html copy that loads plotly.js from its CDN is the fallback (Colab). Static
figures that must show on GitHub stay in matplotlib (utils.plots).
"""

from __future__ import annotations

import html
import json
import math

import torch

from .sampling import check_count, multinomial, rand
from .speculative import residual_distribution
from .theory import expected_speedup, expected_tokens_per_round, optimal_gamma

PLOTLY_MIME = "application/vnd.plotly.v1+json"
CONFIG = {"displaylogo": False, "responsive": True}


def mimebundle(fig) -> dict:
    """A plotly figure as a display_data output: the plotly MIME type plus a text/html fallback."""
    import plotly.io as pio

    data = json.loads(pio.to_json(fig, validate=False, remove_uids=False))
    data["config"] = CONFIG
    return {"output_type": "display_data", "data": {PLOTLY_MIME: data, "text/html": html_fallback(data)}, "metadata": {}}


def plotly_cdn_url() -> str:
    """plotly.js from its CDN, the version this plotly package draws with."""
    from plotly.offline import get_plotlyjs_version

    return f"https://cdn.plot.ly/plotly-{get_plotlyjs_version()}.min.js"


_LOADER = """<div id="{id}" style="height:{height}px; width:100%;"></div>
<script>
(function () {{
  var id = "{id}", fig = {fig}, url = "{url}";
  function draw(P) {{ (P || window.Plotly).newPlot(id, fig.data, fig.layout, fig.config); }}
  if (window.Plotly) {{ draw(); return; }}
  if (typeof window.requirejs === "function") {{  // a page with RequireJS: plotly.js registers as a module
    window.requirejs.config({{paths: {{specdec_plotly: url.replace(/\\.js$/, "")}}}});
    window.requirejs(["specdec_plotly"], draw);
    return;
  }}
  var s = document.querySelector("script[data-specdec-plotly]");
  if (!s) {{
    s = document.createElement("script");
    s.src = url;
    s.setAttribute("data-specdec-plotly", "");
    document.head.appendChild(s);
  }}
  s.addEventListener("load", function () {{ draw(); }});
}})();
</script>"""


def html_fallback(fig_dict: dict) -> str:
    """A figure (plotly's JSON: data, layout, config) as HTML for front ends without plotly's own
    renderer, such as Colab: a div and a script that loads plotly.js from its CDN only if the page
    lacks it, and draws once it has loaded. plotly's to_html(include_plotlyjs="cdn") writes a
    <script src> and then an inline script that calls Plotly at once; a front end that inserts an
    output's scripts into the page one by one (as Colab's output frame and ipywidgets' Output do) runs
    a script with a src asynchronously, after the inline one, which then fails with "Plotly is not
    defined" (googlecolab/colabtools#5889). tests/test_browser.py inserts both that way."""
    import uuid

    height = int((fig_dict.get("layout") or {}).get("height") or 360)
    payload = json.dumps(fig_dict).replace("</", "<\\/")  # no "</script>" inside the script
    return _LOADER.format(id=f"specdec-{uuid.uuid4().hex}", height=height, fig=payload, url=plotly_cdn_url())


def show(out, fig) -> None:
    """Replace what the ipywidgets Output `out` shows with `fig` (works from widget callbacks too:
    it sets the Output's outputs directly instead of capturing display())."""
    out.outputs = (mimebundle(fig),)


def figure_of(out) -> dict | None:
    """The plotly figure dict an Output shows (what the browser draws): {"data": [...], "layout": ...}."""
    for o in out.outputs:
        if PLOTLY_MIME in o.get("data", {}):
            return o["data"][PLOTLY_MIME]
    return None


# ----------------------------------------------------------------------------------------------
# tau(alpha, gamma) with the measured point
# ----------------------------------------------------------------------------------------------


def _check_alpha(alpha) -> None:
    if alpha == alpha and not 0 <= alpha <= 1:  # NaN (nothing checked) is allowed: the curve alone
        raise ValueError(f"alpha is a probability, in [0, 1] (got {alpha!r}), or NaN when nothing was checked")


def tau_figure(alpha: float, gamma: int, tokens_per_round: float, n: int = 101):
    """Eq. 1: expected tokens per round tau over alpha in [0, 1] for this gamma, and the run's
    measured point (alpha per checked token, measured tokens per round). A NaN alpha (nothing was
    checked) draws the curve only. Measured tau sits a little below the curve when the last rounds
    were shortened to fit max_new_tokens or stopped at EOS."""
    import plotly.graph_objects as go

    _check_alpha(alpha)
    xs = [i / (n - 1) for i in range(n)]
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=xs, y=[expected_tokens_per_round(a, gamma) for a in xs], mode="lines",
                             name=f"Eq. 1, gamma = {gamma}", line=dict(color="#2563eb"),
                             hovertemplate="alpha %{x:.2f}<br>tau %{y:.2f}<extra>Eq. 1</extra>"))
    if alpha == alpha:  # not NaN
        fig.add_trace(go.Scatter(x=[alpha], y=[tokens_per_round], mode="markers", name="this run",
                                 marker=dict(size=12, color="#dc2626", symbol="diamond"),
                                 hovertemplate="alpha per checked token %{x:.3f}<br>measured tau %{y:.2f}"
                                               "<extra>this run</extra>"))
    fig.update_layout(title=f"tokens per round tau vs alpha, gamma = {gamma}", xaxis_title="alpha (per checked token)",
                      yaxis_title="tokens per round", height=300, width=460, margin=dict(l=50, r=10, t=40, b=40),
                      yaxis_range=[0, gamma + 1.3], legend=dict(x=0.02, y=0.98))
    return fig


def tau_static(alpha: float, gamma: int, tokens_per_round: float, ax=None):
    """tau_figure as a static matplotlib figure (widget outputs show only as text on GitHub):
    Eq. 1's curve for this gamma and the run's measured point. Returns the Axes."""
    import matplotlib.pyplot as plt

    _check_alpha(alpha)
    if ax is None:
        _, ax = plt.subplots(figsize=(4.6, 3), layout="constrained")
    xs = [i / 100 for i in range(101)]
    ax.plot(xs, [expected_tokens_per_round(a, gamma) for a in xs], color="#2563eb", label=f"Eq. 1, gamma = {gamma}")
    if alpha == alpha:  # not NaN
        ax.plot([alpha], [tokens_per_round], "D", color="#dc2626", ms=8,
                label=f"this run: alpha {alpha:.2f}, tau {tokens_per_round:.2f}")
    ax.set(xlabel="alpha (per checked token)", ylabel="tokens per round", ylim=(0, gamma + 1.3),
           title=f"tokens per round tau vs alpha, gamma = {gamma}")
    ax.legend(fontsize=8, loc="upper left")
    return ax


# ----------------------------------------------------------------------------------------------
# The Practitioner's Guide's rule vs the correct one, over many draws
# ----------------------------------------------------------------------------------------------


def _check_rule(rule) -> None:
    if rule not in ("residual", "p"):
        raise ValueError(f'rule must be "residual" (correct) or "p" (the biased rule), got {rule!r}')


def _check_pq(p, q) -> None:
    if not (isinstance(p, torch.Tensor) and isinstance(q, torch.Tensor) and p.dim() == q.dim() == 1 and p.shape == q.shape):
        shapes = [tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__ for t in (p, q)]
        raise ValueError(f"p and q must be two 1-d probability tensors over the same vocabulary (got shapes {shapes[0]} "
                         f"and {shapes[1]}): one position's target and draft distributions.")


def emitted_tokens(p: torch.Tensor, q: torch.Tensor, n: int, rule: str = "residual", generator=None) -> torch.Tensor:
    """n independent draws of the first token one round emits, for one position (verify_step with
    k = 1, vectorized over draws): x ~ q; keep x if u < min(1, p(x)/q(x)); else draw from
    norm(max(0, p - q)) (rule "residual", correct) or from p (rule "p", the Guide's rule, as in
    verify_step_biased). p, q: (V,) probabilities. Returns (n,) token ids."""
    _check_rule(rule)
    check_count("n", n, 1, "how many draws to make")
    _check_pq(p, q)
    x = multinomial(q, n, generator, replacement=True)
    u = rand(n, q.device, generator)
    keep = u < (p[x] / q[x]).clamp(max=1)
    dist = residual_distribution(p, q) if rule == "residual" else p
    y = multinomial(dist, n, generator, replacement=True)
    return torch.where(keep, x, y)


def emitted_law(p: torch.Tensor, q: torch.Tensor, rule: str = "residual") -> torch.Tensor:
    """The exact distribution of the emitted token: p for the correct rule; for the Guide's rule
    min(p, q) + (1 - sum min(p, q)) p, which differs from p wherever min(p, q) != alpha p."""
    _check_rule(rule)
    _check_pq(p, q)
    if rule == "residual":
        return p
    m = torch.minimum(p, q)
    return m + (1 - m.sum()) * p


def _label(tokenizer, t: int) -> str:
    return repr(tokenizer.decode([t])) if tokenizer is not None else str(t)


class RuleDemo:
    """A switch between the correct rule and the Practitioner's Guide's rule (after a rejection,
    resample from p), and a bar chart of the emitted token's frequency over many draws against p,
    for the `top` tokens most likely under p or q (`last` also holds the bucket of all others).

    set_distributions(p, q, tokenizer, note, temperature) picks the position; flipping `rule` (or
    update()) redraws. `last` holds the numbers of the latest chart (buckets, frequencies, distances).

    Distances are total variation, TV = 1/2 sum |f - p|. The sampled frequencies are compared over the
    chart's buckets (the `top` tokens and all others together: most of the vocabulary is drawn a few
    times or never in n_draws, so per-token frequencies would be mostly noise); merging tokens into a
    bucket can only cancel differences, so a TV over buckets is a lower bound of the TV over all
    tokens. The rule's exact law needs no draws: its TV from p is given both ways."""

    RULES = [("correct: from norm(max(0, p - q))", "residual"), ("the Guide's rule: from p", "p")]

    def __init__(self, n_draws: int = 4000, top: int = 16, seed: int = 0):
        import ipywidgets as w

        self.n_draws, self.top, self.seed = n_draws, top, seed
        self.rule = w.ToggleButtons(options=self.RULES, value="residual", description="resample",
                                    tooltips=["the correct rule: the output follows p exactly",
                                              "the Practitioner's Guide's rule: the output drifts from p"],
                                    style={"description_width": "110px", "button_width": "260px"})
        self.plot = w.Output(layout=w.Layout(min_height="340px"))
        self.plot.add_class("specdec-hist")
        self.summary = w.HTML()
        self.p = self.q = None
        self.temperature = None
        self.last: dict = {}
        self.rule.observe(lambda _change: self.update(), names="value")

    def widget(self):
        import ipywidgets as w

        return w.VBox([self.rule, self.plot, self.summary])

    def set_distributions(self, p: torch.Tensor, q: torch.Tensor, tokenizer=None, note: str = "",
                          temperature: float | None = None) -> None:
        """Use this position's target p and draft q, both (V,) after the same warping (at `temperature`,
        shown in the titles when given); redraw."""
        self.p, self.q, self.tokenizer, self.note = p.float().cpu(), q.float().cpu(), tokenizer, note
        self.temperature = temperature
        self.update()

    def _at(self) -> str:
        """The temperature for titles, " at T = 1", when it is known; else an empty string."""
        return "" if self.temperature is None else f" at T = {self.temperature:g}"

    def update(self) -> dict:
        """Draw n_draws emitted tokens with the selected rule; redraw the chart; return `last`."""
        if self.p is None:
            return {}
        rule, n = self.rule.value, self.n_draws
        self.last = self.draws(rule)
        name = dict((v, k) for k, v in self.RULES)[rule]
        tv, noise, exact, freq, p_b, ids = (self.last[k] for k in ("tv", "noise", "exact_tv", "freq", "p", "token_ids"))
        exact_all = self.last["exact_tv_all_tokens"]
        self.figure = self._figure(name)
        show(self.plot, self.figure)
        self.summary.value = (
            f'<div class="specdec-drift" data-rule="{rule}" data-tv="{tv!r}" '
            f'style="font-family:sans-serif;font-size:13px">'
            f"{n} draws{self._at()}, rule <b>{html.escape(name)}</b>: over {len(ids) + 1} buckets (these {len(ids)} "
            f"tokens and all others together), the emitted frequencies are at total-variation distance <b>{tv:.3f}</b> "
            f"from p (sampling noise alone gives about {noise:.3f}); the rule's exact law is at {exact:.3f} over the "
            f"same buckets and {exact_all:.3f} over all tokens (a distance over buckets is a lower bound of the one "
            f"over all tokens). All other tokens together: emitted {freq[-1]:.3f}, p {p_b[-1]:.3f}. "
            f"alpha = sum min(p, q) = {self.last['alpha']:.2f} here. {html.escape(self.note)}</div>"
        )
        return self.last

    def static_figure(self, ax=None):
        """Both rules at once as a matplotlib figure (what the widget shows one rule at a time; widget
        outputs show only as text on GitHub): each rule's emitted frequencies over the same n_draws
        against p, for the top tokens. Leaves the switch and `last` as they are. Returns the Axes."""
        import matplotlib.pyplot as plt

        if self.p is None:
            raise ValueError("no position yet: call set_distributions(p, q) first (Playground.run() does).")
        if ax is None:
            _, ax = plt.subplots(figsize=(7.5, 3.2), layout="constrained")
        runs = {rule: self.draws(rule) for _, rule in self.RULES}
        labels, k = runs["residual"]["labels"][:-1], len(runs["residual"]["labels"]) - 1
        xs = range(k)
        for j, (name, rule) in enumerate(self.RULES):
            r = runs[rule]
            ax.bar([x - 0.2 + 0.4 * j for x in xs], r["freq"][:-1], 0.4, color=("#16a34a", "#f59e0b")[j],
                   label=f"{name}: TV from p {r['tv']:.3f}")
        ax.plot(list(xs), runs["residual"]["p"][:-1], "_", color="#1e3a8a", ms=18, mew=2.5, label="p (target)")
        ax.plot(list(xs), runs["residual"]["q"][:-1], "x", color="#7c3aed", ms=5, label="q (draft)")
        ax.set_xticks(list(xs), labels, rotation=60, fontsize=7)
        ax.set(xlabel="token", ylabel="probability",
               title=f"emitted token vs p{self._at()}, {self.n_draws} draws per rule; "
                     f"beta = sum min(p, q) = {runs['residual']['alpha']:.2f}\n(TV over these {k} tokens and all "
                     f"others; sampling noise alone: about {runs['residual']['noise']:.3f})")
        ax.legend(fontsize=7)
        return ax

    def draws(self, rule: str) -> dict:
        """n_draws emitted tokens with `rule` (seeded, so both rules see the same random numbers), bucketed
        over the `top` tokens most likely under p or q plus all others: frequencies, p, q, the rule's
        exact law, and total-variation distances from p: `tv` (the frequencies) and `exact_tv` (the exact
        law) over these buckets, lower bounds of the all-token ones; `exact_tv_all_tokens` over the whole
        vocabulary; `noise`, the TV over the buckets that sampling p itself would give on average.
        Changes no widget."""
        p, q, n = self.p, self.q, self.n_draws
        gen = torch.Generator().manual_seed(self.seed)
        counts = torch.bincount(emitted_tokens(p, q, n, rule, gen), minlength=p.numel()).double()
        ids = torch.maximum(p, q).argsort(descending=True)[: self.top].tolist()
        rest = torch.ones(p.numel(), dtype=torch.bool)
        rest[ids] = False
        law = emitted_law(p, q, rule)

        def buckets(x):
            return [float(x[t]) for t in ids] + [float(x[rest].sum())]

        freq = buckets(counts / n)
        p_b, q_b, law_b = buckets(p), buckets(q), buckets(law)
        # total-variation distances over the same buckets (the top tokens and all others together)
        tv = sum(abs(a - b) for a, b in zip(freq, p_b)) / 2
        exact = sum(abs(a - b) for a, b in zip(law_b, p_b)) / 2
        noise = sum(math.sqrt(2 * b * (1 - b) / (math.pi * n)) for b in p_b) / 2  # E[TV] from sampling alone
        labels = [_label(self.tokenizer, t) for t in ids]
        labels = [f"{s} #{t}" if labels.count(s) > 1 else s for s, t in zip(labels, ids)] + ["all others"]
        # the chart shows the `top` tokens; "all others" (the last bucket) would dwarf them: summary only
        return dict(rule=rule, temperature=self.temperature, labels=labels, token_ids=ids, freq=freq, p=p_b, q=q_b,
                    law=law_b, n=n, tv=tv, noise=noise, exact_tv=exact,
                    exact_tv_all_tokens=float((law - p).abs().sum() / 2),
                    alpha=float(torch.minimum(p, q).sum()))

    def _figure(self, name: str):
        import plotly.graph_objects as go

        s = {k: v[:-1] if k in ("labels", "freq", "p", "q") else v for k, v in self.last.items()}  # no "all others"
        fig = go.Figure()
        fig.add_trace(go.Bar(x=s["labels"], y=s["freq"], name=f"emitted ({s['n']} draws)", marker_color="#f59e0b",
                             hovertemplate="%{x}<br>emitted %{y:.4f}<extra></extra>"))
        fig.add_trace(go.Scatter(x=s["labels"], y=s["p"], mode="markers", name="p (target)",
                                 marker=dict(symbol="line-ew-open", size=26, color="#1e3a8a", line=dict(width=3)),
                                 hovertemplate="%{x}<br>p %{y:.4f}<extra></extra>"))
        fig.add_trace(go.Scatter(x=s["labels"], y=s["q"], mode="markers", name="q (draft)",
                                 marker=dict(symbol="circle-open", size=8, color="#6b7280"),
                                 hovertemplate="%{x}<br>q %{y:.4f}<extra></extra>"))
        fig.update_layout(title=f"emitted token vs p{self._at()}: {name}", yaxis_title="probability",
                          height=340, width=760, margin=dict(l=50, r=10, t=40, b=80), bargap=0.25,
                          legend=dict(x=0.75, y=0.98))
        return fig


# ----------------------------------------------------------------------------------------------
# The cost model, explored with sliders
# ----------------------------------------------------------------------------------------------


def v_at(v, gamma: int) -> float:
    """The verification cost at this gamma: v itself if it is a number, else v[gamma] or v[str(gamma)]."""
    if isinstance(v, dict):
        return float(v[gamma] if gamma in v else v[str(gamma)])
    return float(v)


def speedup_figure(alpha: float, gamma: int, c: float, v=1.0, max_gamma: int = 16):
    """Thm 3.8's expected speedup over gamma = 1..max_gamma for this alpha, c and v (a number, or a
    dict gamma -> v), with the chosen gamma and the best one marked; the line at 1 is the target alone."""
    import plotly.graph_objects as go

    gs = list(range(1, max_gamma + 1))
    ys = [expected_speedup(alpha, g, c, v_at(v, g)) for g in gs]
    best = optimal_gamma(alpha, c, max_gamma, v)
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=gs, y=ys, mode="lines+markers", name="expected speedup", line=dict(color="#2563eb"),
                             hovertemplate="gamma %{x}<br>speedup %{y:.2f}x<extra></extra>"))
    chosen = expected_speedup(alpha, gamma, c, v_at(v, gamma))
    fig.add_trace(go.Scatter(x=[gamma], y=[chosen], mode="markers", name=f"gamma = {gamma}",
                             marker=dict(size=13, color="#dc2626", symbol="diamond"),
                             hovertemplate="gamma %{x}<br>speedup %{y:.2f}x<extra>chosen</extra>"))
    fig.add_trace(go.Scatter(x=[best], y=[ys[best - 1]], mode="markers", name=f"best gamma = {best}",
                             marker=dict(size=16, color="rgba(0,0,0,0)", line=dict(color="#16a34a", width=3)),
                             hovertemplate="gamma %{x}<br>speedup %{y:.2f}x<extra>best</extra>"))
    fig.add_hline(y=1, line=dict(color="black", width=1, dash="dot"))
    vt = f"v = {v_at(v, gamma):.2f} at gamma {gamma}" if isinstance(v, dict) else f"v = {v:.2f}"
    fig.update_layout(title=f"alpha = {alpha:.2f}, c = {c:.3f}, {vt}", xaxis_title="gamma",
                      yaxis_title="expected speedup", height=320, width=560, margin=dict(l=50, r=10, t=40, b=40))
    return fig


class CostModelExplorer:
    """Sliders alpha, gamma and c -> the expected speedup over gamma (Leviathan Thm 3.8, with the
    verification pass costing v target steps: a number, or a dict gamma -> v covering 1..max_gamma).
    `last` holds the numbers behind the chart."""

    def __init__(self, alpha: float = 0.8, gamma: int = 4, c: float = 0.1, v=1.0, max_gamma: int = 16):
        import ipywidgets as w

        style, lay = {"description_width": "60px"}, w.Layout(width="360px")
        self.v, self.max_gamma = v, max_gamma
        self.alpha = w.FloatSlider(alpha, min=0.0, max=1.0, step=0.01, description="alpha", style=style, layout=lay)
        self.gamma = w.IntSlider(gamma, min=1, max=max_gamma, description="gamma", style=style, layout=lay)
        self.c = w.FloatSlider(c, min=0.0, max=1.0, step=0.005, readout_format=".3f", description="c", style=style,
                               layout=lay)
        self.plot = w.Output(layout=w.Layout(min_height="320px"))
        self.plot.add_class("specdec-costmodel")
        self.summary = w.HTML()
        self.last: dict = {}
        for s in (self.alpha, self.gamma, self.c):
            s.observe(lambda _change: self.update(), names="value")
        self.update()

    def widget(self):
        import ipywidgets as w

        return w.VBox([w.HBox([self.alpha, self.gamma, self.c]), self.plot, self.summary])

    def update(self) -> dict:
        a, g, c = float(self.alpha.value), int(self.gamma.value), float(self.c.value)
        best, v = optimal_gamma(a, c, self.max_gamma, self.v), v_at(self.v, g)
        self.last = dict(alpha=a, gamma=g, c=c, v=v, speedup=expected_speedup(a, g, c, v), best_gamma=best,
                         best_speedup=expected_speedup(a, best, c, v_at(self.v, best)), tau=expected_tokens_per_round(a, g))
        self.figure = speedup_figure(a, g, c, self.v, self.max_gamma)
        show(self.plot, self.figure)
        s = self.last
        self.summary.value = (
            f'<div style="font-family:sans-serif;font-size:13px">'
            f'gamma = {g}: tau = {s["tau"]:.2f} tokens per round for '
            f"{g} x {c:.3f} + {v:.2f} = {g * c + v:.2f} target steps, expected speedup <b>{s['speedup']:.2f}x</b>; "
            f"best gamma {best} ({s['best_speedup']:.2f}x)."
            + (" A speedup needs alpha > c." if v == 1 else "") + "</div>"
        )
        return self.last
