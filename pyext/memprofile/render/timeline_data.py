"""What a timeline view draws, as plain data: the points that reach the page,
the kinds stacked as steps, the phases' bands, where the detail was recorded,
a point per training step, and the note under the plot.

No bokeh here (render/interactive.py draws these): every function takes a
Profile and returns lists, numbers and text, tested without a plot.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from html import escape
from typing import Any

from memprofile.model.decimate import minmax_indices
from memprofile.model.profile import CATEGORIES, PHASES, Device, Profile, StepStat, Timeline
from memprofile.render.palette import PHASE_SHADES
from memprofile.render.stairs import as_steps
from memprofile.units import fmt_bytes, step_runs

#: At most this many points per timeline reach the page (the peak always does).
DISPLAY_POINTS = 10_000
#: Phase bands shaded behind the timeline at most (past that, none).
MAX_PHASE_BANDS = 600
#: At most this many step points per timeline: each the highest step of its run of steps.
STEP_POINTS = 500
#: Capture facts are written to the millisecond: a point within half of it is inside.
FACT_ROUNDING_S = 0.0005


def display_indices(values: list[int], limit: int = DISPLAY_POINTS) -> list[int]:
    """Indices of the points to draw: every local extreme that matters (min
    and max per bucket), the first, the last and the global peak."""
    keep = minmax_indices(values, limit)
    if values:
        top = max(range(len(values)), key=values.__getitem__)
        if top not in keep:
            keep = sorted(set(keep) | {top})
    return keep


@dataclass
class TimelinePoints:
    """The points of one timeline that reach the page. `line` has a row per
    point (t, live, and the op, layer and phase as indices: -1 none), for the
    line and its hover; `area_t` and `areas` are the kinds (`kinds`) stacked
    as steps. `top` is the index of the highest point (None: no point)."""

    line: dict[str, list]
    kinds: list[str]
    area_t: list[float]
    areas: list[list]
    top: int | None

    @property
    def t(self) -> list[float]:
        return self.line["t"]

    @property
    def live(self) -> list[int]:
        return self.line["live"]


def timeline_points(timeline: Timeline, recorded: tuple[float, float] | None) -> TimelinePoints:
    """The timeline decimated for the page; within `recorded` (detail_span)
    where the allocator was recorded only there."""
    keep = display_indices(timeline.live_bytes)
    if recorded is not None:
        # Before and after the detail nothing recorded this allocator: no line across it.
        lo, hi = recorded[0] - FACT_ROUNDING_S, recorded[1] + FACT_ROUNDING_S
        keep = [i for i in keep if lo <= timeline.t[i] <= hi] or keep
    t = [round(timeline.t[i], 6) for i in keep]  # µs: finer than any sample, shorter on the page
    live = [timeline.live_bytes[i] for i in keep]

    # Labels travel once, as a list; each point carries its index (-1: none),
    # and the hover looks them up: a million-event page stays small.
    n_labels = len(timeline.labels)

    def index(column: list[int], i: int) -> int:
        k = column[i] if i < len(column) else -1
        return k if 0 <= k < n_labels else -1

    line: dict[str, list] = {
        "t": t,
        "live": live,
        "op": [index(timeline.op, i) for i in keep],
        "layer": [index(timeline.layer, i) for i in keep],
        "phase": [timeline.phase[i] if i < len(timeline.phase) else -1 for i in keep],
    }
    kinds = [c for c in CATEGORIES if c in timeline.by_category]
    # The areas as steps (memory holds until the next point: render/stairs.py).
    area_t, areas = as_steps(t, *([timeline.by_category[c][i] for i in keep] for c in kinds))
    top = max(range(len(live)), key=live.__getitem__) if live else None
    return TimelinePoints(line, kinds, area_t, areas, top)


def peak_label(points: TimelinePoints, device: Device, recorded: tuple[float, float] | None) -> str:
    """'peak 12.3 MiB' for the highest point drawn; 'peak in detail' where the
    allocator's counters know a higher step past the detail."""
    if points.top is None:
        return ""
    top = points.live[points.top]
    what = "peak in detail" if recorded is not None and device.peak_bytes > top else "peak"
    return f"{what} {fmt_bytes(top)}"


def shown_capacity(device: Device, live: list[int]) -> int | None:
    """The device's capacity where it is near enough to the line to draw
    (the device table lists it always); None where it is not."""
    if device.capacity_bytes and device.capacity_bytes <= 4 * max(live or [1]):
        return device.capacity_bytes
    return None


def cell_end(profile: Profile) -> float:
    """The last instant anything of the cell was measured."""
    ends = [profile.duration_s] + [tl.t[-1] for tl in profile.timelines if tl.t] + [s.t_end for s in profile.steps]
    return max(ends)


def _seconds(fact: str | None) -> float | None:
    try:
        return float(fact) if fact is not None else None
    except ValueError:
        return None


