"""The cell's lines as every view shows them: which lines hold the peak, the
whole source with per-line figures, "(no layer)" placed on lines, and a
tensor's size next to its allocator block. Plain data; each renderer draws it."""

from __future__ import annotations

from memprofile.analysis.lines import BEFORE_CELL
from memprofile.analysis.peak import NO_LAYER
from memprofile.model.profile import LineStat, Peak, Profile, StepStat, TensorInfo
from memprofile.model.summary import StepsBrief
from memprofile.units import fmt_bytes, step_runs

#: Lines the card lists (the report lists the whole cell).
CARD_LINES = 5
MiB = 1 << 20


def line_label(line: int | None) -> str:
    """'line 3', 'before the cell' (line 0), '' (unknown)."""
    if line is None or line < 0:
        return ""
    return BEFORE_CELL.strip("()") if line == 0 else f"line {line}"


def peak_lines(profile: Profile, limit: int = CARD_LINES) -> list[LineStat]:
    """The lines holding the most at the peak (then allocating the most), at
    most `limit`, in line order: the compact source view."""
    held = [s for s in profile.lines if s.peak_bytes > 0 or s.allocated_bytes > 0]
    top = sorted(held, key=lambda s: (-s.peak_bytes, -s.allocated_bytes, s.line))[:limit]
    return sorted(top, key=lambda s: s.line)


def source_rows(profile: Profile) -> list[LineStat]:
    """Every line of the cell, in order, with what it allocated and held at
    the peak; memory from before the cell first (line 0) when any was alive.
    Empty when the profile has no per-line figures."""
    if not profile.lines:
        return []
    stats = {s.line: s for s in profile.lines}
    source = profile.source.splitlines()
    last = max(len(source), max(stats))
    rows = []
    for line in range(0 if 0 in stats else 1, last + 1):
        s = stats.get(line)
        # The raw source keeps the indentation; a stat's text is stripped.
        text = source[line - 1] if 0 < line <= len(source) else (s.text if s else "")
        if line == 0:
            text = BEFORE_CELL
        if s is None:
            rows.append(LineStat(line, text))
        else:
            rows.append(
                LineStat(
                    line,
                    text,
                    allocated_bytes=s.allocated_bytes,
                    peak_bytes=s.peak_bytes,
                    by_category=dict(s.by_category),
                    ops=dict(s.ops),
                    layers=dict(s.layers),
                )
            )
    return rows


def placed_by_layer(profile: Profile) -> dict[str, int]:
    """The peak's bytes by layer, with "(no layer)" placed on the lines that
    made it: "line 3: cross_entropy". A line counts only when it allocated in
    no layer at all (then everything it holds at the peak is outside layers);
    what cannot be placed so stays "(no layer)". Largest first."""
    peak = profile.peak
    if peak is None:
        return {}
    by_layer = dict(peak.by_layer)
    unplaced = by_layer.pop(NO_LAYER, 0)
    if not unplaced:
        return by_layer
    for s in sorted(profile.lines, key=lambda s: -s.peak_bytes):
        if s.line <= 0 or s.layers or s.peak_bytes <= 0 or unplaced <= 0:
            continue
        take = min(s.peak_bytes, unplaced)
        op = next(iter(s.ops), "")
        key = f"{line_label(s.line)}: {op}" if op else line_label(s.line)
        by_layer[key] = by_layer.get(key, 0) + take
        unplaced -= take
    if unplaced:
        by_layer[NO_LAYER] = unplaced
    return dict(sorted(by_layer.items(), key=lambda kv: -kv[1]))


def tensor_bytes_text(t: TensorInfo) -> str:
    """'8.00 MiB', or '8.00 MiB tensor in a 15.75 MiB allocator block' where
    the allocator gave more than the tensor asked for."""
    if t.requested_bytes is not None and t.requested_bytes != t.bytes:
        return f"{fmt_bytes(t.requested_bytes)} tensor in a {fmt_bytes(t.bytes)} allocator block"
    return fmt_bytes(t.bytes)


def shape_text(t: TensorInfo) -> str:
    return "×".join(map(str, t.shape)) if t.shape else "scalar" if t.dtype else ""


def peak_place(peak: Peak | None, line_source: str | None = None) -> str:
    """'op aten::mm, layer encoder, line 3 (y = model(x))': what ran at the peak."""
    if peak is None:
        return ""
    parts = [f"op {peak.op}" if peak.op else "", f"layer {peak.layer}" if peak.layer else ""]
    label = line_label(peak.line)
    if label:
        parts.append(f"{label} ({line_source})" if line_source else label)
    return ", ".join(p for p in parts if p)


