"""`python -m autograder grade`: the parallel, sandboxed, resumable class grader (autograder.classgrade).

The demo course comes from test_autograder.py. Every submission below is a real notebook graded by
real nbgrader in a real (sandboxed) kernel; the hostile ones attack the grader from inside.
"""

from __future__ import annotations

import csv
import html
import io
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell

from autograder.classgrade import grade_class, unpack_zip
from autograder.config import REPO_ROOT
from autograder.releasing import release

from test_autograder import CHAPTER, COUNT_PAIRS, COUNT_PAIRS_TESTS, MEAN_TESTS, fill, make_course, released_nb, tree_bytes, without_markers

ROOT = os.geteuid() == 0
needs_root = pytest.mark.skipif(not ROOT, reason="isolation (uid, namespaces) needs root")


def hidden_lines() -> list[str]:
    lines = []
    for source in (COUNT_PAIRS_TESTS, MEAN_TESTS):
        inside = source.split("### BEGIN HIDDEN TESTS")[1].split("### END HIDDEN TESTS")[0]
        lines += [" ".join(l.split()) for l in inside.splitlines() if len(l.strip()) >= 25]
    return lines


def html_text(path: Path) -> str:
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", path.read_text())).split())


@pytest.fixture(scope="module")
def course(tmp_path_factory) -> Path:
    root = make_course(tmp_path_factory.mktemp("course"))
    release(root=root, log=lambda _: None)
    return root


def solution(course: Path):
    return nbformat.read(course / "solutions" / CHAPTER / f"{CHAPTER}.ipynb", as_version=4)


def with_cell(nb, source: str, after: str = "imports"):
    """`nb` with an extra student cell after the cell whose id is `after`."""
    nb = nbformat.from_dict(json.loads(json.dumps(nb)))
    index = next(i for i, c in enumerate(nb.cells) if c.get("id") == after)
    nb.cells.insert(index + 1, new_code_cell(source, id=f"student-{len(nb.cells)}"))
    return nb


SNOOP = r'''
import os, socket
targets = {TARGETS!r}
for name, path in targets.items():
    try:
        with open(path, "rb") as f:
            print("LEAKED", name, len(f.read()))
    except Exception as exc:
        print("BLOCKED", name, type(exc).__name__)
for name, path in {{"repo": {REPO!r} + "/pwned.txt", "subs": {SUBS!r} + "/pwned.txt"}}.items():
    try:
        open(path, "w").write("x")
        print("WROTE", name)
    except Exception as exc:
        print("BLOCKED", "write-" + name, type(exc).__name__)
try:
    socket.create_connection(("127.0.0.1", {PORT}), timeout=3)
    print("LEAKED network")
except Exception as exc:
    print("BLOCKED network", type(exc).__name__)
'''

FORK_BOMB = '''
import os, time
children = 0
for _ in range(5000):
    try:
        if os.fork() == 0:
            time.sleep(3)
            os._exit(0)
        children += 1
    except OSError:
        break
print("FORKED", children)
'''

TAMPER = '''
import autograder.checks as checks
checks.check_equal = lambda *args, **kwargs: None
checks.check_close = lambda *args, **kwargs: None
checks.check_raises = lambda *args, **kwargs: None
check_equal, check_close, check_raises = checks.check_equal, checks.check_close, checks.check_raises
'''

BUILTINS = """
import builtins
builtins.isinstance = lambda *args: True
builtins.AssertionError = type("Quiet", (Exception,), {})
"""

TESTING = """
import numpy.testing, torch.testing
numpy.testing.assert_allclose = lambda *args, **kwargs: None
torch.testing.assert_close = lambda *args, **kwargs: None
"""


def edit_cell(nb, grade_id: str, change):
    """A copy of `nb` after `change(nb, index)` on the cell with this grade id."""
    nb = nbformat.from_dict(json.loads(json.dumps(nb)))
    change(nb, next(i for i, c in enumerate(nb.cells) if c.metadata.get("nbgrader", {}).get("grade_id") == grade_id))
    return nb


def retype(nb, i: int) -> None:
    cell = nb.cells[i]
    nb.cells[i] = nbformat.v4.new_markdown_cell(cell.source, id=cell.id, metadata=cell.metadata)


JUNK_ANSWERS = {"count_pairs": "def count_pairs(ids):\n    return {}", "mean": "def mean(xs):\n    return 0.0"}


