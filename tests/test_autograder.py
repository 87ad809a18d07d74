"""The autograder end to end, on a tiny demo course built here (solutions/00-demo: two exercises
with visible + hidden tests, one written question), then on the real chapters in solutions/.

Slow tests run real nbgrader with a real kernel.
"""

from __future__ import annotations

import copy
import csv
import hashlib
import importlib.util
import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from autograder.__main__ import main
from autograder.audit import check_grading, check_no_leaks, check_up_to_date, chapter_secrets
from autograder.checks import check_close, check_equal, check_raises, forbid_calls_into
from autograder.config import ALL_MARKERS, REPO_ROOT, SKIP_EXECUTION
from autograder.classgrade import grade_class
from autograder.grading import grade_notebook
from autograder.releasing import ReleaseError, list_chapters, release

CHAPTER = "00-demo"

# ---------------------------------------------------------------------------------------------
# The demo course


def _answer(grade_id):
    return {"grade": False, "grade_id": grade_id, "locked": False, "schema_version": 3, "solution": True, "task": False}


def _tests(grade_id, points):
    return {"grade": True, "grade_id": grade_id, "locked": True, "points": points, "schema_version": 3, "solution": False, "task": False}


def _written(grade_id, points):
    return {"grade": True, "grade_id": grade_id, "locked": False, "points": points, "schema_version": 3, "solution": True, "task": False}


COUNT_PAIRS = '''def count_pairs(ids):
    """Count adjacent pairs: count_pairs([1, 2, 1, 2]) -> {(1, 2): 2, (2, 1): 1}."""
    ### BEGIN SOLUTION
    counts = {}
    for pair in zip(ids, ids[1:]):
        counts[pair] = counts.get(pair, 0) + 1
    return counts
    ### END SOLUTION'''

COUNT_PAIRS_TESTS = '''check_equal(count_pairs([1, 2, 3]), {(1, 2): 1, (2, 3): 1}, call="count_pairs([1, 2, 3])")
### BEGIN HIDDEN TESTS
rng = random.Random(1234)
for _ in range(20):
    hidden_ids = [rng.randrange(5) for _ in range(rng.randrange(0, 30))]
    expected_counts = {}
    for hidden_pair in zip(hidden_ids, hidden_ids[1:]):
        expected_counts[hidden_pair] = expected_counts.get(hidden_pair, 0) + 1
    check_equal(count_pairs(hidden_ids), expected_counts, call=f"count_pairs({hidden_ids})")
### END HIDDEN TESTS'''

MEAN = '''def mean(xs):
    """The arithmetic mean of a non-empty list; ValueError for an empty one."""
    ### BEGIN SOLUTION
    if not xs:
        raise ValueError("mean() needs at least one number")
    total_of_all_values = sum(xs)
    return total_of_all_values / len(xs)
    ### END SOLUTION'''

# The hidden test compares with the "reference" (statistics.fmean) and forbids delegating to it.
MEAN_TESTS = '''check_close(mean([1.0, 2.0, 4.0]), 7 / 3, call="mean([1.0, 2.0, 4.0])")
check_raises(ValueError, mean, [], call="mean([])")
### BEGIN HIDDEN TESTS
rng = random.Random(99)
hidden_values = [rng.uniform(-5, 5) for _ in range(50)]
expected_mean_value = statistics.fmean(hidden_values)
with forbid_calls_into(statistics):
    actual_mean_value = mean(hidden_values)
check_close(actual_mean_value, expected_mean_value, call="mean(hidden_values)")
### END HIDDEN TESTS'''

WRITTEN = """### BEGIN SOLUTION
Counting adjacent pairs is the first step of byte pair encoding training.

**Mark scheme** (2 points): one point for naming BPE, one point for the merge step.
### END SOLUTION"""


