"""Embeddings: token ids become vectors, and the geometry of learned vectors carries meaning (chapter 3).

Three groups of small functions, then the widgets that the chapter is built around:

* lookup: `one_hot`, `one_hot_lookup` (an embedding lookup written as one-hot × matrix);
* geometry: `cosine_similarity`, `nearest_neighbours`, `most_similar`, `analogy`, `pca_2d`;
* learning word vectors from a corpus: `word_tokens`, `build_vocab`, `skipgram_pairs`,
  `cooccurrence_counts`, `train_word_vectors` (skip-gram with negative sampling, full batch);
* `embedding_explorer` (pick a word: its neighbours and its place on the 2-D map) and `semantle`
  (guess a secret word from similarity scores).

    >>> vocab, vectors = train_word_vectors(shakespeare_texts().values())   # under a minute on 2 CPU cores
    >>> analogy("man", "king", "woman", vectors, vocab)                     # king - man + woman
    ['queen']

ipywidgets, IPython and matplotlib are imported inside the functions that need them.
"""
from __future__ import annotations

import collections
import html
import math
from collections.abc import Iterable, Sequence

import regex
import torch
import torch.nn.functional as F

from llm_lib.display import SnapshotExplorer, figure_html

__all__ = [
    "one_hot",
    "one_hot_lookup",
    "cosine_similarity",
    "nearest_neighbours",
    "most_similar",
    "analogy",
    "pca_2d",
    "word_tokens",
    "build_vocab",
    "skipgram_pairs",
    "cooccurrence_counts",
    "sgns_loss",
    "train_word_vectors",
    "EmbeddingExplorer",
    "embedding_explorer",
    "Semantle",
    "semantle",
]


# ----------------------------------------------------------------------------------------------------
# Lookup


def _check_ids(ids, vocab_size: int) -> None:
    if not isinstance(ids, torch.Tensor) or ids.dtype.is_floating_point or ids.dtype.is_complex or ids.dtype == torch.bool:
        raise TypeError(f"ids must be a tensor of integer token ids (torch.long), got "
                        f"{getattr(ids, 'dtype', type(ids).__name__)}")
    if ids.numel() and (ids.min() < 0 or ids.max() >= vocab_size):
        raise ValueError(f"token ids must lie in [0, {vocab_size}), got values from {ids.min().item()} to "
                         f"{ids.max().item()}")


