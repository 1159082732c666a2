"""Notebook 7 (`jupyter notebook`): a %%memprofile cell shows its card, and the
palette's command and the notebook toolbar's button open the panel in
Notebook's right area, where BokehJS draws the profile's views. A real
Notebook 7 server and Debian's chromium."""

from __future__ import annotations

import re

import pytest

from tests.ui.conftest import screenshot
from tests.ui.test_lab import _run_all_cells, _write_notebook

pytestmark = pytest.mark.ui

SETUP = (
    "import torch\nfrom torch import nn\ntorch.manual_seed(0)\n"
    "model = nn.Sequential(nn.Linear(256, 512), nn.ReLU(), nn.Linear(512, 10))\n"
    "opt = torch.optim.Adam(model.parameters())\nx = torch.randn(128, 256)"
)
TRAIN = (
    "%%memprofile --name nb7-train\nfor _ in range(2):\n    opt.zero_grad()\n"
    "    model(x).square().mean().backward()\n    opt.step()"
)
PEAK = "import memprofile\nprint('PEAK', memprofile.last().peak_bytes)"
# Notebook 7.6.5 throws this on every page, with memprofile disabled too.
NOTEBOOK_OWN_ERRORS = ("Cannot read properties of undefined (reading 'schema')",)


def notebook_url(server, name: str) -> str:
    return f"{server['base']}/notebooks/{name}?token={server['token']}"


def wait_for_idle_kernel(page) -> None:
    """The notebook is shown and its kernel is idle. The toolbar's execution
    indicator starts out "idle" before a kernel is there; Lab's status bar
    says Idle only once the kernel has said so (Notebook 7 has no status bar)."""
    page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=60_000)
    page.wait_for_selector(".jp-Notebook-ExecutionIndicator[data-status='idle']", timeout=60_000)
    if page.locator("#jp-main-statusbar").count():
        page.wait_for_selector("#jp-main-statusbar >> text=Idle", timeout=60_000)


def open_from_palette(page) -> None:
    page.keyboard.press("Control+Shift+c")
    page.locator(".lm-CommandPalette-input").fill("Open the memprofile panel")
    page.locator(".lm-CommandPalette-item", has_text="Open the memprofile panel").first.click()


def drawn_size(view) -> dict:
    """The size of the first canvas BokehJS drew in `view`."""
    canvas = view.locator("canvas").first
    canvas.wait_for(timeout=30_000)
    return canvas.bounding_box()


def test_card_renders_and_palette_and_toolbar_open_the_panel(notebook_server, page):
    # GIVEN a notebook that profiles two training steps of a small torch model
    _write_notebook(notebook_server["root"], "nb7.ipynb", ["%load_ext memprofile", SETUP, TRAIN, PEAK])
    page.goto(notebook_url(notebook_server, "nb7.ipynb"))
    wait_for_idle_kernel(page)
    # WHEN every cell runs in Notebook 7
    _run_all_cells(page)
    card = page.locator(".jp-memprofile-card", has_text="nb7-train")
    card.wait_for(timeout=120_000)
    printed = page.locator(".jp-OutputArea-output", has_text=re.compile(r"PEAK \d+")).first
    printed.wait_for(timeout=60_000)
    card.scroll_into_view_if_needed()
    screenshot(page, "notebook7_card")
    # THEN the extension's card shows the peak the kernel stored, split by kind
    peak_bytes = int(re.search(r"PEAK (\d+)", printed.inner_text()).group(1))
    shown = re.search(r"Peak ([\d.]+) (KiB|MiB)", card.inner_text())
    assert shown, card.inner_text()
    value = float(shown.group(1)) * (2**10 if shown.group(2) == "KiB" else 2**20)
    assert abs(value - peak_bytes) / peak_bytes < 0.01, (shown.group(0), peak_bytes)
    assert "optimizer state" in card.locator(".jp-memprofile-legend").inner_text()

    # WHEN the palette's command opens the panel
    open_from_palette(page)
    panel = page.locator("#jp-right-stack #memprofile-panel")
    panel.wait_for(state="visible", timeout=30_000)
    # THEN it is in Notebook's right area, lists the profile, and BokehJS draws its timeline there
    panel.locator(".jp-memprofile-item", has_text="nb7-train").click()
    size = drawn_size(panel.locator(".jp-memprofile-view[data-view='timeline']"))
    assert size["width"] > 200 and size["height"] > 100, size
    page.wait_for_timeout(500)  # BokehJS lays the legend out after the first canvas
    screenshot(page, "notebook7_panel_from_palette")

    # WHEN the right area is closed, then the notebook toolbar's memprofile button is clicked
    page.locator("#jp-right-stack .jp-SidePanel-collapse").click()
    panel.wait_for(state="hidden", timeout=10_000)
    page.locator(".jp-NotebookPanel-toolbar .jp-memprofile-toolbar-button").click()
    # THEN the panel is back with its views drawn
    panel.wait_for(state="visible", timeout=10_000)
    panel.locator(".jp-memprofile-tab[data-view='layers']").click()
    size = drawn_size(panel.locator(".jp-memprofile-view[data-view='layers']"))
    assert size["width"] > 200 and size["height"] > 100, size
    page.wait_for_timeout(500)
    screenshot(page, "notebook7_panel_from_toolbar")
    errors = [e for e in page.console_errors if not any(known in e for known in NOTEBOOK_OWN_ERRORS)]
    assert not errors, errors
