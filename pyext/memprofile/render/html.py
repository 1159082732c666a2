"""Static HTML: the notebook output fallback and the standalone report page.

No JavaScript and no external resources: it has to read the same in nbconvert,
on GitHub, in VS Code without the extension and offline. Everything that comes
from user code (names, op names, messages) goes through `escape`; tables are
render/table.py's, which escapes every cell.
"""

from __future__ import annotations

from html import escape

from memprofile.model.profile import CATEGORIES, LineStat, Profile
from memprofile.render.bundle import CARD_TENSORS, sparkline_series
from memprofile.render.lines import (
    line_label,
    peak_lines,
    shape_text,
    source_rows,
    steps_brief,
    steps_text,
    tensor_bytes_text,
)
from memprofile.render.palette import (
    CATEGORY_COLORS,
    CAVEAT,
    ERROR,
    PAGE_BACKGROUND,
    PAGE_BACKGROUND_DARK,
    PAGE_TEXT,
    PAGE_TEXT_DARK,
    SPARKLINE,
    SPARKLINE_PEAK,
)
from memprofile.render.prediction import fits_line, predictions_html
from memprofile.render.sparkline import draw
from memprofile.render.table import Column, Html, Row, html_table
from memprofile.render.text import failure_place, how_to_apply, saving_line
from memprofile.units import category_label, fmt_bytes, fmt_seconds

_STYLE = f"""
.memprofile-report{{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;\
font-size:13px;line-height:1.45;max-width:760px}}
.memprofile-report h3{{font-size:15px;margin:0 0 4px 0}}
.memprofile-report .mp-muted{{opacity:.72}}
.memprofile-report .mp-peak{{font-size:20px;font-weight:600}}
.memprofile-report table{{border-collapse:collapse;margin:6px 0}}
.memprofile-report td,.memprofile-report th{{padding:2px 10px 2px 0;text-align:left;font-variant-numeric:tabular-nums}}
.memprofile-report .mp-bar{{display:flex;height:14px;border-radius:3px;overflow:hidden;\
margin:6px 0 2px 0;max-width:480px}}
.memprofile-report .mp-legend span{{margin-right:12px;white-space:nowrap}}
.memprofile-report .mp-swatch{{display:inline-block;width:10px;height:10px;border-radius:2px;\
margin-right:4px;vertical-align:middle}}
.memprofile-report .mp-error{{border-left:3px solid {ERROR};padding:4px 8px;margin:6px 0}}
.memprofile-report pre{{padding:6px;overflow-x:auto;background:rgba(127,127,127,.12);border-radius:3px}}
"""
#: Width of the longest per-line bar, in pixels.
LINE_BAR_PX = 160

_PAGE_STYLE = f"""
body{{margin:24px;background:{PAGE_BACKGROUND};color:{PAGE_TEXT};\
font-family:system-ui,-apple-system,'Segoe UI',sans-serif}}
@media (prefers-color-scheme: dark){{body{{background:{PAGE_BACKGROUND_DARK};color:{PAGE_TEXT_DARK}}}}}
"""


def _sparkline_svg(profile: Profile, width: int = 480, height: int = 72) -> str:
    series = sparkline_series(profile)  # the card's drawing is not needed here: drawn at the page's size
    drawn = draw(*series, (width, height, 4)) if series and len(series[1]) >= 2 else None
    if drawn is None:
        return ""
    points = " ".join(f"{x},{y}" for x, y in drawn.points)
    (px, py), label = drawn.peak, escape(drawn.title)
    return (
        f'<svg class="mp-sparkline" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
        f'role="img" aria-label="{label}">'
        f"<title>{label}</title>"
        f'<polyline fill="none" stroke="{SPARKLINE}" stroke-width="1.5" points="{points}"/>'
        f'<circle cx="{px}" cy="{py}" r="3.5" fill="{SPARKLINE_PEAK}">'
        f"<title>{escape(drawn.peak_title)}</title></circle></svg>"
    )


