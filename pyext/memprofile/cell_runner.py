"""Compile and run a notebook cell as IPython would, with its lines marked.

The magic runs profiled cells with it, and "Try it" (trial.py) the suggestion's
cell; why it does not hand the cell to `shell.run_cell` is in jupyter/magic.py.
"""

from __future__ import annotations

import ast
import asyncio
import inspect
from types import CodeType

from memprofile.capture import lines


def compile_cell(shell, cell: str) -> tuple[CodeType | None, CodeType | None]:
    """Compile `cell` the way run_cell would: (statements, last expression),
    with each statement marking its line for the profile (capture/lines.py).

    Raises SyntaxError before anything runs, so a cell that cannot compile is
    never profiled."""
    transformed = shell.transform_cell(cell)
    filename = shell.compile.cache(transformed, cell_number(shell), raw_code=cell)
    tree = shell.compile.ast_parse(transformed, filename=filename)
    tree = shell.transform_ast(tree)
    if tree is None:  # an AST transformer rejected the cell and already said why
        return None, None
    last = None
    if tree.body and isinstance(tree.body[-1], ast.Expr):
        expr = tree.body.pop()
        last_line = expr.lineno
        with shell.compile.extra_flags(_TOP_LEVEL_AWAIT):
            last = shell.compile(ast.Expression(expr.value), filename, "eval")
        # The last expression's line is marked by a statement of its own.
        tree.body.append(lines.mark_statement(last_line, expr))
    marked = lines.instrument(tree)
    if last is not None:
        marked.tree.body.pop(-2)  # instrument marked the mark itself: one is enough
    with shell.compile.extra_flags(_TOP_LEVEL_AWAIT):
        return marked.compile(shell.compile, filename), last


# Top-level `await` compiles as it does in IPython: the code object is then a
# coroutine function, run by run_awaitable below.
_TOP_LEVEL_AWAIT = ast.PyCF_ALLOW_TOP_LEVEL_AWAIT


def cell_number(shell) -> int:
    """The number IPython shows for the running cell (In [N], Cell In[N]).

    IPython 9 counts execution_count up before it runs a cell, older ones after;
    the running cell's ExecutionResult has the number either way."""
    running = getattr(shell.displayhook, "exec_result", None)
    if running is not None and running.execution_count is not None:
        return running.execution_count
    return shell.displayhook.prompt_count


def run_awaitable(awaitable):
    """Run a top-level-await cell's coroutine to its end from a magic (a plain
    function). Outside a kernel it runs on IPython's own asyncio loop, as
    IPython runs such cells. In a kernel the kernel's loop is running this
    very cell and cannot be re-entered, so the coroutine runs on a loop of
    memprofile's, in this thread, with the kernel's set aside meanwhile."""
    from IPython.core.async_helpers import get_asyncio_loop

    loop = get_asyncio_loop()
    running = asyncio.events._get_running_loop()
    if loop.is_running() or loop is running:
        loop = _own_loop()
    asyncio.events._set_running_loop(None)
    try:
        return loop.run_until_complete(awaitable)
    finally:
        asyncio.events._set_running_loop(running)


_loop: asyncio.AbstractEventLoop | None = None


def _own_loop() -> asyncio.AbstractEventLoop:
    """One loop for every profiled await cell, so what one cell starts on it
    (a task, a client session) is still there for the next."""
    global _loop
    if _loop is None or _loop.is_closed():
        _loop = asyncio.new_event_loop()
    return _loop


def _run_code(code: CodeType, shell):
    """exec/eval `code` in the user namespace (eval runs "exec" code too, giving None)."""
    __tracebackhide__ = True  # noqa: F841
    result = eval(code, shell.user_global_ns, shell.user_ns)
    if code.co_flags & inspect.CO_COROUTINE:  # the cell awaits at top level
        return run_awaitable(result)
    return result


def run_compiled(shell, body: CodeType | None, last: CodeType | None):
    """Run a compiled cell in the user namespace; return the last expression's value."""
    __tracebackhide__ = True  # noqa: F841  (IPython hides this frame in tracebacks)
    if body is not None:
        _run_code(body, shell)
    if last is not None:
        return _run_code(last, shell)
    return None
