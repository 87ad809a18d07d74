"""The course's exercises at a glance: one row per graded cell of every released chapter.

The book's "Index of exercises" page (book/exercises.md) renders `exercise_index()` as a table, so the
index is read from the same notebooks students get and can never disagree with them.

    >>> rows = exercise_index(REPO_ROOT)
    >>> rows[0].chapter, rows[0].title, rows[0].points, rows[0].graded_by
    ('01-data', 'Exercise 1: shingles', 2.0, 'autograder')
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from autograder.config import CHAPTERS
from autograder.notebook import nbgrader_meta, read_notebook

HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*$", re.M)
POINTS_NOTE = re.compile(r"\s*\(\d+(\.\d+)? points?[^)]*\)$")  # "(2 points)", "(3 points, graded by hand)"


@dataclass(frozen=True)
class Exercise:
    chapter: str
    grade_id: str
    title: str  # the last heading above the graded cell
    points: float
    graded_by: str  # "autograder" or "instructor" (written answers)


def chapter_exercises(path: Path) -> list[Exercise]:
    """The graded cells of one chapter notebook, titled by the nearest heading above each."""
    nb, title, found = read_notebook(path), "", []
    for cell in nb.cells:
        if cell.cell_type == "markdown" and not nbgrader_meta(cell).get("grade"):
            headings = HEADING.findall(cell.source)
            title = POINTS_NOTE.sub("", headings[-1]) if headings else title
        meta = nbgrader_meta(cell)
        if meta.get("grade"):
            found.append(Exercise(path.parent.name, meta["grade_id"], title, float(meta.get("points", 0)),
                                  "autograder" if cell.cell_type == "code" else "instructor"))
    return found


def exercise_index(root: Path) -> list[Exercise]:
    """Every graded cell of every chapter in `root/chapters/`, in chapter order."""
    notebooks = sorted((Path(root) / CHAPTERS).glob("*/*.ipynb"))
    return [exercise for path in notebooks if path.stem == path.parent.name for exercise in chapter_exercises(path)]
