"""Interactive bokeh views of a Profile: timeline, layers, ops, peak anatomy, suggestions.

Each function takes a Profile and returns a bokeh model; `views` lays them out
as tabs. What they draw is prepared as plain data (render/timeline_data.py,
render/breakdown_data.py) and coloured from render/palette.py; here it becomes
bokeh models. Nothing here touches a framework. Text from user code (op and
layer names, messages) reaches the page only as data (canvas text, table cells
and tooltips, which bokeh sets as text) or through `html.escape` in Divs.
"""

from __future__ import annotations

from typing import Any

from memprofile.model.profile import PHASES, Device, LayerStat, Profile, Timeline
from memprofile.render.breakdown_data import (
    LAYER_KINDS,
    MAX_OPS,
    MAX_PEAK_LAYERS,
    Columns,
    bar_columns,
    depth_options,
    layer_bars,
    layer_rows,
    layer_table,
    op_rows,
    op_table,
    peak_headline,
    peak_kinds,
    peak_layers,
    suggestions_html,
    tensor_table,
)
from memprofile.render.html import full_lines
from memprofile.render.palette import (
    CATEGORY_COLORS,
    HEADROOM,
    HOLLOW,
    LABEL_BACKGROUND,
    LABEL_TEXT,
    PEAK,
    PHASE_SHADES,
    SERIES,
    STEP_BOUNDARY,
    STEP_DETAILED,
    TOTAL_LINE,
    UNRECORDED_SHADE,
)
from memprofile.render.timeline_data import (
    StepPoint,
    TimelinePoints,
    detail_marks,
    detail_span,
    peak_label,
    phase_bands,
    shaded_phases,
    shown_capacity,
    shown_timelines,
    step_points,
    step_series,
    steps_note,
    timeline_note,
    timeline_points,
    x_range,
)
from memprofile.units import category_label

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
JS_CELL_BYTES = (
    '<div style="text-align:right"><%= ('
    + _FMT_BYTES_JS.replace("function fmt(b)", "function (b)")
    + ")(value) %></div>"
)
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
TRUSTED_JS = (
    JS_TICK_BYTES,
    JS_HOVER_BYTES,
    JS_HOVER_LABEL,
    JS_HOVER_PHASE,
    JS_CELL_BYTES,
    JS_LAYER_DEPTH,
    JS_OPS_FILTER,
)


def _bytes_axis() -> Any:
    models, _, _ = _bokeh()
    return models.CustomJSTickFormatter(code=JS_TICK_BYTES)


def _bytes_cells() -> Any:
    """A table cell showing a byte count in binary units; the column still
    sorts by the number. The value is a number, so the template inserts no
    text from user code."""
    models, _, _ = _bokeh()
    return models.HTMLTemplateFormatter(template=JS_CELL_BYTES)


def _line_cells() -> Any:
    models, _, _ = _bokeh()
    return models.NumberFormatter(format="0", nan_format="", text_align="right")


def _table_source(columns: Columns) -> Any:
    """A table's ColumnDataSource; its line numbers (NaN where unknown) as
    floats, which the column sorts by number and shows blank where NaN."""
    import numpy as np  # bokeh's own dependency

    models, _, _ = _bokeh()
    data: dict[str, Any] = dict(columns)
    data["line"] = np.asarray(columns["line"], dtype=np.float64)
    return models.ColumnDataSource(data)


