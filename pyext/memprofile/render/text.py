"""Plain-text summary of a Profile, for terminals, logs and `text/plain`."""

from __future__ import annotations

from memprofile.model.profile import CATEGORIES, Profile, Suggestion
from memprofile.units import category_label, fmt_bytes, fmt_seconds


def one_line(profile: Profile) -> str:
    device = profile.peak_device
    where = f" on {device.name}" if device else ""
    status = f", raised {profile.error.type}" if profile.error else ""
    return f"{profile.name!r}: peak {fmt_bytes(profile.peak_bytes)}{where} in {fmt_seconds(profile.duration_s)}{status}"


def saving_line(s: Suggestion, peak_bytes: int = 0) -> str:
    """'measured: -1.40 GiB (-43 %), time +12 % (estimate -1.20 GiB)' once
    tried, else 'estimate: saves ~1.20 GiB'; '' when there is neither."""
    estimate = f"~{fmt_bytes(s.estimated_saving_bytes)}" if s.estimated_saving_bytes else ""
    if s.measured_saving_bytes is not None:
        share = f" ({-100 * s.measured_saving_bytes / peak_bytes:+.0f} %)" if peak_bytes else ""
        time = f", time {100 * s.measured_time_change:+.0f} %" if s.measured_time_change is not None else ""
        return (f"measured: {fmt_bytes(-s.measured_saving_bytes, signed=True)}{share}{time}"
                + (f" (estimate {estimate})" if estimate else ""))
    return f"estimate: saves {estimate}" if estimate else ""


def how_to_apply(s: Suggestion) -> str:
    where = ("at the top of the notebook, then restart the kernel" if s.placement == "top" and s.restart_kernel
             else "at the top of the notebook" if s.placement == "top" else "below the profiled cell")
    tryit = f"; try it in place: %%memprofile --try {s.try_change}" if s.try_change else ""
    return f"goes {where}{tryit}"


def render_text(profile: Profile) -> str:
    lines = [f"memprofile {one_line(profile)}"]
    if profile.frameworks:
        lines.append("  frameworks: " + ", ".join(f"{f.name} {f.version}" for f in profile.frameworks))
    for d in profile.devices:
        cap = f" of {fmt_bytes(d.capacity_bytes)}" if d.capacity_bytes else ""
        lines.append(
            f"  {d.name:<8} peak {fmt_bytes(d.peak_bytes)}{cap} "
            f"({fmt_bytes(d.peak_bytes - d.baseline_bytes, signed=True)} over the {fmt_bytes(d.baseline_bytes)} "
            f"at start; {fmt_bytes(d.end_bytes)} at end) [{d.kind}: {d.source}]"
        )
    peak = profile.peak
    if peak:
        where = " ".join(x for x in (f"op {peak.op}" if peak.op else "", f"layer {peak.layer}" if peak.layer else "") if x)
        lines.append(f"  peak at {fmt_seconds(peak.time_s)}{' during ' + where if where else ''}")
        known = [c for c in CATEGORIES if peak.by_category.get(c)]
        if known and known != ["other"]:
            parts = ", ".join(f"{category_label(c)} {fmt_bytes(peak.by_category[c])}" for c in known)
            lines.append(f"  at the peak: {parts}")
    for s in profile.suggestions[:3]:
        saving = saving_line(s, profile.peak_bytes)
        lines.append(f"  suggestion: {s.title}{' (' + saving + ')' if saving else ''}")
    if profile.error:
        lines.append(f"  the run raised {profile.error.type}: {profile.error.message}")
    for note in profile.warnings:
        lines.append(f"  note: {note.message}")
    return "\n".join(lines)
