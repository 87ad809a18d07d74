"""`python -m autograder grade`: grade a whole class, in parallel, sandboxed and resumable.

    results = grade_class("02-tokenization", "submissions.zip", out="grades/", workers=4)

The parent process
  - collects the submissions (a folder of `<id>_anything.ipynb` / one folder per student, or a zip
    of either; the originals are only read),
  - fills the gradebook (SQLite `out/gradebook.db`, or `db_url`, e.g. PostgreSQL) and is the only
    process that writes to it,
  - hands each new or changed submission to a pool of worker processes and records each finished
    grade at once: `out/results/<id>.json` (written atomically, with the submission's digest),
  - writes grades.csv, report.json, summary.md and scores.png (each atomically).

Each worker owns a private nbgrader course (its own throw-away SQLite gradebook, in a folder only
the grader can read) and runs real `nbgrader autograde` and `generate_feedback` on one submission
at a time, the student's kernel running in the sandbox (`autograder.sandbox`) and watched by the
canaries (`autograder.kernelguard`).

Resuming: a submission whose digest (its bytes + the chapter's solution + the grading settings)
matches its `results/<id>.json` is not graded again. Killing the run at any moment loses only the
submissions being graded at that moment.
"""

from __future__ import annotations

import concurrent.futures as cf
import hashlib
import io
import json
import multiprocessing
import os
import shutil
import signal
import tempfile
import time
import zipfile
from dataclasses import asdict, replace
from pathlib import Path
from typing import Callable

from .config import CELL_TIMEOUT, COURSE_ID, REPO_ROOT, SOLUTIONS, STUDENT_ID
from .fsutil import atomic_copy_file, atomic_write_bytes, list_files
from .grading import GradeResult, Grader, _first_line, _fmt, find_submissions, grades_csv
from .notebook import graded_cells, read_notebook
from .releasing import resolve_chapters
from .sandbox import SandboxSettings, probe

GRADER_VERSION = "4"  # part of every digest: bump it when grading itself changes
MAX_ZIP_BYTES = 2 * 1024**3  # refuse a zip that unpacks to more than this
SANDBOX_UID_BASE = 61000  # each worker's kernels run as the first free uid from here (when run as root)


# ---------------------------------------------------------------------------------------------
# Collecting


def unpack_zip(archive: Path, dest: Path) -> Path:
    """Extract `archive` into `dest` safely (no absolute paths, no `..`, no links, bounded size)."""
    with zipfile.ZipFile(archive) as zf:
        total = 0
        for info in zf.infolist():
            name = Path(info.filename)
            if name.is_absolute() or ".." in name.parts:
                raise ValueError(f"{archive.name}: unsafe path in the zip: {info.filename!r}")
            if (info.external_attr >> 16) & 0o170000 == 0o120000:
                continue  # a symbolic link: skip it
            total += info.file_size
            if total > MAX_ZIP_BYTES:
                raise ValueError(f"{archive.name} unpacks to more than {MAX_ZIP_BYTES // 1024**3} GiB")
            zf.extract(info, dest)
    # A zip of one folder holding the submissions: grade that folder.
    entries = [p for p in dest.iterdir() if not p.name.startswith((".", "__MACOSX"))]
    if len(entries) == 1 and entries[0].is_dir():
        inner = entries[0]
        if any(inner.glob("*.ipynb")) or sum(p.is_dir() for p in inner.iterdir()) > 1:
            return inner  # a zip of the submissions folder itself
    return dest


def solution_digest(root: Path, chapter: str) -> str:
    """A digest of the chapter's solution folder (hidden tests, points, data files)."""
    h = hashlib.sha256()
    folder = root / SOLUTIONS / chapter
    for rel in list_files(folder):
        h.update(rel.as_posix().encode() + b"\0" + (folder / rel).read_bytes() + b"\0")
    return h.hexdigest()


def submission_digest(path: Path | None, problem: str, context: str) -> str:
    """What decides whether a submission is graded again: its bytes and the grading context."""
    h = hashlib.sha256(context.encode())
    h.update(path.read_bytes() if path is not None else problem.encode())
    return h.hexdigest()