def demo_notebook():
    cells = [
        new_markdown_cell("# A demo chapter\n\nTwo exercises and a written question.", id="intro"),
        new_code_cell(
            "import random\nimport statistics\n\nfrom autograder.checks import check_close, check_equal, check_raises, forbid_calls_into",
            id="imports",
        ),
        new_markdown_cell("## Exercise 1\n\nWrite `count_pairs(ids)`.", id="ex1-task"),
        new_code_cell(COUNT_PAIRS, id="ex1-answer", metadata={"nbgrader": _answer("count_pairs")}),
        new_code_cell(COUNT_PAIRS_TESTS, id="ex1-tests", metadata={"nbgrader": _tests("count_pairs_tests", 2)}),
        new_markdown_cell("## Exercise 2\n\nWrite `mean(xs)` without `statistics`.", id="ex2-task"),
        new_code_cell(MEAN, id="ex2-answer", metadata={"nbgrader": _answer("mean")}),
        new_code_cell(MEAN_TESTS, id="ex2-tests", metadata={"nbgrader": _tests("mean_tests", 3)}),
        new_markdown_cell("The narrative goes on with the reference implementation.", id="narrative-md"),
        new_code_cell("print(statistics.fmean([1, 2, 3]))", id="narrative"),
        new_markdown_cell("## Question\n\nWhy count pairs?", id="q1-prompt"),
        new_markdown_cell(WRITTEN, id="q1-answer", metadata={"nbgrader": _written("why_pairs", 2)}),
    ]
    return new_notebook(
        cells=cells,
        metadata={
            "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
            "language_info": {"name": "python", "version": "3.11.7"},
        },
    )


def make_course(root: Path, nb=None) -> Path:
    folder = root / "solutions" / CHAPTER
    folder.mkdir(parents=True)
    nbformat.write(nb or demo_notebook(), folder / f"{CHAPTER}.ipynb")
    (folder / "data.txt").write_text("a data file the chapter reads\n")
    return root


def fill(nb, grade_id: str, source: str):
    nb = copy.deepcopy(nb)
    for cell in nb.cells:
        if cell.metadata.get("nbgrader", {}).get("grade_id") == grade_id:
            cell.source = source
    return nb


def without_markers(source: str) -> str:
    return "\n".join(line for line in source.split("\n") if "SOLUTION" not in line)


@pytest.fixture(scope="module")
def course(tmp_path_factory) -> Path:
    """A released demo course. Tests must not modify it (copy it first)."""
    root = make_course(tmp_path_factory.mktemp("course"))
    release(root=root, log=lambda _: None)
    return root


def copy_course(course: Path, tmp_path: Path) -> Path:
    dest = tmp_path / "course"
    shutil.copytree(course, dest)
    return dest


def released_nb(root: Path):
    return nbformat.read(root / "chapters" / CHAPTER / f"{CHAPTER}.ipynb", as_version=4)


