"""`python -m autograder check`: is what students and readers get right?

1. chapters/ is up to date: a fresh release (into a temporary folder) has the same files, byte for byte;
2. each solution notebook autogrades to full marks, and runs without errors;
3. each released notebook autogrades to zero, the grader does not crash, and only exercise cells
   fail (the narrative must not depend on an exercise's result);
4. nothing leaks: no BEGIN/END SOLUTION, HIDDEN TESTS or MARK SCHEME markers and no secret line
   (see `notebook.secret_lines`) in chapters/ or in the rendered book (_build/html).
"""

from __future__ import annotations

import html
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

from .config import ALL_MARKERS, BUILD_HTML, CELL_TIMEOUT, CHAPTERS, REPO_ROOT, SOLUTIONS
from .fsutil import list_files
from .grading import Grader
from .notebook import SecretLine, read_notebook, secret_lines
from .releasing import ReleaseError, build_release_tree, chapter_notebooks, list_chapters, resolve_chapters


@dataclass
class Finding:
    chapter: str  # chapter name, or "" for findings about the whole course
    ok: bool
    message: str


def _release_hint(chapter: str) -> str:
    return f"run `python -m autograder release {chapter}`" if chapter else "run `python -m autograder release`"


def _first_difference(a: bytes, b: bytes) -> str:
    a_lines, b_lines = a.split(b"\n"), b.split(b"\n")
    for number, (x, y) in enumerate(zip(a_lines, b_lines), start=1):
        if x != y:
            return f"first difference at line {number}"
    return f"one is longer ({len(a_lines)} vs {len(b_lines)} lines)"


# ---------------------------------------------------------------------------------------------
# 1. chapters/ up to date


def check_up_to_date(root: Path, chapters: list[str], *, whole_course: bool = True) -> list[Finding]:
    """Compare chapters/<chapter>/ with a fresh release, file by file, byte by byte."""
    root = Path(root)
    findings = []
    for chapter in chapters:
        try:
            fresh, cleanup = build_release_tree(root, chapter)
        except ReleaseError as exc:
            findings.append(Finding(chapter, False, f"the solution notebook cannot be released:\n{exc}"))
            continue
        try:
            current = root / CHAPTERS / chapter
            if not current.is_dir():
                findings.append(Finding(chapter, False, f"{CHAPTERS}/{chapter}/ does not exist; {_release_hint(chapter)}"))
                continue
            want, have = set(list_files(fresh)), set(list_files(current))
            problems = []
            for rel in sorted(want - have):
                problems.append(f"{CHAPTERS}/{chapter}/{rel.as_posix()} is missing")
            for rel in sorted(have - want):
                problems.append(f"{CHAPTERS}/{chapter}/{rel.as_posix()} is not produced by the release (delete it)")
            for rel in sorted(want & have):
                a, b = (current / rel).read_bytes(), (fresh / rel).read_bytes()
                if a != b:
                    problems.append(
                        f"{CHAPTERS}/{chapter}/{rel.as_posix()} differs from a fresh release ({_first_difference(a, b)})"
                    )
            if problems:
                findings.append(
                    Finding(chapter, False, f"{CHAPTERS}/{chapter} is stale: " + "; ".join(problems) + f"; {_release_hint(chapter)}")
                )
            else:
                findings.append(Finding(chapter, True, f"{CHAPTERS}/{chapter} matches a fresh release"))
        finally:
            cleanup()
    if whole_course and (root / CHAPTERS).is_dir():
        known = set(list_chapters(root))
        for folder in sorted((root / CHAPTERS).iterdir()):
            if folder.is_dir() and not folder.name.startswith((".", "_")) and folder.name not in known:
                findings.append(
                    Finding(folder.name, False, f"{CHAPTERS}/{folder.name}/ has no source in {SOLUTIONS}/ (delete it, or add the solution notebook)")
                )
    return findings


# ---------------------------------------------------------------------------------------------
# 2 + 3. grading the solution and the release


def _fmt(x: float) -> str:
    return f"{x:g}"


