"""Looking at what a trained GPT attends to: every layer's and head's attention weights for a text,
a heatmap helper for figures, and an interactive explorer for the book (chapter 4).

    >>> maps = attention_maps(model, ids)           # (n_layer, n_head, T, T), rows sum to 1
    >>> attention_explorer(model, tokenizer, "The cat sat on the mat because it was tired.")

The weights are recomputed from what each attention layer really receives (its normalised input,
captured with a forward pre-hook), with the same code that computes them inside the model
(`llm_lib.attention.attention_weights`). The model itself is not changed, so this works whether it
runs the explicit formula or the fused kernel, which never materialises the weights.
IPython, ipywidgets and matplotlib are imported inside the functions that need them.
"""
from __future__ import annotations

import html

import torch

from llm_lib.attention import attention_weights, causal_mask, split_heads
from llm_lib.display import SnapshotExplorer

__all__ = ["attention_maps", "token_labels", "plot_attention", "AttentionExplorer", "attention_explorer"]

DEFAULT_EXPLORER_TEXT = "The cat sat on the mat because it was tired."
MAX_EXPLORER_TOKENS = 48  # a T x T table of cells stays readable up to about this size
COLOUR_MAP = "Blues"      # one hue, light to dark: reads the same with any colour vision and in greyscale


def _as_ids(idx):
    if isinstance(idx, torch.Tensor):
        if idx.dtype not in (torch.int64, torch.int32):
            raise TypeError(f"idx must hold token ids (an integer tensor), got dtype {idx.dtype}")
        return idx
    if isinstance(idx, (list, tuple)) and all(isinstance(i, int) for i in idx):
        return torch.tensor(idx, dtype=torch.long)
    raise TypeError(f"idx must be a list of token ids or an integer tensor, got {type(idx).__name__}")


def attention_maps(model, idx):
    """Attention weights of every layer and head of `model` for the token ids `idx`.

    >>> attention_maps(model, [464, 3797, 3332]).shape   # a 2-layer, 4-head GPT
    torch.Size([2, 4, 3, 3])

    idx: T ids (list or 1-D tensor) -> (n_layer, n_head, T, T); a (B, T) tensor -> (B, n_layer, n_head, T, T).
    `model` is an llm_lib GPT, or any module whose `.blocks[i].attn` is a MultiHeadAttention that its
    forward calls as `attn(x, kv_cache=..., rope=...)`. Entry [l, h, i, j] is how much query position
    i of head h in layer l takes from key position j; a causal layer gives 0 for every j > i.
    """
    ids = _as_ids(idx)
    single = ids.dim() == 1
    if single:
        ids = ids[None]
    if ids.dim() != 2 or ids.shape[1] == 0:
        raise ValueError(f"idx must be T >= 1 ids or a (B, T) tensor, got shape {tuple(ids.shape)}")
    blocks = getattr(model, "blocks", None)
    if blocks is None or not all(hasattr(block, "attn") for block in blocks):
        raise TypeError("attention_maps needs a GPT-like model whose .blocks[i].attn is a MultiHeadAttention")

    maps = [None] * len(blocks)

    def capture(layer):
        def hook(attn, args, kwargs):
            x = args[0] if args else kwargs["x"]  # (B, T, d_model): the normalised block input
            q, k, _ = attn.qkv(x).split(attn.d_model, dim=-1)
            q, k = split_heads(q, attn.n_heads), split_heads(k, attn.n_heads)  # (B, H, T, d_k)
            rope = kwargs.get("rope")
            if rope is not None:  # Llama-style models rotate q and k by position inside attention
                q, k = rope(q, 0), rope(k, 0)
            T = x.shape[1]
            mask = causal_mask(T, x.device) if attn.causal else None
            maps[layer] = attention_weights(q, k, mask)  # (B, H, T, T)
        return hook

    handles = [block.attn.register_forward_pre_hook(capture(i), with_kwargs=True) for i, block in enumerate(blocks)]
    was_training = model.training
    try:
        model.eval()  # dropout off: the weights a user of the trained model would see
        with torch.no_grad():
            model(ids.to(next(model.parameters()).device))
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    stacked = torch.stack(maps, dim=1).float().cpu()  # (B, n_layer, H, T, T)
    return stacked[0] if single else stacked


