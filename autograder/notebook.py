"""The exercise contract at the level of one notebook: what a solution notebook must look like,
which of its lines are secret, and how a released notebook is normalised and serialised.

Cell kinds (nbgrader metadata under `cell.metadata.nbgrader`):
    answer cell   code, solution=true            body wrapped in ### BEGIN/END SOLUTION
    test cell     code, grade=true, points > 0   visible asserts, then ### BEGIN/END HIDDEN TESTS
    written cell  markdown, solution+grade=true  model answer + mark scheme inside BEGIN/END SOLUTION
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

import nbformat

from .config import (
    HIDDEN_TEST_MARKERS,
    KERNELSPEC,
    MARK_SCHEME_MARKERS,
    SKIP_EXECUTION,
    SOLUTION_MARKERS,
)

# A line inside a secret region shorter than this is too generic to call a leak ("return x").
MIN_SECRET_LINE = 25


def nbgrader_meta(cell) -> dict:
    """The cell's nbgrader metadata, `{}` for an ordinary cell."""
    return cell.get("metadata", {}).get("nbgrader", {}) or {}


def is_answer_cell(cell) -> bool:
    """A code cell the student fills in (nbgrader solution=true)."""
    return cell.cell_type == "code" and bool(nbgrader_meta(cell).get("solution"))


def is_test_cell(cell) -> bool:
    """A code cell whose success earns points (nbgrader grade=true)."""
    return cell.cell_type == "code" and bool(nbgrader_meta(cell).get("grade"))


def is_exercise_cell(cell) -> bool:
    """Any cell nbgrader treats specially (answer, test, written answer, task, locked)."""
    meta = nbgrader_meta(cell)
    return any(meta.get(flag) for flag in ("solution", "grade", "task", "locked"))


def describe_cell(index: int, cell) -> str:
    """How messages name a cell: `cell 7 (grade_id 'get_stats_tests')`."""
    grade_id = nbgrader_meta(cell).get("grade_id")
    label = f"grade_id {grade_id!r}" if grade_id else f"id {cell.get('id', '?')!r}"
    return f"cell {index} ({label})"


@dataclass(frozen=True)
class GradedCell:
    """A cell that earns points: a test cell (autograded) or a written answer (graded by hand)."""

    grade_id: str
    points: float
    autograded: bool  # False for written answers, which a person grades


def graded_cells(nb) -> list[GradedCell]:
    """The notebook's graded cells in notebook order."""
    found = []
    for cell in nb.cells:
        meta = nbgrader_meta(cell)
        if meta.get("grade"):
            found.append(GradedCell(meta["grade_id"], float(meta.get("points", 0)), cell.cell_type == "code"))
    return found


def read_notebook(path: Path):
    """Read a notebook without upgrading it (so a missing cell id is reported, not invented)."""
    return nbformat.reads(Path(path).read_text(encoding="utf-8"), as_version=nbformat.NO_CONVERT)


def dumps(nb) -> bytes:
    """Serialise a notebook the one stable way: sorted keys, indent 1, UTF-8, final newline."""
    text = nbformat.writes(nb, version=nbformat.NO_CONVERT)
    return (text if text.endswith("\n") else text + "\n").encode("utf-8")


# ---------------------------------------------------------------------------------------------
# Marker regions


def _region_mask(lines: list[str], markers: tuple[str, str]) -> tuple[list, list[str]]:
    """Per line: True inside a BEGIN/END region, False outside, None for a marker line; + problems."""
    begin, end = markers
    mask, problems, open_ = [], [], False
    for line in lines:
        if begin in line:
            if open_:
                problems.append(f"nested '{begin}'")
            open_ = True
            mask.append(None)
        elif end in line:
            if not open_:
                problems.append(f"'{end}' without a '{begin}' before it")
            open_ = False
            mask.append(None)
        else:
            mask.append(open_)
    if open_:
        problems.append(f"'{begin}' is never closed by '{end}'")
    return mask, problems


def split_regions(source: str, markers: tuple[str, str]) -> tuple[list[str], list[str], list[str]]:
    """Split `source` into (lines inside BEGIN/END regions, lines outside, problems).

    `split_regions("a\\n### BEGIN SOLUTION\\nb\\n### END SOLUTION", SOLUTION_MARKERS) -> (["b"], ["a"], [])`.
    Marker lines themselves are in neither list. Problems: nested, unclosed or unopened regions.
    """
    lines = source.split("\n")
    mask, problems = _region_mask(lines, markers)
    inside = [line for line, m in zip(lines, mask) if m is True]
    outside = [line for line, m in zip(lines, mask) if m is False]
    return inside, outside, problems


def _normalise_space(text: str) -> str:
    return " ".join(text.split())


@dataclass(frozen=True)
class SecretLine:
    text: str  # the stripped line
    where: str  # e.g. "solutions/02-tokenization/02-tokenization.ipynb cell 7 (grade_id 'get_stats')"

    @property
    def needle(self) -> str:
        """What is searched for: the line with runs of white space collapsed."""
        return _normalise_space(self.text)


