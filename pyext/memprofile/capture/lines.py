"""Which line of the profiled cell was running: every allocation is later
placed on the line that was running when it was made (analysis/lines.py).

How: the magic compiles the cell itself (jupyter/magic.py), so an AST pass
adds a call before each of the cell's statements (loop bodies, `with`, `if`,
`try` included; not inside functions or classes the cell defines: their work
counts for the line that calls them). The calls record (time, line) whenever
the running line changes. They observe, they never wrap what a statement
evaluates: a `for` loop iterates its own iterator (a generator left by
`break` stays open), and the next item is fetched after a mark of the `for`
line at the end of the body (and before each `continue`), so that fetching
a batch counts for the `for` line and not for the body's last line.

The marks' functions and flags are constants of the compiled code (put in
its co_consts after compiling), not names of the namespace: `%reset -f`,
`del` or an `exec` in the cell cannot lose them.

Cost: only while a framework records its detail do the marks record
anything. Each loop is compiled twice, its body as written and its body with
marks, and runs the marked one only while its flag is on: one attribute test
per iteration otherwise. A loop whose last QUIET_WINDOW marked iterations
had no line that took OP_FLOOR_S or more (between two marks) in a quarter
of its runs or more (an op recorded by a framework's profiler takes longer:
~1.7 us for torch's cheapest allocating op here, tens of us for TF's; a
plain statement takes that only now and then, when the process is
preempted) runs unmarked from there on, its work counted for its `for`
line, until the marks are re-armed (a thread of the run: REARM_S after,
doubling up to MAX_REARM_S while the loop is found quiet again): a loop of
plain Python costs about what it costs bare. A loop with slow
plain-Python lines stays marked; a loop with an op every few hundred
iterations may run unmarked between re-arms, its ops then counted for the
`for` line.

Times are seconds since the run's origin (time.perf_counter()), the clock
every collector's timeline uses.
"""

from __future__ import annotations

import ast
import bisect
import copy
import itertools
import threading
import time
import types
import warnings
import weakref
from array import array
from collections.abc import Callable

from memprofile.capture.base import RawCapture, RawNote

#: Line transitions kept per run: a loop of two lines running two million
#: times would otherwise keep 4 M entries (48 MB). Past it, the last line
#: recorded stands for the rest of the run, and the profile says so.
MAX_MARKS = 1_000_000
#: A loop's marked iterations before it may be found quiet, and the time
#: between two marks that may hold a framework's op (see above).
QUIET_WINDOW = 256
OP_FLOOR_S = 1e-6
#: How often quiet loops run marked again (a loop that starts making ops
#: has its lines back within this; the interpreter hands the GIL over every
#: 5 ms anyway).
REARM_S = 0.005
MAX_REARM_S = 0.04

#: The marks' objects by name. At a module's top level (a cell, a script)
#: the code holds them as constants, each a placeholder string until `bind`
#: puts the object there; in a script's functions it looks them up as
#: globals of the script (a compiler such as dynamo traces functions, and
#: takes only literals for constants).
_PLACEHOLDER = "\x00memprofile\x00"
_MARK = "__memprofile_mark__"
_LOOP_MARK = "__memprofile_loop__"
_loops = itertools.count()


class _Recorder:
    __slots__ = ("origin", "t", "line", "last", "thread", "full", "slow")

    def __init__(self, origin: float) -> None:
        self.origin = origin
        self.t = array("d")
        self.line = array("i")
        self.last = -1
        self.thread = threading.get_ident()
        self.full = False
        self.slow = array("l")  # indices of the line changes after a line that took OP_FLOOR_S or more


class LoopFlag:
    """One loop of instrumented code: `on` runs its marked body."""

    __slots__ = ("on", "line", "n", "slow", "wait", "due", "__weakref__")

    def __init__(self, line: int) -> None:
        self.on = _marking
        self.line = line
        self.n = 0  # marked iterations in this window
        self.slow = -1  # the recorder's line changes when the window began
        self.wait = REARM_S  # how long it runs unmarked once found quiet
        self.due = 0.0  # when it may run marked again (perf_counter)


