"""Seeing the language-modelling loss: what −log p and its gradient do as the probability of the
correct token moves, as a figure and as an interactive explorer for the book (chapter 6).

    >>> probs = spread_probability(0.25, [4, 3, 2, 1])   # [0.25, 0.3, 0.225, 0.15, 0.075]
    >>> loss_explorer(p=0.25)                              # a slider for p, the loss and its gradient

The loss and the gradient drawn are computed by `llm_lib.losses.cross_entropy` and autograd, not by
a second formula: the picture shows what the library really does. IPython, ipywidgets and
matplotlib are imported inside the functions that need them.
"""
from __future__ import annotations

import html
import math

import torch

from llm_lib.display import figure_png, png_html, SnapshotExplorer
from llm_lib.losses import cross_entropy

__all__ = ["spread_probability", "loss_and_gradient", "loss_figure", "LossExplorer", "loss_explorer"]

# A five-token toy vocabulary: the model has read "To be, or not to" and the correct next token is " be".
# The weights say how the probability the model does not give to " be" is shared among the others.
DEFAULT_TOKENS = (" be", " go", " die", " sleep", " see")
DEFAULT_WEIGHTS = (4.0, 3.0, 2.0, 1.0)

# Okabe-Ito colours (readable with the common colour-vision deficiencies, distinct in greyscale).
CORRECT_COLOUR = "#0072b2"  # blue: the correct token
OTHER_COLOUR = "#e69f00"    # orange: every other token
CURVE_COLOUR = "#000000"
TANGENT_COLOUR = "#d55e00"  # vermillion


def spread_probability(p: float, weights) -> list[float]:
    """Probabilities of a toy vocabulary: the correct token gets `p`, the others share 1 − p in
    proportion to `weights`: `spread_probability(0.5, [1, 1])` -> [0.5, 0.25, 0.25]."""
    p = float(p)
    if not 0.0 < p <= 1.0:
        raise ValueError(f"p is the probability of the correct token, in (0, 1]; got {p}")
    weights = [float(w) for w in weights]
    if not weights or any(w <= 0 for w in weights):
        raise ValueError(f"weights must be a non-empty list of positive numbers; got {weights}")
    total = sum(weights)
    return [p] + [(1.0 - p) * w / total for w in weights]


def loss_and_gradient(probs, target: int = 0) -> tuple[float, list[float]]:
    """The cross-entropy of a model whose softmax is `probs` when the correct token is `target`, and
    its gradient with respect to the logits (probs − one-hot), both from `llm_lib.losses` + autograd:
    `loss_and_gradient([0.5, 0.25, 0.25])` -> (0.693..., [-0.5, 0.25, 0.25])."""
    probs = torch.as_tensor(probs, dtype=torch.float64)
    if probs.dim() != 1 or not 0 <= target < len(probs):
        raise ValueError(f"probs must be one distribution (a 1-D list) and target an index into it; "
                         f"got shape {tuple(probs.shape)} and target {target}")
    # log(probs) are logits whose softmax is probs (softmax ignores the constant log(sum) = 0).
    logits = torch.log(probs).clone().requires_grad_(True)  # (V,)
    loss = cross_entropy(logits[None], torch.tensor([target]))
    loss.backward()
    return loss.item(), logits.grad.tolist()


def loss_figure(p: float, tokens=DEFAULT_TOKENS, weights=DEFAULT_WEIGHTS):
    """A matplotlib Figure with three panels for a correct-token probability `p`: the loss −ln p
    against p (with its tangent, slope −1/p), the model's probabilities, and the gradient of the
    loss with respect to each logit. Uses matplotlib's object API, so no figure pops up by itself."""
    from matplotlib.figure import Figure

    if len(tokens) != len(weights) + 1:
        raise ValueError(f"need one weight per wrong token: {len(tokens)} tokens, {len(weights)} weights")
    probs = spread_probability(p, weights)
    loss, grad = loss_and_gradient(probs, target=0)
    colours = [CORRECT_COLOUR] + [OTHER_COLOUR] * (len(tokens) - 1)
    labels = [repr(t)[1:-1].replace(" ", "\u00b7") for t in tokens]  # · marks the leading space

    fig = Figure(figsize=(12, 3.7), dpi=100)
    curve, bars, grads = fig.subplots(1, 3, gridspec_kw={"width_ratios": [1.25, 1, 1]})

    xs = [i / 1000 for i in range(4, 1001)]
    curve.plot(xs, [-math.log(x) for x in xs], color=CURVE_COLOUR, lw=1.5, label="loss = −ln p")
    slope = -1.0 / p
    lo, hi = max(0.004, p - 0.25), min(1.0, p + 0.25)
    curve.plot([lo, hi], [loss + slope * (lo - p), loss + slope * (hi - p)], "--", color=TANGENT_COLOUR, lw=1.5,
               label=f"tangent: slope −1/p = {slope:.2f}".replace("-", "−"))
    curve.plot([p], [loss], "o", color=CORRECT_COLOUR, ms=9, zorder=3)
    curve.annotate(f"p = {p:.3f}\nloss = {loss:.2f} nats = {loss / math.log(2):.2f} bits", (p, loss),
                   textcoords="offset points", xytext=(12, 12), fontsize=9)
    curve.set_xlim(0, 1.02)
    curve.set_ylim(0, 5.6)
    curve.set_xlabel("p = probability of the correct token")
    curve.set_ylabel("loss (nats)")
    curve.set_title("The loss: −ln p")
    curve.grid(alpha=0.3)
    curve.legend(loc="upper right", fontsize=8)

    drawn = bars.bar(labels, probs, color=colours, edgecolor="black", linewidth=0.6)
    bars.bar_label(drawn, fmt="%.2f", fontsize=8)
    bars.set_ylim(0, 1.12)
    bars.set_ylabel("probability (softmax)")
    bars.set_title("What the model predicts after “to”")
    bars.tick_params(axis="x", labelsize=9)

    drawn = grads.bar(labels, grad, color=colours, edgecolor="black", linewidth=0.6)
    grads.bar_label(drawn, fmt="%+.2f", fontsize=8)
    grads.axhline(0, color="black", lw=0.8)
    grads.set_ylim(-1.15, 1.15)
    grads.set_ylabel(r"$\partial\,\mathrm{loss}\,/\,\partial z_j = p_j - [j\ \mathrm{correct}]$")
    grads.set_title("Gradient on each logit")
    grads.tick_params(axis="x", labelsize=9)
    grads.text(0.98, 0.97, "a step of gradient descent\nmoves each logit against its bar",
               transform=grads.transAxes, ha="right", va="top", fontsize=8, color="#333333")
    fig.tight_layout()
    return fig