def token_labels(tokenizer, ids):
    """Readable labels for token ids, a visible '·' for each space: token_labels(tok, ids) -> ['The', '·cat', ...]."""
    from llm_lib.display import VISIBLE_WHITESPACE

    labels = []
    for i in ids:
        if hasattr(tokenizer, "decode_single_token_bytes"):  # tiktoken
            piece = tokenizer.decode_single_token_bytes(i)
        else:
            piece = tokenizer.decode_bytes([i]) if hasattr(tokenizer, "decode_bytes") else tokenizer.decode([i]).encode()
        text = piece.decode("utf-8", errors="replace")
        labels.append("".join(VISIBLE_WHITESPACE.get(ch, ch) for ch in text))
    return labels


def plot_attention(ax, weights, labels=None, title=None, mask=None, colorbar=False, vmax=None, fontsize=8,
                   query_labels=None):
    """Draw a (T_q, T_k) matrix of attention weights on a matplotlib axis as a heatmap.

    >>> plot_attention(ax, maps[0, 0], token_labels(tok, ids), title="layer 0, head 0")

    Rows are queries, columns keys; `labels` name the keys, and the queries too unless `query_labels`
    is given (cross-attention, where queries and keys come from different sequences). Where `mask` (boolean, True = may attend) is False the cell is
    drawn hatched grey rather than as a weight of 0, so "not allowed" and "allowed but ignored"
    look different. Returns the image, for a shared colour bar.
    """
    import matplotlib.pyplot as plt
    import numpy as np

    w = np.asarray(weights.detach().cpu() if isinstance(weights, torch.Tensor) else weights, dtype=float)
    shown = w.copy()
    if mask is not None:
        m = np.asarray(mask.cpu() if isinstance(mask, torch.Tensor) else mask, dtype=bool)
        m = np.broadcast_to(m, w.shape)
        shown = np.ma.masked_array(w, mask=~m)
        ax.add_patch(plt.Rectangle((-0.5, -0.5), w.shape[1], w.shape[0], facecolor="#e6e6e6",
                                   edgecolor="#aaaaaa", hatch="///", linewidth=0, zorder=0))
    image = ax.imshow(shown, cmap=COLOUR_MAP, vmin=0, vmax=vmax if vmax is not None else max(float(w.max()), 1e-9),
                      interpolation="nearest", zorder=1)
    query_labels = labels if query_labels is None else query_labels
    if labels is not None:
        ax.set_xticks(range(len(labels)), labels, rotation=90, fontsize=fontsize)
    else:
        ax.set_xticks([])
    if query_labels is not None:
        ax.set_yticks(range(len(query_labels)), query_labels, fontsize=fontsize)
    else:
        ax.set_yticks([])
    ax.set_xlabel("key (attended to)", fontsize=fontsize + 1)
    ax.set_ylabel("query (attending)", fontsize=fontsize + 1)
    if title:
        ax.set_title(title, fontsize=fontsize + 2)
    if colorbar:
        ax.figure.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="attention weight")
    return image


# ----------------------------------------------------------------------------------------------------
# The explorer


def _colour(weight: float) -> tuple[str, str]:
    """Background and text colour for a weight in [0, 1], on a square-root scale: a weight of 0.1
    is already clearly tinted, so a head that spreads its attention thinly does not look blank."""
    from matplotlib import colormaps
    from matplotlib.colors import to_hex

    shade = min(max(weight, 0.0), 1.0) ** 0.5
    background = to_hex(colormaps[COLOUR_MAP](0.03 + 0.97 * shade))
    return background, ("#ffffff" if shade > 0.6 else "#111111")


