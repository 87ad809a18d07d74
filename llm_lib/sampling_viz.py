"""Seeing decoding: the next-token distribution after temperature, top-k and top-p, as a figure and as
an interactive explorer that also samples a continuation from the model (chapter 8).

    >>> probs = filtered_probs(logits, temperature=0.8, top_k=50)   # (V,) sums to 1, zeros where filtered
    >>> sampling_explorer(model, tokenizer, "FIRST WITCH.\\nWhen shall we three meet again?\\n")

The filtered distribution is computed with `llm_lib.sampling`'s own filters, in the same order as
`sample_next` applies them, and the continuation comes from `llm_lib.sampling.generate`: the picture
shows what the library really does. IPython, ipywidgets and matplotlib are imported inside the
functions that need them.
"""
from __future__ import annotations

import html

import torch

from llm_lib.display import VISIBLE_WHITESPACE, figure_png, png_html, SnapshotExplorer
from llm_lib.sampling import generate, top_k_filter, top_p_filter

__all__ = ["filtered_probs", "entropy_nats", "token_label", "distribution_figure",
           "SamplingExplorer", "sampling_explorer"]

KEPT_COLOUR = "#0072b2"     # Okabe-Ito blue: probability after the filters
ORIGINAL_COLOUR = "#bbbbbb"  # grey: the model's own distribution at T = 1
DEFAULT_PROMPT = "FIRST WITCH.\nWhen shall we three meet again?\nIn thunder, lightning, or in"


def filtered_probs(logits, temperature=1.0, top_k=None, top_p=None):
    """The distribution `sample_next` draws from, for one row of logits (V,): temperature, then top-k,
    then top-p, then softmax; temperature 0 is greedy (all mass on the argmax).

    >>> filtered_probs(torch.tensor([2.0, 1.0, 0.0]), temperature=0)
    tensor([1., 0., 0.])
    """
    logits = torch.as_tensor(logits).float()
    if logits.dim() != 1:
        raise ValueError(f"logits must be one row of shape (V,), got shape {tuple(logits.shape)}")
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or temperature < 0:
        raise ValueError(f"temperature must be a number >= 0 (0 = greedy), got {temperature!r}")
    if temperature == 0:
        return torch.nn.functional.one_hot(logits.argmax(), logits.numel()).float()
    scaled = logits / temperature
    if top_k is not None:
        scaled = top_k_filter(scaled, top_k)
    if top_p is not None:
        scaled = top_p_filter(scaled, top_p)
    return torch.softmax(scaled, dim=-1)


def entropy_nats(probs):
    """Shannon entropy of a distribution in nats (0 log 0 counts as 0): `entropy_nats(torch.ones(4) / 4)` -> ln 4."""
    probs = torch.as_tensor(probs, dtype=torch.float64)
    terms = torch.where(probs > 0, -probs * torch.log(probs.clamp_min(1e-300)), torch.zeros_like(probs))
    return terms.sum().item()


def token_label(tokenizer, token_id):
    """A readable label for one token, whitespace made visible: a leading space is ·, a newline ↵."""
    text = tokenizer.decode([int(token_id)])
    shown = (VISIBLE_WHITESPACE.get(ch, ch if ch.isprintable() else ascii(ch)[1:-1]) for ch in text)
    return "".join(shown) or "∅"


def distribution_figure(logits, labels, temperature=1.0, top_k=None, top_p=None, n_show=20, title=None):
    """A matplotlib Figure: the `n_show` most likely tokens (at T = 1) as bars, grey for the model's own
    probabilities and blue for what is left after temperature / top-k / top-p. `labels[i]` names
    token i of the shown ones (a callable id -> str also works)."""
    from matplotlib.figure import Figure

    logits = torch.as_tensor(logits).float()
    original = torch.softmax(logits, dim=-1)
    shown = filtered_probs(logits, temperature, top_k, top_p)
    order = torch.argsort(logits, descending=True)[:n_show].tolist()
    names = [labels(i) if callable(labels) else labels[i] for i in order]
    kept = int((shown > 0).sum())

    fig = Figure(figsize=(11, 3.6), dpi=100)
    ax = fig.subplots()
    xs = range(len(order))
    ax.bar(xs, [original[i].item() for i in order], width=0.8, color="white", edgecolor=ORIGINAL_COLOUR,
           linewidth=1.5, hatch="///", label="model at T = 1 (no filter)")
    ax.bar(xs, [shown[i].item() for i in order], width=0.5, color=KEPT_COLOUR, label="after the settings")
    ax.set_xticks(list(xs), names, rotation=60, fontsize=9)
    ax.set_ylabel("probability of the next token")
    ax.set_ylim(0, min(1.0, max(0.05, 1.1 * max(original[order[0]].item(), shown.max().item()))))
    settings = f"T = {temperature:g}, top-k = {top_k if top_k else 'off'}, top-p = {top_p if top_p else 'off'}"
    ax.set_title(title or f"{settings}: {kept:,} of {logits.numel():,} tokens can be drawn, "
                          f"entropy {entropy_nats(shown):.2f} nats")
    ax.legend(loc="upper right", fontsize=9)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return fig