def check_grading(root: Path, chapters: list[str], *, cell_timeout: int = CELL_TIMEOUT) -> list[Finding]:
    """Autograde each chapter's solution (must be full marks) and release (must be zero)."""
    root = Path(root)
    findings = []
    for chapter in chapters:
        try:
            grader = Grader(chapter, root, cell_timeout=cell_timeout)
        except Exception as exc:  # ReleaseError, or nbgrader refusing the source
            findings.append(Finding(chapter, False, f"cannot set up grading: {exc}"))
            continue
        with grader:
            solution_path = root / SOLUTIONS / chapter / f"{chapter}.ipynb"
            released_path = root / CHAPTERS / chapter / f"{chapter}.ipynb"
            if not released_path.exists():
                released_path = grader.course.release_dir / f"{chapter}.ipynb"
            findings.append(_judge_solution(chapter, grader.grade_submission("solution", solution_path)))
            findings.append(_judge_release(chapter, grader.grade_submission("released", released_path)))
    return findings


def _judge_solution(chapter: str, result) -> Finding:
    label = f"{SOLUTIONS}/{chapter}/{chapter}.ipynb"
    if result.reason:
        return Finding(chapter, False, f"{label} could not be graded: {result.reason}")
    errors_by_id = {e["grade_id"]: e for e in result.errors if e["grade_id"]}
    problems = []
    for grade_id, score in result.scores.items():
        if score is None:
            continue  # a written answer: graded by hand
        if score < result.max_scores[grade_id]:
            error = errors_by_id.get(grade_id)
            why = f"{error['ename']}: {error['evalue']}" if error else "no error raised: it wrote to stderr or printed a partial score"
            problems.append(f"{grade_id} scores {_fmt(score)}/{_fmt(result.max_scores[grade_id])} ({why})")
    for error in result.errors:
        if not error["grade_id"] and "raises-exception" not in error["tags"]:
            problems.append(f"{error['cell']} raised {error['ename']}: {error['evalue']}")
    if problems:
        return Finding(chapter, False, f"{label} must score full marks and run cleanly: " + "; ".join(problems))
    return Finding(chapter, True, f"solution scores {_fmt(result.total)}/{_fmt(result.max_total)} on the autograded cells")


def _judge_release(chapter: str, result) -> Finding:
    label = f"{CHAPTERS}/{chapter}/{chapter}.ipynb"
    if result.reason:
        return Finding(chapter, False, f"the grader failed on the released {label}: {result.reason}")
    problems = []
    for grade_id, score in result.scores.items():
        if score:
            problems.append(f"{grade_id} gives {_fmt(score)} point(s) to the unanswered stub (its tests pass without an answer)")
    for error in result.errors:
        if not error["grade_id"] and "raises-exception" not in error["tags"]:
            problems.append(
                f"{error['cell']} raised {error['ename']}: {error['evalue']} (the narrative must not depend on an exercise's result)"
            )
    if problems:
        return Finding(chapter, False, f"released {label}: " + "; ".join(problems))
    return Finding(chapter, True, f"released notebook scores 0/{_fmt(result.max_total)} and the grader ran cleanly")


# ---------------------------------------------------------------------------------------------
# 4. leaks

_TEXT_SUFFIXES = {".html", ".htm", ".ipynb", ".md", ".py", ".txt"}
_TAG = re.compile(r"<[^>]+>")


def _strings(value) -> Iterable[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)
    elif isinstance(value, dict):
        for v in value.values():
            yield from _strings(v)


def searchable_text(path: Path) -> str | None:
    """A file's text as a reader sees it, runs of white space collapsed: notebooks with their
    JSON strings decoded, HTML without tags and entities. None for binary files."""
    try:
        raw = Path(path).read_bytes().decode("utf-8")
    except (UnicodeDecodeError, OSError):
        return None
    parts = [raw]
    suffix = Path(path).suffix.lower()
    if suffix == ".ipynb" or path.name.endswith(".ipynb.txt"):
        try:
            parts.append("\n".join(_strings(json.loads(raw))))
        except ValueError:
            pass
    if suffix in (".html", ".htm"):
        parts.append(html.unescape(_TAG.sub("", raw)))
    return " ".join(" ".join(parts).split())


def _public_reference_text(root: Path) -> str:
    # llm_lib ships to every student and the book prints its source: a line that is also in
    # llm_lib is public, whatever region of a solution notebook it sits in.
    lib = Path(root) / "llm_lib"
    if not lib.is_dir():
        return ""
    return "\n".join(p.read_text(encoding="utf-8", errors="replace") for p in sorted(lib.rglob("*.py")))


def chapter_secrets(root: Path, chapter: str) -> list[SecretLine]:
    root = Path(root)
    public = _public_reference_text(root)
    found = []
    for path in chapter_notebooks(root, chapter):
        found.extend(secret_lines(read_notebook(path), f"{SOLUTIONS}/{chapter}/{path.name}", public))
    return found


