"""The memprofile side panel in a real JupyterLab: list, bokeh views, insert
fix, try it, compare, export, kernel restart."""

from __future__ import annotations

import re

import pytest

from tests.ui.conftest import screenshot
from tests.ui.test_lab import _run_all_cells, _write_notebook

pytestmark = pytest.mark.ui

SETUP = (
    "import torch\nfrom torch import nn\ntorch.manual_seed(0)\n"
    "net = nn.Sequential(*[nn.Sequential(nn.LayerNorm(256), nn.Linear(256, 1024), nn.GELU(), nn.Linear(1024, 256))"
    " for _ in range(3)])\nopt = torch.optim.Adam(net.parameters())\nxs = torch.randn(2048, 256)\nsteps = 0"
)
TRAIN = ("%%memprofile --name blocks\nsteps += 1\nopt.zero_grad(set_to_none=True)\n"
         "net(xs).square().mean().backward()\nopt.step()")
KERAS = ("import numpy as np, keras\nclf = keras.Sequential([keras.Input((256,)), keras.layers.Dense(1024, "
         "activation='relu', name='wide'), keras.layers.Dense(10, name='logits')])\nclf.compile('adam', 'mse')\n"
         "feats, targets = np.random.rand(512, 256).astype('float32'), np.random.rand(512, 10).astype('float32')")
FIT = "%%memprofile --name keras-fit\nclf.fit(feats, targets, batch_size=128, epochs=1, verbose=0)"
# A fix that must precede framework start-up (on CPU no rule makes one: put one on the stored profile).
TOP_FIX = ("import memprofile\nfrom memprofile.model.profile import Suggestion\n"
           "next(p for p in memprofile.profiles() if p.name == 'blocks').suggestions.append(Suggestion("
           "'fragmentation', 'Let the CUDA allocator expand segments', 'reserved far above allocated', "
           "'import os\\nos.environ[\"PYTORCH_CUDA_ALLOC_CONF\"] = \"expandable_segments:True\"', "
           "placement='top', restart_kernel=True))")


def _item(page, name):
    return page.locator(".jp-memprofile-item", has=page.locator(".jp-memprofile-item-name", has_text=re.compile(
        f"^{re.escape(name)}$")))