def one_hot(ids: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """ids (...) -> float32 (..., vocab_size), 1.0 at each id: one_hot(torch.tensor([2, 0]), 3) ->
    [[0., 0., 1.], [1., 0., 0.]]."""
    _check_ids(ids, vocab_size)
    out = torch.zeros(*ids.shape, vocab_size)                # (..., V)
    out.scatter_(-1, ids.long().unsqueeze(-1), 1.0)          # put a 1 in column ids[...] of each row
    return out


def one_hot_lookup(ids: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """An embedding lookup written as a matrix product: one_hot(ids) (..., V) @ weight (V, C) -> (..., C).
    Equal to weight[ids] and to nn.Embedding: one_hot_lookup(torch.tensor([1]), w) == w[[1]]."""
    if not isinstance(weight, torch.Tensor) or weight.dim() != 2:
        raise ValueError(f"weight must be a 2-D tensor (vocab_size, dim), got {getattr(weight, 'shape', type(weight))}")
    # Each one-hot row picks exactly one row of weight: the product is a lookup, computed the slow way.
    return one_hot(ids, weight.shape[0]).to(weight.dtype) @ weight


# ----------------------------------------------------------------------------------------------------
# Geometry


def cosine_similarity(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Cosine of the angle between vectors along the last dimension, broadcasting the others:
    (..., C) and (..., C) -> (...). 1: same direction, 0: orthogonal, -1: opposite; 0 when a vector is zero.
    cosine_similarity(torch.tensor([1., 0.]), torch.tensor([1., 1.])) -> 0.7071."""
    for name, x in (("a", a), ("b", b)):
        if not isinstance(x, torch.Tensor) or not x.dtype.is_floating_point:
            raise TypeError(f"{name} must be a floating-point tensor, got {getattr(x, 'dtype', type(x).__name__)}")
        if x.dim() == 0:
            raise ValueError(f"{name} must have at least one dimension (the vector), got a scalar")
    if a.shape[-1] != b.shape[-1]:
        raise ValueError(f"the vectors must have the same length: a has {a.shape[-1]}, b has {b.shape[-1]}")
    dot = (a * b).sum(-1)
    norms = a.norm(dim=-1) * b.norm(dim=-1)
    # A zero vector points nowhere; calling it unrelated (0) is also what torch's version returns.
    return torch.where(norms > 0, dot / norms.clamp_min(torch.finfo(norms.dtype).tiny), torch.zeros_like(dot))


def nearest_neighbours(query: torch.Tensor, matrix: torch.Tensor, k: int, exclude: Iterable[int] = ()) -> torch.Tensor:
    """Indices of the k rows of matrix (n, C) most cosine-similar to query (C,), most similar first, ties to the
    lower index, skipping the indices in exclude:
    nearest_neighbours(torch.tensor([3., 0.]), torch.tensor([[1., 0.], [0., 1.], [2., 0.]]), 2) -> tensor([0, 2])."""
    if not isinstance(matrix, torch.Tensor) or matrix.dim() != 2:
        raise ValueError(f"matrix must be a 2-D tensor (n, dim), got {getattr(matrix, 'shape', type(matrix))}")
    if not isinstance(query, torch.Tensor) or query.shape != matrix.shape[1:]:
        raise ValueError(f"query must be one vector of length {matrix.shape[1]}, got {getattr(query, 'shape', type(query))}")
    excluded = {int(i) for i in exclude}
    if any(not 0 <= i < len(matrix) for i in excluded):
        raise ValueError(f"exclude holds indices outside [0, {len(matrix)}): {sorted(excluded)}")
    if not isinstance(k, int) or not 0 <= k <= len(matrix) - len(excluded):
        raise ValueError(f"k must be an int between 0 and {len(matrix) - len(excluded)} "
                         f"({len(matrix)} rows, {len(excluded)} excluded), got {k!r}")
    sims = cosine_similarity(matrix, query.to(matrix.dtype))            # (n,)
    sims[list(excluded)] = -math.inf                                     # never chosen: k leaves room for them
    order = torch.sort(sims, descending=True, stable=True).indices      # stable: equal scores keep index order
    return order[:k]


def _index_of(word: str, vocab: Sequence[str]) -> int:
    try:
        return vocab.index(word)
    except ValueError:
        raise ValueError(f"{word!r} is not in the vocabulary of {len(vocab):,} words; pick a more frequent word") from None


def most_similar(word: str, vectors: torch.Tensor, vocab: Sequence[str], k: int = 10) -> list[tuple[str, float]]:
    """The k words nearest to `word`, with their cosine similarity:
    most_similar("night", vectors, vocab, 2) -> [('day', 0.7978), ('morrow', 0.7144)]."""
    i = _index_of(word, vocab)
    idx = nearest_neighbours(vectors[i], vectors, k, exclude=[i])
    sims = cosine_similarity(vectors[idx], vectors[i])
    return [(vocab[j], round(s, 4)) for j, s in zip(idx.tolist(), sims.tolist())]


def analogy(a: str, b: str, c: str, vectors: torch.Tensor, vocab: Sequence[str], k: int = 1) -> list[str]:
    """"a is to b as c is to ?": the k words nearest (cosine) to vectors[b] - vectors[a] + vectors[c], leaving out
    a, b and c themselves. analogy("man", "king", "woman", vectors, vocab) -> ['queen']."""
    ia, ib, ic = (_index_of(w, vocab) for w in (a, b, c))
    target = vectors[ib] - vectors[ia] + vectors[ic]                    # (C,)
    # Without the exclusion the nearest word is usually c itself (or b): the offset b - a is small.
    return [vocab[i] for i in nearest_neighbours(target, vectors, k, exclude={ia, ib, ic}).tolist()]


def pca_2d(x: torch.Tensor) -> torch.Tensor:
    """Coordinates of the rows of x (n, C) on its first two principal components: (n, 2). Centre, take the SVD,
    project on the top two right singular vectors; each column is signed so its largest |entry| is positive."""
    if not isinstance(x, torch.Tensor) or not x.dtype.is_floating_point:
        raise TypeError(f"x must be a floating-point tensor, got {getattr(x, 'dtype', type(x).__name__)}")
    if x.dim() != 2 or x.shape[0] < 2 or x.shape[1] < 2:
        raise ValueError(f"x must be 2-D with at least 2 rows and 2 columns, got shape {tuple(x.shape)}")
    centred = x - x.mean(dim=0)                                          # (n, C): PCA describes spread around the mean
    _, _, vh = torch.linalg.svd(centred, full_matrices=False)            # rows of vh: directions, most variance first
    coords = centred @ vh[:2].T                                          # (n, 2)
    # A singular vector is only defined up to sign; fix it so the same data always gives the same picture.
    biggest = coords.abs().argmax(dim=0)                                 # (2,)
    signs = torch.sign(coords[biggest, torch.arange(2)])
    return coords * torch.where(signs == 0, torch.ones_like(signs), signs)


# ----------------------------------------------------------------------------------------------------
# Word vectors from a corpus

WORD = regex.compile(r"\p{L}+(?:'\p{L}+)*")               # letters, with inner apostrophes: "o'er", "king's"
# Lines that only name a speaker ("HAMLET.", "Ham.", "KING HENRY.") or a heading ("ACT I."): not dialogue.
SPEAKER_OR_HEADING = regex.compile(r"^\s*(?:[^\p{Ll}\n]*\.|\p{Lu}\p{Ll}{0,11}\.)\s*$")
STAGE_DIRECTION = regex.compile(r"\[[^\]]*\]")            # "[Exit.]", "[Enter Horatio and Marcellus.]"


def word_tokens(text: str) -> list[str]:
    """The lower-cased words of a play's dialogue, without speaker names, headings and stage directions:
    word_tokens("HAMLET.\\nTo be, or not to be [Aside.]") -> ['to', 'be', 'or', 'not', 'to', 'be']."""
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    words = []
    for line in text.splitlines():
        if not SPEAKER_OR_HEADING.match(line):
            words.extend(WORD.findall(STAGE_DIRECTION.sub(" ", line).lower()))
    return words


def build_vocab(words: Iterable[str], size: int) -> list[str]:
    """The `size` most frequent words, most frequent first (ties in alphabetical order):
    build_vocab("a b b c c c".split(), 2) -> ['c', 'b']."""
    counts = collections.Counter(words)
    return [w for w, _ in sorted(counts.items(), key=lambda item: (-item[1], item[0]))[:size]]


def skipgram_pairs(ids: torch.Tensor, window: int) -> torch.Tensor:
    """Every (centre, context) pair of ids at most `window` positions apart, ordered by the centre's position, then the
    context's: skipgram_pairs(torch.tensor([10, 20, 30]), 1) -> [[10, 20], [20, 10], [20, 30], [30, 20]] (n_pairs, 2)."""
    if not isinstance(ids, torch.Tensor) or ids.dim() != 1 or ids.dtype.is_floating_point:
        raise TypeError(f"ids must be a 1-D tensor of integer ids, got {getattr(ids, 'shape', type(ids).__name__)}")
    if not isinstance(window, int) or window < 1:
        raise ValueError(f"window must be a positive int, got {window!r}")
    n = len(ids)
    offsets = torch.cat([torch.arange(-window, 0), torch.arange(1, window + 1)])   # (2w,) left then right
    context = torch.arange(n)[:, None] + offsets[None, :]                           # (n, 2w) positions
    valid = (context >= 0) & (context < n)
    centre = torch.arange(n)[:, None].expand_as(context)
    # Row-major order of the (n, 2w) grid is exactly "by centre, then by context position".
    return torch.stack([ids[centre[valid]], ids[context[valid]]], dim=1).long()


def cooccurrence_counts(ids: torch.Tensor, vocab_size: int, window: int) -> torch.Tensor:
    """X (V, V): X[w, c] counts how often c appears within `window` words of w, a neighbour at distance d weighing
    (window + 1 - d) / window (word2vec's random window size, in expectation). Ids < 0 mark breaks between texts."""
    if not isinstance(ids, torch.Tensor) or ids.dim() != 1:
        raise TypeError(f"ids must be a 1-D tensor of ids, got {getattr(ids, 'shape', type(ids).__name__)}")
    if not isinstance(window, int) or window < 1:
        raise ValueError(f"window must be a positive int, got {window!r}")
    keys, weights = [], []
    for d in range(1, window + 1):   # the same pairs skipgram_pairs lists, counted without listing them
        left, right = ids[:-d], ids[d:]
        ok = (left >= 0) & (right >= 0)
        left, right = left[ok].long(), right[ok].long()
        keys += [left * vocab_size + right, right * vocab_size + left]             # both directions
        weights += [torch.full((2 * len(left),), (window + 1 - d) / window, dtype=torch.float64)]
    flat = torch.bincount(torch.cat(keys), torch.cat(weights), minlength=vocab_size * vocab_size)
    return flat.view(vocab_size, vocab_size).float()


def sgns_loss(scores: torch.Tensor, counts: torch.Tensor, negatives: torch.Tensor) -> torch.Tensor:
    """Skip-gram with negative sampling, summed over every (word, context) cell of (V, V) tensors instead of sampled:
    -sum(counts * log σ(scores) + negatives * log σ(-scores)). With scores all 0 it is (counts + negatives).sum() * log 2."""
    # log σ(-s) = log σ(s) - s, so a single logsigmoid serves both terms.
    return (negatives * scores - (counts + negatives) * F.logsigmoid(scores)).sum()


def train_word_vectors(texts: Iterable[str], vocab_size: int = 3000, dim: int = 64, window: int = 5,
                       negatives: int = 5, steps: int = 150, lr: float = 0.05, seed: int = 0,
                       history: list | None = None) -> tuple[list[str], torch.Tensor]:
    """Learn a `dim`-wide vector for each of the `vocab_size` most frequent words of `texts` with skip-gram and negative
    sampling (word2vec), trained full batch on co-occurrence counts. Returns (vocab, vectors (V, dim) of length 1).

    A word w and a word c seen near it should score high, w·c > 0; w and `negatives` random words drawn from the
    unigram distribution raised to 0.75 should score low. Summed over the corpus, that loss depends on the text only
    through the counts X[w, c], so each step computes its expectation exactly over all V × V cells, with no sampling
    noise: the same seed gives the same vectors. `history`, if a list, receives (step, loss per pair) every 10 steps.
    train_word_vectors(shakespeare_texts().values()) -> (['the', 'and', 'i', ...], tensor of shape (3000, 64))
    """
    if isinstance(texts, str):
        raise TypeError("texts must be an iterable of strings (one per work), not a single string")
    generator = torch.Generator().manual_seed(seed)
    per_text = [word_tokens(t) for t in texts]
    vocab = build_vocab((w for words in per_text for w in words), vocab_size)
    if len(vocab) < 2:
        raise ValueError("the texts hold fewer than two distinct words: nothing to learn")
    index = {w: i for i, w in enumerate(vocab)}
    # Out-of-vocabulary words are dropped (as word2vec does), so windows reach over them; -1 separates texts.
    ids = torch.tensor([i for words in per_text for i in [index[w] for w in words if w in index] + [-1]])
    V = len(vocab)

    X = cooccurrence_counts(ids, V, window)                              # (V, V) observed pairs
    noise = X.sum(0) ** 0.75                                             # word2vec's smoothed unigram distribution
    N = negatives * X.sum(1, keepdim=True) * (noise / noise.sum())       # (V, V) expected negative draws per cell
    X_plus_N, pairs = X + N, X.sum().item()

    # Two tables, as in word2vec: W for a word as the centre, C for a word as the context. W is the embedding.
    W = (torch.rand(V, dim, generator=generator) - 0.5) / dim
    C = (torch.rand(V, dim, generator=generator) - 0.5) / dim
    W.grad, C.grad = torch.zeros_like(W), torch.zeros_like(C)
    optimizer = torch.optim.Adam([W, C], lr=lr)
    scores = torch.empty(V, V)                                           # reused: V² floats are the big cost here
    for step in range(steps):
        torch.mm(W, C.T, out=scores)                                     # (V, V): every word against every context
        if history is not None and (step % 10 == 0 or step == steps - 1):
            history.append((step, sgns_loss(scores, X, N).item() / pairs))
        # d loss / d scores = (X + N) σ(scores) - X: expected minus observed, computed in place.
        grad_scores = scores.sigmoid_().mul_(X_plus_N).sub_(X)
        torch.mm(grad_scores, C, out=W.grad)                             # chain rule through scores = W Cᵀ
        torch.mm(grad_scores.T, W, out=C.grad)
        W.grad /= pairs
        C.grad /= pairs
        optimizer.step()
    return vocab, F.normalize(W, dim=1)


# ----------------------------------------------------------------------------------------------------
# Widgets

# Okabe-Ito colours: distinguishable with the common colour-vision deficiencies.
BLUE, ORANGE, GREEN, VERMILLION, GREY = "#0072b2", "#e69f00", "#009e73", "#d55e00", "#bbbbbb"


def _bars_html(rows: list[tuple[str, float]], title: str) -> str:
    """A small table of words with a bar for each similarity in [-1, 1]."""
    lines = []
    for word, sim in rows:
        width = max(0.0, sim) * 120
        lines.append(
            f'<tr><td style="padding:0 8px 0 0;text-align:left">{html.escape(word)}</td>'
            f'<td style="padding:0 6px 0 0;text-align:right;font-family:ui-monospace,Menlo,monospace">{sim:+.2f}</td>'
            f'<td style="padding:0"><div style="width:{width:.0f}px;height:0.8em;background:{BLUE}"></div></td></tr>'
        )
    return (f'<div style="font-size:0.9em"><b>{html.escape(title)}</b><table style="border-collapse:collapse;'
            f'margin-top:4px">{"".join(lines)}</table></div>')


class EmbeddingExplorer(SnapshotExplorer):
    """Pick a word: its nearest neighbours, where it sits on the 2-D PCA map of all words, and its neighbourhood
    projected on its own.

    Displaying it shows a static HTML snapshot of the initial word (what a reader of the built book sees without
    a kernel) and the live widget, which hides the snapshot when it renders.
    """

    def __init__(self, vocab: Sequence[str], vectors: torch.Tensor, word: str = "king", k: int = 12,
                 map_words: int = 1500):
        import ipywidgets as widgets

        if len(vocab) != len(vectors):
            raise ValueError(f"vocab has {len(vocab)} words but vectors has {len(vectors)} rows")
        self.vocab, self.vectors, self.k = list(vocab), vectors.float(), k
        _index_of(word, self.vocab)
        self.initial_word = word
        self.map_words = min(map_words, len(self.vocab))
        self.coords = pca_2d(self.vectors[: self.map_words])             # the global map: the most frequent words
        self.picker = widgets.Combobox(value=word, options=self.vocab[:self.map_words], ensure_option=False,
                                       description="word:", placeholder="type a word",
                                       layout=widgets.Layout(width="260px"))
        self.panel = widgets.HTML()
        hide_snapshot = self._hide_snapshot()
        self.widget = widgets.VBox([self.picker, self.panel, hide_snapshot])
        self.picker.observe(self._update, names="value")
        self._update()

    def figure(self, word: str):
        """The two maps for `word`, as a matplotlib Figure."""
        from matplotlib.figure import Figure

        i = _index_of(word, self.vocab)
        neighbours = nearest_neighbours(self.vectors[i], self.vectors, self.k, exclude=[i])
        fig = Figure(figsize=(10.5, 4.4))
        left, right = fig.subplots(1, 2)

        # Left: the word on the map of the most frequent words (PCA of all of them at once).
        left.scatter(self.coords[:, 0], self.coords[:, 1], s=4, color=GREY, label=f"{self.map_words:,} most frequent words")
        shown = [j for j in neighbours.tolist() if j < self.map_words]
        if shown:
            left.scatter(self.coords[shown, 0], self.coords[shown, 1], s=22, color=ORANGE, label="its neighbours")
        if i < self.map_words:
            left.scatter(self.coords[i, 0], self.coords[i, 1], s=90, marker="*", color=VERMILLION, label=word)
            left.annotate(word, self.coords[i].tolist(), xytext=(4, 4), textcoords="offset points", fontsize=10,
                          color="#111111")
        else:
            left.text(0.02, 0.02, f"{word!r} is rarer than the words on this map", transform=left.transAxes, fontsize=9)
        left.set_title("Where it sits: PCA of the most frequent words")
        left.set_xlabel("principal component 1")
        left.set_ylabel("principal component 2")
        left.legend(loc="upper right", fontsize=8, framealpha=0.9)

        # Right: the word and its neighbours projected on their own first two components.
        group = [i] + neighbours.tolist()
        local = pca_2d(self.vectors[group])
        right.scatter(local[1:, 0], local[1:, 1], s=24, color=ORANGE)
        right.scatter(local[0, 0], local[0, 1], s=110, marker="*", color=VERMILLION)
        for j, (x, y) in zip(group, local.tolist()):
            right.annotate(self.vocab[j], (x, y), xytext=(4, 3), textcoords="offset points", fontsize=9,
                           color="#111111")
        right.set_title(f"Its {self.k} nearest neighbours, projected on their own")
        right.set_xlabel("local component 1")
        right.set_ylabel("local component 2")
        right.margins(0.18)
        fig.tight_layout()
        return fig

    def panel_html(self, word: str) -> str:
        """Neighbour list and maps for `word` as HTML (a message if the word is unknown)."""
        word = word.strip().lower()
        if word not in self.vocab:
            return (f'<div style="color:#a00">{html.escape(repr(word))} is not among the {len(self.vocab):,} words '
                    f'of the vocabulary; try another.</div>')
        rows = most_similar(word, self.vectors, self.vocab, self.k)
        return (
            '<div style="display:flex;flex-wrap:wrap;gap:16px;align-items:flex-start">'
            f'<div style="min-width:200px">{_bars_html(rows, f"nearest to {word!r} (cosine)")}</div>'
            f'<div style="flex:1 1 600px">{figure_html(self.figure(word), f"word vectors near {word!r}")}</div></div>'
        )

    def _update(self, change=None) -> None:
        self.panel.value = self.panel_html(self.picker.value)

    def static_html(self, word: str | None = None) -> str:
        """The explorer as plain HTML (no kernel needed), for `word` or the initial word."""
        word = self.initial_word if word is None else word
        return self._snapshot(f'<div style="margin-bottom:4px"><b>word:</b> {html.escape(word)}</div>'
                              f'{self.panel_html(word)}', "run the notebook to pick your own word.")


def embedding_explorer(vocab: Sequence[str], vectors: torch.Tensor, word: str = "king", k: int = 12) -> EmbeddingExplorer:
    """An interactive view of word vectors: embedding_explorer(vocab, vectors, "night")."""
    return EmbeddingExplorer(vocab, vectors, word, k)


class Semantle(SnapshotExplorer):
    """A guessing game in the style of Semantle: find the secret word; each guess is scored by its cosine similarity
    to the secret and by its rank among all words (1 = the secret's nearest neighbour).

    `guess(word)` plays from code; the widget has a text box, a hint button (reveals a neighbour, nearest last)
    and a give-up button. The static snapshot (for the book) shows the guesses given as `demo` without the secret.
    """

    def __init__(self, vocab: Sequence[str], vectors: torch.Tensor, secret: str | None = None, seed: int = 0,
                 candidates: int = 500, demo: Sequence[str] = ()):
        import ipywidgets as widgets

        self.vocab, self.vectors = list(vocab), vectors.float()
        self._message = ""
        if secret is None:   # a reasonably common word, so that it is guessable
            start = min(100, len(self.vocab) - 1)
            pool = self.vocab[start:max(start + 1, min(candidates, len(self.vocab)))]
            secret = pool[int(torch.randint(len(pool), (1,), generator=torch.Generator().manual_seed(seed)))]
        self.secret = secret
        s = _index_of(secret, self.vocab)
        sims = cosine_similarity(self.vectors, self.vectors[s])
        order = nearest_neighbours(self.vectors[s], self.vectors, len(self.vocab) - 1, exclude=[s]).tolist()
        self._sim = {w: float(x) for w, x in zip(self.vocab, sims.tolist())}
        self._rank = {self.vocab[j]: r + 1 for r, j in enumerate(order)}
        self._rank[secret] = 0
        self._hints = order[:50][::-1]   # hints from the 50th nearest inwards
        self.guesses: dict[str, tuple[float, int]] = {}
        for word in demo:
            self.guess(word)
        self._demo_html = self.table_html(reveal=False)
        self.box = widgets.Text(placeholder="your guess, then Enter", continuous_update=False,
                                layout=widgets.Layout(width="220px"))
        hint = widgets.Button(description="hint", layout=widgets.Layout(width="80px"))
        give_up = widgets.Button(description="give up", layout=widgets.Layout(width="90px"))
        self.panel = widgets.HTML(self._demo_html)
        # continuous_update=False: the value changes (and a guess is played) on Enter or when the box loses focus.
        self.box.observe(lambda change: change["new"].strip() and self._play(change["new"]), names="value")
        hint.on_click(lambda _: self._hint())
        give_up.on_click(lambda _: self._give_up())
        hide_snapshot = self._hide_snapshot()
        self.widget = widgets.VBox([widgets.HBox([self.box, hint, give_up]), self.panel, hide_snapshot])

    def guess(self, word: str) -> tuple[float, int]:
        """Score a guess: (cosine similarity to the secret, rank among all words; 0 means you found it)."""
        word = word.strip().lower()
        if word not in self._sim:
            raise ValueError(f"{word!r} is not in the vocabulary of {len(self.vocab):,} words")
        self.guesses[word] = (self._sim[word], self._rank[word])
        return self.guesses[word]

    def table_html(self, reveal: bool) -> str:
        """The guesses so far, best first, as an HTML table."""
        rows = sorted(self.guesses.items(), key=lambda item: item[1][1])
        body = "".join(
            f'<tr><td style="padding:0 10px 0 0">{html.escape(w)}</td>'
            f'<td style="padding:0 10px 0 0;font-family:ui-monospace,Menlo,monospace;text-align:right">{sim:+.3f}</td>'
            f'<td style="padding:0;text-align:right">{"found it!" if rank == 0 else f"#{rank:,}"}</td></tr>'
            for w, (sim, rank) in rows
        )
        head = ('<tr><th style="text-align:left;padding-right:10px">guess</th><th style="padding-right:10px">'
                'similarity</th><th>rank (1 = nearest)</th></tr>')
        secret = f'<div>The secret word was <b>{html.escape(self.secret)}</b>.</div>' if reveal else ""
        return (f'<div style="font-size:0.9em">{secret}<div>{html.escape(self._message)}'
                f'</div><table style="border-collapse:collapse">{head}{body}</table></div>')

    def _play(self, word: str) -> None:
        try:
            _, rank = self.guess(word)
            self._message = "You found it!" if rank == 0 else ""
        except ValueError as err:
            self._message = str(err)
        self.box.value = ""
        self.panel.value = self.table_html(reveal=self._rank.get(word.strip().lower()) == 0)

    def _hint(self) -> None:
        fresh = [j for j in self._hints if self.vocab[j] not in self.guesses]
        if fresh:
            self.guess(self.vocab[fresh[0]])
            self._message = f"hint: {self.vocab[fresh[0]]!r} is one of the 50 nearest words"
        self.panel.value = self.table_html(reveal=False)

    def _give_up(self) -> None:
        self._message = ""
        self.panel.value = self.table_html(reveal=True)

    def static_html(self) -> str:
        """The demo guesses as plain HTML (no kernel needed), without the secret."""
        return self._snapshot(f'<div style="margin-bottom:4px"><i>A few guesses at a secret word:</i></div>'
                              f'{self._demo_html}', "run the notebook to play.")


def semantle(vocab: Sequence[str], vectors: torch.Tensor, secret: str | None = None, seed: int = 0,
             demo: Sequence[str] = ()) -> Semantle:
    """A Semantle-style game on word vectors: semantle(vocab, vectors, seed=3, demo=["love", "war"])."""
    return Semantle(vocab, vectors, secret=secret, seed=seed, demo=demo)
