"""The panel opens wide enough for its charts' titles and legends, and keeps the
width the user dragged it to across a page reload: in JupyterLab and in
Notebook 7. Real servers and Debian's chromium."""

from __future__ import annotations

import re

import pytest

from tests.ui.conftest import ROOT, screenshot
from tests.ui.test_lab import _write_notebook
from tests.ui.test_notebook7 import NOTEBOOK_OWN_ERRORS, wait_for_idle_kernel

pytestmark = pytest.mark.ui

DEFAULT_WIDTH = int(re.search(r"DEFAULT_PANEL_WIDTH = (\d+)", (ROOT / "labextension" / "width.ts").read_text())[1])
DRAGGED_BY = 130  # px, to the left: wider


def _url(frontend: str, server, name: str) -> str:
    if frontend == "lab":
        return f"{server['base']}/lab/workspaces/width/tree/{name}?token={server['token']}"
    return f"{server['base']}/notebooks/{name}?token={server['token']}"


def _open_panel(page):
    page.locator(".jp-NotebookPanel-toolbar .jp-memprofile-toolbar-button").click()
    panel = page.locator("#memprofile-panel")
    panel.wait_for(state="visible", timeout=10_000)
    page.wait_for_timeout(300)  # the split lays out on the next animation frame
    return panel


def _drag_panel_edge(page, panel, dx: float) -> None:
    """Drag the shell's split handle at the panel's left edge by `dx` px."""
    handle = page.evaluate(
        """(left) => {
            const near = [...document.querySelectorAll('.lm-SplitPanel-handle:not(.lm-mod-hidden)')]
                .map(h => h.getBoundingClientRect()).filter(r => r.height > 0 && Math.abs(r.right - left) < 6);
            return near.length ? {x: near[0].x + near[0].width / 2, y: near[0].y + near[0].height / 2} : null;
        }""",
        panel.bounding_box()["x"],
    )
    assert handle, "no split handle at the panel's left edge"
    page.mouse.move(handle["x"], handle["y"])
    page.mouse.down()
    page.mouse.move(handle["x"] + dx, handle["y"], steps=8)
    page.mouse.up()
    page.wait_for_timeout(300)


@pytest.mark.parametrize("frontend", ["lab", "notebook"])
def test_panel_opens_wide_and_keeps_the_dragged_width_after_reload(frontend, request, page):
    server = request.getfixturevalue(f"{frontend}_server")
    _write_notebook(server["root"], f"width-{frontend}.ipynb", ["1 + 1"])
    page.goto(_url(frontend, server, f"width-{frontend}.ipynb").replace("?token", "?reset&token"))
    wait_for_idle_kernel(page)
    # WHEN the panel opens for the first time
    panel = _open_panel(page)
    screenshot(page, f"panel_width_{frontend}_default")
    # THEN it has the default width, not the shell's 250 px minimum
    assert panel.bounding_box()["width"] >= DEFAULT_WIDTH - 2, panel.bounding_box()

    # WHEN the user drags its edge wider, and reloads the page
    _drag_panel_edge(page, panel, -DRAGGED_BY)
    dragged = panel.bounding_box()["width"]
    assert dragged >= DEFAULT_WIDTH + DRAGGED_BY - 4, dragged
    page.goto(_url(frontend, server, f"width-{frontend}.ipynb"))
    wait_for_idle_kernel(page)
    panel = _open_panel(page)
    screenshot(page, f"panel_width_{frontend}_after_reload")
    # THEN it opens at the width the user chose
    assert abs(panel.bounding_box()["width"] - dragged) <= 2, (panel.bounding_box(), dragged)

    # AND a narrower choice is kept as well (the default does not win it back)
    _drag_panel_edge(page, panel, DRAGGED_BY + 200)
    narrow = panel.bounding_box()["width"]
    assert narrow < DEFAULT_WIDTH - 50, narrow
    page.reload()
    wait_for_idle_kernel(page)
    panel = _open_panel(page)
    assert abs(panel.bounding_box()["width"] - narrow) <= 2, (panel.bounding_box(), narrow)
    errors = [e for e in page.console_errors if not any(known in e for known in NOTEBOOK_OWN_ERRORS)]
    assert not errors, errors