def _category_bar(profile: Profile) -> str:
    peak = profile.peak
    if not peak:
        return ""
    parts = [(c, peak.by_category.get(c, 0)) for c in CATEGORIES if peak.by_category.get(c, 0) > 0]
    total = sum(b for _, b in parts)
    if not total:
        return ""
    segments = "".join(
        f'<div style="width:{b / total * 100:.2f}%;background:{CATEGORY_COLORS[c]}" '
        f'title="{escape(category_label(c))}: {fmt_bytes(b)}"></div>'
        for c, b in parts
    )
    legend = "".join(
        f'<span><i class="mp-swatch" style="background:{CATEGORY_COLORS[c]}"></i>'
        f"{escape(category_label(c))} {fmt_bytes(b)}</span>"
        for c, b in parts
    )
    return f'<div class="mp-bar">{segments}</div><div class="mp-legend mp-muted">{legend}</div>'


def _devices_table(profile: Profile) -> str:
    return html_table(
        ["device", "measured by", "peak", "at start", "increase", "at end", "capacity"],
        [
            [
                d.name,
                f"{d.kind} ({d.source})",
                fmt_bytes(d.peak_bytes),
                fmt_bytes(d.baseline_bytes),
                fmt_bytes(d.peak_bytes - d.baseline_bytes, signed=True),
                fmt_bytes(d.end_bytes),
                fmt_bytes(d.capacity_bytes),
            ]
            for d in profile.devices
        ],
    )


def _suggestions(profile: Profile) -> str:
    if not profile.suggestions:
        return ""
    items = "".join(
        f"<li><b>{escape(s.title)}</b>"
        + (f" — {escape(saving)}" if (saving := saving_line(s, profile.peak_bytes)) else "")
        + f"<div class='mp-muted'>{escape(s.evidence)}</div><div class='mp-muted'>{escape(how_to_apply(s))}</div>"
        + f"<pre><code>{escape(s.code)}</code></pre></li>"
        for s in profile.suggestions
    )
    return f"<h3>Suggestions</h3><ol>{items}</ol>"


def _peak_place(profile: Profile) -> str:
    """What ran at the peak (op, layer, line with its source) and the largest
    tensors alive then; '' when the profile does not know."""
    peak = profile.peak
    if peak is None:
        return ""
    scope = (
        f"<div class='mp-scope' style='border-left:3px solid {CAVEAT};padding:2px 8px;margin:6px 0'>"
        f"{escape(profile.peak_scope)}</div>"
        if profile.peak_scope
        else ""
    )
    parts = [
        f"op <code>{escape(peak.op)}</code>" if peak.op else "",
        f"layer <code>{escape(peak.layer)}</code>" if peak.layer else "",
    ]
    if line_label(peak.line):
        text = profile.line_text(peak.line)
        parts.append(escape(line_label(peak.line)) + (f" <code>{escape(text)}</code>" if text else ""))
    where = ", ".join(p for p in parts if p)
    head = f"<div class='mp-place'>At the peak: {where}</div>" if where else ""
    return scope + head + tensors_table(peak.tensors[:CARD_TENSORS], "The largest tensors at the peak")


def tensors_table(tensors: list, title: str) -> str:
    """Tensors with their size (the tensor's own next to its allocator block
    where they differ), shape, dtype, kind and where they were made."""
    if not tensors:
        return ""
    return html_table(
        ["bytes", Column("shape", cell_style="white-space:nowrap"), "dtype", "kind", "op", "layer", "line"],
        [
            [
                tensor_bytes_text(t),
                shape_text(t),
                t.dtype,
                category_label(t.category),
                t.op or "",
                t.layer or "",
                line_label(t.line),
            ]
            for t in tensors
        ],
        caption=title,
        attrs={"class": "mp-tensors"},
    )