def _bokeh():
    import bokeh.layouts as layouts
    import bokeh.models as models
    import bokeh.plotting as plotting

    return models, plotting, layouts


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
    models, plotting, layouts = _bokeh()
    recorded = detail_span(profile, device)
    points = timeline_points(timeline, recorded)
    span = x_range(profile, recorded)
    p = plotting.figure(
        height=300,
        sizing_mode="stretch_width",
        x_axis_label="seconds since the cell started",
        y_axis_label="bytes",
        tools="xpan,xwheel_zoom,box_zoom,reset,save",
        active_scroll="xwheel_zoom",
        title=f"{device.name}: live memory ({device.kind}, {device.source})",
        **({"x_range": span} if span else {}),
    )
    p.yaxis.formatter = _bytes_axis()
    _draw_memory(p, timeline, points, legend)
    shaded = _shade_phases(p, timeline)
    _mark_peak(p, points, peak_label(points, device, recorded))
    capacity = shown_capacity(device, points.live)
    if capacity:
        p.add_layout(
            models.Span(location=capacity, dimension="width", line_color=PEAK, line_dash="dashed", line_width=1.5)
        )
        p.add_layout(
            models.Span(
                location=0.85 * capacity, dimension="width", line_color=HEADROOM, line_dash="dotted", line_width=1
            )
        )
    detail = _mark_detail(p, profile, device, recorded)
    steps = _draw_steps(p, step_points(profile, timeline, device))
    if steps and not points.kinds:
        _place_legend(p, legend)
    p.toolbar.logo = None
    note = models.Div(text=timeline_note(points, timeline.recorded_points, shaded, steps, detail))
    return layouts.column(p, note, sizing_mode="stretch_width")


def _draw_memory(p: Any, timeline: Timeline, points: TimelinePoints, legend: str) -> None:
    """The kinds stacked as areas, the live bytes as a step line over them,
    and the hover (time, live bytes, op, layer, phase)."""
    import numpy as np  # bokeh's own dependency

    models, _, _ = _bokeh()
    source = models.ColumnDataSource(points.line)  # the line and its hover: one row per point
    # float32 travels as base64, half the size of JSON numbers; the stacked
    # areas need no more precision (the hover reads the exact `live`).
    areas = models.ColumnDataSource(
        {"t": points.area_t, **{c: np.asarray(v, dtype=np.float32) for c, v in zip(points.kinds, points.areas)}}
    )
    cats = points.kinds
    if cats:
        p.varea_stack(
            stackers=cats,
            x="t",
            source=areas,
            color=[CATEGORY_COLORS[c] for c in cats],
            legend_label=[category_label(c) for c in cats],
            alpha=0.85,
        )
        p.legend.click_policy = "hide"
        _place_legend(p, legend)
    # A process (RSS) timeline is a line alone: its y axis then fits the data
    # instead of starting at 0, where the interpreter's own memory flattens it.
    p.step("t", "live", source=source, mode="after", color=TOTAL_LINE if cats else SERIES, line_width=1.2)
    # The hover's renderer: BokehJS's Step glyph has no hit testing, a line does (drawn invisible).
    line = p.line("t", "live", source=source, line_alpha=0)
    label = models.CustomJSHover(args=dict(labels=list(timeline.labels)), code=JS_HOVER_LABEL)
    in_bytes = models.CustomJSHover(code=JS_HOVER_BYTES)
    phase = models.CustomJSHover(args=dict(names=list(PHASES)), code=JS_HOVER_PHASE)
    p.add_tools(
        models.HoverTool(
            renderers=[line],
            mode="vline",
            tooltips=[
                ("time", "@t{0.000} s"),
                ("live", "@live{custom}"),
                ("op", "@op{custom}"),
                ("layer", "@layer{custom}"),
                ("phase", "@phase{custom}"),
            ],
            formatters={"@live": in_bytes, "@op": label, "@layer": label, "@phase": phase},
        )
    )


def _mark_peak(p: Any, points: TimelinePoints, label: str) -> None:
    """The peak, exact (the decimation keeps it): a point, in the legend
    where the plot has one (the kinds'), and a dotted line down to the axis."""
    if points.top is None:
        return
    models, _, _ = _bokeh()
    t, live = points.t[points.top], points.live[points.top]
    p.scatter([t], [live], size=9, color=PEAK, **({"legend_label": label} if points.kinds else {}))
    p.add_layout(models.Span(location=t, dimension="height", line_color=PEAK, line_dash="dotted", line_width=1))