_active: _Recorder | None = None
#: Whether the marks record: a run records lines and a framework needs them.
_marking = False
#: Every loop of code compiled with marks and still alive.
_flags: weakref.WeakSet[LoopFlag] = weakref.WeakSet()
#: The file of the code instrumented last (the cell or script that runs) and
#: whether its functions are marked too (a script's).
_last_file: tuple[str, bool] | None = None
#: Work a collector asked the cell's thread to do at its next statement (the
#: torch collector ending its detail when its memory budget is reached: torch's
#: profiler must be stopped by the thread that started it).
_pending: Callable[[], None] | None = None


def set_pending(fn: Callable[[], None] | None) -> None:
    global _pending
    _pending = fn


def _set_marking(on: bool) -> None:
    global _marking
    _marking = on
    for flag in list(_flags):
        flag.on = on
        flag.n, flag.slow, flag.wait = 0, -1, REARM_S


def go_fast() -> None:
    """Nothing needs the lines' times any more (torch's detail ended, no
    other framework recording): the marks record nothing and every loop runs
    its body as written."""
    _set_marking(False)


#: Set when a loop goes quiet (or the run stops): the re-arming thread sleeps
#: until the first quiet loop is due, and not at all while none is.
_wake = threading.Event()


def _next_due() -> float | None:
    return min((flag.due for flag in list(_flags) if not flag.on), default=None) if _marking else None


def rearm() -> None:
    """Loops that went quiet, and are due, run marked again."""
    if _marking and _active is not None:
        now = time.perf_counter()
        for flag in list(_flags):
            if not flag.on and now >= flag.due:
                flag.n, flag.slow = 0, -1
                flag.on = True


def mark(line: int) -> None:
    """Called by the instrumented code before each statement."""
    if _pending is not None:
        _run_pending()
    r = _active
    if r is None or not _marking or line == r.last or r.full:
        return
    if threading.get_ident() != r.thread:
        return  # another thread running cell code (rare): it has no line of this run
    r.last = line
    now = time.perf_counter() - r.origin
    if r.t and now - r.t[-1] >= OP_FLOOR_S:
        r.slow.append(len(r.t))
    r.t.append(now)
    r.line.append(line)
    if len(r.line) >= MAX_MARKS:
        r.full = True


def loop_mark(flag: LoopFlag) -> None:
    """Called at the end of a loop's marked body and before its `continue`s:
    what follows (the next item, the `while` test) is the loop line's work."""
    r = _active
    if r is None or not _marking or r.full:
        flag.on = False
        return
    mark(flag.line)
    if flag.slow < 0:
        flag.slow = len(r.line)
    flag.n += 1
    if flag.n >= QUIET_WINDOW:
        if _quiet(r, flag.slow):
            flag.on = False  # its work from here is its `for` line's, the last mark
            flag.due = time.perf_counter() + flag.wait
            flag.wait = min(2 * flag.wait, MAX_REARM_S)
            _wake.set()
        else:
            flag.wait = REARM_S
        flag.n, flag.slow = 0, len(r.line)


def _quiet(r: _Recorder, start: int) -> bool:
    """No line since change `start` took OP_FLOOR_S in a quarter of its runs
    (a line that runs only with its op, once a window, counts: that run was slow)."""
    slow: dict[int, int] = {}
    for i in r.slow[bisect.bisect_left(r.slow, start + 1) :]:
        slow[r.line[i - 1]] = slow.get(r.line[i - 1], 0) + 1
    ran = r.line[start:]
    return all(n * 4 < ran.count(line) for line, n in slow.items())


def _run_pending() -> None:
    global _pending
    fn, _pending = _pending, None
    if fn is not None:
        fn()


def recorded_marks() -> int:
    """Line changes recorded so far in the active run (0 outside one)."""
    r = _active
    return len(r.line) if r is not None else 0