def _scan_targets(root: Path, chapters: list[str], whole_course: bool) -> list[tuple[Path, bool]]:
    """(file, check markers) pairs to search: chapters/ and the rendered book."""
    root = Path(root)
    targets = []
    folders = (
        [root / CHAPTERS]
        if whole_course
        else [root / CHAPTERS / c for c in chapters]
    )
    for folder in folders:
        if folder.is_dir():
            targets.extend((folder / rel, True) for rel in list_files(folder))
    build = root / BUILD_HTML
    if build.is_dir():
        for rel in list_files(build):
            if rel.suffix.lower() in _TEXT_SUFFIXES:
                # The book's own pages (book/: the instructor guide...) may explain the markers.
                mentions_markers_legitimately = "book" in rel.parts[:-1]
                targets.append((build / rel, not mentions_markers_legitimately))
    return targets


def check_no_leaks(root: Path, chapters: list[str], *, whole_course: bool = True, max_shown: int = 3) -> list[Finding]:
    """Search chapters/ and _build/html for the markers and the chapters' secret lines."""
    root = Path(root)
    findings = []
    secrets: list[tuple[str, SecretLine]] = []
    for chapter in chapters:
        try:
            secrets.extend((chapter, s) for s in chapter_secrets(root, chapter))
        except (ReleaseError, ValueError) as exc:
            findings.append(Finding(chapter, False, f"cannot read the solution notebooks: {exc}"))
    leaks: dict[str, list[str]] = {}
    for path, check_markers in _scan_targets(root, chapters, whole_course):
        text = searchable_text(path)
        if text is None:
            continue
        shown = path.relative_to(root).as_posix()
        for marker in ALL_MARKERS if check_markers else ():
            if marker in text:
                chapter = next((c for c in chapters if c in shown), "")
                leaks.setdefault(chapter, []).append(f"{shown} contains the marker '{marker}'")
        hits = [(c, s) for c, s in secrets if s.needle in text]
        for chapter, secret in hits[:max_shown]:
            leaks.setdefault(chapter, []).append(f"{shown} contains {secret.text!r} (from {secret.where})")
        if len(hits) > max_shown:
            leaks.setdefault(hits[0][0], []).append(f"{shown}: {len(hits) - max_shown} more secret line(s)")
    for chapter in chapters:
        if chapter in leaks:
            findings.append(Finding(chapter, False, "LEAK: " + "; ".join(leaks.pop(chapter))))
        else:
            where = f"{CHAPTERS}/" + (" or _build/html" if (root / BUILD_HTML).is_dir() else "")
            findings.append(Finding(chapter, True, f"no solution or hidden-test text in {where}"))
    for chapter, messages in leaks.items():  # markers in files of no selected chapter
        findings.append(Finding(chapter, False, "LEAK: " + "; ".join(messages)))
    return findings


# ---------------------------------------------------------------------------------------------


def check(
    chapters: Iterable[str] | None = None,
    root: Path | None = None,
    *,
    grading: bool = True,
    cell_timeout: int = CELL_TIMEOUT,
    log: Callable[[str], None] = print,
) -> bool:
    """Run every check on the given chapters (default: all); print a report; True if all pass."""
    root = Path(root or REPO_ROOT).resolve()
    chosen = resolve_chapters(root, chapters)
    whole_course = not chapters
    if not chosen:
        log(f"nothing to check: {root / SOLUTIONS} has no chapter folders")
        return True
    findings = check_up_to_date(root, chosen, whole_course=whole_course)
    if grading:
        findings += check_grading(root, chosen, cell_timeout=cell_timeout)
    findings += check_no_leaks(root, chosen, whole_course=whole_course)

    order = {c: i for i, c in enumerate(chosen)}
    failures = 0
    for chapter in sorted({f.chapter for f in findings}, key=lambda c: (order.get(c, len(order)), c)):
        log(f"== {chapter or '(course)'}")
        for f in (f for f in findings if f.chapter == chapter):
            failures += not f.ok
            lines = f.message.splitlines() or [""]
            log(f"  {'ok  ' if f.ok else 'FAIL'}  {lines[0]}")
            for line in lines[1:]:
                log(f"        {line}")
    log(f"check: {failures} problem(s)" if failures else "check: all good")
    return failures == 0