def _mark_detail(p: Any, profile: Profile, device: Device, recorded: tuple[float, float] | None) -> str:
    """Hatch what an allocator did not record in detail (labelled at the
    bottom, where no line is drawn there); on the process's timeline, mark
    where the allocators' detail began and ended. The note's words."""
    models, _, _ = _bokeh()
    marks = detail_marks(profile, device, recorded)
    for left, right in marks.hatched:
        p.add_layout(
            models.BoxAnnotation(
                left=left,
                right=right,
                fill_color=UNRECORDED_SHADE,
                fill_alpha=0.12,
                hatch_pattern="/",
                hatch_color=UNRECORDED_SHADE,
                hatch_alpha=0.25,
                line_alpha=0,
                level="underlay",
            )
        )
        p.add_layout(
            models.Label(
                x=left,
                y=0,
                x_offset=4,
                y_offset=4,
                text="not recorded in detail",
                text_font_size="11px",
                text_baseline="bottom",
                text_color=LABEL_TEXT,
                background_fill_color=LABEL_BACKGROUND,
                background_fill_alpha=0.8,
            )
        )
    for x in marks.edges:
        p.add_layout(
            models.Span(location=x, dimension="height", line_color=UNRECORDED_SHADE, line_dash="dashed", line_width=1.2)
        )
    return marks.note


def _draw_steps(p: Any, points: list[StepPoint]) -> str:
    """A point per step (per run of steps past STEP_POINTS, each run's
    highest): filled for the steps recorded in detail, hollow for those
    measured by their boundaries. The note's words."""
    if not points:
        return ""
    models, _, _ = _bokeh()
    styles = {
        True: ("circle", STEP_DETAILED, STEP_DETAILED, "steps in detail"),
        False: ("triangle", STEP_BOUNDARY, HOLLOW, "steps, boundaries only"),
    }
    series = step_series(points)
    renderers = []
    for s in series:
        marker, color, fill, name = styles[s.detailed]
        renderers.append(
            p.scatter(
                "t",
                "peak",
                source=models.ColumnDataSource(s.data),
                marker=marker,
                size=7,
                line_color=color,
                fill_color=fill,
                line_width=1.5,
                legend_label=name,
            )
        )
    p.add_tools(models.HoverTool(renderers=renderers, tooltips=[("", "@label")]))
    return steps_note(points, series)


def _shade_phases(p: Any, timeline: Timeline) -> list[str]:
    """Bands behind the plot where backward and optimizer steps ran; the phases shaded."""
    bands = phase_bands(timeline)
    if not bands:
        return []
    # one glyph for all bands: a BoxAnnotation each cost ~6 models and ~5 ms to open per band
    p.vstrip(
        x0=[left for _, left, _ in bands],
        x1=[right for _, _, right in bands],
        fill_color=[PHASE_SHADES[name] for name, _, _ in bands],
        fill_alpha=0.13,
        line_alpha=0,
        level="underlay",
    )
    return shaded_phases(bands)