def _sentence_html(labels, row, query):
    """The tokens in a line, each shaded by the weight the query puts on it; the query is outlined."""
    spans = []
    for j, label in enumerate(labels):
        if j > query and row[j] == 0:
            style = "color:#999;border:1px dashed #ccc;background:#fafafa"
            tip = "in the future of the query: masked"
        else:
            background, text = _colour(float(row[j]))
            style = f"color:{text};background:{background};border:1px solid #9ecae1"
            tip = f"weight {float(row[j]):.3f}"
        if j == query:
            style += ";outline:2px solid #d55e00;outline-offset:1px"
            tip = "the query; " + tip
        spans.append(f'<span title="{html.escape(tip)}" style="display:inline-block;margin:2px 1px;padding:1px 3px;'
                     f'border-radius:3px;white-space:pre;{style}">{html.escape(label)}</span>')
    return "".join(spans)


_CELL = "width:14px;min-width:14px;height:14px;padding:0;border:1px solid #fff;"


def _table_html(labels, weights, query):
    """The whole (T, T) matrix as an HTML table: rows queries, columns keys, the query row outlined."""
    T = len(labels)
    head = "".join(f'<th style="writing-mode:vertical-rl;transform:rotate(180deg);font-weight:normal;'
                   f'padding:2px 0;white-space:pre;height:5.5em;text-align:left">{html.escape(l)}</th>'
                   for l in labels)
    rows = []
    for i in range(T):
        cells = []
        for j in range(T):
            w = float(weights[i, j])
            if j > i and w == 0:
                cells.append(f'<td style="{_CELL}background:#eeeeee"></td>')
            else:
                background, _ = _colour(w)
                cells.append(f'<td title="{html.escape(labels[i])} \u2192 {html.escape(labels[j])}: {w:.3f}" '
                             f'style="{_CELL}background:{background}"></td>')
        outline = "outline:2px solid #d55e00;" if i == query else ""
        rows.append(f'<tr style="{outline}"><th style="font-weight:normal;text-align:right;padding-right:4px;'
                    f'white-space:pre">{html.escape(labels[i])}</th>{"".join(cells)}</tr>')
    return ('<table style="border-collapse:collapse;font-size:11px;line-height:1;table-layout:fixed">'
            f'<tr><th></th>{head}</tr>{"".join(rows)}</table>')


