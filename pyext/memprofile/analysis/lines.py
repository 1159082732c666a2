"""Place every allocation on the cell line that was running when it was made,
and sum what each line allocated and what of it was alive at the peak."""

from __future__ import annotations

import bisect
from collections.abc import Sequence

from memprofile.analysis.replay import Replay
from memprofile.capture.base import BEFORE_CELL, AllocationLog
from memprofile.model.profile import CATEGORIES, LineStat

BEFORE_LINE = 0
UNKNOWN_LINE = -1
#: Ops and layers named per line.
TOP_PER_LINE = 3


def assign_lines(log: AllocationLog, marks: tuple[Sequence[float], Sequence[int]]) -> None:
    """Fill `log.line`: rows from before the run get 0; the others the line of
    the last mark at or before their allocation (-1 before the first mark,
    or when the run recorded no marks)."""
    times, lines = marks
    if not times:
        log.line = [BEFORE_LINE if pre else UNKNOWN_LINE for pre in log.pre_existing]
        return
    out = []
    right = bisect.bisect_right
    for t, pre in zip(log.t_alloc, log.pre_existing):
        if pre:
            out.append(BEFORE_LINE)
            continue
        k = right(times, t) - 1
        out.append(lines[k] if k >= 0 else UNKNOWN_LINE)
    log.line = out


def cell_lines(source: str) -> list[str]:
    """The cell's lines as the user wrote them, numbered like the compiled
    cell (IPython compiles the cell body; a `%%memprofile` first line is not
    part of it)."""
    return source.splitlines()


def has_lines(replays: list[Replay]) -> bool:
    """Whether the run placed allocations on the cell's lines (a %%memprofile cell)."""
    return any(line > 0 for rp in replays for line in rp.log.line)


def line_figures(
    replays: list[Replay], peak_replay: Replay | None, source: str
) -> tuple[list[LineStat], dict[str, int], dict[str, int]]:
    """One LineStat per line that allocated (and line 0, memory from before
    the cell, when any of it was alive at the peak), in line order; and for
    each op and layer, the line it allocated the most on."""
    text = cell_lines(source)
    stats: dict[int, LineStat] = {}
    ops: dict[int, dict[str, int]] = {}
    layers: dict[int, dict[str, int]] = {}

    def stat(line: int) -> LineStat:
        s = stats.get(line)
        if s is None:
            words = text[line - 1].strip() if 0 < line <= len(text) else (BEFORE_CELL if line == 0 else "")
            s = stats[line] = LineStat(line=line, text=words)
        return s

    for rp in replays:
        log = rp.log
        if not log.line:
            continue
        for i, line in enumerate(log.line):
            if line <= 0:
                continue
            size = log.size[i]
            stat(line).allocated_bytes += size
            op, layer = log.op[i], log.layer[i]
            if op:
                d = ops.setdefault(line, {})
                d[op] = d.get(op, 0) + size
            if layer:
                d = layers.setdefault(line, {})
                d[layer] = d.get(layer, 0) + size
    if peak_replay is not None and peak_replay.log.line:
        log = peak_replay.log
        for i in peak_replay.live_at_peak():
            line = log.line[i]
            if line < 0:
                continue
            s = stat(line)
            s.peak_bytes += log.size[i]
            s.by_category[log.category[i]] = s.by_category.get(log.category[i], 0) + log.size[i]
    for line, s in stats.items():
        s.by_category = {c: s.by_category[c] for c in CATEGORIES if s.by_category.get(c)}
        s.ops = _top(ops.get(line, {}))
        s.layers = _top(layers.get(line, {}))
    return [stats[k] for k in sorted(stats)], _busiest(ops), _busiest(layers)


def _top(d: dict[str, int]) -> dict[str, int]:
    return dict(sorted(d.items(), key=lambda kv: -kv[1])[:TOP_PER_LINE])


def _busiest(per_line: dict[int, dict[str, int]]) -> dict[str, int]:
    """key -> the line where it allocated the most."""
    best: dict[str, tuple[int, int]] = {}
    for line, d in per_line.items():
        for key, size in d.items():
            if key not in best or size > best[key][0]:
                best[key] = (size, line)
    return {k: line for k, (_, line) in best.items()}
