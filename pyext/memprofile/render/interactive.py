"""Interactive bokeh views of a Profile: timeline, layers, ops, peak anatomy, suggestions.

Each function takes a Profile and returns a bokeh model; `views` lays them out
as tabs. Nothing here touches a framework. Text from user code (op and layer
names, messages) reaches the page only as data (canvas text, table cells and
tooltips, which bokeh sets as text) or through `html.escape` in Divs.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from html import escape
from typing import Any

from memprofile.model.decimate import minmax_indices
from memprofile.model.profile import CATEGORIES, PHASES, Device, Profile, StepStat, Timeline
from memprofile.render.html import (
    CATEGORY_COLORS,  # one hue per kind, as in the static HTML
    full_lines,
)
from memprofile.render.lines import line_label, placed_by_layer, shape_text, tensor_bytes_text
from memprofile.render.stairs import as_steps
from memprofile.render.text import how_to_apply, saving_line
from memprofile.units import category_label, fmt_bytes, fmt_seconds, step_runs

#: At most this many points per timeline reach the page (the peak always does).
DISPLAY_POINTS = 10_000
MAX_LAYERS = 60
MAX_OPS = 500
MAX_TENSORS = 20
LAYER_KINDS = ("parameter", "gradient", "optimizer_state", "activation", "temporary")
#: Phases shaded behind the timeline (forward is left plain), and how many bands at most.
PHASE_SHADES = {"backward": "#f5b041", "optimizer": "#a569bd"}
MAX_PHASE_BANDS = 600
#: At most this many step points per timeline: each the highest step of its run of steps.
STEP_POINTS = 500
#: Steps recorded in detail, and steps measured by their boundaries only.
STEP_DETAILED = "#111111"
STEP_BOUNDARY = "#0b7a75"
#: Where the allocator was not recorded in detail (before or after the detail window).
UNRECORDED_SHADE = "#8c8c8c"
#: Capture facts are written to the millisecond: a point within half of it is inside.
FACT_ROUNDING_S = 0.0005

_LINE = "#1f77b4"
#: Bytes in binary units, as units.fmt_bytes does it (numbro's "ib" prints "1.0000MiB").
_FMT_BYTES_JS = (
    "function fmt(b) {"
    " if (b === null || b === undefined || Number.isNaN(b)) { return ''; }"
    " const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];"
    " let v = Math.abs(b); let i = 0;"
    " while (v >= 1024 && i < units.length - 1) { v /= 1024; i++; }"
    " const digits = i === 0 ? 0 : v >= 100 ? 0 : v >= 10 ? 1 : 2;"
    " return (b < 0 ? '-' : '') + v.toFixed(digits) + ' ' + units[i]; }"
)


#: Every piece of JavaScript the views carry. They are constants: data goes in
#: through `args`, never into the code. The JupyterLab panel embeds json_items
#: only when each code string is one of these (labextension/trusted_js.json,
#: written by `python -m memprofile.render.panel --write`), so it runs no code
#: a kernel made up.
JS_TICK_BYTES = _FMT_BYTES_JS + " return fmt(tick);"
JS_HOVER_BYTES = _FMT_BYTES_JS + " return fmt(value);"
JS_HOVER_LABEL = "return value >= 0 ? labels[value] : ''"
JS_HOVER_PHASE = "return value >= 0 ? names[value] : ''"
JS_CELL_BYTES = ('<div style="text-align:right"><%= ('
                 + _FMT_BYTES_JS.replace("function fmt(b)", "function (b)") + ")(value) %></div>")
JS_LAYER_DEPTH = """
        const v = cb_obj.value
        const limit = v === "all depths" ? Infinity : Number(v.split(" ").pop())
        const d = all.data
        const keep = []
        for (let i = 0; i < d.layer.length; i++) if (d.depth[i] <= limit) keep.push(i)
        const out = {}
        for (const k of Object.keys(d)) out[k] = keep.map((i) => d[k][i])
        src.data = out
        yr.factors = out.layer
    """
JS_OPS_FILTER = """
        const q = cb_obj.value_input.toLowerCase()
        const names = src.data.name
        const keep = []
        for (let i = 0; i < names.length; i++) if (names[i].toLowerCase().includes(q)) keep.push(i)
        view.filter.indices = keep
        src.change.emit()
    """
TRUSTED_JS = (JS_TICK_BYTES, JS_HOVER_BYTES, JS_HOVER_LABEL, JS_HOVER_PHASE, JS_CELL_BYTES, JS_LAYER_DEPTH,
              JS_OPS_FILTER)


def _bytes_axis() -> Any:
    models, _, _ = _bokeh()
    return models.CustomJSTickFormatter(code=JS_TICK_BYTES)


def _bytes_cells() -> Any:
    """A table cell showing a byte count in binary units; the column still
    sorts by the number. The value is a number, so the template inserts no
    text from user code."""
    models, _, _ = _bokeh()
    return models.HTMLTemplateFormatter(template=JS_CELL_BYTES)


def _line_numbers(lines: list[int | None]) -> Any:
    """Line numbers for a table column: floats with NaN (shown blank) where
    unknown, so the column sorts by number."""
    import numpy as np

    return np.asarray([float("nan") if n is None else float(n) for n in lines], dtype=np.float64)


def _line_cells() -> Any:
    models, _, _ = _bokeh()
    return models.NumberFormatter(format="0", nan_format="", text_align="right")


def _bokeh():
    import bokeh.layouts as layouts
    import bokeh.models as models
    import bokeh.plotting as plotting

    return models, plotting, layouts


def display_indices(values: list[int], limit: int = DISPLAY_POINTS) -> list[int]:
    """Indices of the points to draw: every local extreme that matters (min
    and max per bucket), the first, the last and the global peak."""
    keep = minmax_indices(values, limit)
    if values:
        top = max(range(len(values)), key=values.__getitem__)
        if top not in keep:
            keep = sorted(set(keep) | {top})
    return keep


# The height a two-column legend of up to six entries takes under a plot.
LEGEND_BELOW_PX = 90


def _place_legend(p: Any, place: str) -> None:
    """The legend beside the plot (reports) or under it (the narrow side panel)."""
    legend = p.legend[0]
    if place == "below":
        legend.orientation = "horizontal"
        legend.ncols = 2
        legend.location = "left"  # centred, a two-column legend overflows a narrow plot's left edge
    # Moved, not copied: bokeh < 3.6 then sees two legends and refuses later legend_label glyphs.
    p.center = [r for r in p.center if r is not legend]
    p.add_layout(legend, place)


def timeline_view(profile: Profile, timeline: Timeline, device: Device, legend: str = "right") -> Any:
    import numpy as np  # bokeh's own dependency

    models, plotting, _ = _bokeh()
    keep = display_indices(timeline.live_bytes)
    recorded = detail_span(profile, device)
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

    data: dict[str, list] = {
        "t": t,
        "live": live,
        "op": [index(timeline.op, i) for i in keep],
        "layer": [index(timeline.layer, i) for i in keep],
        "phase": [timeline.phase[i] if i < len(timeline.phase) else -1 for i in keep],
    }
    cats = [c for c in CATEGORIES if c in timeline.by_category]
    source = models.ColumnDataSource(data)  # the line and its hover: one row per point
    # The areas as steps (memory holds until the next point: render/stairs.py).
    # float32 travels as base64, half the size of JSON numbers; the stacked
    # areas need no more precision (the hover reads the exact `live`).
    t_steps, stacked = as_steps(t, *([timeline.by_category[c][i] for i in keep] for c in cats))
    areas = models.ColumnDataSource({"t": t_steps, **{c: np.asarray(v, dtype=np.float32)
                                                       for c, v in zip(cats, stacked)}})
    # A loop with steps: every device's plot spans the whole cell, so they line up.
    span = {"x_range": (0.0, cell_end(profile))} if profile.steps or recorded else {}
    p = plotting.figure(
        height=300, sizing_mode="stretch_width", x_axis_label="seconds since the cell started",
        y_axis_label="bytes", tools="xpan,xwheel_zoom,box_zoom,reset,save", active_scroll="xwheel_zoom",
        title=f"{device.name}: live memory ({device.kind}, {device.source})", **span,
    )
    p.yaxis.formatter = _bytes_axis()
    if cats:
        p.varea_stack(stackers=cats, x="t", source=areas, color=[CATEGORY_COLORS[c] for c in cats],
                      legend_label=[category_label(c) for c in cats], alpha=0.85)
        p.legend.click_policy = "hide"
        _place_legend(p, legend)
    # A process (RSS) timeline is a line alone: its y axis then fits the data
    # instead of starting at 0, where the interpreter's own memory flattens it.
    p.step("t", "live", source=source, mode="after", color="#333333" if cats else _LINE, line_width=1.2)
    # The hover's renderer: BokehJS's Step glyph has no hit testing, a line does (drawn invisible).
    line = p.line("t", "live", source=source, line_alpha=0)
    label = models.CustomJSHover(args=dict(labels=list(timeline.labels)), code=JS_HOVER_LABEL)
    in_bytes = models.CustomJSHover(code=JS_HOVER_BYTES)
    phase = models.CustomJSHover(args=dict(names=list(PHASES)), code=JS_HOVER_PHASE)
    p.add_tools(models.HoverTool(
        renderers=[line], mode="vline",
        tooltips=[("time", "@t{0.000} s"), ("live", "@live{custom}"), ("op", "@op{custom}"),
                  ("layer", "@layer{custom}"), ("phase", "@phase{custom}")],
        formatters={"@live": in_bytes, "@op": label, "@layer": label, "@phase": phase},
    ))
    shaded = _shade_phases(p, timeline)
    # The peak, exact: the decimation keeps it.
    top = max(range(len(live)), key=live.__getitem__) if live else None
    if top is not None:
        # The allocator's counters can know a higher step past the detail: this is the detail's.
        what = "peak in detail" if recorded is not None and device.peak_bytes > live[top] else "peak"
        peak_kwargs = {"legend_label": f"{what} {fmt_bytes(live[top])}"} if cats else {}
        p.scatter([t[top]], [live[top]], size=9, color="#d62728", **peak_kwargs)
        p.add_layout(models.Span(location=t[top], dimension="height", line_color="#d62728",
                                 line_dash="dotted", line_width=1))
    if device.capacity_bytes and device.capacity_bytes <= 4 * max(live or [1]):
        # Drawn only when near enough to matter; the device table lists it always.
        p.add_layout(models.Span(location=device.capacity_bytes, dimension="width", line_color="#d62728",
                                 line_dash="dashed", line_width=1.5))
        p.add_layout(models.Span(location=0.85 * device.capacity_bytes, dimension="width",
                                 line_color="#ff7f0e", line_dash="dotted", line_width=1))
    detail = _mark_detail(p, profile, device, recorded)
    steps = _draw_steps(p, step_points(profile, timeline, device))
    if steps and not cats:
        _place_legend(p, legend)
    p.toolbar.logo = None
    shown = f"{len(t):,} of {timeline.recorded_points:,} recorded points" if timeline.recorded_points > len(t) \
        else f"{len(t):,} points"
    bands = "".join(
        f" <span style='background:{PHASE_SHADES[ph]}55;padding:0 4px'>{ph}</span>" for ph in shaded
    )
    note = models.Div(text=f"<span class='mp-muted'>{escape(shown)}; drag to pan, wheel to zoom, "
                           "click a legend entry to hide a kind" + (f"; shaded:{bands}" if bands else "")
                           + "".join(f"; {escape(x)}" for x in (steps, detail) if x) + "</span>")
    _, _, layouts = _bokeh()
    return layouts.column(p, note, sizing_mode="stretch_width")


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


def _mark_detail(p: Any, profile: Profile, device: Device, recorded: tuple[float, float] | None) -> str:
    """Hatch what an allocator did not record in detail (labelled at the
    bottom, where no line is drawn there); on the process's timeline, mark
    where the allocators' detail began and ended. The note's words."""
    models, _, _ = _bokeh()
    end = cell_end(profile)
    if recorded is not None:
        outside = _outside_detail(profile, device)
        for left, right in ((0.0, recorded[0]), (recorded[1], end)):
            if right - left <= FACT_ROUNDING_S:
                continue
            p.add_layout(models.BoxAnnotation(left=left, right=right, fill_color=UNRECORDED_SHADE, fill_alpha=0.12,
                                              hatch_pattern="/", hatch_color=UNRECORDED_SHADE, hatch_alpha=0.25,
                                              line_alpha=0, level="underlay"))
            p.add_layout(models.Label(x=left, y=0, x_offset=4, y_offset=4, text="not recorded in detail",
                                      text_font_size="11px", text_baseline="bottom", text_color="#555555",
                                      background_fill_color="#ffffff", background_fill_alpha=0.8))
        return "hatched: not recorded in detail" + (f" ({outside})" if outside else "")
    if device.kind != "process":
        return ""
    spans = [span for d in profile.devices if (span := detail_span(profile, d)) is not None]
    marks = sorted({round(x, 6) for start, stop in spans for x in (start, stop) if FACT_ROUNDING_S < x < end})
    for x in marks:
        p.add_layout(models.Span(location=x, dimension="height", line_color=UNRECORDED_SHADE, line_dash="dashed",
                                 line_width=1.2))
    return "dashed: where the allocator's detail began or ended" if marks else ""


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
            points.append(StepPoint(s, _peak_time(timeline, s, s.rss_peak_bytes), s.rss_peak_bytes, s.rss_end_bytes,
                                    False))
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


def _draw_steps(p: Any, points: list[StepPoint]) -> str:
    """A point per step (per run of steps past STEP_POINTS, each run's
    highest): filled for the steps recorded in detail, hollow for those
    measured by their boundaries. The note's words."""
    if not points:
        return ""
    models, _, _ = _bokeh()
    groups = [[pt for pt in points if pt.step.detailed], [pt for pt in points if not pt.step.detailed]]
    budgets = _step_budget(len(groups[0]), len(groups[1]))
    renderers, shown = [], 0
    styles = (("circle", STEP_DETAILED, STEP_DETAILED, "steps in detail"),
              ("triangle", STEP_BOUNDARY, "#ffffff", "steps, boundaries only"))
    for group, budget, (marker, color, fill, name) in zip(groups, budgets, styles):
        if not group:
            continue
        rows = [(group[k], group[a].step.index, group[b].step.index)
                for k, a, b in highest_per_run([pt.peak for pt in group], budget)]
        shown += len(rows)
        source = models.ColumnDataSource({
            "t": [round(pt.t, 6) for pt, _, _ in rows], "peak": [pt.peak for pt, _, _ in rows],
            "step": [pt.step.index for pt, _, _ in rows], "label": [_step_label(pt, a, b) for pt, a, b in rows],
        })
        renderers.append(p.scatter("t", "peak", source=source, marker=marker, size=7, line_color=color,
                                   fill_color=fill, line_width=1.5, legend_label=name))
    p.add_tools(models.HoverTool(renderers=renderers, tooltips=[("", "@label")]))
    return f"{shown:,} step points" + (f" for {len(points):,} steps (the highest of each run)"
                                       if shown < len(points) else "")