def _line_bar(row: LineStat, widest: int) -> str:
    """The bytes a line holds at the peak as a bar split by kind, scaled to the
    line holding the most. Inline styles: it also sits inside bokeh Divs."""
    if row.peak_bytes <= 0 or widest <= 0:
        return ""
    width = max(1.0, row.peak_bytes / widest * LINE_BAR_PX)
    parts = [(c, row.by_category.get(c, 0)) for c in CATEGORIES if row.by_category.get(c, 0) > 0]
    known = sum(b for _, b in parts)
    if row.peak_bytes > known:
        parts.append(("other", row.peak_bytes - known))
    title = ", ".join(f"{category_label(c)} {fmt_bytes(b)}" for c, b in parts)
    segments = "".join(
        f"<span style='display:inline-block;height:10px;width:{b / row.peak_bytes * width:.1f}px;"
        f"background:{CATEGORY_COLORS[c]}'></span>"
        for c, b in parts
    )
    return f"<span style='display:inline-flex;vertical-align:middle' title='{escape(title)}'>{segments}</span>"


def _tail(name: str, limit: int = 32) -> str:
    """A name cut to its last characters: TF op names run long ("gradient_tape/…/MatMul")."""
    return "…" + name[-(limit - 1) :] if len(name) > limit else name


def line_notes(row: LineStat) -> str:
    """'aten::mm, aten::gelu · layer encoder': what allocated the most on a line."""
    ops = ", ".join(_tail(op) for op in list(row.ops)[:2])
    layer = next(iter(row.layers), "")
    return " · ".join(x for x in (ops, f"layer {_tail(layer)}" if layer else "") if x)


def _line_notes(row: LineStat) -> str:
    made = line_notes(row)
    return f"<span style='opacity:.65'>  # {escape(made)}</span>" if made else ""


def lines_table(profile: Profile, rows: list[LineStat], title: str) -> str:
    """The cell's source with a bar per line: bytes alive at the peak that the
    line made (by kind), and what it allocated in all. A gap (⋮) where
    lines are left out; the line running at the peak is marked."""
    if not rows:
        return ""
    widest = max(r.peak_bytes for r in rows)
    peak_line = profile.peak.line if profile.peak else None
    cell = "padding:0 8px 0 0;text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap"
    right = "text-align:right;padding:0 8px 0 0"
    columns = [
        Column("line", right, f"{cell};opacity:.6"),
        Column("alive at the peak", cell_style=f"padding:0 8px 0 0;width:{LINE_BAR_PX}px"),
        Column("", right, cell),
        Column("allocated", right, f"{cell};opacity:.65"),
        Column("source", "text-align:left", "padding:0;text-align:left"),
    ]
    out: list[Row] = []
    previous = None
    for r in rows:
        if previous is not None and r.line > previous + 1:
            out.append(Row(["⋮", "", "", "", ""]))
        previous = r.line
        number = "·" if r.line == 0 else str(r.line)
        mark = " <b title='running at the peak'>◀ peak</b>" if r.line == peak_line else ""
        code = Html(f"<code style='white-space:pre'>{escape(r.text)}</code>{_line_notes(r)}{mark}")
        out.append(
            Row(
                [
                    number,
                    Html(_line_bar(r, widest)),
                    fmt_bytes(r.peak_bytes) if r.peak_bytes else "",
                    fmt_bytes(r.allocated_bytes) if r.allocated_bytes else "",
                    code,
                ],
                {"data-line": r.line},
            )
        )
    return html_table(
        columns,
        out,
        caption=title,
        attrs={"class": "mp-lines", "style": "border-collapse:collapse;margin:6px 0;font-size:13px"},
    )


def compact_lines(profile: Profile) -> str:
    """The lines holding the most at the peak (the card's short source view)."""
    held = {s.line for s in peak_lines(profile)}
    rows = [r for r in source_rows(profile) if r.line in held]
    return lines_table(profile, rows, "Lines holding the most at the peak")


def full_lines(profile: Profile) -> str:
    """Every line of the cell with its figures (the report's source view)."""
    return lines_table(
        profile, source_rows(profile), "The cell, line by line: bytes alive at the peak (by kind) and allocated"
    )


