"""Issue 14: after Kernel → Shut Down the panel still said "Connected to the
kernel", and clicking a profile said "Cannot send". The panel follows the
kernel: it says the kernel is shut down, a click says what to do, and a new
kernel reconnects it. A real JupyterLab and Debian's chromium."""

from __future__ import annotations

import re

import pytest

from tests.ui.conftest import extension_errors, screenshot
from tests.ui.test_lab import _run_all_cells, _write_notebook

pytestmark = pytest.mark.ui

GROW = "%%memprofile --name grow\nimport numpy as np\nkeep = np.ones(16 * 2**20 // 8)"
SHUT_DOWN = "The kernel is shut down"


def _menu(page, menu: str, item: str) -> None:
    page.locator(".lm-MenuBar-itemLabel", has_text=menu).click()
    page.locator(".lm-Menu-itemLabel").get_by_text(re.compile(f"^{re.escape(item)}")).first.click()


def _accept_dialog_if_any(page) -> None:
    dialog = page.locator(".jp-Dialog")
    try:
        dialog.wait_for(timeout=3_000)
    except Exception:  # playwright's TimeoutError: no dialog asked
        return
    dialog.locator("button.jp-mod-accept").click()


def test_panel_follows_a_kernel_shut_down_and_a_new_kernel(lab_server, page):
    _write_notebook(lab_server["root"], "shutdown.ipynb", ["%load_ext memprofile", GROW])
    page.goto(f"{lab_server['base']}/lab/workspaces/shutdown/tree/shutdown.ipynb?reset&token={lab_server['token']}")
    page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=60_000)
    page.wait_for_selector("#jp-main-statusbar >> text=Idle", timeout=60_000)
    _run_all_cells(page)
    page.locator(".jp-memprofile-card", has_text="grow").locator(".jp-memprofile-open").click()
    panel = page.locator("#memprofile-panel")
    status = panel.locator(".jp-memprofile-panel-status")
    panel.locator(".jp-memprofile-item").first.wait_for(timeout=60_000)
    assert "Connected to the kernel" in status.inner_text()

    # WHEN the kernel is shut down from the menu
    _menu(page, "Kernel", "Shut Down Kernel")
    _accept_dialog_if_any(page)
    # THEN the panel says so, keeps the list, and a click says what to do (not "Cannot send")
    status.filter(has_text=SHUT_DOWN).wait_for(timeout=30_000)
    assert "Connected" not in status.inner_text()
    panel.locator(".jp-memprofile-item").first.click()
    error = panel.locator(".jp-memprofile-error")
    error.wait_for(timeout=10_000)
    shot = screenshot(page, "panel_kernel_shut_down")
    assert error.inner_text().startswith(f"Cannot open this profile: {SHUT_DOWN}"), error.inner_text()
    assert "%load_ext memprofile" in error.inner_text() and "Cannot send" not in panel.inner_text()
    assert shot.stat().st_size > 10_000

    # WHEN a kernel starts again (Restart starts the previous kernel) and the cells run
    page.locator(".jp-Notebook").first.click()
    page.keyboard.press("Escape")
    page.keyboard.press("0")
    page.keyboard.press("0")
    _accept_dialog_if_any(page)
    status.filter(has_text="Run %load_ext memprofile").wait_for(timeout=60_000)
    page.wait_for_selector("#jp-main-statusbar >> text=Idle", timeout=60_000)
    _run_all_cells(page)
    # THEN the panel is connected to the new kernel and lists its profile
    status.filter(has_text="Connected to the kernel").wait_for(timeout=60_000)
    panel.locator(".jp-memprofile-item").first.wait_for(timeout=60_000)
    panel.locator(".jp-memprofile-item").first.click()
    panel.locator(".jp-memprofile-view[data-view='timeline']").wait_for(timeout=30_000)
    screenshot(page, "panel_kernel_new")
    assert not extension_errors(page.console_errors), page.console_errors
