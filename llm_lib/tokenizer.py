"""Byte-level BPE tokenizer (GPT-2 style), built from small helpers.

Text -> UTF-8 bytes -> pre-tokens (a regex splits text into words, numbers, punctuation and
whitespace runs, so merges never cross those boundaries) -> each pre-token is merged from single
bytes into larger tokens, lowest-rank merge first. The helpers below are the whole algorithm:

    get_stats, merge               count adjacent pairs / replace a pair by a new id (training)
    split_on_specials, pretokenize text -> chunks (special tokens first, then the regex)
    bpe                            merge one pre-token's bytes by rank, exactly like tiktoken
    recover_merges                 rebuild the merge list behind a tiktoken rank table
    count_pretokens, train_bpe     learn the merges from a corpus (incremental pair counts + heap)

`BPETokenizer` is built on them; `to_tiktoken()` / `from_tiktoken()` convert to and from tiktoken.
Token ids are tiktoken "ranks": a merged token's id grows with its merge order.
"""
from __future__ import annotations

import heapq
import json
import operator
from collections import Counter, defaultdict
from pathlib import Path

import regex
import tiktoken
from tqdm.auto import tqdm

from llm_lib.data import atomic_write

# GPT-2's pre-tokenization regex, as written in tiktoken's r50k_base (faster, equivalent form of
# the original r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+").
GPT2_SPLIT_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s"""
# GPT-4's (tiktoken cl100k_base): case-insensitive contractions, numbers in groups of 1-3 digits.
GPT4_SPLIT_PATTERN = r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+|\s++$|\s*[\r\n]|\s+(?!\S)|\s"""

FORMAT_NAME = "llm_lib.tokenizer.BPETokenizer"
FORMAT_VERSION = 1


# ----------------------------------------------------------------------------------------------
# Helpers


def get_stats(ids, counts=None):
    """Count every adjacent pair in `ids`, adding to `counts` if given.

    get_stats([1, 2, 3, 1, 2]) -> {(1, 2): 2, (2, 3): 1, (3, 1): 1}
    """
    counts = {} if counts is None else counts
    for pair in zip(ids, ids[1:]):
        counts[pair] = counts.get(pair, 0) + 1
    return counts


def merge(ids, pair, idx):
    """Replace every occurrence of `pair` in `ids` by `idx`, scanning left to right.

    merge([1, 2, 3, 1, 2], (1, 2), 4) -> [4, 3, 4]       (and merge([5, 5, 5], (5, 5), 6) -> [6, 5])
    """
    new_ids = []
    i = 0
    while i < len(ids):
        if i < len(ids) - 1 and ids[i] == pair[0] and ids[i + 1] == pair[1]:
            new_ids.append(idx)
            i += 2
        else:
            new_ids.append(ids[i])
            i += 1
    return new_ids


def pretokenize(text, pattern=GPT2_SPLIT_PATTERN):
    """Split text into the chunks BPE works on; merges never cross a chunk boundary.

    pretokenize("Hello world's  end") -> ['Hello', ' world', "'s", ' ', ' end']
    """
    return regex.findall(pattern, text)


def split_on_specials(text, special_tokens):
    """Cut text around special-token strings (the longest wins where two could match).

    split_on_specials("a<|eot|>b", ["<|eot|>"]) -> ['a', '<|eot|>', 'b']
    """
    if not special_tokens:
        return [text] if text else []
    # Longest first: regex alternation takes the first alternative that matches at a position.
    alternatives = sorted(special_tokens, key=len, reverse=True)
    pattern = "(" + "|".join(regex.escape(s) for s in alternatives) + ")"
    return [part for part in regex.split(pattern, text) if part]


