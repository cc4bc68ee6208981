"""The interactive playground of notebook 04: move gamma and temperature, watch the rounds.

    pg = Playground(pair, prompts)
    pg.widget()                     # in a notebook: sliders + coloured tokens + live statistics
    pg.rule_widget()                # the correct rule vs the Practitioner's Guide's, as a live histogram
    pg.run(gamma=6, temperature=1)  # the same from code: each value checked against its slider's range
    pg.last                         # statistics of the latest run (alpha, tau, speedups, counts, texts)
    pg.reset()                      # the controls back to their starting values (and one run)
    pg.static_figure()              # the run's point on Eq. 1's curve, matplotlib (shows on GitHub)

The statistics' c and v are those this run paid (in the loop), so its tokens per round over its own
passes per round (k c + v, k the drafted tokens per round) is a decomposition of the run, not a
prediction (`decomposed_speedup`): the gap to the measured speedup is the loop's own work outside the
forward passes. A prediction takes c and v measured elsewhere (utils.bench.step_cost_ratio /
verify_cost_ratios, or another run) and Eq. 1's tau.

`run()` is the callback; it needs no browser and is unit-tested. Set values from code through
`run(**settings)` (or the constructor): a value outside a slider's range (RANGES) raises a ValueError
there, while assigning it to the slider (`pg.gamma.value = 12`) would be clamped silently to the range
(gamma 10) by ipywidgets.

`runs_table(runs, c, v)` prints several runs' statistics beside the cost model's prediction.
"""

from __future__ import annotations

import html
import numbers
import statistics

import torch

from .bench import paused_gc
from .decoding import autoregressive_generate
from .interactive import RuleDemo, show, tau_figure, tau_static
from .models import check_prompts
from .render import count_kinds, rounds_html
from .sampling import check_sampling_args, probs_from_logits
from .speculative import speculative_generate
from .theory import expected_speedup, optimal_gamma


# The sliders' ranges: a value outside one raises in Playground(...) and Playground.run(...), where the
# slider itself would clamp it silently. (integer?, lowest, highest, what to do instead)
RANGES = {
    "gamma": (True, 1, 10, "for longer drafts call utils.speculative.speculative_generate(..., gamma=...) directly"),
    "temperature": (False, 0.0, 3.0, "0 is greedy, 1 plain sampling; for hotter sampling call "
                    "utils.speculative.speculative_generate(..., temperature=...) directly"),
    "max_new_tokens": (True, 8, 128, "for longer texts call utils.speculative.speculative_generate(..., "
                       "max_new_tokens=...) directly"),
    "top_k": (True, 0, 50, "0 turns top-k off"),
    "top_p": (False, 0.05, 1.0, "1 turns top-p off"),
}
SETTINGS = ("prompt", "gamma", "temperature", "max_new_tokens", "seed", "top_k", "top_p")  # the controls, in order


