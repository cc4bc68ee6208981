"""The interactive playground of notebook 04: move gamma and temperature, watch the rounds.

    pg = Playground(pair, prompts)
    pg.widget()                     # in a notebook: sliders + coloured tokens + live statistics
    pg.rule_widget()                # the correct rule vs the Practitioner's Guide's, as a live histogram
    pg.gamma.value = 6              # the same from code (this is how the tests drive it)
    pg.last                         # statistics of the latest run (alpha, tau, speedups, counts, texts)
    pg.reset()                      # the controls back to their starting values (and one run)
    pg.static_figure()              # the run's point on Eq. 1's curve, matplotlib (shows on GitHub)

The statistics' c and v are those this run paid (in the loop), so its tokens per round over its own
passes per round (k c + v, k the drafted tokens per round) is a decomposition of the run, not a
prediction (`decomposed_speedup`): the gap to the measured speedup is the loop's own work outside the
forward passes. A prediction takes c and v measured elsewhere (utils.bench.step_cost_ratio /
verify_cost_ratios, or another run) and Eq. 1's tau.

`run()` is the callback; it needs no browser and is unit-tested.
"""

from __future__ import annotations

import html
import statistics

import torch

from .bench import paused_gc
from .decoding import autoregressive_generate
from .interactive import RuleDemo, show, tau_figure, tau_static
from .models import check_prompts
from .render import count_kinds, rounds_html
from .sampling import probs_from_logits
from .speculative import speculative_generate
from .theory import expected_speedup, optimal_gamma


def loop_costs(out, target_step_s: float) -> tuple[float, float]:
    """c and v as one speculative run paid them, in units of the target's one-token step
    (`target_step_s`, measured in the plain loop): c = mean draft forward time per drafted token,
    v = mean target verification pass over gamma + 1 tokens (utils.bench.in_loop_costs measures the
    same with forward hooks over many runs). Each model's first pass also reads the prompt (the
    prefill), so it is left out when there are later passes to average."""
    d_time, n_d = out.draft_time, out.n_drafted
    if n_d > 1 and out.draft_first_time:
        d_time, n_d = d_time - out.draft_first_time, n_d - 1
    t_time, n_t = out.target_time, len(out.rounds)
    if n_t > 1 and out.target_first_time:
        t_time, n_t = t_time - out.target_first_time, n_t - 1
    return d_time / max(1, n_d) / target_step_s, t_time / max(1, n_t) / target_step_s


def target_alone_seconds(step_times: list[float], n_tokens: int) -> tuple[float, float]:
    """From the plain loop's per-step times (the first step includes the prompt): the seconds the
    target alone needs for n_tokens new tokens, prefill included as in the speculative run, and
    its steady one-token step (the median of the later steps)."""
    if not step_times:
        raise ValueError("the plain loop produced no steps: give max_new_tokens >= 1.")
    later = step_times[1:] or step_times
    step = statistics.median(later)
    return step_times[0] + step * max(0, n_tokens - 1), step


