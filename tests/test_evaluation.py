"""Tests for llm_lib.evaluation: ratings against hand-checked examples, Elo math, bootstrap, parsing,
contamination and bad input."""

import math
import random

import pytest
import torch

from llm_lib import evaluation as ev
from llm_lib.sft import Task


def games_from_counts(counts):
    """{(a, b): (wins of a, wins of b)} -> a list of games."""
    games = []
    for (a, b), (wa, wb) in counts.items():
        games += [(a, b, 1.0)] * wa + [(a, b, 0.0)] * wb
    return games


# --- Bradley-Terry ----------------------------------------------------------------------------------

def test_bt_two_players_closed_form():
    # Two players: the MLE of s_A / s_B is wins_A / wins_B (here 3 / 1).
    s = ev.bradley_terry(games_from_counts({("A", "B"): (3, 1)}))
    assert s["A"] / s["B"] == pytest.approx(3.0, rel=1e-9)
    assert math.sqrt(s["A"] * s["B"]) == pytest.approx(1.0)  # geometric mean fixed to 1


def test_bt_three_players_hand_checked():
    # Frequencies consistent with strengths 4 : 2 : 1: A-B 2:1, B-C 2:1, A-C 4:1. Then every pair's
    # observed win rate equals s_i / (s_i + s_j), so the score equations hold and this is the MLE.
    games = games_from_counts({("A", "B"): (2, 1), ("B", "C"): (2, 1), ("A", "C"): (4, 1)})
    s = ev.bradley_terry(games)
    assert s["A"] / s["C"] == pytest.approx(4.0, rel=1e-8)
    assert s["B"] / s["C"] == pytest.approx(2.0, rel=1e-8)
    elo = ev.to_elo_scale(s)
    assert elo["A"] - elo["C"] == pytest.approx(400 * math.log10(4))


def test_bt_score_equations_and_gradient_fit_agree():
    rng = random.Random(0)
    true = {"a": 3.0, "b": 1.0, "c": 0.5, "d": 2.0}
    games = []
    for _ in range(400):
        x, y = rng.sample(sorted(true), 2)
        games.append((x, y, 1.0 if rng.random() < true[x] / (true[x] + true[y]) else 0.0))
    s = ev.bradley_terry(games)
    W, players = ev.win_matrix(games)
    N = W + W.T
    for i, p in enumerate(players):  # at the MLE, expected wins = observed wins for every player
        expected = sum(N[i, j].item() * s[p] / (s[p] + s[q]) for j, q in enumerate(players) if j != i)
        assert expected == pytest.approx(W[i].sum().item(), rel=1e-6)
    g = ev.bradley_terry_gd(games, steps=3000)
    for p in players:
        assert math.log(g[p]) == pytest.approx(math.log(s[p]), abs=1e-3)
    assert ev.bt_log_likelihood(s, games) >= ev.bt_log_likelihood(g, games) - 1e-9


def test_bt_ties_count_half():
    # one win each way plus two ties: balanced, strengths equal
    s = ev.bradley_terry([("A", "B", 1.0), ("A", "B", 0.0), ("A", "B", 0.5), ("A", "B", 0.5)])
    assert s["A"] == pytest.approx(s["B"])


def test_bt_undefeated_needs_prior():
    games = games_from_counts({("A", "B"): (3, 0), ("B", "C"): (1, 1)})
    with pytest.raises(ValueError, match="prior"):
        ev.bradley_terry(games)
    s = ev.bradley_terry(games, prior=1.0)  # A vs B becomes 3.5 : 0.5 -> finite and ordered
    assert s["A"] > s["B"] > 0 and s["A"] < 1e6


def test_bt_probability_and_log_likelihood():
    assert ev.bt_probability(4.0, 2.0) == pytest.approx(2 / 3)
    ll = ev.bt_log_likelihood({"A": 4.0, "B": 2.0}, [("A", "B", 1.0), ("A", "B", 0.0)])
    assert ll == pytest.approx(math.log(2 / 3) + math.log(1 / 3))
    with pytest.raises(ValueError):
        ev.bt_probability(0.0, 1.0)


