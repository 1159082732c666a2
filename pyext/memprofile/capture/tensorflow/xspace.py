"""Read the memory events of a TensorFlow profiler XSpace (`*.xplane.pb`).

The TF profiler records each allocator call as an instant `MemoryAllocation` /
`MemoryDeallocation` event on the host plane, on the line (thread) that made
it, with stats: `allocator_name`, `addr`, `requested_bytes`,
`allocation_bytes` (after the allocator's rounding), `bytes_allocated` (the
allocator's bytes in use after the event), `peak_bytes_in_use`,
`bytes_available`, and for allocations `tf_op`, `region_type`, `data_type`,
`shape`. Frees carry only the address on allocators without statistics (TF's
plain "cpu" allocator reports 0 for every size and counter).

Only the memory events and memprofile's own layer scopes are decoded; the
other events (tens of thousands per training step) are skipped by metadata id.
This module needs the protobuf classes TF ships, not a running TF.
"""

from __future__ import annotations

import gzip
import zlib
from dataclasses import dataclass, field

from memprofile.errors import ProfileFormatError

ALLOC = "MemoryAllocation"
#: tf.data's TraceMe per iterator GetNext: "Iterator::Root::Prefetch::BatchV2::...".
ITERATOR = "Iterator::"
FREE = "MemoryDeallocation"

#: TF's DataType enum (tensorflow/core/framework/types.proto), the common ones.
DTYPES = {
    1: "float32",
    2: "float64",
    3: "int32",
    4: "uint8",
    5: "int16",
    6: "int8",
    7: "string",
    8: "complex64",
    9: "int64",
    10: "bool",
    14: "bfloat16",
    17: "uint16",
    18: "complex128",
    19: "float16",
    20: "resource",
    21: "variant",
    22: "uint32",
    23: "uint64",
}


@dataclass
class MemoryEvents:
    """Every memory event of one XSpace, columnar, in time order (row = event)."""

    t_ns: list[int] = field(default_factory=list)  # wall-clock ns (the profile's clock)
    is_alloc: list[bool] = field(default_factory=list)
    allocator: list[str] = field(default_factory=list)
    addr: list[int] = field(default_factory=list)
    requested: list[int] = field(default_factory=list)
    allocation: list[int] = field(default_factory=list)
    in_use: list[int] = field(default_factory=list)  # allocator's bytes in use after the event
    peak_in_use: list[int] = field(default_factory=list)
    available: list[int] = field(default_factory=list)
    op: list[str] = field(default_factory=list)
    region: list[str] = field(default_factory=list)
    shape: list[str] = field(default_factory=list)  # as TF writes it: "[64,1024]"
    dtype: list[int] = field(default_factory=list)
    thread: list[str] = field(default_factory=list)
    scope: list[str] = field(default_factory=list)  # innermost memprofile scope on that thread, or ""

    def __len__(self) -> int:
        return len(self.t_ns)


@dataclass
class XSpaceMemory:
    events: MemoryEvents
    #: Op node name -> op type, from the op events' "name:type" metadata.
    op_types: dict[str, str]
    #: Device planes' capacities (`memory_size` stat of "/device:GPU:n").
    device_memory: dict[str, int]
    start_ns: int | None
    hostnames: list[str]


def read_xspace_file(path: str) -> bytes:
    """An XSpace file's bytes, gunzipped where gzipped; ProfileFormatError
    (one line) for a gzip file cut short or damaged."""
    with open(path, "rb") as f:
        data = f.read()
    if data[:2] != b"\x1f\x8b":
        return data
    try:
        return gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as exc:
        why = " ".join(str(exc).split()) or type(exc).__name__
        raise ProfileFormatError(f"{path}: a gzip file cut short or damaged ({why})") from None


def parse_xspace(data: bytes, scope_prefix: str = "") -> XSpaceMemory:
    """Decode the memory events; events named `scope_prefix + X` on a thread
    are intervals, and a memory event inside one gets `scope` X (innermost);
    so do tf.data's iterator events ("Iterator::Root::...", whole)."""
    from memprofile.capture.tensorflow import compat

    try:
        xplane_pb2 = compat.xplane_pb2()
    except ImportError as exc:  # pragma: no cover - TF is what wrote the file
        raise ProfileFormatError(f"reading an XSpace needs TensorFlow's protobuf classes: {exc}") from None
    space = xplane_pb2.XSpace()
    try:
        space.ParseFromString(data)
    except Exception as exc:
        raise ProfileFormatError(f"not a TensorFlow XSpace (xplane.pb): {exc}") from None
    start_ns = None
    device_memory: dict[str, int] = {}
    for plane in space.planes:
        names = {k: m.name for k, m in plane.stat_metadata.items()}
        for s in plane.stats:
            key = names.get(s.metadata_id)
            if key == "profile_start_time":
                start_ns = s.uint64_value or s.int64_value
            elif key == "memory_size" and plane.name.startswith("/device:"):
                device_memory[plane.name[len("/device:") :]] = s.uint64_value or s.int64_value
    rows: list[list] = []
    op_types: dict[str, str] = {}
    for plane in space.planes:
        rows.extend(_plane_events(plane, start_ns, scope_prefix, op_types))
    rows.sort(key=lambda r: (r[0], r[1]))
    ev = MemoryEvents()
    if rows:
        columns = list(zip(*rows))
        (
            ev.t_ns,
            _,
            ev.is_alloc,
            ev.allocator,
            ev.addr,
            ev.requested,
            ev.allocation,
            ev.in_use,
            ev.peak_in_use,
            ev.available,
            ev.op,
            ev.region,
            ev.shape,
            ev.dtype,
            ev.thread,
            ev.scope,
        ) = map(list, columns)
    return XSpaceMemory(ev, op_types, device_memory, start_ns, list(space.hostnames))


