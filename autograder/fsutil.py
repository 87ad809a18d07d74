"""Small file-system helpers: atomic writes, directory swaps, tree listings.

Everything the autograder writes goes through here, so an interrupted run never leaves a
half-written notebook, CSV or gradebook behind.
"""

from __future__ import annotations

import fnmatch
import os
import shutil
import tempfile
from pathlib import Path

from llm_lib.data import atomic_write

# Files a chapter folder may pick up while someone works in it; never released, never compared.
# (The same list nbgrader ignores by default, plus editor and OS droppings.)
IGNORED = [".ipynb_checkpoints", "*.pyc", "__pycache__", "feedback", ".DS_Store", "*~", ".*.swp"]


def is_ignored(name: str) -> bool:
    """True for a file or folder name that never belongs to a chapter: `is_ignored("__pycache__") -> True`."""
    return any(fnmatch.fnmatch(name, pattern) for pattern in IGNORED)


def list_files(folder: Path) -> list[Path]:
    """Sorted relative paths of the files under `folder`, skipping ignored names at any depth."""
    folder = Path(folder)
    found = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not is_ignored(d))
        for name in filenames:
            if not is_ignored(name):
                found.append((Path(dirpath) / name).relative_to(folder))
    return sorted(found, key=lambda p: p.as_posix())


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to `path` so readers see the old file or the new one, never a partial one."""
    atomic_write(path, data)


def atomic_copy_file(src: Path, dest: Path) -> None:
    """Copy `src` to `dest` atomically (bytes only, no timestamps)."""
    atomic_write_bytes(dest, Path(src).read_bytes())


def sibling_tempdir(target: Path, tag: str) -> Path:
    """A fresh empty folder next to `target` (same file system, so a rename is atomic)."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    path = Path(tempfile.mkdtemp(prefix=f".{target.name}.{tag}-", dir=target.parent))
    os.chmod(path, 0o755)  # mkdtemp makes it private; the folder it becomes should not be
    return path


def replace_dir(new: Path, target: Path) -> None:
    """Put the finished folder `new` at `target`, replacing what was there.

    `new` must be on the same file system (see `sibling_tempdir`). The old folder is moved aside
    first and put back if the swap fails, so `target` is always a complete tree.
    """
    new, target = Path(new), Path(target)
    old = None
    if target.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
        old.rmdir()
        os.replace(target, old)
    try:
        os.replace(new, target)
    except BaseException:
        if old is not None:
            os.replace(old, target)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
