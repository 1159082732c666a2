"""Will it fit in a real JupyterLab (Debian's chromium): the card's predicted line from
`%%memprofile --predict`, and the panel's "Will it fit" view asking the kernel."""

from __future__ import annotations

import re

import pytest

from tests.ui.conftest import extension_errors, screenshot
from tests.ui.test_lab import _run_all_cells, _write_notebook

pytestmark = pytest.mark.ui

SETUP = (
    "import torch\nfrom torch import nn\ntorch.manual_seed(0)\n"
    "model = nn.Sequential(nn.Linear(128, 512), nn.ReLU(), nn.Linear(512, 10))\n"
    "opt = torch.optim.Adam(model.parameters())\nx, y = torch.randn(32, 128), torch.randint(0, 10, (32,))"
)
TRAIN = (
    "%%memprofile --name fit-train --predict H100-80GB\n"
    "for _ in range(2):\n    opt.zero_grad()\n    nn.functional.cross_entropy(model(x), y).backward()\n    opt.step()"
)


def test_will_it_fit_on_the_card_and_in_the_panel(lab_server, page):
    # GIVEN a small torch training cell profiled with a prediction for an H100
    _write_notebook(lab_server["root"], "fit.ipynb", ["%load_ext memprofile", SETUP, TRAIN])
    page.goto(f"{lab_server['base']}/lab/workspaces/fit/tree/fit.ipynb?reset&token={lab_server['token']}")
    page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=60_000)
    page.wait_for_selector("#jp-main-statusbar >> text=Idle", timeout=60_000)
    _run_all_cells(page)
    card = page.locator(".jp-memprofile-card", has_text="fit-train")
    card.wait_for(timeout=180_000)
    # THEN the card has the predicted line
    fits = card.locator(".jp-memprofile-fits")
    assert re.fullmatch(r"predicted fits: H100-80GB 85 GB ✓ \d+ %", fits.inner_text()), fits.inner_text()

    # WHEN the panel's Will it fit view asks for a T4 at 4x the batch
    card.locator(".jp-memprofile-open").click()
    panel = page.locator("#memprofile-panel")
    panel.locator(".jp-memprofile-tab[data-view='fit']").click()
    panel.locator(".jp-memprofile-fit-device").select_option("T4")
    panel.locator(".jp-memprofile-fit-batch").fill("4x")
    panel.locator(".jp-memprofile-predict").click()
    result = panel.locator(".jp-memprofile-prediction")
    result.wait_for(timeout=120_000)
    result.scroll_into_view_if_needed()
    shot = screenshot(page, "panel_will_it_fit")

    # THEN it shows the prediction: predicted, the device, a fits mark, the largest batch
    verdict = result.locator(".jp-memprofile-prediction-verdict").inner_text()
    assert re.fullmatch(r"[✓✗] predicted (to fit|not to fit) on T4, batch 128 \(measured at 32\)", verdict), verdict
    largest = result.locator(".jp-memprofile-prediction-largest").inner_text()
    assert re.fullmatch(r"largest batch that fits \(predicted\): [\d,]+", largest), largest
    text = result.inner_text()
    assert "predicted device total" in text and "method: fake execution" in text
    # AND the profile's predictions are listed: the magic's, then this one
    items = panel.locator(".jp-memprofile-fit-item").all_inner_texts()
    assert [i.split(" · ")[0] for i in items] == ["✓ H100-80GB", verdict[:1] + " T4"], items
    assert shot.stat().st_size > 10_000
    assert not extension_errors(page.console_errors), page.console_errors
