"""Grading a class: plain serial nbgrader vs `autograder grade --workers 2`, and the sandbox's cost.

    python benchmarks/bench_grading.py [--chapter 02-tokenization] [-n 8] [--rounds 1]

N copies of the chapter's solution notebook are graded four ways, in one run:
  serial     `autograder.grading.Grader`: plain `nbgrader autograde`, one submission after another
  w1-open    `grade_class --workers 1`, kernels NOT isolated (no uid switch, no namespaces)
  w1-sandbox `grade_class --workers 1`, kernels isolated (needs root; else same as w1-open)
  w2-sandbox `grade_class --workers 2`, kernels isolated
Writes the `grading` section of benchmarks/RESULTS.md. Wall-clock seconds; seconds per submission.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _results import write_section  # noqa: E402

from autograder.classgrade import default_sandbox, grade_class  # noqa: E402
from autograder.config import CELL_TIMEOUT, REPO_ROOT  # noqa: E402
from autograder.grading import Grader, find_submissions  # noqa: E402


def serial(chapter: str, subs: Path) -> list:
    """Plain nbgrader: one course, `nbgrader autograde` for one student after another, in-process."""
    with Grader(chapter, REPO_ROOT) as grader:
        return [grader.grade_submission(sub.student_id, sub.path) for sub in find_submissions(subs, chapter)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--chapter", default="02-tokenization")
    parser.add_argument("-n", type=int, default=8, help="submissions")
    parser.add_argument("--rounds", type=int, default=1, help="interleaved rounds; each run's fastest counts")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-grading-"))
    try:
        subs = work / "subs"
        subs.mkdir()
        source = REPO_ROOT / "solutions" / args.chapter / f"{args.chapter}.ipynb"
        for i in range(args.n):
            shutil.copy(source, subs / f"s{i:03d}_{args.chapter}.ipynb")
        quiet = dict(log=lambda _: None)
        isolated = default_sandbox(REPO_ROOT, [subs, work], CELL_TIMEOUT)
        runs = {
            "serial nbgrader autograde (no sandbox)": lambda out: serial(args.chapter, subs),
            "grade --workers 1, not isolated": lambda out: grade_class(
                args.chapter, subs, out, workers=1, sandbox=replace(isolated, uid=None), progress=False, **quiet),
            "grade --workers 1, sandboxed": lambda out: grade_class(
                args.chapter, subs, out, workers=1, sandbox=isolated, progress=False, **quiet),
            "grade --workers 2, sandboxed": lambda out: grade_class(
                args.chapter, subs, out, workers=2, sandbox=isolated, progress=False, **quiet),
        }
        seconds = {}  # the fastest of the rounds: other processes on the machine only ever add time
        for round_ in range(args.rounds):
            for i, (name, run) in enumerate(runs.items()):
                out = work / f"out{i}"
                shutil.rmtree(out, ignore_errors=True)  # a fresh output folder: everything is graded
                start = time.perf_counter()
                results = run(out)
                took = time.perf_counter() - start
                seconds[name] = min(seconds.get(name, took), took)
                assert all(r.total == r.max_total for r in results), name
                print(f"round {round_ + 1}: {name}: {took:.1f}s", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    base = seconds["serial nbgrader autograde (no sandbox)"]
    rows = [f"| {name} | {s:.1f} | {s / args.n:.1f} | {base / s:.2f}x |" for name, s in seconds.items()]
    open_, boxed = seconds["grade --workers 1, not isolated"], seconds["grade --workers 1, sandboxed"]
    isolated_note = "isolated (root)" if os.geteuid() == 0 else "NOT isolated (not root: both w1 rows are the same)"
    markdown = f"""## grading: {args.n} submissions of {args.chapter} (the solution notebook)

`python benchmarks/bench_grading.py --chapter {args.chapter} -n {args.n} --rounds {args.rounds}`; every run scored
full marks; each row is the fastest of {args.rounds} interleaved rounds. Goals:
`--workers 2` at least 1.8x faster than serial nbgrader; sandbox overhead at most 15%.
The `grade` rows include what plain nbgrader does not do: canary cells, feedback HTML, the
per-student result files. Sandbox: {isolated_note}. A `grade` run also has a fixed cost (starting
the workers and their nbgrader courses, writing grades.csv, report.json and the score plot: a few
seconds), so its speed-up grows with the number of submissions.

| run | seconds | s / submission | speed-up vs serial |
|---|---:|---:|---:|
{chr(10).join(rows)}

Sandbox overhead (workers 1, isolated vs not): {100 * (boxed / open_ - 1):+.0f}%.
"""
    write_section("grading", markdown)


if __name__ == "__main__":
    main()