# ---------------------------------------------------------------------------------------------
# The worker side


def _grading_config(settings: SandboxSettings):
    """nbgrader configuration of a worker: the guarded preprocessors, the sandboxed kernel."""
    from nbconvert.preprocessors import CSSHTMLHeaderPreprocessor
    from nbgrader.converters import Autograde
    from nbgrader.preprocessors import ClearHiddenTests, Execute, GetGrades
    from traitlets.config import Config

    from .kernelguard import FeedbackExporter, GuardedExecute, InsertCanaries, RedactForFeedback, VerifyCanaries
    from .sandbox import SandboxKernelManager

    class SandboxedExecute(GuardedExecute):
        def __init__(self, *args, **kwargs):
            kwargs["kernel_manager_class"] = SandboxKernelManager
            super().__init__(*args, **kwargs)

    steps = []
    for step in Autograde.class_traits()["autograde_preprocessors"].default():
        steps += [InsertCanaries, SandboxedExecute, VerifyCanaries] if step is Execute else [step]
    c = Config()
    c.Autograde.autograde_preprocessors = steps
    c.GuardedExecute.max_output_bytes = settings.max_output_mb * 1024 * 1024
    c.Execute.iopub_timeout = 30  # seconds to drain a cell's output after it finished (nbclient: 4)
    c.GenerateFeedback.preprocessors = [GetGrades, ClearHiddenTests, RedactForFeedback, CSSHTMLHeaderPreprocessor]
    c.GenerateFeedback.exporter_class = FeedbackExporter
    return c


_WORKER: dict = {}


def _init_worker(chapter: str, root: str, settings: dict, slots, out: str) -> None:
    from .sandbox import claim_uid, cleanup, die_with_parent, install

    die_with_parent()  # the parent killed -> this worker goes too (and its kernels after it)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's business
    slot = slots.get()
    s = SandboxSettings(**settings)
    if s.uid is not None:  # a uid no other worker, here or in another grading run, holds
        s.uid, _WORKER["uid_lock"] = claim_uid(s.uid)
    s.base = tempfile.mkdtemp(prefix=f"autograder-sandbox-{slot}-")
    install(s)
    cleanup(s)  # a previous run killed with SIGKILL may have left processes of this uid
    grader = Grader(chapter, Path(root), cell_timeout=s.cell_timeout, extra_config=_grading_config(s))
    _WORKER.update(grader=grader, settings=s, out=Path(out), chapter=chapter)
    from multiprocessing.util import Finalize

    # Pool workers leave through os._exit (no atexit); multiprocessing's finalizers do run.
    Finalize(grader, grader.close, exitpriority=10)
    Finalize(grader, shutil.rmtree, args=(s.base, True), exitpriority=10)


def _notebook_verdicts(executed: Path) -> tuple[str, list[str]]:
    """(tampering reason or "", notes) read from an executed notebook."""
    tampering, notes = "", []
    try:
        nb = read_notebook(executed)
    except Exception:
        return "", []
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            if output.get("output_type") != "error":
                continue
            if output.get("ename") == "TamperingDetected":
                tampering = output.get("evalue", "")
            elif output.get("ename") == "DeadKernelError" and not notes:
                if "stopped answering" in output.get("evalue", ""):
                    notes.append("the kernel stopped answering after a cell timed out; later cells did not run")
                else:
                    notes.append("the kernel died (os._exit, a crash, or a sandbox limit); later cells did not run")
    return tampering, notes


# A kernel that dies before answering its first message never ran student code: the grading machine
# was short of something (processes or threads under a machine-wide cap, another student's fork bomb
# holding them for a few seconds). Such a submission is tried again after these pauses (seconds).
START_RETRY_PAUSES = (3, 10)
_START_FAILURES = ("Kernel died before replying to kernel_info", "Kernel didn't respond in")


def kernel_did_not_start(result: GradeResult) -> bool:
    return result.autograded is None and any(m in (result.reason or "") for m in _START_FAILURES)


