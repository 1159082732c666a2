"""The profiled cell, rewritten to run its forward pass and loss under autocast.

PyTorch's guidance: autocast covers the forward pass and the loss only;
`backward()` and `optimizer.step()` run outside it. So the cell's source is
read with `ast`: each statement that calls `.backward(` (in loops and
functions too) gets the statements before it in its block (from the block's
start, or after the previous optimizer step or backward) wrapped in
`with torch.autocast(...):`. The edit is made on the source lines, so the
cell's own names, comments, indentation and the rest of the cell stay as
they were. On CUDA (float16) the backward and the step go through a
`GradScaler` with the cell's own names for the loss and the optimizer.

A cell without `.backward(` that trained nonetheless calls a function that
does: the code says so in a comment and shows where the `with` block goes. A
forward-only cell is wrapped whole.
"""

from __future__ import annotations

import ast
import io
import tokenize
from dataclasses import dataclass

from memprofile.analysis.cell import CellCode, cell_body, dotted, replace_spans

INDENT = "    "
#: Calls that end a forward pass in a training step.
_STEP_CALLS = ("step", "zero_grad", "backward", "update")
_SCALER = "scaler"


def parse(body: str) -> ast.Module | None:
    """The cell's AST (IPython's line magics blanked, line numbers kept)."""
    return CellCode(body).tree


def runs_under_autocast(tree: ast.Module | None) -> bool:
    """The cell already uses autocast: `torch.autocast`, `torch.amp.autocast`,
    `torch.cuda.amp.autocast`, `torch.cpu.amp.autocast`, or `autocast`
    imported from one of them (in a `with`, a decorator or a call)."""
    if tree is None:
        return False
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and dotted(node.func).split(".")[-1] == "autocast":
            return True
        if isinstance(node, ast.ImportFrom) and any(a.name == "autocast" for a in node.names):
            return True
    return False


def _method_calls(node: ast.AST, name: str) -> list[ast.Call]:
    return [
        n
        for n in ast.walk(node)
        if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute) and n.func.attr == name
    ]


def _is_simple(stmt: ast.stmt) -> bool:
    return not isinstance(
        stmt,
        (
            ast.For,
            ast.AsyncFor,
            ast.While,
            ast.If,
            ast.With,
            ast.AsyncWith,
            ast.Try,
            ast.FunctionDef,
            ast.AsyncFunctionDef,
            ast.ClassDef,
            ast.Match,
        ),
    ) and not (hasattr(ast, "TryStar") and isinstance(stmt, ast.TryStar))


def _blocks(tree: ast.AST):
    """Every statement list in the tree (module, loop, branch, function bodies)."""
    for node in ast.walk(tree):
        for name in ("body", "orelse", "finalbody"):
            stmts = getattr(node, name, None)
            if isinstance(stmts, list) and stmts and isinstance(stmts[0], ast.stmt):
                yield stmts
        for handler in getattr(node, "handlers", []) or []:
            yield handler.body
        for case in getattr(node, "cases", []) or []:
            yield case.body


def _ends_forward(stmt: ast.stmt) -> bool:
    return any(_method_calls(stmt, name) for name in _STEP_CALLS)


@dataclass
class _Wrap:
    first: int  # line numbers (1-based, inclusive) of the statements to wrap
    last: int
    col: int
    backward: ast.stmt  # the statement that calls .backward(
    inline_loss: ast.expr | None = None  # `criterion(model(x), y).backward()`: the loss to name


def _wraps(tree: ast.Module) -> list[_Wrap]:
    found = []
    for stmts in _blocks(tree):
        start = 0
        for k, stmt in enumerate(stmts):
            if not _is_simple(stmt) or not _method_calls(stmt, "backward"):
                if _ends_forward(stmt):  # (a loop that steps: its own blocks are wrapped inside it)
                    start = k + 1
                continue
            call = _method_calls(stmt, "backward")[0]
            receiver = call.func.value  # type: ignore[attr-defined]
            inline = None
            if (
                isinstance(stmt, ast.Expr)
                and stmt.value is call
                and not isinstance(receiver, ast.Name)
                and not _method_calls(receiver, "scale")
            ):
                inline = receiver
            region = stmts[start:k]
            if region or inline is not None:
                first = region[0] if region else stmt
                last = region[-1] if region else None
                found.append(
                    _Wrap(first.lineno, last.end_lineno if last else first.lineno - 1, first.col_offset, stmt, inline)
                )
            start = k + 1
    return sorted(found, key=lambda w: w.first)