def detail_span(profile: Profile, device: Device) -> tuple[float, float] | None:
    """(start, end) of the time an allocator was recorded in detail, where
    that is not the whole cell: a detail window that began at a later step,
    or ended (after its last step, or at the profiler's budget). None: the
    whole cell, or no allocator."""
    if device.kind != "allocator":
        return None
    framework = "torch" if device.source == "c10" else "tf"  # TF names its allocators (mklcpu, bfc)
    end = _seconds(profile.capture.get(f"{framework}_detail_end_s"))
    start = 0.0
    steps = profile.steps
    late_fact = _seconds(profile.capture.get(f"{framework}_detail_start_s"))
    if steps and not steps[0].detailed and (late_fact is not None or steps[0].device == device.name):
        first = next((s for s in steps if s.detailed), None)
        # The window began at a later step (or never, when the loop ended first).
        start = late_fact if late_fact is not None else first.t_start if first else cell_end(profile)
    if end is None and start == 0.0:
        return None
    return start, cell_end(profile) if end is None else end


def x_range(profile: Profile, recorded: tuple[float, float] | None) -> tuple[float, float] | None:
    """The whole cell, for a loop with steps or a detail window: every
    device's plot spans it, so they line up. None: the plot fits its data."""
    return (0.0, cell_end(profile)) if profile.steps or recorded else None


@dataclass
class DetailMarks:
    """Where a timeline says what the allocators recorded in detail: the
    stretches an allocator did not record (hatched on its own timeline), the
    instants the allocators' detail began or ended (dashed on the process's),
    and the note's words."""

    hatched: list[tuple[float, float]]
    edges: list[float]
    note: str


def detail_marks(profile: Profile, device: Device, recorded: tuple[float, float] | None) -> DetailMarks:
    end = cell_end(profile)
    if recorded is not None:
        outside = _outside_detail(profile, device)
        hatched = [
            (left, right) for left, right in ((0.0, recorded[0]), (recorded[1], end)) if right - left > FACT_ROUNDING_S
        ]
        return DetailMarks(hatched, [], "hatched: not recorded in detail" + (f" ({outside})" if outside else ""))
    if device.kind != "process":
        return DetailMarks([], [], "")
    spans = [span for d in profile.devices if (span := detail_span(profile, d)) is not None]
    edges = sorted({round(x, 6) for start, stop in spans for x in (start, stop) if FACT_ROUNDING_S < x < end})
    return DetailMarks([], edges, "dashed: where the allocator's detail began or ended" if edges else "")


def _outside_detail(profile: Profile, device: Device) -> str:
    """'steps 4-200: their resident memory on the process's timeline': where
    the steps the detail left out are drawn."""
    cheap = [s for s in profile.steps if not s.detailed]
    if not cheap:
        return ""
    exact = all(s.peak_bytes is not None and s.device == device.name for s in cheap)
    where = "a point each" if exact else "their resident memory on the process's timeline"
    return f"{step_runs([s.index for s in cheap])}: {where}"


@dataclass
class StepPoint:
    """A training step as one point of a timeline: its peak, the time of it
    (the step's end where the samples do not say), and its end bytes."""

    step: StepStat
    t: float
    peak: int
    end: int | None
    exact: bool


def step_points(profile: Profile, timeline: Timeline, device: Device) -> list[StepPoint]:
    """The steps drawn on this timeline: a step's exact peak on its
    allocator's timeline, else its resident memory on the process's."""
    drawn = {tl.device for tl in profile.timelines if tl.t}
    points = []
    for s in profile.steps:
        exact = s.peak_bytes is not None and s.device in drawn
        if exact and s.device == timeline.device and s.peak_bytes is not None:  # (exact says it is)
            points.append(StepPoint(s, _peak_time(timeline, s, s.peak_bytes), s.peak_bytes, s.end_bytes, True))
        elif not exact and device.kind == "process" and s.rss_peak_bytes is not None:
            points.append(
                StepPoint(s, _peak_time(timeline, s, s.rss_peak_bytes), s.rss_peak_bytes, s.rss_end_bytes, False)
            )
    return points


def _peak_time(timeline: Timeline, step: StepStat, value: int) -> float:
    """When the step's timeline first reached its peak; the step's end where
    no point in the step holds it (boundaries only, or no sample in it)."""
    lo = bisect.bisect_right(timeline.t, step.t_start)
    hi = bisect.bisect_right(timeline.t, step.t_end)
    return next((timeline.t[i] for i in range(lo, hi) if timeline.live_bytes[i] == value), step.t_end)


def highest_per_run(values: list[int], limit: int = STEP_POINTS) -> list[tuple[int, int, int]]:
    """(kept, first, last) for `limit` runs of consecutive values at most:
    the index of each run's highest value (the first of equals) and the
    run's bounds. Every index alone when there are no more than `limit`."""
    n = len(values)
    if n <= limit:
        return [(i, i, i) for i in range(n)]
    runs = []
    for b in range(limit):
        lo, hi = n * b // limit, n * (b + 1) // limit
        runs.append((max(range(lo, hi), key=values.__getitem__), lo, hi - 1))
    return runs