@pytest.fixture(scope="module")
def hostile(course, tmp_path_factory):
    subs = tmp_path_factory.mktemp("hostile")
    out = tmp_path_factory.mktemp("graded") / "out"
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    sol, rel = solution(course), released_nb(course)
    junk = fill(fill(rel, "count_pairs", JUNK_ANSWERS["count_pairs"]), "mean", JUNK_ANSWERS["mean"])
    targets = {
        "solutions": str(course / "solutions" / CHAPTER / f"{CHAPTER}.ipynb"),
        "gradebook": str(out / "gradebook.db"),
        "other-student": str(subs / "ada_x.ipynb"),
    }
    class_ = {
        "ada": sol,  # honest: full marks
        "loop": with_cell(sol, "while True:\n    pass"),
        "forkbomb": with_cell(sol, FORK_BOMB),
        "memhog": with_cell(sol, "hog = bytearray(64 * 1024**3)"),
        "snoop": with_cell(sol, SNOOP.format(TARGETS=targets, REPO=str(REPO_ROOT), SUBS=str(subs), PORT=listener.getsockname()[1])),
        "sysexit": with_cell(sol, "import sys\nsys.exit(3)"),
        "osexit": with_cell(sol, "import os\nos._exit(1)", after="ex1-tests"),
        "segv": with_cell(sol, "import ctypes\nctypes.string_at(0)", after="ex1-tests"),
        "output": with_cell(sol, "for _ in range(40):\n    print('x' * 1_000_000)"),
        "tamper": with_cell(junk, TAMPER),
        "delegate": fill(sol, "mean", "mean = statistics.fmean"),  # calls the reference: caught by the hidden test
        "other": nbformat.v4.new_notebook(cells=[new_code_cell("1 + 1")]),  # another chapter's notebook
        "edited": fill(junk, "count_pairs_tests", "pass"),
        "deleted": edit_cell(sol, "mean_tests", lambda nb, i: nb.cells.pop(i)),  # nbgrader re-adds it: full marks
        "retyped": edit_cell(sol, "count_pairs_tests", retype),  # turned into markdown: restored and run
        "points": edit_cell(sol, "mean_tests", lambda nb, i: nb.cells[i].metadata.nbgrader.update(points=100)),
        "shadow": with_cell(sol, "str = 'a string called str'\nAssertionError = ValueError"),  # honest, if unwise
        "ungraded": edit_cell(junk, "mean_tests", lambda nb, i: nb.cells[i].metadata.nbgrader.update(grade=False, locked=False)),
        "builtins": with_cell(junk, BUILTINS),
        "testing": with_cell(junk, TESTING),
    }
    for student, nb in class_.items():
        nbformat.write(nb, subs / f"{student}_{CHAPTER}.ipynb")
    dup = json.loads((subs / f"ada_{CHAPTER}.ipynb").read_text())
    for cell in dup["cells"]:
        cell["id"] = "same"  # duplicated cell ids
    (subs / f"dupids_{CHAPTER}.ipynb").write_text(json.dumps(dup))
    (subs / f"badjson_{CHAPTER}.ipynb").write_text('{"cells": [ not json')
    before = tree_bytes(subs)
    results = grade_class(CHAPTER, subs, out, root=course, workers=2, cell_timeout=20, log=lambda _: None, progress=False)
    listener.close()
    return {"results": {r.student_id: r for r in results}, "out": out, "subs": subs, "before": before, "course": course}


def outputs(hostile, student: str) -> str:
    nb = nbformat.read(hostile["out"] / "autograded" / student / CHAPTER / f"{CHAPTER}.ipynb", as_version=4)
    return "\n".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))


@pytest.mark.slow
def test_honest_and_harmless_submissions_keep_full_marks(hostile):
    r = hostile["results"]
    for student in ("ada", "loop", "forkbomb", "memhog", "snoop", "sysexit", "output", "dupids", "deleted", "retyped", "points",
                    "shadow"):
        assert r[student].total == 5 and r[student].max_total == 5, (student, r[student].reason, r[student].errors)
    assert "re-added from the release: mean_tests" in r["deleted"].reason


@pytest.mark.slow
def test_a_dead_kernel_keeps_the_points_earned_before(hostile):
    r = hostile["results"]
    for student in ("osexit", "segv"):
        assert r[student].scores["count_pairs_tests"] == 2 and r[student].scores["mean_tests"] == 0, student
        assert "kernel died" in r[student].reason


