"""Evaluating the course models: held-out loss, task accuracy, arena ratings, contamination checks.

Four questions, four groups of helpers:

- How well does a model predict text it never saw? `held_out_metrics` (loss, perplexity, bits per byte
  on the held-out works, built on llm_lib.train.held_out_loss and llm_lib.losses.bits_per_byte).
- How often does it answer a checkable task right, and how much does that depend on how we read the
  answer? `parse_answer` / `score_reply` / `accuracy` with three rules: "strict", "first_number",
  "last_number".
- Which of several models is better, from pairwise games? `bradley_terry` (MM fit), `bradley_terry_gd`
  (gradient fit of the same likelihood), `elo_ratings` (sequential updates), `bootstrap_ratings`
  (confidence intervals, reproducible under a seed), and `arena_games` to build the games.
- Did the test data leak into training? `ngram_overlap` / `contamination_report`.

A game is a tuple (a, b, score): players a and b (any hashable names) and score = 1.0 if a won,
0.0 if b won, 0.5 for a tie.
"""

from __future__ import annotations

import math
import random
import re
from collections import Counter

import torch

__all__ = ["COURSE_STAGES", "course_stages", "held_out_metrics", "RULES", "parse_answer", "score_reply",
           "accuracy", "rule_judge", "reward_judge", "arena_games", "check_games", "win_matrix",
           "bradley_terry", "bradley_terry_gd", "bt_probability", "bt_log_likelihood", "to_elo_scale",
           "elo_expected", "elo_update", "elo_ratings", "bootstrap_ratings", "word_ngrams", "ngram_overlap",
           "contamination_report"]

COURSE_STAGES = ("base", "sft", "ppo", "dpo", "grpo")


def course_stages() -> list[str]:
    """The course model stages that llm_lib.pipeline defines today, in training order.

    >>> course_stages()[:2]
    ['base', 'sft']
    """
    from llm_lib.pipeline import STAGES

    return [s for s in COURSE_STAGES if s in STAGES]


# --- held-out loss ---------------------------------------------------------------------------------

def held_out_metrics(model, tokenizer, texts, batch_size: int = 8) -> dict:
    """Loss (nats/token), perplexity and bits per byte of `model` on whole documents `texts`.

    Every token of every text is predicted once (llm_lib.train.held_out_loss). Bits per byte does not
    depend on the tokenizer, so it is the number to compare across tokenizers.

    >>> held_out_metrics(load("base"), load("tokenizer"), ["To be, or not to be"])["perplexity"]  # doctest: +SKIP
    """
    from llm_lib.losses import bits_per_byte
    from llm_lib.train import held_out_loss

    if isinstance(texts, str) or not texts or not all(isinstance(t, str) and t for t in texts):
        raise ValueError("texts must be a non-empty list of non-empty str (whole documents)")
    loss, n_tokens, n_bytes = held_out_loss(model, tokenizer, list(texts), batch_size=batch_size)
    return {"loss": loss, "perplexity": math.exp(loss), "bits_per_byte": bits_per_byte(loss, n_tokens, n_bytes),
            "tokens": n_tokens, "bytes": n_bytes}


# --- task accuracy and answer parsing ---------------------------------------------------------------

RULES = ("strict", "first_number", "last_number")
_NUMBER = re.compile(r"-?\d+")
_END = "<|end|>"


def _normalise(text: str) -> str:
    return " ".join(text.split()).strip(" .!?,;:").casefold()


def parse_answer(reply: str, rule: str = "strict") -> str | None:
    """The answer a grader reads out of `reply` under `rule` (None: no answer found).

    The reply is first cut at <|end|>. Then
    - "strict": the whole reply, whitespace collapsed, surrounding spaces and end punctuation dropped,
      lower-cased ("  Seven. " -> "seven"); an empty reply gives None;
    - "first_number": the first integer in the reply ("3 plus 4 is 7" -> "3");
    - "last_number": the last integer ("3 plus 4 is 7" -> "7").

    >>> [parse_answer("3 plus 4 is 7.", r) for r in RULES]
    ['3 plus 4 is 7', '3', '7']
    """
    if not isinstance(reply, str):
        raise TypeError(f"reply must be a str, got {type(reply).__name__}")
    if rule not in RULES:
        raise ValueError(f"unknown rule {rule!r}; choose one of {RULES}")
    reply = reply.split(_END, 1)[0]
    if rule == "strict":
        return _normalise(reply) or None
    found = _NUMBER.findall(reply)
    if not found:
        return None
    return str(int(found[0] if rule == "first_number" else found[-1]))


