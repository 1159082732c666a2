"""Will it fit in every view that is text: the card's one line (summary, text/plain, the
static HTML), the report's table, the text report's section; "predicted" on every figure."""

from __future__ import annotations

import re

from memprofile.model.codec import dumps, loads
from memprofile.model.profile import Prediction
from memprofile.render.bundle import MIME_TYPE, mime_bundle, summarise
from memprofile.render.html import render_fragment, render_static_report
from memprofile.render.prediction import TABLE_COLUMNS, prediction_row
from memprofile.render.report import render_report
from memprofile.render.text import render_text
from tests.builders import make_profile

GIB = 2**30


def _t4(**over) -> Prediction:
    fields = dict(
        device="T4",
        capacity_bytes=15_843_721_216,
        allocated_peak_bytes=5 * GIB,
        reserved_peak_bytes=6 * GIB,
        device_total_bytes=6 * GIB + 266_076_160,
        fits=True,
        method="fake execution",
        batch=64,
        measured_batch=64,
        largest_batch=148,
        notes=["not modelled: NCCL buffers"],
    )
    fields.update(over)
    return Prediction(**fields)


def _profile():
    profile = make_profile(name="train")
    profile.predictions = [
        _t4(),
        _t4(
            batch=256,
            device_total_bytes=19_200_000_000,
            allocated_peak_bytes=17 * GIB,
            reserved_peak_bytes=17 * GIB + 2**29,
            fits=False,
            accumulation_steps=2,
            largest_batch=148,
        ),
    ]
    return profile


def test_the_card_line_is_in_the_summary_the_plain_text_and_the_static_html():
    # GIVEN a profile with a prediction at the measured batch and one at 4x
    profile = _profile()
    line = "predicted fits: T4 16 GB ✓ 42 % · batch 256 on T4 ✗ 19 GB"
    # THEN the summary the card gets carries it, word for word, and so do both fallbacks
    assert summarise(profile).fits_line == line
    bundle = mime_bundle(profile)
    assert bundle[MIME_TYPE]["fits_line"] == line
    assert f"  {line}" in bundle["text/plain"].splitlines()
    assert f"<div class='mp-fits'>{line}</div>" in bundle["text/html"]


def test_without_a_prediction_nothing_is_said():
    profile = make_profile(name="train")
    assert summarise(profile).fits_line is None
    assert "predicted" not in render_text(profile) and "predicted" not in render_fragment(profile)
    assert "Will it fit" not in render_static_report(profile)


def _cells(row_html: str) -> list[str]:
    return re.findall(r"<td[^>]*>(.*?)</td>", row_html)


def test_the_report_has_the_table_every_figure_labelled_predicted():
    profile = _profile()
    for page in (render_report(profile), render_static_report(profile)):
        found = re.search(
            r"<h3>Will it fit \(predicted\)</h3>(<table class='mp-predictions'>.*?</table>)"
            r"<ol class='mp-muted mp-prediction-notes'>(.*?)</ol>",
            page,
        )
        assert found, "no Will it fit table with its notes"
        table, notes = found.groups()
        heads = re.findall(r"<th>(.*?)</th>", table)
        assert heads == list(TABLE_COLUMNS)
        assert [h for h in heads if "allocated" in h or "reserved" in h or "total" in h] == [
            "predicted allocated",
            "predicted reserved",
            "predicted device total",
        ]
        rows = [dict(zip(TABLE_COLUMNS, _cells(r))) for r in re.findall(r"<tr>(<td.*?)</tr>", table)]
        assert len(rows) == 2
        assert rows[1]["batch"] == "256" and rows[1]["fits"] == "✗ does not fit"
        assert rows[1]["largest batch"] == "148 (2 accumulation steps for 256)"
        assert rows[0]["method"] == "fake execution" and rows[0]["notes"] == rows[1]["notes"] == "1"
        # the notes the predictions share are said once, numbered, under the table
        assert re.findall(r"<li>(.*?)</li>", notes) == ["not modelled: NCCL buffers"]
        assert "nothing here was measured" in table
    # the fragment (the notebook's fallback) keeps the one line, not the table
    assert "mp-predictions" not in render_fragment(profile)


def test_a_row_names_batch_and_sequence_and_the_measured_size():
    row = dict(zip(TABLE_COLUMNS, prediction_row(_t4(seq_len=1024, measured_seq_len=512, batch=8, measured_batch=4))))
    assert row["batch"] == "8 × 1,024"
    assert row["predicted allocated"] == "5.00 GiB" and row["capacity"] == "14.8 GiB"
    assert row["share"] == "42 %" and row["fits"] == "✓ fits" and row["largest batch"] == "148"
    assert dict(zip(TABLE_COLUMNS, prediction_row(_t4())))["batch"] == "64 (measured)"
    # a sequence length as measured (a feature dimension taken for one) is not repeated
    same = prediction_row(_t4(seq_len=128, measured_seq_len=128, batch=128, measured_batch=32))
    assert dict(zip(TABLE_COLUMNS, same))["batch"] == "128"


def test_the_text_report_has_each_prediction_in_words():
    text = render_text(_profile())
    section = text[text.index("  Will it fit (predicted):") :].splitlines()
    assert section[1].startswith("    T4, batch 64: predicted fits (6.25 GiB of 14.8 GiB, 42 %")
    assert any("batch 256 (measured at 64): predicted does not fit" in s for s in section)
    assert any(
        "largest batch that fits (predicted): 148; keep batch 256 with 2 gradient-accumulation steps" in s
        for s in section
    )


def test_names_from_the_user_are_escaped_and_predictions_survive_a_save():
    profile = _profile()
    profile.predictions[0].notes = ["<script>alert(1)</script>"]
    page = render_static_report(profile)
    assert "<script>alert(1)" not in page and "&lt;script&gt;alert(1)" in page
    again = loads(dumps(profile))
    assert summarise(again).fits_line == summarise(profile).fits_line