def _shade_phases(p: Any, timeline: Timeline) -> list[str]:
    """Bands behind the plot where backward and optimizer steps ran (from the
    stored timeline, so short phases are not lost to the display decimation)."""
    models, _, _ = _bokeh()
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
    if not bands or len(bands) > MAX_PHASE_BANDS:
        return []
    # one glyph for all bands: a BoxAnnotation each cost ~6 models and ~5 ms to open per band
    p.vstrip(x0=[left for _, left, _ in bands], x1=[right for _, _, right in bands],
             fill_color=[PHASE_SHADES[name] for name, _, _ in bands], fill_alpha=0.13, line_alpha=0, level="underlay")
    return sorted({name for name, _, _ in bands}, key=list(PHASE_SHADES).index)


def _depths(profile: Profile) -> dict[str, int]:
    parents = {layer.name: layer.parent for layer in profile.layers}
    depth: dict[str, int] = {}
    for name in parents:
        d, seen, cur = 0, set(), parents.get(name)
        while cur is not None and cur in parents and cur not in seen:
            seen.add(cur)
            d += 1
            cur = parents.get(cur)
        depth[name] = d
    return depth


def layers_view(profile: Profile, legend: str = "right") -> Any:
    models, plotting, layouts = _bokeh()
    depth = _depths(profile)

    def weight(layer) -> int:
        return sum(getattr(layer, f"{k}_bytes") for k in LAYER_KINDS)

    # Ordered by what the bars draw (a layer holding little at the peak but
    # allocating much is a long bar); what each held at the peak is in the hover.
    rows = sorted(profile.layers, key=lambda layer: (-weight(layer), -layer.peak_bytes))
    rows = [layer for layer in rows if weight(layer) or layer.peak_bytes]
    hidden = max(0, len(rows) - MAX_LAYERS)
    rows = rows[:MAX_LAYERS]
    if not rows:
        return models.Div(text="<p>No layer was seen in this profile.</p>")
    names = [layer.name for layer in reversed(rows)]  # the largest on top
    full: dict[str, list[Any]] = {"layer": names, "depth": [depth.get(n, 0) for n in names]}
    by_name = {layer.name: layer for layer in rows}
    for k in LAYER_KINDS:
        full[k] = [getattr(by_name[n], f"{k}_bytes") for n in names]
    full["peak_text"] = [fmt_bytes(by_name[n].peak_bytes) for n in names]
    full["line_text"] = [line_label(by_name[n].line) for n in names]
    for k in LAYER_KINDS:
        full[f"{k}_text"] = [fmt_bytes(v) for v in full[k]]
    source = models.ColumnDataSource(dict(full))
    everything = models.ColumnDataSource(dict(full))
    p = plotting.figure(
        # a legend below the plot takes its height from the plot's: add its three rows
        y_range=models.FactorRange(*names), sizing_mode="stretch_width",
        height=max(180, 22 * len(names) + 60) + (LEGEND_BELOW_PX if legend == "below" else 0),
        tools="xwheel_zoom,xpan,reset,save", title="Layers, longest bar first", x_axis_label="bytes",
    )
    p.hbar_stack(list(LAYER_KINDS), y="layer", height=0.8, source=source,
                 color=[CATEGORY_COLORS[k] for k in LAYER_KINDS],
                 legend_label=[category_label(k) for k in LAYER_KINDS])
    p.xaxis.formatter = _bytes_axis()
    p.legend.click_policy = "hide"
    _place_legend(p, legend)
    p.toolbar.logo = None
    p.add_tools(models.HoverTool(tooltips=[
        ("layer", "@layer"), ("held at the peak", "@peak_text"),
        *[(category_label(k), f"@{k}_text") for k in LAYER_KINDS], ("allocated most on", "@line_text"),
    ]))
    max_depth = max(full["depth"])
    options = ["all depths"] + [f"depth ≤ {d}" for d in range(max_depth + 1)]
    select = models.Select(title="Show layers", value="all depths", options=options, width=180)
    select.js_on_change("value", models.CustomJS(args=dict(src=source, all=everything, yr=p.y_range),
                                                 code=JS_LAYER_DEPTH))
    # The title stays one short line at any width; what the bars are, here, wraps.
    what = models.Div(text="<p class='mp-muted'>Parameters, gradients and optimizer state each layer holds; "
                           "activations and temporaries it allocated over the cell. Hover: what it held at the "
                           "peak.</p>", sizing_mode="stretch_width")
    parts = [what, select, p] if max_depth > 0 else [what, p]
    if hidden:
        parts.append(models.Div(text=f"<p class='mp-muted'>and {hidden:,} more layers</p>"))
    parts.append(_layers_table(rows))
    return layouts.column(*parts, sizing_mode="stretch_width")


