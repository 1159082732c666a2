"""The sparkline drawn: live bytes over time as a line of steps in a box, the
highest point marked, and what it shows in words. Drawn once here; the card
(labextension/card.ts, from the summary) and the static HTML draw its points."""

from __future__ import annotations

from memprofile.model.summary import SparklineDrawing
from memprofile.render.stairs import as_steps
from memprofile.units import fmt_bytes, fmt_seconds

#: The card's sparkline: width, height and the padding inside, in pixels.
CARD_BOX = (240, 40, 3)


def draw(
    device: str, t: list[float], values: list[int], box: tuple[int, int, int] = CARD_BOX
) -> SparklineDrawing | None:
    """`values` at times `t` in a (width, height, padding) box; None without a point. An axis
    without a span (one point, a flat line) is drawn in the middle of the box."""
    if not t or len(t) != len(values):
        return None
    width, height, pad = box
    t0, t1 = t[0], t[-1]
    lo, hi = min(values), max(values)

    def xy(ti: float, v: int) -> list[float]:
        x = pad + (ti - t0) / (t1 - t0) * (width - 2 * pad) if t1 > t0 else width / 2
        y = height - pad - (v - lo) / (hi - lo) * (height - 2 * pad) if hi > lo else height / 2
        return [round(x, 1), round(y, 1)]

    # Steps: memory holds its value until the next point (a ramp would draw growth that never happened).
    t_steps, (v_steps,) = as_steps(t, values)
    i_peak = max(range(len(values)), key=values.__getitem__)
    return SparklineDrawing(
        width=width,
        height=height,
        points=[xy(ti, v) for ti, v in zip(t_steps, v_steps)],
        peak=xy(t[i_peak], hi),
        title=f"{device} live bytes from {fmt_bytes(lo)} to {fmt_bytes(hi)} over {fmt_seconds(t1 - t0)}",
        peak_title=f"peak {fmt_bytes(hi)} at {fmt_seconds(t[i_peak])}",
    )