#: Row slot of each stat (see the row layout in _plane_events); strings may be
#: inline or a reference to a stat metadata name, event by event.
_SLOTS = {
    "allocator_name": 3,
    "addr": 4,
    "requested_bytes": 5,
    "allocation_bytes": 6,
    "bytes_allocated": 7,
    "peak_bytes_in_use": 8,
    "bytes_available": 9,
    "tf_op": 10,
    "region_type": 11,
    "shape": 12,
    "data_type": 13,
}
_STRINGS = {"allocator_name", "tf_op", "region_type", "shape"}


def _plane_events(plane, start_ns: int | None, scope_prefix: str, op_types: dict[str, str]) -> list[list]:
    """[t_ns, order, *columns] per memory event of one plane."""
    stat_names = {k: m.name for k, m in plane.stat_metadata.items()}
    alloc_ids, free_ids, scope_ids = set(), set(), {}
    for k, m in plane.event_metadata.items():
        if m.name == ALLOC:
            alloc_ids.add(k)
        elif m.name == FREE:
            free_ids.add(k)
        elif scope_prefix and m.name.startswith(scope_prefix):
            scope_ids[k] = m.name[len(scope_prefix) :]
        elif m.name.startswith(ITERATOR):
            scope_ids[k] = m.name  # a tf.data iterator's GetNext: its stage chain (datasets.py)
        elif ":" in m.name and "/" in m.name:
            # Graph op events are "node/name:OpType": the type of each node.
            name, _, kind = m.name.rpartition(":")
            op_types[name] = kind
    if not alloc_ids and not free_ids:
        return []
    memory_ids = alloc_ids | free_ids
    plan = {k: (_SLOTS[name], name in _STRINGS) for k, name in stat_names.items() if name in _SLOTS}
    rows: list[list] = []
    order = 0
    iterator_spans: list[tuple[int, int, str]] = []  # (begin_ps, end_ps, name), every thread's
    for line in plane.lines:
        base_ps = line.timestamp_ns * 1000
        if start_ns and line.timestamp_ns < start_ns // 2:
            base_ps += start_ns * 1000  # newer TF writes times relative to the profile start
        thread = line.display_name or line.name
        # The hot loops: every event of the run passes the first; every stat
        # of every memory event the second. Names are bound locally.
        events = line.events
        if scope_ids:
            mem = []
            scopes: list[tuple[int, int, str]] = []  # (begin_ps, end_ps, name)
            for e in events:
                mid = e.metadata_id
                if mid in memory_ids:
                    mem.append(e)
                elif mid in scope_ids:
                    scopes.append((e.offset_ps, e.offset_ps + e.duration_ps, scope_ids[mid]))
            scopes.sort(key=lambda s: (s[0], -s[1]))
            iterator_spans.extend((base_ps + b, base_ps + f, n) for b, f, n in scopes if n.startswith(ITERATOR))
        else:
            mem = [e for e in events if e.metadata_id in memory_ids]
            scopes = []
        if not mem:
            continue
        mem.sort(key=lambda e: e.offset_ps)
        k, open_scopes = 0, []
        plan_get, names_get, append = plan.get, stat_names.get, rows.append
        for e in mem:
            at = e.offset_ps
            inner = ""
            if scopes:
                while k < len(scopes) and scopes[k][0] <= at:
                    open_scopes.append(scopes[k])
                    k += 1
                while open_scopes and open_scopes[-1][1] < at:
                    open_scopes.pop()
                if open_scopes:  # scopes nest per thread; skip any that ended under an open one
                    inner = next((s[2] for s in reversed(open_scopes) if s[1] >= at), "")
            order += 1
            row = [
                (base_ps + at) // 1000,
                order,
                e.metadata_id in alloc_ids,
                "",
                0,
                0,
                0,
                0,
                0,
                0,
                "",
                "",
                "",
                0,
                thread,
                inner,
            ]
            for st in e.stats:
                how = plan_get(st.metadata_id)
                if how is not None:
                    if how[1]:
                        ref = st.ref_value
                        row[how[0]] = names_get(ref, "") if ref else st.str_value
                    else:
                        row[how[0]] = st.int64_value or st.uint64_value
            append(row)
    if iterator_spans:
        _tf_data_functions(rows, iterator_spans)
    return rows


def _tf_data_functions(rows: list[list], spans: list[tuple[int, int, str]]) -> None:
    """A tf.data function (a `map`'s) runs on a thread pool's thread, outside
    the iterator event of the stage that called it, which runs meanwhile on
    another thread: an allocation on a tf.data thread with no scope of its own
    gets the deepest iterator event open at its time, on any thread."""
    todo = sorted((r for r in rows if not r[15] and r[2] and str(r[14]).startswith("tf_data")), key=lambda r: r[0])
    if not todo:
        return
    spans.sort()
    k, active = 0, []
    for r in todo:
        at = r[0] * 1000
        while k < len(spans) and spans[k][0] <= at:
            active.append(spans[k])
            k += 1
        active = [s for s in active if s[1] >= at]
        if active:
            r[15] = max(active, key=lambda s: s[2].count("::"))[2]
