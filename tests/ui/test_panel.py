"""The memprofile side panel in a real JupyterLab: list, bokeh views, insert
fix, try it, compare, export, page reload, dark theme, kernel restart.

One Lab page runs the notebook once (the `lab` fixture) and each phase is a test
of its own, so an early failure does not hide the later ones. A phase opens the
profile and the tab it needs itself (compare runs the trial if none ran), and
an inserted fix cell is taken out again; the kernel restart, which takes the
kernel's profiles with it, comes last."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import pytest

from tests.ui.conftest import SCREENSHOTS, extension_errors, screenshot
from tests.ui.test_lab import _run_all_cells, _write_notebook

if TYPE_CHECKING:
    from playwright.sync_api import Page

pytestmark = pytest.mark.ui

SETUP = (
    "import torch\nfrom torch import nn\ntorch.manual_seed(0)\n"
    "net = nn.Sequential(*[nn.Sequential(nn.LayerNorm(256), nn.Linear(256, 1024), nn.GELU(), nn.Linear(1024, 256))"
    " for _ in range(3)])\nopt = torch.optim.Adam(net.parameters())\nxs = torch.randn(2048, 256)\nsteps = 0"
)
TRAIN = (
    "%%memprofile --name blocks\nsteps += 1\nopt.zero_grad(set_to_none=True)\n"
    "net(xs).square().mean().backward()\nopt.step()"
)
KERAS = (
    "import numpy as np, keras\nclf = keras.Sequential([keras.Input((256,)), keras.layers.Dense(1024, "
    "activation='relu', name='wide'), keras.layers.Dense(10, name='logits')])\nclf.compile('adam', 'mse')\n"
    "feats, targets = np.random.rand(512, 256).astype('float32'), np.random.rand(512, 10).astype('float32')"
)
FIT = "%%memprofile --name keras-fit\nclf.fit(feats, targets, batch_size=128, epochs=1, verbose=0)"
# A fix that must precede framework start-up (on CPU no rule makes one: put one on the stored profile).
TOP_FIX = (
    "import memprofile\nfrom memprofile.model.profile import Suggestion\n"
    "next(p for p in memprofile.profiles() if p.name == 'blocks').suggestions.append(Suggestion("
    "'fragmentation', 'Let the CUDA allocator expand segments', 'reserved far above allocated', "
    '\'import os\\nos.environ["PYTORCH_CUDA_ALLOC_CONF"] = "expandable_segments:True"\', '
    "placement='top', restart_kernel=True))"
)


@dataclass
class Lab:
    """The page the phases share, and the console errors no phase has claimed yet."""

    page: Page
    server: dict
    errors: list[str] = field(default_factory=list)
    checked: int = 0

    @property
    def panel(self):
        return self.page.locator("#memprofile-panel")


@pytest.fixture(scope="module")
def lab(lab_server, browser):
    """One Lab page with the panel notebook run once: the profiles "blocks" and "keras-fit", the top fix added."""
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    page = context.new_page()
    shared = Lab(page, lab_server)
    page.on("console", lambda m: m.type == "error" and shared.errors.append(m.text))
    page.on("pageerror", lambda e: shared.errors.append(f"pageerror: {e}"))
    page.on("response", lambda r: r.status >= 400 and shared.errors.append(f"HTTP {r.status} {r.url}"))
    _write_notebook(lab_server["root"], "panel.ipynb", ["%load_ext memprofile", SETUP, TRAIN, KERAS, FIT, TOP_FIX])
    page.goto(f"{lab_server['base']}/lab/workspaces/panel/tree/panel.ipynb?reset&token={lab_server['token']}")
    page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=60_000)
    page.wait_for_selector("#jp-main-statusbar >> text=Idle", timeout=60_000)
    _run_all_cells(page)
    page.locator(".jp-memprofile-card", has_text="keras-fit").wait_for(timeout=180_000)
    _wait_ran(page, "suggestions.append")  # the last cell: the top fix is on the stored profile
    yield shared
    context.close()
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    with open(SCREENSHOTS / "console_errors.txt", "a") as f:
        f.writelines(f"{e}\n" for e in shared.errors)


@pytest.fixture(autouse=True)
def no_console_errors(lab):
    """Each phase leaves no console error (the first one also answers for the notebook's run)."""
    yield
    new, lab.checked = extension_errors(lab.errors[lab.checked :]), len(lab.errors)
    assert not new, new


def _wait_ran(page, source: str) -> None:
    """Wait until the cell whose source has `source` has run (an execution count in its prompt)."""
    cell = page.locator(".jp-Notebook .jp-Cell", has_text=source)
    cell.locator(".jp-InputPrompt", has_text=re.compile(r"\[\d+\]")).wait_for(timeout=60_000)


def _item(page, name):
    return page.locator(
        ".jp-memprofile-item", has=page.locator(".jp-memprofile-item-name", has_text=re.compile(f"^{re.escape(name)}$"))
    )


def _open_panel(lab: Lab):
    if not lab.panel.is_visible():
        lab.page.locator(".jp-SideBar .lm-TabBar-tab[data-id='memprofile-panel']").click()
    lab.panel.wait_for(state="visible", timeout=30_000)
    return lab.panel


def _show(lab: Lab, name: str, view: str):
    """The panel, with the profile `name` open on its `view` tab."""
    panel = _open_panel(lab)
    _item(lab.page, name).click()
    panel.locator(f".jp-memprofile-tab[data-view='{view}']").click()
    panel.locator(f".jp-memprofile-view[data-view='{view}']").wait_for(timeout=30_000)
    return panel


def _delete_cell(page, cell) -> None:
    """Take an inserted fix out again: a later run of all cells (the restart's) runs the notebook as written."""
    count = page.locator(".jp-Notebook .jp-Cell").count()
    cell.locator(".jp-InputPrompt").click()
    page.keyboard.press("Escape")
    page.keyboard.press("d")
    page.keyboard.press("d")
    page.wait_for_function(f"document.querySelectorAll('.jp-Notebook .jp-Cell').length < {count}")


def _checkpointing(panel):
    return panel.locator(".jp-memprofile-suggestion[data-suggestion='gradient_checkpointing']")


def _try_checkpointing(lab: Lab) -> str:
    """Try the checkpointing fix on "blocks" and wait for its measurement; the text of the dialog that asked first."""
    panel = _show(lab, "blocks", "suggestions")
    ckpt = _checkpointing(panel)
    ckpt.locator(".jp-memprofile-try").click()
    dialog = lab.page.locator(".jp-Dialog")
    dialog.wait_for(timeout=10_000)
    asked = dialog.inner_text()
    dialog.locator("button", has_text="Run the cell 2 or 3 times").click()
    ckpt.locator(".jp-memprofile-try-status", has_text="Measured: peak -").wait_for(timeout=120_000)
    ckpt.locator(".jp-memprofile-saving").filter(has_text="measured:").wait_for(timeout=30_000)
    return asked


def test_panel_lists_the_kernel_profiles_and_draws_their_views(lab):
    page = lab.page
    # WHEN the torch card's button opens the panel
    card = page.locator(".jp-memprofile-card", has_text="blocks")
    card.locator(".jp-memprofile-open").click()
    panel = lab.panel
    panel.wait_for(state="visible", timeout=30_000)
    # THEN it lists both profiles of this kernel, newest first
    screenshot(page, "panel_opened")
    panel.locator(".jp-memprofile-item").nth(1).wait_for(timeout=30_000)
    names = panel.locator(".jp-memprofile-item-name").all_inner_texts()
    assert [n for n in names if n in ("keras-fit", "blocks")] == ["keras-fit", "blocks"], names
    assert "on cpu" in _item(page, "blocks").inner_text() and "on tf:CPU:0" in _item(page, "keras-fit").inner_text()
    # AND the opened profile's timeline is drawn by BokehJS
    panel.locator(".jp-memprofile-tab[data-view='timeline']").click()
    view = panel.locator(".jp-memprofile-view[data-view='timeline']")
    view.locator("canvas").first.wait_for(timeout=30_000)
    assert view.locator("canvas").count() >= 1
    screenshot(page, "panel_timeline")
    for tab in ("peak", "layers", "ops"):
        panel.locator(f".jp-memprofile-tab[data-view='{tab}']").click()
        panel.locator(
            f".jp-memprofile-view[data-view='{tab}'] canvas, "
            f".jp-memprofile-view[data-view='{tab}'] .bk-DataTable, "
            f".jp-memprofile-view[data-view='{tab}'] .slick-cell"
        ).first.wait_for(timeout=30_000)
    screenshot(page, "panel_ops")


def test_insert_fix_goes_below_the_profiled_cell(lab):
    page = lab.page
    ckpt = _checkpointing(_show(lab, "blocks", "suggestions"))
    ckpt.wait_for(timeout=10_000)
    cells = page.locator(".jp-Notebook .jp-Cell")
    cells_before = cells.count()
    ckpt.locator(".jp-memprofile-insert").click()
    page.wait_for_function(f"document.querySelectorAll('.jp-Notebook .jp-Cell').length > {cells_before}")
    training = next(i for i, text in enumerate(cells.all_inner_texts()) if "%%memprofile --name blocks" in text)
    inserted = cells.nth(training + 1)
    try:
        assert "from torch.utils.checkpoint import checkpoint" in inserted.inner_text()
        assert "net.get_submodule(name)" in inserted.inner_text()
        screenshot(page, "panel_insert_fix")
    finally:
        _delete_cell(page, inserted)


def test_a_fix_that_must_run_first_goes_to_the_top_and_offers_a_restart(lab):
    page = lab.page
    top = _show(lab, "blocks", "suggestions").locator(".jp-memprofile-suggestion[data-suggestion='fragmentation']")
    top.locator(".jp-memprofile-insert", has_text="Insert fix at top").click()
    prompt = page.locator(".jp-Dialog", has_text="Restart the kernel?")
    prompt.wait_for(timeout=10_000)
    prompt.locator("button", has_text="Later").click()
    first = page.locator(".jp-Notebook .jp-Cell").first
    try:
        assert "expandable_segments:True" in first.inner_text()
    finally:
        _delete_cell(page, first)


def test_try_it_asks_first_then_measures(lab):
    asked = _try_checkpointing(lab)
    assert "runs the cell two or three more times" in asked
    screenshot(lab.page, "panel_try_it")
    # the trial's two runs are listed too
    lab.page.wait_for_function("document.querySelectorAll('#memprofile-panel .jp-memprofile-item').length >= 4")


def test_compare_two_profiles(lab):
    page = lab.page
    panel = _open_panel(lab)
    if not _item(page, "blocks (as is)").count():
        _try_checkpointing(lab)  # the two profiles to compare are the trial's
    _item(page, "blocks (as is)").locator(".jp-memprofile-check").check()
    _item(page, "blocks (--try checkpoint=0,1,2)").locator(".jp-memprofile-check").check()
    panel.locator(".jp-memprofile-compare").click()
    headline = panel.locator(".jp-memprofile-comparison-headline")
    headline.wait_for(timeout=30_000)
    assert headline.inner_text().startswith("peak -")
    screenshot(page, "panel_compare")


def test_export_writes_the_report_next_to_the_notebook_and_opens_it(lab):
    page = lab.page
    panel = _open_panel(lab)
    _item(page, "blocks").click()
    panel.locator(".jp-memprofile-export").click()
    written = panel.locator(".jp-memprofile-panel-message", has_text="Report written to")
    written.wait_for(timeout=60_000)
    assert (lab.server["root"] / "blocks.memprofile.html").stat().st_size > 100_000
    # AND it offers to open it: a new tab shows the report, its bokeh views drawn
    with page.context.expect_page() as opened:
        written.locator("a.jp-memprofile-open-report").click()
    report = opened.value
    try:
        report.locator("canvas").first.wait_for(timeout=60_000)
        assert "memprofile · blocks" in report.locator("h3").first.inner_text()
    finally:
        report.close()


def test_page_reload_finds_the_kernel_comm_again(lab):
    # WHEN the page reloads, THEN the panel finds the kernel's comm again (comm_info) and lists the same profiles
    page, panel = lab.page, _open_panel(lab)
    panel.locator(".jp-memprofile-item").first.wait_for(timeout=30_000)
    count = panel.locator(".jp-memprofile-item").count()
    page.goto(f"{lab.server['base']}/lab/workspaces/panel/tree/panel.ipynb?token={lab.server['token']}")
    page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=60_000)
    _open_panel(lab)
    panel.locator(".jp-memprofile-item").nth(count - 1).wait_for(timeout=60_000)
    assert panel.locator(".jp-memprofile-item").count() == count


def test_dark_theme_keeps_the_plots_on_their_light_card(lab):
    page = lab.page
    page.locator(".lm-MenuBar-itemLabel", has_text="Settings").click()
    page.locator(".lm-Menu-itemLabel").get_by_text("Theme", exact=True).hover()
    page.locator(".lm-Menu-itemLabel").get_by_text("JupyterLab Dark", exact=True).click()
    page.wait_for_function("document.body.dataset.jpThemeLight === 'false'", timeout=30_000)
    panel = _show(lab, "blocks", "timeline")
    panel.locator(".jp-memprofile-view[data-view='timeline'] canvas").first.wait_for(timeout=30_000)
    screenshot(page, "panel_dark")


def test_kernel_restart_clears_the_list_and_the_new_comm_reconnects(lab):
    # Last: the restart takes the kernel's profiles (and the trial's) with it.
    page, panel = lab.page, _open_panel(lab)
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
