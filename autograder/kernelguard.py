"""nbgrader preprocessors that keep grading honest when the student's code fights back.

`GuardedExecute` (nbgrader's Execute with three changes):
  - a kernel that dies (os._exit, a segfault, the sandbox's memory or time limit) fails the cell
    that was running and every cell after it, instead of aborting the whole autograde: the tests
    that passed before keep their points;
  - a cell that times out waiting for its output fails alone (nbgrader would abort the notebook),
    unless the kernel then cannot run `pass` within the cell time limit: it is treated as dead, so a
    kernel broken for good (builtins redefined under ipykernel) costs one cell's wait, not every cell's;
  - at most `max_output_bytes` of output are kept per cell (gigabytes of prints cannot exhaust
    the grader's memory);
  - a *canary* cell is run after every test cell and at the end (`InsertCanaries`).

A canary runs checks that must fail: `check_equal(0, 1)`, `check_close`, a bare `assert False`,
numpy's and torch's testing functions, each carrying a random nonce in its message; it collects
their AssertionErrors and raises one with all the messages. The grader (outside the kernel) then
verifies that the cell raised an AssertionError carrying every nonce (`VerifyCanaries`). A check
that passed means the checking machinery was tampered with (monkeypatched `autograder.checks`,
`assert` rewriting, redefined builtins, a swallowed error reporting...): every test cell of the
notebook then scores zero with the reason. The canaries are
removed from the notebook before it is saved, so neither the gradebook nor the feedback sees them.
"""

from __future__ import annotations

import json
import re
import secrets
import textwrap

from nbclient.exceptions import CellTimeoutError, DeadKernelError
from nbclient.util import run_sync
from jupyter_core.utils import ensure_async
from nbconvert.exporters import HTMLExporter, TemplateExporter
from nbconvert.filters.highlight import Highlight2HTML
from nbconvert.filters.widgetsdatatypefilter import WidgetsDataTypeFilter
from nbformat import NotebookNode
from nbformat.v4 import new_code_cell, new_output
from traitlets import Integer

from nbgrader.preprocessors import Execute, NbGraderPreprocessor

CANARY_KEY = "autograder_canary"  # cell metadata of a canary cell: [[nonce, check], ...]

_CHECKS = [  # each must raise AssertionError carrying its nonce {n}
    'import autograder.checks as _c\n_c.check_equal(0, 1, call={n!r})',
    'import autograder.checks as _c\n_c.check_equal([1, {{"a": 2}}], [1, {{"a": 3}}], call={n!r})',
    'import autograder.checks as _c\n_c.check_close([0.0, 1.0], [0.0, 2.0], call={n!r})',
    'assert 0 == 1, {n!r}',
    'import numpy.testing as _t\n_t.assert_allclose([0.0], [1.0], err_msg={n!r})',
    'import sys as _s\n'
    'if "torch" in _s.modules:\n'
    '    _s.modules["torch"].testing.assert_close(_s.modules["torch"].zeros(2), _s.modules["torch"].ones(2), msg={n!r})\n'
    'else:\n'
    '    raise _b.AssertionError({n!r})',
]


def _is_test_cell(cell) -> bool:
    meta = cell.get("metadata", {}).get("nbgrader", {})
    return cell.cell_type == "code" and bool(meta.get("grade")) and not meta.get("solution")


def canary_cell() -> NotebookNode:
    """One cell that runs every check in turn, collects the AssertionErrors' messages and raises them
    all in one AssertionError. One cell (not one per check) keeps the cost to one kernel round trip.
    It names `str` and `AssertionError` through the builtins module, so a student's own variable
    called `str` cannot make an honest notebook look tampered with."""
    checks, lines = [], ["import builtins as _b", "_autograder_seen = []"]
    for template in _CHECKS:
        nonce = f"autograder-canary-{secrets.token_hex(12)}"
        code = template.format(n=nonce)
        checks.append([nonce, next(line for line in code.splitlines() if nonce in line).strip()])
        lines += ["try:", textwrap.indent(code, "    "), "except _b.AssertionError as _e:",
                  "    _autograder_seen.append(_b.str(_e))"]
    lines.append('raise _b.AssertionError(" | ".join(_autograder_seen))')
    return new_code_cell("\n".join(lines), metadata={CANARY_KEY: checks})


class InsertCanaries(NbGraderPreprocessor):
    """Insert a canary cell after every test cell and at the end of the notebook."""

    def preprocess(self, nb, resources):
        cells = []
        for cell in nb.cells:
            cells.append(cell)
            if _is_test_cell(cell):
                cells.append(canary_cell())
        cells.append(canary_cell())
        nb.cells = cells
        return nb, resources


def _error(ename: str, evalue: str) -> NotebookNode:
    return new_output("error", ename=ename, evalue=evalue, traceback=[f"{ename}: {evalue}"])


