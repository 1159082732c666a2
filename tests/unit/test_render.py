"""Renderers on profiles built in the test: no collector, no framework."""

from __future__ import annotations

import json
import re

import jsonschema
import pytest

from memprofile.model.profile import Device, ErrorInfo, Note, Suggestion, Timeline
from memprofile.model.schema import SCHEMA_PATH
from memprofile.render.bundle import MIME_TYPE, mime_bundle, summarise
from memprofile.render.html import render_fragment
from memprofile.render.html import render_static_report as render_report
from memprofile.render.text import render_text
from tests.builders import make_lined_profile, make_profile

HOSTILE = '<img src=x onerror=alert(1)>"&'
SCHEMA = json.loads(SCHEMA_PATH.read_text())
SUMMARY_SCHEMA = {**SCHEMA, "$ref": "#/definitions/ProfileSummary"}


def _variants():
    yield "empty", make_profile(n_points=0)
    yield "one point", make_profile(n_points=1)
    yield "typical", make_profile()
    big = make_profile(n_points=1_000_000, peak_at=777_777)
    yield "1M points", big
    failed = make_profile(name=HOSTILE)
    failed.error = ErrorInfo("RuntimeError", HOSTILE, "Traceback ...")
    failed.warnings = [Note("x", HOSTILE)]
    failed.suggestions = [Suggestion("amp", HOSTILE, HOSTILE, f"print('{HOSTILE}')", estimated_saving_bytes=2**30)]
    yield "failed, hostile", failed
    multi = make_profile()
    multi.devices.append(Device("cuda:0", "allocator", "c10", 3 * 2**30, 2**30, 2**30, 80 * 2**30))
    multi.timelines.append(Timeline("cuda:0", [0.0, 0.1, 0.2], [2**30, 3 * 2**30, 2**30]))
    yield "cpu and cuda", multi
    yield "lines", make_lined_profile()
    lined_hostile = make_lined_profile(name=HOSTILE, text=HOSTILE)
    lined_hostile.error = ErrorInfo("RuntimeError", HOSTILE, op=HOSTILE, layer=HOSTILE, requested_bytes=2**30, line=3)
    yield "lines, failed, hostile", lined_hostile


VARIANTS = dict(_variants())


@pytest.mark.parametrize("name", VARIANTS)
def test_html_fragment_is_static_small_and_escaped(name):
    html = render_fragment(VARIANTS[name])
    assert "<script" not in html.lower()
    assert not re.search(r"\bon\w+\s*=", html.replace("onerror=alert", "")), "event handler attribute in output"
    assert "<img" not in html
    assert not re.search(r"(src|href)\s*=\s*['\"]?(https?:)?//", html), "external resource"
    assert len(html.encode()) <= 200_000
    assert "Peak" in html


def test_hostile_text_is_shown_as_text():
    html = render_fragment(VARIANTS["failed, hostile"])
    assert "&lt;img src=x onerror=alert(1)&gt;" in html
    assert "RuntimeError" in html and "1.00 GiB" in html


@pytest.mark.parametrize("name", VARIANTS)
def test_summary_matches_the_schema_and_the_profile(name):
    profile = VARIANTS[name]
    bundle = mime_bundle(profile)
    summary = bundle[MIME_TYPE]
    jsonschema.validate(summary, SUMMARY_SCHEMA)
    assert summary["peak_bytes"] == profile.peak_bytes
    assert json.dumps(summary)  # JSON-ready as is
    assert len(json.dumps(summary)) < 40_000
    if summary["sparkline"]:
        assert max(summary["sparkline"]["bytes"]) == max(profile.timeline(summary["sparkline"]["device"]).live_bytes)


def test_sparkline_keeps_the_exact_peak_of_a_million_points():
    s = summarise(VARIANTS["1M points"])
    assert len(s.sparkline.t) <= 240
    assert max(s.sparkline.bytes) == VARIANTS["1M points"].peak_bytes


def test_text_summary_reads_well():
    text = render_text(VARIANTS["typical"])
    assert text.startswith("memprofile 'cell': peak 400.0 MiB on host")
    assert "+300.0 MiB over the 100.0 MiB at start" in text