def _string_lines(body: str) -> set[int]:
    """Lines inside a multi-line string (after its first): left as they are,
    re-indenting them would change the string."""
    inside: set[int] = set()
    try:
        for tok in tokenize.generate_tokens(io.StringIO(body).readline):
            if tok.type == tokenize.STRING and tok.end[0] > tok.start[0]:
                inside.update(range(tok.start[0] + 1, tok.end[0] + 1))
    except (tokenize.TokenError, IndentationError, SyntaxError):
        pass
    return inside


def _names(tree: ast.Module) -> set[str]:
    return {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}


def _imports_torch(tree: ast.Module | None) -> bool:
    return tree is not None and any(
        isinstance(n, ast.Import) and any(a.name == "torch" for a in n.names) for n in ast.walk(tree)
    )


def autocast_header(device: str) -> str:
    dtype = "torch.float16" if device == "cuda" else "torch.bfloat16"
    return f'with torch.autocast("{device}", dtype={dtype}):'


def rewrite(
    source: str, *, device: str, trained: bool, optimizers: tuple[str, ...] = (), backward_line: int | None = None
) -> str:
    """The code to insert: the cell with its forward pass and loss under
    autocast. `optimizers`: the names of the optimizers the run stepped (for
    GradScaler's `scaler.step(...)`); `backward_line`: the cell's line whose
    call ran the backward pass, where the profile knows it."""
    body = cell_body(source)
    tree = parse(body)
    header = autocast_header(device)
    prefix = "" if _imports_torch(tree) else "import torch\n\n"
    if tree is None or not body.strip():
        return prefix + _template(header, device, "the forward pass and the loss")
    lines = body.split("\n")
    wraps = _wraps(tree)
    if not wraps:
        if not trained:  # a forward-only cell: all of it
            return prefix + header + "\n" + "\n".join(_indent(lines, 1, len(lines), _string_lines(body)))
        return prefix + _in_a_function(lines, tree, header, device, backward_line)
    scaler = _SCALER if _SCALER not in _names(tree) else "grad_scaler"
    keep_multiline = _string_lines(body)
    out: list[str] = []
    done = 0  # lines of `lines` already written (1-based count)
    for w in wraps:
        if w.first <= done:  # two on one line (`a; b`): leave it
            continue
        out.extend(lines[done : w.first - 1])
        pad = " " * w.col
        out.append(pad + header)
        out.extend(_indent(lines, w.first, w.last, keep_multiline))
        done = max(done, w.last)
        if w.inline_loss is not None:
            loss_name = "loss" if "loss" not in _names(tree) else "loss_"
            expr = ast.get_source_segment(body, w.inline_loss) or ast.unparse(w.inline_loss)
            call = w.backward.value  # type: ignore[attr-defined]
            args = ", ".join(ast.get_source_segment(body, a) or ast.unparse(a) for a in call.args + call.keywords)
            out.append(f"{pad}{INDENT}{loss_name} = {expr}")
            out.append(f"{pad}{loss_name}.backward({args})")
            done = w.backward.end_lineno or w.backward.lineno
    out.extend(lines[done:])
    code = "\n".join(out)
    if device == "cuda":
        code = _with_grad_scaler(code, scaler, optimizers)
    return prefix + code.rstrip("\n")


def _indent(lines: list[str], first: int, last: int, keep: set[int]) -> list[str]:
    return [
        line if (i in keep or not line.strip()) else INDENT + line
        for i, line in zip(range(first, last + 1), lines[first - 1 : last])
    ]


