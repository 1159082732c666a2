"""torch's memory events as allocation logs: one accounting for the live
profiler's event tree (capture/torch/walk.py) and for recorded traces
(capture/torch/trace.py, `memprofile import`).

A memory event allocates (size > 0) or frees (size < 0) a block at an
address on a device, at a time, inside a context (layer, op, phase, grad
mode). The ledger pairs each free with its allocation (by torch's
allocation id live; by device and address in a trace, which has no id),
keeps what CUDA's caching allocator held before the first event (its running
total minus the first block; blocks freed that no event made), and builds
each device's AllocationLog in columns. Plain code over plain values: no
torch needed, so recorded GPU traces test it on a machine without a GPU.
"""

from __future__ import annotations

from collections.abc import Hashable

from memprofile.capture.base import ALIVE, BEFORE_CELL, AllocationLog

#: Categories a block takes from the parameter it belongs to (its layer too).
OWNED = frozenset({"parameter", "gradient", "optimizer_state"})
#: The scopes in which DDP's reducer writes a gradient into its bucket; each
#: names the bucket (a view of it) as its one input. DDP copies every gradient
#: into flat buckets (and back, unless gradient_as_bucket_view): memory that
#: holds gradients, which Python cannot reach (torch 2.x reducer.cpp).
DDP_BUCKET_SCOPES = frozenset({"torch::distributed::reducer::mul_out", "torch::distributed::reducer::copy_"})


class Side:
    """Per-row facts of a device's log that only categorising needs."""

    __slots__ = ("grad", "ptr", "freed_in_backward", "buckets")

    def __init__(self) -> None:
        self.grad: list[bool] = []
        self.ptr: list[int] = []
        self.freed_in_backward: set[int] = set()
        self.buckets: set[int] = set()  # rows that are DDP gradient buckets


def add_row(
    logs: dict[str, AllocationLog], side: dict[str, Side], device: str, ptr: int, grad: bool, *args, **kwargs
) -> int:
    """A row in the device's log (made on first use), with the facts only categorising needs."""
    log = logs.get(device)
    if log is None:
        log = logs[device] = AllocationLog(device=device, source="c10", baseline_exact=device.startswith("cuda"))
        side[device] = Side()
    facts = side[device]
    facts.grad.append(grad)
    facts.ptr.append(ptr)
    return log.add(*args, **kwargs)


class MemoryLedger:
    """Memory events, fed in time order, as each device's allocation log."""

    __slots__ = ("rows", "frees", "where", "before", "cuda_before", "shapes", "buckets", "order")

    def __init__(self) -> None:
        self.rows: dict[str, list[tuple]] = {}  # device -> (size, t, order, layer, op, phase, grad, ptr)
        self.frees: list[tuple] = []  # (device, row, t, order, in backward)
        self.where: dict[Hashable, tuple[str, int]] = {}  # live allocation -> (device, row)
        self.before: list[tuple[str, int, int, float, int]] = []  # CUDA blocks from before: device, ptr, size, t, order
        #: Bytes CUDA's allocator held before the first event, per device.
        self.cuda_before: dict[str, int] = {}
        self.shapes: dict[tuple[str, int], tuple[list[int], str]] = {}  # (device, row) -> (shape, dtype)
        self.buckets: set[tuple[str, int]] = set()  # (device, row) of DDP gradient buckets
        self.order = 0

    def alloc(
        self,
        device: str,
        size: int,
        key: Hashable,
        t: float,
        layer: str,
        op: str,
        phase: str,
        grad: bool,
        ptr: int,
        total_allocated: int = -1,
    ) -> None:
        """A block of `size` > 0 bytes; `total_allocated`: the allocator's
        running total after it (CUDA's events carry it; -1: unknown)."""
        self.order += 1
        if total_allocated >= 0 and device not in self.cuda_before and device.startswith("cuda"):
            # The caching allocator's total includes what existed before.
            self.cuda_before[device] = max(0, total_allocated - size)
        column = self.rows.get(device)
        if column is None:
            column = self.rows[device] = []
        self.where[key] = (device, len(column))
        column.append((size, t, self.order, layer, op, phase, grad, ptr))

    def free(
        self, device: str, size: int, key: Hashable, t: float, backward: bool, ptr: int, total_allocated: int = -1
    ) -> None:
        """The block `key` freed (`size` < 0, as torch's events give it);
        `total_allocated`: the allocator's running total after it (-1: unknown)."""
        self.order += 1
        if total_allocated >= 0 and device not in self.cuda_before and device.startswith("cuda"):
            # The device's first event is a free: it held the total plus this block before.
            self.cuda_before[device] = total_allocated - size
        hit = self.where.pop(key, None)
        if hit is not None:
            self.frees.append((hit[0], hit[1], t, self.order, backward))
        elif device.startswith("cuda"):
            # A block from before the run: part of the allocator's baseline.
            self.before.append((device, ptr, -size, t, self.order))
            self.cuda_before[device] = max(0, self.cuda_before.get(device, 0) + size)

    def shape(self, key: Hashable, shape: list[int], dtype: str) -> None:
        """The shape and dtype of the live block `key` (an op's input names it)."""
        hit = self.where.get(key)
        if hit is not None and hit not in self.shapes:
            self.shapes[hit] = (shape, dtype)

    def bucket(self, key: Hashable) -> None:
        """The live block `key` is a DDP gradient bucket (DDP_BUCKET_SCOPES)."""
        hit = self.where.get(key)
        if hit is not None:
            self.buckets.add(hit)

    def logs(self) -> tuple[dict[str, AllocationLog], dict[str, Side]]:
        """Each device's AllocationLog (columns built in C by zip) and the
        facts categorising needs."""
        logs: dict[str, AllocationLog] = {}
        side: dict[str, Side] = {}
        for device, column in self.rows.items():
            if not column:  # only frees of blocks from before: no log, as no row
                continue
            log = logs[device] = AllocationLog(device=device, source="c10", baseline_exact=device.startswith("cuda"))
            facts = side[device] = Side()
            n = len(column)
            sizes, times, orders, layers, ops, phases, grads, ptrs = (list(c) for c in zip(*column))
            log.size, log.t_alloc, log.seq_alloc = sizes, times, orders
            log.layer, log.op, log.phase = layers, ops, phases
            facts.grad, facts.ptr = grads, ptrs
            log.requested = list(log.size)
            log.t_free, log.seq_free = [ALIVE] * n, [ALIVE] * n
            log.category, log.dtype = ["other"] * n, [""] * n
            log.shape, log.pre_existing = [None] * n, [False] * n
        for device, i, t, order, backward in self.frees:
            log = logs[device]
            log.t_free[i] = t
            log.seq_free[i] = order
            if backward:
                side[device].freed_in_backward.add(i)
        for (device, i), (shape, dtype) in self.shapes.items():
            logs[device].shape[i] = shape
            logs[device].dtype[i] = dtype
        for device, i in self.buckets:
            side[device].buckets.add(i)
        for device, ptr, size, t, order in self.before:
            i = add_row(logs, side, device, ptr, False, size, 0.0, -1, pre_existing=True, op=BEFORE_CELL)
            logs[device].t_free[i] = t
            logs[device].seq_free[i] = order
        return logs, side


