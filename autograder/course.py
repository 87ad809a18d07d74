"""A throw-away nbgrader course for one chapter: real nbgrader, isolated from the repository.

    with TempCourse(root, "02-tokenization") as course:
        release_dir = course.generate_assignment()       # nbgrader generate_assignment
        course.submit("alice", Path("alice_02.ipynb"), "02-tokenization")
                                                         # -> submitted/alice/02-tokenization/02-tokenization.ipynb
        ok, log = course.autograde("alice")              # nbgrader autograde (runs a kernel)

The course folder holds `source/<chapter>/` (a copy of solutions/<chapter>/), `release/`,
`submitted/`, `autograded/` and `gradebook.db`, as nbgrader expects.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import sys
import tempfile
import warnings
from pathlib import Path

from .config import REPO_ROOT, SOLUTIONS, nbgrader_config
from .fsutil import list_files


class NbgraderError(RuntimeError):
    """nbgrader itself failed (not a student's code failing a test)."""


def _quiet_logger(name: str) -> logging.Logger:
    # nbgrader logs every copied file at INFO; we keep its log in memory (capture_log) and show it
    # only when something goes wrong.
    log = logging.getLogger(name)
    log.setLevel(logging.INFO)
    log.propagate = False
    return log


@contextlib.contextmanager
def kernel_import_path(*folders: Path):
    """Let the grading kernel import `autograder` and `llm_lib` from these folders (PYTHONPATH),
    whether or not the project is pip-installed; restored afterwards."""
    previous = os.environ.get("PYTHONPATH")
    parts = [str(f) for f in folders] + ([previous] if previous else [])
    os.environ["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(parts))
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = previous


def _venv_on_path() -> None:
    # nbgrader runs the `alembic` executable of its own environment to set up the gradebook; when
    # Python is started as .venv/bin/python without activating the venv, that folder is not on PATH.
    bindir = str(Path(sys.executable).parent)
    path = os.environ.get("PATH", "")
    if bindir not in path.split(os.pathsep):
        os.environ["PATH"] = os.pathsep.join([bindir, path]) if path else bindir


def _in_process_alembic_head() -> None:
    # A new gradebook is stamped with nbgrader's newest alembic revision, which nbgrader finds by
    # running `alembic heads` in a subprocess (several seconds: it imports nbgrader again). Reading
    # the same revision from nbgrader's migration scripts in-process gives the same stamp.
    import nbgrader
    import nbgrader.api

    if getattr(nbgrader.api.get_alembic_version, "_in_process", False):
        return
    try:
        from alembic.script import ScriptDirectory

        head = ScriptDirectory(str(Path(nbgrader.__file__).parent / "alembic")).get_current_head()
    except Exception:  # keep nbgrader's own way if alembic's layout ever changes
        return
    if head:
        def get_alembic_version() -> str:
            return head

        get_alembic_version._in_process = True
        nbgrader.api.get_alembic_version = get_alembic_version


class TempCourse:
    """A temporary nbgrader course directory for `chapter` (see module docstring)."""

    def __init__(
        self, root: Path, chapter: str, *, cell_timeout: int | None = None, keep: bool = False, extra_config=None
    ):
        _venv_on_path()
        _in_process_alembic_head()
        self.root = Path(root).resolve()
        self.chapter = chapter
        self.keep = keep
        self.path = Path(tempfile.mkdtemp(prefix=f"autograder-{chapter}-"))
        kwargs = {} if cell_timeout is None else {"cell_timeout": cell_timeout}
        self.config = nbgrader_config(self.path, **kwargs)
        if extra_config is not None:  # e.g. the sandboxed preprocessors, another gradebook (classgrade)
            self.config.merge(extra_config)
        self.log = _quiet_logger(f"autograder.nbgrader.{chapter}")
        self.source_dir = self.path / "source" / chapter
        src = self.root / SOLUTIONS / chapter
        for rel in list_files(src):
            dest = self.source_dir / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src / rel, dest)
        self.generated = False

    # -- paths -----------------------------------------------------------------------------
    @property
    def db_url(self) -> str:
        return self.config.CourseDirectory.db_url

    @property
    def db_path(self) -> Path:
        return self.path / "gradebook.db"

    @property
    def release_dir(self) -> Path:
        return self.path / "release" / self.chapter

    def submitted_dir(self, student_id: str) -> Path:
        return self.path / "submitted" / student_id / self.chapter

    def autograded_dir(self, student_id: str) -> Path:
        return self.path / "autograded" / student_id / self.chapter

    # -- nbgrader --------------------------------------------------------------------------
    def _run(self, converter_class, **attrs) -> tuple[bool, str]:
        from nbgrader.coursedir import CourseDirectory
        from nbgrader.utils import capture_log

        coursedir = CourseDirectory(config=self.config, log=self.log)
        coursedir.assignment_id = self.chapter
        for name, value in attrs.pop("coursedir", {}).items():
            setattr(coursedir, name, value)
        app = converter_class(coursedir=coursedir, config=self.config, log=self.log)
        app.force = True
        for name, value in attrs.items():
            setattr(app, name, value)
        with warnings.catch_warnings():
            # nbgrader's gradebook code trips SQLAlchemy "not in session" warnings; harmless here.
            warnings.filterwarnings("ignore", module=r"nbgrader\.api")
            warnings.filterwarnings("ignore", message=r".*not in session.*")
            result = capture_log(app)
        text = (result.get("log") or "") + (result.get("error") or "")
        return bool(result["success"]), text

    def generate_assignment(self) -> Path:
        """nbgrader generate_assignment: fills the gradebook (cells, checksums, hidden tests) and
        writes the student version to `release_dir`. Raises NbgraderError with nbgrader's log."""
        from nbgrader.converters import GenerateAssignment

        ok, log = self._run(GenerateAssignment)
        if not ok:
            raise NbgraderError(f"nbgrader generate_assignment failed for {self.chapter}:\n{_tail(log)}")
        self.generated = True
        return self.release_dir

    def submit(self, student_id: str, notebook: Path, notebook_name: str) -> Path:
        """Copy a student's notebook (bytes untouched) to where nbgrader autograde looks for it."""
        dest = self.submitted_dir(student_id) / f"{notebook_name}.ipynb"
        if dest.parent.exists():
            shutil.rmtree(dest.parent)
        dest.parent.mkdir(parents=True)
        shutil.copyfile(notebook, dest)
        return dest

    def autograde(self, student_id: str) -> tuple[bool, str]:
        """nbgrader autograde for one student: executes the notebook in a fresh kernel with the
        locked test cells (hidden tests included) restored from the gradebook. Returns (ok, log)."""
        from nbgrader.converters import Autograde

        if not self.generated:
            self.generate_assignment()
        # REPO_ROOT holds this very package: the kernel imports the same autograder.checks.
        with kernel_import_path(self.root, REPO_ROOT):
            return self._run(Autograde, create_student=True, coursedir={"student_id": student_id})

    # -- clean-up --------------------------------------------------------------------------
    def close(self) -> None:
        if not self.keep:
            shutil.rmtree(self.path, ignore_errors=True)

    def __enter__(self) -> "TempCourse":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _tail(text: str, lines: int = 40) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])
