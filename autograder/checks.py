"""Checks for the exercises' test cells. Their messages are read by students, so each one says
what was called, what came back and what was expected.

    from autograder.checks import check_equal, check_close, check_raises, forbid_calls_into

    check_equal(get_stats([1, 2, 3]), {(1, 2): 1, (2, 3): 1}, call="get_stats([1, 2, 3])")
    check_close(softmax(x, dim=-1), ref.softmax(x, dim=-1), call="softmax(x, dim=-1)")
    check_raises(ValueError, BPETokenizer.train, "abc", 10, call='BPETokenizer.train("abc", 10)')

    expected = ref.get_stats(ids)              # compute the reference answer OUTSIDE the block
    with forbid_calls_into(ref):               # any call into llm_lib.tokenizer fails the test
        actual = get_stats(ids)
    check_equal(actual, expected, call="get_stats(ids)")

numpy and torch are never imported here; arrays and tensors are recognised by their type.
"""

from __future__ import annotations

import importlib
import os
import reprlib
import sys
import types

__all__ = ["check_equal", "check_close", "check_raises", "forbid_calls_into"]

_SHOW = reprlib.Repr()
_SHOW.maxstring = 120
_SHOW.maxother = 120
_SHOW.maxlist = _SHOW.maxtuple = _SHOW.maxset = _SHOW.maxdict = 12
_SHOW.maxlevel = 4
_MAX_REPR = 300  # longer values are summarised


# ---------------------------------------------------------------------------------------------
# Describing values


def _kind(x) -> str | None:
    """'tensor' for a torch tensor, 'array' for a numpy array, else None."""
    torch, numpy = sys.modules.get("torch"), sys.modules.get("numpy")
    if torch is not None and isinstance(x, torch.Tensor):
        return "tensor"
    if numpy is not None and isinstance(x, numpy.ndarray):
        return "array"
    return None


def _to_numpy(x):
    import numpy as np

    if _kind(x) == "tensor":
        x = x.detach().cpu()
        if not (x.dtype.is_floating_point or x.dtype.is_complex) or x.dtype.itemsize >= 4:
            return x.numpy()
        return x.float().numpy()  # float16 / bfloat16: numpy has no bfloat16
    return np.asarray(x)


def _a(word: str) -> str:
    """`_a("array") -> "an array"`."""
    return f"{'an' if word[:1].lower() in 'aeiou' else 'a'} {word}"


