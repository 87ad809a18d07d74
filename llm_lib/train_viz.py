"""Seeing the learning-rate schedule: warmup then cosine decay, as a figure and as an explorer with
sliders for the book (chapter 7).

    >>> stats = schedule_stats(TrainConfig(max_iters=5, warmup_iters=2, max_lr=1.0, min_lr=0.0))
    >>> stats["mean_lr"], stats["frac_above_half"]   # learning rates 0, 0.5, 1, 0.5, 0
    (0.4, 0.2)
    >>> explorer = schedule_explorer()   # sliders for warmup, max_lr and min_lr, redrawn as they move

The curve drawn is `llm_lib.train.lr_schedule`, the very list of learning rates `train()` uses, not
a second formula. IPython, ipywidgets and matplotlib are imported inside the functions that need them.
"""
from __future__ import annotations


from llm_lib.display import figure_png, png_html, SnapshotExplorer
from llm_lib.train import TrainConfig, lr_schedule

__all__ = ["schedule_stats", "schedule_figure", "ScheduleExplorer", "schedule_explorer"]

# Okabe-Ito colours (readable with the common colour-vision deficiencies).
CURVE_COLOUR = "#0072b2"     # blue: the schedule being explored
REFERENCE_COLOUR = "#999999"  # grey: the course base model's schedule
WARMUP_COLOUR = "#e69f00"    # orange: the warmup region

# The course base model's schedule (llm_lib.pipeline.RECIPES["base"]["train"]), the explorer's default.
BASE_SCHEDULE = dict(max_iters=500, warmup_iters=40, max_lr=3e-3, min_lr=3e-4)


def _config(max_iters, warmup_iters, max_lr, min_lr) -> TrainConfig:
    if not 0 <= warmup_iters < max_iters - 1:
        raise ValueError(f"warmup_iters must be in [0, max_iters - 1); got {warmup_iters} with max_iters={max_iters}")
    if not 0.0 <= min_lr <= max_lr:
        raise ValueError(f"need 0 <= min_lr <= max_lr; got min_lr={min_lr}, max_lr={max_lr}")
    return TrainConfig(max_iters=int(max_iters), warmup_iters=int(warmup_iters), max_lr=float(max_lr),
                       min_lr=float(min_lr))


def schedule_stats(config: TrainConfig) -> dict:
    """A few numbers that summarise a schedule: its peak, its last value, the mean learning rate and the
    fraction of the steps spent above half the peak (the module docstring has an example)."""
    lrs = lr_schedule(config)
    peak = max(lrs)
    return {"peak_lr": peak, "final_lr": lrs[-1], "mean_lr": sum(lrs) / len(lrs),
            "frac_above_half": sum(lr > peak / 2 for lr in lrs) / len(lrs) if peak > 0 else 0.0}


def schedule_figure(max_lr=3e-3, min_lr=3e-4, warmup_iters=40, max_iters=500, reference=BASE_SCHEDULE):
    """A matplotlib Figure of the learning rate at every step (linear warmup, cosine decay to min_lr at the
    last step), with `reference` (a dict of the same four settings, or None) drawn in grey behind it.
    Uses matplotlib's object API, so no figure pops up by itself."""
    from matplotlib.figure import Figure

    config = _config(max_iters, warmup_iters, max_lr, min_lr)
    lrs = lr_schedule(config)
    fig = Figure(figsize=(8, 3.4), dpi=100)
    ax = fig.add_subplot()
    if reference is not None:
        ref = lr_schedule(_config(**reference))
        ax.plot(range(len(ref)), ref, color=REFERENCE_COLOUR, lw=1.5, ls="--",
                label=f"course base model (warmup {reference['warmup_iters']}, max {reference['max_lr']:g}, "
                      f"min {reference['min_lr']:g})")
    if warmup_iters:
        ax.axvspan(0, warmup_iters, color=WARMUP_COLOUR, alpha=0.15, lw=0, label=f"warmup: {warmup_iters} steps")
    ax.plot(range(len(lrs)), lrs, color=CURVE_COLOUR, lw=2, label="this schedule")
    ax.axhline(min_lr, color=CURVE_COLOUR, lw=0.8, ls=":")
    ax.set_xlim(0, max_iters)
    ax.set_ylim(0, max(max_lr, reference["max_lr"] if reference else 0) * 1.1 or 1e-3)
    ax.set_xlabel("step")
    ax.set_ylabel("learning rate")
    ax.set_title("Linear warmup, then cosine decay to min_lr")
    ax.ticklabel_format(axis="y", style="sci", scilimits=(-2, 2))
    ax.grid(alpha=0.3)
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    return fig


