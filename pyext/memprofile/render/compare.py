"""A comparison of two profiles as text and as static HTML (escaped, no JavaScript)."""

from __future__ import annotations

import dataclasses
from html import escape

from memprofile.analysis.compare import Change, Comparison, peak_change_percent
from memprofile.render.table import html_table
from memprofile.units import category_label, fmt_bytes, fmt_seconds


def fmt_percent(percent: float) -> str:
    """'-17 %': how every percentage of a comparison or measurement is written."""
    return f"{percent:+.0f} %"


def peak_change_text(saving_bytes: int, peak_before_bytes: int) -> str:
    """'-1.40 GiB (-43 %)': a measured change in peak, with the one percentage
    (analysis.compare.peak_change_percent)."""
    percent = peak_change_percent(saving_bytes, peak_before_bytes)
    share = f" ({fmt_percent(percent)})" if percent is not None else ""
    return f"{fmt_bytes(-saving_bytes, signed=True)}{share}"


def time_change_text(time_change: float | None) -> str:
    """', time +12 %' ('' without a time)."""
    return f", time {fmt_percent(100 * time_change)}" if time_change is not None else ""


def headline(c: Comparison) -> str:
    """'peak -1.40 GiB (-43 %) on cpu, time +12 %'"""
    return f"peak {peak_change_text(c.saving_bytes, c.peak.before)} on {c.device}{time_change_text(c.time_change)}"


def measured_line(c: Comparison) -> str:
    """The headline and what the reader must know about it, on one line (what
    "Try it" reports in the panel and the widget)."""
    return "; ".join([headline(c), *c.notes])


def render_compare_text(c: Comparison) -> str:
    lines = [
        f"memprofile compare {c.a.name!r} -> {c.b.name!r}: {headline(c)}",
        f"  peak {fmt_bytes(c.peak.before)} -> {fmt_bytes(c.peak.after)}; "
        f"time {fmt_seconds(c.duration_before_s)} -> {fmt_seconds(c.duration_after_s)}",
        *(f"  note: {n}" for n in c.notes),
    ]
    for title, rows, more in (
        ("kinds at the peak", c.categories, 0),
        ("layers at the peak", c.layers, c.more_layers),
        ("ops (allocated)", c.ops, c.more_ops),
    ):
        if not rows:
            continue
        lines.append(f"  {title}:")
        for r in rows:
            label = category_label(r.name) if rows is c.categories else r.name
            lines.append(
                f"    {label:<40} {fmt_bytes(r.before):>10} -> {fmt_bytes(r.after):>10}  "
                f"{fmt_bytes(r.delta, signed=True):>11}"
            )
        if more:
            lines.append(f"    and {more} more")
    return "\n".join(lines)


def _table(title: str, rows: list[Change], more: int, labels=None) -> str:
    if not rows:
        return ""
    cells = [
        [labels(r.name) if labels else r.name, fmt_bytes(r.before), fmt_bytes(r.after), fmt_bytes(r.delta, signed=True)]
        for r in rows
    ]
    return f"<h4>{escape(title)}</h4>" + html_table(["", "before", "after", "change"], cells, more=more)


def render_compare_html(c: Comparison) -> str:
    return (
        "<div class='memprofile-report memprofile-compare'>"
        f"<h3>{escape(c.a.name)} → {escape(c.b.name)}: {escape(headline(c))}</h3>"
        f"<p>peak {fmt_bytes(c.peak.before)} → {fmt_bytes(c.peak.after)}; "
        f"time {fmt_seconds(c.duration_before_s)} → {fmt_seconds(c.duration_after_s)}</p>"
        + "".join(f"<p class='mp-note'>{escape(n)}</p>" for n in c.notes)
        + _table("Kinds of memory at the peak", c.categories, 0, category_label)
        + _table("Layers at the peak", c.layers, c.more_layers)
        + _table("Ops (bytes allocated)", c.ops, c.more_ops)
        + "</div>"
    )


class ShownComparison(Comparison):
    """A Comparison that shows itself (in a notebook, and as its repr) as the
    text and HTML above: what memprofile.compare, a Trial and `%memprofile
    compare` hand the user. analysis/compare.py makes the figures only."""

    def _repr_mimebundle_(self, include=None, exclude=None) -> dict:
        return {"text/html": render_compare_html(self), "text/plain": render_compare_text(self)}

    def __repr__(self) -> str:
        return render_compare_text(self)


def shown(c: Comparison) -> ShownComparison:
    """`c` as a ShownComparison (the same figures)."""
    return ShownComparison(**{f.name: getattr(c, f.name) for f in dataclasses.fields(c)})
