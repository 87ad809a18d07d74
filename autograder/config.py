"""Where things live and how nbgrader is configured.

nbgrader always runs in a throw-away course directory (see `nbgrader_config`): its own
`source/`, `release/`, `submitted/`, `autograded/` folders and its own SQLite gradebook. The
course's real folders (`solutions/`, `chapters/`) are read and written only by our code, so a
crash inside nbgrader can never damage them.
"""

from __future__ import annotations

import re
import secrets
from pathlib import Path

from traitlets.config import Config

# The repository holding this package; every command takes `root` (CLI: --root) to point elsewhere.
REPO_ROOT = Path(__file__).resolve().parent.parent

SOLUTIONS = "solutions"  # instructor source notebooks, the single source of truth
CHAPTERS = "chapters"  # student notebooks generated from solutions/ by `release`
BUILD_HTML = Path("_build") / "html"  # the rendered book, scanned for leaks by `check`

COURSE_ID = "llms-from-the-ground-up"

# Seconds one cell may run while grading before the kernel is interrupted (and the cell scores 0).
CELL_TIMEOUT = 120
# Seconds a kernel may take to start.
KERNEL_STARTUP_TIMEOUT = 60

# Markers delimiting text that must never reach students (nbgrader's defaults).
SOLUTION_MARKERS = ("BEGIN SOLUTION", "END SOLUTION")
HIDDEN_TEST_MARKERS = ("BEGIN HIDDEN TESTS", "END HIDDEN TESTS")
MARK_SCHEME_MARKERS = ("BEGIN MARK SCHEME", "END MARK SCHEME")
ALL_MARKERS = SOLUTION_MARKERS + HIDDEN_TEST_MARKERS + MARK_SCHEME_MARKERS

# The kernelspec every released notebook carries, whatever the author's machine called it.
KERNELSPEC = {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"}

# The tag the book build honours: the cell is shown but not executed.
SKIP_EXECUTION = "skip-execution"

# A student id, as taken from `<student_id>_anything.ipynb` or a per-student folder name.
STUDENT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@+-]*$")


def nbgrader_config(course_dir: Path, *, cell_timeout: int = CELL_TIMEOUT) -> Config:
    """The traitlets Config for nbgrader running in the temporary course folder `course_dir`.

    Example: `GenerateAssignment(coursedir=CourseDirectory(config=cfg), config=cfg)`.
    """
    course_dir = Path(course_dir)
    c = Config()
    c.CourseDirectory.root = str(course_dir)
    c.CourseDirectory.course_id = COURSE_ID
    c.CourseDirectory.source_directory = "source"
    c.CourseDirectory.release_directory = "release"
    c.CourseDirectory.submitted_directory = "submitted"
    c.CourseDirectory.autograded_directory = "autograded"
    c.CourseDirectory.feedback_directory = "feedback"
    c.CourseDirectory.db_url = f"sqlite:///{course_dir / 'gradebook.db'}"
    c.CourseDirectory.notebook_id = "*"

    c.GenerateAssignment.create_assignment = True
    c.Autograde.create_student = True
    c.OverwriteCells.add_missing_cells = True  # a deleted test cell comes back and runs

    # Grading: a cell that runs too long is interrupted and scores zero; the run goes on.
    c.Execute.timeout = cell_timeout
    c.Execute.startup_timeout = KERNEL_STARTUP_TIMEOUT
    c.Execute.interrupt_on_timeout = True
    c.Execute.execute_retries = 0
    c.Execute.kernel_name = "python3"
    c.Execute.extra_arguments = ["--IPKernelApp.log_level=ERROR"]  # no start-up chatter on our stderr
    # nbclient skips cells tagged `skip-execution` -- the very tag the release puts on answer and
    # test cells for the book. When grading, every cell must run, and a student must not be able
    # to skip a test cell by tagging it: the skip tag becomes a secret nobody can guess.
    c.Execute.skip_cells_with_tag = f"autograder-never-skip-{secrets.token_hex(16)}"
    return c
