"""From the XSpace's memory events to the capture's allocation logs, op records
and modules: one walk over the events, each allocation placed on its op, layer
and phase (attribution.py), the namespace's buffers from before the run added,
then each allocator described as a device (devices.py). A live run and a saved
XSpace (raw_from_xspace, `memprofile import`) go through the same walk."""

from __future__ import annotations

from dataclasses import dataclass, field

from memprofile.capture.base import ALIVE, BEFORE_CELL, DETAIL_STEPS, AllocationLog, DetailWindow, OpRecord, RawCapture
from memprofile.capture.steps import StepClock
from memprofile.capture.tensorflow.attribution import (
    SCOPE_PREFIX,
    Side,
    categorise,
    module_records,
    place_allocation,
    scope_components,
)
from memprofile.capture.tensorflow.counters import MemoryInfo
from memprofile.capture.tensorflow.datasets import PREFIX, cache_label
from memprofile.capture.tensorflow.devices import describe_devices, device_of
from memprofile.capture.tensorflow.keras_model import Buffer, KerasWorld, ScopeResolver
from memprofile.capture.tensorflow.xspace import DTYPES, MemoryEvents, XSpaceMemory, parse_xspace

CACHE_PREFIX = PREFIX + "cache ("
#: Past this many memory events a run keeps sizes, ops and layers but not shapes and dtypes.
DEFAULT_MAX_EVENTS = 500_000


@dataclass
class RunStart:
    """What the events are read against: the run's clock and what was there
    when the detail started (a live run's; a saved XSpace has only its clock)."""

    #: Wall-clock ns at `perf_offset` seconds of the run's clock.
    wall0: int = 0
    perf_offset: float = 0.0
    #: The namespace's Keras objects and buffers when the detail started.
    world_start: KerasWorld = field(default_factory=KerasWorld)
    #: get_memory_info at the cell's start ({}: read from a file) and at the detail's start.
    memory_start: MemoryInfo = field(default_factory=dict)
    memory_detail_start: MemoryInfo = field(default_factory=dict)


def convert(
    parsed: XSpaceMemory,
    world: KerasWorld,
    memory_end: MemoryInfo,
    raw: RawCapture,
    start: RunStart,
    clock: StepClock,
    max_events: int = DEFAULT_MAX_EVENTS,
) -> None:
    """The events into `raw`: its allocations, ops and modules, and each device's facts."""
    logs, ops = allocation_logs(parsed.events, world, parsed.op_types, raw, start, max_events)
    describe_devices(logs, parsed, memory_end, raw, start, clock)
    for op in ops.values():  # ops were keyed by allocator; show the device name
        log = logs.get(op.device)
        if log is not None:
            op.device = log.device
    raw.allocations = list(logs.values())
    raw.ops = list(ops.values())
    raw.modules = module_records(world, logs)


def raw_from_xspace(data: bytes) -> RawCapture:
    """A capture from a saved XSpace (a GPU job's trace, say): the events
    alone, times from the first event, no namespace and no memory info."""
    parsed = parse_xspace(data, scope_prefix=SCOPE_PREFIX)
    start = RunStart(wall0=parsed.events.t_ns[0] if len(parsed.events) else 0)
    raw = RawCapture(collector="tensorflow-xspace")
    convert(parsed, KerasWorld(), {}, raw, start, StepClock(DetailWindow.of(DETAIL_STEPS)))
    return raw


def allocation_logs(
    ev: MemoryEvents, world: KerasWorld, op_types: dict[str, str], raw: RawCapture, start: RunStart, max_events: int
) -> tuple[dict[str, AllocationLog], dict[str, OpRecord]]:
    """One pass over the memory events, by allocator (hot: keep per-event work small, so the
    loop stays one function); the namespace's buffers from before the run, then each row's kind."""
    logs: dict[str, AllocationLog] = {}
    side: dict[str, Side] = {}
    ops: dict[str, OpRecord] = {}
    live: dict[tuple[str, int], int] = {}
    where: dict[tuple[str, str, str], tuple[str, str, str]] = {}  # (op, scope, thread) -> (op, layer, phase)
    shapes: dict[str, list[int] | None] = {}
    start_buffers = {b.addr: b for b in start.world_start.buffers}
    freed_before: set[int] = set()
    limit = max_events
    last_op = ""
    wall0, offset = start.wall0, start.perf_offset
    allocators, is_alloc, addrs, t_ns = ev.allocator, ev.is_alloc, ev.addr, ev.t_ns
    allocation, requested = ev.allocation, ev.requested
    grad_addrs = {addr for addr, _, _ in world.gradients}
    made_at: dict[int, list[tuple[float, str, int]]] = {}  # address -> (time, allocator, row) of blocks made there
    scopes = ScopeResolver(world, [tuple(scope_components(node)[:-1]) for node in set(ev.op)])
    buffers = world.pipelines.resolver(set(ev.scope), world.history)
    for i in range(len(ev)):
        allocator = allocators[i] or "cpu"
        log = logs.get(allocator)
        if log is None:
            log = logs[allocator] = AllocationLog(device=allocator, source=allocator)
            side[allocator] = Side()
        t = (t_ns[i] - wall0) / 1e9 + offset
        addr = addrs[i]
        if is_alloc[i]:
            node = ev.op[i]
            key = (node, ev.scope[i], ev.thread[i])
            place = where.get(key)
            if place is None:
                place = where[key] = place_allocation(node, ev.scope[i], ev.thread[i], world, scopes, op_types, buffers)
            op, layer, phase = place
            size = allocation[i] or requested[i]
            text = ev.shape[i]
            if i < limit:
                try:
                    shape = shapes[text]
                except KeyError:
                    shape = shapes[text] = _shape(text)
                dtype = DTYPES.get(ev.dtype[i], "")
            else:
                shape, dtype = None, ""
            row = log.add(
                size, t, i, layer=layer, op=op, phase=phase, shape=shape, dtype=dtype, requested=requested[i] or size
            )
            side[allocator].add(ev.region[i], node)
            live[(allocator, addr)] = row
            if addr in grad_addrs:
                made_at.setdefault(addr, []).append((t, allocator, row))
            if op:
                rec = ops.get(op)
                if rec is None:
                    rec = ops[op] = OpRecord(op, allocator)
                rec.calls += 1
                rec.allocated_bytes += size
                rec.self_allocated_bytes += size
                if size > rec.max_alloc_bytes:
                    rec.max_alloc_bytes = size
                last_op = op
                if text and len(rec.input_shapes) < 3 and i < limit and text not in rec.input_shapes:
                    rec.input_shapes.append(text)
        else:
            freed = live.pop((allocator, addr), None)
            if freed is None:
                freed = _from_before(log, side[allocator], start_buffers.get(addr), allocation[i], freed_before)
                if freed is None:
                    continue  # a block from before the run, of unknown size
            log.t_free[freed] = t
            log.seq_free[freed] = i
    if len(ev) > limit:
        raw.notes.append(
            (
                "tf_detail_dropped",
                f"{len(ev):,} TensorFlow memory events: past the first {limit:,} the shapes and "
                f"dtypes of tensors are not kept (the timeline, ops and layers are)",
            )
        )
    raw.last_op = {"op": last_op, "layer": ""} if last_op else {}
    _add_baseline(logs, side, start_buffers, freed_before)
    _add_held_caches(logs, side, start.world_start, world.pipelines.cell_file)
    gradient_rows = _gradient_rows(world, made_at)
    for allocator, log in logs.items():
        categorise(log, side[allocator], world, live, allocator, gradient_rows.get(allocator))
    return logs, ops