def score_reply(task, reply: str, rule: str = "strict") -> bool:
    """Whether `reply` answers `task` (anything with .answer) under `rule`.

    A numeric answer is compared as an integer ("07" == "7"); a non-numeric answer ("king queen") is
    always read with the strict rule, since a number rule cannot find it.

    >>> score_reply(Task("What is 3 plus 4?", "7"), "3 plus 4 is 7", "last_number")
    True
    """
    answer = getattr(task, "answer", None)
    if not isinstance(answer, str):
        raise TypeError(f"task must have a str .answer (an llm_lib.sft.Task), got {type(task).__name__}")
    numeric = _NUMBER.fullmatch(answer.strip()) is not None
    got = parse_answer(reply, rule if numeric else "strict")
    if got is None:
        return False
    if numeric:
        return _NUMBER.fullmatch(got) is not None and int(got) == int(answer)
    return got == _normalise(answer)


def accuracy(tasks, replies, rule: str = "strict") -> float:
    """Fraction of tasks whose reply is right under `rule`.

    >>> accuracy([Task("What is 1 plus 1?", "2")], ["2"])
    1.0
    """
    tasks, replies = list(tasks), list(replies)
    if len(tasks) != len(replies) or not tasks:
        raise ValueError(f"need one reply per task and at least one task, got {len(tasks)} tasks, "
                         f"{len(replies)} replies")
    return sum(score_reply(t, r, rule) for t, r in zip(tasks, replies)) / len(tasks)


# --- arena games -----------------------------------------------------------------------------------

def rule_judge(task, reply_a: str, reply_b: str) -> float:
    """Ground-truth judge: 1.0 if a's reply scores higher under llm_lib.reward.rule_score (correct,
    then concise), 0.0 if b's does, 0.5 on a tie."""
    from llm_lib.reward import rule_score

    sa, sb = rule_score(task, reply_a), rule_score(task, reply_b)
    return 1.0 if sa > sb else 0.0 if sb > sa else 0.5


def reward_judge(reward_model, tok, margin: float = 0.0):
    """A judge that prefers the reply the reward model scores higher (a tie within `margin`)."""

    def judge(task, reply_a, reply_b):
        sa, sb = reward_model.score_texts(tok, [task.prompt] * 2, [reply_a, reply_b]).tolist()
        return 1.0 if sa > sb + margin else 0.0 if sb > sa + margin else 0.5

    return judge


def arena_games(tasks, replies: dict, judge) -> list[tuple]:
    """One game per task per pair of models: (a, b, judge(task, replies[a][i], replies[b][i])).

    replies: {model name: [reply to task i]}. Each pair plays every task once, a as the first argument
    (a judge with a position bias would favour a; ours are symmetric).
    """
    tasks = list(tasks)
    names = list(replies)
    if len(names) < 2:
        raise ValueError(f"an arena needs at least 2 models, got {names}")
    for name in names:
        if len(replies[name]) != len(tasks):
            raise ValueError(f"model {name!r} has {len(replies[name])} replies for {len(tasks)} tasks")
    games = []
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            for k, task in enumerate(tasks):
                games.append((a, b, float(judge(task, replies[a][k], replies[b][k]))))
    return games