def tree_bytes(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# ---------------------------------------------------------------------------------------------
# release


def test_release_is_byte_for_byte_reproducible(course, tmp_path):
    first = tree_bytes(course / "chapters")
    assert set(first) == {f"{CHAPTER}/{CHAPTER}.ipynb", f"{CHAPTER}/data.txt"}
    again = copy_course(course, tmp_path)  # another path, a later time
    release(root=again, log=lambda _: None)
    assert tree_bytes(again / "chapters") == first
    release([CHAPTER], root=again, log=lambda _: None)
    assert tree_bytes(again / "chapters") == first
    assert not [p for p in (again / "chapters").iterdir() if p.name.startswith(".")]  # no staging left


def test_released_notebook_hides_solutions_and_tags_exercise_cells(course):
    text = (course / "chapters" / CHAPTER / f"{CHAPTER}.ipynb").read_text()
    assert text.endswith("}\n") and json.loads(text)  # stable formatting, valid JSON
    for marker in ALL_MARKERS:
        assert marker not in text
    secrets = chapter_secrets(course, CHAPTER)
    assert any("total_of_all_values = sum(xs)" in s.text for s in secrets)
    assert any("expected_mean_value = statistics.fmean(hidden_values)" in s.text for s in secrets)
    assert any("first step of byte pair encoding" in s.text for s in secrets)
    for secret in secrets:
        assert secret.text not in text

    nb = released_nb(course)
    solution = demo_notebook()
    assert [c.id for c in nb.cells] == [c.id for c in solution.cells]  # cell ids kept
    assert nb.metadata.kernelspec.name == "python3"
    assert nb.metadata.language_info == {"name": "python"}
    by_id = {c.id: c for c in nb.cells}
    for cell_id in ("ex1-answer", "ex1-tests", "ex2-answer", "ex2-tests"):
        assert SKIP_EXECUTION in by_id[cell_id].metadata.tags
    for cell_id in ("imports", "narrative"):
        assert SKIP_EXECUTION not in by_id[cell_id].metadata.get("tags", [])
    assert "raise NotImplementedError()" in by_id["ex1-answer"].source
    assert by_id["ex1-tests"].source.startswith("check_equal(count_pairs([1, 2, 3])")  # visible tests stay
    assert by_id["q1-answer"].source == "YOUR ANSWER HERE"
    assert all(c.outputs == [] and c.execution_count is None for c in nb.cells if c.cell_type == "code")
    assert (course / "chapters" / CHAPTER / "data.txt").read_bytes() == (course / "solutions" / CHAPTER / "data.txt").read_bytes()


def _with_outputs(nb):
    nb.cells[1].outputs = [nbformat.v4.new_output("stream", text="hello\n")]
    nb.cells[1].execution_count = 1


def _duplicate_grade_id(nb):
    nb.cells[6].metadata.nbgrader["grade_id"] = "count_pairs"


def _no_points(nb):
    del nb.cells[7].metadata.nbgrader["points"]


def _no_solution_markers(nb):
    nb.cells[3].source = without_markers(COUNT_PAIRS)


def _missing_grade_id(nb):
    del nb.cells[4].metadata.nbgrader["grade_id"]


@pytest.mark.parametrize(
    "breakage, message",
    [
        (_with_outputs, "has outputs"),
        (_duplicate_grade_id, "grade_id 'count_pairs' is also used by cell 3"),
        (_no_points, "graded cell without points"),
        (_no_solution_markers, "BEGIN SOLUTION"),
        (_missing_grade_id, "without a grade_id"),
    ],
)
def test_release_refuses_a_broken_solution_notebook(tmp_path, breakage, message):
    nb = demo_notebook()
    breakage(nb)
    root = make_course(tmp_path, nb)
    (root / "chapters" / CHAPTER).mkdir(parents=True)
    (root / "chapters" / CHAPTER / "old.txt").write_text("previous release")
    with pytest.raises(ReleaseError, match="refusing to release 00-demo") as info:
        release(root=root, log=lambda _: None)
    assert message in str(info.value)
    assert tree_bytes(root / "chapters") == {f"{CHAPTER}/old.txt": b"previous release"}  # untouched
    assert main(["release", "--root", str(root)]) == 1


# ---------------------------------------------------------------------------------------------
# check (without kernels)


def test_check_detects_a_stale_chapter(course, tmp_path):
    root = copy_course(course, tmp_path)
    assert all(f.ok for f in check_up_to_date(root, [CHAPTER]))
    nb_path = root / "chapters" / CHAPTER / f"{CHAPTER}.ipynb"
    nb_path.write_text(nb_path.read_text().replace("Two exercises", "Three exercises"))
    (findings,) = check_up_to_date(root, [CHAPTER])
    assert not findings.ok
    assert f"chapters/{CHAPTER}/{CHAPTER}.ipynb differs" in findings.message
    assert "python -m autograder release" in findings.message

    (root / "chapters" / CHAPTER / "notes.md").write_text("hand edit")
    (root / "chapters" / "99-orphan").mkdir()
    messages = " ".join(f.message for f in check_up_to_date(root, [CHAPTER]))
    assert "notes.md is not produced by the release" in messages
    assert "99-orphan/ has no source in solutions/" in messages
    assert main(["check", "--no-grading", "--root", str(root)]) == 1


def test_check_detects_planted_leaks(course, tmp_path, capsys):
    root = copy_course(course, tmp_path)
    assert all(f.ok for f in check_no_leaks(root, [CHAPTER]))

    # a solution line in the released notebook
    nb_path = root / "chapters" / CHAPTER / f"{CHAPTER}.ipynb"
    nb = released_nb(root)
    nb.cells[0].source += "\n\n    total_of_all_values = sum(xs)"
    nbformat.write(nb, nb_path)
    # a hidden-test line in the rendered book, split by syntax highlighting, and a marker
    page = root / "_build" / "html" / "chapters" / CHAPTER / "page.html"
    page.parent.mkdir(parents=True)
    page.write_text(
        '<pre><span class="n">expected_mean_value</span> <span class="o">=</span> '
        "<span>statistics</span>.fmean(hidden_values)</pre><p>### BEGIN HIDDEN TESTS</p>"
    )
    # the instructor guide may explain the markers: not a leak
    guide = root / "_build" / "html" / "book" / "instructor.html"
    guide.parent.mkdir(parents=True)
    guide.write_text("<p>Wrap the answer in <code>### BEGIN SOLUTION</code>.</p>")

    (finding,) = check_no_leaks(root, [CHAPTER])
    assert not finding.ok
    assert f"chapters/{CHAPTER}/{CHAPTER}.ipynb contains 'total_of_all_values = sum(xs)'" in finding.message
    assert "page.html contains 'expected_mean_value = statistics.fmean(hidden_values)'" in finding.message
    assert "page.html contains the marker 'BEGIN HIDDEN TESTS'" in finding.message
    assert "instructor.html" not in finding.message
    assert main(["check", CHAPTER, "--no-grading", "--root", str(root)]) == 1
    assert "LEAK" in capsys.readouterr().out


def test_cli_help_explains_each_command():
    out = subprocess.run(
        [sys.executable, "-m", "autograder", "grade", "--help"], capture_output=True, text=True, cwd=REPO_ROOT, check=True
    ).stdout
    assert "grades.csv" in out and "--chapter" in out and "--out" in out and "--root" in out


# ---------------------------------------------------------------------------------------------
# Grading (real nbgrader, real kernels)


@pytest.fixture(scope="module")
def graded_class(course, tmp_path_factory):
    """A class of six: full marks, untouched release, half done, delegating, invalid JSON, wrong notebook.

    bob's untouched release carries the skip-execution tags on its answer and test cells: his zero
    shows the grader runs those cells anyway (nbclient would skip them by default)."""
    subs = tmp_path_factory.mktemp("submissions")
    released = released_nb(course)
    shutil.copy(course / "solutions" / CHAPTER / f"{CHAPTER}.ipynb", subs / "ada_00-demo.ipynb")
    shutil.copy(course / "chapters" / CHAPTER / f"{CHAPTER}.ipynb", subs / "bob_00-demo.ipynb")
    nbformat.write(fill(released, "count_pairs", without_markers(COUNT_PAIRS)), subs / "cyd_submission.ipynb")
    (subs / "dan").mkdir()  # one folder per student; mean() only delegates to the reference
    cheat = fill(fill(released, "count_pairs", without_markers(COUNT_PAIRS)), "mean", "mean = statistics.fmean")
    nbformat.write(cheat, subs / "dan" / f"{CHAPTER}.ipynb")
    (subs / "eve_00-demo.ipynb").write_text('{"cells": [ this is not JSON')
    nbformat.write(new_notebook(cells=[new_code_cell("1 + 1")]), subs / "fay_other.ipynb")
    before = tree_bytes(subs)
    out = tmp_path_factory.mktemp("graded") / "out"
    results = grade_class(CHAPTER, subs, out, root=course, workers=2, log=lambda _: None, progress=False)
    return {"results": {r.student_id: r for r in results}, "out": out, "subs": subs, "before": before}


@pytest.mark.slow
def test_grading_scores_each_kind_of_submission(graded_class):
    r = graded_class["results"]
    assert r["ada"].total == 5 and r["ada"].max_total == 5 and r["ada"].reason == ""  # the solution
    assert r["bob"].total == 0 and r["bob"].reason == ""  # the release: zero, no crash
    assert r["cyd"].scores == {"count_pairs_tests": 2, "mean_tests": 0, "why_pairs": 0}  # partial credit
    assert r["dan"].scores["count_pairs_tests"] == 2 and r["dan"].scores["mean_tests"] == 0
    dan_error = next(e for e in r["dan"].errors if e["grade_id"] == "mean_tests")
    assert "Your code called statistics.fmean" in dan_error["evalue"]  # delegation caught in hidden tests
    assert r["eve"].total == 0 and "not a valid notebook" in r["eve"].reason
    assert r["fay"].total == 0 and "wrong notebook" in r["fay"].reason


@pytest.mark.slow
def test_grades_csv_and_outputs(graded_class):
    out = graded_class["out"]
    rows = list(csv.reader(io.StringIO((out / "grades.csv").read_text())))
    assert rows[0] == ["student_id", "count_pairs_tests", "mean_tests", "why_pairs", "total", "max_total", "reason"]
    body = {row[0]: row[1:6] for row in rows[1:]}
    assert body == {
        "ada": ["2", "3", "", "5", "5"],  # the written answer awaits a person
        "bob": ["0", "0", "0", "0", "5"],  # "YOUR ANSWER HERE" untouched: nbgrader scores it 0
        "cyd": ["2", "0", "0", "2", "5"],
        "dan": ["2", "0", "0", "2", "5"],
        "eve": ["0", "0", "", "0", "5"],
        "fay": ["0", "0", "", "0", "5"],
    }
    reasons = {row[0]: row[6] for row in rows[1:]}
    assert reasons["eve"].startswith("not a valid notebook") and reasons["ada"] == ""
    assert (out / "gradebook.db").stat().st_size > 0
    for student in ("ada", "bob", "cyd", "dan"):
        assert (out / "autograded" / student / CHAPTER / f"{CHAPTER}.ipynb").is_file()
    assert tree_bytes(graded_class["subs"]) == graded_class["before"]  # submissions untouched
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary files left


@pytest.mark.slow
def test_grade_notebook_and_full_check(course, tmp_path, capsys):
    half = fill(released_nb(course), "count_pairs", without_markers(COUNT_PAIRS))
    nbformat.write(half, tmp_path / "half.ipynb")
    result = grade_notebook(CHAPTER, tmp_path / "half.ipynb", root=course)
    assert result["scores"]["count_pairs_tests"] == 2 and result["total"] == 2 and result["max_total"] == 5

    assert main(["check", "--root", str(course)]) == 0
    out = capsys.readouterr().out
    assert "solution scores 5/5" in out and "released notebook scores 0/5" in out and "check: all good" in out


# ---------------------------------------------------------------------------------------------
# The real chapters (they start to run as soon as a chapter's notebook lands in solutions/)

REAL_CHAPTERS = [c for c in list_chapters(REPO_ROOT) if (REPO_ROOT / "solutions" / c / f"{c}.ipynb").is_file()]
real_chapter = pytest.mark.parametrize(
    "chapter", REAL_CHAPTERS or [pytest.param(None, marks=pytest.mark.skip(reason="no chapter in solutions/ yet"))]
)


@real_chapter
def test_real_chapter_release_is_up_to_date(chapter):
    for finding in check_up_to_date(REPO_ROOT, [chapter], whole_course=False):
        assert finding.ok, finding.message


@real_chapter
def test_real_chapter_leaks_nothing(chapter):
    for finding in check_no_leaks(REPO_ROOT, [chapter], whole_course=False):
        assert finding.ok, finding.message


@pytest.mark.slow
@real_chapter
def test_real_chapter_solution_full_marks_release_zero(chapter):
    for finding in check_grading(REPO_ROOT, [chapter]):
        assert finding.ok, finding.message


# ---------------------------------------------------------------------------------------------
# autograder.checks


def failure(fn, *args, **kwargs) -> str:
    with pytest.raises(AssertionError) as info:
        fn(*args, **kwargs)
    return str(info.value)


def test_check_equal_messages():
    assert failure(check_equal, {(1, 2): 1}, {(1, 2): 1, (2, 3): 1}, "get_stats([1, 2, 3])").startswith(
        "get_stats([1, 2, 3]) returned {(1, 2): 1} but the expected answer is {(1, 2): 1, (2, 3): 1}."
    )
    check_equal({(1, 2): 1, (2, 3): 1}, {(2, 3): 1, (1, 2): 1}, "get_stats([1, 2, 3])")
    message = failure(check_equal, [1, 2, 3], [1, 2, 4], "f()", hint="look at the last pair")
    assert "At [2]: got 3, expected 4." in message and message.endswith("\nHint: look at the last pair")
    assert "(a list)" in failure(check_equal, [1, 2], (1, 2), "f()")
    assert "first differ at position 2" in failure(check_equal, b"abc", b"abd", "f()")
    assert failure(check_equal, None, 5, "f()") == "f() returned None but the expected answer is 5."
    long = failure(check_equal, list(range(10_000)), list(range(9_999)) + [0], "f()")
    assert len(long) < 600 and "At [9999]: got 9999, expected 0." in long


def test_check_equal_on_arrays_and_tensors():
    np = pytest.importorskip("numpy")
    torch = pytest.importorskip("torch")
    check_equal(torch.arange(6).reshape(2, 3), torch.arange(6).reshape(2, 3), "f()")
    check_equal((torch.ones(2), 3), (torch.ones(2), 3), "f()")
    assert "The shape is (2, 3) but should be (3, 2)." in failure(check_equal, torch.zeros(2, 3), torch.zeros(3, 2), "f()")
    assert "The dtype is torch.int32 but should be torch.int64." in failure(
        check_equal, torch.tensor([1], dtype=torch.int32), torch.tensor([1]), "f()"
    )
    message = failure(check_equal, np.array([1, 2, 3]), np.array([1, 5, 3]), "f(x)")
    assert "1 of 3 values differ; the first is at index (1,): got 2, expected 5." in message
    big = failure(check_equal, torch.zeros(300, 300), torch.ones(300, 300), "f()")
    assert "90000 values" in big and len(big) < 600  # summarised, not printed in full


def test_check_close_messages():
    torch = pytest.importorskip("torch")
    check_close(0.1 + 0.2, 0.3, "add(0.1, 0.2)")
    assert failure(check_close, 0.51, 0.5, "mean([0.5])").startswith(
        "mean([0.5]) returned 0.51 but the expected answer is 0.5. The largest error is 0.01"
    )
    x = torch.randn(3, 4, generator=torch.Generator().manual_seed(0))
    check_close(x * (1 + 1e-7), x, "softmax(x)")
    y = x.clone()
    y[1, 2] += 0.1
    assert "The largest error is 0.1 at index (1, 2)" in failure(check_close, y, x, "softmax(x)")
    assert "The shape is (4, 3) but should be (3, 4)." in failure(check_close, x.T, x, "softmax(x)")
    y[0, 0] = float("nan")
    assert "Got nan at index (0, 0)" in failure(check_close, y, x, "softmax(x)")
    assert "Expected a tensor, got a list." in failure(check_close, x.tolist(), x, "softmax(x)")


def test_check_raises():
    def positive(n):
        if n <= 0:
            raise ValueError("n must be positive")
        return n

    def stub(n):
        raise NotImplementedError()

    assert str(check_raises(ValueError, positive, 0, call="positive(0)")) == "n must be positive"
    assert failure(check_raises, ValueError, positive, 3, call="positive(3)") == "positive(3) returned 3 but it should raise ValueError."
    assert "raised NotImplementedError (the exercise is not done yet)" in failure(check_raises, ValueError, stub, 0)


@pytest.fixture
def reference_module(tmp_path, monkeypatch):
    """A stand-in for an llm_lib module, imported from its own file."""
    path = tmp_path / "fake_reference.py"
    path.write_text(
        "def total(xs):\n    return _add_all(xs)\n\n"
        "def _add_all(xs):\n    return sum(xs)\n\n"
        "class Counter:\n    def count(self, xs):\n        return len(xs)\n"
    )
    spec = importlib.util.spec_from_file_location("fake_reference", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setitem(sys.modules, "fake_reference", module)
    return module


def test_forbid_calls_into_catches_delegation(reference_module):
    ref = reference_module
    alias = ref.total  # bound before the block, as a student's answer cell would

    def honest(xs):
        result = 0
        for x in xs:
            result += x
        return result

    def delegating(xs):
        return alias(xs)

    def via_method(xs):
        return ref.Counter().count(xs)

    with forbid_calls_into(ref):
        assert honest([1, 2, 3]) == 6
    for cheat in (delegating, via_method, lambda xs: ref.total(xs)):
        with pytest.raises(AssertionError, match=r"Your code called fake_reference\.(total|Counter\.count)"):
            with forbid_calls_into(ref):
                cheat([1, 2])
    with pytest.raises(AssertionError) as info:
        with forbid_calls_into("fake_reference"):  # a module name works too
            delegating([1])
    assert "implement the algorithm yourself" in str(info.value) and "(from delegating)" in str(info.value)

    # a student swallowing the exception does not escape the check
    def swallowing(xs):
        try:
            return alias(xs)
        except Exception:
            return 0

    with pytest.raises(AssertionError, match="fake_reference.total"):
        with forbid_calls_into(ref):
            swallowing([1])


def test_forbid_calls_into_restores_the_profiler(reference_module):
    seen = []

    def outer_profiler(frame, event, arg):
        seen.append(event)

    sys.setprofile(outer_profiler)
    try:
        with forbid_calls_into(reference_module):
            sum([1, 2])
        assert sys.getprofile() is outer_profiler and seen  # restored, and chained while active
        with pytest.raises(AssertionError):
            with forbid_calls_into(reference_module):
                reference_module.total([1])
        assert sys.getprofile() is outer_profiler
    finally:
        sys.setprofile(None)
    with forbid_calls_into(reference_module):
        pass
    assert sys.getprofile() is None
