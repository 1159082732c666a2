"""Issue 14: a report's Timeline tab puts the peak device's plot first, even
when the profile lists an empty timeline (TF's, nothing recorded) before it.

Built Profiles (the renderers take a Profile; no framework runs)."""

from __future__ import annotations

import json

import pytest

from memprofile.model.profile import Device, Peak, Timeline
from memprofile.render.interactive import views
from memprofile.render.panel import view_items
from tests.builders import make_profile

pytest.importorskip("bokeh")


def _profile_tf_empty_first():
    """host, then TF's allocator with an empty timeline, then TF's again
    with data, then torch's `cpu` (the peak): the order a cell that imports
    TF before it trains a torch model stores."""
    profile = make_profile(n_points=50, name="both")
    t = [i * 0.001 for i in range(40)]
    tf_live = [2**20 + i * 2**10 for i in range(40)]
    cpu_live = [64 * 2**20 + i * 2**20 for i in range(40)]
    profile.devices += [
        Device("tf:GPU:0", "allocator", "gpu", 0, 0, 0, None),
        Device("tf:CPU:0", "allocator", "cpu", max(tf_live), 0, tf_live[-1], None),
        Device("cpu", "allocator", "c10", max(cpu_live), 0, cpu_live[-1], None),
    ]
    profile.timelines += [
        Timeline("tf:GPU:0", [], [], recorded_points=0),
        Timeline("tf:CPU:0", t, tf_live, recorded_points=40),
        Timeline("cpu", t, cpu_live, recorded_points=40),
    ]
    profile.peak = Peak(device="cpu", time_s=t[-1], bytes=max(cpu_live), by_category={"other": max(cpu_live)})
    return profile


def _plot_titles(layout) -> list[str]:
    """The titles of the timeline plots, top to bottom."""
    return [str(view.children[0].title.text) for view in layout.children]  # each view: the plot, its note


def test_report_timeline_puts_the_peak_device_first():
    profile = _profile_tf_empty_first()
    assert profile.peak_device.name == "cpu"
    timeline_tab = views(profile).tabs[0].child
    titles = _plot_titles(timeline_tab)
    assert len(titles) == 3  # the empty timeline is not drawn
    assert "cpu" in titles[0] and "tf:" not in titles[0], titles


def test_report_and_panel_order_the_same():
    profile = _profile_tf_empty_first()
    report_titles = _plot_titles(views(profile).tabs[0].child)
    panel_item = view_items(profile)["timeline"]
    panel_text = json.dumps(panel_item)
    panel_order = sorted(report_titles, key=lambda title: panel_text.index(json.dumps(title)))
    assert report_titles == panel_order