def check_games(games) -> list:
    """The sorted list of players in `games`; raises ValueError on a malformed game."""
    games = list(games)
    if not games:
        raise ValueError("no games: need at least one (a, b, score) tuple")
    players = set()
    for g in games:
        if not (isinstance(g, tuple | list) and len(g) == 3):
            raise ValueError(f"a game is (a, b, score), got {g!r}")
        a, b, s = g
        if a == b:
            raise ValueError(f"a player cannot play itself: {g!r}")
        if isinstance(s, bool) or not isinstance(s, int | float) or s not in (0, 0.5, 1):
            raise ValueError(f"score must be 1 (a won), 0 (b won) or 0.5 (tie), got {s!r} in {g!r}")
        players.update((a, b))
    return sorted(players, key=str)


def win_matrix(games, players=None):
    """(P, P) tensor W with W[i, j] = wins of player i over j (a tie counts half to each), and the players.

    >>> W, players = win_matrix([("a", "b", 1), ("a", "b", 0.5)])
    >>> W.tolist(), players
    ([[0.0, 1.5], [0.5, 0.0]], ['a', 'b'])
    """
    players = check_games(games) if players is None else list(players)
    index = {p: i for i, p in enumerate(players)}
    w = [[0.0] * len(players) for _ in players]  # Python lists: far faster than tensor item writes
    for a, b, s in games:
        w[index[a]][index[b]] += s
        w[index[b]][index[a]] += 1 - s
    return torch.tensor(w, dtype=torch.float64), players


# --- Bradley-Terry -----------------------------------------------------------------------------------

def bt_probability(strength_a: float, strength_b: float) -> float:
    """P(a beats b) = s_a / (s_a + s_b) for Bradley-Terry strengths s > 0.

    >>> bt_probability(4.0, 2.0)
    0.6666666666666666
    """
    if strength_a <= 0 or strength_b <= 0:
        raise ValueError(f"strengths must be > 0, got {strength_a}, {strength_b}")
    return strength_a / (strength_a + strength_b)


def bt_log_likelihood(strengths: dict, games) -> float:
    """Sum over games of s ln P(a beats b) + (1 - s) ln P(b beats a): the log-likelihood the fits maximise."""
    total = 0.0
    for a, b, s in games:
        p = bt_probability(strengths[a], strengths[b])
        total += s * math.log(p) + (1 - s) * math.log(1 - p)
    return total


def _check_connected(W, players, prior):
    if prior > 0:
        return
    wins, losses = W.sum(1), W.sum(0)
    for p, w, l in zip(players, wins.tolist(), losses.tolist()):
        if w == 0 or l == 0:
            raise ValueError(f"player {p!r} has {w:g} wins and {l:g} losses: its maximum-likelihood strength is "
                             f"{'0' if w == 0 else 'infinite'}; pass prior > 0 (virtual ties) to regularise")


def bradley_terry(games, prior: float = 0.0, iters: int = 10_000, tol: float = 1e-12) -> dict:
    """Bradley-Terry strengths by minorization-maximization (Hunter 2004), geometric mean 1.

    Model: P(i beats j) = s_i / (s_i + s_j). The MM update is
        s_i <- W_i / sum_j n_ij / (s_i + s_j)
    with W_i the wins of i and n_ij the games between i and j; each step never lowers the likelihood.
    prior > 0 adds `prior` virtual ties to every pair that met (a half win each way), which keeps a
    player who won (or lost) everything at a finite strength.

    >>> s = bradley_terry([("A", "B", 1), ("A", "B", 1), ("A", "B", 0)])
    >>> round(s["A"] / s["B"], 6)
    2.0
    """
    W, players = win_matrix(games)
    if prior < 0:
        raise ValueError(f"prior must be >= 0, got {prior}")
    N = W + W.T  # (P, P) games between each pair
    W = W + 0.5 * prior * (N > 0)
    N = W + W.T
    _check_connected(W, players, prior)
    wins = W.sum(1)  # (P,)
    s = torch.ones(len(players), dtype=torch.float64)
    for _ in range(iters):
        new = wins / (N / (s[:, None] + s[None, :])).sum(1)
        new = new / new.log().mean().exp()  # fix the scale: only ratios are identified
        done = (new - s).abs().max() < tol
        s = new
        if done:
            break
    return dict(zip(players, s.tolist()))