class SamplingExplorer(SnapshotExplorer):
    """Sliders for temperature, top-k, top-p and the seed; redrawn as they move: the filtered next-token
    distribution of `prompt` and a continuation sampled from the model with those settings.

    top_k = 0 and top_p = 1.0 on the sliders mean "off". Displaying it shows a static PNG of the initial
    state (for the built book, no kernel needed) and the live widget, which hides that snapshot.
    """

    def __init__(self, model, tokenizer, prompt=DEFAULT_PROMPT, temperature=1.0, top_k=0, top_p=1.0,
                 seed=0, n_new=40):
        import ipywidgets as widgets

        if not prompt:
            raise ValueError("prompt must be a non-empty string")
        self.model, self.tokenizer, self.prompt, self.n_new = model, tokenizer, prompt, n_new
        self.ids = tokenizer.encode(prompt)
        with torch.no_grad():
            self.logits = model(torch.tensor([self.ids[-model.config.context_length:]]))[0, -1].float()  # (V,)
        self.initial = dict(temperature=float(temperature), top_k=int(top_k), top_p=float(top_p), seed=int(seed))
        slider = dict(continuous_update=False, style={"description_width": "initial"},
                      layout=widgets.Layout(width="45%"))
        self.temperature = widgets.FloatSlider(value=temperature, min=0.0, max=3.0, step=0.05,
                                               description="temperature", **slider)
        self.top_k = widgets.IntSlider(value=top_k, min=0, max=200, description="top-k (0 = off)", **slider)
        self.top_p = widgets.FloatSlider(value=top_p, min=0.05, max=1.0, step=0.01, description="top-p (1 = off)",
                                         **slider)
        self.seed = widgets.IntSlider(value=seed, min=0, max=99, description="seed", **slider)
        self.image = widgets.Image(format="png")
        self.readout = widgets.HTML()
        hide_snapshot = self._hide_snapshot()
        controls = widgets.VBox([widgets.HBox([self.temperature, self.top_k]), widgets.HBox([self.top_p, self.seed])])
        self.widget = widgets.VBox([controls, self.image, self.readout, hide_snapshot])
        for control in (self.temperature, self.top_k, self.top_p, self.seed):
            control.observe(self._update, names="value")
        self._update()

    @staticmethod
    def _filters(top_k, top_p):
        return (int(top_k) if top_k else None), (float(top_p) if top_p < 1.0 else None)

    def sample(self, temperature, top_k, top_p, seed):
        """The continuation (text) that generate draws with these settings and this seed."""
        k, p = self._filters(top_k, top_p)
        out = generate(self.model, self.ids, self.n_new, temperature=temperature, top_k=k, top_p=p,
                       generator=torch.Generator().manual_seed(int(seed)))
        return self.tokenizer.decode(out[len(self.ids):])

    def _png(self, temperature, top_k, top_p):
        k, p = self._filters(top_k, top_p)
        fig = distribution_figure(self.logits, lambda i: token_label(self.tokenizer, i), temperature, k, p)
        return figure_png(fig)

    def _readout_html(self, temperature, top_k, top_p, seed):
        continuation = self.sample(temperature, top_k, top_p, seed)
        style = "white-space:pre-wrap;font-family:monospace;font-size:0.85em;margin:2px 0 0 4px;color:#111"
        return (f'<div style="{style}"><span style="color:#666">{html.escape(self.prompt)}</span>'
                f'<b style="color:{KEPT_COLOUR}">{html.escape(continuation)}</b></div>')

    def _update(self, change=None):
        values = (self.temperature.value, self.top_k.value, self.top_p.value)
        self.image.value = self._png(*values)
        self.readout.value = self._readout_html(*values, self.seed.value)

    def static_html(self):
        """The explorer's initial state as plain HTML with an embedded PNG (no kernel needed)."""
        s = self.initial
        image = png_html(self._png(s["temperature"], s["top_k"], s["top_p"]),
                         f'next-token distribution at temperature {s["temperature"]:g}')
        settings = (f'temperature {s["temperature"]:g}, top-k {s["top_k"] or "off"}, '
                    f'top-p {s["top_p"] if s["top_p"] < 1 else "off"}, seed {s["seed"]}')
        return self._snapshot(image + self._readout_html(s["temperature"], s["top_k"], s["top_p"], s["seed"]),
                              f"{settings}; run the notebook to move the sliders.")


def sampling_explorer(model, tokenizer, prompt=DEFAULT_PROMPT, temperature=1.0, top_k=0, top_p=1.0, seed=0,
                      n_new=40) -> SamplingExplorer:
    """Sliders for temperature / top-k / top-p / seed over the next-token distribution of `prompt`, with a
    continuation sampled from `model`: `sampling_explorer(model, tok, "ROMEO.\\n")`."""
    return SamplingExplorer(model, tokenizer, prompt, temperature, top_k, top_p, seed, n_new)