@pytest.mark.slow
def test_cheats_and_broken_notebooks_score_zero_with_a_reason(hostile):
    r = hostile["results"]
    for student in ("tamper", "testing"):  # monkeypatched checks, numpy/torch testing
        assert r[student].total == 0 and "tampering detected" in r[student].reason, (student, r[student].reason)
    # Redefined builtins break ipykernel itself: the kernel stops answering and is given up on
    assert r["builtins"].total == 0 and "stopped answering" in r["builtins"].reason, r["builtins"].reason
    nb = nbformat.read(hostile["out"] / "autograded" / "builtins" / CHAPTER / f"{CHAPTER}.ipynb", as_version=4)
    stuck = [c for c in nb.cells if "builtins.isinstance" in c.source]  # the probe left the timed-out cell as it was
    assert len(stuck) == 1 and [o.get("ename") for o in stuck[0].outputs] == ["CellTimeoutError"]
    assert r["ungraded"].total == 0 and "metadata of graded cell(s) mean_tests was edited" in r["ungraded"].reason
    assert r["edited"].total == 0  # the test cell was restored from the gradebook
    assert r["badjson"].total == 0 and "not a valid notebook" in r["badjson"].reason
    assert r["other"].total == 0 and "wrong notebook" in r["other"].reason
    assert r["delegate"].scores["count_pairs_tests"] == 2 and r["delegate"].scores["mean_tests"] == 0


@pytest.mark.slow
def test_limits_hold(hostile):
    forked = int(re.search(r"FORKED (\d+)", outputs(hostile, "forkbomb")).group(1))
    assert 0 < forked < 5000 if ROOT else forked >= 0  # RLIMIT_NPROC of the sandbox uid
    big = hostile["out"] / "autograded" / "output" / CHAPTER / f"{CHAPTER}.ipynb"
    assert big.stat().st_size < 20 * 1024 * 1024  # 40 MB printed, at most 8 MiB kept
    assert "output beyond" in outputs(hostile, "output")


@needs_root
@pytest.mark.slow
def test_the_sandbox_hides_files_and_network(hostile):
    text = outputs(hostile, "snoop")
    assert "LEAKED" not in text and "WROTE" not in text, text
    for name in ("solutions", "gradebook", "other-student", "write-repo", "write-subs", "network"):
        assert f"BLOCKED {name}" in text
    assert not (REPO_ROOT / "pwned.txt").exists()


@pytest.mark.slow
def test_outputs_and_untouched_submissions(hostile):
    out = hostile["out"]
    rows = list(csv.DictReader(io.StringIO((out / "grades.csv").read_text())))
    assert {row["student_id"] for row in rows} == set(hostile["results"])
    report = json.loads((out / "report.json").read_text())
    assert {f["student_id"] for f in report["failures"]} >= {"tamper", "badjson", "osexit", "segv"}
    assert (out / "scores.png").read_bytes()[:4] == b"\x89PNG"
    assert "Submissions with a problem" in (out / "summary.md").read_text()
    assert tree_bytes(hostile["subs"]) == hostile["before"]
    assert not list(out.rglob(".*.tmp"))


@pytest.mark.slow
def test_feedback_shows_visible_tests_but_no_hidden_test_code(hostile):
    for student in ("ada", "tamper", "osexit"):
        text = html_text(hostile["out"] / "feedback" / f"{student}.html")
        assert "count_pairs([1, 2, 3])" in text  # the visible test
        for line in hidden_lines():
            assert line not in text, (student, line)
        assert "BEGIN HIDDEN TESTS" not in text
    assert "tampering detected" in html_text(hostile["out"] / "feedback" / "tamper.html")


# ---------------------------------------------------------------------------------------------
# Resuming


@pytest.mark.parametrize("url", ["postgresql://nobody@127.0.0.1:1/nothing", "nosuchdb://somewhere/grades"])
def test_a_bad_gradebook_url_fails_before_grading(course, tmp_path, url):
    subs = tmp_path / "subs"
    subs.mkdir()
    nbformat.write(solution(course), subs / f"ada_{CHAPTER}.ipynb")
    with pytest.raises(ValueError, match="cannot open the gradebook.*--db-url"):
        grade_class(CHAPTER, subs, tmp_path / "out", root=course, db_url=url, log=lambda _: None, progress=False)
    assert not (tmp_path / "out" / "results").exists()  # nothing was graded


