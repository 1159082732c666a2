"""How a suggestion's code applies to the cell it was made for, as "Insert fix" would.

Decided from the code (tests/fixes/harness.py measures fixes the same way):
- "replaces": the code holds the cell's own lines (autocast, inference_mode wrap
  them), or is the cell with some statements changed (a trainer's settings), so
  it is the new cell;
- "edits": every statement of the code is a call the cell already makes (the same
  callee, e.g. `sgd.zero_grad(...)`) with other arguments: that call is changed;
- "below": the code runs as a new cell below, then the cell runs again;
- "top": the code goes first in a fresh kernel (settings that precede start-up).
"""

from __future__ import annotations

import ast
from dataclasses import dataclass

from memprofile.model.profile import Suggestion

#: A cell whose lines are at least this share of the code's is "replaced" by it.
REPLACES_SHARE = 0.5


@dataclass(frozen=True)
class Applied:
    mode: str
    #: What runs first ("below": the code), then the cell as changed.
    before: str
    cell: str


def _lines(source: str) -> list[str]:
    return [s for s in (line.strip() for line in source.splitlines()) if s and not s.startswith(("#", "%"))]


def edited_cell(code: str, cell: str) -> str | None:
    """The cell with each of its calls the code restates replaced by the
    code's version; None unless every statement of the code is such a call."""
    try:
        fix, tree = ast.parse(code), ast.parse(cell)
    except SyntaxError:
        return None
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call)]
    edits = []
    for stmt in fix.body:
        if isinstance(stmt, ast.Import | ast.ImportFrom):
            continue
        if not (isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Call)):
            return None
        callee = ast.unparse(stmt.value.func)
        same = [c for c in calls if ast.unparse(c.func) == callee]
        if not same:
            return None
        edits += [(c, ast.unparse(stmt.value)) for c in same]
    if not edits:
        return None
    lines = cell.splitlines(keepends=True)
    # right to left, so earlier offsets stay valid
    for call, new in sorted(edits, key=lambda e: (e[0].lineno, e[0].col_offset), reverse=True):
        if call.lineno != call.end_lineno:
            return None
        i = call.lineno - 1
        lines[i] = lines[i][: call.col_offset] + new + lines[i][call.end_col_offset :]
    return "".join(lines)


def mode_of(s: Suggestion, cell: str) -> str:
    if s.placement == "top":
        return "top"
    cell_lines, code_lines = _lines(cell), set(_lines(s.code))
    if cell_lines and sum(line in code_lines for line in cell_lines) >= REPLACES_SHARE * len(cell_lines):
        return "replaces"
    if edited_cell(s.code, cell) is not None:
        return "edits"
    if same_statements(s.code, cell):
        return "replaces"
    return "below"


def same_statements(code: str, cell: str) -> bool:
    """The code is the cell with some of its statements changed: as many statements
    (imports aside), and the same last one (the call that trains, say: a framework
    trainer's cell with the keywords set in its `TrainingArguments(...)` and its
    `DataLoader(...)`, where most lines differ)."""

    def body(text: str) -> list[str]:
        return [ast.dump(n) for n in ast.parse(text).body if not isinstance(n, ast.Import | ast.ImportFrom)]

    try:
        a, b = body(code), body(cell)
    except SyntaxError:
        return False
    return len(a) == len(b) >= 2 and a[-1] == b[-1] and a != b


def applied(s: Suggestion, cell: str) -> Applied:
    mode = mode_of(s, cell)
    if mode == "replaces":
        return Applied(mode, "", s.code)
    if mode == "edits":
        edited = edited_cell(s.code, cell)
        assert edited is not None
        return Applied(mode, "", edited)
    return Applied(mode, s.code, cell)