class Playground:
    """Sliders for prompt, gamma, temperature, length, seed, top-k and top-p; the rounds as coloured
    tokens (hover one for p(x), q(x), min(1, p/q), u and the decision) beside the target's own text
    for the same settings and seed; live statistics; Eq. 1's tau curve with this run's point; and
    (rule_widget()) the switch between the correct resampling rule and the Practitioner's Guide's."""

    def __init__(self, pair, prompts: list[str], max_new_tokens: int = 48, seed: int = 0):
        import ipywidgets as w

        if not all(hasattr(pair, a) for a in ("target", "draft", "tokenizer")):
            raise TypeError(f"pair must be the Pair that utils.models.load_pair returns (got {type(pair).__name__}): "
                            "Playground(load_pair(PAIR), prompts).")
        prompts = check_prompts(prompts)
        self.pair = pair
        self._demo_key = None
        style = {"description_width": "110px"}
        lay = w.Layout(width="420px")

        def slider(cls, value, description, **kw):
            return cls(value, description=description, style=style, layout=lay, continuous_update=False, **kw)

        self.prompt = w.Combobox(value=prompts[0], options=prompts, description="prompt", style=style, layout=lay,
                                 continuous_update=False)  # one run per edit, not one per keystroke
        self.gamma = slider(w.IntSlider, 4, "gamma", min=1, max=10)
        self.temperature = slider(w.FloatSlider, 0.0, "temperature", min=0.0, max=3.0, step=0.1)
        self.max_new_tokens = slider(w.IntSlider, max_new_tokens, "max new tokens", min=8, max=128, step=8)
        self.seed = w.IntText(seed, description="seed", style=style, layout=w.Layout(width="220px"))
        self.top_k = slider(w.IntSlider, 0, "top-k (0 = off)", min=0, max=50)
        self.top_p = slider(w.FloatSlider, 1.0, "top-p (1 = off)", min=0.05, max=1.0, step=0.05)
        half = w.Layout(width="50%", padding="0 8px 0 0")
        self.html = w.HTML(layout=half)  # speculative sampling, token by token
        self.target_html = w.HTML(layout=half)  # the target alone, same settings and seed
        self.stats = w.HTML()
        self.tau_plot = w.Output(layout=w.Layout(min_height="300px"))
        self.tau_plot.add_class("specdec-tau")
        self.tau_fig = None
        self.rule_demo = RuleDemo(seed=seed)
        self.last: dict = {}
        self._start = [c.value for c in self.controls]
        for c in self.controls:
            c.observe(lambda _change: self.run(), names="value")

    @property
    def controls(self):
        return [self.prompt, self.gamma, self.temperature, self.max_new_tokens, self.seed, self.top_k, self.top_p]

    def reset(self) -> dict:
        """Put every control back to its starting value (each change re-runs), so that a saved notebook
        shows the widgets in the state the static views describe; returns `last`."""
        for c, v in zip(self.controls, self._start):
            c.value = v
        return self.last if self.last else self.run()

    def static_figure(self, ax=None):
        """The latest run's point on Eq. 1's tau(alpha) curve as a matplotlib figure (the widget's plotly
        chart shows only as text on GitHub). Returns the Axes."""
        if not self.last:
            self.run()
        s = self.last
        ax = tau_static(s["alpha_checked"], s["gamma"], s["tokens_per_round"], ax)
        ax.set_title(f"gamma = {s['gamma']}, T = {s['temperature']:g}: tokens per round vs alpha", fontsize=10)
        return ax

    def widget(self):
        import ipywidgets as w

        self.run()
        c = self.controls
        return w.VBox([w.HBox([w.VBox(c[:4]), w.VBox(c[4:])]), w.HBox([self.html, self.target_html]),
                       w.HBox([self.stats, self.tau_plot])])

    def rule_widget(self):
        """The resampling-rule switch and its live histogram, on the current prompt's first position."""
        if not self.last:
            self.run()
        return self.rule_demo.widget()

    def sampling(self) -> dict:
        """temperature, top_k and top_p as the controls set them (top-k 0 and top-p 1 mean off)."""
        top_k, top_p = int(self.top_k.value), float(self.top_p.value)
        return dict(temperature=float(self.temperature.value), top_k=top_k or None, top_p=top_p if top_p < 1 else None)

    def _target_alone(self, ids, n, sampling, seed):
        """The target alone on this prompt with these settings and seed: its text goes beside the
        speculative one, and its per-step times are the speedup's baseline. Run afresh every time, right
        after the speculative run (not cached: a baseline timed minutes earlier, on a machine then busier
        or quieter, would skew c, v and the speedup; it once gave a verify pass under one plain step)."""
        gen = torch.Generator(device=self.pair.device).manual_seed(seed)
        return autoregressive_generate(self.pair.target, ids, n, generator=gen,
                                       eos_token_id=self.pair.tokenizer.eos_token_id, **sampling)

    def run(self) -> dict:
        """Generate with the current settings; update the views; return the statistics."""
        pair, gamma, seed, n = self.pair, self.gamma.value, int(self.seed.value), self.max_new_tokens.value
        sampling = self.sampling()
        temp = sampling["temperature"]
        ids = pair.tokenizer(self.prompt.value, return_tensors="pt").input_ids.to(pair.device)
        gen = torch.Generator(device=pair.device).manual_seed(seed)
        with paused_gc():  # a collection would land in one of the two timed runs, not both
            out = speculative_generate(
                pair.target, pair.draft, ids, max_new_tokens=n, gamma=gamma, generator=gen,
                eos_token_id=pair.tokenizer.eos_token_id, **sampling,
            )
            alone = self._target_alone(ids, n, sampling, seed)
        # Both sides include one prefill: the speculative run's first passes read the prompt too.
        ar_seconds, step = target_alone_seconds(alone.step_times, max(1, out.new_tokens))
        alpha, (c, v) = out.acceptance_rate, loop_costs(out, step)
        k = out.n_drafted / max(1, len(out.rounds))  # drafted tokens (draft passes) per round
        checked = out.checked_acceptance_rate
        alpha_ = 0.0 if checked != checked else checked  # NaN when nothing was checked
        spec_new, alone_new = out.sequences[0, ids.shape[1]:].tolist(), alone.sequences[0, ids.shape[1]:].tolist()
        diff = next((i for i, (a, b) in enumerate(zip(spec_new, alone_new)) if a != b), None)
        if diff is None and len(spec_new) != len(alone_new):
            diff = min(len(spec_new), len(alone_new))
        self.last = dict(
            gamma=gamma,
            temperature=temp,
            top_k=sampling["top_k"],
            top_p=sampling["top_p"],
            seed=seed,
            alpha=alpha,
            alpha_checked=checked,
            tokens_per_round=out.tokens_per_round,
            c=c,
            v=v,
            measured_speedup=ar_seconds / out.total_time,
            drafted_per_round=k,
            # this run's own tokens per round over its own forward passes per round (k c + v, in target
            # steps): a decomposition of the run, not a prediction; what it leaves out is the loop's own work
            decomposed_speedup=out.tokens_per_round / (k * c + v),
            optimal_gamma=optimal_gamma(alpha_, c, max_gamma=10, v=v),
            counts=count_kinds(out.rounds),
            new_tokens=out.new_tokens,
            rounds=len(out.rounds),
            text=pair.tokenizer.decode(spec_new),
            target_text=pair.tokenizer.decode(alone_new),
            first_difference=diff,  # index of the first new token where the two texts differ; None: identical
        )
        self.html.value = _column(
            "speculative sampling: the draft proposes, the target verifies",
            rounds_html(out.rounds, pair.tokenizer, prompt=self.prompt.value),
        )
        self.target_html.value = self._target_html(alone_new, diff)
        self.stats.value = self._stats_html()
        self.tau_fig = tau_figure(checked, gamma, out.tokens_per_round)
        show(self.tau_plot, self.tau_fig)
        self._update_rule_demo(ids, sampling, seed)
        return self.last

    def _target_html(self, tokens, diff) -> str:
        s = self.last
        if diff is None:
            note = "the same tokens as speculative sampling"
            note += " (greedy: they must be)." if s["temperature"] == 0 else "."
        else:
            note = f"differs from new token {diff + 1} on"
            if s["temperature"] > 0:
                note += ("; both are samples from the target's distribution, drawn with the seed's random numbers "
                         "in a different order.")
        text = html.escape(self.pair.tokenizer.decode(tokens))
        body = (f'<div class="specdec-target-text" style="font-family:monospace;white-space:pre-wrap;'
                f'overflow-wrap:anywhere;line-height:1.7">'
                f'<span style="font-weight:bold">{html.escape(self.prompt.value)}</span>{text}</div>')
        return _column("the target alone, same settings and seed", f'<div style="font-family:sans-serif;font-size:12px;'
                       f'margin-bottom:6px">{html.escape(note)}</div>{body}')

    def _update_rule_demo(self, ids, sampling, seed) -> None:
        """Give the rule demo p and q at the first new position of this prompt (cached per setting).
        At temperature 0 both are one-hot and the two rules emit the same token, so it uses 1.0."""
        t = sampling["temperature"] or 1.0
        key = (tuple(ids[0].tolist()), sampling["temperature"], sampling["top_k"], sampling["top_p"], seed)
        if key == self._demo_key:
            return
        self._demo_key = key
        with torch.inference_mode():
            z_t, z_d = self.pair.target(ids).logits[0, -1], self.pair.draft(ids).logits[0, -1]
        warp = dict(temperature=t, top_k=sampling["top_k"], top_p=sampling["top_p"])
        note = f"Position: the first new token after the prompt, temperature {t:g}"
        note += "".join(f", {k.replace('_', '-')} {v}" for k, v in warp.items() if k != "temperature" and v is not None)
        note += " (the playground is greedy; there p and q are one-hot and both rules emit the target's arg max)." \
            if sampling["temperature"] == 0 else "."
        self.rule_demo.seed = seed
        self.rule_demo.set_distributions(probs_from_logits(z_t, **warp), probs_from_logits(z_d, **warp),
                                         self.pair.tokenizer, note)

    def _stats_html(self) -> str:
        s = self.last
        rows = [
            ("acceptance rate alpha (accepted / drafted)", f"{s['alpha']:.2f}"),
            ("alpha per checked token (cost model)", f"{s['alpha_checked']:.2f}"),
            ("tokens per round tau", f"{s['tokens_per_round']:.2f}"),
            ("cost ratio c (draft step / target step, in the loop, this run)", f"{s['c']:.3f}"),
            ("verify cost v (target pass / target step, in the loop, this run)", f"{s['v']:.2f}"),
            ("measured speedup vs target alone", f"{s['measured_speedup']:.2f}x"),
            ("this run's tau over its passes, k c + v (a decomposition, not a prediction)", f"{s['decomposed_speedup']:.2f}x"),
            ("optimal gamma for this alpha, c and v", str(s["optimal_gamma"])),
            ("rounds / new tokens", f"{s['rounds']} / {s['new_tokens']}"),
        ]
        cells = "".join(f"<tr><td>{html.escape(k)}</td><td><b>{v}</b></td></tr>" for k, v in rows)
        return f'<table class="specdec-stats" style="font-family:sans-serif;font-size:13px">{cells}</table>'