def layers_view(profile: Profile, legend: str = "right") -> Any:
    models, plotting, layouts = _bokeh()
    rows, hidden = layer_rows(profile)
    if not rows:
        return models.Div(text="<p>No layer was seen in this profile.</p>")
    full = layer_bars(profile, rows)
    names = full["layer"]
    source = models.ColumnDataSource(dict(full))
    everything = models.ColumnDataSource(dict(full))
    p = plotting.figure(
        # a legend below the plot takes its height from the plot's: add its three rows
        y_range=models.FactorRange(*names),
        sizing_mode="stretch_width",
        height=max(180, 22 * len(names) + 60) + (LEGEND_BELOW_PX if legend == "below" else 0),
        tools="xwheel_zoom,xpan,reset,save",
        title="Layers, longest bar first",
        x_axis_label="bytes",
    )
    p.hbar_stack(
        list(LAYER_KINDS),
        y="layer",
        height=0.8,
        source=source,
        color=[CATEGORY_COLORS[k] for k in LAYER_KINDS],
        legend_label=[category_label(k) for k in LAYER_KINDS],
    )
    p.xaxis.formatter = _bytes_axis()
    p.legend.click_policy = "hide"
    _place_legend(p, legend)
    p.toolbar.logo = None
    p.add_tools(
        models.HoverTool(
            tooltips=[
                ("layer", "@layer"),
                ("held at the peak", "@peak_text"),
                *[(category_label(k), f"@{k}_text") for k in LAYER_KINDS],
                ("allocated most on", "@line_text"),
            ]
        )
    )
    max_depth = max(full["depth"])
    options = depth_options(max_depth)
    select = models.Select(title="Show layers", value="all depths", options=options, width=180)
    select.js_on_change(
        "value", models.CustomJS(args=dict(src=source, all=everything, yr=p.y_range), code=JS_LAYER_DEPTH)
    )
    # The title stays one short line at any width; what the bars are, here, wraps.
    what = models.Div(
        text="<p class='mp-muted'>Parameters, gradients and optimizer state each layer holds; "
        "activations and temporaries it allocated over the cell. Hover: what it held at the "
        "peak.</p>",
        sizing_mode="stretch_width",
    )
    parts = [what, select, p] if max_depth > 0 else [what, p]
    if hidden:
        parts.append(models.Div(text=f"<p class='mp-muted'>and {hidden:,} more layers</p>"))
    parts.append(_layers_table(rows))
    return layouts.column(*parts, sizing_mode="stretch_width")


def _layers_table(rows: list[LayerStat]) -> Any:
    """The layers' figures as a sortable table, with the cell line each
    allocated the most on."""
    models, _, _ = _bokeh()
    source = _table_source(layer_table(rows))
    fmt = _bytes_cells()
    columns = [
        models.TableColumn(field="layer", title="layer", width=260),
        models.TableColumn(field="type", title="type", width=100),
        models.TableColumn(field="peak", title="at the peak", formatter=fmt, width=90),
        *[models.TableColumn(field=k, title=category_label(k), formatter=fmt, width=90) for k in LAYER_KINDS],
        models.TableColumn(field="line", title="line", formatter=_line_cells(), width=50),
    ]
    return models.DataTable(
        source=source,
        columns=columns,
        height=min(40 + 25 * len(rows), 420),
        sizing_mode="stretch_width",
        index_position=None,
        sortable=True,
    )


def ops_view(profile: Profile) -> Any:
    models, _, layouts = _bokeh()
    ops, hidden = op_rows(profile)
    if not ops:
        return models.Div(text="<p>No op was recorded in this profile.</p>")
    source = _table_source(op_table(ops))
    fmt = _bytes_cells()
    columns = [
        models.TableColumn(field="name", title="op", width=320),
        models.TableColumn(field="device", title="device", width=70),
        models.TableColumn(
            field="calls", title="calls", width=60, formatter=models.NumberFormatter(format="0,0", text_align="right")
        ),
        models.TableColumn(field="allocated", title="allocated (incl. children)", formatter=fmt, width=110),
        models.TableColumn(field="self", title="self", formatter=fmt, width=90),
        models.TableColumn(field="freed", title="freed", formatter=fmt, width=90),
        models.TableColumn(field="net", title="net", formatter=fmt, width=90),
        models.TableColumn(field="max_alloc", title="largest block", formatter=fmt, width=90),
        models.TableColumn(field="line", title="line", formatter=_line_cells(), width=50),
        models.TableColumn(field="shapes", title="shapes", width=200),
    ]
    view = models.CDSView(filter=models.IndexFilter(list(range(len(ops)))))
    table = models.DataTable(
        source=source,
        columns=columns,
        view=view,
        height=420,
        sizing_mode="stretch_width",
        index_position=None,
        sortable=True,
    )
    search = models.TextInput(title="Filter ops (part of the name)", placeholder="e.g. matmul", width=300)
    search.js_on_change("value_input", models.CustomJS(args=dict(src=source, view=view), code=JS_OPS_FILTER))
    parts = [search, table]
    if hidden:
        parts.append(
            models.Div(
                text=f"<p class='mp-muted'>and {hidden:,} more ops (the table lists the "
                f"{MAX_OPS} that allocated most)</p>"
            )
        )
    return layouts.column(*parts, sizing_mode="stretch_width")


