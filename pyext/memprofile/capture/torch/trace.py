"""A PyTorch kineto/Chrome trace recorded with `profile_memory=True`
(`*.json`, gzipped or not) read back as a run (`memprofile import`): a GPU
job's trace becomes the capture the live torch collector would have made.

The `[memory]` instants go, in time order, through the live profiler's own
accounting (capture/torch/ledger.py MemoryLedger), keyed by device and
address. Their context comes from the trace's other events on the same
thread, swept once in time order with a stack per thread, as the live walk
(capture/torch/walk.py `walk`) reads torch's event tree: the op is the outermost
CPU op around the instant, the layer the innermost `nn.Module: Name_k` scope
(`with_modules`), the phase backward inside an autograd node, optimizer
inside `Optimizer.step#...`, forward inside a module, else other.

Two formats: the current one (Addr, Bytes, Total Allocated, Total Reserved,
Device Type, Device Id) and the legacy one of 2021 (Bytes, Device Type,
Device Id only), where frees are paired with allocations by size and the
totals are the running sum of the events.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from memprofile.capture.base import ModuleRecord, OpRecord, RawCapture, RecordedRun
from memprofile.capture.torch.cuda import cuda_facts
from memprofile.capture.torch.ledger import MemoryLedger, add_cuda_baseline, categorise_by_time, charge_alloc
from memprofile.capture.torch.walk import BACKWARD_PREFIX, OPTIMIZER_PREFIXES
from memprofile.errors import ProfileFormatError
from memprofile.files import read_trace

MODULE_PREFIX = "nn.Module: "
#: Event categories of the CPU ops around memory events (kineto's current and 2021 names).
_OP_CATS = frozenset({"cpu_op", "Operator", "operator"})
#: Annotations that only matter as scopes (backward, optimizer); ProfilerStep#N and user ones are not ops.
_SCOPE_CATS = frozenset({"user_annotation", "python_function"})
#: An autograd node recorded as an op of its own (AddmmBackward0).
_BACKWARD_NODE = re.compile(r"^([A-Z]\w*Backward\d*|torch::autograd::AccumulateGrad)$")
#: c10::DeviceType values of the devices a memory event can name.
_DEVICE_TYPES = {0: "cpu", 1: "cuda", 12: "xpu", 13: "mps"}
#: Input types of an op's arguments that are not tensors (no shape to show).
_NOT_TENSORS = frozenset({"", "Scalar", "ScalarList", "TensorList", "GenericList", "None"})
_MAX_SHAPES_PER_OP = 3
_SHAPE_SAMPLE_CALLS = 3
#: Trace times (µs) past this are wall-clock (after 2001), not relative to a base.
_YEAR_2001_US = 978_307_200 * 10**6
#: The CUDA facts a trace gives (the rest of cuda_facts' keys it cannot know).
_TRACE_FACTS = (
    "allocated_bytes",
    "allocated_peak_bytes",
    "reserved_bytes",
    "reserved_peak_bytes",
    "fragmentation_permille",
    "capacity_bytes",
)

# Kinds of interval on a thread.
_OP, _MODULE, _BACKWARD, _OPTIMIZER = range(4)


def read_torch_trace(path: str | Path) -> RecordedRun:
    """The run a kineto/Chrome trace recorded; ProfileFormatError (one line)
    when the file is not one, or has no memory events."""
    p = Path(path)
    trace = _load(p)
    header = {k: v for k, v in trace.items() if k != "traceEvents"}
    scan = _Scan.of(trace.pop("traceEvents"))
    del trace
    if not scan.memory:
        raise ProfileFormatError(f"{p}: the trace has no [memory] events (record it with profile_memory=True)")
    sweep = _Sweep(
        scan.has_backward, by_size=scan.no_addr, running_sum=scan.no_totals, node_scopes=scan.has_node_scopes
    )
    sweep.run(scan.timeline(), scan.t0)
    capture = _capture(sweep, header)
    return RecordedRun(
        captures=[capture],
        description=_description(header, scan.no_addr or scan.no_totals),
        duration_s=max(0.0, (scan.t_end - scan.t0) / 1e6),
        started_at=_started_at(header, scan.t0),
        lacks=_lacks(scan, sweep),
    )


def _load(p: Path) -> dict[str, Any]:
    """The trace's JSON object (a bare event list is wrapped as one)."""
    raw = read_trace(p)  # bounded, also when gzipped; a device or FIFO is refused before it is opened
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        why = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ProfileFormatError(f"{p}: not a readable JSON trace, or cut short ({why})") from None
    if isinstance(data, list):  # the Chrome trace format's array form
        data = {"traceEvents": data}
    if not isinstance(data, dict) or not isinstance(data.get("traceEvents"), list):
        raise ProfileFormatError(f"{p}: JSON without traceEvents: not a PyTorch kineto/Chrome trace")
    return data


