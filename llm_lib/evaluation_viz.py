"""How many games does a leaderboard need? An arena explorer for chapter 13.

    >>> games = {"rule": ev.arena_games(tasks, replies, ev.rule_judge)}
    >>> subsample_games(games["rule"], 2, seed=0)     # at most 2 games per pair of models
    >>> arena_explorer(games)   # pick the judge and the games per pair; the ratings and their 95%
    ...                         # bootstrap intervals are refitted as the slider moves

The ratings are `llm_lib.evaluation.bootstrap_ratings` (Bradley-Terry on the Elo scale, percentile
intervals), the very function the chapter's leaderboard uses. IPython, ipywidgets and matplotlib are
imported inside the functions that need them.
"""
from __future__ import annotations

import random

from llm_lib.display import figure_png, png_html, SnapshotExplorer
from llm_lib.evaluation import bootstrap_ratings, check_games

__all__ = ["subsample_games", "overlapping_pairs", "ratings_figure", "ArenaExplorer", "arena_explorer"]

POINT_COLOUR = "#0072b2"   # Okabe-Ito blue: the rating
CI_COLOUR = "#56b4e9"      # Okabe-Ito sky blue: its 95% interval
N_BOOT = 100


def subsample_games(games, per_pair: int, seed: int = 0) -> list:
    """At most `per_pair` games of each pair of players, drawn without replacement (random.Random(seed)),
    in the order the games came; all games of a pair when it has fewer."""
    if per_pair < 1:
        raise ValueError(f"per_pair must be at least 1, got {per_pair}")
    check_games(games)
    by_pair: dict = {}
    for i, (a, b, _) in enumerate(games):
        by_pair.setdefault(frozenset((a, b)), []).append(i)
    rng = random.Random(seed)
    keep = sorted(i for idx in by_pair.values() for i in (rng.sample(idx, per_pair) if len(idx) > per_pair else idx))
    return [games[i] for i in keep]


def overlapping_pairs(ratings: dict) -> list[tuple[str, str]]:
    """Pairs of players whose intervals overlap: pairs this arena has not separated.
    ratings: {player: (estimate, low, high)}, as bootstrap_ratings returns."""
    players = sorted(ratings, key=lambda p: -ratings[p][0])
    return [(a, b) for i, a in enumerate(players) for b in players[i + 1:]
            if ratings[a][1] <= ratings[b][2] and ratings[b][1] <= ratings[a][2]]


def ratings_figure(ratings: dict, title: str):
    """Horizontal interval plot of {player: (estimate, low, high)}, best at the top (matplotlib's object API)."""
    from matplotlib.figure import Figure

    players = sorted(ratings, key=lambda p: ratings[p][0])
    fig = Figure(figsize=(7, 0.55 * len(players) + 1.4), dpi=100)
    ax = fig.add_subplot()
    for y, p in enumerate(players):
        est, lo, hi = ratings[p]
        ax.plot([lo, hi], [y, y], color=CI_COLOUR, lw=6, solid_capstyle="butt")
        ax.plot([est], [y], "o", color=POINT_COLOUR, ms=8)
        ax.annotate(f"{est:.0f} [{lo:.0f}, {hi:.0f}]", (hi, y), xytext=(6, 0), textcoords="offset points",
                    va="center", fontsize=8, color="#333333")
    ax.set_yticks(range(len(players)), players)
    ax.axvline(1000, color="#999999", lw=0.8, ls="--")
    lows, highs = [r[1] for r in ratings.values()], [r[2] for r in ratings.values()]
    span = max(highs) - min(lows) or 100.0
    ax.set_xlim(min(lows) - 0.05 * span, max(highs) + 0.35 * span)
    ax.set_xlabel("rating (Bradley-Terry on the Elo scale; dot: estimate, bar: 95% bootstrap interval)")
    ax.set_title(title, fontsize=10)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    return fig


class ArenaExplorer(SnapshotExplorer):
    """A judge menu and a games-per-pair slider; the leaderboard is refitted with bootstrap intervals as
    they change. Displaying it shows a static PNG of the initial state (for the built book) and the live
    widget, whose style rule hides the snapshot in JupyterLab."""

    def __init__(self, games_by_judge: dict, per_pair: int | None = None, seed: int = 0):
        import ipywidgets as widgets

        if not games_by_judge:
            raise ValueError("games_by_judge is empty: pass {judge name: games}")
        self.games = {j: list(g) for j, g in games_by_judge.items()}
        for g in self.games.values():
            check_games(g)
        self.seed = seed
        most = max(self._max_per_pair(g) for g in self.games.values())
        self.initial = (next(iter(self.games)), min(per_pair or most, most))
        style, layout = {"description_width": "initial"}, widgets.Layout(width="60%")
        self.judge = widgets.Dropdown(options=list(self.games), value=self.initial[0], description="judge", style=style)
        self.per_pair = widgets.IntSlider(value=self.initial[1], min=1, max=most, description="games per pair",
                                          continuous_update=False, style=style, layout=layout)
        self.image, self.readout = widgets.Image(format="png"), widgets.HTML()
        hide = self._hide_snapshot()
        self.widget = widgets.VBox([self.judge, self.per_pair, self.image, self.readout, hide])
        self.judge.observe(self._update, names="value")
        self.per_pair.observe(self._update, names="value")
        self._update()

    @staticmethod
    def _max_per_pair(games) -> int:
        counts: dict = {}
        for a, b, _ in games:
            counts[frozenset((a, b))] = counts.get(frozenset((a, b)), 0) + 1
        return max(counts.values())

    def ratings(self, judge: str, per_pair: int) -> tuple[dict, int]:
        """({player: (estimate, low, high)}, games used) for this judge and number of games per pair."""
        games = subsample_games(self.games[judge], per_pair, self.seed)
        return bootstrap_ratings(games, n_boot=N_BOOT, seed=self.seed), len(games)

    def _render(self, judge: str, per_pair: int) -> tuple[bytes, str, str]:
        ratings, n = self.ratings(judge, per_pair)
        fig = ratings_figure(ratings, f"{judge} judge, at most {per_pair} games per pair ({n} games)")
        unresolved = overlapping_pairs(ratings)
        readout = (f'<div style="font-size:0.9em;color:#111;margin:2px 0 0 4px">{n} games · '
                   f"<b>{len(unresolved)}</b> of {len(ratings) * (len(ratings) - 1) // 2} pairs not separated "
                   f"(intervals overlap){': ' + ', '.join(f'{a}–{b}' for a, b in unresolved) if unresolved else ''}</div>")
        alt = (f"Leaderboard of {len(ratings)} models by the {judge} judge from {n} games: "
               + "; ".join(f"{p} {e:.0f} (95% interval {lo:.0f} to {hi:.0f})"
                           for p, (e, lo, hi) in sorted(ratings.items(), key=lambda kv: -kv[1][0])))
        return figure_png(fig), readout, alt

    def _update(self, change=None) -> None:
        self.image.value, self.readout.value, _ = self._render(self.judge.value, self.per_pair.value)

    def static_html(self) -> str:
        """The explorer in its initial state as plain HTML with an embedded PNG (no kernel needed)."""
        png, readout, alt = self._render(*self.initial)
        return self._snapshot(png_html(png, alt) + readout, "run the notebook to choose the judge and the number of games yourself.")


def arena_explorer(games_by_judge: dict, per_pair: int | None = None, seed: int = 0) -> ArenaExplorer:
    """{judge name: games} -> an explorer of the leaderboard against the number of games per pair
    (default: all of them)."""
    return ArenaExplorer(games_by_judge, per_pair, seed)