def _show(x) -> str:
    """A short description: `_show(list(range(100)))` -> '[0, 1, 2, 3, 4, 5, ...]'; arrays and
    tensors with their shape and dtype, large ones summarised."""
    kind = _kind(x)
    if kind:
        import numpy as np

        values = _to_numpy(x)
        head = f"{_a(kind)} of shape {tuple(x.shape)} and dtype {x.dtype}"
        if values.size <= 20:
            return f"{head}: {' '.join(np.array2string(values, precision=6, separator=', ').split())}"
        flat = values.reshape(-1)
        shown = ", ".join(f"{v:.6g}" if isinstance(v, float) else repr(v) for v in flat[:3].tolist() + [...] + flat[-3:].tolist())
        shown = shown.replace("Ellipsis", "...")
        stats = ""
        if values.dtype.kind in "iuf":
            stats = f", min {values.min():.6g}, max {values.max():.6g}"
        return f"{head} ({values.size} values: {shown}{stats})"
    if isinstance(x, (list, tuple)) and 0 < len(x) <= 8 and any(_kind(v) for v in x):
        inner = ", ".join(_show(v) for v in x)
        return f"[{inner}]" if isinstance(x, list) else f"({inner}{',' if len(x) == 1 else ''})"
    if isinstance(x, dict) and 0 < len(x) <= 8 and any(_kind(v) for v in x.values()):
        return "{" + ", ".join(f"{k!r}: {_show(v)}" for k, v in x.items()) + "}"
    text = repr(x)
    if len(text) > _MAX_REPR:
        text = _SHOW.repr(x)
        if len(text) > _MAX_REPR:
            text = text[: _MAX_REPR // 2] + " ... " + text[-_MAX_REPR // 4 :]
    return text


def _show_pair(actual, expected) -> tuple[str, str]:
    """Describe both values; name the types when they differ and the reprs could be confused."""
    a, e = _show(actual), _show(expected)
    numbers = (int, float)
    if not (
        type(actual) is type(expected)
        or actual is None
        or expected is None
        or _kind(actual)
        or _kind(expected)
        or (isinstance(actual, numbers) and isinstance(expected, numbers))
    ):
        a = f"{a} ({_a(type(actual).__name__)})"
        e = f"{e} ({_a(type(expected).__name__)})"
    return a, e


def _index(i) -> str:
    return f"[{i!r}]"


def _at(path: str) -> str:
    return f" at {path}" if path else ""


def _message(call: str, actual, expected, detail: str, hint: str) -> str:
    shown_actual, shown_expected = _show_pair(actual, expected)
    text = f"{call} returned {shown_actual} but the expected answer is {shown_expected}."
    if detail:
        text += f" {detail[0].upper()}{detail[1:]}."
    if hint:
        text += f"\nHint: {hint}"
    return text


# ---------------------------------------------------------------------------------------------
# Exact comparison


def _array_difference(actual, expected, path: str) -> str | None:
    import numpy as np

    if _kind(actual) != _kind(expected):
        return f"expected {_a(_kind(expected) or type(expected).__name__)}, got {_a(_kind(actual) or type(actual).__name__)}{_at(path)}"
    if tuple(actual.shape) != tuple(expected.shape):
        return f"the shape{_at(path)} is {tuple(actual.shape)} but should be {tuple(expected.shape)}"
    if actual.dtype != expected.dtype:
        return f"the dtype{_at(path)} is {actual.dtype} but should be {expected.dtype}"
    a, e = _to_numpy(actual), _to_numpy(expected)
    same = (a == e) | ((a != a) & (e != e))  # NaN equals NaN here
    if bool(np.all(same)):
        return None
    wrong = np.argwhere(~np.asarray(same))
    first = tuple(int(i) for i in wrong[0])
    return (
        f"{len(wrong)} of {a.size} values differ{_at(path)}; the first is at index {first}: "
        f"got {a[first].item()!r}, expected {e[first].item()!r}"
    )


def _difference(actual, expected, path: str = "") -> str | None:
    """None if equal, else a short sentence saying where they differ ('' if nothing to add)."""
    if _kind(actual) or _kind(expected):
        return _array_difference(actual, expected, path)
    if isinstance(expected, dict) and isinstance(actual, dict):
        missing = [k for k in expected if k not in actual]
        extra = [k for k in actual if k not in expected]
        if missing:
            return f"the key {_show(missing[0])} is missing{_at(path)}" + (
                f" ({len(missing)} keys missing)" if len(missing) > 1 else ""
            )
        if extra:
            return f"the key {_show(extra[0])} should not be there{_at(path)}" + (
                f" ({len(extra)} unexpected keys)" if len(extra) > 1 else ""
            )
        for key in expected:
            inner = _difference(actual[key], expected[key], path + _index(key))
            if inner is not None:
                return inner or f"the value for key {_show(key)} is {_show(actual[key])}, expected {_show(expected[key])}"
        return None
    if isinstance(expected, (list, tuple)) and type(actual) is type(expected):
        if len(actual) != len(expected):
            return f"the length{_at(path)} is {len(actual)} but should be {len(expected)}"
        for i, (a, e) in enumerate(zip(actual, expected)):
            inner = _difference(a, e, path + _index(i))
            if inner is not None:
                return inner or f"the first difference is at {path + _index(i)}: got {_show(a)}, expected {_show(e)}"
        return None
    try:
        equal = bool(actual == expected)
    except Exception:
        equal = False
    if equal:
        return None
    if isinstance(expected, (str, bytes)) and type(actual) is type(expected):
        i = next((i for i, (a, e) in enumerate(zip(actual, expected)) if a != e), min(len(actual), len(expected)))
        return f"they first differ at position {i}{_at(path)}"
    if path:
        return f"at {path}: got {_show(actual)}, expected {_show(expected)}"
    return ""


def check_equal(actual, expected, call: str, hint: str = "") -> None:
    """Fail with a readable message unless `actual` equals `expected`.

    Works for numbers, strings, bytes, lists, tuples, dicts (compared item by item) and torch
    tensors / numpy arrays (same kind, shape, dtype and values).
    `check_equal(get_stats([1, 2, 3]), {(1, 2): 1, (2, 3): 1}, call="get_stats([1, 2, 3])")`
    """
    detail = _difference(actual, expected)
    if detail is not None:
        raise AssertionError(_message(call, actual, expected, detail, hint))


# ---------------------------------------------------------------------------------------------
# Approximate comparison


def _close_difference(actual, expected, rtol: float, atol: float, path: str = "") -> str | None:
    import numpy as np

    if isinstance(expected, dict):
        if not isinstance(actual, dict) or set(actual) != set(expected):
            return "" if not path else f"at {path}: got {_show(actual)}, expected {_show(expected)}"
        for key in expected:
            inner = _close_difference(actual[key], expected[key], rtol, atol, path + _index(key))
            if inner is not None:
                return inner
        return None
    if isinstance(expected, (list, tuple)) and any(isinstance(e, (list, tuple, dict)) or _kind(e) for e in expected):
        if not isinstance(actual, (list, tuple)) or len(actual) != len(expected):
            return "" if not path else f"at {path}: got {_show(actual)}, expected {_show(expected)}"
        for i, (a, e) in enumerate(zip(actual, expected)):
            inner = _close_difference(a, e, rtol, atol, path + _index(i))
            if inner is not None:
                return inner
        return None

    if actual is None or isinstance(actual, (str, bytes, dict)):
        return "" if not path else f"at {path}: got {_show(actual)}, expected {_show(expected)}"
    if (_kind(expected) and expected.ndim >= 1 and _kind(actual) != _kind(expected)) or (
        isinstance(expected, (list, tuple)) and not (_kind(actual) or isinstance(actual, (list, tuple)))
    ):
        return f"expected {_a(_kind(expected) or type(expected).__name__)}{_at(path)}, got {_a(type(actual).__name__)}"
    try:
        a = np.asarray(_to_numpy(actual), dtype=np.float64)
        e = np.asarray(_to_numpy(expected), dtype=np.float64)
    except (TypeError, ValueError):
        return f"the value{_at(path)} is not a number or an array of numbers"
    if a.shape != e.shape:
        return f"the shape{_at(path)} is {a.shape} but should be {e.shape}"
    if a.size == 0:
        return None
    allowed = atol + rtol * np.abs(e)
    error = np.abs(a - e)
    bad = ~(error <= allowed) & ~(np.isnan(a) & np.isnan(e)) & ~((a == e) & np.isinf(e))
    if not bad.any():
        return None
    score = np.where(bad, np.nan_to_num(error, nan=np.inf), -1.0)  # NaN counts as the worst error
    first = tuple(int(i) for i in np.unravel_index(int(np.argmax(score)), a.shape))
    got, want = a[first], e[first]
    location = f" at index {first}" if a.ndim else ""
    if np.isnan(got) or np.isnan(want):
        return f"got {got:.6g}{_at(path)}{location} where {want:.6g} was expected"
    text = f"the largest error{_at(path)} is {error[first]:.3g}{location} (got {got:.6g}, expected {want:.6g})"
    if a.size > 1:
        text += f"; {int(bad.sum())} of {a.size} values are off by more than atol + rtol * |expected| (rtol={rtol:g}, atol={atol:g})"
    else:
        text += f"; allowed: {allowed[first]:.3g}"
    return text


def check_close(actual, expected, call: str, rtol: float = 1e-5, atol: float = 1e-8, hint: str = "") -> None:
    """Fail with a readable message unless `actual` is within `atol + rtol * |expected|` of
    `expected`, element by element (floats, lists of floats, tensors, arrays, or tuples/dicts of
    them). `check_close(softmax(x, dim=-1), ref.softmax(x, dim=-1), call="softmax(x, dim=-1)")`
    """
    detail = _close_difference(actual, expected, rtol, atol)
    if detail is not None:
        raise AssertionError(_message(call, actual, expected, detail, hint))


# ---------------------------------------------------------------------------------------------
# Exceptions


def check_raises(exc_type, fn, *args, call: str | None = None, hint: str = "", **kwargs):
    """Call `fn(*args, **kwargs)`; fail unless it raises `exc_type`. Returns the exception so the
    test can look at its message. `check_raises(ValueError, train, "", 300, call='train("", 300)')`
    """
    if call is None:
        shown = [_show(a) for a in args] + [f"{k}={_show(v)}" for k, v in kwargs.items()]
        call = f"{getattr(fn, '__qualname__', repr(fn))}({', '.join(shown)})"
    names = " or ".join(t.__name__ for t in (exc_type if isinstance(exc_type, tuple) else (exc_type,)))
    suffix = f"\nHint: {hint}" if hint else ""
    try:
        result = fn(*args, **kwargs)
    except exc_type as exc:
        return exc
    except Exception as exc:
        raised = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        if isinstance(exc, NotImplementedError):
            raised += " (the exercise is not done yet)"
        raise AssertionError(f"{call} raised {raised} but it should raise {names}.{suffix}") from exc
    raise AssertionError(f"{call} returned {_show(result)} but it should raise {names}.{suffix}")


# ---------------------------------------------------------------------------------------------
# Delegation to the reference implementation


def _module_locations(module) -> tuple[set[str], tuple[str, ...]]:
    """(files, folders) whose code belongs to `module`; a package owns its whole folder."""
    if isinstance(module, str):
        module = importlib.import_module(module)
    if not isinstance(module, types.ModuleType):
        raise TypeError(f"forbid_calls_into takes modules or module names, not {type(module).__name__}")
    if hasattr(module, "__path__"):  # a package
        folders = tuple(os.path.realpath(p) + os.sep for p in module.__path__)
        return set(), folders
    if not getattr(module, "__file__", None):
        raise TypeError(f"module {module.__name__} has no source file to watch")
    return {os.path.realpath(module.__file__)}, ()


class forbid_calls_into:
    """Fail the test if any Python function defined in one of `modules` runs inside the block,
    however it was reached (a direct call, an alias bound earlier, a method, a helper...).

        expected = ref.merge(ids, pair, 256)   # reference answers first, outside the block
        with forbid_calls_into(ref):
            actual = merge(ids, pair, 256)

    Uses `sys.setprofile` for the block's duration and restores the previous profiler after.
    Functions written in C (or re-exported from other libraries) are not seen.
    """

    def __init__(self, *modules):
        if not modules:
            raise TypeError("forbid_calls_into needs at least one module")
        self.names = [m if isinstance(m, str) else m.__name__ for m in modules]
        self._files: set[str] = set()
        self._folders: tuple[str, ...] = ()
        for module in modules:
            files, folders = _module_locations(module)
            self._files |= files
            self._folders += folders
        self._verdict: dict[str, bool] = {}
        self._called: str | None = None
        self._caller: str | None = None
        self._previous = None

    def _forbidden(self, filename: str) -> bool:
        verdict = self._verdict.get(filename)
        if verdict is None:
            real = os.path.realpath(filename)
            verdict = real in self._files or real.startswith(self._folders)
            self._verdict[filename] = verdict
        return verdict

    def _profile(self, frame, event, arg):
        if event == "call" and self._called is None and self._forbidden(frame.f_code.co_filename):
            code = frame.f_code
            self._called = f"{frame.f_globals.get('__name__', '?')}.{getattr(code, 'co_qualname', code.co_name)}"
            caller = frame.f_back
            if caller is not None and not self._forbidden(caller.f_code.co_filename):
                self._caller = caller.f_code.co_name
        if self._previous is not None:
            self._previous(frame, event, arg)

    def __enter__(self):
        self._called = self._caller = None
        self._previous = sys.getprofile()
        sys.setprofile(self._profile)
        return self

    def __exit__(self, exc_type, exc, tb):
        still_ours = sys.getprofile() == self._profile
        sys.setprofile(self._previous)
        modules = " / ".join(self.names)
        if self._called is not None:
            by = f" (from {self._caller})" if self._caller and not self._caller.startswith("<") else ""
            raise AssertionError(
                f"Your code called {self._called}{by}, which is part of the course's reference "
                f"implementation. This exercise asks you to implement the algorithm yourself: "
                f"write it without calling anything from {modules}."
            ) from exc
        if not still_ours and exc is None:
            raise AssertionError(
                f"The check that your code does not call {modules} was switched off while it ran "
                "(sys.setprofile was changed). Please do not change the profiler in your solution."
            )
        return False
