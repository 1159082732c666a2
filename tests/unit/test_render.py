"""Renderers on profiles built in the test: no collector, no framework."""

from __future__ import annotations

import json
import re

import jsonschema
import pytest

from memprofile.model.profile import Device, ErrorInfo, Note, Suggestion, Timeline
from memprofile.model.schema import SCHEMA_PATH
from memprofile.render.bundle import MIME_TYPE, mime_bundle, summarise
from memprofile.render.html import render_fragment, render_static_report as render_report
from memprofile.render.text import render_text
from tests.builders import make_profile

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