def charge_alloc(ops: dict, chain: tuple, recs: tuple, device: str, size: int) -> None:
    """An allocation's bytes on the ops around it (`chain`: op names,
    outermost first; `recs`: its distinct OpRecords): self bytes, the largest
    block and the device on the innermost op; allocated bytes on each."""
    inner = ops[chain[-1]]
    inner.self_allocated_bytes += size
    if size > inner.max_alloc_bytes:
        inner.max_alloc_bytes = size
    inner.device = device
    for rec in recs:
        rec.allocated_bytes += size


def add_cuda_baseline(
    logs: dict[str, AllocationLog],
    side: dict[str, Side],
    held_before: dict[str, int],
    known: dict[str, int] | None = None,
) -> None:
    """One row per CUDA device for what its allocator held before the first
    event (MemoryLedger.cuda_before) that no known block accounts for
    (`known`: bytes of the blocks from before that the caller can name)."""
    for device, held in held_before.items():
        unknown = held - (known or {}).get(device, 0)
        if unknown > 0:
            add_row(logs, side, device, 0, False, unknown, 0.0, -1, pre_existing=True, op=BEFORE_CELL)


def categorise_by_time(
    logs: dict[str, AllocationLog], side: dict[str, Side], observed: dict[tuple[str, int], tuple] | None = None
) -> None:
    """The kind of every block made during the run: what was seen holding it
    (`observed`: (device, row) -> (category, shape, dtype, layer)), but a
    DDP gradient bucket is a gradient; else from when it was made and freed:
    freed by backward after forward made it, an activation; made by forward
    with grad on and alive at the end (a graph no backward consumed), an
    activation; freed in the run, a temporary; else other."""
    observed = observed or {}
    for device, log in logs.items():
        facts = side[device]
        for i in range(len(log)):
            if log.pre_existing[i]:
                continue
            seen = observed.get((device, i))
            if i in facts.buckets:
                # Not an activation of the DDP forward that rebuilt it, nor a temporary. Its layer stays
                # where it was made: a gradient seen in it (a bucket view) is one of several layers' slices.
                log.category[i] = "gradient"
            elif seen is not None:
                log.category[i], log.shape[i], log.dtype[i], layer = seen
                if layer and log.category[i] in OWNED:
                    log.layer[i] = layer  # a gradient or a moment is its parameter's layer's
            elif i in facts.freed_in_backward and log.phase[i] != "backward":
                log.category[i] = "activation"  # saved by forward, released by backward
            elif log.phase[i] == "forward" and facts.grad[i] and log.t_free[i] == ALIVE:
                log.category[i] = "activation"  # held by a graph that no backward consumed
            elif log.t_free[i] != ALIVE:
                log.category[i] = "temporary"
            else:
                log.category[i] = "other"
