"""`python -m autograder release`: solutions/NN-name/ -> chapters/NN-name/.

Each chapter goes through real `nbgrader generate_assignment` in a temporary course, then
`notebook.normalise_released` (skip-execution tags, no outputs, fixed kernelspec) and the one
stable serialisation. Other files of the chapter folder are copied byte for byte. The result is
built in a temporary folder next to chapters/NN-name and swapped in, so chapters/ never holds a
half-released chapter, and the bytes depend only on solutions/ (not on time, paths or machine).
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Callable, Iterable

from .config import CHAPTERS, REPO_ROOT, SOLUTIONS
from .course import NbgraderError, TempCourse
from .fsutil import list_files, replace_dir, sibling_tempdir
from .notebook import dumps, normalise_released, read_notebook, validate_solution


class ReleaseError(ValueError):
    """A solution notebook breaks the exercise contract, or nbgrader refused it."""


def list_chapters(root: Path | None = None) -> list[str]:
    """Chapter folder names in solutions/, sorted: `list_chapters() -> ['01-data', '02-tokenization']`.

    Folders that are still empty (a chapter being started) and names starting with '.' or '_' are
    left out.
    """
    solutions = Path(root or REPO_ROOT) / SOLUTIONS
    if not solutions.is_dir():
        return []
    return sorted(
        d.name
        for d in solutions.iterdir()
        if d.is_dir() and not d.name.startswith((".", "_")) and list_files(d)
    )


def resolve_chapters(root: Path | None, names: Iterable[str] | None) -> list[str]:
    """Turn CLI chapter names into folder names; a unique prefix is enough (`"02"` -> `"02-tokenization"`).
    No names means every chapter. Raises ValueError naming the choices for an unknown name."""
    available = list_chapters(root)
    names = list(names or [])
    if not names:
        return available
    chosen = []
    for name in names:
        name = name.rstrip("/").split("/")[-1]
        matches = [c for c in available if c == name] or [c for c in available if c.startswith(name)]
        if len(matches) != 1:
            what = "matches several chapters" if matches else "is not a chapter"
            raise ValueError(
                f"{name!r} {what}; choose from: {', '.join(available) or '(solutions/ has no chapters)'}"
            )
        if matches[0] not in chosen:
            chosen.append(matches[0])
    return chosen


def chapter_notebooks(root: Path, chapter: str) -> list[Path]:
    """The chapter's notebooks (top level of its folder), the main `NN-name.ipynb` first."""
    folder = Path(root) / SOLUTIONS / chapter
    main = folder / f"{chapter}.ipynb"
    if not main.is_file():
        raise ReleaseError(f"{SOLUTIONS}/{chapter}/ has no {chapter}.ipynb (the chapter notebook is named after its folder)")
    nested = [p for p in list_files(folder) if p.suffix == ".ipynb" and len(p.parts) > 1]
    if nested:
        raise ReleaseError(
            f"{SOLUTIONS}/{chapter}/{nested[0].as_posix()}: notebooks in sub-folders are not supported "
            "(nbgrader would copy them unprocessed, solutions included); move it to the chapter folder"
        )
    others = sorted(p for p in folder.glob("*.ipynb") if p != main)
    return [main] + others


def check_solution_notebooks(root: Path, chapter: str) -> None:
    """Raise ReleaseError listing every contract violation in the chapter's solution notebooks."""
    problems = []
    for path in chapter_notebooks(root, chapter):
        label = f"{SOLUTIONS}/{chapter}/{path.name}"
        try:
            nb = read_notebook(path)
        except Exception as exc:  # invalid JSON or not a notebook
            problems.append(f"{label}: cannot be read as a notebook ({exc})")
            continue
        problems.extend(validate_solution(nb, label))
    if problems:
        raise ReleaseError(
            f"refusing to release {chapter}: fix the solution notebook first\n  - " + "\n  - ".join(problems)
        )


def build_chapter(root: Path, chapter: str, dest: Path) -> list[Path]:
    """Write the released chapter into the (new or empty) folder `dest`; return the files written
    (relative to `dest`). This is the whole release of one chapter, without the swap into chapters/."""
    root = Path(root)
    check_solution_notebooks(root, chapter)
    source = root / SOLUTIONS / chapter
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    written = []
    with TempCourse(root, chapter) as course:
        try:
            release_dir = course.generate_assignment()
        except NbgraderError as exc:
            raise ReleaseError(str(exc)) from None
        for notebook in chapter_notebooks(root, chapter):
            released = read_notebook(release_dir / notebook.name)
            (dest / notebook.name).write_bytes(dumps(normalise_released(released)))
            written.append(Path(notebook.name))
    for rel in list_files(source):
        if rel.suffix == ".ipynb":
            continue
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source / rel, dest / rel)
        written.append(rel)
    return sorted(written, key=lambda p: p.as_posix())


def release(
    chapters: Iterable[str] | None = None,
    root: Path | None = None,
    log: Callable[[str], None] = print,
) -> list[str]:
    """Regenerate chapters/<chapter>/ for the given chapters (default: all); return those released.

    Each chapter is replaced atomically. A chapter that fails leaves its old chapters/ folder
    untouched; the others are still released, then ReleaseError reports every failure.
    """
    root = Path(root or REPO_ROOT).resolve()
    names = resolve_chapters(root, chapters)
    if not names:
        log(f"nothing to release: {root / SOLUTIONS} has no chapter folders")
        return []
    released, failures = [], []
    for chapter in names:
        target = root / CHAPTERS / chapter
        staging = sibling_tempdir(target, "new")
        try:
            files = build_chapter(root, chapter, staging)
            replace_dir(staging, target)
        except ReleaseError as exc:
            failures.append(str(exc))
            log(f"FAILED {chapter}")
            continue
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)
        released.append(chapter)
        log(f"released {SOLUTIONS}/{chapter} -> {CHAPTERS}/{chapter} ({len(files)} file(s))")
    if failures:
        raise ReleaseError("\n\n".join(failures))
    return released


def build_release_tree(root: Path, chapter: str) -> tuple[Path, Callable[[], None]]:
    """Release `chapter` into a fresh temporary folder (not chapters/); return (folder, cleanup)."""
    tmp = Path(tempfile.mkdtemp(prefix=f"autograder-release-{chapter}-"))
    try:
        build_chapter(root, chapter, tmp / chapter)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return tmp / chapter, lambda: shutil.rmtree(tmp, ignore_errors=True)