def _readout_html(p: float, tokens, weights) -> str:
    probs = spread_probability(p, weights)
    loss, grad = loss_and_gradient(probs, target=0)
    return (
        '<div style="font-size:0.9em;color:#111;margin:2px 0 0 4px">'
        f"p({html.escape(repr(tokens[0]))}) = <b>{p:.3f}</b> · loss −ln p = <b>{loss:.3f} nats</b> "
        f"= {loss / math.log(2):.3f} bits · as unsure as a uniform choice among <b>{1 / p:.1f}</b> tokens · "
        f"gradient on the correct logit p − 1 = <b>{grad[0]:+.3f}</b>, on the others "
        f"{', '.join(f'{g:+.3f}' for g in grad[1:])}</div>"
    )


class LossExplorer(SnapshotExplorer):
    """A slider for the probability of the correct token and, redrawn as it moves, the loss −ln p, the
    model's probabilities and the gradient on every logit.

    Displaying it shows two outputs: a static PNG of the initial state (what a reader of the built book
    sees without a kernel) and the live widget, which carries a style rule that hides the snapshot, so a
    JupyterLab user sees the explorer only once.
    """

    def __init__(self, p: float = 0.25, tokens=DEFAULT_TOKENS, weights=DEFAULT_WEIGHTS):
        import ipywidgets as widgets

        spread_probability(p, weights)  # validates p and weights
        if len(tokens) != len(weights) + 1:
            raise ValueError(f"need one weight per wrong token: {len(tokens)} tokens, {len(weights)} weights")
        self.tokens, self.weights, self.initial_p = tuple(tokens), tuple(weights), float(p)
        self.slider = widgets.FloatSlider(
            value=self.initial_p, min=0.005, max=1.0, step=0.005, readout_format=".3f", continuous_update=False,
            description=f"p({tokens[0]!r})", style={"description_width": "initial"},
            layout=widgets.Layout(width="60%"),
        )
        self.image = widgets.Image(format="png")
        self.readout = widgets.HTML()
        hide_snapshot = self._hide_snapshot()
        self.widget = widgets.VBox([self.slider, self.image, self.readout, hide_snapshot])
        self.slider.observe(self._update, names="value")
        self._update()

    def _png(self, p: float) -> bytes:
        return figure_png(loss_figure(p, self.tokens, self.weights))

    def _update(self, change=None) -> None:
        p = self.slider.value
        self.image.value = self._png(p)
        self.readout.value = _readout_html(p, self.tokens, self.weights)

    def static_html(self, p: float | None = None) -> str:
        """The explorer as plain HTML with an embedded PNG (no kernel needed), at `p` or the initial p."""
        p = self.initial_p if p is None else float(p)
        image = png_html(self._png(p), f"loss, probabilities and gradient at p = {p:.3f}")
        return self._snapshot(image + _readout_html(p, self.tokens, self.weights),
                              "run the notebook to drag the probability yourself.")


def loss_explorer(p: float = 0.25, tokens=DEFAULT_TOKENS, weights=DEFAULT_WEIGHTS) -> LossExplorer:
    """Drag the probability of the correct token and watch the loss and its gradient:
    `loss_explorer(p=0.25)`; `tokens[0]` is the correct token, `weights` share 1 − p among the rest."""
    return LossExplorer(p, tokens, weights)
