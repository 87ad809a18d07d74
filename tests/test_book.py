"""The built book (`make book` → _build/html), read the way a reader meets it.

`make test` builds the book first; run these alone after `make book`. (A real browser pass over every
page comes with the book issue; these tests read the HTML files.)
"""
import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
HTML = ROOT / "_build" / "html"
pytestmark = pytest.mark.slow


def toc_files() -> list[str]:
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = [toc["root"]]
    for part in toc.get("parts", []):
        files += [entry["file"] for entry in part["chapters"]]
    return files


def chapter_pages() -> list[str]:
    return [f for f in toc_files() if f.startswith("chapters/")]


@pytest.fixture(scope="module")
def html():
    if not (HTML / "index.html").exists():
        pytest.fail("no built book in _build/html: run `make book` first (`make test` does it for you)")
    return HTML


def page(html: Path, file: str) -> str:
    return (html / f"{file}.html").read_text(encoding="utf-8")


def test_every_toc_entry_is_rendered(html):
    missing = [f for f in toc_files() if not (html / f"{f}.html").exists()]
    assert not missing, f"pages in _toc.yml without HTML: {missing}"
    # Only files in the toc are built: the instructor's solutions never reach the site.
    assert not (html / "solutions").exists() and not list(html.rglob("*solutions*"))


@pytest.mark.parametrize("file", chapter_pages())
def test_chapter_pages_show_executed_outputs_and_exercise_stubs(html, file):
    text = page(html, file)
    assert text.count('class="cell_output') >= 5, f"{file}: too few executed outputs"
    assert re.search(r"<img[^>]+(src=\"[^\"]+\.(png|svg)\"|data:image)", text), f"{file}: no figure"
    assert "NotImplementedError" in text, f"{file}: the exercise stubs are not shown"
    assert "Traceback (most recent call last)" not in text, f"{file}: a cell failed while executing"
    # The downloadable notebook is the student version.
    source = html / "_sources" / f"{file}.ipynb"
    assert source.exists() and "NotImplementedError" in source.read_text(encoding="utf-8")


def test_math_is_typeset_markup(html):
    text = "".join(page(html, f) for f in chapter_pages() + ["book/intro"])
    assert 'class="math notranslate nohighlight"' in text


def test_citations_resolve(html):
    bib = (html / "book" / "bibliography.html").read_text(encoding="utf-8")
    assert bib.count('class="citation"') + bib.count("<dt") >= 10
    for file in toc_files():
        # Code samples may show the role itself (the instructor guide does); prose must not.
        text = re.sub(r"<(code|pre)\b.*?</\1>", "", page(html, file), flags=re.S)
        assert "{cite}" not in text and ":cite:`" not in text, f"{file}: a citation was left unrendered"


def test_no_solution_or_hidden_test_text_in_the_site(html):
    from autograder.audit import check_no_leaks

    chapters = sorted(p.name for p in (ROOT / "solutions").iterdir() if p.is_dir())
    leaks = [f.message for f in check_no_leaks(ROOT, chapters) if not f.ok]
    assert not leaks, "\n".join(leaks)
