"""What the profiled cell's own code does, read from its source (the AST):
the names it binds and reads, the calls it makes, the contexts it runs under.

Rules use it to reason about the cell and not about the notebook: not to
advise what the cell already does (`zero_grad(set_to_none=True)`, an
autocast or inference_mode block, checkpointing), and to write code with the
cell's own variable names. A cell that cannot be parsed (IPython syntax the
shell transforms, say) gives empty facts: rules then fall back to what the
profile measured.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from functools import cached_property

_MAGIC_LINE = re.compile(r"^\s*[%!]")


def cell_body(source: str) -> str:
    """The cell's code without a leading `%%memprofile ...` line."""
    if source.lstrip().startswith("%%"):
        return source.split("\n", 1)[1] if "\n" in source else ""
    return source


def dotted(node: ast.AST) -> str:
    """`torch.optim.Adam` for Attribute/Name chains; "" for anything else."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
        return ".".join(reversed(parts))
    return ""


def replace_spans(lines: list[str], edits: list[tuple[int, int, int, str]]) -> list[str]:
    """`lines` with each (line, col, end col, text) span replaced; columns
    are UTF-8 byte offsets, as `ast` reports them, and one line holds each
    span. Spans on one line are applied right to left, so offsets stay valid."""
    out = list(lines)
    for line, col, end, text in sorted(edits, key=lambda e: (e[0], -e[1])):
        raw = out[line - 1].encode()
        out[line - 1] = (raw[:col] + text.encode() + raw[end:]).decode()
    return out


@dataclass
class Call:
    """One call in the cell: `opt.zero_grad(set_to_none=True)` is
    receiver "opt", method "zero_grad", keywords {"set_to_none": True}."""

    func: str  # dotted name of what is called ("opt.zero_grad", "F.cross_entropy", "lm")
    line: int
    keywords: dict[str, object] = field(default_factory=dict)
    args: int = 0
    node: ast.Call | None = None

    @property
    def method(self) -> str:
        return self.func.rsplit(".", 1)[-1]

    @property
    def receiver(self) -> str:
        return self.func.rsplit(".", 1)[0] if "." in self.func else ""


class CellCode:
    def __init__(self, source: str) -> None:
        self.source = cell_body(source)
        # IPython line magics and shell escapes are not Python: blank them
        # (same line numbers) so the rest of the cell still parses.
        python = "\n".join("" if _MAGIC_LINE.match(line) else line for line in self.source.splitlines())
        try:
            self.tree: ast.Module | None = ast.parse(python)
        except SyntaxError:
            self.tree = None

    @property
    def parsed(self) -> bool:
        return self.tree is not None

    @cached_property
    def calls(self) -> list[Call]:
        """Every call in the cell's own code (not inside the functions and
        classes it defines: those run when called, from anywhere)."""
        found: list[Call] = []
        for node in self._walk():
            if isinstance(node, ast.Call):
                keywords = {}
                for kw in node.keywords:
                    if kw.arg is None:
                        continue
                    try:
                        keywords[kw.arg] = ast.literal_eval(kw.value)
                    except (ValueError, SyntaxError, TypeError):
                        keywords[kw.arg] = ast.unparse(kw.value)
                found.append(Call(dotted(node.func), node.lineno, keywords, len(node.args), node))
        return found

    @cached_property
    def bound(self) -> dict[str, int]:
        """Names the cell assigns (first line that binds each)."""
        names: dict[str, int] = {}
        for node in self._walk():
            targets: list[ast.expr]
            if isinstance(node, ast.Assign):
                targets = node.targets
            elif isinstance(node, ast.AnnAssign | ast.AugAssign):
                targets = [node.target]
            elif isinstance(node, ast.For | ast.With):
                targets = (
                    [node.target]
                    if isinstance(node, ast.For)
                    else [i.optional_vars for i in node.items if i.optional_vars is not None]
                )
            else:
                continue
            for target in targets:
                for n in ast.walk(target):
                    if isinstance(n, ast.Name):
                        names[n.id] = min(names.get(n.id, node.lineno), node.lineno)
        return names

    @cached_property
    def read(self) -> set[str]:
        """Names the cell reads."""
        return {n.id for n in self._walk() if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}

    def assigned_call(self, name: str) -> Call | None:
        """The call whose result the cell binds to `name` (`opt = torch.optim.Adam(...)`)."""
        for node in self._walk():
            if (
                isinstance(node, ast.Assign)
                and isinstance(node.value, ast.Call)
                and any(isinstance(t, ast.Name) and t.id == name for t in node.targets)
            ):
                return next((c for c in self.calls if c.node is node.value), None)
        return None

    def with_replaced(self, replacements: Sequence[tuple[ast.expr, str]]) -> str | None:
        """The cell's source with each node's text replaced; None when a node
        spans several lines (no safe one-line edit)."""
        edits = []
        for node, text in replacements:
            if node.lineno != node.end_lineno or node.end_col_offset is None:  # parsed nodes have an end
                return None
            edits.append((node.lineno, node.col_offset, node.end_col_offset, text))
        return "\n".join(replace_spans(self.source.splitlines(), edits))

    def calls_named(self, *methods: str) -> list[Call]:
        return [c for c in self.calls if c.method in methods]

    def under(self, *context_names: str) -> bool:
        """Whether the cell runs something inside `with X(...)` where X's last
        name part is one of `context_names` (autocast, inference_mode, no_grad)."""
        for node in self._walk():
            if isinstance(node, ast.With | ast.AsyncWith):
                for item in node.items:
                    expr = item.context_expr
                    name = dotted(expr.func) if isinstance(expr, ast.Call) else dotted(expr)
                    if name.rsplit(".", 1)[-1] in context_names:
                        return True
        return False

    def frees_gradients(self, torch_version: str = "2") -> bool | None:
        """True when the cell sets gradients to None between steps
        (`zero_grad()` does since torch 2.0, `zero_grad(set_to_none=True)`
        always); False when it only zeroes them; None when it does neither."""
        calls = self.calls_named("zero_grad")
        if not calls:
            return None
        default = not torch_version.split(".", 1)[0].isdigit() or int(torch_version.split(".", 1)[0]) >= 2
        return any(c.keywords.get("set_to_none", default) is True for c in calls)

    def _walk(self) -> Iterator[ast.AST]:
        """ast.walk over the cell, skipping the bodies of functions, classes and lambdas."""
        if self.tree is None:
            return
        stack: list[ast.AST] = [self.tree]
        while stack:
            node = stack.pop()
            yield node
            for child in ast.iter_child_nodes(node):
                if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef | ast.Lambda):
                    continue
                stack.append(child)
