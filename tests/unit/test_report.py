"""The standalone HTML report (static summary + interactive bokeh views), on
profiles built in the test: no collector, no framework."""

from __future__ import annotations

import re

import pytest

from memprofile.model.profile import Device, ErrorInfo, Note, Suggestion, Timeline
from memprofile.render.interactive import views
from memprofile.render.report import render_report
from memprofile.render.timeline_data import DISPLAY_POINTS, display_indices
from tests.builders import make_lined_profile, make_profile, make_rich_profile

HOSTILE = '<img src=x onerror=alert(1)>"&'
URL = re.compile(r"(https?|wss?|ftp):\/\/", re.IGNORECASE)


def _variants():
    yield "empty", make_profile(n_points=0)
    yield "one point", make_profile(n_points=1)
    yield "host only", make_profile()
    yield "torch and tf", make_rich_profile()
    cuda = make_profile()
    cuda.devices.append(Device("cuda:0", "allocator", "c10", 3 * 2**30, 2**30, 2**30, 4 * 2**30))
    cuda.timelines.append(
        Timeline(
            "cuda:0",
            [0.0, 0.1, 0.2],
            [2**30, 3 * 2**30, 2**30],
            {"activation": [0, 2 * 2**30, 0], "parameter": [2**30] * 3},
            phase=[0, 1, 2],
        )
    )
    yield "cpu and cuda near capacity", cuda
    failed = make_rich_profile(name=HOSTILE, text=HOSTILE)
    failed.error = ErrorInfo("RuntimeError", HOSTILE, "Traceback ...", op=HOSTILE)
    failed.warnings = [Note("x", HOSTILE)]
    failed.suggestions = [Suggestion("amp", HOSTILE, HOSTILE, f"print('{HOSTILE}')", estimated_saving_bytes=2**30)]
    yield "failed, hostile", failed
    yield "lines", make_lined_profile()
    yield "lines, hostile", make_lined_profile(name=HOSTILE, text=HOSTILE)


VARIANTS = dict(_variants())


@pytest.mark.parametrize("name", VARIANTS)
def test_report_is_self_contained_escaped_and_has_the_figures(name):
    html = render_report(VARIANTS[name])
    # no URL at all, so nothing to fetch: BokehJS is inline
    assert not URL.search(html), URL.search(html)
    assert "Bokeh.embed" in html and "<script src" not in html
    # text from user code never appears as markup, nor raw inside a script
    markup = re.sub(r"<script\b.*?</script>", "", html, flags=re.S)
    assert "<img" not in markup and not re.search(r"<[^>]*\son\w+\s*=", markup)
    assert "<img src=x onerror=alert(1)>" not in html
    assert len(html.encode()) <= 3_000_000
    assert "Peak" in html


def test_hostile_names_are_text_in_the_views():
    html = render_report(VARIANTS["failed, hostile"])
    assert "&lt;img src=x onerror=alert(1)&gt;" in html
    assert "RuntimeError" in html


def test_a_million_point_timeline_is_drawn_with_at_most_ten_thousand_and_the_exact_peak():
    big = make_profile(n_points=1_000_000, peak_at=777_777)
    live = big.timelines[0].live_bytes
    keep = display_indices(live)
    assert len(keep) <= DISPLAY_POINTS + 1
    assert 777_777 in keep and max(live[i] for i in keep) == max(live)
    html = render_report(big)
    assert len(html.encode()) <= 3_000_000
    assert "of 1,000,000 recorded points" in html


def test_tables_are_capped_and_say_how_many_more():
    html = render_report(VARIANTS["torch and tf"])
    assert "and 100 more ops" in html  # 600 ops, 500 shown
    tabs = views(VARIANTS["torch and tf"])
    titles = [t.title for t in tabs.tabs]
    assert titles == ["Timeline", "Peak", "Lines", "Layers (4)", "Ops (600)", "Suggestions (0)"]


