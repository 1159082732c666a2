"""Replay an allocation log in event order: live bytes after every event.

One pass, shared by the timeline (model/build.py) and the peak anatomy
(analysis/peak.py) through the Replay it returns.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

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

    @property
    def peak_bytes(self) -> int:
        return self.live_bytes[self.peak_index] if self.peak_index >= 0 else self.baseline_bytes

    def live_at_peak(self) -> list[int]:
        """Rows live right after the peak event."""
        p = self.peak_index
        return [i for i in range(len(self.log)) if self.rank_alloc[i] <= p < self.rank_free[i]]


def replay(log: AllocationLog) -> Replay:
    # Time orders the events (threads interleave); the recorded sequence
    # breaks ties, and frees go first at equal time and sequence.
    events: list[tuple[float, float, int, int]] = []  # (t, seq, delta, row)
    baseline = 0
    base_by_cat = dict.fromkeys(CATEGORIES, 0)
    for i, size in enumerate(log.size):
        if log.pre_existing[i]:
            baseline += size
            base_by_cat[log.category[i]] = base_by_cat.get(log.category[i], 0) + size
        else:
            events.append((log.t_alloc[i], log.seq_alloc[i], size, i))
        if not math.isinf(log.t_free[i]):
            events.append((log.t_free[i], log.seq_free[i], -size, i))
    events.sort()
    rank_alloc = [-1.0 if pre else ALIVE for pre in log.pre_existing]
    rank_free = [ALIVE] * len(log.size)
    live = baseline
    cat_live = dict(base_by_cat)
    columns: dict[str, list[int]] = {c: [] for c in cat_live}
    t, seq, rows, live_bytes = [], [], [], []
    peak_index, peak = -1, baseline
    for k, (ti, s, delta, i) in enumerate(events):
        if delta > 0:
            rank_alloc[i] = k
        else:
            rank_free[i] = k
        live += delta
        cat = log.category[i]
        cat_live[cat] = cat_live.get(cat, 0) + delta
        t.append(ti)
        seq.append(s)
        rows.append(i)
        live_bytes.append(live)
        for c, col in columns.items():
            col.append(cat_live[c])
        if live > peak:
            peak, peak_index = live, k
    return Replay(
        log, baseline, t, seq, rows, live_bytes, columns, peak_index, rank_alloc, rank_free,
        {c: b for c, b in base_by_cat.items() if b},
    )