def test_unpack_zip_refuses_unsafe_paths(tmp_path):
    archive = tmp_path / "a.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("../evil.ipynb", "{}")
    with pytest.raises(ValueError, match="unsafe path"):
        unpack_zip(archive, tmp_path / "x")


def test_concurrent_graders_never_share_a_sandbox_uid():
    """Cleaning up a uid kills all its processes: a second grading run (another instructor, another
    test worker) must get other uids than the workers of the first, and a freed uid is reusable."""
    from autograder.sandbox import claim_uid

    base = 64000 + os.getpid() % 500  # away from the real runs' range
    uid, fd = claim_uid(base)
    other = subprocess.run([sys.executable, "-c", f"from autograder.sandbox import claim_uid; print(claim_uid({base})[0])"],
                           cwd=REPO_ROOT, capture_output=True, text=True, check=True)
    assert uid == base and int(other.stdout) == base + 1  # the first is held by this process
    os.close(fd)
    again, fd = claim_uid(base)
    os.close(fd)
    assert again == base


START_FAILURE_SCRIPT = r"""
import json, queue, subprocess, sys, threading
from dataclasses import asdict, replace
from pathlib import Path
from autograder import classgrade as cg

root, sub, out = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3])
s = replace(cg.default_sandbox(root, [Path(sub).parent, out], 20), max_processes=40)
slots = queue.Queue()
slots.put(0)
cg._init_worker(sys.argv[4], str(root), asdict(s), slots, str(out))
uid = cg._WORKER["settings"].uid
# The worker's uid is at its process limit for 8 s (as when a machine-wide cap is reached):
blockers = [subprocess.Popen(["sleep", "8"], user=uid, group=uid) for _ in range(40)]
threading.Thread(target=lambda: [p.wait() for p in blockers], daemon=True).start()
print(json.dumps(cg.grade_in_worker("ada", sub, "", "d1")))
cg._WORKER["settings"].max_processes = 1  # now no kernel can ever start: every try fails
print(json.dumps(cg.grade_in_worker("bob", sub, "", "d2")))
"""


@needs_root
@pytest.mark.slow
def test_a_kernel_that_cannot_start_is_tried_again_never_scored(course, tmp_path):
    """A kernel that dies before running a line (the machine short of processes) is retried; if it
    never starts, the submission's record is left for the next run to grade (no cached zero)."""
    sub = tmp_path / "subs" / f"ada_{CHAPTER}.ipynb"
    sub.parent.mkdir()
    nbformat.write(solution(course), sub)
    run = subprocess.run([sys.executable, "-c", START_FAILURE_SCRIPT, str(course), str(sub), str(tmp_path / "out"), CHAPTER],
                         capture_output=True, text=True, timeout=600, cwd=REPO_ROOT)
    assert run.returncode == 0, run.stderr[-3000:]
    retried, never = [json.loads(line) for line in run.stdout.strip().splitlines()[-2:]]
    assert retried["tries"] >= 2 and retried["total"] == 5 and retried["reason"] == "", retried
    assert retried["digest"] == "d1"
    assert never["tries"] == 3 and never["total"] == 0 and never["digest"] == "", never
    assert "could not start in 3 tries" in never["reason"] and "run the same command again" in never["reason"]