def grade_in_worker(student_id: str, path: str | None, problem: str, digest: str) -> dict:
    """Grade one submission in this worker; never raises. Returns a record for results/<id>.json."""
    from .sandbox import cleanup

    grader: Grader = _WORKER["grader"]
    out: Path = _WORKER["out"]
    chapter = _WORKER["chapter"]
    course = grader.course
    start = time.monotonic()
    feedback, tries = None, 0
    try:
        if path is None:
            result = grader.zero_result(student_id, problem)
        else:
            for pause in (*START_RETRY_PAUSES, None):
                tries += 1
                result = grader.grade_submission(student_id, Path(path))
                if pause is None or not kernel_did_not_start(result):
                    break
                cleanup(_WORKER["settings"])  # the half-started kernel goes, then a fresh try
                time.sleep(pause)
            if kernel_did_not_start(result):
                result.reason += f" (the kernel could not start in {tries} tries: a limit of the grading machine, not the student's code; run the same command again to regrade)"
            if result.autograded is not None and result.autograded.exists():
                tampering, notes = _notebook_verdicts(result.autograded)
                if tampering:
                    result.reason = tampering
                elif notes:
                    result.reason = "; ".join(filter(None, [result.reason, *notes]))
                dest = out / "autograded" / student_id / chapter / f"{chapter}.ipynb"
                atomic_copy_file(result.autograded, dest)
                from nbgrader.converters import GenerateFeedback

                ok, log = course._run(GenerateFeedback, coursedir={"student_id": student_id})
                html = course.path / "feedback" / student_id / chapter / f"{chapter}.html"
                if ok and html.exists():
                    feedback = out / "feedback" / f"{student_id}.html"
                    atomic_copy_file(html, feedback)
    except Exception as exc:  # a bug of ours or nbgrader's: a zero with the reason, the class goes on
        result = grader.zero_result(student_id, f"grading failed: {type(exc).__name__}: {_first_line(exc)}")
    finally:
        cleanup(_WORKER["settings"])
        for folder in ("submitted", "autograded", "feedback"):
            shutil.rmtree(course.path / folder / student_id, ignore_errors=True)
    record = result.as_dict()
    record.update(
        autograded=None,
        digest="" if kernel_did_not_start(result) else digest,  # "": the next run grades it again
        feedback=feedback.name if feedback else None,
        tries=tries,  # kernel starts needed (more than 1: the machine was short of processes)
        seconds=round(time.monotonic() - start, 2),
    )
    return record


# ---------------------------------------------------------------------------------------------
# The parent side


def _result_from_record(record: dict) -> GradeResult:
    fields = {k: record[k] for k in ("student_id", "scores", "max_scores", "total", "max_total", "reason", "errors")}
    return GradeResult(**fields)


def default_sandbox(root: Path, extra_hidden: list[Path], cell_timeout: int) -> SandboxSettings:
    """Sandbox settings for this machine: isolation (uid, namespaces) when run as root."""
    import sys

    from .config import REPO_ROOT as PACKAGE_ROOT

    home = os.environ.get("LLM_LIB_HOME") or str(Path.home() / ".cache" / "llm_lib")
    readable = [sys.base_prefix, sys.prefix, str(root), str(PACKAGE_ROOT), home]
    hidden = [str(root / SOLUTIONS)] + [str(p) for p in extra_hidden]
    return SandboxSettings(
        uid=SANDBOX_UID_BASE if os.geteuid() == 0 else None,
        cell_timeout=cell_timeout,
        notebook_timeout=max(300, 10 * cell_timeout),
        hide=hidden,
        keep_readable=[os.path.realpath(p) for p in readable],
        python_path=list(dict.fromkeys([str(root), str(PACKAGE_ROOT)])),
        course_home=os.path.realpath(home),  # else a kernel (HOME = its work dir) would retrain every artifact
    )