def _layers_table(rows: list) -> Any:
    """The layers' figures as a sortable table, with the cell line each
    allocated the most on."""
    models, _, _ = _bokeh()
    source = models.ColumnDataSource({
        "layer": [r.name for r in rows], "type": [r.type for r in rows], "peak": [r.peak_bytes for r in rows],
        **{k: [getattr(r, f"{k}_bytes") for r in rows] for k in LAYER_KINDS},
        "line": _line_numbers([r.line for r in rows]),
    })
    fmt = _bytes_cells()
    columns = [models.TableColumn(field="layer", title="layer", width=260),
               models.TableColumn(field="type", title="type", width=100),
               models.TableColumn(field="peak", title="at the peak", formatter=fmt, width=90),
               *[models.TableColumn(field=k, title=category_label(k), formatter=fmt, width=90) for k in LAYER_KINDS],
               models.TableColumn(field="line", title="line", formatter=_line_cells(), width=50)]
    return models.DataTable(source=source, columns=columns, height=min(40 + 25 * len(rows), 420),
                            sizing_mode="stretch_width", index_position=None, sortable=True)


def ops_view(profile: Profile) -> Any:
    models, _, layouts = _bokeh()
    ops = sorted(profile.ops, key=lambda o: -o.allocated_bytes)
    hidden = max(0, len(ops) - MAX_OPS)
    ops = ops[:MAX_OPS]
    if not ops:
        return models.Div(text="<p>No op was recorded in this profile.</p>")
    source = models.ColumnDataSource({
        "name": [o.name for o in ops], "device": [o.device for o in ops], "calls": [o.calls for o in ops],
        "allocated": [o.allocated_bytes for o in ops], "self": [o.self_allocated_bytes for o in ops],
        "freed": [o.freed_bytes for o in ops], "net": [o.net_bytes for o in ops],
        "max_alloc": [o.max_alloc_bytes for o in ops], "shapes": [" ".join(o.input_shapes) for o in ops],
        "line": _line_numbers([o.line for o in ops]),
    })
    fmt = _bytes_cells()
    columns = [
        models.TableColumn(field="name", title="op", width=320),
        models.TableColumn(field="device", title="device", width=70),
        models.TableColumn(field="calls", title="calls", width=60,
                           formatter=models.NumberFormatter(format="0,0", text_align="right")),
        models.TableColumn(field="allocated", title="allocated (incl. children)", formatter=fmt, width=110),
        models.TableColumn(field="self", title="self", formatter=fmt, width=90),
        models.TableColumn(field="freed", title="freed", formatter=fmt, width=90),
        models.TableColumn(field="net", title="net", formatter=fmt, width=90),
        models.TableColumn(field="max_alloc", title="largest block", formatter=fmt, width=90),
        models.TableColumn(field="line", title="line", formatter=_line_cells(), width=50),
        models.TableColumn(field="shapes", title="shapes", width=200),
    ]
    view = models.CDSView(filter=models.IndexFilter(list(range(len(ops)))))
    table = models.DataTable(source=source, columns=columns, view=view, height=420, sizing_mode="stretch_width",
                             index_position=None, sortable=True)
    search = models.TextInput(title="Filter ops (part of the name)", placeholder="e.g. matmul", width=300)
    search.js_on_change("value_input", models.CustomJS(args=dict(src=source, view=view), code=JS_OPS_FILTER))
    parts = [search, table]
    if hidden:
        parts.append(models.Div(text=f"<p class='mp-muted'>and {hidden:,} more ops (the table lists the "
                                     f"{MAX_OPS} that allocated most)</p>"))
    return layouts.column(*parts, sizing_mode="stretch_width")


