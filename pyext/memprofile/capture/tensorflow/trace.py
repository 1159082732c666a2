"""A TensorFlow profiler XSpace (`*.xplane.pb`, gzipped or not) read back as a
run (`memprofile import`): a GPU job's trace becomes the capture the live TF
collector would have made.

The events go through the live collector's own conversion
(events.py `raw_from_xspace`: xspace.parse_xspace, then `convert`, as a
live run's), so an imported trace and a live run share one
accounting: every allocator is a device ("tf:GPU:n" for GPU_n_bfc,
"tf:gpu_host" for gpu_host_bfc, "tf:CPU:0" for the CPU ones), each GPU's
capacity is its device plane's `memory_size`. This module only checks the file,
and says what it holds and what it lacks (the XSpace's planes, read here with
TF's protobuf classes).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from memprofile.capture.base import RawCapture, RecordedRun
from memprofile.capture.tensorflow import compat
from memprofile.capture.tensorflow.xspace import ALLOC, FREE
from memprofile.errors import ProfileFormatError
from memprofile.files import read_trace
from memprofile.units import fmt_bytes

#: Wall-clock ns before this are not a date (newer TF writes times relative to the profile's start).
_YEAR_2001_NS = 978_307_200 * 10**9


@dataclass
class PlaneSummary:
    """What the XSpace says about itself, apart from the memory events."""

    planes: list[str] = field(default_factory=list)
    hostnames: list[str] = field(default_factory=list)
    #: Device plane ("GPU:4") -> its `memory_size` stat, where stated.
    memory_size: dict[str, int] = field(default_factory=dict)
    memory_events: int = 0
    start_ns: int = 0


def read_xspace_run(path: str | Path) -> RecordedRun:
    """The run an XSpace file recorded; ProfileFormatError (one line, why) for
    a file that is not an XSpace, is cut short, or holds no memory events."""
    p = Path(path)
    data = _read_bytes(p)
    summary = _summarise(p, data)
    if not summary.memory_events:
        raise ProfileFormatError(
            f"{p}: the XSpace has no memory events (MemoryAllocation / MemoryDeallocation): "
            f"record it with the TensorFlow profiler while the model allocates"
        )
    from memprofile.capture.tensorflow.events import raw_from_xspace

    try:
        raw = raw_from_xspace(data)
    except ProfileFormatError as exc:
        raise ProfileFormatError(f"{p}: {_one_line(exc)}") from None
    if not any(raw.allocations):
        raise ProfileFormatError(f"{p}: the XSpace's memory events name no allocator block")
    return RecordedRun(
        captures=[raw],
        description=_description(summary, raw),
        duration_s=_duration_s(raw),
        started_at=_started_at(summary.start_ns),
        lacks=_lacks(summary, raw),
    )


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def _read_bytes(p: Path) -> bytes:
    if not p.exists():
        raise ProfileFormatError(f"{p}: no such file")
    return read_trace(p)  # bounded, also when gzipped; a device or FIFO is refused before it is opened


def _summarise(p: Path, data: bytes) -> PlaneSummary:
    """Planes, hosts, device sizes and the number of memory events, from
    TF's protobuf classes (the same ones xspace.parse_xspace uses)."""
    try:
        xplane_pb2 = compat.xplane_pb2()
    except ImportError as exc:
        raise ProfileFormatError(
            f"{p}: reading a TensorFlow XSpace needs TensorFlow installed "
            f"(pip install tensorflow-cpu): {_one_line(exc)}"
        ) from None
    space = xplane_pb2.XSpace()
    try:
        space.ParseFromString(data)
    except Exception as exc:  # protobuf's DecodeError, or anything its parser raises on foreign bytes
        raise ProfileFormatError(f"{p}: not a TensorFlow XSpace (xplane.pb), or cut short: {_one_line(exc)}") from None
    if not space.planes:
        raise ProfileFormatError(f"{p}: not a TensorFlow XSpace (xplane.pb): it has no planes")
    summary = PlaneSummary(planes=[plane.name for plane in space.planes], hostnames=list(space.hostnames))
    for plane in space.planes:
        _read_plane(plane, summary)
    return summary


def _read_plane(plane, summary: PlaneSummary) -> None:
    stat_names = {k: m.name for k, m in plane.stat_metadata.items()}
    for s in plane.stats:
        value = s.uint64_value or s.int64_value
        name = stat_names.get(s.metadata_id)
        if name == "memory_size" and plane.name.startswith("/device:"):
            summary.memory_size[plane.name[len("/device:") :]] = value
        elif name == "profile_start_time":
            summary.start_ns = value
    memory_ids = {k for k, m in plane.event_metadata.items() if m.name in (ALLOC, FREE)}
    if memory_ids:
        summary.memory_events += sum(1 for line in plane.lines for e in line.events if e.metadata_id in memory_ids)
        if not summary.start_ns:
            starts = [line.timestamp_ns for line in plane.lines if line.timestamp_ns > _YEAR_2001_NS]
            summary.start_ns = min(starts, default=0)


def _allocators(raw: RawCapture) -> list[str]:
    return [log.source for log in raw.allocations]


def _description(summary: PlaneSummary, raw: RawCapture) -> str:
    gpus = sorted(name for name in summary.memory_size)
    sizes = sorted(set(summary.memory_size.values()))
    planes = f"{len(summary.planes)} planes ({', '.join(summary.planes)})"
    text = f"TensorFlow XSpace, {planes}; allocators {', '.join(_allocators(raw))}"
    if gpus:
        text += f"; {len(gpus)} GPU(s) of {' / '.join(fmt_bytes(s) for s in sizes)} (memory_size)"
    if summary.hostnames:
        text += f"; host {', '.join(summary.hostnames)}"
    return text


def _duration_s(raw: RawCapture) -> float:
    times = [t for log in raw.allocations for t in (*log.t_alloc, *log.t_free) if t != float("inf") and t > 0]
    return max(times, default=0.0)


def _started_at(start_ns: int) -> str:
    if start_ns < _YEAR_2001_NS:
        return ""
    return datetime.fromtimestamp(start_ns / 1e9, timezone.utc).isoformat()


def _lacks(summary: PlaneSummary, raw: RawCapture) -> list[str]:
    lacks = [
        "no Keras model: no layers (the ops keep their name scopes), and no variables or optimizer slots "
        "to tell parameters and optimizer state from other memory",
        "no TensorFlow version stated",
        "no memory-growth setting and no get_memory_info: the figures are the allocators' own counters in the events",
    ]
    devices = {log.device.removeprefix("tf:") for log in raw.allocations}
    silent = sorted(gpu for gpu in summary.memory_size if gpu not in devices)
    if silent:
        lacks.append(f"no memory events for {', '.join(silent)}: their allocators recorded nothing in this trace")
    if not summary.hostnames:
        lacks.append("no hostname stated")
    return lacks
