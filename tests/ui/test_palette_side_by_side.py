"""One palette: the card, the side panel (at its default width) and the
exported report draw each kind of memory in the same colour. A real
JupyterLab, a real kernel training a small torch model with Adam, the report
it exported, and Debian's chromium; the screenshots are put side by side in
artifacts/ui/palette_side_by_side.png."""

from __future__ import annotations

import re

import pytest
from PIL import Image

from memprofile.render.palette import CATEGORY_COLORS
from memprofile.units import category_label
from tests.ui.conftest import SCREENSHOTS, screenshot
from tests.ui.test_lab import _run_all_cells, _write_notebook

pytestmark = pytest.mark.ui

CELLS = [
    "%load_ext memprofile",
    "import torch\nfrom torch import nn\ntorch.manual_seed(0)\n"
    "net = nn.Sequential(nn.Linear(512, 2048), nn.GELU(), nn.Linear(2048, 512))\n"
    "adam = torch.optim.Adam(net.parameters())\nbatch = torch.randn(1024, 512)",
    "%%memprofile --name palette\nfor _ in range(2):\n    adam.zero_grad()\n"
    "    net(batch).square().mean().backward()\n    adam.step()",
    "%memprofile export palette_report.html palette",
]


def _rgb_hex(css: str) -> str:
    r, g, b = (int(v) for v in re.findall(r"\d+", css)[:3])
    return f"#{r:02x}{g:02x}{b:02x}"


def test_card_panel_and_report_draw_each_kind_in_one_colour(lab_server, page, browser):
    _write_notebook(lab_server["root"], "palette.ipynb", CELLS)
    page.goto(f"{lab_server['base']}/lab/workspaces/palette/tree/palette.ipynb?reset&token={lab_server['token']}")
    page.wait_for_selector("#jp-main-statusbar >> text=Idle", timeout=60_000)
    _run_all_cells(page)
    card = page.locator(".jp-memprofile-card", has_text="palette")
    card.wait_for(timeout=120_000)
    page.locator(".jp-OutputArea-output", has_text="wrote 'palette'").wait_for(timeout=60_000)

    # THEN the card's swatches have the report's colour for each kind
    card_colours = page.evaluate("""() => Object.fromEntries(
        [...document.querySelectorAll('.jp-memprofile-card .jp-memprofile-legend-item')].map(item => [
          item.dataset.category,
          getComputedStyle(item.querySelector('.jp-memprofile-swatch')).backgroundColor]))""")
    assert {"parameter", "gradient", "optimizer_state"} <= set(card_colours), card_colours
    for kind, css in card_colours.items():
        assert _rgb_hex(css) == CATEGORY_COLORS[kind].lower(), (kind, css)

    # WHEN the card opens the panel (its default width)
    card.locator(".jp-memprofile-open").click()
    view = page.locator("#memprofile-panel .jp-memprofile-view[data-view='timeline']")
    view.locator("canvas").first.wait_for(timeout=30_000)
    page.wait_for_timeout(800)  # BokehJS lays its legend out after the first canvas
    card.scroll_into_view_if_needed()
    lab_shot = screenshot(page, "palette_lab_card_and_panel")

    # AND the exported report opens: its static summary has the same colours
    report = browser.new_page(viewport={"width": 900, "height": 900})
    try:
        report.goto((lab_server["root"] / "palette_report.html").resolve().as_uri())
        report.locator("canvas").first.wait_for(timeout=60_000)
        report_colours = report.evaluate("""() => Object.fromEntries(
            [...document.querySelectorAll('.mp-legend > span')].map(item => [
              item.textContent.replace(/\\s[\\d.]+\\s\\S*B$/, '').trim(),
              getComputedStyle(item.querySelector('.mp-swatch')).backgroundColor]))""")
        report_shot = SCREENSHOTS / "palette_report.png"
        report.screenshot(path=str(report_shot))
    finally:
        report.close()
    by_label = {category_label(kind): kind for kind in CATEGORY_COLORS}
    assert {category_label(k) for k in card_colours} <= set(report_colours), report_colours
    for label, css in report_colours.items():
        assert _rgb_hex(css) == CATEGORY_COLORS[by_label[label]].lower(), (label, css)

    # The three side by side, for a person to look at (docs/palette_side_by_side.png is a copy)
    shots = [Image.open(lab_shot), Image.open(report_shot)]
    joined = Image.new("RGB", (sum(s.width for s in shots), max(s.height for s in shots)), "white")
    x = 0
    for s in shots:
        joined.paste(s, (x, 0))
        x += s.width
    joined.save(SCREENSHOTS / "palette_side_by_side.png")