def _step_label(point: StepPoint, first: int, last: int) -> str:
    """'step 7: peak 12.3 MiB (exact), end 4.10 MiB': the point's tooltip."""
    how = "exact" if point.exact else "resident memory"
    end = f", end {fmt_bytes(point.end)}" if point.end is not None else ""
    run = f"; the highest of steps {first}-{last}" if last > first else ""
    detail = ", in detail" if point.step.detailed else ""
    return f"step {point.step.index}: peak {fmt_bytes(point.peak)} ({how}){end}{detail}{run}"


def _step_budget(detailed: int, boundary: int, limit: int = STEP_POINTS) -> tuple[int, int]:
    """Points for the detailed steps and for the others: each keeps all it
    has when both fit, and at least half the budget when both do not."""
    first = min(detailed, max(limit // 2, limit - boundary))
    return first, min(boundary, limit - first)


@dataclass
class StepSeries:
    """The points of the steps recorded in detail, or of those measured by
    their boundaries: columns t, peak, step and label (the tooltip)."""

    detailed: bool
    data: dict[str, list[Any]]


def step_series(points: list[StepPoint]) -> list[StepSeries]:
    """A series per kind of step that has points, detailed first; past
    STEP_POINTS in all, each run of steps drawn as its highest."""
    groups = [[pt for pt in points if pt.step.detailed], [pt for pt in points if not pt.step.detailed]]
    budgets = _step_budget(len(groups[0]), len(groups[1]))
    series = []
    for detailed, group, budget in zip((True, False), groups, budgets):
        if not group:
            continue
        rows = [
            (group[k], group[a].step.index, group[b].step.index)
            for k, a, b in highest_per_run([pt.peak for pt in group], budget)
        ]
        series.append(
            StepSeries(
                detailed,
                {
                    "t": [round(pt.t, 6) for pt, _, _ in rows],
                    "peak": [pt.peak for pt, _, _ in rows],
                    "step": [pt.step.index for pt, _, _ in rows],
                    "label": [_step_label(pt, a, b) for pt, a, b in rows],
                },
            )
        )
    return series


def steps_note(points: list[StepPoint], series: list[StepSeries]) -> str:
    """'500 step points for 5,000 steps (the highest of each run)': the note's words."""
    if not points:
        return ""
    shown = sum(len(s.data["step"]) for s in series)
    return f"{shown:,} step points" + (
        f" for {len(points):,} steps (the highest of each run)" if shown < len(points) else ""
    )


def phase_bands(timeline: Timeline) -> list[tuple[str, float, float]]:
    """(phase, start, end) where backward and optimizer steps ran, from the
    stored timeline (so short phases are not lost to the display
    decimation); none past MAX_PHASE_BANDS."""
    if not timeline.phase or len(timeline.phase) != len(timeline.t):
        return []
    bands: list[tuple[str, float, float]] = []
    start, current = 0, timeline.phase[0]
    for i in range(1, len(timeline.phase) + 1):
        if i == len(timeline.phase) or timeline.phase[i] != current:
            name = PHASES[current] if 0 <= current < len(PHASES) else ""
            if name in PHASE_SHADES:
                end = timeline.t[i] if i < len(timeline.t) else timeline.t[-1]
                bands.append((name, timeline.t[start], end))
            if i < len(timeline.phase):
                start, current = i, timeline.phase[i]
    if len(bands) > MAX_PHASE_BANDS:
        return []
    return bands


def shaded_phases(bands: list[tuple[str, float, float]]) -> list[str]:
    """The phases the bands shade, in PHASE_SHADES' order."""
    return sorted({name for name, _, _ in bands}, key=list(PHASE_SHADES).index)


def timeline_note(points: TimelinePoints, recorded_points: int, shaded: list[str], *notes: str) -> str:
    """The line under the plot (HTML): how many points are drawn, how to
    move around, what the shades and marks are (`notes`: the steps' and the
    detail's words, where they have any)."""
    n = len(points.t)
    shown = f"{n:,} of {recorded_points:,} recorded points" if recorded_points > n else f"{n:,} points"
    bands = "".join(f" <span style='background:{PHASE_SHADES[ph]}55;padding:0 4px'>{ph}</span>" for ph in shaded)
    return (
        f"<span class='mp-muted'>{escape(shown)}; drag to pan, wheel to zoom, "
        "click a legend entry to hide a kind"
        + (f"; shaded:{bands}" if bands else "")
        + "".join(f"; {escape(x)}" for x in notes if x)
        + "</span>"
    )


def shown_timelines(profile: Profile) -> list[tuple[Timeline, Device]]:
    """Every device's timeline that has points, the peak device's first."""
    devices = {d.name: d for d in profile.devices}
    peak_device = profile.peak_device.name if profile.peak_device else ""
    shown = sorted(
        (tl for tl in profile.timelines if tl.device in devices and tl.t), key=lambda tl: tl.device != peak_device
    )
    return [(tl, devices[tl.device]) for tl in shown]
