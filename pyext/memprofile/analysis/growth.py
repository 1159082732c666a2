"""Memory that grows step after step: how much each step keeps (the live
bytes at the steps' ends), what keeps it (a list, dict or deque of the
notebook's variables that gained a value per step: capture/namespace.py),
the line of the cell that adds to it, and the code that frees it."""

from __future__ import annotations

import ast
from dataclasses import dataclass

from memprofile.analysis.cell import CellCode
from memprofile.model.profile import GrownContainer, Profile, StepStat
from memprofile.units import fmt_bytes

KiB = 1 << 10
MiB = 1 << 20
#: End-of-step growth that is a finding: in all, and over this many steps.
GROWTH_BYTES = MiB
MIN_GROWTH_STEPS = 6
#: A container is a culprit when what it gained is this much, or this share of the growth.
MIN_CULPRIT_BYTES = 64 * KiB
CULPRIT_SHARE = 0.1
_ADDS = ("append", "extend", "appendleft", "insert")


@dataclass
class Growth:
    """End-of-step memory that rose steadily: per step, over which steps, read how."""

    per_step: int
    first_step: int
    last_step: int
    first_bytes: int
    last_bytes: int
    source: str  # what was read: "live bytes", "live bytes (estimated from the heap)", ...


@dataclass
class Culprit:
    container: GrownContainer
    #: The cell's line that adds to it, and the added expression's text (None: not in the cell).
    line: int | None
    added: str | None
    #: The code that frees it, what it frees, and how.
    code: str
    saving_bytes: int
    how: str


def _end_values(steps: list[StepStat], exact: bool) -> tuple[list[tuple[int, int]], str]:
    """(step, bytes at its end) for the steps that tell the cell's own growth."""
    if exact:
        after = steps[1:]  # the first makes the optimizer's state and the allocator's caches
        return [(s.index, s.end_bytes) for s in after if s.end_bytes is not None], "live bytes"
    # While a step is recorded in detail the heap and resident memory grow with
    # the profiler's own buffers: only the steps after the detail tell the cell's growth.
    after = [s for s in steps[1:] if not s.detailed]
    for field, what in (
        ("end_estimate_bytes", "live bytes (estimated from the C heap)"),
        ("heap_end_bytes", "the heap's bytes in use"),
        ("rss_end_bytes", "resident memory"),
    ):
        values = [(s.index, getattr(s, field)) for s in after if getattr(s, field) is not None]
        if len(values) >= MIN_GROWTH_STEPS:
            return values, what
    return [], ""


