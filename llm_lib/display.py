"""Presentation helpers for the book: show llm_lib's own source, colour tokens, a tokenizer playground.

Nothing here is needed to *run* a language model; it is how the chapters show what the code does.
IPython and ipywidgets are imported inside the functions, so `import llm_lib` stays light for the
command-line pipeline.
"""

from __future__ import annotations

import base64
import functools
import html
import inspect
import io
import re
import textwrap
import uuid

__all__ = [
    "source_markdown",
    "show_source",
    "token_pieces",
    "tokens_html",
    "show_tokens",
    "TokenizerPlayground",
    "tokenizer_playground",
    "figure_png",
    "figure_html",
    "png_html",
    "SnapshotExplorer",
]

# Pastel tints of the Okabe-Ito palette (safe for the common colour-vision deficiencies), each with its
# full-strength colour as a border. Neighbouring tokens always get different colours, and the border
# keeps token boundaries visible even to a reader who sees no colour at all.
TOKEN_COLOURS = (
    ("#f7e2b3", "#e69f00"),  # orange
    ("#cce8f8", "#56b4e9"),  # sky blue
    ("#b3e2d5", "#009e73"),  # bluish green
    ("#f0d7e5", "#cc79a7"),  # reddish purple
)

# Shown in place of invisible characters so that " the" and "the" look different.
VISIBLE_WHITESPACE = {" ": "\u00b7", "\n": "\u21b5", "\t": "\u2192", "\r": "\u240d"}

DEFAULT_PLAYGROUND_TEXT = (
    "How many r's are in strawberry? NASA and OWCA are both acronyms.\n"
    "Aeronautics, aeronautics, AERONAUTICS, aeronatuics.\n"
    "12345 + 678 = 13023 \U0001F98A"
)


# ----------------------------------------------------------------------------------------------------
# Figures inside HTML (widget snapshots): one way to turn a matplotlib figure into an <img>


def figure_png(fig, dpi: int = 100) -> bytes:
    """A matplotlib figure as PNG bytes, and the figure closed (for an ipywidgets Image or an <img>)."""
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()


def png_html(png: bytes, alt: str) -> str:
    """PNG bytes as a self-contained <img> tag with alt text: `png_html(figure_png(fig), "loss curve")`."""
    if not alt or not alt.strip():
        raise ValueError("an image needs alt text that says what the figure shows (for screen readers)")
    data = base64.b64encode(png).decode("ascii")
    return f'<img alt="{html.escape(alt)}" style="max-width:100%" src="data:image/png;base64,{data}"/>'


def figure_html(fig, alt: str, dpi: int = 100) -> str:
    """A matplotlib figure as a self-contained <img> tag with alt text: `figure_html(fig, "loss curve")`."""
    return png_html(figure_png(fig, dpi), alt)


# ----------------------------------------------------------------------------------------------------
# Explorers: a live widget in JupyterLab, a static snapshot in the built book


class SnapshotExplorer:
    """Base of the chapters' explorers. Displayed, an explorer shows two outputs: a static HTML snapshot
    of its first state (what a reader of the built book sees, no kernel needed) and the live ipywidgets
    widget, which carries a style rule that hides the snapshot, so a JupyterLab user sees it only once.

    A subclass builds `self.widget` with `self._hide_snapshot()` among its children and writes
    `static_html()` as `self._snapshot(body_html, "what to do in the live version")`.
    """

    @functools.cached_property
    def _snapshot_class(self) -> str:  # unique per instance: hiding one snapshot leaves the others
        return f"llm-lib-{type(self).__name__.lower()}-snapshot-{uuid.uuid4().hex[:12]}"

    def _hide_snapshot(self):
        import ipywidgets as widgets

        return widgets.HTML(f"<style>.{self._snapshot_class} {{display: none !important;}}</style>")

    def _snapshot(self, body: str, note: str) -> str:
        return (f'<div class="{self._snapshot_class}">{body}<div style="font-size:0.8em;color:#666;'
                f'margin:2px 0 0 4px">Static snapshot: {note}</div></div>')

    def static_html(self) -> str:
        raise NotImplementedError

    def _ipython_display_(self) -> None:
        from IPython.display import HTML, display

        display(HTML(self.static_html()))
        display(self.widget._repr_mimebundle_(), raw=True)


# ----------------------------------------------------------------------------------------------------
# Source code