def _bars(title: str, items: list[tuple[str, int]], colors: list[str]) -> Any:
    models, plotting, _ = _bokeh()
    source = models.ColumnDataSource(bar_columns(items, colors))
    names = source.data["name"]
    p = plotting.figure(
        y_range=models.FactorRange(*names),
        height=max(140, 24 * len(names) + 60),
        sizing_mode="stretch_width",
        tools="save",
        title=title,
        x_axis_label="bytes",
    )
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
    parts: list[Any] = [models.Div(text=peak_headline(profile, peak), sizing_mode="stretch_width")]
    if peak.by_category:
        parts.append(_bars("Alive at the peak, by kind", *peak_kinds(peak)))
    by_layer, colors = peak_layers(profile)
    if by_layer:
        parts.append(_bars(f"Alive at the peak, by layer (largest {MAX_PEAK_LAYERS})", by_layer, colors))
        parts.append(
            models.Div(
                text="<p class='mp-muted'>Memory made outside layers is named by its line and op.</p>",
                sizing_mode="stretch_width",
            )
        )
    if peak.tensors:
        source = models.ColumnDataSource(tensor_table(peak))
        fmt = _bytes_cells()
        widths = {"kind": 80, "shape": 110, "dtype": 60, "op": 150, "layer": 110, "device": 50, "line": 90}
        columns = [
            models.TableColumn(field="bytes", title="bytes", formatter=fmt, width=70),
            models.TableColumn(field="size", title="size (tensor / allocator block)", width=280),
        ] + [models.TableColumn(field=f, title=f, width=w) for f, w in widths.items()]
        parts.append(models.Div(text="<b>Largest tensors alive at the peak</b>"))
        parts.append(
            models.DataTable(
                source=source,
                columns=columns,
                height=min(40 + 25 * len(source.data["bytes"]), 420),
                sizing_mode="stretch_width",
                index_position=None,
            )
        )
    return layouts.column(*parts, sizing_mode="stretch_width")


def lines_view(profile: Profile) -> Any:
    """The cell's source with a bar per line: bytes alive at the peak by kind,
    and allocated (the %mprun/scalene view, at the peak)."""
    models, _, _ = _bokeh()
    listing = full_lines(profile)
    if not listing:
        return models.Div(text="<p>No line of the cell was recorded in this profile.</p>", sizing_mode="stretch_width")
    return models.Div(text=listing, sizing_mode="stretch_width")


def suggestions_view(profile: Profile) -> Any:
    models, _, _ = _bokeh()
    if not profile.suggestions:
        return models.Div(text="<p>No suggestion for this profile.</p>", sizing_mode="stretch_width")
    return models.Div(text=suggestions_html(profile), sizing_mode="stretch_width")


def timelines_view(profile: Profile, legend: str = "right") -> Any:
    """Every device's timeline that has points, one under the other, the peak
    device's first (the report's tab and the panel's view)."""
    models, _, layouts = _bokeh()
    plots = [timeline_view(profile, tl, device, legend=legend) for tl, device in shown_timelines(profile)]
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
        *(
            [models.TabPanel(child=ranks_view(profile.merged), title=f"Ranks ({len(profile.merged.ranks)})")]
            if profile.merged
            else []
        ),
        models.TabPanel(child=timelines_view(profile), title="Timeline"),
        models.TabPanel(child=peak_view(profile), title="Peak"),
        models.TabPanel(child=lines_view(profile), title="Lines"),
        models.TabPanel(child=layers_view(profile), title=f"Layers ({len(profile.layers)})"),
        models.TabPanel(child=ops_view(profile), title=f"Ops ({len(profile.ops)})"),
        models.TabPanel(child=suggestions_view(profile), title=f"Suggestions ({len(profile.suggestions)})"),
    ]
    return models.Tabs(tabs=tabs, sizing_mode="stretch_width")
