"""llm_lib.embeddings: lookups against torch's Embedding, geometry against torch (cosine, SVD/PCA), neighbours and
analogies on hand-built toy spaces, the skip-gram loss against a per-pair enumeration and autograd, the word-vector
trainer on the course corpus (slow), and the two widgets.
"""
import math

import pytest
import torch
import torch.nn.functional as F

from llm_lib.embeddings import (EmbeddingExplorer, Semantle, analogy, build_vocab, cooccurrence_counts,
                                cosine_similarity, most_similar, nearest_neighbours, one_hot, one_hot_lookup,
                                pca_2d, sgns_loss, skipgram_pairs, train_word_vectors, word_tokens)

f64 = dict(dtype=torch.float64)


# ----------------------------------------------------------------------------------------------------
# Lookup


@pytest.mark.parametrize("shape", [(), (5,), (2, 3), (0,)])
def test_one_hot_matches_torch(shape):
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(7, shape, generator=g)
    got = one_hot(ids, 7)
    assert got.dtype == torch.float32 and got.shape == (*shape, 7)
    assert torch.equal(got, F.one_hot(ids, 7).float())


def test_one_hot_rejects_bad_ids():
    with pytest.raises(ValueError, match=r"\[0, 4\)"):
        one_hot(torch.tensor([0, 4]), 4)
    with pytest.raises(ValueError, match=r"\[0, 4\)"):
        one_hot(torch.tensor([-1]), 4)
    with pytest.raises(TypeError, match="integer"):
        one_hot(torch.tensor([1.0]), 4)
    with pytest.raises(TypeError, match="integer"):
        one_hot([1, 2], 4)


def test_one_hot_lookup_is_an_embedding_lookup_with_the_same_gradient():
    torch.manual_seed(0)
    table = torch.nn.Embedding(11, 6)
    ids = torch.randint(11, (3, 4))
    ours_weight = table.weight.detach().clone().requires_grad_()
    ours = one_hot_lookup(ids, ours_weight)
    theirs = table(ids)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=0)
    upstream = torch.randn(3, 4, 6)
    (ours * upstream).sum().backward()
    (theirs * upstream).sum().backward()
    torch.testing.assert_close(ours_weight.grad, table.weight.grad)
    # only the rows of ids that occur receive a gradient
    unused = sorted(set(range(11)) - set(ids.flatten().tolist()))
    assert torch.all(ours_weight.grad[unused] == 0)
    with pytest.raises(ValueError, match="2-D"):
        one_hot_lookup(ids, torch.randn(11))


# ----------------------------------------------------------------------------------------------------
# Geometry


@pytest.mark.parametrize("shape_a, shape_b", [((5,), (5,)), ((4, 5), (5,)), ((3, 1, 5), (1, 4, 5)), ((2, 7), (2, 7))])
def test_cosine_similarity_matches_torch(shape_a, shape_b):
    g = torch.Generator().manual_seed(1)
    a, b = torch.randn(shape_a, generator=g, **f64), torch.randn(shape_b, generator=g, **f64)
    expected = F.cosine_similarity(a, b, dim=-1)
    got = cosine_similarity(a, b)
    assert got.shape == expected.shape and got.dtype == torch.float64
    torch.testing.assert_close(got, expected)


def test_cosine_similarity_special_cases():
    x = torch.tensor([1.0, 2.0, 3.0])
    assert cosine_similarity(x, 2.5 * x).item() == pytest.approx(1.0)
    assert cosine_similarity(x, -x).item() == pytest.approx(-1.0)
    assert cosine_similarity(torch.tensor([1.0, 0.0]), torch.tensor([0.0, 3.0])).item() == 0.0
    zero = torch.zeros(3)
    assert cosine_similarity(x, zero).item() == 0.0
    assert cosine_similarity(zero, zero).item() == 0.0
    torch.testing.assert_close(cosine_similarity(zero, zero), F.cosine_similarity(zero, zero, dim=0))
    # scale invariance, and tiny vectors do not underflow to 0
    assert cosine_similarity(1e-20 * x, x).item() == pytest.approx(1.0)
    with pytest.raises(ValueError, match="same length"):
        cosine_similarity(torch.ones(3), torch.ones(4))
    with pytest.raises(TypeError, match="floating-point"):
        cosine_similarity(torch.ones(3, dtype=torch.long), torch.ones(3))
    with pytest.raises(ValueError, match="scalar"):
        cosine_similarity(torch.tensor(1.0), torch.tensor(1.0))