class GuardedExecute(Execute):
    """Execute that survives a dead kernel and caps each cell's output (see module docstring)."""

    max_output_bytes = Integer(8 * 1024 * 1024, help="output kept per cell, in bytes").tag(config=True)

    def preprocess(self, nb, resources=None, km=None):
        self._dead = None
        self._output_bytes: dict[int, int] = {}
        return super().preprocess(nb, resources, km)

    async def async_execute_cell(self, cell, cell_index, execution_count=None, store_history=True):
        if cell.cell_type == "code" and self._dead:
            cell.outputs = [_error("DeadKernelError", self._dead)]
            return cell
        try:
            return await super().async_execute_cell(cell, cell_index, execution_count, store_history)
        except DeadKernelError:
            self._dead = (
                "the kernel died while this or an earlier cell ran (os._exit, a crash, or the "
                "sandbox's memory, process or time limit); this cell did not run"
            )
            cell.outputs = list(cell.get("outputs", [])) + [_error("DeadKernelError", self._dead)]
            return cell
        except CellTimeoutError as exc:  # no end of output after the cell's time was up and it was interrupted
            cell.outputs = list(cell.get("outputs", [])) + [_error("CellTimeoutError", str(exc).splitlines()[0])]
            if not await self._answers():  # e.g. builtins broken under ipykernel: every cell would wait
                self._dead = (
                    f"the kernel stopped answering after a cell timed out (it did not run `pass` within "
                    f"{self.timeout} s); this cell did not run"
                )
            return cell

    async def _answers(self) -> bool:
        """Does the kernel still run `pass` within the cell time limit? Asked on the shell channel
        only, outside nbclient's cell machinery: no cell of the notebook is touched."""
        msg_id = await ensure_async(self.kc.execute("pass", store_history=False))
        try:
            reply = await self.async_wait_for_reply(msg_id)  # None: no reply within self.timeout
        except DeadKernelError:
            return False
        return reply is not None and reply["content"].get("status") == "ok"

    execute_cell = run_sync(async_execute_cell)  # nbclient binds the base class's coroutine otherwise

    def output(self, outs, msg, display_id, cell_index):
        size = len(json.dumps(msg.get("content", {}), default=str))
        used = self._output_bytes.get(cell_index, 0)
        self._output_bytes[cell_index] = used + size
        if used + size > self.max_output_bytes:
            if used <= self.max_output_bytes:
                note = f"[autograder: output beyond {self.max_output_bytes // 1024} KiB was dropped]\n"
                outs.append(new_output("stream", name="stderr", text=note))
            return None
        return super().output(outs, msg, display_id, cell_index)


class VerifyCanaries(NbGraderPreprocessor):
    """Check the canaries out of the kernel, remove them, and fail every test on tampering.

    The verdict goes to `nb.metadata.autograder.tampering` (a sentence, or absent)."""

    def preprocess(self, nb, resources):
        failures = []
        for cell in nb.cells:
            checks = cell.get("metadata", {}).get(CANARY_KEY)
            if not checks:
                continue
            errors = [o for o in cell.get("outputs", []) if o.get("output_type") == "error"]
            if any(o.get("ename") == "DeadKernelError" for o in errors):
                continue  # nothing ran after the kernel died: no evidence either way
            raised = " ".join(str(o.get("evalue", "")) for o in errors if o.get("ename") == "AssertionError")
            failures += [check for nonce, check in checks if nonce not in raised]
        nb.cells = [c for c in nb.cells if not c.get("metadata", {}).get(CANARY_KEY)]
        if failures:
            reason = (
                "tampering detected: a check that must fail passed after the student's code ran "
                f"({failures[0]}); the checking machinery was changed, so no test can be trusted"
            )
            nb.metadata.setdefault("autograder", {})["tampering"] = reason
            for cell in nb.cells:
                if _is_test_cell(cell):
                    cell.outputs = list(cell.get("outputs", [])) + [_error("TamperingDetected", reason)]
        return nb, resources


class RedactForFeedback(NbGraderPreprocessor):
    """For the feedback HTML: error outputs of test cells keep their name and message but lose the
    traceback, whose source context could show hidden test lines."""

    def preprocess_cell(self, cell, resources, index):
        if cell.cell_type == "code" and cell.get("metadata", {}).get("nbgrader", {}).get("grade"):
            for output in cell.get("outputs", []):
                if output.get("output_type") == "error":
                    output["traceback"] = [f"{output.get('ename', 'Error')}: {output.get('evalue', '')}"]
        return cell, resources


_IMG_WITHOUT_ALT = re.compile(r"<img(?![^>]*(?<![\w-])alt=)", re.IGNORECASE)


class FeedbackExporter(HTMLExporter):
    """The feedback page: nbconvert's HTML exporter minus its final BeautifulSoup pass, which parses
    the whole page again to add alt text and tab stops (1.3 s of the 2.8 s a page took, for every
    student). Images without alt text get one from a regex instead; the tab stops went on JupyterLab
    classes that nbgrader's (classic) feedback template does not use, so the pass added none here."""

    def from_notebook_node(self, nb, resources=None, **kw):
        language = nb.metadata.get("language_info", {})
        lexer = language.get("pygments_lexer", language.get("name"))
        resources = self._init_resources(resources)
        self.register_filter("highlight_code", self.filters.get("highlight_code", Highlight2HTML(pygments_lexer=lexer, parent=self)))
        self.register_filter("filter_data_type", WidgetsDataTypeFilter(notebook_metadata=self._nb_metadata, parent=self, resources=resources))
        html, resources = TemplateExporter.from_notebook_node(self, nb, resources, **kw)
        return _IMG_WITHOUT_ALT.sub('<img alt="a figure of the notebook (no description)"', html), resources
