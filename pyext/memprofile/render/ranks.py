"""A merged profile's ranks (model MergeInfo): as text, as an HTML table
and as a bokeh view (each rank's peak by kind of memory, and every rank's
timeline on one time axis), for the CLI, the report and the panel alike.

Sized for hundreds of ranks: tables list the highest ranks and the lowest;
the timeline view draws each rank's reduced timeline (a few hundred points)
and the top ranks' full ones, hidden until their legend entry is clicked.
Their points travel as float32 (base64, half the size of JSON numbers: a
128-rank report's timelines 0.5 MB less); the plot has no hover to need more.
"""

from __future__ import annotations

from html import escape
from typing import Any

from memprofile.model.profile import CATEGORIES, MergeInfo, RankSummary
from memprofile.render.palette import CATEGORY_COLORS, OTHER_RANKS, PEAK, RANK_SERIES
from memprofile.render.table import Column, html_table
from memprofile.units import category_label, fmt_bytes, fmt_seconds

_CAPTION = (
    "Each rank's peak, by kind of memory (highest first); process: its resident peak over the whole run; "
    "*: it peaked outside its detailed steps"
)
#: Ranks listed in tables: the highest ones, then the lowest.
TABLE_RANKS = 12
_RIGHT = "text-align:right"


def headline(info: MergeInfo) -> str:
    top, low = info.summary_of(info.highest), info.summary_of(info.lowest)
    where = f"{info.backend}, " if info.backend else ""
    hosts = f"{info.hosts} host{'s' if info.hosts != 1 else ''}"
    return (
        f"{len(info.ranks)} of {info.world_size} ranks ({where}{hosts}): rank {top.rank} peaks highest at "
        f"{fmt_bytes(top.peak_bytes)}, rank {low.rank} lowest at {fmt_bytes(low.peak_bytes)} "
        f"({fmt_bytes(top.peak_bytes - low.peak_bytes, signed=True)}); imbalance {info.imbalance:+.0%} "
        f"(highest over mean); started within {fmt_seconds(info.skew_s)}"
    )


def describe_excess(info: MergeInfo) -> list[str]:
    """The excess as lines of text: 'line 31: keep = torch.empty(...): 64 MiB (typical other rank 0 B)'."""
    return [
        f"{'' if e.kind == 'line' else e.kind + ' '}{e.name}: {fmt_bytes(e.bytes)} "
        f"(typical other rank {fmt_bytes(e.others_bytes)})"
        for e in info.excess
    ]


def listed(info: MergeInfo, limit: int = TABLE_RANKS) -> tuple[list[RankSummary], int]:
    """The ranks a table shows (highest first, the lowest last) and how many it leaves out."""
    by_peak = sorted(info.ranks, key=lambda r: r.standing, reverse=True)
    if len(by_peak) <= limit:
        return by_peak, 0
    return [*by_peak[: limit - 1], by_peak[-1]], len(by_peak) - limit


def _kinds(info: MergeInfo) -> list[str]:
    return [c for c in CATEGORIES if any(r.by_category.get(c) for r in info.ranks)]


def ranks_text(info: MergeInfo) -> list[str]:
    lines = [f"  ranks: {headline(info)}"]
    kinds = _kinds(info)
    rows, more = listed(info)
    head = "".join(f"{category_label(c)[:12]:>13}" for c in kinds)
    lines.append(f"    {'rank':>5} {'host':<12} {'peak':>11}{head}  {'process':>11}  device")
    for r in rows:
        cells = "".join(f"{fmt_bytes(r.by_category.get(c, 0)):>13}" for c in kinds)
        flag = ("  raised " + r.error.split(":")[0] if r.error else "") + (
            "  (peaked outside its detailed steps)" if r.outside_detail else ""
        )
        process = fmt_bytes(r.process_peak_bytes) if r.process_peak_bytes else ""
        lines.append(
            f"    {r.rank:>5} {r.host[:12]:<12} {fmt_bytes(r.peak_bytes):>11}{cells}  {process:>11}  "
            f"{r.peak_device}{flag}"
        )
    if more:
        lines.append(f"    … and {more} more ranks")
    excess = describe_excess(info)
    if excess:
        lines.append(f"  rank {info.highest} holds at its peak beyond the typical rank:")
        lines.extend(f"    {e}" for e in excess)
    lines.append(f"  rank {info.highest} in detail:")
    return lines


def ranks_html(info: MergeInfo) -> str:
    kinds = _kinds(info)
    rows, more = listed(info)
    columns: list[str | Column] = [
        Column("rank", cell_style=_RIGHT),
        "host",
        Column("peak", cell_style=_RIGHT),
        *(Column(category_label(c), cell_style=_RIGHT) for c in kinds),
        "device",
        Column("process", cell_style=_RIGHT),
        "started",
        "raised",
    ]
    body = [
        [
            str(r.rank),
            r.host,
            fmt_bytes(r.peak_bytes),
            *(fmt_bytes(r.by_category.get(c, 0)) for c in kinds),
            r.peak_device + (" *" if r.outside_detail else ""),
            fmt_bytes(r.process_peak_bytes) if r.process_peak_bytes else "",
            f"+{fmt_seconds(r.offset_s)}",
            r.error or "",
        ]
        for r in rows
    ]
    # Wide tables scroll rather than wrap a figure over two lines.
    return (
        f"<div class='mp-ranks' style='overflow-x:auto'>{_summary(info)}"
        + html_table(
            columns, body, caption=_CAPTION, more=more, attrs={"class": "mp-ranks-table", "style": "white-space:nowrap"}
        )
        + _layers_table(info, rows)
        + "</div>"
    )


def ranks_brief_html(info: MergeInfo) -> str:
    """The headline and the excess only: where the full tables are shown
    elsewhere on the page (the report's Ranks tab)."""
    return f"<div class='mp-ranks'>{_summary(info)}</div>"


