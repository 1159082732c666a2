"""Plain-text summary of a Profile, for terminals, logs and `text/plain`."""

from __future__ import annotations

from memprofile.model.profile import CATEGORIES, Device, ErrorInfo, Profile, Suggestion, TensorInfo
from memprofile.render.lines import (
    line_label,
    peak_lines,
    peak_place,
    shape_text,
    steps_brief,
    steps_text,
    tensor_bytes_text,
)
from memprofile.render.prediction import fits_line, predictions_text
from memprofile.units import category_label, fmt_bytes, fmt_seconds

#: Tensors and lines the text summary lists.
TEXT_TENSORS = 3
#: What "Try it" says before it runs anything (memprofile.trial runs the cell two or three times).
RERUN_WARNING = (
    "Trying a change runs the cell two or three more times: as it is; once more as it is when that "
    "run created state the next run starts with (an optimizer's first step creates its state), so "
    "that like is compared with like; then changed. Whatever the cell changes, it changes each time "
    "(a training cell trains two or three more steps)."
)
#: The label of the button that confirms it.
RERUN_BUTTON = "Run the cell 2 or 3 times"


def end_text(d: Device) -> str:
    """A device's bytes at the run's end: '~12.0 MiB (estimated from the C
    heap)' where the allocator's timeline ended with the detail."""
    if "counted_end_bytes" in d.allocator_stats:
        return f"{fmt_bytes(d.end_bytes)} (the allocator's counter)"
    if "end_at_detail_bytes" in d.allocator_stats:
        return f"~{fmt_bytes(d.end_bytes)} (estimated from the C heap after the detail)"
    return fmt_bytes(d.end_bytes)


def one_line(profile: Profile) -> str:
    device = profile.peak_device
    where = f" on {device.name}" if device else ""
    status = f", raised {profile.error.type}" if profile.error else ""
    from memprofile.analysis.steps import later_peak

    later = later_peak(profile)
    higher = ""
    if later is not None:
        step, value, how = later
        higher = f" (detailed steps; step {step.index} went higher: {'' if how == 'exact' else '~'}{fmt_bytes(value)})"
    return (
        f"{profile.name!r}: peak {fmt_bytes(profile.peak_bytes)}{where}{higher} in "
        f"{fmt_seconds(profile.duration_s)}{status}"
    )


def saving_line(s: Suggestion, peak_bytes: int = 0) -> str:
    """'measured: -1.40 GiB (-43 %), time +12 % (estimate -1.20 GiB)' once
    tried, else 'estimate: saves ~1.20 GiB'; '' when there is neither."""
    estimate = f"~{fmt_bytes(s.estimated_saving_bytes)}" if s.estimated_saving_bytes else ""
    if s.measured_saving_bytes is not None:
        from memprofile.render.compare import peak_change_text, time_change_text

        # The comparison's own percentage: over the peak of the run measured against.
        before = s.measured_peak_before_bytes if s.measured_peak_before_bytes is not None else peak_bytes
        return (
            f"measured: {peak_change_text(s.measured_saving_bytes, before)}"
            f"{time_change_text(s.measured_time_change)}" + (f" (estimate {estimate})" if estimate else "")
        )
    return f"estimate: saves {estimate}" if estimate else ""


def how_to_apply(s: Suggestion) -> str:
    where = (
        "at the top of the notebook, then restart the kernel"
        if s.placement == "top" and s.restart_kernel
        else "at the top of the notebook"
        if s.placement == "top"
        else "below the profiled cell"
    )
    tryit = f"; try it in place: %%memprofile --try {s.try_change}" if s.try_change else ""
    return f"goes {where}{tryit}"


def tensor_line(t: TensorInfo) -> str:
    """'64×32×32×32 float32 activation: 8.00 MiB, op conv2d, layer conv, line 3'."""
    where = [f"op {t.op}" if t.op else "", f"layer {t.layer}" if t.layer else "", line_label(t.line)]
    head = " ".join(x for x in (shape_text(t), t.dtype, category_label(t.category)) if x)
    return ", ".join([f"{head}: {tensor_bytes_text(t)}"] + [w for w in where if w])