class ClassGradebook:
    """The class's nbgrader gradebook, written by the parent process only."""

    def __init__(self, db_url: str, chapter: str, root: Path):
        from nbgrader.api import Gradebook, MissingEntry
        from traitlets.config import Config

        from .course import TempCourse, _in_process_alembic_head, _venv_on_path

        _venv_on_path()  # a new gradebook needs nbgrader's alembic, also when the venv is not activated
        _in_process_alembic_head()
        self.db_url, self.chapter = db_url, chapter
        with Gradebook(db_url, COURSE_ID) as gb:
            try:
                gb.find_assignment(chapter)
                return
            except MissingEntry:
                pass
        extra = Config()
        extra.CourseDirectory.db_url = db_url
        with TempCourse(root, chapter, extra_config=extra) as course:  # nbgrader fills the gradebook
            course.generate_assignment()

    def record(self, result: GradeResult, autograded: set[str]) -> None:
        import warnings

        from nbgrader.api import Gradebook, MissingEntry

        with warnings.catch_warnings(), Gradebook(self.db_url, COURSE_ID) as gb:
            warnings.filterwarnings("ignore", message=r".*not in session.*")
            gb.update_or_create_student(result.student_id)
            try:
                submission = gb.find_submission(self.chapter, result.student_id)
            except MissingEntry:
                submission = gb.add_submission(self.chapter, result.student_id)
            for notebook in submission.notebooks:
                for grade in notebook.grades:
                    score = result.scores.get(grade.name)
                    if grade.name in autograded or score is not None:
                        grade.auto_score = score
            gb.db.commit()


def _score_plot(results: list[GradeResult], cells) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    graded = [c for c in cells if c.autograded]
    fig, axes = plt.subplots(1, max(1, len(graded)), figsize=(3 * max(1, len(graded)), 2.6), squeeze=False)
    for ax, cell in zip(axes[0], graded):
        values = [r.scores.get(cell.grade_id) or 0.0 for r in results]
        levels = sorted(set(values) | {0.0, cell.points})
        ax.bar([f"{v:g}" for v in levels], [values.count(v) for v in levels], color="#4c72b0")
        ax.set_title(cell.grade_id, fontsize=9)
        ax.set_xlabel(f"points (of {cell.points:g})")
    axes[0][0].set_ylabel("students")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, metadata={"Software": None})
    plt.close(fig)
    return buf.getvalue()


def _summary(chapter: str, results: list[GradeResult], cells, settings: SandboxSettings, stats: dict) -> str:
    lines = [f"# {chapter}: {len(results)} submission(s)", ""]
    lines.append(f"graded now: {stats['graded']}, unchanged (kept): {stats['kept']}, seconds: {stats['seconds']:.1f}")
    lines.append(f"sandbox: {settings.describe()}")
    lines += ["", "| exercise | points | mean | full marks |", "|---|---|---|---|"]
    for c in cells:
        if c.autograded and results:
            values = [r.scores.get(c.grade_id) or 0.0 for r in results]
            full = sum(v >= c.points for v in values)
            lines.append(f"| {c.grade_id} | {c.points:g} | {sum(values) / len(values):.2f} | {full}/{len(values)} |")
    failures = [r for r in results if r.reason]
    lines += ["", f"## Submissions with a problem ({len(failures)})", ""]
    lines += [f"- {r.student_id}: {_fmt(r.total)}/{_fmt(r.max_total)} -- {r.reason}" for r in failures] or ["none"]
    return "\n".join(lines) + "\n"


def _remove_stray_temp_files(out: Path) -> None:
    """Temporary files of a run killed in the middle of an atomic write (never the real files)."""
    for path in out.rglob(".*.tmp"):
        path.unlink(missing_ok=True)