class AttentionExplorer(SnapshotExplorer):
    """Pick a layer, a head and a query token of a sentence and see where that query looks.

    Shows the sentence with every token shaded by the weight the chosen query gives it, and the
    full matrix of the head below it. Displaying it gives a static HTML snapshot of the initial state
    (what a reader of the built book sees) and the live widget, which hides the snapshot when it
    renders, as llm_lib.display.TokenizerPlayground does.
    """

    def __init__(self, model, tokenizer, text: str = DEFAULT_EXPLORER_TEXT, layer: int = 0, head: int | str = 0,
                 query: int | None = None):
        import ipywidgets as widgets

        self.model, self.tokenizer = model, tokenizer
        self.n_layer = len(model.blocks)
        self.n_head = model.blocks[0].attn.n_heads
        if not 0 <= layer < self.n_layer:
            raise ValueError(f"layer must be in 0 .. {self.n_layer - 1}, got {layer}")
        if head != "mean" and not (isinstance(head, int) and 0 <= head < self.n_head):
            raise ValueError(f"head must be in 0 .. {self.n_head - 1} or 'mean', got {head!r}")
        # A text area, not a one-line box, so pasted verse keeps its line breaks (tokens of their own).
        self.text = widgets.Textarea(value=text, description="Text", continuous_update=False, rows=3,
                                     layout=widgets.Layout(width="100%"))
        self.layer = widgets.Dropdown(options=[(f"layer {i}", i) for i in range(self.n_layer)], value=layer,
                                      description="Layer")
        self.head = widgets.Dropdown(options=[(f"head {h}", h) for h in range(self.n_head)] + [("mean of heads", "mean")],
                                     value=head, description="Head")
        self.query = widgets.Dropdown(description="Query")
        self.view = widgets.HTML()
        hide_snapshot = self._hide_snapshot()
        self.widget = widgets.VBox([self.text, widgets.HBox([self.layer, self.head, self.query]), self.view,
                                    hide_snapshot])
        self._set_text(text, query)
        self.text.observe(lambda change: self._set_text(change["new"]), names="value")
        for control in (self.layer, self.head, self.query):
            control.observe(lambda change: self._redraw(), names="value")
        self._redraw()

    def _set_text(self, text, query=None):
        ids = self.tokenizer.encode(text)[:MAX_EXPLORER_TOKENS] or self.tokenizer.encode(".")
        self.ids, self.labels = ids, token_labels(self.tokenizer, ids)
        self.maps = attention_maps(self.model, ids)  # (n_layer, H, T, T)
        if query is None:  # default: the last " it" if there is one (the chapter's question), else the last token
            its = [i for i, label in enumerate(self.labels) if label.strip("\u00b7").lower() == "it"]
            query = its[-1] if its else len(ids) - 1
        query = min(max(query, 0), len(ids) - 1)
        # Replacing the options fires a change of value; hold off redrawing until the new text is set.
        self._updating = True
        self.query.options = [(f"{i}: {label}", i) for i, label in enumerate(self.labels)]
        self.query.value = query
        self._updating = False
        self._redraw()

    def weights(self, layer=None, head=None):
        """The (T, T) matrix on show: one head, or the mean over heads."""
        layer = self.layer.value if layer is None else layer
        head = self.head.value if head is None else head
        return self.maps[layer].mean(dim=0) if head == "mean" else self.maps[layer, head]

    def _html(self):
        w, q = self.weights(), self.query.value
        head = "mean of heads" if self.head.value == "mean" else f"head {self.head.value}"
        top = sorted(range(q + 1), key=lambda j: -float(w[q, j]))[:3]
        summary = ", ".join(f"{html.escape(self.labels[j])} ({float(w[q, j]):.0%})" for j in top)
        return (f'<div class="llm-lib-attn" style="font-family:ui-monospace,Menlo,Consolas,monospace;color:#111">'
                f'<div style="margin:4px 0"><b>Layer {self.layer.value}, {head}</b>: where '
                f'<b>{html.escape(self.labels[q])}</b> (position {q}) looks. Most weight on: {summary}.</div>'
                f'<div style="margin-bottom:8px">{_sentence_html(self.labels, w[q], q)}</div>'
                f'{_table_html(self.labels, w, q)}'
                '<div style="font-size:0.8em;color:#555;margin-top:4px">Rows: queries; columns: keys; darker = more '
                'weight (white 0, darkest 1, on a square-root scale); grey: the future, masked. Hover for values.'
                '</div></div>')

    def _redraw(self):
        if getattr(self, "_updating", False) or self.query.value is None:
            return
        self.view.value = self._html()

    def static_html(self) -> str:
        """The explorer's current state as plain HTML, for readers without a kernel."""
        box = ('<div style="font-family:ui-monospace,Menlo,Consolas,monospace;border:1px solid #bbb;border-radius:3px;'
               f'padding:4px 6px;margin-bottom:6px;background:#fff;color:#111;white-space:pre-wrap">{html.escape(self.text.value)}</div>')
        return self._snapshot(box + self._html(), "run the notebook to choose the text, layer, head and query yourself.")


def attention_explorer(model, tokenizer, text: str = DEFAULT_EXPLORER_TEXT, layer: int = 0, head: int | str = 0,
                       query: int | None = None) -> AttentionExplorer:
    """An interactive attention heatmap for `text`, by layer, head and query token:
    `attention_explorer(pipeline.load("base"), pipeline.load("tokenizer"), "The cat sat on the mat because it was tired.")`."""
    return AttentionExplorer(model, tokenizer, text, layer=layer, head=head, query=query)