def error_line(error: BaseException) -> int | None:
    """The line of the instrumented code running when `error` was raised,
    from its traceback: the cell's statement (a function the cell defines
    counts for the line that calls it, as its allocations do), or a script's
    innermost line."""
    if _last_file is None:
        return None
    filename, into_definitions = _last_file
    line = None
    tb = error.__traceback__
    while tb is not None:
        code = tb.tb_frame.f_code
        if code.co_filename == filename and (into_definitions or code.co_name == "<module>"):
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


def _ref(name: str, in_function: bool = False) -> ast.expr:
    return ast.Name(name, ast.Load()) if in_function else ast.Constant(_PLACEHOLDER + name)


def _call(name: str, arg: ast.expr, at: ast.AST, in_function: bool = False) -> ast.stmt:
    return ast.copy_location(ast.Expr(ast.Call(_ref(name, in_function), [arg], [])), at)


def mark_statement(line: int, at: ast.AST, in_function: bool = False) -> ast.stmt:
    """The statement that marks `line` (placed where `at` is)."""
    return _call(_MARK, ast.Constant(line), at, in_function)


def _declares_names(body: list[ast.stmt]) -> bool:
    """A `global`/`nonlocal` of this scope: compiled twice it would follow a use."""
    todo: list[ast.AST] = list(body)
    while todo:
        node = todo.pop()
        if isinstance(node, ast.Global | ast.Nonlocal):
            return True
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef | ast.Lambda):
            todo.extend(ast.iter_child_nodes(node))
    return False