def _with_grad_scaler(code: str, scaler: str, optimizers: tuple[str, ...]) -> str:
    """float16 needs loss scaling: `scaler.scale(loss).backward()`,
    `scaler.step(opt)` and `scaler.update()`, with the cell's own names."""
    tree = parse(code)
    if tree is None:
        return code
    lines = code.split("\n")
    edits: list[tuple[int, int, int, str]] = []  # (line, col, end col, replacement) on one line
    after: dict[int, str] = {}
    for stmts in _blocks(tree):
        last_step = None
        for stmt in stmts:
            if not _is_simple(stmt):
                continue
            for call in _method_calls(stmt, "backward"):
                receiver = call.func.value  # type: ignore[attr-defined]
                if receiver.lineno == receiver.end_lineno and not _method_calls(receiver, "scale"):
                    text = ast.get_source_segment(code, receiver)
                    edits.append(
                        (receiver.lineno, receiver.col_offset, receiver.end_col_offset, f"{scaler}.scale({text})")
                    )
            for call in _method_calls(stmt, "step"):
                owner = dotted(call.func.value)  # type: ignore[attr-defined]
                is_optimizer = owner in optimizers if optimizers else "sched" not in owner.lower()
                if (
                    is_optimizer
                    and not call.args
                    and not call.keywords
                    and call.lineno == call.end_lineno
                    and call.end_col_offset is not None
                ):
                    edits.append((call.lineno, call.col_offset, call.end_col_offset, f"{scaler}.step({owner})"))
                    last_step = stmt
        if last_step is not None:
            after[last_step.end_lineno] = " " * last_step.col_offset + f"{scaler}.update()"
    lines = replace_spans(lines, edits)
    for line in sorted(after, reverse=True):
        lines.insert(line, after[line])
    top = 0
    while top < len(lines) and (lines[top].startswith(("import ", "from ")) or not lines[top].strip()):
        top += 1
    lines.insert(top, f'{scaler} = torch.amp.GradScaler("cuda")  # float16 needs its loss scaled')
    return "\n".join(lines)


def _template(header: str, device: str, what: str) -> str:
    """No cell source (a profiled function): where the with block goes."""
    return "\n".join(
        [
            header,
            f"{INDENT}...  # {what}: output = model(inputs); loss = loss_fn(output, targets)",
            "# then, outside the with block:",
            "# scaler.scale(loss).backward(); scaler.step(optimizer); scaler.update()"
            "  # scaler = torch.amp.GradScaler()"
            if device == "cuda"
            else "# loss.backward(); optimizer.step()",
        ]
    )


def _in_a_function(lines: list[str], tree: ast.Module, header: str, device: str, line: int | None) -> str:
    """backward() runs in a function the cell calls: a comment above that call
    shows where the with block goes; the cell itself is unchanged."""
    call = _training_call(tree, line)
    name = (dotted(call.func) or "the function") if call is not None else "a function"
    at = call.lineno if call is not None else 1
    stmt_line = next(
        (
            s
            for s in ast.walk(tree)
            if isinstance(s, ast.stmt) and s.lineno <= at <= (s.end_lineno or s.lineno) and _is_simple(s)
        ),
        None,
    )
    at = stmt_line.lineno if stmt_line is not None else at
    pad = " " * (len(lines[at - 1]) - len(lines[at - 1].lstrip())) if lines else ""
    scaled = device == "cuda"
    note = [
        f"# backward() runs inside {name}(), which this cell calls: in {name}, put the forward",
        "# pass and the loss (only) under autocast, and keep backward() and step() outside:",
        f"#     {header}",
        "#         output = model(inputs)",
        "#         loss = loss_fn(output, targets)",
        '#     scaler.scale(loss).backward()  # scaler = torch.amp.GradScaler("cuda")'
        if scaled
        else "#     loss.backward()",
        "#     scaler.step(optimizer); scaler.update()" if scaled else "#     optimizer.step()",
    ]
    return "\n".join(lines[: at - 1] + [pad + n for n in note] + lines[at - 1 :])


def _training_call(tree: ast.Module, line: int | None) -> ast.Call | None:
    """The call that trains: on the line the profile names, else the cell's
    last call of a function or method that is not a builtin or torch's."""
    calls = [
        n
        for n in ast.walk(tree)
        if isinstance(n, ast.Call)
        and dotted(n.func)
        and not dotted(n.func).startswith(("torch.", "print", "len", "range", "enumerate", "zip", "list"))
    ]
    if line is not None:
        on_line = [c for c in calls if c.lineno <= line <= (c.end_lineno or c.lineno)]
        if on_line:
            return on_line[0]
    return max(calls, key=lambda c: (c.lineno, -c.col_offset), default=None)