# --- Elo ------------------------------------------------------------------------------------------

def test_elo_update_math():
    assert ev.elo_expected(1500, 1500) == 0.5
    assert ev.elo_expected(1400, 1000) == pytest.approx(10 / 11)  # 400 points = 10:1 odds
    assert ev.elo_update(1500, 1500, 1.0, k=32) == (1516.0, 1484.0)
    a, b = ev.elo_update(1400, 1000, 0.0, k=32)  # the upset costs the favourite 32 * 10/11
    assert a == pytest.approx(1400 - 32 * 10 / 11) and b == pytest.approx(1000 + 32 * 10 / 11)
    a, b = ev.elo_update(1200, 1000, 0.5, k=10)
    assert a + b == pytest.approx(2200)  # zero-sum


def test_elo_ratings_order_dependence_and_seed():
    games = games_from_counts({("A", "B"): (6, 4), ("B", "C"): (7, 3), ("A", "C"): (8, 2)})
    r1 = ev.elo_ratings(games, k=16, seed=1)
    assert r1 == ev.elo_ratings(games, k=16, seed=1)
    assert r1 != ev.elo_ratings(games, k=16, seed=2)
    assert sum(r1.values()) == pytest.approx(3000)
    assert r1["A"] > r1["C"]


# --- bootstrap -------------------------------------------------------------------------------------

def test_bootstrap_reproducible_and_contains_estimate():
    rng = random.Random(3)
    true = {"x": 2.0, "y": 1.0, "z": 0.5}
    games = []
    for _ in range(300):
        a, b = rng.sample(sorted(true), 2)
        games.append((a, b, 1.0 if rng.random() < true[a] / (true[a] + true[b]) else 0.0))
    b1 = ev.bootstrap_ratings(games, n_boot=50, seed=7)
    assert b1 == ev.bootstrap_ratings(games, n_boot=50, seed=7)
    assert b1 != ev.bootstrap_ratings(games, n_boot=50, seed=8)
    for est, lo, hi in b1.values():
        assert lo <= est <= hi
    assert b1["x"][0] > b1["z"][0]
    # more games -> narrower intervals
    b4 = ev.bootstrap_ratings(games * 4, n_boot=50, seed=7)
    assert (b4["x"][2] - b4["x"][1]) < (b1["x"][2] - b1["x"][1])


def test_bootstrap_custom_fit_and_bad_input():
    games = games_from_counts({("A", "B"): (3, 2)})
    out = ev.bootstrap_ratings(games, fit=lambda g: ev.elo_ratings(g, k=8), n_boot=20, seed=0)
    assert set(out) == {"A", "B"}
    with pytest.raises(ValueError):
        ev.bootstrap_ratings(games, n_boot=1)
    with pytest.raises(ValueError):
        ev.bootstrap_ratings(games, alpha=1.5)


@pytest.mark.parametrize("bad", [[], [("A", "A", 1.0)], [("A", "B", 2.0)], [("A", "B")], [("A", "B", True)]])
def test_bad_games(bad):
    with pytest.raises(ValueError):
        ev.bradley_terry(bad)


# --- parsing --------------------------------------------------------------------------------------

def test_parse_rules():
    assert ev.parse_answer("3 plus 4 is 7.", "strict") == "3 plus 4 is 7"
    assert ev.parse_answer("3 plus 4 is 7.", "first_number") == "3"
    assert ev.parse_answer("3 plus 4 is 7.", "last_number") == "7"
    assert ev.parse_answer("  Seven!  ", "strict") == "seven"
    assert ev.parse_answer("no digits", "first_number") is None
    assert ev.parse_answer("", "strict") is None
    assert ev.parse_answer("7<|end|> 9", "last_number") == "7"  # cut at <|end|>
    assert ev.parse_answer("-3 or 012", "last_number") == "12"
    with pytest.raises(ValueError):
        ev.parse_answer("7", "fuzzy")
    with pytest.raises(TypeError):
        ev.parse_answer(7, "strict")


