"""Which line of the profiled cell was running: every allocation is later
placed on the line that was running when it was made (model/lines.py).

How: the magic compiles the cell itself (jupyter/magic.py), so an AST pass
adds a call before each of the cell's statements (loop bodies, `with`, `if`,
`try` included; not inside functions or classes the cell defines: their work
counts for the line that calls them) and wraps each `for` loop's iterable, so
that fetching the next batch counts for the `for` line and not for the last
line of the body. The calls record (time, line) whenever the running line
changes. Cost: one Python call per statement the cell itself runs, nothing
per op, nothing in the functions it calls; nothing at all when no profile is
recording (the marks return at once).

Times are seconds since the run's origin (time.perf_counter()), the clock
every collector's timeline uses.
"""

from __future__ import annotations

import ast
import functools
import operator
import threading
import time
from array import array
from collections.abc import Callable
from typing import Any

from memprofile.capture.base import RawCapture, RawNote

#: Names the instrumented cell calls; put in the namespace it runs in.
MARK = "__memprofile_line__"
ITERATE = "__memprofile_iter__"
#: Line transitions kept per run: a loop of two lines running two million
#: times would otherwise keep 4 M entries (48 MB). Past it, the last line
#: recorded stands for the rest of the run, and the profile says so.
MAX_MARKS = 1_000_000


class _Recorder:
    __slots__ = ("origin", "t", "line", "last", "thread", "full")

    def __init__(self, origin: float) -> None:
        self.origin = origin
        self.t = array("d")
        self.line = array("i")
        self.last = -1
        self.thread = threading.get_ident()
        self.full = False


_active: _Recorder | None = None
#: Work a collector asked the cell's thread to do at its next statement (the
#: torch collector ending its detail when its memory budget is reached: torch's
#: profiler must be stopped by the thread that started it).
_pending: Callable[[], None] | None = None


def set_pending(fn: Callable[[], None] | None) -> None:
    global _pending
    _pending = fn


#: Where the fast marks put the running line (see go_fast).
_fast_line = [-1]
_fast = False
_installed: dict | None = None


def go_fast() -> None:
    """From now on the cell's marks only keep the running line (for an
    error's line), in C: no Python call per statement. For when nothing needs
    the lines' times any more (torch's detail ended, no other framework
    recording): a loop of millions of tiny statements then runs at its pace."""
    global _fast
    r = _active
    if r is None or _installed is None or _fast:
        return
    _fast = True
    _fast_line[0] = r.last
    _installed[MARK] = functools.partial(operator.setitem, _fast_line, 0)


def mark(line: int) -> None:
    """Called by the instrumented cell before each statement."""
    if _pending is not None:
        _run_pending()
    r = _active
    if r is None or line == r.last or r.full:
        return
    if threading.get_ident() != r.thread:
        return  # another thread running cell code (rare): it has no line of this run
    r.last = line
    r.t.append(time.perf_counter() - r.origin)
    r.line.append(line)
    if len(r.line) >= MAX_MARKS:
        r.full = True


def _run_pending() -> None:
    global _pending
    fn, _pending = _pending, None
    if fn is not None:
        fn()


def iterate(iterable: Any, line: int):
    """`for x in it:` becomes `for x in iterate(it, line):`: each next() is
    work of the `for` line."""
    mark(line)
    iterator = iter(iterable)
    while True:
        if _fast:
            yield from iterator
            return
        mark(line)
        try:
            item = next(iterator)
        except StopIteration:
            return
        yield item


def recorded_marks() -> int:
    """Line changes recorded so far in the active run (0 outside one)."""
    r = _active
    return len(r.line) if r is not None else 0


class _Instrument(ast.NodeTransformer):
    def __init__(self, into_definitions: bool = False) -> None:
        self.into_definitions = into_definitions

    def _marks(self, body: list[ast.stmt]) -> list[ast.stmt]:
        out: list[ast.stmt] = []
        for i, stmt in enumerate(body):
            if isinstance(stmt, ast.ImportFrom) and stmt.module == "__future__":
                out.append(stmt)  # must stay first
                continue
            if i == 0 and isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant) \
                    and isinstance(stmt.value.value, str):
                out.append(stmt)  # a docstring stays one (argparse's description=__doc__)
                continue
            if self.into_definitions or not isinstance(stmt, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                self.visit(stmt)
            call = ast.Expr(ast.Call(ast.Name(MARK, ast.Load()), [ast.Constant(stmt.lineno)], []))
            out.append(ast.copy_location(call, stmt))
            out.append(stmt)
        return out

    def generic_visit(self, node: ast.AST) -> ast.AST:
        for name, value in ast.iter_fields(node):
            if isinstance(value, list) and value and isinstance(value[0], ast.stmt):
                setattr(node, name, self._marks(value))
            elif isinstance(value, list):
                for item in value:
                    if isinstance(item, ast.excepthandler | ast.match_case):
                        self.generic_visit(item)
        if isinstance(node, ast.For):  # not AsyncFor: an async iterable has no iter()
            node.iter = ast.copy_location(
                ast.Call(ast.Name(ITERATE, ast.Load()), [node.iter, ast.Constant(node.lineno)], []), node.iter
            )
        return node

    # A cell's functions and classes run later (or elsewhere): not the cell's
    # lines. A script's are its own lines (into_definitions).
    def visit_FunctionDef(self, node: ast.AST) -> ast.AST:
        return self.generic_visit(node) if self.into_definitions else node

    visit_AsyncFunctionDef = visit_ClassDef = visit_FunctionDef

    def visit_Lambda(self, node: ast.AST) -> ast.AST:
        return node


def instrument(tree: ast.Module, into_definitions: bool = False) -> ast.Module:
    """The cell's module AST with a mark before each of its statements;
    `into_definitions`: also in the bodies of the functions and classes it
    defines (a script: its functions' lines are the lines a user reads)."""
    tree = _Instrument(into_definitions).visit(tree)
    return ast.fix_missing_locations(tree)


def install(namespace: dict) -> None:
    """Make the marks callable from code run in `namespace`."""
    global _installed
    namespace[MARK] = mark
    namespace[ITERATE] = iterate
    _installed = namespace


class LinesCollector:
    """Records the running cell line for the run (the cell must have been
    compiled with `instrument`; otherwise nothing is recorded)."""

    name = "lines"

    def __init__(self) -> None:
        self._recorder: _Recorder | None = None

    def start(self, origin: float) -> None:
        global _active
        if _active is not None:
            raise RuntimeError("another run is recording cell lines")
        self._recorder = _active = _Recorder(origin)

    def stop(self) -> RawCapture:
        global _active, _fast
        r, self._recorder = self._recorder, None
        if _active is r:
            _active = None
        if _fast:
            _fast = False
            if _installed is not None:
                _installed[MARK] = mark
            if r is not None and _fast_line[0] != r.last:  # the line running at the end (an error's)
                r.t.append(time.perf_counter() - r.origin)
                r.line.append(_fast_line[0])
        notes: list[RawNote] = []
        if r is not None and r.full:
            notes.append(("lines_truncated", f"the cell changed lines more than {MAX_MARKS:,} times: allocations "
                          f"after {r.t[-1]:.3f} s are placed on the line that ran then"))
        marks = (list(r.t), list(r.line)) if r is not None else ([], [])
        return RawCapture(collector=self.name, line_marks=marks, notes=notes)