def source_markdown(obj) -> str:
    """The source of a function, class or module as a Markdown code block: `source_markdown(len)` raises
    TypeError (built-ins have no Python source), `source_markdown(llm_lib.display.show_source)` works."""
    obj = getattr(obj, "__func__", obj)  # a bound method shows its function
    try:
        source = textwrap.dedent(inspect.getsource(obj)).rstrip()
        _, first_line = inspect.getsourcelines(obj)
    except (TypeError, OSError) as err:
        raise TypeError(
            f"show_source needs a Python function, class or module defined in a file; got {obj!r} ({err})"
        ) from None
    # A fence longer than any run of backticks inside the source, so a docstring with ``` cannot end it.
    longest = max((len(run) for run in re.findall(r"`+", source)), default=0)
    fence = "`" * max(3, longest + 1)
    name = getattr(obj, "__qualname__", getattr(obj, "__name__", ""))
    module = inspect.getmodule(obj)
    module_name = module.__name__ if module is not None else ""
    path = module_name.replace(".", "/") + ".py" if module_name else inspect.getsourcefile(obj)
    where = f"`{module_name}.{name}`" if inspect.isfunction(obj) or inspect.isclass(obj) else f"`{module_name}`"
    if inspect.ismodule(obj):
        caption = f"{where}, from `{path}`"
    else:
        caption = f"{where}, from `{path}` (line {first_line})"
    return f"{caption}\n\n{fence}python\n{source}\n{fence}\n"


def show_source(obj) -> None:
    """Display the source of `obj` as a highlighted code block, so the book shows the library's own code
    rather than a copy that could drift: `show_source(llm_lib.tokenizer.merge)`."""
    from IPython.display import Markdown, display

    display(Markdown(source_markdown(obj)))


# ----------------------------------------------------------------------------------------------------
# Tokens


def token_pieces(tokenizer, text: str) -> list[tuple[int, bytes]]:
    """Encode `text` and pair each id with the bytes it stands for; works for a tiktoken Encoding and for an
    llm_lib BPETokenizer: `token_pieces(enc, "hi there")` -> [(5303, b'hi'), (612, b' there')]."""
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    if hasattr(tokenizer, "decode_single_token_bytes"):  # tiktoken.Encoding
        ids = tokenizer.encode(text, allowed_special="all")
        return [(i, tokenizer.decode_single_token_bytes(i)) for i in ids]
    if hasattr(tokenizer, "encode") and hasattr(tokenizer, "vocab"):  # llm_lib BPETokenizer
        ids = tokenizer.encode(text)
        return [(i, _bpe_token_bytes(tokenizer, i)) for i in ids]
    raise TypeError(
        f"expected a tiktoken Encoding or an llm_lib BPETokenizer, got {type(tokenizer).__name__}"
    )


def _bpe_token_bytes(tokenizer, token_id: int) -> bytes:
    piece = tokenizer.vocab.get(token_id)
    if piece is not None:
        return piece
    specials = getattr(tokenizer, "special_tokens", None) or {}
    for name, special_id in specials.items():  # special tokens may live outside `vocab`
        if special_id == token_id:
            return name.encode("utf-8")
    return tokenizer.decode([token_id]).encode("utf-8")


def _piece_label(piece: bytes) -> tuple[str, str]:
    """HTML for one token's text, and a tooltip. Bytes that are not whole UTF-8 characters (one emoji can
    be split over several tokens) are shown as hex, because there is no character to show."""
    # surrogateescape turns each byte that is not part of a complete character into U+DC80..U+DCFF.
    text = piece.decode("utf-8", errors="surrogateescape")
    shown, partial = [], False
    for ch in text:
        if 0xDC80 <= ord(ch) <= 0xDCFF:
            partial = True
            shown.append(f'<span style="font-size:0.75em;color:#333;padding:0 1px">{ord(ch) - 0xDC00:02X}</span>')
        else:
            shown.append(html.escape(VISIBLE_WHITESPACE.get(ch, ch)))
    if partial:
        hex_bytes = " ".join(f"{b:02X}" for b in piece)
        return "".join(shown), f"bytes {hex_bytes}: part of a multi-byte UTF-8 character"
    return "".join(shown), repr(text)


def tokens_html(tokenizer, text: str, show_ids: bool = True, max_tokens: int = 1500) -> str:
    """HTML that shows how `tokenizer` splits `text`: one coloured box per token, its id underneath (and on
    hover), and a summary line: `tokens_html(enc, "Hello world")` -> '<div ...>...2 tokens...</div>'."""
    pieces = token_pieces(tokenizer, text)
    spans = []
    for position, (token_id, piece) in enumerate(pieces[:max_tokens]):
        background, border = TOKEN_COLOURS[position % len(TOKEN_COLOURS)]
        label, tooltip = _piece_label(piece)
        id_line = (
            f'<span style="font-size:0.7em;color:#444;line-height:1.1">{token_id}</span>' if show_ids else ""
        )
        spans.append(
            f'<span title="id {token_id}: {html.escape(tooltip)}" style="display:inline-flex;'
            f"flex-direction:column;align-items:center;vertical-align:top;margin:1px 1px 3px 0;"
            f"padding:0 2px;background:{background};border:1px solid {border};border-radius:3px;"
            f'color:#111;white-space:pre;line-height:1.35">'
            f"<span>{label}</span>{id_line}</span>"
        )
        if piece.endswith(b"\n"):
            spans.append("<br>")
    if len(pieces) > max_tokens:
        spans.append(f'<span style="color:#666"> … {len(pieces) - max_tokens} more tokens</span>')
    n_bytes = len(text.encode("utf-8"))
    ratio = f"{n_bytes / len(pieces):.2f} bytes per token" if pieces else "no tokens"
    summary = (
        f'<div style="font-size:0.8em;color:#555;margin-top:2px"><b>{len(pieces)} tokens</b> · '
        f"{len(text)} characters · {n_bytes} bytes · {ratio}</div>"
    )
    return (
        '<div class="llm-lib-tokens" style="font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,'
        f'monospace;font-size:0.95em;line-height:1.2">{"".join(spans)}{summary}</div>'
    )