def _peak_known(s: StepStat) -> int | None:
    return s.peak_bytes if s.peak_bytes is not None else s.peak_estimate_bytes


def _end_known(s: StepStat) -> int | None:
    return s.end_bytes if s.end_bytes is not None else s.end_estimate_bytes


def _highest(steps: list[StepStat], exact: bool) -> StepStat | None:
    """The step that peaked highest (on the device, exact or estimated, where
    `exact`); on resident memory the first that came within 1 % of it (the
    process keeps what a step freed, so the steps after look as high), as
    analysis/steps.py names it."""
    value = _peak_known if exact else (lambda s: s.rss_peak_bytes)
    known = [(s, v) for s in steps if (v := value(s)) is not None]
    if not known:
        return None
    top = max(v for _, v in known)
    near = 0 if exact else max(MiB, top // 100)
    return next(s for s, v in known if v >= top - near)


def steps_brief(profile: Profile) -> StepsBrief | None:
    """None for a cell without training steps."""
    steps = profile.steps
    if not steps:
        return None
    detailed = [s.index for s in steps if s.detailed]
    peaks_exact = all(s.peak_bytes is not None for s in steps)
    # Torch on CPU after the detail: the device's figures estimated from the C
    # heap, nearer the tensors than resident memory (which grows with the heap's pages).
    peaks_estimated = not peaks_exact and all(_peak_known(s) is not None for s in steps)
    highest = _highest(steps, peaks_exact or peaks_estimated)
    if peaks_estimated:
        from memprofile.analysis.steps import later_peak, resident_spike

        # A spike within a step (made and freed) is not in the estimates: where resident memory
        # shows one and no estimate went above the detail, the spike is the highest step.
        spike = resident_spike(profile) if later_peak(profile) is None else None
        if spike is not None:
            highest, peaks_estimated = spike[0], False
    ends_exact = all(s.end_bytes is not None for s in steps)
    # The line shows the first and the last step's end: short steps read in groups leave some
    # steps between without a reading of their own.
    ends_estimated = not ends_exact and _end_known(steps[0]) is not None and _end_known(steps[-1]) is not None
    end = _end_known if ends_exact or ends_estimated else (lambda s: s.rss_end_bytes)
    brief = StepsBrief(
        count=len(steps),
        detail_first=min(detailed, default=None),
        detail_last=max(detailed, default=None),
        highest_step=highest.index if highest else None,
        highest_bytes=(_peak_known(highest) if peaks_exact or peaks_estimated else highest.rss_peak_bytes)
        if highest
        else None,
        peaks_exact=peaks_exact,
        end_first_bytes=end(steps[0]),
        end_last_bytes=end(steps[-1]),
        ends_exact=ends_exact,
        peaks_estimated=peaks_estimated,
        ends_estimated=ends_estimated,
    )
    brief.text = steps_text(brief)
    return brief


def steps_text(brief: StepsBrief | None) -> str:
    """'200 training steps · steps 1-3 in detail · highest step: 7 (12.3 MiB)
    · end of step: 4.10 MiB → 4.20 MiB'; '' without steps. steps_brief
    keeps it in the brief, where the card reads it."""
    if brief is None or brief.count <= 0:
        return ""
    parts = [f"{brief.count:,} training step{'s' if brief.count != 1 else ''}"]
    first, last = brief.detail_first, brief.detail_last
    if first is None or last is None:
        parts.append("no step in detail")
    elif first == 1 and last == brief.count and brief.count > 1:
        parts.append("every step in detail")
    else:
        parts.append(f"{step_runs(list(range(first, last + 1)))} in detail")
    if brief.highest_step is not None and brief.highest_bytes is not None:
        how = "" if brief.peaks_exact else ", estimated" if brief.peaks_estimated else " resident"
        parts.append(f"highest step: {brief.highest_step} ({fmt_bytes(brief.highest_bytes)}{how})")
    if brief.end_first_bytes is not None and brief.end_last_bytes is not None:
        how = "" if brief.ends_exact else " (estimated)" if brief.ends_estimated else " (resident)"
        parts.append(f"end of step: {fmt_bytes(brief.end_first_bytes)} → {fmt_bytes(brief.end_last_bytes)}{how}")
    return " · ".join(parts)