def test_score_reply_and_accuracy():
    t = Task("What is 3 plus 4?", "7", "add")
    assert ev.score_reply(t, " 7. ", "strict")
    assert not ev.score_reply(t, "It is 7", "strict")
    assert ev.score_reply(t, "It is 7", "first_number")
    assert not ev.score_reply(t, "3 plus 4 is 7", "first_number")
    assert ev.score_reply(t, "3 plus 4 is 7", "last_number")
    assert ev.score_reply(t, "07", "strict")
    w = Task("Repeat after me: king queen", "king queen", "repeat")
    for rule in ev.RULES:  # word answers are always read strictly
        assert ev.score_reply(w, "King queen.", rule)
        assert not ev.score_reply(w, "king queen 7", rule)
    tasks, replies = [t, t, w], ["7", "3 plus 4 is 7", "king queen"]
    assert ev.accuracy(tasks, replies, "strict") == pytest.approx(2 / 3)
    assert ev.accuracy(tasks, replies, "last_number") == 1.0
    with pytest.raises(ValueError):
        ev.accuracy(tasks, replies[:2])


def test_strict_agrees_with_sft_is_correct_on_clean_replies():
    from llm_lib.sft import is_correct, make_tasks

    for task in make_tasks(30, seed=1, split="test"):
        assert ev.score_reply(task, task.answer, "strict") == is_correct(task, task.answer) is True
        assert ev.score_reply(task, task.answer + ".", "first_number") == is_correct(task, task.answer + ".")


# --- arena ---------------------------------------------------------------------------------------

def test_arena_games_with_rule_judge():
    tasks = [Task("What is 1 plus 2?", "3", "add"), Task("What is 2 plus 2?", "4", "add")]
    replies = {"good": ["3", "4"], "bad": ["5", "4"], "chatty": ["3, I am quite sure of it", "4"]}
    games = ev.arena_games(tasks, replies, ev.rule_judge)
    assert len(games) == 3 * 2
    assert ("good", "bad", 1.0) in games and ("good", "bad", 0.5) in games
    assert ("good", "chatty", 1.0) in games  # both correct, good is concise
    with pytest.raises(ValueError):
        ev.arena_games(tasks, {"good": ["3"], "bad": ["5", "4"]}, ev.rule_judge)
    with pytest.raises(ValueError):
        ev.arena_games(tasks, {"good": ["3", "4"]}, ev.rule_judge)


# --- contamination --------------------------------------------------------------------------------

def test_ngrams_and_overlap():
    assert len(ev.word_ngrams("To be, or not to be", 5)) == 2
    assert ev.ngram_overlap("the cat sat on the mat", "a cat sat on the rug", n=3) == pytest.approx(0.5)
    with pytest.raises(ValueError):
        ev.ngram_overlap("too short", "whatever", n=8)
    with pytest.raises(ValueError):
        ev.word_ngrams("text", 0)


def test_contamination_detects_planted_overlap():
    rng = random.Random(0)
    vocab = ["".join(rng.choice("abcdefghij") for _ in range(5)) for _ in range(500)]

    def doc(k):
        return " ".join(rng.choice(vocab) for _ in range(k))

    train = {"t1": doc(2000), "t2": doc(2000)}
    clean = doc(1000)
    leaked = clean[:] + " " + train["t1"][:4000]  # a copied passage of a training work
    rep = ev.contamination_report(train, {"clean": clean, "leaked": leaked}, n=5)
    assert rep["held_out"]["clean"] < 0.01
    assert rep["held_out"]["leaked"] > 0.3
    assert max(rep["train_baseline"].values()) < 0.01
    with pytest.raises(ValueError, match="both"):
        ev.contamination_report(train, {"t1": train["t1"]})