def _readout_html(config: TrainConfig) -> str:
    s = schedule_stats(config)
    return ('<div style="font-size:0.9em;color:#111;margin:2px 0 0 4px">'
            f"peak <b>{s['peak_lr']:.2e}</b> at step {config.warmup_iters} · last step <b>{s['final_lr']:.2e}</b> · "
            f"mean learning rate <b>{s['mean_lr']:.2e}</b> · <b>{100 * s['frac_above_half']:.0f}%</b> of the "
            f"{config.max_iters} steps above half the peak</div>")


class ScheduleExplorer(SnapshotExplorer):
    """Sliders for the warmup length, the peak and the floor of the learning rate; the schedule is redrawn
    as they move, with the course base model's schedule behind it for comparison.

    Displaying it shows two outputs: a static PNG of the initial state (what a reader of the built book
    sees without a kernel) and the live widget, which carries a style rule that hides the snapshot, so a
    JupyterLab user sees the explorer only once.
    """

    def __init__(self, max_lr=3e-3, min_lr=3e-4, warmup_iters=40, max_iters=500):
        import ipywidgets as widgets

        self.initial = _config(max_iters, warmup_iters, max_lr, min_lr)
        self.max_iters = int(max_iters)
        style, layout = {"description_width": "initial"}, widgets.Layout(width="60%")
        self.warmup = widgets.IntSlider(value=warmup_iters, min=0, max=self.max_iters // 2, step=5,
                                        description="warmup_iters", continuous_update=False, style=style, layout=layout)
        self.max_lr = widgets.FloatLogSlider(value=max_lr, base=10, min=-4, max=-1.5, step=0.05, readout_format=".1e",
                                             description="max_lr", continuous_update=False, style=style, layout=layout)
        self.min_ratio = widgets.FloatSlider(value=min_lr / max_lr if max_lr else 0.0, min=0.0, max=1.0, step=0.05,
                                             description="min_lr / max_lr", continuous_update=False, style=style,
                                             layout=layout)
        self.image = widgets.Image(format="png")
        self.readout = widgets.HTML()
        hide_snapshot = self._hide_snapshot()
        self.widget = widgets.VBox([self.warmup, self.max_lr, self.min_ratio, self.image, self.readout, hide_snapshot])
        for slider in (self.warmup, self.max_lr, self.min_ratio):
            slider.observe(self._update, names="value")
        self._update()

    def config(self) -> TrainConfig:
        """The schedule the sliders describe now."""
        return _config(self.max_iters, self.warmup.value, self.max_lr.value, self.max_lr.value * self.min_ratio.value)

    @staticmethod
    def _png(config: TrainConfig) -> bytes:
        return figure_png(schedule_figure(config.max_lr, config.min_lr, config.warmup_iters, config.max_iters))

    def _update(self, change=None) -> None:
        config = self.config()
        self.image.value = self._png(config)
        self.readout.value = _readout_html(config)

    def static_html(self) -> str:
        """The explorer in its initial state as plain HTML with an embedded PNG (no kernel needed)."""
        alt = (f"learning-rate schedule: warmup {self.initial.warmup_iters} steps, "
               f"max_lr {self.initial.max_lr:g}, min_lr {self.initial.min_lr:g}")
        return self._snapshot(png_html(self._png(self.initial), alt) + _readout_html(self.initial),
                              "run the notebook to move the sliders yourself.")


def schedule_explorer(max_lr=3e-3, min_lr=3e-4, warmup_iters=40, max_iters=500) -> ScheduleExplorer:
    """Move the warmup, peak and floor of the learning rate and watch the schedule `train()` would use:
    `schedule_explorer()` starts from the course base model's settings."""
    return ScheduleExplorer(max_lr, min_lr, warmup_iters, max_iters)