def _column(title: str, body: str) -> str:
    head = "font-family:sans-serif;font-size:13px;font-weight:bold;margin-bottom:4px"
    return f'<div style="{head}">{html.escape(title)}</div>{body}'


def acceptance_grid(pair, prompt: str, gammas, temperatures, max_new_tokens: int = 48, seed: int = 0):
    """Acceptance per checked token (the alpha of Eq. 1 and Thm 3.8) for every (temperature, gamma):
    rows are temperatures, columns gammas. Accepted / drafted would fall with gamma by construction."""
    ids = pair.tokenizer(prompt, return_tensors="pt").input_ids.to(pair.device)
    grid = []
    for t in temperatures:
        row = []
        for g in gammas:
            gen = torch.Generator(device=pair.device).manual_seed(seed)
            out = speculative_generate(pair.target, pair.draft, ids, max_new_tokens=max_new_tokens, gamma=g,
                                       temperature=t, generator=gen)
            a = out.checked_acceptance_rate
            row.append(0.0 if a != a else a)  # NaN when nothing was checked
        grid.append(row)
    return grid


@torch.inference_mode()
def expected_acceptance(pair, prompt: str, temperatures, max_new_tokens: int = 40) -> dict[float, float]:
    """The expected alpha at each temperature, without sampling noise: sum_x min(p(x), q(x)) (Leviathan
    Def. 3.1) after the same warping of both models, averaged over the positions of one fixed text,
    the target's greedy continuation of `prompt`. At temperature 0 it is the fraction of positions
    where the two arg maxes agree."""
    ids = pair.tokenizer(prompt, return_tensors="pt").input_ids.to(pair.device)
    seq = autoregressive_generate(pair.target, ids, max_new_tokens).sequences
    n = ids.shape[1] - 1
    z_t, z_d = pair.target(seq).logits[0, n:-1], pair.draft(seq).logits[0, n:-1]  # (new tokens, V)
    return {t: float(torch.minimum(probs_from_logits(z_t, t), probs_from_logits(z_d, t)).sum(-1).mean())
            for t in temperatures}


