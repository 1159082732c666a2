"""Timelines are drawn as steps: memory holds its value until the next event.
A tensor made 0.3 s into a cell, after nothing happened, must not show as a
0.3 s ramp from zero (growth that never happened): not in the report's and
panel's stacked areas, not in the HTML sparkline."""

from __future__ import annotations

import re
import time

import pytest

from memprofile.render.html import render_fragment
from memprofile.render.interactive import timeline_view
from memprofile.render.stairs import as_steps

MiB = 2**20


def test_as_steps_holds_each_value_until_the_next_point():
    t, (a, b) = as_steps([0.0, 1.0, 3.0], [0, 4, 4], [1, 1, 0])
    assert t == [0.0, 1.0, 1.0, 3.0, 3.0]
    assert a == [0, 0, 4, 4, 4] and b == [1, 1, 1, 1, 0]
    assert as_steps([2.0], [5]) == ([2.0], [[5]])


def _no_ramps(t: list[float], *columns) -> bool:
    """Between two distinct times every column is flat."""
    return all(c[i] == c[i + 1] for i in range(len(t) - 1) if t[i + 1] > t[i] for c in columns)


@pytest.fixture(scope="module")
def late_tensor():
    torch = pytest.importorskip("torch")
    from memprofile.profiler import Profiler

    with Profiler(name="late", store=False, tensorflow=False, namespace={}) as p:
        time.sleep(0.3)
        kept = torch.ones(MiB)  # 4 MiB, 0.3 s in
        time.sleep(0.05)
    del kept
    return p


def test_the_stacked_areas_are_steps(late_tensor):
    p = late_tensor
    device = p.device("cpu")
    figure = timeline_view(p, p.timeline("cpu"), device).children[0]
    areas = next(
        r.data_source
        for r in figure.renderers
        if "parameter" in r.data_source.data or "other" in r.data_source.data or "temporary" in r.data_source.data
    )
    data = areas.data
    kinds = [k for k in data if k != "t"]
    t = list(data["t"])
    assert _no_ramps(t, *[list(data[k]) for k in kinds])
    # the 4 MiB appear at one instant, 0.3 s in, not spread from the start
    total = [sum(float(data[k][i]) for k in kinds) for i in range(len(t))]
    first = next(i for i, v in enumerate(total) if v >= 4 * MiB)
    assert t[first] > 0.25 and total[first - 1] < MiB and t[first - 1] == t[first]


def test_the_html_sparkline_is_steps(late_tensor):
    html = render_fragment(late_tensor)
    points = re.search(r'<polyline[^>]* points="([^"]+)"', html).group(1).split()
    xy = [tuple(map(float, pt.split(","))) for pt in points]
    assert len(xy) > 2
    assert all(a[1] == b[1] for a, b in zip(xy, xy[1:]) if b[0] > a[0])  # flat between distinct times


def test_the_layers_chart_is_ordered_as_its_title_says():
    # GIVEN a profile whose layer holding the most at the peak allocated little over the cell
    from memprofile.render.breakdown_data import LAYER_KINDS
    from memprofile.render.interactive import layers_view
    from tests.builders import make_rich_profile

    profile = make_rich_profile()
    first = profile.layers[0]
    first.peak_bytes = 10 * max(layer.peak_bytes for layer in profile.layers) + 1
    for kind in LAYER_KINDS:
        setattr(first, f"{kind}_bytes", 1)
    chart = next(c for c in layers_view(profile).children if hasattr(c, "y_range"))
    # THEN the bars run longest first (the largest on top: the last factor), as the title says
    data = chart.renderers[0].data_source.data
    totals = [sum(data[k][i] for k in LAYER_KINDS) for i in range(len(data["layer"]))]
    assert totals == sorted(totals) and "longest bar first" in chart.title.text


def test_the_timeline_hover_is_on_a_glyph_bokeh_can_hit(late_tensor):
    # BokehJS's Step glyph has no hit testing: a hover on it would show nothing
    from bokeh.models import HoverTool, Line

    p = late_tensor
    figure = timeline_view(p, p.timeline("cpu"), p.device("cpu")).children[0]
    hover = next(t for t in figure.tools if isinstance(t, HoverTool))
    assert hover.renderers and all(isinstance(r.glyph, Line) for r in hover.renderers)


def _plot_titles(item) -> list[str]:
    """The plots' titles in a bokeh json_item, in document order, up to ": live memory"."""
    titles = []

    def walk(value):
        if isinstance(value, dict):
            if value.get("name") == "Title":
                titles.append(value["attributes"]["text"].split(": live memory")[0])
            for v in value.values():
                walk(v)
        elif isinstance(value, list):
            for v in value:
                walk(v)

    walk(item)
    return titles


def test_the_report_and_the_panel_stack_the_timelines_in_one_order():
    # GIVEN a profile whose peak device (cpu) is not its first timeline
    from bokeh.embed import json_item

    from memprofile.render.interactive import timelines_view
    from memprofile.render.panel import view_items
    from tests.builders import make_rich_profile

    profile = make_rich_profile()
    profile.timelines.sort(key=lambda tl: tl.device == profile.peak_device.name)
    devices = [tl.device for tl in profile.timelines if tl.t]
    assert len(devices) > 1 and devices[0] != profile.peak_device.name
    # THEN the report and the panel draw the peak device first, the others after, in one order
    report = [t for t in _plot_titles(json_item(timelines_view(profile))) if t in devices]
    panel = [t for t in _plot_titles(view_items(profile)["timeline"]) if t in devices]
    assert report[0] == profile.peak_device.name and sorted(report) == sorted(devices)
    assert panel == report