def _device(kind: Any, index: Any) -> str:
    name = _DEVICE_TYPES.get(kind, f"device{kind}")
    return name if name == "cpu" else f"{name}:{index}"


class _Scan:
    """The events that matter, as compact tuples, read in one pass that lets
    each event's dict go once read (the file's events can be gigabytes)."""

    __slots__ = (
        "memory",
        "intervals",
        "t0",
        "t_end",
        "no_addr",
        "no_totals",
        "has_backward",
        "has_modules",
        "has_ops",
        "has_node_scopes",
    )

    def __init__(self) -> None:
        #: (ts, 1, 0, n, thread, device, bytes, addr | None, total allocated | -1, total reserved | -1)
        self.memory: list[tuple] = []
        #: (ts, 0, -dur, n, thread, end, kind, name, sequence number, input dims, input types)
        self.intervals: list[tuple] = []
        self.t0 = float("inf")
        self.t_end = float("-inf")
        self.no_addr = False  # memory events without Addr (the legacy format)
        self.no_totals = False  # ... without Total Allocated
        self.has_backward = False
        self.has_node_scopes = False  # autograd nodes inside evaluate_function scopes (not in 2021 traces)
        self.has_modules = False
        self.has_ops = False

    @classmethod
    def of(cls, events: list) -> _Scan:
        scan = cls()
        events.reverse()  # popped from the end: each dict is freed as soon as it is read
        while events:
            e = events.pop()
            if isinstance(e, dict):
                scan.add(e)
        return scan

    def add(self, e: dict) -> None:
        ph = e.get("ph")
        ts = e.get("ts")
        if ph not in ("X", "i", "I") or not isinstance(ts, int | float):
            return  # metadata, flows, counters
        dur = e.get("dur", 0) if ph == "X" else 0
        dur = dur if isinstance(dur, int | float) else 0
        self.t0 = min(self.t0, ts)
        self.t_end = max(self.t_end, ts + dur)
        name = e.get("name", "")
        thread = (str(e.get("pid")), str(e.get("tid")))  # the 2021 format writes an op's tid as a string
        if ph != "X":
            if name == "[memory]":
                self._memory(ts, thread, e.get("args") or {})
            return
        cat = e.get("cat")
        if cat in _OP_CATS:
            kind = self._kind(name)
            if kind is None:
                return
        elif cat in _SCOPE_CATS:
            if name.startswith(MODULE_PREFIX):
                kind = _MODULE
                self.has_modules = True
            elif name.startswith(OPTIMIZER_PREFIXES):
                kind = _OPTIMIZER
            elif name.startswith(BACKWARD_PREFIX):
                kind = _BACKWARD
                self.has_backward = self.has_node_scopes = True
            else:
                return  # a Python frame or a user annotation (ProfilerStep#N): no op of the live walk
        else:
            return  # GPU kernels, runtime calls: no memory event is inside them
        args = e.get("args") or {}
        seq = args.get("Sequence number", -1)
        self.intervals.append(
            (
                ts,
                0,
                -dur,
                len(self.intervals),
                thread,
                ts + dur,
                kind,
                name,
                seq if isinstance(seq, int) else -1,
                args.get("Input Dims"),
                args.get("Input type"),
            )
        )

    def _kind(self, name: str) -> int | None:
        if name.startswith(BACKWARD_PREFIX) or _BACKWARD_NODE.match(name):
            self.has_backward = True
            self.has_node_scopes |= name.startswith(BACKWARD_PREFIX)
            return _BACKWARD if name.startswith(BACKWARD_PREFIX) else _OP
        if name.startswith(OPTIMIZER_PREFIXES):
            return _OPTIMIZER
        if name.startswith("ProfilerStep#"):
            return None  # the profiler's schedule, around everything: no op
        self.has_ops = True
        return _OP

    def _memory(self, ts: float, thread: tuple, args: dict) -> None:
        size = args.get("Bytes")
        if not isinstance(size, int) or not size:
            return
        addr = args.get("Addr")
        total = args.get("Total Allocated", -1)
        self.no_addr |= addr is None
        self.no_totals |= "Total Allocated" not in args
        self.memory.append(
            (
                ts,
                1,
                0,
                len(self.memory),
                thread,
                _device(args.get("Device Type"), args.get("Device Id")),
                size,
                addr,
                total if isinstance(total, int) else -1,
                args.get("Total Reserved", -1),
            )
        )

    def timeline(self) -> list[tuple]:
        """Intervals and memory instants in time order: an interval before an
        instant at the same time (it contains it), the longer interval first
        (the outer one), the file's order last. The scan's lists are let go."""
        items = self.intervals + self.memory
        self.intervals, self.memory = [], []
        items.sort()
        return items