#: How much later than the block's allocation its tape's return may be read (the two clocks' slack).
GRADIENT_SLACK_S = 0.005


def _gradient_rows(world: KerasWorld, made_at: dict[int, list[tuple[float, str, int]]]) -> dict[str, dict[int, str]]:
    """allocator -> {row: layer} of the blocks an eager tape returned as
    gradients: at each one's address, the last block made before the tape
    returned."""
    out: dict[str, dict[int, str]] = {}
    for addr, vid, when in world.gradients:
        path = world.var_paths.get(vid)
        made = [m for m in made_at.get(addr, ()) if m[0] <= when + GRADIENT_SLACK_S]
        if path is None or not made:
            continue
        _, allocator, row = max(made)
        out.setdefault(allocator, {})[row] = path
    return out


def _from_before(
    log: AllocationLog, side: Side, known: Buffer | None, allocation: int, freed_before: set[int]
) -> int | None:
    """The row of a block the run frees and no event of it allocated: from
    before the run, sized by its event or by the namespace's buffer at that
    address (`known`); None where neither says its size."""
    size = allocation or (known.nbytes if known else 0)
    if known is None and not size:
        return None
    row = log.add(
        size,
        0.0,
        -1,
        op=BEFORE_CELL,
        pre_existing=True,
        category=known.category if known else "other",
        layer=known.layer if known else "",
        shape=known.shape if known else None,
        dtype=known.dtype if known else "",
    )
    side.add()
    if known is not None:
        freed_before.add(known.addr)
    return row


def _add_baseline(
    logs: dict[str, AllocationLog], side: dict[str, Side], start_buffers: dict[int, Buffer], freed_before: set[int]
) -> None:
    """Buffers of the namespace from before the run that are still alive."""
    for b in start_buffers.values():
        if b.addr in freed_before:
            continue
        allocator = next((a for a in logs if device_of(a) == b.device), None)
        if allocator is None:
            allocator = "cpu" if b.device.startswith("CPU") else f"GPU_{b.device.split(':')[-1]}_bfc"
            logs[allocator] = AllocationLog(device=allocator, source=allocator)
            side[allocator] = Side()
        logs[allocator].add(
            b.nbytes,
            0.0,
            -1,
            op=BEFORE_CELL,
            pre_existing=True,
            category=b.category,
            layer=b.layer,
            shape=b.shape,
            dtype=b.dtype,
        )
        side[allocator].add()


def _add_held_caches(
    logs: dict[str, AllocationLog], side: dict[str, Side], world_start: KerasWorld, cell_file: str | None
) -> None:
    """The elements of a tf.data cache filled before the run (a profiled run
    saw them fill): input memory of that cache, from before the cell."""
    for site, held, cache in world_start.pipelines.held:
        if cache() is None:  # the dataset was let go in the run: when its cache was freed is unknown
            continue
        allocator = next((a for a in logs if device_of(a) == "CPU:0"), None)
        if allocator is None:
            allocator = "cpu"
            logs[allocator] = AllocationLog(device=allocator, source=allocator)
            side[allocator] = Side()
        logs[allocator].add(
            held, 0.0, -1, op=BEFORE_CELL, pre_existing=True, category="input", layer=cache_label(site, cell_file)
        )
        side[allocator].add()


def remember_caches(raw: RawCapture, world: KerasWorld) -> None:
    """Bytes each named cache holds when the events end, for the next run."""
    held: dict[str, int] = {}
    for log in raw.allocations:
        for i in range(len(log)):
            if log.t_free[i] == ALIVE and log.layer[i].startswith(CACHE_PREFIX):
                held[log.layer[i]] = held.get(log.layer[i], 0) + log.size[i]
    world.pipelines.remember(held)


def _shape(text: str) -> list[int] | None:
    if not text or not text.startswith("["):
        return None
    try:
        return [int(d) for d in text[1:-1].split(",") if d.strip()]
    except ValueError:
        return None