def test_text_of_a_failed_cell_names_the_error():
    text = render_text(VARIANTS["failed, hostile"])
    assert "raised RuntimeError" in text


def test_report_is_a_full_offline_document():
    html = render_report(VARIANTS["typical"])
    assert html.startswith("<!DOCTYPE html>") and html.rstrip().endswith("</html>")
    assert "prefers-color-scheme: dark" in html
    assert "http://" not in html.replace('xmlns="http://www.w3.org/2000/svg"', "")
    assert "https://" not in html


def test_empty_profile_renders_without_numbers_it_does_not_have():
    text = render_text(VARIANTS["empty"])
    assert "peak 0 B" in text
    assert "<svg" not in render_fragment(VARIANTS["empty"])


def test_summary_carries_a_brief_error_without_the_traceback():
    profile = make_profile()
    profile.error = ErrorInfo("RuntimeError", "x" * 10_000, "Traceback\n" * 5_000)
    error = summarise(profile).error
    assert error.traceback == "" and len(error.message) < 2100 and "more characters" in error.message
    assert profile.error.traceback  # the stored profile keeps everything


MIB = 2**20


def test_summary_names_the_peak_its_largest_tensors_and_lines():
    profile = make_lined_profile()
    summary = mime_bundle(profile)[MIME_TYPE]
    assert (summary["peak_op"], summary["peak_layer"], summary["peak_line"]) == ("aten::mm_backward", "encoder", 4)
    assert summary["peak_line_text"] == "loss.backward()"
    # the three largest, as the peak lists them, with their line and the tensor's own size
    assert [t["shape"] for t in summary["peak_tensors"]] == [[64, 512, 8000], [64, 32, 32, 32], [8000, 512]]
    assert [t["line"] for t in summary["peak_tensors"]] == [3, 2, 0]
    assert summary["peak_tensors"][1]["requested_bytes"] == 8 * MIB
    # at most five lines, in line order: here all four that allocated
    assert [s["line"] for s in summary["peak_lines"]] == [0, 2, 3, 4]
    assert summary["peak_lines"][1]["peak_bytes"] == 64 * MIB
    assert summary["peak_lines"][1]["allocated_bytes"] == 96 * MIB


def test_the_card_keeps_the_lines_holding_the_most_when_there_are_many():
    from memprofile.model.profile import LineStat

    profile = make_lined_profile()
    profile.lines = [LineStat(n, f"x{n} = f()", 10 * MIB, (n % 4) * MIB) for n in range(1, 13)]
    lines = summarise(profile).peak_lines
    # 3 MiB at lines 3, 7, 11 and 2 MiB at lines 2, 6 (then 10): the five largest, in line order
    assert [s.line for s in lines] == [2, 3, 6, 7, 11]


def test_a_profile_without_line_figures_names_only_what_it_knows():
    profile = make_profile()  # process-only: no op, layer, line or tensor
    summary = summarise(profile)
    assert summary.peak_op is summary.peak_layer is summary.peak_line is summary.peak_line_text is None
    assert summary.peak_tensors == [] and summary.peak_lines == []
    html = render_fragment(profile)
    assert "At the peak" not in html and "mp-lines" not in html and "mp-tensors" not in html
    text = render_text(profile)
    assert "tensor:" not in text and "lines (held" not in text and "during" not in text


def test_the_html_fallback_names_the_peak_tensors_and_lines():
    html = render_fragment(make_lined_profile())
    assert (
        "At the peak: op <code>aten::mm_backward</code>, layer <code>encoder</code>, line 4 "
        "<code>loss.backward()</code>" in html
    )
    assert "8.00 MiB tensor in a 15.8 MiB allocator block" in html
    assert html.count("<tr><td>", html.index("mp-tensors")) >= 3
    lines = html[html.index("class='mp-lines'") :]
    rows = re.findall(r"data-line='(\d+)'", lines)
    assert rows == ["0", "2", "3", "4"]
    assert "(before the cell)" in lines and "◀ peak" in lines
    assert "⋮" in lines  # line 1 left out
    # bars scale to the line holding the most: line 2 (64 MiB) full width, line 4 (24 MiB) 3/8 of it
    widths = [
        sum(float(w) for w in re.findall(r"width:([\d.]+)px;background", row))
        for row in lines.split("<tr data-line=")[1:]
    ]
    assert widths[1] == pytest.approx(160, abs=0.5) and widths[3] == pytest.approx(60, abs=0.5)