class _Sweep:
    """The memory events through MemoryLedger with their context, as the
    live walk (capture/torch/walk.py `walk`) gives it: (layer, phase, grad,
    chain of op names outermost first, the chain's distinct OpRecords)."""

    def __init__(self, has_backward: bool, by_size: bool, running_sum: bool, node_scopes: bool) -> None:
        self.ledger = MemoryLedger()
        self.ops: dict[str, OpRecord] = {}
        self.modules: dict[str, ModuleRecord] = {}
        self.seq_layer: dict[int, str] = {}
        # A trace does not record grad mode: autograd was on where the trace ran a backward.
        self.grad = has_backward
        self.by_size = by_size  # no addresses: frees paired by size
        self.running_sum = running_sum  # no Total Allocated: totals summed from the events
        self.node_scopes = node_scopes
        #: device -> [peak allocated, peak reserved, last allocated, last reserved]
        self.totals: dict[str, list[int]] = {}
        self._by_size: dict[tuple[str, int], list[int]] = {}  # legacy: live blocks of a size, newest last
        self._n = 0

    def run(self, items: list[tuple], t0: float) -> None:
        stacks: dict[tuple, list[tuple[float, tuple]]] = {}
        root = ("", "other", self.grad, (), ())
        after_node = ("", "backward", False, (), ())
        # Without evaluate_function scopes (2021 traces), a node releases what it
        # saved after its own interval: between a thread's top-level autograd
        # node and its next op, memory is still backward's.
        last_top: dict[tuple, tuple] = {}
        for item in items:
            thread = item[4]
            stack = stacks.get(thread)
            if stack is None:
                stack = stacks[thread] = []
            if item[1] == 0:  # an interval: it nests in the innermost open one that contains it
                end = item[5]
                while stack and stack[-1][0] < end:
                    stack.pop()
                ctx = self._enter(item, stack[-1][1] if stack else root)
                if not stack:
                    last_top[thread] = ctx
                stack.append((end, ctx))
            else:
                ts = item[0]
                while stack and stack[-1][0] < ts:
                    stack.pop()
                if stack:
                    ctx = stack[-1][1]
                elif not self.node_scopes and last_top.get(thread, root)[1] == "backward":
                    ctx = after_node
                else:
                    ctx = root
                self._memory(item, (ts - t0) / 1e6, ctx)

    def _enter(self, item: tuple, ctx: tuple) -> tuple:
        """The context inside an interval (the live walk's rules, per node)."""
        kind, name, seq = item[6], item[7], item[8]
        layer, phase, grad, chain, recs = ctx
        if kind == _MODULE:
            scope = name[len(MODULE_PREFIX) :]
            if scope not in self.modules:
                self.modules[scope] = ModuleRecord(
                    name=scope, type=scope.rsplit("_", 1)[0], parent=layer or None, ran=True
                )
            return (scope, "backward" if phase == "backward" else "forward", self.grad, chain, recs)
        if kind == _OPTIMIZER:
            return ("", "optimizer", False, (), ())
        if chain and chain[-1] == name:
            # The autograd node inside its evaluate_function: counted there;
            # its inputs are the shapes worth showing.
            self._sample_shapes(self.ops[name], item)
            return ctx
        if kind == _BACKWARD or _BACKWARD_NODE.match(name):
            op = name[len(BACKWARD_PREFIX) :] if kind == _BACKWARD else name
            rec = self._op(op)
            rec.calls += 1
            if kind == _OP:
                self._sample_shapes(rec, item)
            return (self.seq_layer.get(seq, ""), "backward", False, (op,), (rec,))
        rec = self._op(name)
        rec.calls += 1
        if layer and phase == "forward" and seq >= 0:
            self.seq_layer[seq] = layer  # its backward node carries the same number
        self._sample_shapes(rec, item)
        return (layer, phase, grad, chain + (name,), recs if name in chain else recs + (rec,))

    def _op(self, name: str) -> OpRecord:
        rec = self.ops.get(name)
        if rec is None:
            rec = self.ops[name] = OpRecord(name, "cpu")
        return rec

    @staticmethod
    def _sample_shapes(rec: OpRecord, item: tuple) -> None:
        """A few distinct input shapes of an op, from its first calls (as the live walk keeps them)."""
        dims, types = item[9], item[10]
        if not dims or rec.calls > _SHAPE_SAMPLE_CALLS or len(rec.input_shapes) >= _MAX_SHAPES_PER_OP:
            return
        shapes = _input_shapes(dims, types)
        if shapes and shapes not in rec.input_shapes:
            rec.input_shapes.append(shapes)

    def _memory(self, item: tuple, t: float, ctx: tuple) -> None:
        _, _, _, _, _, device, size, addr, total, reserved = item
        cuda = device.startswith("cuda")
        if cuda:
            self._total(device, size, total, reserved)
        chain = ctx[3]
        if size > 0:
            key = self._alloc_key(device, size, addr)
            self.ledger.alloc(
                device,
                size,
                key,
                t,
                ctx[0],
                chain[0] if chain else "",
                ctx[1],
                ctx[2],
                addr or 0,
                total if cuda and not self.running_sum else -1,
            )
            if chain:
                charge_alloc(self.ops, chain, ctx[4], device, size)
        else:
            key = self._free_key(device, size, addr)
            self.ledger.free(
                device, size, key, t, ctx[1] == "backward", addr or 0, total if cuda and not self.running_sum else -1
            )
            if chain:
                self.ops[chain[0]].freed_bytes -= size

    def _alloc_key(self, device: str, size: int, addr: int | None) -> tuple:
        if not self.by_size:
            return (device, addr)  # popped on free: addresses are reused
        self._n += 1
        self._by_size.setdefault((device, size), []).append(self._n)
        return (device, size, self._n)

    def _free_key(self, device: str, size: int, addr: int | None) -> tuple:
        if not self.by_size:
            return (device, addr)
        # No address: the newest live block of that size (most frees are of a recent temporary).
        live = self._by_size.get((device, -size))
        return (device, -size, live.pop()) if live else (device, -size, 0)

    def _total(self, device: str, size: int, total: int, reserved: int) -> None:
        """The allocator's totals (the running sum of the events where the trace has none)."""
        seen = self.totals.get(device)
        if seen is None:
            seen = self.totals[device] = [0, -1, 0, -1]
        allocated = seen[2] + size if self.running_sum else total
        seen[0] = max(seen[0], allocated)
        seen[2] = allocated
        if isinstance(reserved, int) and reserved >= 0:
            seen[1] = max(seen[1], reserved)
            seen[3] = reserved

    def facts(self, capacities: dict[str, int]) -> dict[str, int]:
        """Each CUDA device's allocator figures, in the live collector's keys
        (cuda_facts over a stats dict in torch.cuda.memory_stats' names)."""
        facts: dict[str, int] = {}
        for device, (peak, reserved_peak, last, reserved_last) in self.totals.items():
            stats = {"allocated_bytes.all.current": last, "allocated_bytes.all.peak": peak}
            if reserved_peak >= 0:
                stats.update({"reserved_bytes.all.current": reserved_last, "reserved_bytes.all.peak": reserved_peak})
            known = cuda_facts(stats, capacities.get(device))
            keep = _TRACE_FACTS if reserved_peak >= 0 else ("allocated_bytes", "allocated_peak_bytes", "capacity_bytes")
            facts.update({f"{device}.{k}": v for k, v in known.items() if k in keep})
        return facts