def test_nearest_neighbours_on_random_data_match_a_brute_force_ranking():
    g = torch.Generator().manual_seed(2)
    for _ in range(20):
        n, d = int(torch.randint(3, 40, (1,), generator=g)), int(torch.randint(1, 9, (1,), generator=g))
        m = torch.randn(n, d, generator=g)
        q = torch.randn(d, generator=g)
        exclude = set(torch.randint(n, (2,), generator=g).tolist())
        k = n - len(exclude)
        sims = F.cosine_similarity(m, q[None], dim=-1)
        ranking = [i for i in torch.sort(sims, descending=True, stable=True).indices.tolist() if i not in exclude]
        got = nearest_neighbours(q, m, k, exclude=exclude)
        assert got.dtype == torch.long and got.tolist() == ranking


def test_nearest_neighbours_toy_space_ties_and_errors():
    m = torch.tensor([[1.0, 0.0], [0.0, 1.0], [2.0, 0.0], [1.0, 1.0], [-1.0, 0.0]])
    q = torch.tensor([3.0, 0.0])
    assert nearest_neighbours(q, m, 2).tolist() == [0, 2]         # equal cosine 1: the lower index first
    assert nearest_neighbours(q, m, 3, exclude=[0]).tolist() == [2, 3, 1]
    assert nearest_neighbours(q, m, 5).tolist() == [0, 2, 3, 1, 4]
    assert nearest_neighbours(q, m, 0).tolist() == []
    with pytest.raises(ValueError, match="k must be"):
        nearest_neighbours(q, m, 5, exclude=[1])
    with pytest.raises(ValueError, match="outside"):
        nearest_neighbours(q, m, 1, exclude=[5])
    with pytest.raises(ValueError, match="one vector"):
        nearest_neighbours(m, m, 1)


# Two meaningful directions (feminine, royal) plus a small private direction per word.
TOY_WORDS = ["man", "woman", "king", "queen", "prince", "princess", "boy", "girl", "apple", "sword"]
TOY_FEATURES = {"man": (0, 0), "woman": (1, 0), "king": (0, 1), "queen": (1, 1), "prince": (0, 0.5),
                "princess": (1, 0.5), "boy": (0, -0.3), "girl": (1, -0.3), "apple": (0.1, -1), "sword": (-0.5, 0.3)}


def toy_space():
    g = torch.Generator().manual_seed(3)
    base = torch.tensor([TOY_FEATURES[w] for w in TOY_WORDS], **f64) * 3.0
    return torch.cat([base, torch.ones(len(TOY_WORDS), 1, **f64), 0.1 * torch.randn(len(TOY_WORDS), 4, generator=g, **f64)], 1)


def test_analogy_on_a_toy_space():
    vectors = toy_space()
    assert analogy("man", "king", "woman", vectors, TOY_WORDS) == ["queen"]
    assert analogy("man", "woman", "prince", vectors, TOY_WORDS) == ["princess"]
    assert analogy("king", "queen", "boy", vectors, TOY_WORDS) == ["girl"]
    top = analogy("man", "king", "woman", vectors, TOY_WORDS, k=7)
    assert len(top) == 7 and not {"man", "king", "woman"} & set(top)     # the three inputs never come back
    target = vectors[2] - vectors[0] + vectors[1]                         # king - man + woman, by hand
    expected = [TOY_WORDS[i] for i in torch.argsort(F.cosine_similarity(vectors, target[None], dim=-1), descending=True).tolist()
                if TOY_WORDS[i] not in ("man", "king", "woman")]
    assert top == expected
    with pytest.raises(ValueError, match="'emperor' is not in the vocabulary"):
        analogy("man", "emperor", "woman", vectors, TOY_WORDS)