def bradley_terry_gd(games, prior: float = 0.0, steps: int = 2000, lr: float = 2.0) -> dict:
    """The same Bradley-Terry fit by plain gradient ascent on the mean log-likelihood in log-strengths
    theta = ln s, where P(i beats j) = sigmoid(theta_i - theta_j): a logistic regression.

    d/dtheta_k of sum_ij W_ij ln P_ij = sum_j (W_kj P_jk - W_jk P_kj), "wins not expected minus losses
    not expected". Slower and less exact than the MM fit; here to show it is the same model.
    (Plain Python floats: with a handful of players this beats tensor overhead by far.)
    """
    W, players = win_matrix(games)
    N = W + W.T
    W = W + 0.5 * prior * (N > 0)
    _check_connected(W, players, prior)
    w = W.tolist()
    total = float(W.sum())
    P = len(players)
    theta = [0.0] * P
    for _ in range(steps):
        grad = [0.0] * P
        for k in range(P):
            for j in range(P):
                if j != k and (w[k][j] or w[j][k]):
                    p_kj = 1.0 / (1.0 + math.exp(theta[j] - theta[k]))  # P(k beats j)
                    grad[k] += w[k][j] * (1.0 - p_kj) - w[j][k] * p_kj
        theta = [t + lr * g / total for t, g in zip(theta, grad)]
    mean = sum(theta) / P
    return {p: math.exp(t - mean) for p, t in zip(players, theta)}


def to_elo_scale(strengths: dict, anchor: float = 1000.0) -> dict:
    """Strengths -> ratings on the Elo scale: 400 log10(s) + anchor, so a 400-point gap means 10:1 odds.

    >>> to_elo_scale({"a": 10.0, "b": 1.0})
    {'a': 1400.0, 'b': 1000.0}
    """
    if any(v <= 0 for v in strengths.values()):
        raise ValueError("strengths must all be > 0")
    return {k: 400 * math.log10(v) + anchor for k, v in strengths.items()}


# --- Elo -------------------------------------------------------------------------------------------

def elo_expected(rating_a: float, rating_b: float) -> float:
    """Expected score of a against b: 1 / (1 + 10^((R_b - R_a) / 400)).

    >>> elo_expected(1500, 1500)
    0.5
    """
    return 1.0 / (1.0 + 10 ** ((rating_b - rating_a) / 400))


def elo_update(rating_a: float, rating_b: float, score: float, k: float = 32.0) -> tuple[float, float]:
    """Both ratings after one game: R_a += k (score - E_a), R_b -= the same amount (zero-sum).

    >>> elo_update(1500, 1500, 1.0)
    (1516.0, 1484.0)
    """
    if score not in (0, 0.5, 1):
        raise ValueError(f"score must be 1, 0.5 or 0, got {score!r}")
    if k <= 0:
        raise ValueError(f"k must be > 0, got {k}")
    delta = k * (score - elo_expected(rating_a, rating_b))
    return rating_a + delta, rating_b - delta


def elo_ratings(games, k: float = 4.0, initial: float = 1000.0, seed: int | None = None) -> dict:
    """Online Elo ratings after playing `games` in order (or in an order shuffled by `seed`).
    The result depends on the order: the same games shuffled give different ratings, one reason
    Chatbot Arena moved from online Elo to a Bradley-Terry fit."""
    players = check_games(games)
    games = list(games)
    if seed is not None:
        random.Random(seed).shuffle(games)
    r = {p: float(initial) for p in players}
    for a, b, s in games:
        r[a], r[b] = elo_update(r[a], r[b], s, k)
    return r


# --- bootstrap -------------------------------------------------------------------------------------

