"""Fewer points for a series, keeping what the eye and the reader need.

`minmax_indices` splits the series into buckets and keeps each bucket's minimum
and maximum (in time order), plus the first and last point and the global
maximum, so the peak is always exact and no spike disappears.
"""

from __future__ import annotations

from collections.abc import Sequence


def minmax_indices(values: Sequence[int | float], max_points: int) -> list[int]:
    n = len(values)
    if max_points < 4:
        raise ValueError(f"max_points must be at least 4, got {max_points}")
    if n <= max_points:
        return list(range(n))
    buckets = (max_points - 2) // 2
    keep = {0, n - 1, max(range(n), key=values.__getitem__)}
    for b in range(buckets):
        lo = 1 + (n - 2) * b // buckets
        hi = 1 + (n - 2) * (b + 1) // buckets
        if lo >= hi:
            continue
        chunk = range(lo, hi)
        keep.add(min(chunk, key=values.__getitem__))
        keep.add(max(chunk, key=values.__getitem__))
    return sorted(keep)
