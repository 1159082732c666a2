"""Assemble a Profile from what the collectors recorded: devices, timelines and what the
events say (the peak's anatomy, op/layer/optimizer tables, the cell's lines). It measures
the events, so it is analysis; model/ holds the records it fills."""

from __future__ import annotations

import uuid

from memprofile.analysis.lines import has_lines, line_figures
from memprofile.analysis.peak import find_peak
from memprofile.analysis.replay import Replay
from memprofile.analysis.tables import layer_table, op_table, optimizer_table
from memprofile.capture.base import RawCapture, RawDevice
from memprofile.model.decimate import minmax_indices
from memprofile.model.profile import (
    PHASES,
    Device,
    ErrorInfo,
    Framework,
    Note,
    Profile,
    Timeline,
)
from memprofile.units import fmt_bytes

#: A stored timeline keeps at most this many points per device (peak exact).
MAX_TIMELINE_POINTS = 20_000
_PHASE_INDEX = {p: i for i, p in enumerate(PHASES)}
#: Below this, a peak missed by the samples is not worth a warning.
MIN_GAP_BYTES = 1 << 20


def build_profile(
    captures: list[RawCapture],
    *,
    name: str,
    started_at: str,
    duration_s: float,
    source: str = "",
    error: ErrorInfo | None = None,
    notes: list[Note] | None = None,
    frameworks: dict[str, str] | None = None,
    environment: dict[str, str] | None = None,
    replays: list[Replay] | None = None,
) -> Profile:
    """`frameworks` (name -> version) and `environment` (shown with the capture
    options) describe the process; the collectors may add to both."""
    devices: list[Device] = []
    timelines: list[Timeline] = []
    frameworks = dict(frameworks or {})
    warnings = list(notes or [])
    capture_info: dict[str, str] = {"collectors": ",".join(c.collector for c in captures), **(environment or {})}
    for raw in captures:
        frameworks.update(raw.frameworks)
        # Facts that belong to no device (CUDA live blocks, say) are kept as text.
        capture_info.update({k: str(v) for k, v in raw.facts.items() if isinstance(v, str)})
        warnings.extend(Note(*note) for note in raw.notes)  # (code, message) or (code, message, fix)
        capture_info.update(raw.options)
        for rd in raw.devices:
            device, timeline = _sampled_device(rd, warnings)
            devices.append(device)
            timelines.append(timeline)
    facts = {k: v for c in captures for k, v in c.facts.items()}
    for rp in replays or []:
        device = _allocator_device(rp, facts)
        devices.append(device)
        timelines.append(_allocator_timeline(rp))
        # How the memory from before the run was found; README, "What the numbers are".
        capture_info[f"{rp.log.device}_baseline"] = (
            "the allocator's own counters"
            if rp.log.baseline_exact
            else "the tensors reachable from the namespace (variables, Out, modules, optimizers)"
        )
    kept = sorted((k for c in captures for k in c.kept), key=lambda k: -k.bytes)
    grown = sorted((g for c in captures for g in c.grown), key=lambda g: -(g.bytes + g.graph_bytes))
    profile = Profile(
        kept=kept,
        grown=grown,
        id=uuid.uuid4().hex,
        name=name,
        started_at=started_at,
        duration_s=duration_s,
        source=source,
        frameworks=[Framework(k, v) for k, v in sorted(frameworks.items())],
        devices=devices,
        timelines=timelines,
        error=error,
        warnings=warnings,
        capture=capture_info,
    )
    _measure(profile, captures, replays or [])
    return profile


def _measure(profile: Profile, captures: list[RawCapture], replays: list[Replay]) -> None:
    """What the recorded events say, kept on the profile: the peak's anatomy,
    the op, layer and optimizer tables, the cell's lines. The events are not
    kept, so this is the last place they are read; the rules and renderers
    work on the profile alone."""
    profile.peak = find_peak(profile, replays)
    called = next((c.input_shapes for c in captures if c.input_shapes), None)
    if profile.peak is not None and called:
        profile.peak.input_shapes = [list(s) for s in called]
    profile.ops = op_table([op for c in captures for op in c.ops])
    profile.layers = layer_table([m for c in captures for m in c.modules], replays, profile.peak)
    if has_lines(replays):
        peak_replay = next((rp for rp in replays if profile.peak and rp.log.device == profile.peak.device), None)
        lines, op_line, layer_line = line_figures(replays, peak_replay, profile.source)
        profile.lines = lines
        for o in profile.ops:
            o.line = op_line.get(o.name)
        for layer in profile.layers:
            layer.line = layer_line.get(layer.name)
    profile.optimizers = optimizer_table([o for c in captures for o in c.optimizers], profile.layers)
    profile.trainer = next((c.trainer for c in captures if c.trainer is not None), None)