def grade_class(
    chapter: str,
    submissions: Path | str,
    out: Path | str | None = None,
    root: Path | None = None,
    *,
    workers: int | None = None,
    db_url: str | None = None,
    cell_timeout: int = CELL_TIMEOUT,
    sandbox: SandboxSettings | None = None,
    log: Callable[[str], None] = print,
    progress: bool = True,
) -> list[GradeResult]:
    """Grade every submission in `submissions` (folder or zip) into `out` (see module docstring)."""
    from tqdm.auto import tqdm

    from .grading import default_out_dir

    root = Path(root or REPO_ROOT).resolve()
    (chapter,) = resolve_chapters(root, [chapter])
    submissions = Path(submissions).resolve()
    if not (submissions.is_dir() or zipfile.is_zipfile(submissions)):
        raise ValueError(f"{submissions} is neither a folder of submissions nor a zip of one")
    out = Path(out).resolve() if out else default_out_dir(submissions.with_suffix("") if submissions.is_file() else submissions)
    if out == submissions or submissions in out.parents:
        raise ValueError(f"--out {out} is inside the submissions folder; choose a folder outside it")
    out.mkdir(parents=True, exist_ok=True)
    _remove_stray_temp_files(out)
    db_url = db_url or f"sqlite:///{out / 'gradebook.db'}"
    if not db_url.startswith("sqlite"):
        _check_db_url(db_url)  # before any worker starts: a typo should not cost a class's start-up
    workers = max(1, workers or os.cpu_count() or 1)
    start = time.monotonic()

    unpacked = out / ".unzipped"  # inside DIR, which kernels cannot see; a killed run's is replaced
    shutil.rmtree(unpacked, ignore_errors=True)
    unpacked.mkdir(mode=0o700)
    try:
        folder = unpack_zip(submissions, unpacked) if submissions.is_file() else submissions
        settings = sandbox or default_sandbox(root, [submissions, out], cell_timeout)
        if settings.isolated and (why := probe(settings)):
            log(f"WARNING: kernels cannot be isolated here ({why}); grading WITHOUT uid, namespaces and process limit")
            settings = replace(settings, uid=None)
        context = json.dumps([GRADER_VERSION, solution_digest(root, chapter), asdict(settings) | {"hide": [], "base": ""}])
        subs = find_submissions(folder, chapter)
        results_dir = out / "results"

        cells = graded_cells(read_notebook(root / SOLUTIONS / chapter / f"{chapter}.ipynb"))
        autograded_ids = {c.grade_id for c in cells if c.autograded}

        results: dict[str, GradeResult] = {}
        todo = []
        for sub in subs:
            problem = sub.problem
            if not STUDENT_ID.match(sub.student_id):
                problem = f"unusable student id {sub.student_id!r} (letters, digits, . _ @ + - only)"
                sub = type(sub)(sub.student_id, None, problem)
            digest = submission_digest(sub.path, problem, context)
            saved = results_dir / f"{sub.student_id}.json"
            if saved.exists():
                try:
                    record = json.loads(saved.read_text())
                    if record.get("digest") == digest:
                        results[sub.student_id] = _result_from_record(record)
                        continue
                except (ValueError, KeyError):
                    pass  # unreadable: grade it again
            todo.append((sub.student_id, str(sub.path) if sub.path else None, problem, digest))
        kept = len(results)
        log(f"{chapter}: {len(subs)} submission(s), {kept} unchanged since the last run, {len(todo)} to grade "
            f"with {min(workers, max(1, len(todo)))} worker(s)")
        log(f"sandbox: {settings.describe()}")

        pool, futures = None, {}
        try:
            if todo:  # workers start (and set up their courses) while the parent opens the gradebook
                ctx = multiprocessing.get_context("spawn")
                slots = ctx.Queue()
                n = min(workers, len(todo))
                for slot in range(n):
                    slots.put(slot)
                pool = cf.ProcessPoolExecutor(
                    n, mp_context=ctx, initializer=_init_worker, initargs=(chapter, str(root), asdict(settings), slots, str(out))
                )
                futures = {pool.submit(grade_in_worker, *job): job for job in todo}
            gradebook = ClassGradebook(db_url, chapter, root)
            for result in results.values():  # kept from an earlier run (the gradebook may be a new one)
                gradebook.record(result, autograded_ids)
            bar = tqdm(total=len(todo), desc=f"grading {chapter}", unit="nb", disable=not progress or not todo)
            for future in cf.as_completed(futures):
                student_id = futures[future][0]
                try:
                    record = future.result()
                except Exception as exc:  # a worker died: record it, the rest goes on
                    zero = _zero_result(cells, student_id, f"grading failed: worker died ({type(exc).__name__})")
                    record = zero.as_dict() | {"digest": "", "feedback": None, "tries": None, "seconds": None}
                result = _result_from_record(record)
                gradebook.record(result, autograded_ids)  # only the parent writes grades
                atomic_write_bytes(results_dir / f"{student_id}.json", json.dumps(record, indent=1).encode())
                results[student_id] = result
                bar.update(1)
                if result.reason:
                    bar.write(f"{student_id}: {_fmt(result.total)}/{_fmt(result.max_total)} -- {result.reason}")
            bar.close()
        except BaseException:  # Ctrl-C or a bug: stop the workers (and kernels) now; finished grades are saved
            if pool is not None:
                _stop(pool)
            raise
        if pool is not None:
            pool.shutdown(wait=True)  # workers clean up their temporary courses as they exit
    finally:
        shutil.rmtree(unpacked, ignore_errors=True)

    ordered = [results[s] for s in sorted(results)]
    stats = {"graded": len(todo), "kept": kept, "seconds": time.monotonic() - start}
    report = {
        "chapter": chapter,
        "grader_version": GRADER_VERSION,
        "sandbox": settings.describe(),
        "gradebook": _without_credentials(db_url),
        "stats": stats,
        "cells": [asdict(c) for c in cells],
        "students": [
            {k: v for k, v in r.as_dict().items() if k != "autograded"}
            | {"feedback": f"feedback/{r.student_id}.html" if (out / "feedback" / f"{r.student_id}.html").exists() else None}
            for r in ordered
        ],
        "failures": [{"student_id": r.student_id, "reason": r.reason} for r in ordered if r.reason],
    }
    atomic_write_bytes(out / "grades.csv", grades_csv(ordered, cells))
    atomic_write_bytes(out / "report.json", json.dumps(report, indent=1).encode())
    atomic_write_bytes(out / "summary.md", _summary(chapter, ordered, cells, settings, stats).encode())
    atomic_write_bytes(out / "scores.png", _score_plot(ordered, cells))
    log(f"wrote {out}/grades.csv, report.json, summary.md, scores.png, feedback/ ({len(ordered)} student(s), "
        f"{stats['graded']} graded now, {stats['seconds']:.0f}s)")
    return ordered


