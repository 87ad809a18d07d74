"""Seeing LSH banding: an explorer with bands/rows sliders that redraws the S-curve and scores the
candidate pairs against known duplicates (chapter 1).

    >>> explorer = lsh_explorer(signatures, truth_pairs)   # signatures: {name: (num_perm,) uint32}

The candidates are computed by `llm_lib.curation.lsh_candidate_pairs` on the first bands*rows values of
each signature, not by a second formula. Displaying the explorer shows a static PNG of its initial state
(for the HTML book) and the live widget, which hides that snapshot in JupyterLab.
"""
from __future__ import annotations

import html
from itertools import combinations

import numpy as np

from llm_lib.display import figure_png, png_html, SnapshotExplorer
from llm_lib.curation import lsh_candidate_pairs, lsh_probability, lsh_threshold, pair_precision_recall

__all__ = ["lsh_scores", "lsh_figure", "LSHExplorer", "lsh_explorer"]

TRUE_COLOUR = "#0072b2"   # Okabe-Ito blue: true duplicate pairs
OTHER_COLOUR = "#e69f00"  # orange: every other pair


def lsh_scores(signatures, truth, bands: int, rows: int) -> dict:
    """Candidates of LSH with `bands` x `rows` (first bands*rows signature values) and their precision/recall."""
    sigs = {n: np.asarray(s)[:bands * rows] for n, s in signatures.items()}
    found = lsh_candidate_pairs(sigs, bands, rows)
    precision, recall = pair_precision_recall(found, truth)
    return {"candidates": len(found), "precision": precision, "recall": recall}


def _pair_similarities(signatures, truth):
    truth = {frozenset(p) for p in truth}
    names = list(signatures)
    sig = np.stack([np.asarray(signatures[n]) for n in names])          # (n_docs, num_perm)
    same, other = [], []
    for i, j in combinations(range(len(names)), 2):
        s = float(np.mean(sig[i] == sig[j]))
        (same if frozenset((names[i], names[j])) in truth else other).append(s)
    return np.array(same), np.array(other)


def lsh_figure(bands: int, rows: int, same: np.ndarray, other: np.ndarray, scores: dict | None = None):
    """The S-curve of `bands` x `rows` with the estimated similarities of true pairs and other pairs below it."""
    import matplotlib.pyplot as plt

    s = np.linspace(0, 1, 201)
    fig, ax = plt.subplots(figsize=(8, 3.6))
    ax.plot(s, lsh_probability(s, bands, rows), color="black", lw=2,
            label=f"P(candidate) = 1-(1-s^{rows})^{bands}")
    ax.axvline(lsh_threshold(bands, rows), color="grey", ls=":", lw=1)
    ax.scatter(other, np.full_like(other, -0.05), marker="|", s=80, color=OTHER_COLOUR, alpha=0.4,
               label=f"other pairs ({len(other)})")
    ax.scatter(same, np.full_like(same, -0.12), marker="|", s=80, color=TRUE_COLOUR,
               label=f"Folio/modern pairs ({len(same)})")
    ax.set_xlim(0, 1)
    ax.set_ylim(-0.18, 1.05)
    ax.set_xlabel("Jaccard similarity s (ticks: MinHash estimates of every pair of works)")
    ax.set_ylabel("probability of becoming a candidate")
    title = f"{bands} bands x {rows} rows = {bands * rows} values, steepest near s = {lsh_threshold(bands, rows):.2f}"
    if scores:
        title += f"\ncandidates {scores['candidates']}, precision {scores['precision']:.2f}, recall {scores['recall']:.2f}"
    ax.set_title(title, fontsize=10)
    ax.legend(loc="center right", fontsize=8)
    fig.tight_layout()
    return fig


class LSHExplorer(SnapshotExplorer):
    """Sliders for bands and rows; the S-curve, the pairs and the candidates' precision/recall follow."""

    def __init__(self, signatures, truth, bands: int = 64, rows: int = 2):
        import ipywidgets as widgets

        self.signatures, self.truth = signatures, list(truth)
        self.num_perm = min(len(np.asarray(s)) for s in signatures.values())
        if bands * rows > self.num_perm:
            raise ValueError(f"bands*rows = {bands * rows} exceeds the signature length {self.num_perm}")
        self.same, self.other = _pair_similarities(signatures, self.truth)
        self.initial = (bands, rows)
        self.bands = widgets.IntSlider(value=bands, min=1, max=self.num_perm, description="bands",
                                       continuous_update=False)
        self.rows = widgets.IntSlider(value=rows, min=1, max=32, description="rows", continuous_update=False)
        self.image = widgets.Image(format="png")
        self.readout = widgets.HTML()
        hide = self._hide_snapshot()
        self.widget = widgets.VBox([widgets.HBox([self.bands, self.rows]), self.image, self.readout, hide])
        self.bands.observe(self._update, names="value")
        self.rows.observe(self._update, names="value")
        self._update()

    def _render(self, bands, rows):
        if bands * rows > self.num_perm:
            return None, (f"<b>bands x rows = {bands * rows}</b> is more than the {self.num_perm} values of a "
                          "signature: lower one of them.")
        scores = lsh_scores(self.signatures, self.truth, bands, rows)
        text = (f"{scores['candidates']} candidate pairs; precision {scores['precision']:.2f}, "
                f"recall {scores['recall']:.2f} against the {len(self.truth)} known pairs (before the signature check)")
        return figure_png(lsh_figure(bands, rows, self.same, self.other, scores)), html.escape(text)

    def _update(self, change=None):
        png, text = self._render(self.bands.value, self.rows.value)
        if png is not None:
            self.image.value = png
        self.readout.value = f'<div style="font-size:0.9em">{text}</div>'

    def static_html(self) -> str:
        png, text = self._render(*self.initial)
        return self._snapshot(png_html(png, "LSH S-curve") + f'<div style="font-size:0.9em">{text}</div>',
                              "run the notebook to move the sliders.")


def lsh_explorer(signatures, truth, bands: int = 64, rows: int = 2) -> LSHExplorer:
    """Bands/rows sliders over MinHash `signatures` ({name: array}); `truth` lists the known duplicate pairs."""
    return LSHExplorer(signatures, truth, bands, rows)
