"""Replay an allocation log in event order: live bytes after every event.

One pass, shared by the timeline (analysis/build.py) and the peak anatomy
(analysis/peak.py) through the Replay it returns.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from itertools import accumulate

from memprofile.capture.base import ALIVE, AllocationLog
from memprofile.model.profile import CATEGORIES


@dataclass
class Replay:
    log: AllocationLog
    baseline_bytes: int
    #: One entry per alloc/free event, in order.
    t: list[float]
    seq: list[float]
    row: list[int]
    live_bytes: list[int]
    by_category: dict[str, list[int]]
    peak_index: int  # into the event lists; -1 when there is no event
    #: Each row's alloc and free position in the event order (-1: before the
    #: first event; ALIVE: never freed).
    rank_alloc: list[float]
    rank_free: list[float]
    #: Bytes live before the first event, per category (the pre-existing rows).
    baseline_by_category: dict[str, int]
    _live_at_peak: list[int] | None = field(default=None, repr=False, compare=False)
    #: The run never went above what was live at its start, but worked: the
    #: peak is its working peak, the top of its largest climb (below the start).
    working: bool = False

    @property
    def peak_bytes(self) -> int:
        """Live bytes at the peak event (the working peak's, below the start, where `working`)."""
        return self.live_bytes[self.peak_index] if self.peak_index >= 0 else self.baseline_bytes

    def live_at_peak(self) -> list[int]:
        """Rows live right after the peak event (computed once: the device's
        figures and the peak anatomy both ask)."""
        if self._live_at_peak is None:
            p = self.peak_index
            self._live_at_peak = [i for i in range(len(self.log)) if self.rank_alloc[i] <= p < self.rank_free[i]]
        return self._live_at_peak


def replay(log: AllocationLog) -> Replay:
    # Time orders the events (threads interleave); the recorded sequence
    # breaks ties, and frees go first at equal time and sequence. The running
    # sums are itertools.accumulate: this runs once per event of the run.
    events: list[tuple[float, float, int, int, int]] = []  # (t, seq, is_alloc, delta, row)
    baseline = 0
    base_by_cat = dict.fromkeys(CATEGORIES, 0)
    for i, size in enumerate(log.size):
        if log.pre_existing[i]:
            baseline += size
            base_by_cat[log.category[i]] = base_by_cat.get(log.category[i], 0) + size
        else:
            events.append((log.t_alloc[i], log.seq_alloc[i], 1, size, i))
        if not math.isinf(log.t_free[i]):
            events.append((log.t_free[i], log.seq_free[i], 0, -size, i))
    events.sort()
    n = len(events)
    rank_alloc = [-1.0 if pre else ALIVE for pre in log.pre_existing]
    rank_free = [ALIVE] * len(log.size)
    if not n:
        return Replay(
            log,
            baseline,
            [],
            [],
            [],
            [],
            {c: [] for c in base_by_cat},
            -1,
            rank_alloc,
            rank_free,
            {c: b for c, b in base_by_cat.items() if b},
        )
    t, seq, kinds, deltas, rows = (list(col) for col in zip(*events))
    for k, (is_alloc, i) in enumerate(zip(kinds, rows)):
        if is_alloc:
            rank_alloc[i] = k
        else:
            rank_free[i] = k
    live_bytes = list(accumulate(deltas, initial=baseline))[1:]
    category = log.category
    cats = [category[i] for i in rows]
    present = set(cats)
    columns: dict[str, list[int]] = {}
    for c, base in base_by_cat.items():
        if c in present:
            columns[c] = list(accumulate((d if k == c else 0 for d, k in zip(deltas, cats)), initial=base))[1:]
        else:
            columns[c] = [base] * n
    top = max(live_bytes)
    climb = _largest_climb(live_bytes, baseline) if top <= baseline and any(kinds) else -1
    # A climb worth a breakdown: a cell that frees a large tensor and then works, not one that made 16 B
    working = climb >= 0 and live_bytes[climb] - min(live_bytes[: climb + 1]) >= WORKING_CLIMB_BYTES
    peak_index = live_bytes.index(top) if top > baseline else climb if working else -1
    return Replay(
        log,
        baseline,
        t,
        seq,
        rows,
        live_bytes,
        columns,
        peak_index,
        rank_alloc,
        rank_free,
        {c: b for c, b in base_by_cat.items() if b},
        working=working,
    )


#: The smallest climb of a run that never went above its start that is its working peak.
WORKING_CLIMB_BYTES = 1 << 20


def _largest_climb(live_bytes: list[int], baseline: int) -> int:
    """The top of the largest rise above a lower point before it: the peak
    of the work of a run that never went above its start (a cell that frees
    a large tensor, then trains). One pass."""
    low, best, at = baseline, -1, -1
    for k, v in enumerate(live_bytes):
        if v < low:
            low = v
        elif v - low > best:
            best, at = v - low, k
    return at