@pytest.mark.slow
def test_killed_run_resumes_without_losing_grades(course, tmp_path):
    subs = tmp_path / "subs"
    subs.mkdir()
    half = fill(released_nb(course), "count_pairs", without_markers(COUNT_PAIRS))
    for student in ("amy", "ben", "cat", "dev"):
        nbformat.write(half, subs / f"{student}_{CHAPTER}.ipynb")
    archive = tmp_path / "subs.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for path in subs.iterdir():
            zf.write(path, f"export/{path.name}")
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "autograder", "grade", "--chapter", CHAPTER, str(archive), "--out", str(out),
           "--workers", "1", "--root", str(course)]
    run = subprocess.Popen(cmd, cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 600
    while not list((out / "results").glob("*.json")) and run.poll() is None and time.monotonic() < deadline:
        time.sleep(0.5)
    run.send_signal(signal.SIGKILL)  # in the middle of grading the second submission
    run.wait()
    saved = {p.name: p.read_bytes() for p in (out / "results").glob("*.json")}
    assert saved and all(json.loads(b)["total"] == 2 for b in saved.values())  # finished grades are whole

    again = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True)
    assert again.returncode == 0, again.stderr[-2000:]
    report = json.loads((out / "report.json").read_text())
    assert report["stats"]["kept"] >= len(saved) and report["stats"]["graded"] == 4 - report["stats"]["kept"]
    assert [r["total"] for r in report["students"]] == [2, 2, 2, 2]
    assert not list(out.rglob(".*.tmp"))

    nbformat.write(solution(course), subs / "dev_new.ipynb")  # dev resubmits; nothing else changed
    (subs / f"dev_{CHAPTER}.ipynb").unlink()
    third = grade_class(CHAPTER, subs, out, root=course, workers=1, log=lambda _: None, progress=False)
    report = json.loads((out / "report.json").read_text())
    assert report["stats"] == report["stats"] | {"graded": 1, "kept": 3}
    assert {r.student_id: r.total for r in third} == {"amy": 2, "ben": 2, "cat": 2, "dev": 5}


# ---------------------------------------------------------------------------------------------
# PostgreSQL

PG_BIN = Path("/usr/lib/postgresql/15/bin")


@pytest.fixture(scope="module")
def postgres(tmp_path_factory):
    """A throw-away PostgreSQL server on loopback, run as the `postgres` user when we are root."""
    if not (PG_BIN / "initdb").exists():
        pytest.skip("PostgreSQL 15 is not installed (Debian package postgresql-15)")
    pytest.importorskip("psycopg")
    import tempfile

    data = Path(tempfile.mkdtemp(prefix="autograder-test-pg-"))  # not under pytest's root-only folder
    as_user = []
    if ROOT:  # initdb and postgres refuse to run as root
        shutil.chown(data, "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    subprocess.run([*as_user, str(PG_BIN / "initdb"), "-D", str(data / "db"), "-U", "grader", "--auth=trust"],
                   check=True, capture_output=True)
    server = subprocess.Popen([*as_user, str(PG_BIN / "postgres"), "-D", str(data / "db"), "-h", "127.0.0.1",
                               "-p", str(port), "-k", str(data)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"postgresql://grader@127.0.0.1:{port}/postgres"
    import sqlalchemy

    for _ in range(100):
        try:
            sqlalchemy.create_engine(url).connect().close()
            break
        except Exception:
            time.sleep(0.2)
    yield url
    server.terminate()
    server.wait(30)
    shutil.rmtree(data, ignore_errors=True)


@pytest.mark.slow
def test_grading_into_postgresql(course, tmp_path, postgres):
    from nbgrader.api import Gradebook

    subs = tmp_path / "subs"
    subs.mkdir()
    nbformat.write(solution(course), subs / f"ann_{CHAPTER}.ipynb")
    nbformat.write(fill(released_nb(course), "count_pairs", without_markers(COUNT_PAIRS)), subs / f"bo_{CHAPTER}.ipynb")
    results = grade_class(CHAPTER, subs, tmp_path / "out", root=course, workers=2, db_url=postgres, log=lambda _: None, progress=False)
    assert {r.student_id: r.total for r in results} == {"ann": 5, "bo": 2}
    assert not (tmp_path / "out" / "gradebook.db").exists()
    with Gradebook(postgres, "llms-from-the-ground-up") as gb:
        assert gb.find_grade("count_pairs_tests", CHAPTER, CHAPTER, "bo").score == 2
        assert gb.find_grade("mean_tests", CHAPTER, CHAPTER, "ann").score == 3
        assert gb.find_submission(CHAPTER, "ann").score == 5


@pytest.mark.slow
def test_a_real_chapter_grades_full_marks_in_the_sandbox(tmp_path):
    """A real chapter reads the course artifacts: its sandboxed kernel (HOME = a private work dir, no
    network) must find them in the grader's course cache, not retrain or download them."""
    chapter = "02-tokenization"
    subs = tmp_path / "subs"
    subs.mkdir()
    shutil.copy(REPO_ROOT / "solutions" / chapter / f"{chapter}.ipynb", subs / f"ann_{chapter}.ipynb")
    (result,) = grade_class(chapter, subs, tmp_path / "out", workers=1, log=lambda _: None, progress=False)
    assert result.total == result.max_total > 0, (result.reason, result.errors)
