"""Static HTML: the notebook output fallback and the standalone report page.

No JavaScript and no external resources: it has to read the same in nbconvert,
on GitHub, in VS Code without the extension and offline. Everything that comes
from user code (names, op names, messages) goes through `escape`.
"""

from __future__ import annotations

from html import escape

from memprofile.model.profile import CATEGORIES, Profile
from memprofile.render.bundle import sparkline
from memprofile.render.text import how_to_apply, saving_line
from memprofile.units import category_label, fmt_bytes, fmt_seconds

#: One hue per category, readable on light and dark backgrounds.
CATEGORY_COLORS = {
    "parameter": "#4c78a8",
    "gradient": "#f58518",
    "optimizer_state": "#b279a2",
    "activation": "#e45756",
    "temporary": "#72b7b2",
    "input": "#54a24b",
    "other": "#9d9d9d",
}

_STYLE = """
.memprofile-report{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;font-size:13px;line-height:1.45;max-width:760px}
.memprofile-report h3{font-size:15px;margin:0 0 4px 0}
.memprofile-report .mp-muted{opacity:.72}
.memprofile-report .mp-peak{font-size:20px;font-weight:600}
.memprofile-report table{border-collapse:collapse;margin:6px 0}
.memprofile-report td,.memprofile-report th{padding:2px 10px 2px 0;text-align:left;font-variant-numeric:tabular-nums}
.memprofile-report .mp-bar{display:flex;height:14px;border-radius:3px;overflow:hidden;margin:6px 0 2px 0;max-width:480px}
.memprofile-report .mp-legend span{margin-right:12px;white-space:nowrap}
.memprofile-report .mp-swatch{display:inline-block;width:10px;height:10px;border-radius:2px;margin-right:4px;vertical-align:middle}
.memprofile-report .mp-error{border-left:3px solid #d62728;padding:4px 8px;margin:6px 0}
.memprofile-report pre{padding:6px;overflow-x:auto;background:rgba(127,127,127,.12);border-radius:3px}
"""

_PAGE_STYLE = """
body{margin:24px;background:#fff;color:#1f1f1f;font-family:system-ui,-apple-system,'Segoe UI',sans-serif}
@media (prefers-color-scheme: dark){body{background:#111418;color:#e6e6e6}}
"""


def _sparkline_svg(profile: Profile, width: int = 480, height: int = 72) -> str:
    line = sparkline(profile)
    if line is None or len(line.t) < 2:
        return ""
    t0, t1 = line.t[0], line.t[-1]
    lo, hi = min(line.bytes), max(line.bytes)
    span_t = (t1 - t0) or 1.0
    span_v = (hi - lo) or 1
    pad = 4

    def xy(t: float, v: int) -> tuple[float, float]:
        x = pad + (t - t0) / span_t * (width - 2 * pad)
        y = height - pad - (v - lo) / span_v * (height - 2 * pad)
        return round(x, 1), round(y, 1)

    points = " ".join(f"{x},{y}" for x, y in (xy(t, v) for t, v in zip(line.t, line.bytes)))
    i_peak = max(range(len(line.bytes)), key=line.bytes.__getitem__)
    px, py = xy(line.t[i_peak], line.bytes[i_peak])
    label = f"{escape(line.device)} live bytes from {fmt_bytes(lo)} to {fmt_bytes(hi)} over {fmt_seconds(span_t)}"
    return (
        f'<svg class="mp-sparkline" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
        f'role="img" aria-label="{label}">'
        f"<title>{label}</title>"
        f'<polyline fill="none" stroke="#4c78a8" stroke-width="1.5" points="{points}"/>'
        f'<circle cx="{px}" cy="{py}" r="3.5" fill="#e45756"><title>peak {fmt_bytes(hi)} at '
        f"{fmt_seconds(line.t[i_peak])}</title></circle></svg>"
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
    rows = "".join(
        f"<tr><td>{escape(d.name)}</td><td>{escape(d.kind)} ({escape(d.source)})</td>"
        f"<td>{fmt_bytes(d.peak_bytes)}</td><td>{fmt_bytes(d.baseline_bytes)}</td>"
        f"<td>{fmt_bytes(d.peak_bytes - d.baseline_bytes, signed=True)}</td><td>{fmt_bytes(d.end_bytes)}</td>"
        f"<td>{fmt_bytes(d.capacity_bytes)}</td></tr>"
        for d in profile.devices
    )
    return (
        "<table><thead><tr><th>device</th><th>measured by</th><th>peak</th><th>at start</th>"
        f"<th>increase</th><th>at end</th><th>capacity</th></tr></thead><tbody>{rows}</tbody></table>"
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


def render_fragment(profile: Profile) -> str:
    """The light, static block shown where the extension is not installed."""
    device = profile.peak_device
    increase = ""
    if device:
        increase = (
            f" <span class='mp-muted'>on {escape(device.name)}, "
            f"{fmt_bytes(device.peak_bytes - device.baseline_bytes, signed=True)} over the start</span>"
        )
    error = ""
    if profile.error:
        error = (
            f"<div class='mp-error'><b>{escape(profile.error.type)}</b>: {escape(profile.error.message)}"
            "<div class='mp-muted'>the profile covers the run up to the error</div></div>"
        )
    warnings = "".join(f"<li>{escape(n.message)}</li>" for n in profile.warnings)
    return (
        f"<div class='memprofile-report'><style>{_STYLE}</style>"
        f"<h3>memprofile · {escape(profile.name)}</h3>"
        f"<div><span class='mp-peak'>Peak {fmt_bytes(profile.peak_bytes)}</span>{increase}</div>"
        f"<div class='mp-muted'>{fmt_seconds(profile.duration_s)} · started {escape(profile.started_at)}"
        + "".join(f" · {escape(f.name)} {escape(f.version)}" for f in profile.frameworks)
        + "</div>"
        f"{error}{_category_bar(profile)}{_sparkline_svg(profile)}{_devices_table(profile)}"
        f"{_suggestions(profile)}"
        + (f"<ul class='mp-muted'>{warnings}</ul>" if warnings else "")
        + "</div>"
    )


def report_page(profile: Profile, head: str = "", body: str = "") -> str:
    """A complete HTML document: the page style, the summary fragment, then
    `body`; `head` adds to the head (the interactive report's BokehJS)."""
    return (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>memprofile · {escape(profile.name)}</title>"
        "<meta name='color-scheme' content='light dark'>"
        f"<style>{_PAGE_STYLE}</style>{head}</head><body>"
        f"{render_fragment(profile)}{body}"
        "</body></html>\n"
    )


def render_static_report(profile: Profile) -> str:
    """A complete, self-contained HTML document without JavaScript (the
    interactive one is render/report.py)."""
    return report_page(profile)
