"""nbgrader preprocessors that keep grading honest when the student's code fights back.

`GuardedExecute` (nbgrader's Execute with three changes):
  - a kernel that dies (os._exit, a segfault, the sandbox's memory or time limit) fails the cell
    that was running and every cell after it, instead of aborting the whole autograde: the tests
    that passed before keep their points;
  - a cell that times out waiting for its output fails alone (nbgrader would abort the notebook);
  - at most `max_output_bytes` of output are kept per cell (gigabytes of prints cannot exhaust
    the grader's memory);
  - *canary* cells are run after every test cell and at the end (`InsertCanaries`).

A canary is a check that must fail: `check_equal(0, 1)`, `check_close`, a bare `assert False`,
numpy's and torch's testing functions, each carrying a random nonce in its message. The grader
(outside the kernel) then verifies that each canary raised an AssertionError carrying its nonce
(`VerifyCanaries`). A canary that passed means the checking machinery was tampered with
(monkeypatched `autograder.checks`, `assert` rewriting, redefined builtins, a swallowed error
reporting...): every test cell of the notebook then scores zero with the reason. The canaries are
removed from the notebook before it is saved, so neither the gradebook nor the feedback sees them.
"""

from __future__ import annotations

import json
import secrets

from nbclient.util import run_sync
from nbclient.exceptions import CellTimeoutError, DeadKernelError
from nbformat import NotebookNode
from nbformat.v4 import new_code_cell, new_output
from traitlets import Integer

from nbgrader.preprocessors import Execute, NbGraderPreprocessor

CANARY_KEY = "autograder_canary"  # cell metadata of a canary: its nonce

_CANARIES = [
    'import autograder.checks as _c\n_c.check_equal(0, 1, call={n!r})',
    'import autograder.checks as _c\n_c.check_equal([1, {{"a": 2}}], [1, {{"a": 3}}], call={n!r})',
    'import autograder.checks as _c\n_c.check_close([0.0, 1.0], [0.0, 2.0], call={n!r})',
    'assert 0 == 1, {n!r}',
    'import numpy.testing as _t\n_t.assert_allclose([0.0], [1.0], err_msg={n!r})',
    'import sys as _s\n'
    'if "torch" in _s.modules:\n'
    '    _s.modules["torch"].testing.assert_close(_s.modules["torch"].zeros(2), _s.modules["torch"].ones(2), msg={n!r})\n'
    'else:\n'
    '    raise AssertionError({n!r})',
]


def _is_test_cell(cell) -> bool:
    meta = cell.get("metadata", {}).get("nbgrader", {})
    return cell.cell_type == "code" and bool(meta.get("grade")) and not meta.get("solution")


def canary_cells() -> list[NotebookNode]:
    cells = []
    for template in _CANARIES:
        nonce = f"autograder-canary-{secrets.token_hex(12)}"
        cells.append(new_code_cell(template.format(n=nonce), metadata={CANARY_KEY: nonce}))
    return cells


class InsertCanaries(NbGraderPreprocessor):
    """Insert canary cells after every test cell and at the end of the notebook."""

    def preprocess(self, nb, resources):
        cells = []
        for cell in nb.cells:
            cells.append(cell)
            if _is_test_cell(cell):
                cells.extend(canary_cells())
        cells.extend(canary_cells())
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
        except CellTimeoutError as exc:  # e.g. output still pouring in after the cell finished
            cell.outputs = list(cell.get("outputs", [])) + [_error("CellTimeoutError", str(exc).splitlines()[0])]
            return cell

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
            nonce = cell.get("metadata", {}).get(CANARY_KEY)
            if not nonce:
                continue
            errors = [o for o in cell.get("outputs", []) if o.get("output_type") == "error"]
            if any(o.get("ename") == "DeadKernelError" for o in errors):
                continue  # nothing ran after the kernel died: no evidence either way
            if not any(o.get("ename") == "AssertionError" and nonce in str(o.get("evalue", "")) for o in errors):
                failures.append(cell.source.splitlines()[-1].strip())
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
