"""A student's session, for real: JupyterLab on loopback, a chapter opened in Debian's chromium, Run All,
the live widget on screen, then `nbgrader validate` on the notebook JupyterLab saved.

The notebook is chapter 02 with every answer filled in (the solution notebook) so that Run All reaches
the end; the untouched student notebook is validated too, and must fail with the stub's error.
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from test_book import ROOT
from test_browser import SHOTS, chromium_path

pytestmark = pytest.mark.slow
CHAPTER = "02-tokenization"
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def lab(tmp_path):
    """A JupyterLab server on loopback serving tmp_path; yields (base_url, token, folder)."""
    shutil.copy(ROOT / "solutions" / CHAPTER / f"{CHAPTER}.ipynb", tmp_path / "solved.ipynb")
    shutil.copy(ROOT / "chapters" / CHAPTER / f"{CHAPTER}.ipynb", tmp_path / "student.ipynb")
    port, token = free_port(), secrets.token_hex(16)
    log = open(tmp_path / "lab.log", "wb")
    server = subprocess.Popen(
        [str(BIN / "jupyter"), "lab", "--no-browser", "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}",
         f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={tmp_path}",
         "--LabApp.news_url=", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
         *(["--allow-root"] if os.geteuid() == 0 else [])],
        stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path,
        env={**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime")})
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(120):
            try:
                urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=2)
                break
            except OSError:
                if server.poll() is not None:
                    pytest.fail("JupyterLab exited:\n" + (tmp_path / "lab.log").read_text()[-3000:])
                time.sleep(1)
        else:
            pytest.fail("JupyterLab did not start in 120 s:\n" + (tmp_path / "lab.log").read_text()[-3000:])
        yield base, token, tmp_path
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()


def answer_kernel_dialog(page) -> None:
    """A fresh JupyterLab may ask which kernel to start ("Select Kernel"): take the notebook's own."""
    select = page.get_by_role("button", name="Select", exact=True)
    if select.count() and select.first.is_visible():
        select.first.click()


def kernel_idle(base: str, token: str) -> bool:
    """True once the notebook's kernel session exists on the server and its kernel reports idle."""
    with urllib.request.urlopen(f"{base}/api/sessions?token={token}", timeout=5) as reply:
        sessions = json.load(reply)
    return any(s.get("kernel", {}).get("execution_state") == "idle" for s in sessions)


def run_all(page) -> None:
    page.get_by_role("menuitem", name="Run", exact=True).click()
    page.get_by_role("menuitem", name="Run All Cells", exact=True).click()


def validate(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "nbgrader"), "validate", str(path)], capture_output=True, text=True,
                          cwd=path.parent, timeout=600)


def test_student_runs_a_chapter_in_jupyterlab_and_validates_it(lab):
    from playwright.sync_api import sync_playwright

    base, token, folder = lab
    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium_path(), args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(f"{base}/lab/tree/solved.ipynb?token={token}")
        page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=120_000)
        page.wait_for_selector(".jp-Notebook-ExecutionIndicator[data-status='idle']", timeout=120_000)

        answer_kernel_dialog(page)
        deadline = time.monotonic() + 120
        while not kernel_idle(base, token):  # the page can say idle before the server's kernel is up
            assert time.monotonic() < deadline, "the notebook's kernel did not start in 120 s"
            answer_kernel_dialog(page)
            page.wait_for_timeout(1000)
        run_all(page)
        ran_at = time.monotonic()
        # Run All is done when every cell has run ("[n]"), or stops early when a cell fails. A fresh
        # JupyterLab may first ask which kernel to use: answer with the notebook's own.
        finished = """() => {
            const prompts = Array.from(document.querySelectorAll('.jp-CodeCell .jp-InputPrompt'));
            const failed = Array.from(document.querySelectorAll(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']"))
                .some(e => /Traceback|Error:/.test(e.textContent));  // (tqdm bars also write to stderr)
            return failed || (prompts.length > 0 && prompts.every(p => /\\[\\d+\\]/.test(p.textContent)));
        }"""
        deadline = time.monotonic() + 840
        untouched = "() => Array.from(document.querySelectorAll('.jp-CodeCell .jp-InputPrompt')).every(p => /\\[ \\]/.test(p.textContent))"
        while not page.evaluate(finished):
            answer_kernel_dialog(page)
            if time.monotonic() - ran_at > 30 and page.evaluate(untouched) and kernel_idle(base, token):
                run_all(page)  # a Run All sent while the kernel was still connecting runs nothing: send it again
                ran_at = time.monotonic()
            if time.monotonic() > deadline:
                prompts = page.eval_on_selector_all(".jp-CodeCell .jp-InputPrompt", "els => els.map(e => e.textContent)")
                page.screenshot(path=str(SHOTS / "jupyterlab_timeout.png"))
                raise AssertionError(f"Run All did not finish in 14 minutes; prompts: {prompts}")
            page.wait_for_timeout(3000)
        page.wait_for_selector(".jp-Notebook-ExecutionIndicator[data-status='idle']", timeout=60_000)

        failures = page.eval_on_selector_all(
            ".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr'] pre, .jp-RenderedText[data-mime-type='application/vnd.jupyter.error']",
            "els => els.map(e => e.textContent.slice(0, 300)).filter(t => /Error|Traceback/.test(t))")
        assert not failures, "cells failed in JupyterLab:\n" + "\n".join(failures)

        # The tokenizer playground is a live ipywidget here, not the book's static snapshot.
        playground = page.locator(".jp-OutputArea-output .widget-textarea textarea").first
        playground.wait_for(timeout=30_000)
        playground.fill("strawberry")
        page.wait_for_function("() => document.body.innerText.includes('straw')", timeout=30_000)
        page.screenshot(path=str(SHOTS / "jupyterlab_chapter02.png"))

        page.get_by_role("menuitem", name="File", exact=True).click()
        page.get_by_role("menuitem", name="Save Notebook", exact=False).first.click()
        page.wait_for_function("() => !document.querySelector('.jp-mod-dirty')", timeout=30_000)
        browser.close()
    assert not errors, "JavaScript errors in JupyterLab:\n" + "\n".join(errors)

    solved = validate(folder / "solved.ipynb")
    assert solved.returncode == 0 and "Success" in solved.stdout, solved.stdout + solved.stderr
    student = validate(folder / "student.ipynb")
    assert "NotImplementedError" in student.stdout + student.stderr, student.stdout + student.stderr
