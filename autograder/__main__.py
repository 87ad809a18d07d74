"""Command line: `python -m autograder {release,check,grade} ...` (run from the repository root)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .config import CELL_TIMEOUT, REPO_ROOT

DESCRIPTION = """\
The course's instructor tool, built on nbgrader.

  release   regenerate chapters/ (student notebooks) from solutions/
  check     chapters/ up to date, solutions score full marks, releases score zero, nothing leaks
  grade     grade a class (folder or zip of notebooks) into grades.csv, in parallel and sandboxed

Run `python -m autograder COMMAND --help` for the details of a command."""


def _root(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--root",
        type=Path,
        default=REPO_ROOT,
        help=f"the course repository (holding solutions/ and chapters/); default: {REPO_ROOT}",
    )


def _timeout(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--timeout",
        type=int,
        default=CELL_TIMEOUT,
        metavar="SECONDS",
        help=f"how long one cell may run while grading before it is interrupted and scores zero (default {CELL_TIMEOUT})",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m autograder", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = commands.add_parser(
        "release",
        help="regenerate chapters/ from solutions/",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="""\
Generate the student version of each chapter: solutions/NN-name/ -> chapters/NN-name/.

Runs real `nbgrader generate_assignment` (solutions replaced by `raise NotImplementedError()`,
hidden tests and mark schemes removed), then tags answer and test cells `skip-execution` (the book
shows them without running them), clears outputs, sets the python3 kernelspec and writes with a
stable formatting. The same solutions always give the same bytes. Each chapter folder is replaced
atomically. Refuses a solution notebook that breaks the exercise contract (outputs stored, missing
or duplicate grade_ids, a test cell without points, an answer cell without BEGIN/END SOLUTION).""",
    )
    p.add_argument("chapters", nargs="*", metavar="CHAPTER", help="chapter folders (or unique prefixes, e.g. 02); default: all of solutions/")
    _root(p)

    p = commands.add_parser(
        "check",
        help="verify chapters/, solutions and releases, and that nothing leaks",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="""\
Check what students and readers get, for each chapter:
  1. chapters/ is up to date (a fresh release gives the same bytes);
  2. the solution notebook autogrades to full marks and runs without errors;
  3. the released notebook autogrades to zero, the grader does not crash, and only exercise cells fail;
  4. no BEGIN/END SOLUTION / HIDDEN TESTS / MARK SCHEME marker and no solution or hidden-test line
     appears in chapters/ or in the rendered book (_build/html, when it exists).
Prints a report; exits with status 1 if anything fails.""",
    )
    p.add_argument("chapters", nargs="*", metavar="CHAPTER", help="chapter folders (or unique prefixes); default: all")
    p.add_argument("--no-grading", action="store_true", help="skip checks 2 and 3 (no kernel is started)")
    _root(p)
    _timeout(p)

    p = commands.add_parser(
        "grade",
        help="grade a class: parallel, sandboxed, resumable",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="""\
Grade every submission in SUBMISSIONS with real nbgrader (autograde: locked test cells and hidden
tests restored from the gradebook, ids de-duplicated; then generate_feedback), several at a time.
SUBMISSIONS is a folder or a zip holding `<student_id>_anything.ipynb` files and/or one folder per
student containing the notebook. The submissions are never modified.

Each student kernel runs in a sandbox: time limits per cell and per notebook, memory, file-size and
(as root) process limits, a private work dir, and (as root) its own uid, no network and no view of
solutions/, the gradebook, the submissions or DIR. See book/instructor-guide.md.

Writes, in DIR:
  grades.csv     one row per student: student_id, one column per graded cell (written answers are
                 left blank for hand grading), total and max_total (autograded points), reason
  report.json    the same and more (errors per cell, seconds, sandbox settings), for programs
  summary.md     per-exercise means and the submissions with a problem; scores.png: score histograms
  feedback/      <student_id>.html: scores, visible tests and failure messages, no hidden test code
  autograded/    the executed notebooks (hidden tests included: for the instructor only)
  results/       one file per graded submission: a re-run grades only new or changed submissions
  gradebook.db   the nbgrader gradebook (unless --db-url), written by the grading process only
A notebook that cannot be graded (invalid JSON, another chapter's notebook, a dead kernel,
tampered checks...) gets a zero row (or the points it earned) with the reason.""",
    )
    p.add_argument("--chapter", required=True, help="the chapter folder the submissions answer, e.g. 02-tokenization")
    p.add_argument("submissions", type=Path, metavar="SUBMISSIONS", help="folder or zip of student notebooks")
    p.add_argument("--out", type=Path, metavar="DIR", help="where to write the results (default: SUBMISSIONS-graded next to SUBMISSIONS)")
    p.add_argument("--workers", type=int, metavar="N", help="submissions graded at once (default: the number of cores)")
    p.add_argument("--db-url", metavar="URL", help="the gradebook, e.g. postgresql://user@host/db (default: sqlite in DIR)")
    _root(p)
    _timeout(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "release":
            from .releasing import release

            release(args.chapters, root=args.root)
            return 0
        if args.command == "check":
            from .audit import check

            ok = check(args.chapters, root=args.root, grading=not args.no_grading, cell_timeout=args.timeout)
            return 0 if ok else 1
        if args.command == "grade":
            from .classgrade import grade_class

            results = grade_class(
                args.chapter, args.submissions, args.out, root=args.root, workers=args.workers,
                db_url=args.db_url, cell_timeout=args.timeout,
            )
            return 0 if results is not None else 1
    except ValueError as exc:  # ReleaseError, unknown chapter, bad folder: a message, not a traceback
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 2


if __name__ == "__main__":
    sys.exit(main())
