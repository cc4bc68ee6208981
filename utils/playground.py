"""The interactive playground of notebook 04: move gamma and temperature, watch the rounds.

    pg = Playground(pair, prompts)
    pg.widget()                     # in a notebook: sliders + coloured tokens + live statistics
    pg.gamma.value = 6              # the same from code (this is how the tests drive it)
    pg.last                         # statistics of the latest run (alpha, tau, speedups, counts)

`run()` is the callback; it needs no browser and is unit-tested.
"""

from __future__ import annotations

import html
import statistics

import torch

from .decoding import autoregressive_generate
from .render import count_kinds, rounds_html
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
    def __init__(self, pair, prompts: list[str], max_new_tokens: int = 48, seed: int = 0):
        import ipywidgets as w

        if isinstance(prompts, str):
            prompts = [prompts]
        if not prompts or not all(isinstance(t, str) and t for t in prompts):
            raise ValueError(
                f"prompts must be a non-empty list of non-empty strings (got {prompts!r}); "
                'e.g. utils.models.load_prompts("workshop").'
            )
        self.pair = pair
        self._baseline: dict = {}
        style = {"description_width": "110px"}
        lay = w.Layout(width="420px")
        self.prompt = w.Combobox(value=prompts[0], options=prompts, description="prompt", style=style, layout=lay)
        self.gamma = w.IntSlider(4, min=1, max=10, description="gamma", style=style, layout=lay, continuous_update=False)
        self.temperature = w.FloatSlider(
            0.0, min=0.0, max=1.5, step=0.1, description="temperature", style=style, layout=lay, continuous_update=False
        )
        self.max_new_tokens = w.IntSlider(
            max_new_tokens, min=8, max=128, step=8, description="max new tokens", style=style, layout=lay,
            continuous_update=False,
        )
        self.seed = w.IntText(seed, description="seed", style=style, layout=w.Layout(width="220px"))
        self.html = w.HTML()
        self.stats = w.HTML()
        self.last: dict = {}
        for c in self.controls:
            c.observe(lambda _change: self.run(), names="value")

    @property
    def controls(self):
        return [self.prompt, self.gamma, self.temperature, self.max_new_tokens, self.seed]

    def widget(self):
        import ipywidgets as w

        self.run()
        return w.VBox([w.HBox([w.VBox(self.controls[:3]), w.VBox(self.controls[3:])]), self.html, self.stats])

    def _target_alone(self, ids, n) -> list[float]:
        """Per-step times of the target alone on this prompt (cached per prompt and length)."""
        key = (tuple(ids[0].tolist()), n)
        if key not in self._baseline:
            self._baseline[key] = autoregressive_generate(self.pair.target, ids, n).step_times
        return self._baseline[key]

    def run(self) -> dict:
        """Generate with the current settings; update the HTML views; return the statistics."""
        pair, gamma, temp = self.pair, self.gamma.value, float(self.temperature.value)
        ids = pair.tokenizer(self.prompt.value, return_tensors="pt").input_ids.to(pair.device)
        gen = torch.Generator(device=pair.device).manual_seed(int(self.seed.value))
        out = speculative_generate(
            pair.target, pair.draft, ids, max_new_tokens=self.max_new_tokens.value, gamma=gamma,
            temperature=temp, generator=gen, eos_token_id=pair.tokenizer.eos_token_id,
        )
        # Both sides include one prefill: the speculative run's first passes read the prompt too.
        ar_seconds, step = target_alone_seconds(self._target_alone(ids, self.max_new_tokens.value), max(1, out.new_tokens))
        alpha, (c, v) = out.acceptance_rate, loop_costs(out, step)
        checked = out.checked_acceptance_rate
        alpha_ = 0.0 if checked != checked else checked  # NaN when nothing was checked
        self.last = dict(
            gamma=gamma,
            temperature=temp,
            alpha=alpha,
            alpha_checked=checked,
            tokens_per_round=out.tokens_per_round,
            c=c,
            v=v,
            measured_speedup=ar_seconds / out.total_time,
            predicted_speedup=expected_speedup(alpha_, gamma, c, v),
            optimal_gamma=optimal_gamma(alpha_, c, max_gamma=10, v=v),
            counts=count_kinds(out.rounds),
            new_tokens=out.new_tokens,
            rounds=len(out.rounds),
        )
        self.html.value = rounds_html(out.rounds, pair.tokenizer, prompt=self.prompt.value)
        self.stats.value = self._stats_html()
        return self.last

    def _stats_html(self) -> str:
        s = self.last
        rows = [
            ("acceptance rate alpha (accepted / drafted)", f"{s['alpha']:.2f}"),
            ("alpha per checked token (cost model)", f"{s['alpha_checked']:.2f}"),
            ("tokens per round tau", f"{s['tokens_per_round']:.2f}"),
            ("cost ratio c (draft step / target step, this run)", f"{s['c']:.3f}"),
            ("verify cost v (target pass / target step, this run)", f"{s['v']:.2f}"),
            ("measured speedup vs target alone", f"{s['measured_speedup']:.2f}x"),
            ("cost model (Thm 3.8 with v) predicts", f"{s['predicted_speedup']:.2f}x"),
            ("optimal gamma for this alpha, c and v", str(s["optimal_gamma"])),
            ("rounds / new tokens", f"{s['rounds']} / {s['new_tokens']}"),
        ]
        cells = "".join(f"<tr><td>{html.escape(k)}</td><td><b>{v}</b></td></tr>" for k, v in rows)
        return f'<table class="specdec-stats" style="font-family:sans-serif;font-size:13px">{cells}</table>'


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