def test_the_static_report_lists_every_line_of_the_cell():
    html = render_report(make_lined_profile())
    listing = html[html.index("The cell, line by line") :]
    assert re.findall(r"data-line='(\d+)'", listing) == ["0", "1", "2", "3", "4", "5"]
    assert "opt.step()" in listing


def test_text_names_the_peak_tensors_lines_and_where_it_failed():
    profile = make_lined_profile()
    profile.error = ErrorInfo(
        "RuntimeError", "out of memory", op="aten::empty", layer="decoder", requested_bytes=2**34, line=3
    )
    text = render_text(profile)
    assert "peak at 500.0 ms during op aten::mm_backward, layer encoder, line 4 (loss.backward())" in text
    assert (
        "tensor: 64×32×32×32 float32 activation: 8.00 MiB tensor in a 15.8 MiB allocator block, op conv2d, "
        "layer encoder, line 2" in text
    )
    assert "tensor: 8000×512 float32 parameter: 15.6 MiB, layer head, before the cell" in text
    assert "before the cell    48.0 MiB / 0 B" in text
    assert "it failed in op aten::empty, layer decoder, line 3, asking for 16.0 GiB" in text


def test_peak_memory_outside_layers_is_placed_on_lines_and_ops():
    from memprofile.render.lines import NO_LAYER, placed_by_layer

    profile = make_lined_profile()
    placed = placed_by_layer(profile)
    # line 3 allocated in no layer: its 40 MiB at the peak are "(no layer)"; the other 16 MiB stay unplaced
    assert placed == {"encoder": 100 * MIB, "line 3: aten::log_softmax": 40 * MIB, "head": 20 * MIB, NO_LAYER: 16 * MIB}
    assert sum(placed.values()) == sum(profile.peak.by_layer.values())
    # a line that allocated in a layer cannot be told apart: nothing is placed on it
    profile.lines[2].layers = {"decoder": MIB}
    assert placed_by_layer(profile) == profile.peak.by_layer
    # no per-line figures (older profiles): unchanged
    profile.lines = []
    assert placed_by_layer(profile) == profile.peak.by_layer


def test_the_card_payload_names_what_failed_in_a_real_allocation_failure(ip, fresh_store):
    torch = pytest.importorskip("torch")
    import memprofile

    # A model built inside the cell; its forward asks the allocator for 2**60 floats, which fails.
    cell = (
        "%%memprofile --name too-big\n"
        "class Expand(torch.nn.Module):\n"
        "    def forward(self, x):\n"
        "        return x.new_empty(2**60)\n"
        "net = torch.nn.Sequential(torch.nn.Linear(32, 32), Expand())\n"
        "out = net(torch.randn(8, 32))\n"
    )
    ip.user_ns["torch"] = torch
    result = ip.run_cell(cell)
    assert isinstance(result.error_in_exec, RuntimeError)
    profile = memprofile.last()
    assert profile.name == "too-big"
    error = mime_bundle(profile)[MIME_TYPE]["error"]
    assert error["requested_bytes"] == 4 * 2**60  # float32
    assert error["op"] and "empty" in error["op"]
    # the Expand module inside the Sequential: "1", or "net.1" when another model
    # of the notebook has a module "1" too (names from the variable the cell binds)
    assert error["layer"] in ("1", "net.1")
    assert (error["op"], error["layer"], error["line"]) == (profile.error.op, profile.error.layer, profile.error.line)
    assert f"it failed in op {error['op']}, layer {error['layer']}" in render_text(profile)
    assert "It failed in op" in render_fragment(profile)
