"""Two fixes to the book's HTML: MathJax from an installed package, and no duplicated scripts.

1. Formulas render without any CDN. The PyPI wheel `django-static-mathjax` (pinned in requirements.txt) ships MathJax's browser build in
`mathjax/static/mathjax/es5/`. After an HTML build this extension copies the pieces the book uses
(the `tex-chtml` bundle, the extensions it loads on demand and its web fonts) to `_static/mathjax/`,
and points Sphinx's `mathjax_path` there (a relative path is resolved against `_static/`).
2. Each inline script appears once per page. sphinx-thebe registers its `const THEBE_JS_URL = ...` snippet
   on every read phase, and a second copy is a JavaScript error in every page ("already declared").
"""
from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

BUNDLE = "tex-chtml.js"
PARTS = [BUNDLE, "input", "output", "ui", "a11y", "adaptors"]  # everything but the 4 MB speech engine


def mathjax_dir() -> Path:
    """The installed MathJax 3 browser build, or a clear error saying what to install."""
    spec = importlib.util.find_spec("mathjax")
    folder = Path(spec.origin).parent / "static" / "mathjax" / "es5" if spec and spec.origin else None
    if folder is None or not (folder / BUNDLE).is_file():
        raise RuntimeError("MathJax for the offline book is missing: install the pinned "
                           "`django-static-mathjax` (make venv does) and rebuild.")
    return folder


def use_local_mathjax(app, config) -> None:
    mathjax_dir()  # fail at the start of the build, not after it
    config.mathjax_path = f"mathjax/{BUNDLE}"


def copy_mathjax(app, exception) -> None:
    if exception is not None or app.builder.format != "html":
        return
    source, dest = mathjax_dir(), Path(app.outdir) / "_static" / "mathjax"
    for part in PARTS:
        src = source / part
        if src.is_dir():
            shutil.copytree(src, dest / part, dirs_exist_ok=True)
        else:
            dest.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / part)


def drop_duplicate_scripts(app, pagename, templatename, context, doctree) -> None:
    scripts, seen = context.get("script_files", []), set()
    unique = []
    for js in scripts:  # an inline script is registered once with filename None, once with ""
        key = (js.filename or "", js.priority, tuple(sorted(js.attributes.items())))
        if key not in seen:
            seen.add(key)
            unique.append(js)
    scripts[:] = unique  # in place: other handlers hold this same list


def setup(app):
    app.connect("config-inited", use_local_mathjax)
    app.connect("html-page-context", drop_duplicate_scripts, priority=900)  # after the others add theirs
    app.connect("build-finished", copy_mathjax)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