def _bars(title: str, items: list[tuple[str, int]], colors: list[str]) -> Any:
    models, plotting, _ = _bokeh()
    names = [n for n, _ in reversed(items)]
    source = models.ColumnDataSource({
        "name": names, "bytes": [b for _, b in reversed(items)],
        "text": [fmt_bytes(b) for _, b in reversed(items)], "color": list(reversed(colors)),
    })
    p = plotting.figure(y_range=models.FactorRange(*names), height=max(140, 24 * len(names) + 60),
                        sizing_mode="stretch_width", tools="save", title=title, x_axis_label="bytes")
    p.hbar(y="name", right="bytes", height=0.8, color="color", source=source)
    p.xaxis.formatter = _bytes_axis()
    p.add_tools(models.HoverTool(tooltips=[("", "@name"), ("bytes", "@text")]))
    p.toolbar.logo = None
    return p


def peak_view(profile: Profile) -> Any:
    models, _, layouts = _bokeh()
    peak = profile.peak
    if peak is None:
        return models.Div(text="<p>No peak: nothing was measured.</p>")
    source_text = profile.line_text(peak.line)
    head = models.Div(text=(
        f"<p>Peak <b>{fmt_bytes(peak.bytes)}</b> on {escape(peak.device)} at {fmt_seconds(peak.time_s)}"
        + (f", during op <code>{escape(peak.op)}</code>" if peak.op else "")
        + (f" in layer <code>{escape(peak.layer)}</code>" if peak.layer else "")
        + (f", {escape(line_label(peak.line))}" if line_label(peak.line) else "")
        + (f" <code>{escape(source_text)}</code>" if source_text else "") + "</p>"
    ), sizing_mode="stretch_width")
    parts: list[Any] = [head]
    if peak.by_category:
        cats = [(category_label(c), b) for c, b in peak.by_category.items()]
        colors = [CATEGORY_COLORS.get(c, "#999") for c in peak.by_category]
        parts.append(_bars("Alive at the peak, by kind", cats, colors))
    by_layer = placed_by_layer(profile)
    if by_layer:
        top = list(by_layer.items())[:15]
        parts.append(_bars("Alive at the peak, by layer (largest 15)", top, [_LINE] * len(top)))
        parts.append(models.Div(text="<p class='mp-muted'>Memory made outside layers is named by its line and "
                                     "op.</p>", sizing_mode="stretch_width"))
    if peak.tensors:
        tensors = peak.tensors[:MAX_TENSORS]
        source = models.ColumnDataSource({
            "bytes": [t.bytes for t in tensors], "size": [tensor_bytes_text(t) for t in tensors],
            "kind": [category_label(t.category) for t in tensors], "shape": [shape_text(t) for t in tensors],
            "dtype": [t.dtype for t in tensors], "op": [t.op or "" for t in tensors],
            "layer": [t.layer or "" for t in tensors], "device": [t.device or "" for t in tensors],
            "line": [line_label(t.line) for t in tensors],
        })
        fmt = _bytes_cells()
        # "size" says when the allocator's block is larger than the tensor.
        widths = {"kind": 80, "shape": 110, "dtype": 60, "op": 150, "layer": 110, "device": 50, "line": 90}
        columns = [models.TableColumn(field="bytes", title="bytes", formatter=fmt, width=70),
                   models.TableColumn(field="size", title="size (tensor / allocator block)", width=280)] + [
            models.TableColumn(field=f, title=f, width=w) for f, w in widths.items()
        ]
        parts.append(models.Div(text="<b>Largest tensors alive at the peak</b>"))
        parts.append(models.DataTable(source=source, columns=columns, height=min(40 + 25 * len(tensors), 420),
                                      sizing_mode="stretch_width", index_position=None))
    return layouts.column(*parts, sizing_mode="stretch_width")