def _sampled_device(rd: RawDevice, warnings: list[Note]) -> tuple[Device, Timeline]:
    """A device known by samples (and its counter's peak), with its timeline bounded in points;
    a note in `warnings` where the samples missed the peak."""
    sampled_peak = max(rd.live_bytes, default=rd.baseline_bytes)
    peak = max(sampled_peak, rd.counter_peak_bytes or 0)
    device = Device(
        name=rd.name,
        kind=rd.kind,  # type: ignore[arg-type]
        source=rd.source,
        peak_bytes=peak,
        baseline_bytes=rd.baseline_bytes,
        end_bytes=rd.end_bytes,
        capacity_bytes=rd.capacity_bytes,
    )
    keep = minmax_indices(rd.live_bytes, MAX_TIMELINE_POINTS)
    timeline = Timeline(
        device=rd.name,
        t=[rd.t[i] for i in keep],
        live_bytes=[rd.live_bytes[i] for i in keep],
        recorded_points=rd.recorded_points or len(rd.live_bytes),
    )
    # Say so only when the timeline would mislead: its highest point
    # misses a tenth or more of what the run added.
    if peak - sampled_peak > max(MIN_GAP_BYTES, (peak - rd.baseline_bytes) // 10):
        warnings.append(
            Note(
                "peak_between_samples",
                f"{rd.name}: the exact peak, {fmt_bytes(peak)}, fell between two samples "
                f"(the highest sample is {fmt_bytes(sampled_peak)}): its time is approximate",
            )
        )
    return device, timeline


def _allocator_device(rp: Replay, facts: dict) -> Device:
    """A device known by its allocator's events, with the collectors' integer facts about it
    ("cpu.counted_peak_bytes") among its allocator stats."""
    log = rp.log
    stats: dict[str, int] = {}
    if rp.peak_index >= 0 and log.requested != log.size:
        # The allocator rounds blocks up (TF's BFC: an 80 MiB tensor holds 128
        # MiB): what the tensors asked for at the peak, against what it gave.
        live = rp.live_at_peak()
        stats["requested_bytes_at_peak"] = sum(log.requested[i] for i in live)
        stats["rounding_bytes_at_peak"] = sum(log.size[i] - log.requested[i] for i in live)
    if rp.working:  # the highest was the start; the breakdown is of the work's own peak
        stats["working_peak_bytes"] = rp.peak_bytes
    device = Device(
        name=log.device,
        kind="allocator",
        source=log.source,
        peak_bytes=max(rp.peak_bytes, rp.baseline_bytes),
        baseline_bytes=rp.baseline_bytes,
        end_bytes=rp.live_bytes[-1] if rp.live_bytes else rp.baseline_bytes,
        capacity_bytes=log.capacity_bytes,
        baseline_by_category=dict(rp.baseline_by_category),
        allocator_stats=stats,
    )
    prefix = f"{device.name}."
    device.allocator_stats.update(
        {k[len(prefix) :]: v for k, v in facts.items() if k.startswith(prefix) and isinstance(v, int)}
    )
    return device


def _allocator_timeline(rp: Replay) -> Timeline:
    """Live bytes after each event, with the state at the start as point 0."""
    log = rp.log
    labels: dict[str, int] = {}

    def label(text: str) -> int:
        if not text:
            return -1
        if text not in labels:
            labels[text] = len(labels)
        return labels[text]

    live = [rp.baseline_bytes, *rp.live_bytes]
    keep = minmax_indices(live, MAX_TIMELINE_POINTS)
    rows = [None, *rp.row]
    kept_rows = [rows[k] for k in keep]
    start = rp.baseline_by_category
    cols = {c: [start.get(c, 0), *col] for c, col in rp.by_category.items()}
    t = [0.0, *rp.t]
    return Timeline(
        device=log.device,
        t=[max(0.0, t[k]) for k in keep],
        live_bytes=[live[k] for k in keep],
        by_category={c: [col[k] for k in keep] for c, col in cols.items() if any(col)},
        op=[label(log.op[r]) if r is not None else -1 for r in kept_rows],
        layer=[label(log.layer[r]) if r is not None else -1 for r in kept_rows],
        phase=[_PHASE_INDEX.get(log.phase[r], -1) if r is not None else -1 for r in kept_rows],
        labels=list(labels),
        recorded_points=len(rp.live_bytes),
    )