def test_training_phases_are_shaded_on_the_timeline():
    profile = make_rich_profile()
    tl = profile.timeline("cpu")
    n = len(tl.t)
    tl.phase = [0 if i % 300 < 150 else 1 if i % 300 < 250 else 2 for i in range(n)]  # forward, backward, optimizer
    html = render_report(profile)
    assert "shaded:" in html and "backward" in html and "optimizer" in html
    from bokeh.models import GlyphRenderer, VStrip

    (strips,) = [
        m
        for m in views(profile).references()
        if isinstance(m, GlyphRenderer) and isinstance(m.glyph, VStrip) and m.level == "underlay"
    ]
    bands = list(zip(strips.data_source.data["x0"], strips.data_source.data["x1"], strict=True))
    steps = -(-n // 300)
    last_has_optimizer = n % 300 == 0 or n % 300 > 250
    assert len(bands) == 2 * steps - (0 if last_has_optimizer else 1)  # backward and optimizer bands per step
    assert all(left < right for left, right in bands)


def test_torch_capture_records_phases_on_the_timeline():
    torch = pytest.importorskip("torch")
    import memprofile

    model = torch.nn.Linear(256, 256)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x = torch.randn(64, 256)
    with memprofile.profile(store=False, tensorflow=False, namespace={"model": model, "opt": opt}) as p:
        model(x).square().mean().backward()
        opt.step()
    phases = set(p.timeline("cpu").phase)
    assert {0, 1} <= phases  # forward and backward points


def test_capacity_and_headroom_lines_are_drawn_near_capacity():
    from bokeh.models import Span

    spans = [m for m in views(VARIANTS["cpu and cuda near capacity"]).references() if isinstance(m, Span)]
    assert {4 * 2**30, 0.85 * 4 * 2**30} <= {s.location for s in spans}


MIB = 2**20


def _models(profile, kind):
    import bokeh.models

    return [m for m in views(profile).references() if isinstance(m, getattr(bokeh.models, kind))]


def _table_with(profile, column):
    return next(t for t in _models(profile, "DataTable") if column in [c.title for c in t.columns])


def test_the_lines_tab_shows_every_line_of_the_cell_with_its_bar_and_figures():
    profile = make_lined_profile()
    tabs = {t.title: t.child for t in views(profile).tabs}
    listing = tabs["Lines"].text
    assert re.findall(r"data-line='(\d+)'", listing) == ["0", "1", "2", "3", "4", "5"]
    row = listing[listing.index("data-line='3'") : listing.index("data-line='4'")]
    assert "40.0 MiB" in row and "72.0 MiB" in row and "loss = F.cross_entropy" in row and "aten::log_softmax" in row
    # line 3 holds activations and temporaries at the peak: one bar segment of each kind's colour
    from memprofile.render.palette import CATEGORY_COLORS

    assert CATEGORY_COLORS["activation"] in row and CATEGORY_COLORS["temporary"] in row
    assert "◀ peak" in listing[listing.index("data-line='4'") :]
    assert "No line of the cell" in {t.title: t.child for t in views(make_rich_profile()).tabs}["Lines"].text


def test_ops_layers_and_tensors_tables_have_a_line_column():
    import math

    profile = make_lined_profile()
    ops = _table_with(profile, "largest block")
    lines = list(ops.source.data["line"])
    assert lines[:5] == [3, 2, 2, 2, 2] and all(math.isnan(n) for n in lines[5:])
    profile.layers[-1].line = None  # "head": its line unknown
    layers = _table_with(profile, "temporary")
    by_name = dict(zip(layers.source.data["layer"], layers.source.data["line"]))
    assert by_name["encoder"] == 2 and math.isnan(by_name["head"])
    tensors = _table_with(profile, "size (tensor / allocator block)")
    assert tensors.source.data["size"][1] == "8.00 MiB tensor in a 15.8 MiB allocator block"
    assert tensors.source.data["size"][0] == "125.0 MiB"
    assert tensors.source.data["line"][:3] == ["line 3", "line 2", "before the cell"]


def test_the_peak_view_places_memory_outside_layers_on_lines():
    profile = make_lined_profile()
    bars = next(
        m for m in _models(profile, "ColumnDataSource") if "line 3: aten::log_softmax" in m.data.get("name", [])
    )
    placed = dict(zip(bars.data["name"], bars.data["bytes"]))
    assert placed["line 3: aten::log_softmax"] == 40 * MIB and placed["(no layer)"] == 16 * MIB
    head = next(d.text for d in _models(profile, "Div") if "Peak <b>" in d.text)
    assert "line 4 <code>loss.backward()</code>" in head


def test_the_panel_payload_carries_the_cells_lines_as_data():
    import json

    from memprofile.render.panel import panel_payload

    payload = panel_payload(make_lined_profile())
    lines = payload["lines"]
    assert [r["line"] for r in lines] == [0, 1, 2, 3, 4, 5] and payload["peak_line"] == 4
    assert lines[3]["text"].startswith("loss = F.cross_entropy") and lines[3]["peak_bytes"] == 40 * MIB
    assert lines[3]["by_category"] == {"activation": 32 * MIB, "temporary": 8 * MIB}
    assert lines[5] == {
        "line": 5,
        "text": "opt.step()",
        "peak_bytes": 0,
        "allocated_bytes": 0,
        "by_category": {},
        "ops": {},
        "layers": {},
    }
    assert json.dumps(payload)
    old = panel_payload(make_rich_profile())
    assert old["lines"] == [] and old["peak_line"] is None