def check_setting(name: str, value):
    """`value` for the playground's control `name` (one of SETTINGS), checked: a number inside the
    slider's range (RANGES), an integer seed, a non-empty prompt. Raises a ValueError (TypeError for the
    wrong type) that names the range and what to do; returns the value (ints as int)."""
    if name not in SETTINGS:
        raise TypeError(f"the playground has no setting {name!r}: use one of {', '.join(SETTINGS)}.")
    if name == "prompt":
        if not isinstance(value, str) or not value.strip():
            raise ValueError(f"prompt must be a non-empty string (got {value!r}).")
        return value
    if name == "seed":
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise TypeError(f"seed must be an integer (got {value!r} of type {type(value).__name__}).")
        return int(value)
    integer, lo, hi, todo = RANGES[name]
    kind = "an integer" if integer else "a number"
    if isinstance(value, bool) or not isinstance(value, numbers.Integral if integer else numbers.Real):
        raise TypeError(f"{name} must be {kind} from {lo} to {hi} (got {value!r} of type {type(value).__name__}).")
    if not lo <= value <= hi:  # NaN fails too
        raise ValueError(f"{name} = {value!r} is outside the playground's range, {lo} to {hi} (its slider would "
                         f"silently use {min(max(value, lo), hi) if value == value else lo} instead): pass a value "
                         f"from {lo} to {hi}; {todo}.")
    if name == "temperature":
        check_sampling_args(value, None, None)  # a temperature too small to sample with
    return int(value) if integer else float(value)


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

    def __init__(self, pair, prompts: list[str], max_new_tokens: int = 48, seed: int = 0, *, gamma: int = 4,
                 temperature: float = 0.0, top_k: int = 0, top_p: float = 1.0):
        """The controls start at these values (reset() returns to them); each is checked against its
        slider's range (RANGES), which raises a ValueError where the slider would clamp silently."""
        import ipywidgets as w

        if not all(hasattr(pair, a) for a in ("target", "draft", "tokenizer")):
            raise TypeError(f"pair must be the Pair that utils.models.load_pair returns (got {type(pair).__name__}): "
                            "Playground(load_pair(PAIR), prompts).")
        prompts = check_prompts(prompts)
        start = dict(gamma=gamma, temperature=temperature, max_new_tokens=max_new_tokens, seed=seed, top_k=top_k,
                     top_p=top_p)
        start = {k: check_setting(k, x) for k, x in start.items()}
        self.pair = pair
        self._demo_key = None
        style = {"description_width": "110px"}
        lay = w.Layout(width="420px")

        def slider(name, description, **kw):
            integer, lo, hi, _ = RANGES[name]
            return (w.IntSlider if integer else w.FloatSlider)(start[name], min=lo, max=hi, description=description,
                                                               style=style, layout=lay, continuous_update=False, **kw)

        self.prompt = w.Combobox(value=prompts[0], options=prompts, description="prompt", style=style, layout=lay,
                                 continuous_update=False)  # one run per edit, not one per keystroke
        self.gamma = slider("gamma", "gamma")
        self.temperature = slider("temperature", "temperature", step=0.1)
        self.max_new_tokens = slider("max_new_tokens", "max new tokens", step=8)
        self.seed = w.IntText(start["seed"], description="seed", style=style, layout=w.Layout(width="220px"))
        self.top_k = slider("top_k", "top-k (0 = off)")
        self.top_p = slider("top_p", "top-p (1 = off)", step=0.05)
        half = w.Layout(width="50%", padding="0 8px 0 0")
        self.html = w.HTML(layout=half)  # speculative sampling, token by token
        self.target_html = w.HTML(layout=half)  # the target alone, same settings and seed
        self.stats = w.HTML()
        self.tau_plot = w.Output(layout=w.Layout(min_height="300px"))
        self.tau_plot.add_class("specdec-tau")
        self.tau_fig = None
        self.rule_demo = RuleDemo(seed=seed)
        self.last: dict = {}
        self._quiet = False  # True while run(**settings) sets several controls: one run, not one per control
        self._start = self.settings()
        for c in self.controls:
            c.observe(self._changed, names="value")

    @property
    def controls(self):
        """The widgets, in the order of SETTINGS."""
        return [self.prompt, self.gamma, self.temperature, self.max_new_tokens, self.seed, self.top_k, self.top_p]

    def settings(self) -> dict:
        """The controls' current values by name (SETTINGS)."""
        return {name: c.value for name, c in zip(SETTINGS, self.controls)}

    def _changed(self, _change) -> None:
        if not self._quiet:
            self.run()

    def reset(self) -> dict:
        """Put every control back to its starting value and run once, so that a saved notebook shows the
        widgets in the state the static views describe; returns `last`."""
        if self.last and self.settings() == self._start:
            return self.last
        return self.run(**self._start)

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

    def run(self, **settings) -> dict:
        """Generate with the current settings; update the views; return the statistics.

        settings: new values for any of SETTINGS (prompt, gamma, temperature, max_new_tokens, seed, top_k,
        top_p), checked first (check_setting: a value outside its slider's range raises a ValueError and
        changes nothing), then set on the controls, which then show them, and run once."""
        new = {name: check_setting(name, x) for name, x in settings.items()}
        self._quiet = True
        try:
            for name, x in new.items():
                self.controls[SETTINGS.index(name)].value = x
        finally:
            self._quiet = False
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
        """Give the rule demo p and q at the first new position of this prompt (cached per setting), at
        the playground's temperature; when the playground is greedy (T = 0), at T = 1 instead: at T = 0 p
        and q are one-hot, a rejection emits the target's arg max under either rule, and there is nothing
        to compare."""
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
        note += (" (the playground is greedy, T = 0, but there p and q are one-hot and both rules emit the target's "
                 "arg max: nothing to compare, so the demo samples at T = 1)." if sampling["temperature"] == 0 else ".")
        self.rule_demo.seed = seed
        self.rule_demo.set_distributions(probs_from_logits(z_t, **warp), probs_from_logits(z_d, **warp),
                                         self.pair.tokenizer, note, temperature=t)

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


def runs_table(runs, c: float, v) -> str:
    """Playground runs (the dicts Playground.run() returns) as a small text table, one row per run: its
    gamma and temperature T; alpha per checked token; tau, the tokens per round; k, the draft passes per
    round; c and v in the loop (what the run paid); and three speedups over the target alone: measured;
    predicted by the cost model (Eq. 1's tau at the run's alpha over gamma c + v, with `c` and `v`
    measured in isolation: v a number or a dict gamma -> v) with its error against the measured one; and
    decomposed, the run's own tau over its own k c + v. A last line counts the runs whose c in the loop
    came out above `c`."""
    from .interactive import v_at

    runs = list(runs)
    if not runs:
        raise ValueError("runs is empty: pass the dicts Playground.run() returned, one per run.")
    head = (f"{'gamma':>5} {'T':>4} {'alpha':>5} {'tau':>5} {'k':>4} {'c loop':>6} {'v loop':>6} "
            f"{'measured':>8} {'predicted (error)':>17} {'decomposed':>10}")
    lines = [head]
    for s in runs:
        g, a = s["gamma"], s["alpha_checked"]
        if a == a:  # NaN: nothing was checked, nothing to predict from
            pred = expected_speedup(a, g, c, v_at(v, g))
            predicted = f"{pred:.2f}x ({pred / s['measured_speedup'] - 1:+.0%})"
        else:
            predicted = "n/a"
        lines.append(f"{g:>5} {s['temperature']:>4.1f} {a:>5.2f} {s['tokens_per_round']:>5.2f} "
                     f"{s['drafted_per_round']:>4.1f} {s['c']:>6.3f} {s['v']:>6.2f} {s['measured_speedup']:>7.2f}x "
                     f"{predicted:>17} {s['decomposed_speedup']:>9.2f}x")
    higher = sum(s["c"] > c for s in runs)
    lines.append(f"c in the loop above c in isolation ({c:.3f}) in {higher} of {len(runs)} runs")
    return "\n".join(lines)


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