def lines_view(profile: Profile) -> Any:
    """The cell's source with a bar per line: bytes alive at the peak by kind,
    and allocated (the %mprun/scalene view, at the peak)."""
    models, _, _ = _bokeh()
    listing = full_lines(profile)
    if not listing:
        return models.Div(text="<p>No line of the cell was recorded in this profile.</p>",
                          sizing_mode="stretch_width")
    return models.Div(text=listing, sizing_mode="stretch_width")


def suggestions_view(profile: Profile) -> Any:
    models, _, _ = _bokeh()
    if not profile.suggestions:
        return models.Div(text="<p>No suggestion for this profile.</p>", sizing_mode="stretch_width")
    items = []
    for s in profile.suggestions:
        saving = saving_line(s, profile.peak_bytes)
        items.append(
            f"<li><b>{escape(s.title)}</b>{' — ' + escape(saving) if saving else ''}"
            f"<div class='mp-muted'>{escape(s.evidence)}</div><div class='mp-muted'>{escape(how_to_apply(s))}</div>"
            f"<pre><code>{escape(s.code)}</code></pre></li>"
        )
    return models.Div(text=f"<ol class='mp-suggestions'>{''.join(items)}</ol>", sizing_mode="stretch_width")


def timelines_view(profile: Profile, legend: str = "right") -> Any:
    """Every device's timeline that has points, one under the other, the peak
    device's first (the report's tab and the panel's view)."""
    models, _, layouts = _bokeh()
    devices = {d.name: d for d in profile.devices}
    peak_device = profile.peak_device.name if profile.peak_device else ""
    shown = sorted((tl for tl in profile.timelines if tl.device in devices and tl.t),
                   key=lambda tl: tl.device != peak_device)
    plots = [timeline_view(profile, tl, devices[tl.device], legend=legend) for tl in shown]
    if not plots:
        return models.Div(text="<p>No timeline was recorded.</p>")
    return layouts.column(*plots, sizing_mode="stretch_width")


def ranks_view(info) -> Any:
    from memprofile.render.ranks import ranks_view as view

    return view(info)


def views(profile: Profile) -> Any:
    """All views as tabs: timeline (one per device), peak, lines, layers, ops, suggestions."""
    models, _, layouts = _bokeh()
    tabs = [
        *([models.TabPanel(child=ranks_view(profile.merged), title=f"Ranks ({len(profile.merged.ranks)})")]
          if profile.merged else []),
        models.TabPanel(child=timelines_view(profile), title="Timeline"),
        models.TabPanel(child=peak_view(profile), title="Peak"),
        models.TabPanel(child=lines_view(profile), title="Lines"),
        models.TabPanel(child=layers_view(profile), title=f"Layers ({len(profile.layers)})"),
        models.TabPanel(child=ops_view(profile), title=f"Ops ({len(profile.ops)})"),
        models.TabPanel(child=suggestions_view(profile), title=f"Suggestions ({len(profile.suggestions)})"),
    ]
    return models.Tabs(tabs=tabs, sizing_mode="stretch_width")
