"""The kind of every block (parameter, gradient, optimizer state, input, activation, temporary,
other) without the Python tracer: the storages from before the run, what the hooks and the
end-of-run scan observed, matched to the blocks by storage and time, and for the rest when each
block was allocated and freed (ledger.categorise_by_time)."""

from __future__ import annotations

import bisect
import time
from collections.abc import Callable
from typing import Any

from memprofile.capture.base import ALIVE, BEFORE_CELL, AllocationLog
from memprofile.capture.namespace import has_no_memory
from memprofile.capture.torch.baseline import Storage, better
from memprofile.capture.torch.ledger import Side, add_cuda_baseline, add_row, categorise_by_time

#: What a hook saw of a storage: (address, when in unix ns, kind, shape, dtype, device, bytes, layer).
Observation = tuple[int, int, str, list[int], str, str, int, str]


def categorise(
    logs: dict[str, AllocationLog],
    side: dict[str, Side],
    baseline: dict[int, Storage],
    cuda_before: dict[str, int],
    observations: list[Observation],
    seconds: Callable[[int], float],
    detail_end: float | None,
) -> None:
    """Give each row of `logs` its kind (and the rows from before the run). `seconds`: a unix ns
    time as seconds since the run's origin; `detail_end`: when the events ended, None at the run's end."""
    _add_baseline(logs, side, baseline, cuda_before, seconds)
    observed, unmatched = _match(logs, side, observations, seconds, ALIVE if detail_end is None else detail_end)
    # Storages the hooks saw that existed before the run but were not in
    # the namespace (a model held only by a function, say). CUDA blocks
    # like these are already in the allocator's baseline.
    for (device, ptr), (category, shape, dtype, nbytes, layer) in unmatched.items():
        if device.startswith("cpu"):
            add_row(
                logs,
                side,
                device,
                ptr,
                False,
                nbytes,
                0.0,
                -1,
                category=category,
                shape=shape,
                dtype=dtype,
                pre_existing=True,
                op=BEFORE_CELL,
                layer=layer,
            )
    categorise_by_time(logs, side, observed)


def _add_baseline(
    logs: dict[str, AllocationLog],
    side: dict[str, Side],
    baseline: dict[int, Storage],
    cuda_before: dict[str, int],
    seconds: Callable[[int], float],
) -> None:
    """The storages known from the namespace, then the rest that CUDA's allocator held."""
    known: dict[str, int] = {}  # bytes of CUDA blocks from before that the namespace names
    for record in baseline.values():
        if record.device.startswith("cuda"):
            known[record.device] = known.get(record.device, 0) + record.nbytes
        i = add_row(
            logs,
            side,
            record.device,
            record.ptr,
            False,
            record.nbytes,
            0.0,
            -1,
            category=record.category,
            shape=record.shape,
            dtype=record.dtype,
            pre_existing=True,
            op=BEFORE_CELL,
            layer=record.layer,
        )
        if record.freed_ns is not None:
            log = logs[record.device]
            log.t_free[i] = seconds(record.freed_ns)
            log.seq_free[i] = -1  # known by time only
    add_cuda_baseline(logs, side, cuda_before, known)


def _rows_by_storage(
    logs: dict[str, AllocationLog], side: dict[str, Side]
) -> dict[tuple[str, int], tuple[list[float], list[int]]]:
    """(device, address) -> the rows that had it, with their starts, in time order."""
    index: dict[tuple[str, int], tuple[list[float], list[int]]] = {}
    for device, log in logs.items():
        by_ptr: dict[int, list[int]] = {}
        for i, ptr in enumerate(side[device].ptr):
            if ptr:
                by_ptr.setdefault(ptr, []).append(i)
        for ptr, rows in by_ptr.items():
            starts = [-1e300 if log.pre_existing[r] else log.t_alloc[r] for r in rows]
            order = sorted(range(len(rows)), key=starts.__getitem__)
            index[(device, ptr)] = ([starts[k] for k in order], [rows[k] for k in order])
    return index


def _match(
    logs: dict[str, AllocationLog],
    side: dict[str, Side],
    observations: list[Observation],
    seconds: Callable[[int], float],
    detail_end: float,
) -> tuple[dict, dict]:
    """Each observation's row: the block that had its storage when it was seen. Returns
    {(device, row): (kind, shape, dtype, layer)} and, for storages no row had (from before the
    run), {(device, address): (kind, shape, dtype, bytes, layer)}."""
    index = _rows_by_storage(logs, side)
    observed: dict[tuple[str, int], tuple[str, list[int], str, str]] = {}
    unmatched: dict[tuple[str, int], tuple] = {}
    for ptr, t_ns, category, shape, dtype, device, nbytes, layer in observations:
        t = seconds(t_ns)
        row = None
        entry = index.get((device, ptr))
        if entry is not None:
            starts, rows = entry
            k = bisect.bisect_right(starts, t) - 1
            if k >= 0 and logs[device].t_free[rows[k]] > t:
                row = rows[k]
        if row is None:
            if t > detail_end:
                continue  # made after the detail ended: no event saw it, and it is not from before the run
            old = unmatched.get((device, ptr))
            if old is None or better(category, old[0]):
                unmatched[(device, ptr)] = (category, shape, dtype, nbytes, layer or (old[4] if old else ""))
            continue
        old = observed.get((device, row))
        if old is None or better(category, old[0]):
            observed[(device, row)] = (category, shape, dtype, layer or (old[3] if old else ""))
    return observed, unmatched


class Observer:
    """What the hooks and the end-of-run scan see of tensors' storages (Observations), matched to
    the blocks by categorise."""

    def __init__(self, torch: Any) -> None:
        self.observations: list[Observation] = []
        self._torch = torch

    def observe(self, tensor: Any, category: str, layer: str = "") -> None:
        try:
            if has_no_memory(tensor):
                return
            storage = tensor.untyped_storage()
            ptr = storage.data_ptr()
            if not ptr:
                return
            self.observations.append(
                (
                    ptr,
                    time.time_ns(),
                    category,
                    list(tensor.shape),
                    str(tensor.dtype).replace("torch.", ""),
                    str(tensor.device),
                    storage.nbytes(),
                    layer,
                )
            )
        except Exception:  # meta/fake/sparse tensors have no storage to match
            return

    def observe_all(self, value: Any, category: str, depth: int = 1) -> None:
        """A tensor, or the tensors in lists, tuples and dicts `depth` levels deep."""
        if isinstance(value, self._torch.Tensor):
            self.observe(value, category)
        elif depth > 0 and isinstance(value, list | tuple):
            for v in value:
                self.observe_all(v, category, depth - 1)
        elif depth > 0 and isinstance(value, dict):
            for v in value.values():
                self.observe_all(v, category, depth - 1)
