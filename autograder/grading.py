"""Grading one notebook with real nbgrader (a class: `autograder.classgrade.grade_class`).

    grade_notebook("02-tokenization", "alice.ipynb")          # -> {"scores": {...}, "total": 7.0, ...}

One `Grader` per chapter owns a temporary nbgrader course (solutions/ as source, a gradebook
holding the checksums and hidden tests); `Grader.grade_submission` grades ONE notebook and never
raises for a bad submission: it returns a `GradeResult` whose `reason` says why it scored zero.
That function is the unit the parallel, sandboxed class grader (`classgrade`) distributes.
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

import nbformat

from .config import CELL_TIMEOUT, REPO_ROOT, SOLUTIONS, STUDENT_ID
from .course import TempCourse
from .fsutil import is_ignored
from .notebook import GradedCell, describe_cell, graded_cells, nbgrader_meta, read_notebook
from .releasing import check_solution_notebooks, resolve_chapters


@dataclass
class GradeResult:
    """The outcome of grading one submission."""

    student_id: str
    scores: dict[str, float | None]  # grade_id -> points earned; None = written answer, graded by hand
    max_scores: dict[str, float]  # grade_id -> points available
    total: float  # points earned on autograded cells
    max_total: float  # points available on autograded cells
    reason: str = ""  # why the submission scored zero / what was wrong with it; "" when all went well
    errors: list[dict] = field(default_factory=list)  # cells that raised: index, grade_id, ename, evalue
    autograded: Path | None = None  # the executed notebook (inside the grader's temporary course)

    def as_dict(self) -> dict:
        d = asdict(self)
        d["autograded"] = str(self.autograded) if self.autograded else None
        return d


def _first_line(text: str, limit: int = 200) -> str:
    line = next((l.strip() for l in str(text).splitlines() if l.strip()), "")
    return line if len(line) <= limit else line[: limit - 3] + "..."


_GENERIC = ("NbGraderException", "Please see", "There was an error processing")


def _error_summary(log: str) -> str:
    """The most telling line of an nbgrader failure log: the last specific exception or error."""
    lines = [l.strip() for l in log.splitlines() if l.strip() and not any(g in l for g in _GENERIC)]
    exceptions = [l for l in lines if re.match(r"^[\w.]*(Error|Exception|Interrupt)\b", l)]
    errors = [l.removeprefix("[ERROR]").strip() for l in lines if l.startswith("[ERROR]")]
    best = exceptions or errors or lines
    return _first_line(best[-1]) if best else "unknown error"


def cell_errors(nb) -> list[dict]:
    """Cells of an executed notebook that raised, with what they raised."""
    found = []
    for index, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        for output in cell.get("outputs", []):
            if output.get("output_type") == "error":
                found.append(
                    {
                        "index": index,
                        "cell": describe_cell(index, cell),
                        "grade_id": nbgrader_meta(cell).get("grade_id"),
                        "tags": list(cell.metadata.get("tags", [])),
                        "ename": output.get("ename", ""),
                        "evalue": _first_line(output.get("evalue", "")),
                    }
                )
                break
    return found


class Grader:
    """Grades submissions for one chapter, one at a time, in one temporary nbgrader course.

        with Grader("02-tokenization") as grader:
            result = grader.grade_submission("alice", Path("alice_02.ipynb"))
    """

    def __init__(self, chapter: str, root: Path | None = None, *, cell_timeout: int = CELL_TIMEOUT, extra_config=None):
        self.root = Path(root or REPO_ROOT).resolve()
        self.chapter = chapter
        check_solution_notebooks(self.root, chapter)
        source = read_notebook(self.root / SOLUTIONS / chapter / f"{chapter}.ipynb")
        self.cells: list[GradedCell] = graded_cells(source)
        self.course = TempCourse(self.root, chapter, cell_timeout=cell_timeout, extra_config=extra_config)
        try:
            self.course.generate_assignment()
        except BaseException:
            self.course.close()
            raise

    @property
    def autograded_root(self) -> Path:
        return self.course.path / "autograded"

    @property
    def db_path(self) -> Path:
        return self.course.db_path

    def zero_result(self, student_id: str, reason: str) -> GradeResult:
        return GradeResult(
            student_id=student_id,
            scores={c.grade_id: (0.0 if c.autograded else None) for c in self.cells},
            max_scores={c.grade_id: c.points for c in self.cells},
            total=0.0,
            max_total=sum(c.points for c in self.cells if c.autograded),
            reason=reason,
        )

    def _inspect(self, path: Path) -> tuple[str | None, str]:
        """(fatal problem or None, note) about a submitted file, before nbgrader sees it."""
        try:
            text = Path(path).read_bytes().decode("utf-8")
        except UnicodeDecodeError:
            return "not a notebook: the file is not UTF-8 text", ""
        try:
            nb = nbformat.reads(text, as_version=4)
        except Exception as exc:  # JSON syntax or not a notebook at all
            return f"not a valid notebook ({type(exc).__name__}: {_first_line(exc)})", ""
        metas = {nbgrader_meta(c).get("grade_id"): nbgrader_meta(c) for c in nb.get("cells", [])}
        present = set(metas)
        expected = [c.grade_id for c in self.cells]
        if expected and not present.intersection(expected):
            return (
                f"wrong notebook: none of the graded cells of {self.chapter} are in it "
                f"(expected e.g. {expected[0]!r}); was the right file submitted?",
                "",
            )
        ungraded = [g for g in expected if g in metas and not metas[g].get("grade")]
        if ungraded:  # nbgrader refuses the notebook ("Inconsistent checksums"): say what happened
            return (
                f"the nbgrader metadata of graded cell(s) {', '.join(ungraded)} was edited (no longer marked "
                "graded); the notebook cannot be autograded: restore the cell(s) from the release and resubmit",
                "",
            )
        missing = [g for g in expected if g not in present]
        note = f"graded cells missing from the submission were re-added from the release: {', '.join(missing)}" if missing else ""
        return None, note

    def grade_submission(self, student_id: str, path: Path) -> GradeResult:
        """Grade one student's notebook. Never raises for a bad submission: a notebook that cannot
        be graded gets a zero result with a `reason`."""
        if not STUDENT_ID.match(student_id or ""):
            return self.zero_result(student_id, f"unusable student id {student_id!r} (letters, digits, . _ @ + - only)")
        problem, note = self._inspect(path)
        if problem:
            return self.zero_result(student_id, problem)
        self.course.submit(student_id, path, self.chapter)
        ok, log = self.course.autograde(student_id)
        executed = self.course.autograded_dir(student_id) / f"{self.chapter}.ipynb"
        if not ok or not executed.exists():
            return self.zero_result(student_id, f"grading failed: {_error_summary(log)}")

        from nbgrader.api import Gradebook

        scores: dict[str, float | None] = {}
        with Gradebook(self.course.db_url, self.course.config.CourseDirectory.course_id) as gb:
            submission = gb.find_submission_notebook(self.chapter, self.chapter, student_id)
            by_name = {g.name: g for g in submission.grades}
            for cell in self.cells:
                grade = by_name.get(cell.grade_id)
                if not cell.autograded:  # a person grades it; nbgrader only scores "no response" (0)
                    if grade is None:
                        scores[cell.grade_id] = None
                    else:
                        scores[cell.grade_id] = grade.manual_score if grade.manual_score is not None else grade.auto_score
                else:
                    scores[cell.grade_id] = float(grade.auto_score or 0.0) if grade is not None else 0.0
        try:
            errors = cell_errors(read_notebook(executed))
        except Exception:
            errors = []
        return GradeResult(
            student_id=student_id,
            scores=scores,
            max_scores={c.grade_id: c.points for c in self.cells},
            total=sum(scores[c.grade_id] or 0.0 for c in self.cells if c.autograded),
            max_total=sum(c.points for c in self.cells if c.autograded),
            reason=note,
            errors=errors,
            autograded=executed,
        )

    def close(self) -> None:
        self.course.close()

    def __enter__(self) -> "Grader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def grade_notebook(chapter: str, path: Path | str, root: Path | None = None, *, cell_timeout: int = CELL_TIMEOUT) -> dict:
    """Grade one notebook file against `chapter`; return a dict:
    `{"student_id", "scores": {grade_id: points}, "max_scores", "total", "max_total", "reason", "errors"}`.

    `grade_notebook("02-tokenization", "solutions/02-tokenization/02-tokenization.ipynb")["total"]`
    """
    root = Path(root or REPO_ROOT).resolve()
    (chapter,) = resolve_chapters(root, [chapter])
    with Grader(chapter, root, cell_timeout=cell_timeout) as grader:
        result = grader.grade_submission("student", Path(path))
    result.autograded = None  # it lived in the temporary course, now gone
    return result.as_dict()


# ---------------------------------------------------------------------------------------------
# A class


@dataclass
class Submission:
    student_id: str
    path: Path | None  # None when the folder holds no usable notebook
    problem: str = ""


def find_submissions(folder: Path, chapter: str) -> list[Submission]:
    """Student notebooks in `folder`: `<student_id>_anything.ipynb` files and/or one folder per
    student holding the notebook (`<chapter>.ipynb`, or its only notebook). Sorted by student id."""
    folder = Path(folder)
    found: dict[str, list[Submission]] = {}
    for entry in sorted(folder.iterdir()):
        if entry.name.startswith(".") or is_ignored(entry.name):
            continue
        if entry.is_file() and entry.suffix == ".ipynb":
            student_id = entry.stem.split("_", 1)[0]
            found.setdefault(student_id, []).append(Submission(student_id, entry))
        elif entry.is_dir():
            notebooks = sorted(
                p for p in entry.rglob("*.ipynb") if not any(part.startswith(".") or is_ignored(part) for part in p.relative_to(entry).parts)
            )
            named = [p for p in notebooks if p.name == f"{chapter}.ipynb"]
            if len(named) == 1:
                sub = Submission(entry.name, named[0])
            elif len(notebooks) == 1:
                sub = Submission(entry.name, notebooks[0])
            elif not notebooks:
                sub = Submission(entry.name, None, f"no notebook in the folder {entry.name}/")
            else:
                names = ", ".join(p.relative_to(entry).as_posix() for p in notebooks)
                sub = Submission(entry.name, None, f"several notebooks ({names}) and none is {chapter}.ipynb")
            found.setdefault(entry.name, []).append(sub)
    result = []
    for student_id, subs in sorted(found.items()):
        if len(subs) > 1:
            names = ", ".join(s.path.name if s.path else "(folder)" for s in subs)
            result.append(Submission(student_id, None, f"several submissions for this student ({names}); keep one"))
        else:
            result.append(subs[0])
    return result


def _fmt(value: float | None) -> str:
    return "" if value is None else f"{value:g}"


def grades_csv(results: list[GradeResult], cells: list[GradedCell]) -> bytes:
    """grades.csv: student_id, one column per graded cell (written answers blank until graded by
    hand), total and max_total (autograded points), reason."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["student_id", *[c.grade_id for c in cells], "total", "max_total", "reason"])
    for r in sorted(results, key=lambda r: r.student_id):
        writer.writerow(
            [r.student_id, *[_fmt(r.scores.get(c.grade_id)) for c in cells], _fmt(r.total), _fmt(r.max_total), r.reason]
        )
    return out.getvalue().encode("utf-8")


def default_out_dir(submissions: Path) -> Path:
    """Where results go when --out is not given: a sibling of the submissions folder."""
    submissions = Path(submissions).resolve()
    return submissions.parent / f"{submissions.name}-graded"