# --- held-out metrics ------------------------------------------------------------------------------

def test_held_out_metrics_consistent():
    from llm_lib.model import GPT, GPTConfig
    from llm_lib.tokenizer import BPETokenizer

    text = "to be or not to be, that is the question. " * 20
    tok = BPETokenizer.train(text, 300, special_tokens=["<|endoftext|>"])
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=len(tok.vocab), context_length=32, n_layer=1, n_head=2, d_model=16))
    m = ev.held_out_metrics(model, tok, [text[:200], text[200:400]])
    assert m["perplexity"] == pytest.approx(math.exp(m["loss"]))
    assert m["bits_per_byte"] == pytest.approx(m["loss"] * m["tokens"] / (math.log(2) * m["bytes"]))
    assert m["bytes"] == 400
    with pytest.raises(ValueError):
        ev.held_out_metrics(model, tok, "a string, not a list")


def test_course_stages_are_known():
    stages = ev.course_stages()
    assert stages[0] == "base" and set(stages) <= set(ev.COURSE_STAGES)


# --- the arena explorer (llm_lib.evaluation_viz) -------------------------------------------------

def synthetic_arena(per_pair: int, seed: int = 3):
    """Games between players of known Bradley-Terry strengths (strong 4, mid 2, weak 1)."""
    strengths, rng, games = {"strong": 4.0, "mid": 2.0, "weak": 1.0}, random.Random(seed), []
    for a, b in (("strong", "mid"), ("strong", "weak"), ("mid", "weak")):
        for _ in range(per_pair):
            games.append((a, b, 1.0 if rng.random() < ev.bt_probability(strengths[a], strengths[b]) else 0.0))
    return games


def test_subsample_and_overlap():
    from llm_lib import evaluation_viz as V

    games = synthetic_arena(50)
    few = V.subsample_games(games, 4, seed=1)
    assert len(few) == 12 and all(g in games for g in few)
    assert V.subsample_games(games, 4, seed=1) == few and V.subsample_games(games, 500) == games
    with pytest.raises(ValueError, match="per_pair"):
        V.subsample_games(games, 0)
    assert V.overlapping_pairs({"a": (1100, 1050, 1150), "b": (1000, 960, 1040), "c": (990, 900, 1060)}) == [
        ("a", "c"), ("b", "c")]


def test_more_games_separate_more_models():
    """The point of the widget, on games of known strengths: 400 games per pair order the three
    players correctly with no overlapping intervals; 3 games per pair cannot separate them all."""
    from llm_lib import evaluation_viz as V

    explorer = V.arena_explorer({"truth": synthetic_arena(400)})
    full, n = explorer.ratings("truth", 400)
    assert n == 1200 and sorted(full, key=lambda p: -full[p][0]) == ["strong", "mid", "weak"]
    assert V.overlapping_pairs(full) == []
    few, _ = explorer.ratings("truth", 3)
    assert V.overlapping_pairs(few)
    assert all(few[p][2] - few[p][1] > full[p][2] - full[p][1] for p in full)  # wider intervals


def test_arena_explorer_snapshot_and_widget():
    import matplotlib

    matplotlib.use("Agg")
    from llm_lib import evaluation_viz as V

    explorer = V.arena_explorer({"rule": synthetic_arena(20), "other": synthetic_arena(20, seed=4)}, per_pair=10)
    page = explorer.static_html()
    assert "data:image/png;base64," in page and explorer._snapshot_class in page
    assert 'alt="Leaderboard of 3 models by the rule judge from 30 games: strong' in page
    before = explorer.image.value
    explorer.judge.value = "other"
    explorer.per_pair.value = 20
    assert explorer.image.value != before and "60 games" in explorer.readout.value
    with pytest.raises(ValueError, match="empty"):
        V.arena_explorer({})
