"""The exported HTML report in a real browser: the bokeh views render, offline,
with hostile names shown as text."""

from __future__ import annotations

import pytest

from memprofile.model.profile import ErrorInfo, Suggestion
from tests.builders import make_lined_profile, make_profile, make_rich_profile
from tests.imports import H100
from tests.ui.conftest import screenshot

pytestmark = pytest.mark.ui
HOSTILE = "<img src=x onerror=alert(1)>"


@pytest.fixture
def report_page(browser):
    page = browser.new_page(viewport={"width": 1200, "height": 1000})
    page.errors, page.requests, page.dialogs = [], [], []
    page.on("console", lambda m: page.errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: page.errors.append(str(e)))
    page.on("request", lambda r: page.requests.append(r.url))
    page.on("dialog", lambda d: (page.dialogs.append(d.message), d.dismiss()))
    yield page
    page.close()


def _open(page, profile, tmp_path):
    path = profile.save_html(tmp_path / "report.html")
    page.goto(path.resolve().as_uri())
    page.locator(".bk-tab").first.wait_for(timeout=30_000)
    page.wait_for_timeout(500)
    return path


def _visible(page, text: str) -> bool:
    """A table cell showing `text`, in the tab on screen (hidden tabs hold tables too)."""
    return page.locator(".slick-cell", has_text=text).filter(visible=True).count() > 0


def _tab(page, title):
    page.locator(".bk-tab", has_text=title).first.click()
    page.wait_for_timeout(400)


def test_report_renders_offline_with_every_view(report_page, tmp_path):
    page = report_page
    profile = make_rich_profile(name="train")
    profile.suggestions = [
        Suggestion(
            "amp",
            "Use bf16 autocast",
            "activations are 71 % of the peak",
            "with torch.autocast('cpu', dtype=torch.bfloat16):\n    step()",
            estimated_saving_bytes=2**30,
        ),
        Suggestion(
            "gradient_checkpointing",
            "Checkpoint 2 blocks",
            "blocks keep 1 GiB",
            "block.forward = ...",
            estimated_saving_bytes=4 * 2**20,
            measured_saving_bytes=5 * 2**20,
            measured_time_change=0.12,
            can_try=True,
            try_change="checkpoint=encoder",
        ),
    ]
    _open(page, profile, tmp_path)
    # the timeline tab: one plot per device, drawn on canvases
    assert page.locator("canvas").count() >= 3
    screenshot(page, "report_timeline")
    _tab(page, "Layers")
    assert page.locator("canvas").count() >= 1
    screenshot(page, "report_layers")
    _tab(page, "Ops")
    assert _visible(page, "aten::mm")
    assert page.get_by_text("and 100 more ops").filter(visible=True).count() == 1
    # the filter narrows the table
    page.locator("input.bk-input").filter(visible=True).first.fill("op_49")
    page.wait_for_timeout(500)
    assert _visible(page, "op_499")
    assert not _visible(page, "aten::mm")
    screenshot(page, "report_ops")
    _tab(page, "Peak")
    assert page.get_by_text("Largest tensors alive at the peak").filter(visible=True).count() == 1
    screenshot(page, "report_peak")
    _tab(page, "Suggestions")
    # (each figure shows twice: in the static summary on top and in the Suggestions tab)
    assert page.get_by_text("estimate: saves ~1.00 GiB").filter(visible=True).count() == 2
    # a tried suggestion shows what was measured, the estimate beside it
    assert (
        page.get_by_text("measured: -5.00 MiB (-30 %), time +12 % (estimate ~4.00 MiB)").filter(visible=True).count()
        == 2
    )
    assert page.get_by_text("%%memprofile --try checkpoint=encoder").filter(visible=True).count() == 2
    screenshot(page, "report_suggestions")
    assert not page.errors, page.errors
    assert not [u for u in page.requests if not u.startswith(("file:", "data:", "blob:"))], page.requests


def test_hostile_names_show_as_text_and_run_nothing(report_page, tmp_path):
    page = report_page
    profile = make_rich_profile(name=HOSTILE, text=HOSTILE)
    profile.error = ErrorInfo("RuntimeError", HOSTILE, "Traceback ...")
    _open(page, profile, tmp_path)
    _tab(page, "Ops")
    assert _visible(page, f"aten::mm{HOSTILE}")
    _tab(page, "Peak")
    screenshot(page, "report_hostile")
    assert not page.dialogs and page.locator("img").count() == 0
    assert not page.errors, page.errors


def test_a_million_point_profile_opens(report_page, tmp_path):
    page = report_page
    path = _open(page, make_profile(n_points=1_000_000, peak_at=777_777), tmp_path)
    assert path.stat().st_size <= 3_000_000
    assert page.get_by_text("of 1,000,000 recorded points").filter(visible=True).count() == 1
    screenshot(page, "report_million")
    assert not page.errors, page.errors


def test_dark_colour_scheme_keeps_the_views_readable(browser, tmp_path):
    context = browser.new_context(viewport={"width": 1200, "height": 900}, color_scheme="dark")
    page = context.new_page()
    try:
        _open(page, make_rich_profile(), tmp_path)
        body = page.evaluate("getComputedStyle(document.body).backgroundColor")
        card = page.evaluate("getComputedStyle(document.querySelector('.mp-views')).backgroundColor")
        assert body == "rgb(17, 20, 24)" and card == "rgb(255, 255, 255)"
        screenshot(page, "report_dark")
    finally:
        context.close()


def test_report_shows_the_cells_lines_and_names_the_peak(report_page, tmp_path):
    page = report_page
    _open(page, make_lined_profile(), tmp_path)
    # the static summary on top names the peak and lists the lines holding the most
    assert page.get_by_text("At the peak: op").count() == 1
    _tab(page, "Lines")
    rows = page.locator("table.mp-lines tr[data-line]").filter(visible=True)
    assert rows.count() == 4 + 6  # the summary's four lines holding the most, the tab's whole cell (lines 0-5)
    assert page.get_by_text("opt.step()").filter(visible=True).count() == 1  # allocated nothing: only in the tab
    page.get_by_text("The cell, line by line").scroll_into_view_if_needed()
    screenshot(page, "report_lines")
    _tab(page, "Peak")
    assert _visible(page, "8.00 MiB tensor in a 15.8 MiB allocator block")
    assert _visible(page, "before the cell")
    screenshot(page, "report_peak_lines")
    assert not page.errors, page.errors
    assert not [u for u in page.requests if not u.startswith(("file:", "data:", "blob:"))], page.requests


def test_report_of_an_imported_h100_trace(report_page, tmp_path):
    # GIVEN the report of a real GPU job's trace (BERT inference on an H100, torch 2.6)
    import memprofile

    page = report_page
    profile = memprofile.import_trace(H100)
    _open(page, profile, tmp_path)
    text = page.locator("body").inner_text()
    # THEN it shows the GPU, its peak (the trace's own highest Total Allocated), its capacity,
    # and where the profile came from
    assert "cuda:0" in text and "96.6 MiB" in text and "79.2 GiB" in text
    assert "imported from" in text and "H100" in text
    assert page.locator("canvas").count() >= 1 and not page.errors
    screenshot(page, "report_imported_h100")
    # AND the layers come from the trace's nn.Module scopes (with_modules)
    assert page.locator(".bk-tab", has_text="Layers (84)").count() == 1
    _tab(page, "Layers")
    screenshot(page, "report_imported_h100_layers")
    assert _visible(page, "Linear_25")