def _summary(info: MergeInfo) -> str:
    excess = describe_excess(info)
    held = (
        (
            f"<p>Rank {info.highest} holds at its peak beyond the typical rank:</p><ul>"
            + "".join(f"<li>{escape(e)}</li>" for e in excess)
            + "</ul>"
        )
        if excess
        else ""
    )
    return f"<p><b>{escape(headline(info))}</b></p>{held}"


#: Layers in the side-by-side table: those holding the most at the listed ranks' peaks.
TABLE_LAYERS = 10


def _layers_table(info: MergeInfo, rows: list[RankSummary]) -> str:
    """The layers side by side: bytes alive at each listed rank's peak (a
    blank: not among that rank's top layers)."""
    weight: dict[str, int] = {}
    for r in rows:
        for name, b in r.by_layer.items():
            weight[name] = max(weight.get(name, 0), b)
    names = sorted(weight, key=lambda n: -weight[n])[:TABLE_LAYERS]
    if not names:
        return ""
    columns: list[str | Column] = ["layer", *(Column(f"rank {r.rank}", cell_style=_RIGHT) for r in rows)]
    body = [[name, *(fmt_bytes(r.by_layer[name]) if name in r.by_layer else "" for r in rows)] for name in names]
    return html_table(
        columns,
        body,
        caption="Layers side by side: bytes alive at each rank's peak",
        attrs={"class": "mp-ranks-layers", "style": "white-space:nowrap"},
    )


def ranks_view(info: MergeInfo) -> Any:
    """The bokeh view: the table, the peaks by kind per rank, the timelines on one axis."""
    from memprofile.render.interactive import _bokeh

    models, _, layouts = _bokeh()
    return layouts.column(
        models.Div(text=ranks_html(info), sizing_mode="stretch_width"),
        _peaks_plot(info),
        _timelines_plot(info),
        sizing_mode="stretch_width",
    )


def _peaks_plot(info: MergeInfo) -> Any:
    from memprofile.render.interactive import _bokeh, _bytes_axis

    models, plotting, _ = _bokeh()
    kinds = _kinds(info) or ["other"]
    ranks = [str(r.rank) for r in info.ranks]
    data: dict[str, list] = {
        "rank": ranks,
        "peak": [fmt_bytes(r.peak_bytes) for r in info.ranks],
        "host": [r.host for r in info.ranks],
    }
    for c in kinds:
        data[c] = [
            r.by_category.get(c, 0) if r.by_category else (r.peak_bytes if c == "other" else 0) for r in info.ranks
        ]
    p = plotting.figure(
        x_range=models.FactorRange(*ranks),
        height=260,
        sizing_mode="stretch_width",
        tools="save",
        title="Each rank's peak, by kind of memory",
        x_axis_label="rank",
    )
    p.vbar_stack(
        kinds,
        x="rank",
        width=0.8,
        color=[CATEGORY_COLORS[c] for c in kinds],
        source=models.ColumnDataSource(data),
        legend_label=[category_label(c) for c in kinds],
    )
    p.yaxis.formatter = _bytes_axis()
    if len(ranks) > 48:  # past that the labels overlap: the hover names each bar's rank
        p.xaxis.major_label_text_font_size = "0px"
        p.xaxis.axis_label = f"ranks 0-{ranks[-1]} (hover a bar for its rank)"
    else:
        p.xaxis.major_label_orientation = 0.8 if len(ranks) > 24 else 0
    p.add_tools(models.HoverTool(tooltips=[("rank", "@rank"), ("host", "@host"), ("peak", "@peak")]))
    p.legend.location = "top_left"
    p.legend.orientation = "horizontal"
    p.toolbar.logo = None
    return p


def _timelines_plot(info: MergeInfo) -> Any:
    from memprofile.render.interactive import LEGEND_BELOW_PX, _bokeh, _bytes_axis, _place_legend

    models, plotting, _ = _bokeh()
    p = plotting.figure(
        height=300 + LEGEND_BELOW_PX,
        sizing_mode="stretch_width",
        tools="xpan,xwheel_zoom,box_zoom,reset,save",
        title="Every rank's live bytes on one time axis (each host's wall clock)",
        x_axis_label="seconds since the first rank started",
    )
    # As steps: memory holds its value until the next point (no ramp across a quiet stretch).
    others = [_steps(r.t, r.live_bytes) for r in info.ranks if r.rank != info.highest and r.t]
    if others:
        p.multi_line(
            xs=[t for t, _ in others],
            ys=[v for _, v in others],
            color=OTHER_RANKS,
            alpha=0.8,
            line_width=1.5,
            legend_label=f"other ranks ({len(others)})",
        )
    top = info.summary_of(info.highest)
    if top.t:
        p.line(*_steps(top.t, top.live_bytes), color=PEAK, line_width=2, legend_label=f"rank {top.rank} (highest)")
    for i, tl in enumerate(info.timelines):
        p.line(
            *_steps(tl.t, tl.live_bytes),
            color=RANK_SERIES[i % len(RANK_SERIES)],
            line_width=1.5,
            visible=False,
            legend_label=f"{tl.device}, full",
        )
    p.yaxis.formatter = _bytes_axis()
    p.legend.click_policy = "hide"
    _place_legend(p, "below")
    p.toolbar.logo = None
    return p


def _f32(values: list) -> Any:
    import numpy as np  # bokeh's own dependency

    return np.asarray(values, dtype=np.float32)


def _steps(t: list[float], values: list[int]) -> tuple[Any, Any]:
    from memprofile.render.stairs import as_steps

    t_steps, (v_steps,) = as_steps(t, values)
    return _f32(t_steps), _f32(v_steps)