def measured_growth(profile: Profile) -> Growth | None:
    """Live bytes at the steps' ends rising steadily from the second step on,
    by at least GROWTH_BYTES; None for a loop that keeps nothing."""
    steps = profile.steps
    exact = bool(steps) and all(s.end_bytes is not None for s in steps)
    values, what = _end_values(steps, exact)
    if len(values) < MIN_GROWTH_STEPS:
        return None
    first, last = values[0][1], values[-1][1]
    grown = last - first
    rises = sum(1 for (_, a), (_, b) in zip(values, values[1:]) if b >= a)
    half = len(values) // 2
    early, late = values[half][1] - first, last - values[half][1]
    threshold = GROWTH_BYTES if what != "resident memory" else 16 * MiB  # resident memory moves by pages
    if grown < threshold or rises < 0.8 * (len(values) - 1) or late < 0.3 * max(early, 1):
        return None
    return Growth(grown // (values[-1][0] - values[0][0]), values[0][0], values[-1][0], first, last, what)


def culprits(profile: Profile, growth: Growth | None) -> list[Culprit]:
    """The containers that gained a value per step (about one or more for
    each training step) holding real memory, largest first, with their fixes."""
    steps = len(profile.steps)
    if not profile.grown or steps < MIN_GROWTH_STEPS:
        return []
    total = (growth.per_step * steps) if growth else 0
    cell = CellCode(profile.source)
    found = []
    for c in profile.grown:
        held = c.bytes + c.graph_bytes
        if c.added < max(2, steps // 2) or held < max(MIN_CULPRIT_BYTES, CULPRIT_SHARE * total):
            continue
        culprit = _culprit(c, cell)
        if growth is None and culprit.line is not None and not _in_a_training_loop(cell, culprit.line):
            continue  # added outside the steps (predictions an evaluation loop collects): not kept per step
        found.append(culprit)
    return found


#: Calls that make a loop a training loop: the step that ends a training step.
_STEP_CALLS = ("step", "backward", "apply", "apply_gradients", "train_step", "train_on_batch", "fit")


def _in_a_training_loop(cell: CellCode, line: int) -> bool:
    """Whether the line is inside a loop of the cell (or a function it
    defines) that also steps an optimizer or runs backward."""
    if cell.tree is None:
        return True
    for node in ast.walk(cell.tree):
        if isinstance(node, ast.For | ast.While | ast.AsyncFor) and node.lineno <= line <= (node.end_lineno or 0):
            calls = [n for n in ast.walk(node) if isinstance(n, ast.Call)]
            names = {n.func.attr if isinstance(n.func, ast.Attribute) else getattr(n.func, "id", "") for n in calls}
            if names & set(_STEP_CALLS):
                return True
    return False


def _adding_call(cell: CellCode, name: str) -> tuple[int, ast.expr, ast.Call] | None:
    """The cell's call that adds a value to the container `name`
    (`history.append(outputs)`): in its own code or in the functions and
    classes it defines (a Trainer's compute_loss); one in a training loop
    first, else the first in the cell."""
    if cell.tree is None:
        return None
    found = []
    for node in ast.walk(cell.tree):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        if node.args and isinstance(func, ast.Attribute) and func.attr in _ADDS and _same_path(func.value, name):
            found.append((node.lineno, node.args[-1], node))
    found.sort(key=lambda f: f[0])
    return next((f for f in found if _in_a_training_loop(cell, f[0])), found[0] if found else None)


def _same_path(expr: ast.expr, name: str) -> bool:
    """`history` or `stats['loss']` written as the namespace walk names it;
    `self.history` in a class's method for an object's `trainer.history`."""
    try:
        if ast.unparse(expr).replace('"', "'") == name.replace('"', "'"):
            return True
    except Exception:
        return False
    _obj, dot, attr = name.partition(".")
    return (
        bool(dot)
        and "[" not in name
        and isinstance(expr, ast.Attribute)
        and expr.attr == attr
        and isinstance(expr.value, ast.Name)
        and expr.value.id == "self"
    )


def _culprit(c: GrownContainer, cell: CellCode) -> Culprit:
    item = c.item
    scalar = all(d == 1 for d in item.shape)
    on_device = not item.device.startswith("cpu")
    torch = item.type == "torch.Tensor"
    found = _adding_call(cell, c.name) if cell.parsed else None
    line, added = (found[0], ast.unparse(found[2])) if found else (None, None)
    held = c.bytes + c.graph_bytes
    if torch and scalar:
        change, saving, how = ".item()", held, "keeps a Python number: the tensor and any graph behind it are freed"
    elif torch and on_device:
        change, saving, how = ".detach().cpu()", held, f"moves each one off {item.device} and frees its graph"
    elif torch and c.graph_bytes:
        change, saving, how = ".detach()", c.graph_bytes, "frees the autograd graph each one holds (the data stays)"
    else:
        change, saving, how = None, c.bytes, "frees what it holds once it is no longer needed"
    # The change applies to what is added: a tensor itself, not a tuple or dict of them (a model's outputs).
    arrays = c.items == "array"
    if change and arrays and found and found[2].func.attr != "extend":  # type: ignore[attr-defined]  # Attribute
        at, arg, _node = found
        text = cell.with_replaced(
            [
                (
                    arg,
                    f"{ast.unparse(arg)}{change}"
                    if isinstance(arg, ast.Name | ast.Attribute | ast.Subscript | ast.Call)
                    else f"({ast.unparse(arg)}){change}",
                )
            ]
        )
        new_line = text.splitlines()[at - 1].strip() if text else None
        if new_line:
            return Culprit(c, line, added, f"{new_line}   # line {at}: {how}", saving, how)
    if change and arrays:
        rebuilt = {
            "list": f"{c.name}[:] = [v{change} for v in {c.name}]",
            "dict": f"{c.name}.update({{k: v{change} for k, v in {c.name}.items()}})",
        }.get(c.type)
        if rebuilt:
            return Culprit(
                c, line, added, f"{rebuilt}   # {how}; add values with {change} where the loop adds them", saving, how
            )
    how = "frees what it holds once it is no longer needed"
    if change and c.items in ("tuple", "list", "dict"):
        how += f" (or add each {c.items}'s tensors with {change} where the loop adds them)"
    clear = f"del {c.name}[:]" if c.type == "list" else f"{c.name}.clear()"
    return Culprit(
        c,
        line,
        added,
        f"{clear}   # frees the {fmt_bytes(held)} it holds once no longer needed; keep "
        f"a summary per step instead (a metric, .item(), a slice)",
        held,
        how,
    )


def describe(c: Culprit) -> str:
    """`history` gained 50 torch.Tensor 64×10 float32 (2.50 KiB each): 125 KiB, line 7 `history.append(outputs)`."""
    g = c.container
    shape = "×".join(str(d) for d in g.item.shape) or "scalar"
    what = (
        g.item.type
        if g.items == "array"
        else f"{g.items}s of {g.item.type}"
        if g.items != "mixed"
        else f"items holding {g.item.type}"
    )
    text = (
        f"{g.name} gained {g.added} {what} ({shape} {g.item.dtype}, {fmt_bytes(g.item.bytes)} the largest) "
        f"holding {fmt_bytes(g.bytes)}"
    )
    if g.graph_bytes:
        text += f" and autograd graphs saving {fmt_bytes(g.graph_bytes)}"
    if c.line is not None:
        text += f", added at line {c.line} ({c.added})"
    return text