def show_tokens(tokenizer, text: str, show_ids: bool = True) -> None:
    """Display `text` split into coloured tokens with their ids (· marks a space, ↵ a newline):
    `show_tokens(llm_lib.data.gpt2_encoding(), "The quick brown fox")`."""
    from IPython.display import HTML, display

    display(HTML(tokens_html(tokenizer, text, show_ids=show_ids)))


# ----------------------------------------------------------------------------------------------------
# Playground


def _ids_html(ids: list[int], max_ids: int = 300) -> str:
    shown = ", ".join(str(i) for i in ids[:max_ids]) + (", …" if len(ids) > max_ids else "")
    return (
        '<div style="font-family:ui-monospace,Menlo,Consolas,monospace;font-size:0.8em;color:#333;'
        f'background:#f4f4f4;border-radius:3px;padding:2px 4px;margin-top:4px;word-break:break-word">'
        f"ids: [{shown}]</div>"
    )


def _panel_html(tokenizer, text: str) -> str:
    ids = [token_id for token_id, _ in token_pieces(tokenizer, text)]
    return tokens_html(tokenizer, text) + _ids_html(ids)


class TokenizerPlayground(SnapshotExplorer):
    """A text box and, side by side, how each tokenizer splits what is typed (tokens, ids, count).

    Displaying it shows two outputs: a static HTML snapshot of the initial text (what a reader of the built
    book sees without a kernel) and the live widget. When the live widget renders, it carries a style rule
    that hides the snapshot, so a JupyterLab user sees the playground only once.
    """

    def __init__(self, tokenizers: dict, text: str = DEFAULT_PLAYGROUND_TEXT):
        import ipywidgets as widgets

        if not isinstance(tokenizers, dict) or not tokenizers:
            raise TypeError("tokenizers must be a non-empty dict like {'GPT-2': encoding, 'Course': tokenizer}")
        self.tokenizers = dict(tokenizers)
        self.initial_text = text
        self.textarea = widgets.Textarea(
            value=text,
            placeholder="Type here…",
            continuous_update=True,
            layout=widgets.Layout(width="100%", height="7em"),
        )
        self.panels = {name: widgets.HTML() for name in self.tokenizers}
        columns = [
            widgets.VBox(
                [widgets.HTML(f"<b>{html.escape(name)}</b>"), panel],
                layout=widgets.Layout(flex="1 1 0", min_width="280px", padding="0 8px 0 0"),
            )
            for name, panel in self.panels.items()
        ]
        hide_snapshot = self._hide_snapshot()
        self.widget = widgets.VBox(
            [self.textarea, widgets.HBox(columns, layout=widgets.Layout(flex_flow="row wrap")), hide_snapshot]
        )
        self.textarea.observe(self._update, names="value")
        self._update()

    def _update(self, change=None) -> None:
        for name, panel in self.panels.items():
            panel.value = _panel_html(self.tokenizers[name], self.textarea.value)

    def static_html(self, text: str | None = None) -> str:
        """The playground as plain HTML (no kernel needed), for `text` or the initial text."""
        text = self.initial_text if text is None else text
        columns = "".join(
            f'<div style="flex:1 1 0;min-width:280px;padding-right:8px"><b>{html.escape(name)}</b>'
            f"{_panel_html(tokenizer, text)}</div>"
            for name, tokenizer in self.tokenizers.items()
        )
        box = ('<div style="font-family:ui-monospace,Menlo,Consolas,monospace;white-space:pre-wrap;'
               'border:1px solid #bbb;border-radius:3px;padding:4px 6px;margin-bottom:6px;color:#111;'
               f'background:#fff">{html.escape(text)}</div>')
        return self._snapshot(f'{box}<div style="display:flex;flex-wrap:wrap;gap:8px">{columns}</div>',
                              "run the notebook to type your own text.")


def tokenizer_playground(tokenizers: dict, text: str = DEFAULT_PLAYGROUND_TEXT) -> TokenizerPlayground:
    """An interactive comparison of tokenizers; type and watch the tokens change:
    `tokenizer_playground({"GPT-2": gpt2_encoding(), "Course": pipeline.load("tokenizer")})`."""
    return TokenizerPlayground(tokenizers, text)