def render_fragment(profile: Profile, ranks_in_full: bool = True) -> str:
    """The light, static block shown where the extension is not installed;
    a merged profile's ranks in full, or (`ranks_in_full` False: a page that
    shows them in its views) their headline and excess only."""
    device = profile.peak_device
    increase = ""
    if device:
        increase = (
            f" <span class='mp-muted'>on {escape(device.name)}, "
            f"{fmt_bytes(device.peak_bytes - device.baseline_bytes, signed=True)} over the start</span>"
        )
    error = ""
    if profile.error:
        place = failure_place(profile.error)
        source = profile.line_text(profile.error.line)
        message = profile.error.headline or profile.error.message
        folded = (
            "<details><summary class='mp-muted'>the message in full"
            + (f" ({profile.error.message_frames} stack frames)" if profile.error.message_frames else "")
            + f"</summary><pre>{escape(profile.error.message)}</pre></details>"
            if profile.error.message_frames or message != profile.error.message
            else ""
        )
        # where it failed leads (op, layer, line, bytes); the message's own words follow
        error = (
            f"<div class='mp-error'><b>{escape(profile.error.type)}</b>"
            + (
                f"<div class='mp-failed'>It failed {escape(place)}"
                + (f": <code>{escape(source)}</code>" if source else "")
                + f"</div><div>{escape(message)}</div>"
                if place
                else f": {escape(message)}"
            )
            + folded
            + "<div class='mp-muted'>the profile covers the run up to the error</div></div>"
        )
    warnings = "".join(
        f"<li>{escape(n.message)}" + (f"<pre><code>{escape(n.fix)}</code></pre>" if n.fix else "") + "</li>"
        for n in profile.warnings
    )
    steps = steps_text(steps_brief(profile))
    ranks = ""
    if profile.merged:
        from memprofile.render.ranks import ranks_brief_html, ranks_html

        ranks = ranks_html(profile.merged) if ranks_in_full else ranks_brief_html(profile.merged)
    return (
        f"<div class='memprofile-report'><style>{_STYLE}</style>"
        f"<h3>memprofile · {escape(profile.name)}</h3>"
        f"<div><span class='mp-peak'>Peak {fmt_bytes(profile.peak_bytes)}</span>{increase}</div>"
        f"<div class='mp-muted'>{fmt_seconds(profile.duration_s)} · started {escape(profile.started_at)}"
        + "".join(f" · {escape(f.name)} {escape(f.version)}" for f in profile.frameworks)
        + "</div>"
        + (f"<div class='mp-steps'>{escape(steps)}</div>" if steps else "")
        + (f"<div class='mp-fits'>{escape(fits)}</div>" if (fits := fits_line(profile.predictions)) else "")
        + f"{ranks}{error}{_category_bar(profile)}{_peak_place(profile)}{compact_lines(profile)}"
        f"{_sparkline_svg(profile)}{_devices_table(profile)}"
        f"{_suggestions(profile)}" + (f"<ul class='mp-muted'>{warnings}</ul>" if warnings else "") + "</div>"
    )


def _predictions(profile: Profile) -> str:
    """The report's "Will it fit (predicted)" table (the fragment has the card's one line only)."""
    table = predictions_html(profile.predictions)
    # the fragment's style (in the page above) sets the table's look; eleven columns need more than its width
    return f"<div class='memprofile-report mp-will-it-fit' style='max-width:1200px'>{table}</div>" if table else ""


def report_page(profile: Profile, head: str = "", body: str = "", ranks_in_full: bool = True) -> str:
    """A complete HTML document: the page style, the summary fragment, then
    `body`; `head` adds to the head (the interactive report's BokehJS)."""
    return (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>memprofile · {escape(profile.name)}</title>"
        "<meta name='color-scheme' content='light dark'>"
        f"<style>{_PAGE_STYLE}</style>{head}</head><body>"
        f"{render_fragment(profile, ranks_in_full)}{_predictions(profile)}{body}"
        "</body></html>\n"
    )


def render_static_report(profile: Profile) -> str:
    """A complete, self-contained HTML document without JavaScript (the
    interactive one is render/report.py)."""
    return report_page(profile, body=f"<div class='memprofile-report'>{full_lines(profile)}</div>")
