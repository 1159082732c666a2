"""Assemble a Profile from what the collectors recorded."""

from __future__ import annotations

import uuid

from memprofile.capture.base import RawCapture
from memprofile.model.decimate import minmax_indices
from memprofile.model.profile import Device, ErrorInfo, Framework, Note, Profile, Timeline
from memprofile.units import fmt_bytes

#: A stored timeline keeps at most this many points per device (peak exact).
MAX_TIMELINE_POINTS = 20_000
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
        warnings.extend(Note(code, message) for code, message in raw.notes)
        capture_info.update(raw.options)
        for rd in raw.devices:
            sampled_peak = max(rd.live_bytes, default=rd.baseline_bytes)
            peak = max(sampled_peak, rd.counter_peak_bytes or 0)
            devices.append(
                Device(
                    name=rd.name,
                    kind=rd.kind,  # type: ignore[arg-type]
                    source=rd.source,
                    peak_bytes=peak,
                    baseline_bytes=rd.baseline_bytes,
                    end_bytes=rd.end_bytes,
                    capacity_bytes=rd.capacity_bytes,
                )
            )
            keep = minmax_indices(rd.live_bytes, MAX_TIMELINE_POINTS)
            timelines.append(
                Timeline(
                    device=rd.name,
                    t=[rd.t[i] for i in keep],
                    live_bytes=[rd.live_bytes[i] for i in keep],
                    recorded_points=rd.recorded_points or len(rd.live_bytes),
                )
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
    return Profile(
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