def secret_lines(nb, label: str, public_text: str = "") -> list[SecretLine]:
    """Non-trivial lines inside SOLUTION / HIDDEN TESTS / MARK SCHEME regions that appear nowhere
    outside those regions (in this notebook or in `public_text`, e.g. llm_lib's own source).

    These are what must never show up in chapters/ or the rendered book.
    """
    candidates: list[SecretLine] = []
    public_parts = [public_text]
    for index, cell in enumerate(nb.cells):
        lines = cell.source.split("\n")
        masks = [_region_mask(lines, markers)[0] for markers in (SOLUTION_MARKERS, HIDDEN_TEST_MARKERS, MARK_SCHEME_MARKERS)]
        where = f"{label} {describe_cell(index, cell)}"
        for line, *states in zip(lines, *masks):
            if any(state is True for state in states):
                if len(line.strip()) >= MIN_SECRET_LINE:
                    candidates.append(SecretLine(line.strip(), where))
            elif all(state is False for state in states):
                public_parts.append(line)
    public = _normalise_space("\n".join(public_parts))
    seen, result = set(), []
    for secret in candidates:
        if secret.needle not in public and secret.needle not in seen:
            seen.add(secret.needle)
            result.append(secret)
    return result


# ---------------------------------------------------------------------------------------------
# The contract for a solution notebook


def validate_solution(nb, label: str) -> list[str]:
    """Everything wrong with a solution notebook, as sentences naming the cell; `[]` if it is fine."""
    problems = []
    if (nb.get("nbformat"), nb.get("nbformat_minor", 0)) < (4, 5):
        problems.append(
            f"{label}: nbformat {nb.get('nbformat')}.{nb.get('nbformat_minor')} has no stable cell ids; "
            "save it as nbformat 4.5 (recent Jupyter does this) with readable cell ids"
        )
    cell_ids: dict[str, int] = {}
    grade_ids: dict[str, int] = {}
    for index, cell in enumerate(nb.cells):
        where = f"{label} {describe_cell(index, cell)}"
        cell_id = cell.get("id")
        if not cell_id:
            problems.append(f"{where}: has no cell id")
        elif cell_id in cell_ids:
            problems.append(f"{where}: cell id {cell_id!r} is also used by cell {cell_ids[cell_id]}")
        else:
            cell_ids[cell_id] = index

        if cell.cell_type == "code" and (cell.get("outputs") or cell.get("execution_count") is not None):
            problems.append(
                f"{where}: has outputs; solution notebooks are stored without outputs "
                "(Jupyter: Edit > Clear Outputs of All Cells, then save)"
            )

        meta = nbgrader_meta(cell)
        if is_exercise_cell(cell):
            grade_id = meta.get("grade_id")
            if not grade_id or not isinstance(grade_id, str):
                problems.append(f"{where}: nbgrader cell without a grade_id")
            elif grade_id in grade_ids:
                problems.append(f"{where}: grade_id {grade_id!r} is also used by cell {grade_ids[grade_id]}")
            else:
                grade_ids[grade_id] = index
        if meta.get("grade"):
            points = meta.get("points")
            if isinstance(points, bool) or not isinstance(points, (int, float)) or points <= 0:
                problems.append(f"{where}: graded cell without points (set nbgrader 'points' to a number > 0)")

        source = cell.source
        has_solution_markers = any(m in source for m in SOLUTION_MARKERS)
        if meta.get("solution"):
            if not all(m in source for m in SOLUTION_MARKERS):
                problems.append(
                    f"{where}: answer cell must wrap its solution in '### BEGIN SOLUTION' / '### END SOLUTION'"
                )
        elif has_solution_markers:
            problems.append(f"{where}: has SOLUTION markers but is not an nbgrader solution cell")
        if any(m in source for m in HIDDEN_TEST_MARKERS) and not meta.get("grade"):
            problems.append(f"{where}: has HIDDEN TESTS markers but is not an nbgrader grade (test) cell")
        for markers in (SOLUTION_MARKERS, HIDDEN_TEST_MARKERS, MARK_SCHEME_MARKERS):
            for problem in split_regions(source, markers)[2]:
                problems.append(f"{where}: {problem}")
    return problems


# ---------------------------------------------------------------------------------------------
# The released notebook


def normalise_released(nb):
    """Return a copy of nbgrader's student version, made ready for chapters/ and the book:

    - answer and test code cells carry the `skip-execution` tag (the book shows, never runs, them);
    - no outputs, no execution counts, no per-cell execution timings;
    - notebook metadata: the python3 kernelspec, a version-free language_info.
    Cell ids and nbgrader metadata (checksums included) are kept: `nbgrader validate` needs them.
    """
    nb = copy.deepcopy(nb)
    nb.nbformat = 4
    nb.nbformat_minor = max(5, nb.get("nbformat_minor", 5))
    metadata = {k: v for k, v in nb.metadata.items() if k not in ("widgets", "celltoolbar", "toc")}
    metadata["kernelspec"] = dict(KERNELSPEC)
    metadata["language_info"] = {"name": "python"}
    nb.metadata = nbformat.from_dict(metadata)
    for cell in nb.cells:
        cell.metadata.pop("execution", None)
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
            if is_answer_cell(cell) or is_test_cell(cell):
                tags = list(cell.metadata.get("tags", []))
                if SKIP_EXECUTION not in tags:
                    tags.append(SKIP_EXECUTION)
                cell.metadata["tags"] = tags
    return nb