def _input_shapes(dims: list, types: list | None) -> str:
    """An op's tensor inputs' shapes as the live walk writes them ("[1, 512], [512]")."""
    parts = []
    for i, d in enumerate(dims):
        kind = types[i] if isinstance(types, list) and i < len(types) else None
        # Scalars have no dims; a 0-d tensor's [] cannot be told from them in older traces.
        if kind in _NOT_TENSORS or not isinstance(d, list) or not d:
            continue
        if all(isinstance(s, int) for s in d):
            parts.append("[" + ", ".join(str(s) for s in d) + "]")
    return ", ".join(parts)


def _capacities(header: dict) -> dict[str, int]:
    """cuda:N -> totalGlobalMem, from deviceProperties (matched by id)."""
    out: dict[str, int] = {}
    for props in header.get("deviceProperties") or []:
        if isinstance(props, dict) and isinstance(props.get("totalGlobalMem"), int):
            out[f"cuda:{props.get('id', len(out))}"] = props["totalGlobalMem"]
    return out


def _capture(sweep: _Sweep, header: dict) -> RawCapture:
    ledger = sweep.ledger
    logs, side = ledger.logs()
    add_cuda_baseline(logs, side, ledger.cuda_before)
    categorise_by_time(logs, side)  # nothing observed: no live objects in a file
    capacities = _capacities(header)
    for device, log in logs.items():
        log.capacity_bytes = capacities.get(device)
    facts: dict[str, int | float | str] = dict(sweep.facts(capacities))
    dist = header.get("distributedInfo")
    if isinstance(dist, dict):
        facts.update({k: str(dist[k]) for k in ("rank", "world_size", "backend") if k in dist})
    version = _torch_version(header)
    options = {
        f"torch_{k}": str(bool(header[k])).lower()
        for k in ("record_shapes", "with_stack", "with_modules", "profile_memory")
        if k in header
    }
    return RawCapture(
        collector="torch",
        allocations=list(logs.values()),
        ops=list(sweep.ops.values()),
        modules=list(sweep.modules.values()),
        frameworks={"torch": version} if version else {},
        options=options,
        facts=facts,
    )