def bpe(piece, ranks, max_rank=None):
    """Merge the bytes of one pre-token into tokens, exactly as tiktoken does: start from single
    bytes and repeatedly join the adjacent pair whose concatenation has the lowest rank (leftmost
    on ties) until no adjacent pair is a token. Only ranks below `max_rank` are used, if given.
    Ranking the concatenated bytes (rather than looking (id, id) pairs up in the merge list, as
    minbpe does) is tiktoken's rule, so the ids match tiktoken's for any rank table.

    bpe(b"hello", {b"he": 0, b"ll": 1, b"llo": 2}) -> [b'he', b'llo']
    """
    never = float("inf")

    def rank_of(left, right):
        rank = ranks.get(left + right)
        return never if rank is None or (max_rank is not None and rank >= max_rank) else rank

    parts = [piece[i:i + 1] for i in range(len(piece))]
    pair_ranks = [rank_of(a, b) for a, b in zip(parts, parts[1:])]  # pair_ranks[i]: parts[i] + parts[i+1]
    while pair_ranks:
        best = min(pair_ranks)
        if best == never:
            break
        i = pair_ranks.index(best)  # leftmost lowest-rank pair
        parts[i:i + 2] = [parts[i] + parts[i + 1]]
        del pair_ranks[i]
        # Only the two pairs touching the new token changed.
        if i > 0:
            pair_ranks[i - 1] = rank_of(parts[i - 1], parts[i])
        if i < len(pair_ranks):
            pair_ranks[i] = rank_of(parts[i], parts[i + 1])
    return parts


def recover_merges(ranks):
    """Rebuild the ordered merge list behind a tiktoken rank table (bytes -> rank): running BPE
    on a token's own bytes with only the lower ranks stops at exactly the two parts it was made of.

    recover_merges({b"a": 0, b"b": 1, b"ab": 2, b"abb": 3}) -> [(b'a', b'b'), (b'ab', b'b')]
    """
    merges = []
    for token, rank in sorted(ranks.items(), key=lambda item: item[1]):
        if len(token) == 1:
            continue
        parts = bpe(token, ranks, max_rank=rank)
        if len(parts) != 2:
            raise ValueError(f"token {token!r} (rank {rank}) cannot be built from two lower-ranked tokens "
                             f"(BPE stops at {parts!r}); this is not a valid BPE rank table")
        merges.append((parts[0], parts[1]))
    return merges


def render_token(token):
    """Show a token's bytes readably: invalid UTF-8 becomes '�', control characters are escaped.

    render_token(b" hello\\n") -> ' hello\\\\n'
    """
    text = token.decode("utf-8", errors="replace")
    return "".join(ch if ch.isprintable() or ch == " " else ch.encode("unicode_escape").decode("ascii")
                   for ch in text)


def count_pretokens(text, pattern=GPT2_SPLIT_PATTERN, special_tokens=()):
    """How often each pre-token occurs; special tokens are cut out first and never counted.

    count_pretokens("a a a") -> Counter({' a': 2, 'a': 1})
    """
    counts = Counter()
    for part in split_on_specials(text, special_tokens):
        if part not in special_tokens:
            counts.update(regex.findall(pattern, part))
    return counts


class _Descending:
    """Wraps a value so heapq (a min-heap) pops the greatest one first."""
    __slots__ = ("value",)

    def __init__(self, value):
        self.value = value

    def __lt__(self, other):
        return self.value > other.value