def _without_credentials(db_url: str) -> str:
    """The gradebook URL as reports and errors show it: never a user name or password."""
    return db_url.split("@")[-1] if "@" in db_url else db_url


def _check_db_url(db_url: str) -> None:
    """Connect to the gradebook's database once; a clear error if that cannot work."""
    from sqlalchemy import create_engine

    try:
        engine = create_engine(db_url)
        engine.connect().close()
        engine.dispose()
    except Exception as exc:
        raise ValueError(
            f"cannot open the gradebook at {_without_credentials(db_url)} ({type(exc).__name__}: {_first_line(exc)}); check --db-url "
            "(e.g. postgresql://user@host/dbname), that the server runs, and that its driver (psycopg) is installed"
        ) from None


def _stop(pool: cf.ProcessPoolExecutor) -> None:
    """Kill the workers now (their kernels die with them), drop the jobs not started."""
    for process in list((getattr(pool, "_processes", None) or {}).values()):
        if process.is_alive():
            process.kill()
    pool.shutdown(wait=True, cancel_futures=True)


def _zero_result(cells, student_id: str, reason: str) -> GradeResult:
    """Like Grader.zero_result, for the parent (which has no Grader)."""
    return GradeResult(
        student_id=student_id,
        scores={c.grade_id: (0.0 if c.autograded else None) for c in cells},
        max_scores={c.grade_id: c.points for c in cells},
        total=0.0,
        max_total=sum(c.points for c in cells if c.autograded),
        reason=reason,
    )
