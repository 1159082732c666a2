"""capture/lines.py's instrumented code does what the code does bare, in the
shapes a loop can take (issue 27, row 1): for/while with else, break and
continue (also inside try/finally and with), nested loops, generators left
open, global and nonlocal inside a loop of a script's function, async for
at the top level, and a cell whose namespace loses every name (%reset).
Each snippet runs bare and instrumented (marks recording, and marks off),
and the namespaces must agree."""

from __future__ import annotations

import ast
import asyncio
import inspect
import textwrap
import threading
import time

import pytest

from memprofile.capture import lines

SNIPPETS = {
    "for-else, break, continue": """
        out = []
        for i in range(10):
            if i % 2:
                continue
            if i == 8:
                break
            out.append(i)
        else:
            out.append("no break")
        for j in range(3):
            pass
        else:
            out.append("else ran")
    """,
    "while-else": """
        i, out = 0, []
        while i < 5:
            i += 1
            if i == 2:
                continue
            out.append(i)
        else:
            out.append("else")
    """,
    "continue in try/finally and with": """
        import contextlib
        out = []
        for i in range(4):
            try:
                if i == 1:
                    continue
                out.append(i)
            finally:
                out.append(-i)
            with contextlib.nullcontext():
                if i == 2:
                    continue
            out.append(i * 10)
    """,
    "nested loops and a generator left open": """
        def g():
            yield from range(100)
        it = g()
        out = []
        for a in range(3):
            for b in it:
                if b % 4 == 3:
                    break
                out.append((a, b))
        out.append(next(it))
    """,
    "global and nonlocal in a function's loop": """
        total = 0
        def add(n):
            for i in range(n):
                global total
                total += i
        def counter():
            count = 0
            def bump():
                for _ in range(3):
                    nonlocal count
                    count += 1
            bump()
            return count
        add(5)
        out = [total, counter()]
    """,
    "a loop that defines functions": """
        fs = []
        for i in range(3):
            def f(i=i):
                return i * 2
            fs.append(f)
        out = [f() for f in fs] + [(lambda: i)()]
    """,
    "match in a loop": """
        out = []
        for v in [1, "a", (2, 3)]:
            match v:
                case int():
                    out.append("int")
                    continue
                case (x, y):
                    out.append(x + y)
                case _:
                    out.append("other")
    """,
}


def _run(source: str, instrumented: bool, marking: bool, into_definitions: bool) -> dict:
    tree = ast.parse(textwrap.dedent(source))
    ns: dict = {}
    if instrumented:
        code = lines.instrument(tree, into_definitions).compile(compile, "<snippet>", namespace=ns)
    else:
        code = compile(tree, "<snippet>", "exec")
    collector = lines.LinesCollector()
    if instrumented and marking:
        collector.start(time.perf_counter())
    try:
        exec(code, ns)
    finally:
        if instrumented and marking:
            collector.stop()
    return {k: v for k, v in ns.items() if k == "out"}


@pytest.mark.parametrize("into_definitions", [False, True], ids=["cell", "script"])
@pytest.mark.parametrize("marking", [True, False], ids=["marking", "off"])
@pytest.mark.parametrize("name", list(SNIPPETS))
def test_instrumented_code_does_what_the_code_does(name, marking, into_definitions):
    bare = _run(SNIPPETS[name], instrumented=False, marking=False, into_definitions=False)
    assert bare["out"], bare
    assert _run(SNIPPETS[name], True, marking, into_definitions) == bare


def test_a_loops_lines_are_recorded_and_fetching_counts_for_the_for_line():
    source = "out = []\nfor i in range(3):\n    out.append(i)\n    if i == 1:\n        continue\n    out.append(-i)\n"
    code = lines.instrument(ast.parse(source)).compile(compile, "<cell>")
    collector = lines.LinesCollector()
    collector.start(time.perf_counter())
    exec(code, {})
    marks = collector.stop().line_marks[1]
    # each iteration starts on the `for` line (the next item is the for line's), continue goes back to it
    assert marks == [1, 2, 3, 4, 6, 2, 3, 4, 2, 3, 4, 6, 2], marks


def test_top_level_async_for_is_instrumented():
    source = textwrap.dedent("""
        async def agen():
            for i in range(3):
                yield i
        out = []
        async for v in agen():
            if v == 1:
                continue
            out.append(v)
    """)
    tree = ast.parse(source)
    code = lines.instrument(tree).compile(
        lambda t, f, m: compile(t, f, m, flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT), "<cell>"
    )
    ns: dict = {}
    result = eval(code, ns)
    assert inspect.iscoroutine(result)
    # on a thread of its own: an earlier test may have left an event loop running on this one
    runner = threading.Thread(target=asyncio.run, args=(result,))
    runner.start()
    runner.join()
    assert ns["out"] == [0, 2]


def test_the_cells_own_syntax_warnings_still_show():
    import warnings

    source = "x = 1\nif x is 1:\n    pass\nfor i in range(2):\n    y = x is 'a'\n"
    with warnings.catch_warnings(record=True) as bare:
        warnings.simplefilter("always")
        compile(source, "<cell>", "exec")
    with warnings.catch_warnings(record=True) as ours:
        warnings.simplefilter("always")
        lines.instrument(ast.parse(source)).compile(compile, "<cell>")

    def said(caught) -> list[str]:
        return sorted({str(w.message) for w in caught if issubclass(w.category, SyntaxWarning)})

    assert said(bare) and said(ours) == said(bare)
