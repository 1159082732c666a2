"""Memory over time drawn as steps: live bytes hold their value until the
next event or sample. Drawn as straight lines between points, a 4 MiB
tensor made 2.3 s into a cell would show as a 2.3 s ramp from 0: growth
that never happened."""

from __future__ import annotations

from collections.abc import Sequence


def as_steps(t: Sequence[float], *columns: Sequence) -> tuple[list[float], list[list]]:
    """(t, columns) with a point added before each change: at t[i], every
    column still has its value of point i-1. A line through them is a step
    function (twice the points, less one)."""
    n = len(t)
    if n < 2:
        return list(t), [list(c) for c in columns]
    out_t = [t[0]]
    out = [[c[0]] for c in columns]
    for i in range(1, n):
        out_t.append(t[i])
        out_t.append(t[i])
        for column, values in zip(out, columns):
            column.append(values[i - 1])
            column.append(values[i])
    return out_t, out