def train_bpe(word_counts, num_merges, verbose=False):
    """Learn up to `num_merges` merges from pre-token counts; returns (vocab, merges).

    vocab: {id: bytes}, ids 0-255 are the single bytes, id 256 + i is made by merges[i].
    Each step merges the most frequent adjacent pair; ties go to the lexicographically greater
    pair of byte strings (as in Stanford CS336). Pairs are counted once, then only the words that
    contain the merged pair are updated; a heap with lazy deletion finds the next best pair.
    train_bpe({"aaab": 1}, 2)[1] -> [(b'a', b'a'), (b'aa', b'a')]
    """
    vocab = {i: bytes([i]) for i in range(256)}
    id_of = {token: i for i, token in vocab.items()}
    words = [list(word.encode("utf-8")) for word in word_counts]  # each distinct pre-token, as ids
    freqs = list(word_counts.values())

    stats = [get_stats(ids) for ids in words]  # pair counts inside each word
    pair_counts = defaultdict(int)  # pair -> occurrences in the whole corpus
    where = defaultdict(set)        # pair -> indices of the words that contain it
    for w, word_stats in enumerate(stats):
        for pair, n in word_stats.items():
            pair_counts[pair] += n * freqs[w]
            where[pair].add(w)

    def heap_entry(pair):
        return (-pair_counts[pair], _Descending((vocab[pair[0]], vocab[pair[1]])), pair)

    heap = [heap_entry(pair) for pair in pair_counts]
    heapq.heapify(heap)

    merges = []
    progress = tqdm(total=num_merges, desc="BPE merges", disable=not verbose)
    while len(merges) < num_merges and heap:
        neg_count, _, pair = heapq.heappop(heap)
        if pair_counts.get(pair, 0) != -neg_count:
            continue  # stale: this pair's count changed after the entry was pushed
        new_token = vocab[pair[0]] + vocab[pair[1]]
        if new_token in id_of:
            # Guard (not seen in practice): another pair already made this byte string. Reuse its id,
            # so every byte string keeps one id, as tiktoken requires; no new token is added.
            idx = id_of[new_token]
        else:
            idx = len(vocab)
            vocab[idx], id_of[new_token] = new_token, idx
            merges.append((vocab[pair[0]], vocab[pair[1]]))
            progress.update()

        changes = defaultdict(int)  # pair -> change of its count
        for w in where.pop(pair):  # only the words that contain the pair change
            words[w] = merge(words[w], pair, idx)
            old_stats, new_stats = stats[w], get_stats(words[w])
            stats[w] = new_stats
            for p, n in old_stats.items():
                changes[p] -= n * freqs[w]
            for p, n in new_stats.items():
                changes[p] += n * freqs[w]
                where[p].add(w)
            for p in old_stats.keys() - new_stats.keys() - {pair}:
                where[p].discard(w)
        for p, change in changes.items():
            if change == 0 or p == pair:
                continue
            pair_counts[p] += change
            if pair_counts[p] == 0:
                del pair_counts[p]
            else:
                heapq.heappush(heap, heap_entry(p))
        del pair_counts[pair]
    progress.close()
    return vocab, merges


def _compile(pattern):
    """The pre-tokenization regex, compiled, or an error that says what a pattern should be."""
    if not isinstance(pattern, str):
        raise TypeError(f"pattern must be a regex string such as GPT2_SPLIT_PATTERN, not {type(pattern).__name__}")
    try:
        return regex.compile(pattern)
    except regex.error as e:
        raise ValueError(f"pattern {pattern!r} is not a valid regex ({e}); see GPT2_SPLIT_PATTERN for an example") from None