def _torch_version(header: dict) -> str:
    """The torch version where the file states one (kineto writes none; some
    harnesses add it to the trace's metadata)."""
    found: list[str] = []

    def look(value: Any, depth: int) -> None:
        if not isinstance(value, dict) or depth > 4 or found:
            return
        version = value.get("torch_version")
        if isinstance(version, str):
            found.append(version)
            return
        for v in value.values():
            look(v, depth + 1)

    look({k: v for k, v in header.items() if k != "deviceProperties"}, 0)
    return found[0] if found else ""


def _description(header: dict, legacy: bool) -> str:
    """What the file says about the run, and only that."""
    parts = []
    version = _torch_version(header)
    if version:
        parts.append(f"torch {version}")
    names = Counter(p.get("name", "?") for p in header.get("deviceProperties") or [] if isinstance(p, dict))
    parts.extend(f"{n}x {name}" for name, n in names.items())
    dist = header.get("distributedInfo")
    if isinstance(dist, dict) and "rank" in dist and "world_size" in dist:
        parts.append(f"rank {dist['rank']} of {dist['world_size']}")
    kind = "PyTorch kineto trace, legacy memory events" if legacy else "PyTorch kineto trace"
    return f"{kind} ({', '.join(parts)})" if parts else kind


def _started_at(header: dict, t0: float) -> str:
    """ISO 8601 (UTC) of the first event: kineto's times are µs after
    baseTimeNanoseconds, or wall-clock µs in older traces."""
    base = header.get("baseTimeNanoseconds")
    if isinstance(base, int):
        unix_s = base / 1e9 + t0 / 1e6
    elif t0 > _YEAR_2001_US:
        unix_s = t0 / 1e6
    else:
        return ""
    return datetime.fromtimestamp(unix_s, timezone.utc).isoformat()


def _lacks(scan: _Scan, sweep: _Sweep) -> list[str]:
    lacks = []
    if not scan.has_modules:
        lacks.append("no module scopes (recorded without with_modules): no layers")
    if not scan.has_ops:
        lacks.append("no CPU op events: no ops")
    if scan.no_addr:
        lacks.append("no addresses: frees paired with allocations by size")
    if scan.no_totals:
        lacks.append("no Total Allocated: totals from the running sum of the events")
    if sweep.totals and all(reserved < 0 for _, reserved, _, _ in sweep.totals.values()):
        lacks.append("no Total Reserved: no reserved memory or fragmentation")
    if not scan.has_backward:
        lacks.append(
            "no grad mode (a trace does not record it) and no backward: blocks a forward left alive "
            "are not counted as activations"
        )
    lacks.append("memory events carry no tensor shapes: blocks have none")
    return lacks
