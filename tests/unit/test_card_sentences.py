"""The card's sentences and its sparkline are made in Python and carried in
the summary (labextension/card.ts only lays them out): the steps line, where
an error happened, and the sparkline's drawing, which the static HTML draws
from the same function."""

from __future__ import annotations

from memprofile.model.profile import ErrorInfo, Profile, StepStat
from memprofile.render.bundle import MIME_TYPE, mime_bundle, summarise
from memprofile.render.lines import steps_brief, steps_text
from memprofile.render.sparkline import CARD_BOX, draw
from memprofile.render.text import failure_place
from tests.builders import make_lined_profile, make_profile

MiB = 2**20


def _stepped() -> Profile:
    steps = [StepStat(k, k - 1.0, float(k), k <= 3, peak_bytes=k * MiB, end_bytes=MiB) for k in range(1, 201)]
    return Profile(id="1" * 32, name="x", started_at="", duration_s=200.0, steps=steps)


def test_the_summary_carries_the_steps_line_as_the_text_report_writes_it():
    # GIVEN 200 steps, the first 3 in detail WHEN summarised
    summary = summarise(_stepped())
    # THEN the brief carries the line itself, the same as the text report's
    assert summary.steps.text == steps_text(steps_brief(_stepped()))
    assert summary.steps.text == (
        "200 training steps · steps 1-3 in detail · highest step: 200 (200.0 MiB) · end of step: 1.00 MiB → 1.00 MiB"
    )
    assert summary.steps.text in mime_bundle(_stepped())["text/plain"]


def test_the_summary_says_where_an_error_happened_as_the_text_report_does():
    profile = make_lined_profile()
    profile.error = ErrorInfo(
        "RuntimeError", "out of memory", op="aten::empty", layer="decoder", requested_bytes=2**34, line=3
    )
    place = summarise(profile).error_place
    assert place == "in op aten::empty, layer decoder, line 3, asking for 16.0 GiB" == failure_place(profile.error)
    # nothing known of the place, or no error: no sentence
    profile.error = ErrorInfo("ValueError", "bad")
    assert summarise(profile).error_place is None
    profile.error = None
    assert summarise(profile).error_place is None


def test_the_sparkline_is_drawn_as_steps_in_the_cards_box():
    # GIVEN nothing for 2.3 s, then a 4 MiB tensor
    drawn = draw("cpu", [0.0, 2.3, 2.4], [0, 4 * MiB, 4 * MiB])
    (x0, y0), (x1, y1), (x2, y2) = drawn.points[:3]
    # THEN the line stays at 0 B (the bottom) until 2.3 s, where it rises at once
    assert (drawn.width, drawn.height) == CARD_BOX[:2]
    assert y1 == y0 == CARD_BOX[1] - CARD_BOX[2] and x1 > x0 + 100
    assert x2 == x1 and y2 < y1
    assert all(a[0] == b[0] or a[1] == b[1] for a, b in zip(drawn.points, drawn.points[1:]))  # never on a slope
    assert drawn.title == "cpu live bytes from 0 B to 4.00 MiB over 2.40 s"
    assert drawn.peak_title == "peak 4.00 MiB at 2.30 s"


def test_the_sparkline_marks_the_highest_point():
    drawn = draw("host", [0.0, 0.01, 0.02], [256 * MiB, 512 * MiB, 300_000_000])
    # the middle in x, the top in y
    assert drawn.peak == [120.0, 3.0]
    assert drawn.peak_title == "peak 512.0 MiB at 10.0 ms"


def test_an_axis_without_a_span_is_drawn_in_the_middle():
    assert draw("host", [0.0], [5]).points == [[120.0, 20.0]]
    assert [y for _, y in draw("host", [0.0, 1.0], [5, 5]).points] == [20.0, 20.0, 20.0]
    assert draw("host", [], []) is None


def test_the_card_and_the_html_draw_the_same_line_at_their_own_sizes():
    profile = make_profile()
    summary = mime_bundle(profile)[MIME_TYPE]
    drawing = summary["sparkline"]["drawing"]
    assert (drawing["width"], drawing["height"]) == CARD_BOX[:2]
    assert len(drawing["points"]) == 2 * len(summary["sparkline"]["t"]) - 1
    assert f"<title>{drawing['title']}</title>" in mime_bundle(profile)["text/html"]