def test_panel_lists_profiles_draws_views_and_applies_fixes(lab_server, page):
    _write_notebook(lab_server["root"], "panel.ipynb", ["%load_ext memprofile", SETUP, TRAIN, KERAS, FIT, TOP_FIX])
    page.goto(f"{lab_server['base']}/lab/workspaces/panel/tree/panel.ipynb?reset&token={lab_server['token']}")
    page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=60_000)
    page.wait_for_selector("#jp-main-statusbar >> text=Idle", timeout=60_000)
    _run_all_cells(page)
    page.locator(".jp-memprofile-card", has_text="keras-fit").wait_for(timeout=180_000)

    # WHEN the torch card's button opens the panel
    card = page.locator(".jp-memprofile-card", has_text="blocks")
    card.locator(".jp-memprofile-open").click()
    panel = page.locator("#memprofile-panel")
    panel.wait_for(state="visible", timeout=30_000)
    # THEN it lists both profiles of this kernel, newest first
    screenshot(page, "panel_opened")
    panel.locator(".jp-memprofile-item").nth(1).wait_for(timeout=30_000)
    names = panel.locator(".jp-memprofile-item-name").all_inner_texts()
    assert names[:2] == ["keras-fit", "blocks"], names
    assert "on cpu" in _item(page, "blocks").inner_text() and "on tf:CPU:0" in _item(page, "keras-fit").inner_text()
    # AND the opened profile's timeline is drawn by BokehJS
    view = panel.locator(".jp-memprofile-view[data-view='timeline']")
    view.locator("canvas").first.wait_for(timeout=30_000)
    assert view.locator("canvas").count() >= 1
    screenshot(page, "panel_timeline")
    for tab in ("peak", "layers", "ops"):
        panel.locator(f".jp-memprofile-tab[data-view='{tab}']").click()
        panel.locator(f".jp-memprofile-view[data-view='{tab}'] canvas, "
                      f".jp-memprofile-view[data-view='{tab}'] .bk-DataTable, "
                      f".jp-memprofile-view[data-view='{tab}'] .slick-cell").first.wait_for(timeout=30_000)
    screenshot(page, "panel_ops")

    # Suggestions: insert the checkpointing fix below the profiled cell
    panel.locator(".jp-memprofile-tab[data-view='suggestions']").click()
    ckpt = panel.locator(".jp-memprofile-suggestion[data-suggestion='gradient_checkpointing']")
    ckpt.wait_for(timeout=10_000)
    cells_before = page.locator(".jp-Notebook .jp-Cell").count()
    ckpt.locator(".jp-memprofile-insert").click()
    page.wait_for_function(f"document.querySelectorAll('.jp-Notebook .jp-Cell').length > {cells_before}")
    inserted = page.locator(".jp-Notebook .jp-Cell").nth(3)  # below the training cell (index 2)
    assert "from torch.utils.checkpoint import checkpoint" in inserted.inner_text()
    assert "net.get_submodule(name)" in inserted.inner_text()
    screenshot(page, "panel_insert_fix")

    # A fix that must run first goes to the top of the notebook, and the kernel restart is offered
    top = panel.locator(".jp-memprofile-suggestion[data-suggestion='fragmentation']")
    top.locator(".jp-memprofile-insert", has_text="Insert fix at top").click()
    prompt = page.locator(".jp-Dialog", has_text="Restart the kernel?")
    prompt.wait_for(timeout=10_000)
    prompt.locator("button", has_text="Later").click()
    first = page.locator(".jp-Notebook .jp-Cell").first
    assert "expandable_segments:True" in first.inner_text()

    # Try it: asks first, then measures
    ckpt.locator(".jp-memprofile-try").click()
    dialog = page.locator(".jp-Dialog")
    dialog.wait_for(timeout=10_000)
    assert "runs the cell two or three more times" in dialog.inner_text()
    dialog.locator("button", has_text="Run the cell 2 or 3 times").click()
    status = panel.locator(".jp-memprofile-suggestion[data-suggestion='gradient_checkpointing'] "
                           ".jp-memprofile-try-status", has_text="Measured: peak -")
    status.wait_for(timeout=120_000)
    saving = panel.locator(".jp-memprofile-suggestion[data-suggestion='gradient_checkpointing'] .jp-memprofile-saving")
    saving.filter(has_text="measured:").wait_for(timeout=30_000)
    screenshot(page, "panel_try_it")
    # the trial's two runs are listed too
    page.wait_for_function("document.querySelectorAll('#memprofile-panel .jp-memprofile-item').length >= 4")

    # Compare two profiles
    _item(page, "blocks (as is)").locator(".jp-memprofile-check").check()
    _item(page, "blocks (--try checkpoint=0,1,2)").locator(".jp-memprofile-check").check()
    panel.locator(".jp-memprofile-compare").click()
    headline = panel.locator(".jp-memprofile-comparison-headline")
    headline.wait_for(timeout=30_000)
    assert headline.inner_text().startswith("peak -")
    screenshot(page, "panel_compare")

    # Export the selected profile next to the notebook
    _item(page, "blocks").click()
    panel.locator(".jp-memprofile-export").click()
    written = panel.locator(".jp-memprofile-panel-message", has_text="Report written to")
    written.wait_for(timeout=60_000)
    assert (lab_server["root"] / "blocks.memprofile.html").stat().st_size > 100_000
    # AND it offers to open it: a new tab shows the report, its bokeh views drawn
    with page.context.expect_page() as opened:
        written.locator("a.jp-memprofile-open-report").click()
    report = opened.value
    try:
        report.locator("canvas").first.wait_for(timeout=60_000)
        assert "memprofile · blocks" in report.locator("h3").first.inner_text()
    finally:
        report.close()

    # A page reload: the panel finds the kernel's comm again (comm_info) and lists the same profiles
    count = panel.locator(".jp-memprofile-item").count()
    page.goto(f"{lab_server['base']}/lab/workspaces/panel/tree/panel.ipynb?token={lab_server['token']}")
    page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=60_000)
    page.locator(".jp-SideBar .lm-TabBar-tab[data-id='memprofile-panel']").click()
    panel.locator(".jp-memprofile-item").nth(count - 1).wait_for(timeout=60_000)
    assert panel.locator(".jp-memprofile-item").count() == count

    # The dark theme: the panel follows it, the plots stay on their light card
    page.locator(".lm-MenuBar-itemLabel", has_text="Settings").click()
    page.locator(".lm-Menu-itemLabel").get_by_text("Theme", exact=True).hover()
    page.locator(".lm-Menu-itemLabel").get_by_text("JupyterLab Dark", exact=True).click()
    page.wait_for_function("document.body.dataset.jpThemeLight === 'false'", timeout=30_000)
    _item(page, "blocks").click()
    panel.locator(".jp-memprofile-view[data-view='timeline'] canvas").first.wait_for(timeout=30_000)
    screenshot(page, "panel_dark")

    # Restart the kernel: the list clears
    page.locator(".jp-Notebook").first.click()
    page.keyboard.press("Escape")
    page.keyboard.press("0")
    page.keyboard.press("0")
    page.locator(".jp-Dialog button", has_text="Restart").click()
    panel.locator(".jp-memprofile-panel-status", has_text="The kernel restarted").wait_for(timeout=60_000)
    assert panel.locator(".jp-memprofile-item").count() == 0
    screenshot(page, "panel_after_restart")
    # AND the restarted kernel's comm reaches the panel again once the cells run
    page.wait_for_selector("#jp-main-statusbar >> text=Idle", timeout=60_000)
    _run_all_cells(page)
    _item(page, "keras-fit").wait_for(timeout=180_000)
    assert "Connected" in panel.locator(".jp-memprofile-panel-status").inner_text()
    assert not page.console_errors, page.console_errors
