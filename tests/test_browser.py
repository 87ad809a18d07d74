"""The built book in a real browser: Debian's chromium, driven headless by Playwright, offline.

The site is served on loopback and every request that leaves 127.0.0.1 is blocked and reported, so a
page that needs a CDN fails here exactly as it would on a reader's laptop without internet.
Screenshots of a few pages are kept in `_build/screenshots/` as test artifacts.
"""
from __future__ import annotations

import functools
import http.server
import shutil
import threading
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

from test_book import HTML, ROOT, chapter_pages, toc_files

pytestmark = pytest.mark.slow
SHOTS = ROOT / "_build" / "screenshots"
LEAK_MARKERS = ["BEGIN SOLUTION", "END SOLUTION", "BEGIN HIDDEN TESTS", "END HIDDEN TESTS", "Mark scheme"]


def chromium_path() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.fail("Debian's chromium is not installed: `make test` installs it (apt-get install chromium)")
    return path


@pytest.fixture(scope="module")
def site():
    """The built book served on a free loopback port; yields its base URL."""
    if not (HTML / "index.html").exists():
        pytest.fail("no built book in _build/html: run `make book` first (`make test` does it for you)")
    handler = functools.partial(QuietHandler, directory=str(HTML))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/"
    server.shutdown()


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # keep pytest's output for failures
        pass


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium_path(), args=["--no-sandbox"])
        yield browser
        browser.close()


class Visit:
    """One page load with every JavaScript error, console error and off-machine request recorded."""

    def __init__(self, browser, url: str):
        self.problems: list[str] = []
        self.page = browser.new_page(viewport={"width": 1280, "height": 900})
        self.page.on("pageerror", lambda exc: self.problems.append(f"JavaScript error: {exc}"))
        self.page.on("console", lambda msg: msg.type == "error" and self.problems.append(f"console: {msg.text}"))
        self.page.route("**/*", self._only_loopback)
        self.page.goto(url, wait_until="load")

    def _only_loopback(self, route):
        host = urlsplit(route.request.url).hostname
        if host in ("127.0.0.1", None) or route.request.url.startswith("data:"):
            return route.continue_()
        self.problems.append(f"tried to reach {route.request.url} (the book must work offline)")
        return route.abort()

    def close(self):
        self.page.close()


def wait_for_math(page) -> dict:
    """Wait until MathJax has typeset the page; count formulas and the ones left as raw TeX."""
    page.wait_for_function("() => !document.querySelector('.math') || "
                           "(window.MathJax && MathJax.startup && MathJax.startup.promise)", timeout=30_000)
    page.evaluate("() => window.MathJax && MathJax.startup ? MathJax.startup.promise : null")
    return page.evaluate("""() => ({
        formulas: document.querySelectorAll('.math').length,
        typeset: document.querySelectorAll('.math mjx-container, mjx-container').length,
        raw: Array.from(document.querySelectorAll('.math')).filter(e => !e.querySelector('mjx-container')).length,
    })""")


@pytest.mark.parametrize("file", toc_files())
def test_page_renders_offline_without_errors(site, browser, file):
    visit = Visit(browser, site + file + ".html")
    try:
        page = visit.page
        math = wait_for_math(page)
        assert math["raw"] == 0, f"{file}: {math['raw']} of {math['formulas']} formulas were not typeset"
        broken = page.evaluate("() => Array.from(document.images)"
                               ".filter(i => !i.complete || i.naturalWidth === 0).map(i => i.src)")
        assert not broken, f"{file}: images that did not load: {broken}"
        # myst-nb's default alt is the image's own path, which tells a screen-reader user nothing.
        missing_alt = page.evaluate("() => Array.from(document.querySelectorAll('article img'))"
                                    ".filter(i => !/[a-z]{3,}/i.test((i.alt || '').replace(/\\S+\\.(png|svg|jpe?g)/g, '')))"
                                    ".map(i => i.src.slice(0, 80))")
        assert not missing_alt, f"{file}: images without alt text: {missing_alt}"
        if file.startswith("chapters/"):  # (the instructor guide shows the markers when it explains them)
            text = page.inner_text("body")
            leaks = [m for m in LEAK_MARKERS if m in text]
            assert not leaks, f"{file}: solution or hidden-test text is visible: {leaks}"
        dead = [href for href in internal_links(page) if not (HTML / href).exists()]
        assert not dead, f"{file}: links to pages that do not exist: {dead}"
        if file in ("book/intro", chapter_pages()[0]):
            SHOTS.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(SHOTS / (file.replace("/", "_") + ".png")), full_page=False)
    finally:
        visit.close()
    assert not visit.problems, f"{file}:\n" + "\n".join(visit.problems)


def internal_links(page) -> list[str]:
    """Same-site link targets as paths relative to _build/html (fragments and queries dropped)."""
    hrefs = page.evaluate("() => Array.from(document.querySelectorAll('a[href]')).map(a => a.href)")
    base = urlsplit(page.url)
    paths = set()
    for href in hrefs:
        parts = urlsplit(href)
        if parts.scheme.startswith("http") and parts.netloc == base.netloc:
            path = unquote(parts.path).lstrip("/")
            paths.add(path + "index.html" if path.endswith("/") or not path else path)
    return sorted(paths)


def test_chapters_have_typeset_math_and_code_that_fits(site, browser):
    """Across the chapters MathJax really typesets formulas, and no code cell scrolls sideways."""
    typeset, too_wide = 0, []
    for file in chapter_pages():
        visit = Visit(browser, site + file + ".html")
        typeset += wait_for_math(visit.page)["typeset"]
        too_wide += [f"{file}: {n} code blocks wider than the page" for n in [visit.page.evaluate(
            "() => Array.from(document.querySelectorAll('div.cell pre'))"
            ".filter(p => p.scrollWidth > p.clientWidth + 2).length")] if n]
        visit.close()
    assert typeset > 20, f"only {typeset} formulas typeset across the chapters"
    assert not too_wide, "\n".join(too_wide)


def test_search_finds_the_attention_chapter(site, browser):
    visit = Visit(browser, site + "search.html?q=attention")
    try:
        visit.page.wait_for_selector("#search-results li a", timeout=30_000)
        results = visit.page.eval_on_selector_all("#search-results li a", "els => els.map(e => e.href)")
        SHOTS.mkdir(parents=True, exist_ok=True)
        visit.page.screenshot(path=str(SHOTS / "search_attention.png"))
    finally:
        visit.close()
    assert any("04-attention" in href for href in results), f"search results for 'attention': {results}"
    assert not visit.problems, "\n".join(visit.problems)
