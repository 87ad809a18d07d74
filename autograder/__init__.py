"""The course's instructor tool, built on nbgrader: `python -m autograder {release,check,grade}`.

    release   solutions/NN-name/ -> chapters/NN-name/ (student notebooks, byte-for-byte reproducible)
    check     chapters/ up to date, solutions score full marks, releases score zero, nothing leaks
    grade     a folder of student notebooks -> grades.csv + gradebook.db + autograded notebooks

Modules: `config` (paths, nbgrader settings), `notebook` (the exercise contract for one notebook),
`course` (a temporary nbgrader course), `releasing`, `grading`, `audit` (the `check` command),
`checks` (helpers the test cells call inside the student's kernel), `fsutil` (atomic writes).

This file stays import-light: test cells run `from autograder.checks import ...` inside every
student kernel, which must not pay for importing nbgrader.
"""

import sys

# nbformat validates notebooks with jsonschema, which imports the optional `rfc3987_syntax` (there
# through an extra of jsonschema) to check "iri" strings; that module builds a grammar on import:
# 2.3 s in every grading process, for a format no notebook schema uses. jsonschema skips the check
# when the import fails. (Set here, before any submodule imports nbformat.)
sys.modules.setdefault("rfc3987_syntax", None)

__all__ = ["release", "check", "grade", "grade_notebook", "ReleaseError"]

_LAZY = {
    "release": "releasing",
    "ReleaseError": "releasing",
    "list_chapters": "releasing",
    "check": "audit",
    "grade": "grading",
    "grade_notebook": "grading",
}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        module = importlib.import_module(f".{_LAZY[name]}", __name__)
        return getattr(module, name)
    raise AttributeError(f"module 'autograder' has no attribute {name!r}")
