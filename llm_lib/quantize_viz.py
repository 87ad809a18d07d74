"""Seeing quantization: a weight matrix, the grid its values are rounded to, and the error that costs,
as a figure and as an interactive explorer for the book (chapter 14).

    >>> quantization_figure(w, bits=4, block_size=32)   # histogram + grid, a block up close, the error
    >>> quantization_explorer(w)                         # sliders for the bits and the block size

The numbers come from `llm_lib.quantize.quantize_tensor` (absmax, round to nearest), not from a second
formula. ipywidgets and matplotlib are imported inside the functions that need them.
"""
from __future__ import annotations

import html
import math

import torch

from llm_lib.display import figure_png, png_html, SnapshotExplorer
from llm_lib.quantize import quantize_tensor

__all__ = ["quantization_stats", "quantization_figure", "QuantizationExplorer", "quantization_explorer"]

BLOCK_CHOICES = {"whole tensor": "tensor", "per row (channel)": "channel", "blocks of 256": 256,
                 "blocks of 64": 64, "blocks of 32": 32, "blocks of 16": 16}
BLUE, ORANGE, VERMILLION, GREY = "#0072b2", "#e69f00", "#d55e00", "#777777"


def _quantize(w, bits, block_size):
    if block_size in ("tensor", "channel"):
        return quantize_tensor(w, bits=bits, granularity=block_size)
    return quantize_tensor(w, bits=bits, granularity="block", block_size=int(block_size))


def quantization_stats(w, bits, block_size):
    """Bits per weight (codes + one fp16 scale per group), RMS error, signal-to-noise ratio in dB.

    >>> quantization_stats(torch.randn(8, 64), bits=8, block_size=32)["bits_per_weight"]
    8.5
    """
    q = _quantize(w, bits, block_size)
    err = q.dequantize() - w
    rms_err = err.pow(2).mean().sqrt().item()
    rms_w = w.pow(2).mean().sqrt().item()
    return {"bits_per_weight": q.bits_per_weight, "rms_error": rms_err,
            "snr_db": 20 * math.log10(rms_w / rms_err) if rms_err > 0 else float("inf"), "quantized": q}


def quantization_figure(w, bits=4, block_size=32, show=64):
    """Three panels for weight matrix w (rows, cols): the histogram of all weights with the grid of the
    group holding the largest |w| (the outlier sets that group's step); the first `show` weights of
    row 0 and where they land; the histogram of the rounding error."""
    from matplotlib.figure import Figure

    stats = quantization_stats(w, bits, block_size)
    q = stats["quantized"]
    deq = q.dequantize()
    flat = w.flatten()
    worst = int(flat.abs().argmax())
    group_size = q.q.shape[1]
    g = worst // group_size
    levels = (torch.arange(-(2 ** (bits - 1) - 1), 2 ** (bits - 1)) * q.scale[g]).tolist()

    fig = Figure(figsize=(11, 3.4), dpi=100)
    ax1, ax2, ax3 = fig.subplots(1, 3)
    ax1.hist(flat.numpy(), bins=120, color=BLUE, alpha=0.8)
    for v in levels if len(levels) <= 64 else []:
        ax1.axvline(v, color=VERMILLION, lw=0.6, alpha=0.7)
    ax1.set_yscale("log")
    ax1.set_title(f"weights and the grid of the outlier's group\n({len(levels)} levels, step {q.scale[g].item():.4f})",
                  fontsize=9)
    ax1.set_xlabel("weight value")
    n = min(show, w.shape[-1])
    ax2.plot(range(n), w[0, :n].numpy(), "o", ms=3, color=BLUE, label="original")
    ax2.plot(range(n), deq[0, :n].numpy(), "_", ms=9, mew=2, color=ORANGE, label="after rounding")
    ax2.set_title(f"row 0, first {n} weights", fontsize=9)
    ax2.set_xlabel("column")
    ax2.legend(fontsize=8, loc="upper right")
    err = (deq - w).flatten().numpy()
    ax3.hist(err, bins=100, color=GREY)
    ax3.set_yscale("log")
    ax3.set_title(f"rounding error: RMS {stats['rms_error']:.2e}, SNR {stats['snr_db']:.1f} dB", fontsize=9)
    ax3.set_xlabel("dequantized - original")
    fig.tight_layout()
    return fig


def _readout_html(stats, bits, label):
    return ('<div style="font-size:0.9em;color:#111;margin:2px 0 0 4px">'
            f"{bits}-bit codes, scale per {html.escape(label)}: <b>{stats['bits_per_weight']:.3f} bits per weight</b> "
            f"with fp16 scales · RMS error <b>{stats['rms_error']:.2e}</b> · SNR <b>{stats['snr_db']:.1f} dB</b></div>")


class QuantizationExplorer(SnapshotExplorer):
    """Sliders for the code width and the group size; redrawn as they move. Displayed as a static PNG
    of the initial state (for the built book) plus the live widget, which hides the snapshot."""

    def __init__(self, w, bits=4, block="blocks of 32"):
        import ipywidgets as widgets

        if not isinstance(w, torch.Tensor) or w.dim() != 2:
            raise TypeError("w must be a 2-D float tensor (a weight matrix)")
        if block not in BLOCK_CHOICES:
            raise ValueError(f"block must be one of {list(BLOCK_CHOICES)}, got {block!r}")
        self.w, self.initial = w.detach().float(), (int(bits), block)
        self.bits = widgets.IntSlider(value=bits, min=2, max=8, description="bits", continuous_update=False)
        self.block = widgets.Dropdown(options=list(BLOCK_CHOICES), value=block, description="one scale per")
        self.image = widgets.Image(format="png")
        self.readout = widgets.HTML()
        hide = self._hide_snapshot()
        self.widget = widgets.VBox([widgets.HBox([self.bits, self.block]), self.image, self.readout, hide])
        self.bits.observe(self._update, names="value")
        self.block.observe(self._update, names="value")
        self._update()

    def _render(self, bits, block):
        stats = quantization_stats(self.w, bits, BLOCK_CHOICES[block])
        return figure_png(quantization_figure(self.w, bits, BLOCK_CHOICES[block])), _readout_html(stats, bits, block)

    def _update(self, change=None):
        self.image.value, self.readout.value = self._render(self.bits.value, self.block.value)

    def static_html(self):
        png, readout = self._render(*self.initial)
        return self._snapshot(png_html(png, "weights, quantization grid and error") + readout,
                              "run the notebook to change the bits and the block size.")


def quantization_explorer(w, bits=4, block="blocks of 32"):
    """Choose the bits and the block size for weight matrix w; see the histogram, grid and error."""
    return QuantizationExplorer(w, bits, block)