def failure_place(error: ErrorInfo) -> str:
    """'in op aten::empty, layer big, line 3, asking for 4.00 EiB': where the failure was."""
    parts = [
        f"op {error.op}" if error.op else "",
        f"layer {error.layer}" if error.layer else "",
        line_label(error.line),
    ]
    where = ", ".join(p for p in parts if p)
    asked = f"asking for {fmt_bytes(error.requested_bytes)}" if error.requested_bytes is not None else ""
    return ", ".join(x for x in (f"in {where}" if where else "", asked) if x)


def error_lines(error: ErrorInfo) -> list[str]:
    """Where it failed first (op, layer, line, bytes), then the message's own words; the stack
    frames a framework put in the message are folded (`p.error.message` has them)."""
    place = failure_place(error)
    message = error.headline or error.message
    lines = [f"  the run raised {error.type}" + (f": it failed {place}" if place else f": {message}")]
    if place:
        lines.append(f"    {message}")
    if error.message_frames:
        lines.append(f"    (the message's {error.message_frames} stack frames are folded: p.error.message)")
    return lines


def render_text(profile: Profile) -> str:
    lines = [f"memprofile {one_line(profile)}"]
    if profile.merged:
        from memprofile.render.ranks import ranks_text

        lines.extend(ranks_text(profile.merged))
    if profile.frameworks:
        lines.append("  frameworks: " + ", ".join(f"{f.name} {f.version}" for f in profile.frameworks))
    for d in profile.devices:
        cap = f" of {fmt_bytes(d.capacity_bytes)}" if d.capacity_bytes else ""
        # an end estimated after the detail can be above the detail's peak: say whose peak it is
        of = " (in the detail)" if "end_at_detail_bytes" in d.allocator_stats and d.end_bytes > d.peak_bytes else ""
        lines.append(
            f"  {d.name:<8} peak {fmt_bytes(d.peak_bytes)}{of}{cap} "
            f"({fmt_bytes(d.peak_bytes - d.baseline_bytes, signed=True)} over the {fmt_bytes(d.baseline_bytes)} "
            f"at start; {end_text(d)} at end) [{d.kind}: {d.source}]"
        )
    if profile.peak_scope:
        lines.append(f"  {profile.peak_scope}")
    steps = steps_text(steps_brief(profile))
    if steps:
        lines.append(f"  {steps}")
    fits = fits_line(profile.predictions)
    if fits:
        lines.append(f"  {fits}")
    peak = profile.peak
    if peak:
        where = peak_place(peak, profile.line_text(peak.line))
        lines.append(f"  peak at {fmt_seconds(peak.time_s)}{' during ' + where if where else ''}")
        known = [c for c in CATEGORIES if peak.by_category.get(c)]
        if known and known != ["other"]:
            parts = ", ".join(f"{category_label(c)} {fmt_bytes(peak.by_category[c])}" for c in known)
            lines.append(f"  at the peak: {parts}")
        for t in peak.tensors[:TEXT_TENSORS]:
            lines.append(f"  tensor: {tensor_line(t)}")
    held = peak_lines(profile)
    if held:
        lines.append("  lines (held at the peak / allocated):")
        for s in held:
            text = f"  {s.text}" if s.line > 0 and s.text else ""
            lines.append(
                f"    {line_label(s.line):>15}  {fmt_bytes(s.peak_bytes):>10} / {fmt_bytes(s.allocated_bytes)}{text}"
            )
    for suggestion in profile.suggestions[:3]:
        saving = saving_line(suggestion, profile.peak_bytes)
        lines.append(f"  suggestion: {suggestion.title}{' (' + saving + ')' if saving else ''}")
    if profile.error:
        lines.extend(error_lines(profile.error))
    for note in profile.warnings:
        lines.append(f"  note: {note.message}")
        if note.fix:
            lines.extend(f"    {line}" for line in note.fix.splitlines())
    lines += ["  " + line for line in predictions_text(profile.predictions)]
    return "\n".join(lines)