def test_most_similar_on_a_toy_space():
    vectors = toy_space()
    rows = most_similar("queen", vectors, TOY_WORDS, k=3)
    assert [w for w, _ in rows] == [TOY_WORDS[i] for i in nearest_neighbours(vectors[3], vectors, 3, exclude=[3]).tolist()]
    assert rows[0][1] == pytest.approx(F.cosine_similarity(vectors[3], vectors[TOY_WORDS.index(rows[0][0])], dim=0).item(), abs=1e-4)
    assert all(a[1] >= b[1] for a, b in zip(rows, rows[1:]))


def _same_up_to_sign(a, b):
    for j in range(a.shape[1]):
        s = torch.sign((a[:, j] * b[:, j]).sum())
        torch.testing.assert_close(a[:, j], s * b[:, j], rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("n, d", [(50, 5), (7, 30), (3, 2), (200, 64)])
def test_pca_2d_matches_the_covariance_eigenvectors_and_pca_lowrank(n, d):
    g = torch.Generator().manual_seed(n + d)
    x = torch.randn(n, d, generator=g, **f64) * torch.linspace(3, 0.5, d, **f64) + 5.0   # distinct variances, offset
    got = pca_2d(x)
    assert got.shape == (n, 2) and got.dtype == torch.float64
    centred = x - x.mean(0)
    _, vecs = torch.linalg.eigh(centred.T @ centred)          # ascending eigenvalues
    _same_up_to_sign(got, centred @ vecs[:, [-1, -2]])
    u, s, _ = torch.pca_lowrank(x, q=min(n, d), center=True, niter=6)
    _same_up_to_sign(got, u[:, :2] * s[:2])
    # the sign convention: in each column the entry of largest magnitude is positive
    for j in range(2):
        assert got[got[:, j].abs().argmax(), j] > 0
    # PCA only sees the spread: shifting all points changes nothing
    torch.testing.assert_close(pca_2d(x + 100.0), got)
    # the coordinates are uncorrelated, the first has the larger variance
    cov = got.T @ got
    assert abs(cov[0, 1].item()) < 1e-8 * cov[0, 0].item() and cov[0, 0] >= cov[1, 1]


def test_pca_2d_rejects_bad_input():
    with pytest.raises(ValueError, match="at least 2 rows"):
        pca_2d(torch.randn(1, 5))
    with pytest.raises(ValueError, match="2-D"):
        pca_2d(torch.randn(5))
    with pytest.raises(ValueError, match="2 columns"):
        pca_2d(torch.randn(5, 1))
    with pytest.raises(TypeError, match="floating-point"):
        pca_2d(torch.ones(4, 3, dtype=torch.long))


# ----------------------------------------------------------------------------------------------------
# Word vectors


def test_word_tokens_keep_dialogue_only():
    text = ("ACT I.\n\nScene I. Elsinore.\n\n[Enter Bernardo.]\n\nBer.\nWho's there?\n\nKING HENRY.\n"
            "O'er the hills, my lord. [Aside.] Long live the king!\nMRS. PAGE.\nNo more.")
    assert word_tokens(text) == ["scene", "i", "elsinore", "who's", "there", "o'er", "the", "hills", "my", "lord",
                                 "long", "live", "the", "king", "no", "more"]
    assert word_tokens("") == []
    with pytest.raises(TypeError):
        word_tokens(b"bytes")


def test_build_vocab_orders_by_count_then_alphabet():
    assert build_vocab("b a c b c c d d".split(), 3) == ["c", "b", "d"]
    assert build_vocab([], 3) == []


def _pairs_by_hand(ids, window):
    return [[ids[i], ids[j]] for i in range(len(ids)) for j in range(max(0, i - window), min(len(ids), i + window + 1)) if j != i]


def test_skipgram_pairs_examples_and_brute_force():
    assert skipgram_pairs(torch.tensor([10, 20, 30]), 1).tolist() == [[10, 20], [20, 10], [20, 30], [30, 20]]
    assert skipgram_pairs(torch.tensor([10, 20, 30]), 2).tolist() == [[10, 20], [10, 30], [20, 10], [20, 30], [30, 10], [30, 20]]
    empty = skipgram_pairs(torch.tensor([], dtype=torch.long), 3)
    assert empty.shape == (0, 2) and empty.dtype == torch.long
    assert skipgram_pairs(torch.tensor([4]), 3).shape == (0, 2)
    g = torch.Generator().manual_seed(4)
    for _ in range(20):
        ids = torch.randint(9, (int(torch.randint(0, 30, (1,), generator=g)),), generator=g)
        window = int(torch.randint(1, 6, (1,), generator=g))
        assert skipgram_pairs(ids, window).tolist() == _pairs_by_hand(ids.tolist(), window)
    with pytest.raises(ValueError, match="window"):
        skipgram_pairs(torch.tensor([1, 2]), 0)
    with pytest.raises(TypeError, match="1-D"):
        skipgram_pairs(torch.tensor([[1, 2]]), 1)


def test_cooccurrence_counts_weigh_the_skipgram_pairs_by_distance():
    g = torch.Generator().manual_seed(5)
    for window in (1, 2, 4):
        ids = torch.randint(6, (40,), generator=g)
        ids[17] = -1   # a break between two texts
        expected = torch.zeros(6, 6, **f64)
        for i in range(40):
            for j in range(max(0, i - window), min(40, i + window + 1)):
                if j != i and ids[i] >= 0 and ids[j] >= 0:
                    expected[ids[i], ids[j]] += (window + 1 - abs(i - j)) / window
        got = cooccurrence_counts(ids, 6, window)
        torch.testing.assert_close(got.double(), expected, rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(got, got.T)
    # with window 1 every weight is 1: the counts are exactly the skip-gram pairs
    ids = torch.randint(6, (30,), generator=g)
    pairs = skipgram_pairs(ids, 1)
    torch.testing.assert_close(cooccurrence_counts(ids, 6, 1), torch.bincount(pairs[:, 0] * 6 + pairs[:, 1], minlength=36).view(6, 6).float())


def test_sgns_loss_is_the_sampled_loss_averaged_over_every_negative():
    """word2vec's loss, pair by pair, with the expectation over negative words written out as a sum, equals sgns_loss
    on the counts; and the gradient the trainer uses, (X + N) σ(S) - X, is autograd's."""
    g = torch.Generator().manual_seed(6)
    V, k = 7, 3
    ids = torch.randint(V, (60,), generator=g)
    pairs = skipgram_pairs(ids, 1)
    X = cooccurrence_counts(ids, V, 1).double()
    noise = X.sum(0) ** 0.75
    noise = noise / noise.sum()
    N = k * X.sum(1, keepdim=True) * noise
    scores = torch.randn(V, V, generator=g, **f64)
    per_pair = 0.0
    for w, c in pairs.tolist():
        per_pair += -F.logsigmoid(scores[w, c]) - k * (noise * F.logsigmoid(-scores[w])).sum()
    torch.testing.assert_close(sgns_loss(scores, X, N), per_pair)
    s = scores.clone().requires_grad_()
    sgns_loss(s, X, N).backward()
    torch.testing.assert_close(s.grad, (X + N) * torch.sigmoid(scores) - X)
    assert sgns_loss(torch.zeros(V, V, **f64), X, N).item() == pytest.approx((X + N).sum().item() * math.log(2))


PLAY = """ROMEO.
The king and the queen ride to the castle, the prince and the princess follow the king.
JULIET.
The man and the woman walk to the town, the boy and the girl follow the man. [Exeunt.]
"""


def test_train_word_vectors_small_is_deterministic_and_lowers_the_loss():
    history = []
    vocab, vectors = train_word_vectors([PLAY, PLAY.lower()], vocab_size=12, dim=8, window=2, steps=40, lr=0.05,
                                        seed=1, history=history)
    assert vocab[0] == "the" and len(vocab) == 12 and "romeo" not in vocab and "exeunt" not in vocab
    assert vectors.shape == (12, 8)
    torch.testing.assert_close(vectors.norm(dim=1), torch.ones(12))
    assert history[0][0] == 0 and history[-1][0] == 39
    assert history[0][1] == pytest.approx(6 * math.log(2), rel=1e-3)   # scores near 0: (1 + negatives) log 2 per pair
    assert history[-1][1] < history[0][1] - 0.3
    again = train_word_vectors([PLAY, PLAY.lower()], vocab_size=12, dim=8, window=2, steps=40, lr=0.05, seed=1)
    assert again[0] == vocab and torch.equal(again[1], vectors)
    other = train_word_vectors([PLAY, PLAY.lower()], vocab_size=12, dim=8, window=2, steps=40, lr=0.05, seed=2)
    assert not torch.equal(other[1], vectors)
    with pytest.raises(TypeError, match="iterable of strings"):
        train_word_vectors(PLAY)
    with pytest.raises(ValueError, match="fewer than two"):
        train_word_vectors(["ROMEO.\nhey hey"])


@pytest.fixture(scope="module")
def shakespeare_vectors():
    from llm_lib.data import shakespeare_texts

    return train_word_vectors(shakespeare_texts("modern").values())


@pytest.mark.slow
def test_shakespeare_vectors_know_some_shakespeare(shakespeare_vectors):
    vocab, vectors = shakespeare_vectors
    assert len(vocab) == 3000 and vectors.shape == (3000, 64)
    assert "day" in [w for w, _ in most_similar("night", vectors, vocab, 3)]
    assert "mother" in [w for w, _ in most_similar("father", vectors, vocab, 3)]
    assert {"two", "four", "five"} <= {w for w, _ in most_similar("three", vectors, vocab, 8)}
    assert "queen" in analogy("man", "king", "woman", vectors, vocab, k=3)
    assert analogy("he", "his", "she", vectors, vocab) == ["her"]
    assert analogy("give", "gave", "take", vectors, vocab) == ["took"]
    # "0: unrelated": two random words are much less similar than a word and its nearest neighbour
    sims = cosine_similarity(vectors[None, :500], vectors[:500, None])
    assert sims.mean().item() < 0.3


# ----------------------------------------------------------------------------------------------------
# Widgets


def test_embedding_explorer_static_rendering_and_unknown_words():
    pytest.importorskip("ipywidgets")
    vectors = toy_space()
    explorer = EmbeddingExplorer(TOY_WORDS, vectors, word="queen", k=4, map_words=8)
    page = explorer.static_html()
    assert "queen" in page and "<img" in page and explorer._snapshot_class in page
    assert "Static snapshot" in page
    assert "not among" in explorer.panel_html("emperor")
    explorer.picker.value = "sword"   # the live widget follows the picker
    assert "nearest to &#x27;sword&#x27;" in explorer.panel.value
    with pytest.raises(ValueError, match="not in the vocabulary"):
        EmbeddingExplorer(TOY_WORDS, vectors, word="emperor")
    with pytest.raises(ValueError, match="rows"):
        EmbeddingExplorer(TOY_WORDS[:5], vectors)


def test_semantle_scores_guesses_by_similarity_and_rank():
    pytest.importorskip("ipywidgets")
    vectors = toy_space()
    game = Semantle(TOY_WORDS, vectors, secret="queen", demo=["king", "apple"])
    assert game.guess("queen") == (pytest.approx(1.0), 0)
    order = nearest_neighbours(vectors[3], vectors, len(TOY_WORDS) - 1, exclude=[3]).tolist()
    for rank, i in enumerate(order, start=1):
        sim, r = game.guess(TOY_WORDS[i])
        assert r == rank and sim == pytest.approx(F.cosine_similarity(vectors[3], vectors[i], dim=0).item(), abs=1e-6)
    snapshot = game.static_html()   # made from the demo guesses only, and never tells the secret
    assert "king" in snapshot and "apple" in snapshot and "queen" not in snapshot
    with pytest.raises(ValueError, match="not in the vocabulary"):
        game.guess("emperor")
    game._play("  QUEEN ")
    assert "You found it!" in game.panel.value and "The secret word was" in game.panel.value
    hinted = Semantle(TOY_WORDS, vectors, secret="queen")
    hinted._hint()
    assert len(hinted.guesses) == 1 and list(hinted.guesses.values())[0][1] > 0
    assert Semantle(TOY_WORDS, vectors, seed=5).secret in TOY_WORDS
