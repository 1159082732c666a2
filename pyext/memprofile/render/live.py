"""The one line under a running cell: what the live feed says now, as text and HTML.

It reads the feed's messages (capture/live.py: dicts shaped as model/wire.py's LiveSample
and LiveMessage), so a frontend without the panel (Notebook 7, VS Code) shows it too.
"""

from __future__ import annotations

import html
from typing import Any

from memprofile.units import fmt_bytes


def _device(d: dict[str, Any]) -> str:
    if d["name"] == "host":
        return f"host {fmt_bytes(d['in_use_bytes'])}"
    capacity = d.get("capacity_bytes")
    held = fmt_bytes(d["in_use_bytes"])
    return f"{d['name']} {held} / {fmt_bytes(capacity)}" if capacity else f"{d['name']} {held}"


def live_parts(sample: dict[str, Any], warnings: list[str]) -> list[str]:
    """The line's parts: time, each device, the step and its peak, the detail, the warnings."""
    parts = [f"memprofile · running {sample['t']:.1f} s"]
    parts += [_device(d) for d in sample["devices"]]
    if sample["step"]:
        peaks = sample["step_peak_bytes"]
        top = max(peaks.values()) if peaks else None
        parts.append(f"step {sample['step']}" + (f" (peak {fmt_bytes(top)})" if top else ""))
    if sample["detail"]:
        parts.append("detail recording")
    return parts + [f"⚠ {w}" for w in warnings]


def live_text(sample: dict[str, Any], warnings: list[str]) -> str:
    return " · ".join(live_parts(sample, warnings))


def live_html(sample: dict[str, Any], warnings: list[str]) -> str:
    parts = live_parts(sample, warnings)
    body = " · ".join(html.escape(p) for p in parts)
    return f'<div class="memprofile-live" style="font-family: monospace; font-size: 12px; opacity: 0.8">{body}</div>'


def ended_text(seconds: float) -> str:
    """The quiet line left once the cell ended: the card below it is what stays."""
    return f"memprofile · ran {seconds:.1f} s"


def ended_bundle(seconds: float) -> dict[str, str]:
    text = ended_text(seconds)
    return {"text/plain": text, "text/html": f'<div style="font-size: 11px; opacity: 0.5">{html.escape(text)}</div>'}


def live_bundle(sample: dict[str, Any], warnings: list[str]) -> dict[str, str]:
    return {"text/plain": live_text(sample, warnings), "text/html": live_html(sample, warnings)}