def linear_verify_cost(v: dict) -> dict:
    """A straight line through measured verification costs v(gamma) (dict gamma -> v, keys int or str),
    fitted by least squares: the target's pass over gamma + 1 tokens grows roughly linearly with its
    width, and the line removes the run-to-run wiggles of single measurements, which would otherwise
    decide the best gamma where two gammas are nearly tied. Returns dict(intercept, slope,
    v={gamma (str): fitted v}, max_residual)."""
    pts = sorted((int(g), float(x)) for g, x in v.items())
    if len(pts) < 2:
        raise ValueError(f"need v at two gammas or more to fit a line, got {v!r}")
    n = len(pts)
    mg, mv = sum(g for g, _ in pts) / n, sum(x for _, x in pts) / n
    slope = sum((g - mg) * (x - mv) for g, x in pts) / sum((g - mg) ** 2 for g, _ in pts)
    intercept = mv - slope * mg
    fitted = {str(g): intercept + slope * g for g, _ in pts}
    return dict(intercept=intercept, slope=slope, v=fitted, max_residual=max(abs(fitted[str(g)] - x) for g, x in pts))


def near_best_gammas(alpha: float, c: float, v, tol: float = 0.01, max_gamma: int = 10) -> list[int]:
    """Every gamma in 1..max_gamma whose expected speedup is within `tol` (relative) of the best one:
    a flat optimum, where measurement noise rather than the model picks "the" best gamma. v: a number
    or a dict gamma -> v."""
    from .interactive import v_at

    speed = {g: expected_speedup(alpha, g, c, v_at(v, g)) for g in range(1, max_gamma + 1)}
    top = max(speed.values())
    return [g for g, x in speed.items() if x >= top * (1 - tol)]
