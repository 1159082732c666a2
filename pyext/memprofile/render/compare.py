"""A comparison of two profiles as text and as static HTML (escaped, no JavaScript)."""

from __future__ import annotations

from html import escape

from memprofile.analysis.compare import Change, Comparison
from memprofile.units import category_label, fmt_bytes, fmt_seconds


def _pct(change: Change) -> str:
    return f" ({100 * change.delta / change.before:+.0f} %)" if change.before else ""


def headline(c: Comparison) -> str:
    """'peak -1.40 GiB (-43 %) on cpu, time +12 %'"""
    time = f", time {100 * c.time_change:+.0f} %" if c.time_change is not None else ""
    return f"peak {fmt_bytes(c.peak.delta, signed=True)}{_pct(c.peak)} on {c.device}{time}"


def render_compare_text(c: Comparison) -> str:
    lines = [
        f"memprofile compare {c.a.name!r} -> {c.b.name!r}: {headline(c)}",
        f"  peak {fmt_bytes(c.peak.before)} -> {fmt_bytes(c.peak.after)}; "
        f"time {fmt_seconds(c.duration_before_s)} -> {fmt_seconds(c.duration_after_s)}",
    ]
    for title, rows, more in (("kinds at the peak", c.categories, 0), ("layers at the peak", c.layers, c.more_layers),
                              ("ops (allocated)", c.ops, c.more_ops)):
        if not rows:
            continue
        lines.append(f"  {title}:")
        for r in rows:
            label = category_label(r.name) if rows is c.categories else r.name
            lines.append(f"    {label:<40} {fmt_bytes(r.before):>10} -> {fmt_bytes(r.after):>10}  "
                         f"{fmt_bytes(r.delta, signed=True):>11}")
        if more:
            lines.append(f"    and {more} more")
    return "\n".join(lines)


def _table(title: str, rows: list[Change], more: int, labels=None) -> str:
    if not rows:
        return ""
    body = "".join(
        f"<tr><td>{escape(labels(r.name) if labels else r.name)}</td><td>{fmt_bytes(r.before)}</td>"
        f"<td>{fmt_bytes(r.after)}</td><td>{fmt_bytes(r.delta, signed=True)}</td></tr>"
        for r in rows
    )
    tail = f"<p class='mp-muted'>and {more} more</p>" if more else ""
    return (f"<h4>{escape(title)}</h4><table><thead><tr><th></th><th>before</th><th>after</th><th>change</th>"
            f"</tr></thead><tbody>{body}</tbody></table>{tail}")


def render_compare_html(c: Comparison) -> str:
    return (
        "<div class='memprofile-report memprofile-compare'>"
        f"<h3>{escape(c.a.name)} → {escape(c.b.name)}: {escape(headline(c))}</h3>"
        f"<p>peak {fmt_bytes(c.peak.before)} → {fmt_bytes(c.peak.after)}; "
        f"time {fmt_seconds(c.duration_before_s)} → {fmt_seconds(c.duration_after_s)}</p>"
        + _table("Kinds of memory at the peak", c.categories, 0, category_label)
        + _table("Layers at the peak", c.layers, c.more_layers)
        + _table("Ops (bytes allocated)", c.ops, c.more_ops)
        + "</div>"
    )