def _replace_lone_surrogates(text):
    """Lone surrogates (e.g. from JSON "\\ud800") have no UTF-8 form: make them U+FFFD, as tiktoken does."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


# ----------------------------------------------------------------------------------------------
# The tokenizer


class BPETokenizer:
    """A byte-level BPE tokenizer.

    vocab:          {id: bytes}: the 256 single bytes, one token per merge and the special tokens
                    (as their UTF-8 bytes; added if missing), so len(vocab) is the vocabulary size.
    merges:         [(left bytes, right bytes), ...] in the order they were learned (= priority).
    special_tokens: {string: id}, e.g. {"<|endoftext|>": 50256}; a list gets ids after the vocab.
    pattern:        the pre-tokenization regex (`regex` syntax).

    Special tokens in text are recognised by `encode` by default (allowed_special="all"); pass
    allowed_special="none" (or an empty set) to encode them as ordinary text, or a set of strings
    to recognise only those. Unlike tiktoken, encode never raises because a special string appears.
    """

    def __init__(self, vocab, merges, special_tokens=None, pattern=GPT2_SPLIT_PATTERN):
        if not isinstance(vocab, dict) or not all(isinstance(i, int) and isinstance(b, bytes) for i, b in vocab.items()):
            raise TypeError("vocab must be a dict {id (int): token (bytes)}, e.g. {0: b'a', 1: b'b', ...}")
        if not all(isinstance(m, (tuple, list)) and len(m) == 2 and all(isinstance(x, bytes) for x in m) for m in merges):
            raise TypeError("merges must be a list of (bytes, bytes) pairs, e.g. [(b'h', b'e'), (b'he', b'y')]")
        self._regex = _compile(pattern)
        self.pattern = pattern
        self.merges = [tuple(m) for m in merges]

        if special_tokens is None:
            special_tokens = {}
        elif isinstance(special_tokens, (list, tuple)):
            start = max(vocab) + 1
            special_tokens = {s: start + j for j, s in enumerate(special_tokens)}
        if not isinstance(special_tokens, dict) or not all(isinstance(s, str) and s and isinstance(i, int)
                                                           for s, i in special_tokens.items()):
            raise TypeError("special_tokens must be a dict {non-empty string: id} or a list of non-empty strings")
        if len(set(special_tokens.values())) != len(special_tokens):
            raise ValueError(f"two special tokens share an id: {special_tokens}")
        for s, i in special_tokens.items():
            if i in vocab and vocab[i] != s.encode("utf-8"):
                raise ValueError(f"special token {s!r} has id {i}, which vocab already uses for {vocab[i]!r}")
        self.special_tokens = dict(special_tokens)

        # The ordinary (mergeable) tokens: bytes <-> id, as in a tiktoken rank table.
        special_ids = set(special_tokens.values())
        ordinary = {i: token for i, token in vocab.items() if i not in special_ids}
        self._id_of = {token: i for i, token in ordinary.items()}
        if len(self._id_of) != len(ordinary):
            raise ValueError("vocab has two ids with the same bytes; every token must be a distinct byte string")
        missing = [b for b in range(256) if bytes([b]) not in self._id_of]
        if missing:
            raise ValueError(f"vocab lacks the single bytes {missing[:8]}...: a byte-level BPE needs all 256 of them")
        # Priority of each merged token: its position in `merges` (lower merges first).
        self._merge_rank = {}
        for rank, (a, b) in enumerate(self.merges):
            for part in (a, b, a + b):
                if part not in self._id_of:
                    raise ValueError(f"merge {rank} {(a, b)!r} uses or makes {part!r}, which is not in vocab")
            if a + b in self._merge_rank:
                raise ValueError(f"merges {self._merge_rank[a + b]} and {rank} both make {a + b!r}; each token has one merge")
            self._merge_rank[a + b] = rank
        if len(ordinary) != 256 + len(self.merges):
            raise ValueError(f"vocab has {len(ordinary)} non-special tokens but 256 bytes + {len(self.merges)} merges make "
                             f"{256 + len(self.merges)}: every multi-byte token must come from exactly one merge")

        self.vocab = {**ordinary, **{i: s.encode("utf-8") for s, i in self.special_tokens.items()}}
        self._cache = {}  # pre-token string -> ids; cleared when it grows too big (bounded memory)

    # -- training --------------------------------------------------------------------------------

    @classmethod
    def train(cls, text, vocab_size, special_tokens=None, pattern=GPT2_SPLIT_PATTERN, verbose=False):
        """Learn a tokenizer with `vocab_size` tokens in all: 256 bytes + merges + special tokens.

        Special tokens (a list of strings, ids after the merges) are cut out of the text before
        counting, so they are never merged and never appear inside a learned token. If the text
        runs out of pairs first, the vocabulary is smaller than asked.
        """
        if not isinstance(text, str):
            raise TypeError(f"train expects the corpus as one str, not {type(text).__name__}; "
                            "join documents first (e.g. with a special token between them)")
        special_tokens = [] if special_tokens is None else special_tokens
        if isinstance(special_tokens, (str, dict)) or not all(isinstance(s, str) and s for s in special_tokens):
            raise TypeError("special_tokens must be a list of non-empty strings, e.g. ['<|endoftext|>']; "
                            "train assigns their ids itself")
        special_tokens = list(special_tokens)
        if len(set(special_tokens)) != len(special_tokens):
            raise ValueError(f"special_tokens has duplicates: {special_tokens}")
        if not isinstance(vocab_size, int) or vocab_size < 256 + len(special_tokens):
            raise ValueError(f"vocab_size={vocab_size!r} is too small: it counts all tokens, so it must be at least "
                             f"256 (bytes) + {len(special_tokens)} (special tokens) = {256 + len(special_tokens)}")
        _compile(pattern)  # a clear error now rather than deep inside the counting
        word_counts = count_pretokens(text, pattern, special_tokens)
        vocab, merges = train_bpe(word_counts, vocab_size - 256 - len(special_tokens), verbose=verbose)
        return cls(vocab, merges, special_tokens, pattern)

    # -- encoding --------------------------------------------------------------------------------

    def _allowed(self, allowed_special):
        """The set of special-token strings that `encode` should recognise."""
        if allowed_special == "all":
            return set(self.special_tokens)
        if allowed_special == "none" or allowed_special is None:
            return set()
        if isinstance(allowed_special, str) or not isinstance(allowed_special, (set, frozenset, list, tuple)):
            raise TypeError('allowed_special must be "all", "none" or a set of special-token strings')
        unknown = set(allowed_special) - set(self.special_tokens)
        if unknown:
            raise ValueError(f"allowed_special names unknown special tokens {sorted(unknown)}; "
                             f"this tokenizer has {sorted(self.special_tokens)}")
        return set(allowed_special)

    def _chunks(self, text, allowed):
        """Text -> the strings that are encoded one by one: special tokens and pre-tokens."""
        chunks = []
        for part in split_on_specials(text, allowed):
            if part in allowed:
                chunks.append(part)
            else:
                chunks.extend(self._regex.findall(part))
        return chunks

    def _bpe_chunk(self, chunk):
        """One pre-token -> ids."""
        piece = chunk.encode("utf-8")
        if piece in self._id_of:  # the whole chunk is a token: no merging needed (tiktoken does the same)
            return [self._id_of[piece]]
        return [self._id_of[part] for part in bpe(piece, self._merge_rank)]

    def _encode_chunks(self, chunks, allowed):
        """Chunks -> ids. Pre-tokens are cached: real text repeats its words."""
        ids, cache = [], self._cache
        for chunk in chunks:
            if chunk in allowed:
                ids.append(self.special_tokens[chunk])
                continue
            chunk_ids = cache.get(chunk)
            if chunk_ids is None:
                if len(cache) >= 100_000:
                    cache.clear()  # keeps memory bounded on endless streams
                chunk_ids = cache[chunk] = self._bpe_chunk(chunk)
            ids.extend(chunk_ids)
        return ids

    def encode(self, text, allowed_special="all"):
        """Text -> token ids. encode("hello world") -> [31373, 995] with GPT-2's tokenizer.

        allowed_special: "all" (default), "none"/set() to treat special strings as plain text,
        or a set of the special-token strings to recognise.
        """
        if not isinstance(text, str):
            raise TypeError(f"encode expects a str, not {type(text).__name__}"
                            + ("; decode bytes first, e.g. data.decode('utf-8')" if isinstance(text, bytes) else ""))
        allowed = self._allowed(allowed_special)
        return self._encode_chunks(self._chunks(_replace_lone_surrogates(text), allowed), allowed)

    def encode_iterable(self, texts, allowed_special="all", flush_chars=1 << 16):
        """Encode a stream of strings (e.g. an open text file, line by line) lazily.

        Yields exactly the ids of encode("".join(texts)). Strings are gathered until about
        `flush_chars` new characters have arrived, then encoded, except for a short tail: the last
        two chunks (and any possible start of a special token) wait for the next strings, because
        the regex's choice for them can depend on what follows (e.g. " \\n\\n" + "x", "'l" + "l").
        Two chunks of look-ahead are enough for the GPT-2 and GPT-4 patterns. Memory holds about
        `flush_chars` characters plus the longest chunk, whatever the length of the stream.
        """
        if isinstance(texts, (str, bytes)):
            raise TypeError("encode_iterable expects an iterable of str (e.g. an open file); for one string use encode")
        allowed = self._allowed(allowed_special)
        pending, new_chars, high_surrogate = [], 0, ""
        for text in texts:
            if not isinstance(text, str):
                raise TypeError(f"encode_iterable got a {type(text).__name__} item; open files in text mode "
                                "(open(path, encoding='utf-8')) so it yields str")
            text, high_surrogate = high_surrogate + text, ""
            if text and "\ud800" <= text[-1] <= "\udbff":  # may pair with the next string's first character
                text, high_surrogate = text[:-1], text[-1]
            pending.append(text)
            new_chars += len(text)
            if new_chars < flush_chars:
                continue
            buffer = _replace_lone_surrogates("".join(pending))
            chunks = self._chunks(buffer, allowed)
            if sum(map(len, chunks)) != len(buffer):
                raise ValueError("encode_iterable needs a pattern that matches every character (as GPT2_SPLIT_PATTERN "
                                 "does); this one skips some, so join the text and use encode instead")
            # Characters at the end that could be the start of a special token must wait for more text.
            partial_special = max((k for s in allowed for k in range(1, min(len(s), len(buffer) + 1))
                                   if buffer.endswith(s[:k])), default=0)
            n_keep, kept_chars = 0, 0
            while n_keep < len(chunks) and (n_keep < 2 or kept_chars < partial_special):
                n_keep += 1
                kept_chars += len(chunks[-n_keep])
            yield from self._encode_chunks(chunks[:len(chunks) - n_keep], allowed)
            pending, new_chars = [buffer[len(buffer) - kept_chars:]], 0
        buffer = _replace_lone_surrogates("".join(pending) + high_surrogate)
        yield from self._encode_chunks(self._chunks(buffer, allowed), allowed)

    # -- decoding --------------------------------------------------------------------------------

    def decode_bytes(self, ids):
        """Token ids -> the raw bytes they stand for (special tokens as their UTF-8 text)."""
        if isinstance(ids, (str, bytes)):
            raise TypeError(f"decode expects a sequence of token ids (ints), not {type(ids).__name__}")
        parts = []
        for i in ids:
            token = self.vocab.get(i) if type(i) is int else None  # fast path; 104.0 must not pass as 104
            if token is None:
                token = self.vocab[self._check_id(i)]
            parts.append(token)
        return b"".join(parts)

    def _check_id(self, i):
        try:
            i = operator.index(i)  # accepts numpy / torch integer scalars
        except TypeError:
            raise TypeError(f"token ids must be ints, got {i!r} ({type(i).__name__})") from None
        if i not in self.vocab:
            raise ValueError(f"token id {i} is not in this tokenizer's vocabulary (ids run from "
                             f"{min(self.vocab)} to {max(self.vocab)}); was it made by another tokenizer?")
        return i

    def decode(self, ids):
        """Token ids -> text; bytes that are not valid UTF-8 become '�' (same as tiktoken)."""
        return self.decode_bytes(ids).decode("utf-8", errors="replace")

    # -- interop and persistence ----------------------------------------------------------------

    def __len__(self):
        """Number of tokens, special tokens included."""
        return len(self.vocab)

    def __repr__(self):
        return f"BPETokenizer({len(self.vocab)} tokens, {len(self.merges)} merges, special_tokens={self.special_tokens})"

    def to_tiktoken(self, name="course"):
        """The same tokenizer as a (fast, Rust) tiktoken.Encoding: ranks are our ids.

        Its encode(text, allowed_special="all") gives our encode(text) ids. (With special tokens
        that are prefixes of one another, tiktoken does not promise longest-match like we do.)
        """
        merged_ids = [self._id_of[a + b] for a, b in self.merges]
        if any(x >= y for x, y in zip(merged_ids, merged_ids[1:])):
            raise ValueError("tiktoken merges by id (rank), so merged tokens' ids must grow with merge order; "
                             "this tokenizer's ids do not (renumber the vocab in merge order)")
        return tiktoken.Encoding(name=name, pat_str=self.pattern,
                                 mergeable_ranks=dict(self._id_of),
                                 special_tokens=dict(self.special_tokens))

    @classmethod
    def from_tiktoken(cls, encoding):
        """Rebuild vocab, merges, special tokens and pattern from a tiktoken.Encoding."""
        if not isinstance(encoding, tiktoken.Encoding):
            raise TypeError(f"from_tiktoken expects a tiktoken.Encoding (e.g. tiktoken.get_encoding('r50k_base')), "
                            f"not {type(encoding).__name__}")
        ranks = encoding._mergeable_ranks
        vocab = {rank: token for token, rank in ranks.items()}
        return cls(vocab, recover_merges(ranks), dict(encoding._special_tokens), encoding._pat_str)

    def save(self, path):
        """Write the tokenizer to a JSON file (atomically).

        Format (version 1): {"format", "version", "pattern", "special_tokens": {str: id},
        "vocab": [[id, token], ...] sorted by id, "merges": [[left, right], ...] in merge order}.
        Tokens are bytes written as latin-1 strings: one character per byte, so ASCII reads as
        itself (b" the" -> " the") and token.encode("latin-1") gives the bytes back.
        """
        def show(token):
            return json.dumps(token.decode("latin-1"))

        lines = [
            "{",
            f'"format": {json.dumps(FORMAT_NAME)},',
            f'"version": {FORMAT_VERSION},',
            f'"pattern": {json.dumps(self.pattern)},',
            f'"special_tokens": {json.dumps(self.special_tokens, ensure_ascii=False)},',
            '"vocab": [',
            ",\n".join(f"[{i}, {show(token)}]" for i, token in sorted(self.vocab.items())),
            "],",
            '"merges": [',
            ",\n".join(f"[{show(a)}, {show(b)}]" for a, b in self.merges),
            "]",
            "}",
        ]
        atomic_write(path, "\n".join(lines) + "\n")

    @classmethod
    def load(cls, path):
        """Read a tokenizer written by `save`."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no tokenizer file at {path}; save one with BPETokenizer.save(path)")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ValueError(f"{path} is not a valid tokenizer JSON file ({e}); it may be truncated or corrupt: "
                             "save the tokenizer again") from None
        if not isinstance(data, dict) or data.get("format") != FORMAT_NAME:
            raise ValueError(f"{path} is not a file written by BPETokenizer.save (no \"format\": {FORMAT_NAME!r})")
        if data.get("version") != FORMAT_VERSION:
            raise ValueError(f"{path} has format version {data.get('version')!r}; this llm_lib reads version "
                             f"{FORMAT_VERSION}: save it again with the current llm_lib")
        try:
            vocab = {int(i): token.encode("latin-1") for i, token in data["vocab"]}
            merges = [(a.encode("latin-1"), b.encode("latin-1")) for a, b in data["merges"]]
            special_tokens, pattern = data["special_tokens"], data["pattern"]
        except (KeyError, TypeError, ValueError, UnicodeEncodeError) as e:
            raise ValueError(f"{path} is missing or has malformed fields ({type(e).__name__}: {e}); "
                             "save the tokenizer again") from None
        return cls(vocab, merges, special_tokens, pattern)