class _Instrument(ast.NodeTransformer):
    def __init__(self, into_definitions: bool, objects: dict[str, object]) -> None:
        self.into_definitions = into_definitions
        self.objects = objects
        self.loops: list[str | None] = []  # the flag of each loop the visit is in (None: a definition)
        self.functions = 0  # how deep in a script's function definitions the visit is

    def _marks(self, body: list[ast.stmt]) -> list[ast.stmt]:
        out: list[ast.stmt] = []
        for i, stmt in enumerate(body):
            if isinstance(stmt, ast.ImportFrom) and stmt.module == "__future__":
                out.append(stmt)  # must stay first
                continue
            if (
                i == 0
                and isinstance(stmt, ast.Expr)
                and isinstance(stmt.value, ast.Constant)
                and isinstance(stmt.value.value, str)
            ):
                out.append(stmt)  # a docstring stays one (argparse's description=__doc__)
                continue
            if isinstance(stmt, ast.Continue) and self.loops and self.loops[-1] is not None:
                out.append(_call(_LOOP_MARK, _ref(self.loops[-1], self.functions > 0), stmt, self.functions > 0))
                out.append(stmt)
                continue
            if self.into_definitions or not isinstance(stmt, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                stmt = self.visit(stmt)
            out.append(mark_statement(stmt.lineno, stmt, self.functions > 0))
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
        return node

    def _loop(self, node: ast.For | ast.AsyncFor | ast.While) -> ast.AST:
        node.orelse = self._marks(node.orelse) if node.orelse else node.orelse
        if _declares_names(node.body):  # marked always, as it is written once
            self.loops.append(None)
            node.body = self._marks(node.body)
            self.loops.pop()
            return node
        key = f"__memprofile_loop_{next(_loops)}__"
        self.objects[key] = LoopFlag(node.lineno)
        as_written = copy.deepcopy(node.body)
        self.loops.append(key)
        marked = self._marks(node.body)
        self.loops.pop()
        named = self.functions > 0
        marked.append(_call(_LOOP_MARK, _ref(key, named), node, named))
        test = ast.UnaryOp(ast.Not(), ast.Attribute(_ref(key, named), "on", ast.Load()))
        node.body = [ast.copy_location(ast.If(test, as_written, marked), node)]
        return node

    visit_For = visit_AsyncFor = visit_While = _loop

    # A cell's functions and classes run later (or elsewhere): not the cell's
    # lines. A script's are its own lines (into_definitions).
    def visit_FunctionDef(self, node: ast.AST) -> ast.AST:
        if not self.into_definitions:
            return node
        self.loops.append(None)
        function = not isinstance(node, ast.ClassDef)
        self.functions += function
        try:
            return self.generic_visit(node)
        finally:
            self.loops.pop()
            self.functions -= function

    visit_AsyncFunctionDef = visit_ClassDef = visit_FunctionDef

    def visit_Lambda(self, node: ast.AST) -> ast.AST:
        return node


class Instrumented:
    """A module's AST with a mark before each of its statements, and the
    objects its compiled code must hold (`bind`)."""

    def __init__(self, tree: ast.Module, into_definitions: bool = False) -> None:
        self.into_definitions = into_definitions
        self.objects: dict[str, object] = {_MARK: mark, _LOOP_MARK: loop_mark}
        self.tree = ast.fix_missing_locations(_Instrument(into_definitions, self.objects).visit(tree))

    def compile(
        self, compiler: Callable[..., types.CodeType], filename: str, mode: str = "exec", namespace: dict | None = None
    ) -> types.CodeType:
        """`compiler(tree, filename, mode)` (builtin compile, IPython's), then
        `bind`; `namespace`: the globals a script's functions run in."""
        with warnings.catch_warnings():
            # our placeholders, bound below; the cell's own SyntaxWarnings still show
            warnings.filterwarnings("ignore", "'str' object is not callable", SyntaxWarning)
            code = compiler(self.tree, filename, mode)
        return self.bind(code, filename, namespace)

    def bind(self, code: types.CodeType, filename: str, namespace: dict | None = None) -> types.CodeType:
        """The code with the marks' objects in place of their placeholders
        (and as globals of `namespace`, for a script's functions)."""
        for obj in self.objects.values():
            if isinstance(obj, LoopFlag):
                _flags.add(obj)
        global _last_file
        _last_file = (filename, self.into_definitions)
        if namespace is not None:
            namespace.update(self.objects)
        return _bind(code, self.objects)


def _bind(code: types.CodeType, objects: dict[str, object]) -> types.CodeType:
    consts = tuple(
        _bind(c, objects)
        if isinstance(c, types.CodeType)
        else objects.get(c[len(_PLACEHOLDER) :], c)
        if type(c) is str and c.startswith(_PLACEHOLDER)
        else c
        for c in code.co_consts
    )
    return code.replace(co_consts=consts)


def instrument(tree: ast.Module, into_definitions: bool = False) -> Instrumented:
    """The cell's module AST with a mark before each of its statements;
    `into_definitions`: also in the bodies of the functions and classes it
    defines (a script: its functions' lines are the lines a user reads)."""
    return Instrumented(tree, into_definitions)


class LinesCollector:
    """Records the running cell line for the run (the cell must have been
    compiled with `instrument`; otherwise nothing is recorded)."""

    name = "lines"

    def __init__(self) -> None:
        self._recorder: _Recorder | None = None
        self._done = threading.Event()
        self._rearming: threading.Thread | None = None

    def start(self, origin: float) -> None:
        global _active
        if _active is not None:
            raise RuntimeError("another run is recording cell lines")
        self._recorder = _active = _Recorder(origin)
        _set_marking(True)
        self._done.clear()
        self._rearming = threading.Thread(target=self._rearm, name="memprofile-lines", daemon=True)
        self._rearming.start()

    def _rearm(self) -> None:
        while True:
            _wake.clear()  # (then read the flags: a loop that goes quiet from here wakes the wait below)
            if self._done.is_set():
                return
            rearm()
            due = _next_due()
            _wake.wait(None if due is None else max(due - time.perf_counter(), 0.0))

    def stop(self) -> RawCapture:
        global _active
        self._done.set()
        _wake.set()
        if self._rearming is not None and self._rearming is not threading.current_thread():
            self._rearming.join()
        self._rearming = None
        r, self._recorder = self._recorder, None
        if _active is r:
            _active = None
            _set_marking(False)
        notes: list[RawNote] = []
        if r is not None and r.full:
            notes.append(
                (
                    "lines_truncated",
                    f"the cell changed lines more than {MAX_MARKS:,} times: allocations "
                    f"after {r.t[-1]:.3f} s are placed on the line that ran then",
                )
            )
        marks = (list(r.t), list(r.line)) if r is not None else ([], [])
        return RawCapture(collector=self.name, line_marks=marks, notes=notes)