def bootstrap_ratings(games, fit=None, n_boot: int = 200, seed: int = 0, alpha: float = 0.05) -> dict:
    """Point estimate and percentile confidence interval of each player's rating.

    fit: games -> {player: rating}; default Bradley-Terry (prior 0.5) on the Elo scale. Each of the
    n_boot rounds refits on len(games) games drawn with replacement (random.Random(seed), so the same
    seed gives the same intervals). Returns {player: (estimate, low, high)}, interval (1 - alpha).

    >>> bootstrap_ratings(games, n_boot=100, seed=0)["sft"]  # doctest: +SKIP
    (1012.3, 980.1, 1040.7)
    """
    if fit is None:
        def fit(g):
            return to_elo_scale(bradley_terry(g, prior=0.5))
    games = list(games)
    players = check_games(games)
    if n_boot < 2:
        raise ValueError(f"n_boot must be >= 2, got {n_boot}")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    point = fit(games)
    rng = random.Random(seed)
    samples = {p: [] for p in players}
    for _ in range(n_boot):
        ratings = fit([games[rng.randrange(len(games))] for _ in games])
        for p in players:
            samples[p].append(ratings.get(p, float("nan")))  # a player may miss a resample entirely
    out = {}
    for p in players:
        xs = sorted(x for x in samples[p] if not math.isnan(x))
        lo, hi = _quantile(xs, alpha / 2), _quantile(xs, 1 - alpha / 2)
        out[p] = (point[p], lo, hi)
    return out


def _quantile(xs, q):
    """Linear-interpolated q-quantile of sorted xs (numpy's default rule)."""
    if not xs:
        return float("nan")
    pos = q * (len(xs) - 1)
    i = int(math.floor(pos))
    j = min(i + 1, len(xs) - 1)
    return xs[i] + (xs[j] - xs[i]) * (pos - i)


# --- contamination --------------------------------------------------------------------------------

_WORD = re.compile(r"[a-z']+")


def word_ngrams(text: str, n: int = 8) -> set:
    """The set of lower-cased word n-grams of `text` (punctuation and line breaks ignored).

    >>> sorted(word_ngrams("To be, or not to be", 5))
    [('be', 'or', 'not', 'to', 'be'), ('to', 'be', 'or', 'not', 'to')]
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be an int >= 1, got {n!r}")
    words = _WORD.findall(text.lower())
    return {tuple(words[i:i + n]) for i in range(len(words) - n + 1)}


def ngram_overlap(text: str, reference, n: int = 8) -> float:
    """Fraction of `text`'s distinct word n-grams that also occur in `reference` (a str, or a set from
    word_ngrams). 0 means no n-word passage of text appears in the reference; 1 means every one does.

    >>> ngram_overlap("the cat sat on the mat", "a cat sat on the rug", n=3)
    0.5
    """
    grams = word_ngrams(text, n)
    if not grams:
        raise ValueError(f"text has fewer than {n} words: no {n}-grams to compare")
    ref = reference if isinstance(reference, set) else word_ngrams(reference, n)
    return len(grams & ref) / len(grams)


def contamination_report(train_texts: dict, held_out_texts: dict, n: int = 8) -> dict:
    """How much of each held-out work appears (as word n-grams) in the training works, next to the same
    measure for each training work against the *other* training works (the baseline: what two
    different plays share by chance, stock phrases and stage directions).

    Returns {"held_out": {work: overlap}, "train_baseline": {work: overlap}, "n": n}. A held-out work
    far above the baseline (or a held-out name among the training names) is a leak.
    """
    if not train_texts or not held_out_texts:
        raise ValueError("need at least one training and one held-out work")
    shared = sorted(set(train_texts) & set(held_out_texts))
    if shared:
        raise ValueError(f"works {shared} are in both the training and the held-out set")
    grams = {name: word_ngrams(t, n) for name, t in train_texts.items()}
    counts = Counter(g for gs in grams.values() for g in gs)  # in how many training works each n-gram is
    all_train = set(counts)
    held = {name: len(word_ngrams(t, n) & all_train) / max(1, len(word_ngrams(t, n)))
            for name, t in held_out_texts.items()}
    baseline = {}
    for name, gs in grams.items():
        # n-grams of this work found in another training work: count > 1 (each work counts an n-gram once)
        baseline[name] = sum(counts[g] > 1 for g in gs) / max(1, len(gs))
    return {"held_out": held, "train_baseline": baseline, "n": n}
