"""A merged profile in the side panel of a real JupyterLab: the notebook profiles
the same step as rank 0 and as rank 1 of a 2-rank job (RANK/WORLD_SIZE set
as torchrun sets them; rank 1 keeps 32 MiB more), merges the two rank files,
and the panel opens the merged profile on its Ranks tab: the table names
rank 1 as the highest and BokehJS draws the charts."""

from __future__ import annotations

import re

import pytest

from tests.ui.conftest import extension_errors, screenshot
from tests.ui.test_lab import _run_all_cells, _write_notebook
from tests.ui.test_notebook7 import wait_for_idle_kernel

pytestmark = pytest.mark.ui

# Each profile writes its rank's file into ./ranks/ when it stops (out=); the
# launcher's variables are taken away again so later cells are one process.
RANKS = (
    "import os, torch, memprofile\n"
    "for rank in (0, 1):\n"
    "    os.environ.update(RANK=str(rank), WORLD_SIZE='2', LOCAL_RANK=str(rank))\n"
    "    with memprofile.profile(name='step', out='ranks'):\n"
    "        x = torch.randn(256, 256)\n"
    "        y = (x @ x).relu()\n"
    "        if rank == 1:\n"
    "            extra = torch.zeros(32 * 2**20 // 4)  # 32 MiB more on rank 1\n"
    "        del y\n"
    "for key in ('RANK', 'WORLD_SIZE', 'LOCAL_RANK'):\n"
    "    os.environ.pop(key)\n"
    "m = memprofile.merge('ranks')\n"
    "print('merged', m.name, m.highest_rank.rank)"
)


def test_a_merged_profile_opens_on_its_ranks_tab(lab_server, page):
    # GIVEN a notebook that profiles two ranks' step and merges their files
    _write_notebook(lab_server["root"], "ranks.ipynb", ["%load_ext memprofile", RANKS])
    page.goto(f"{lab_server['base']}/lab/workspaces/ranks/tree/ranks.ipynb?reset&token={lab_server['token']}")
    wait_for_idle_kernel(page)
    _run_all_cells(page)
    try:
        page.locator(".jp-OutputArea-output", has_text="merged step").wait_for(timeout=60_000)
    except Exception:
        screenshot(page, "panel_ranks_cell_failed")
        outputs = page.locator(".jp-OutputArea-output").all_inner_texts()
        status = page.locator(".jp-Notebook-ExecutionIndicator").get_attribute("data-status")
        raise AssertionError(f"no 'merged step' output; kernel {status}; outputs: {outputs}") from None
    assert sorted(p.name for p in (lab_server["root"] / "ranks").iterdir()) == [
        "step.rank0.memprofile.json.gz",
        "step.rank1.memprofile.json.gz",
    ]

    # WHEN the panel opens the merged profile
    page.locator(".jp-SideBar .lm-TabBar-tab[data-id='memprofile-panel']").click()
    panel = page.locator("#memprofile-panel")
    panel.wait_for(state="visible", timeout=30_000)
    merged = panel.locator(
        ".jp-memprofile-item", has=page.locator(".jp-memprofile-item-name", has_text=re.compile(r"^step · 2 ranks$"))
    )
    merged.wait_for(timeout=30_000)  # listed beside the two ranks' own profiles
    merged.click()

    # THEN the Ranks tab comes first and is active
    view = panel.locator(".jp-memprofile-view[data-view='ranks']")
    view.wait_for(timeout=30_000)
    tabs = panel.locator(".jp-memprofile-tab")
    assert tabs.first.get_attribute("data-view") == "ranks"
    assert tabs.first.inner_text() == "Ranks"
    assert panel.locator(".jp-memprofile-tab.jp-mod-active").get_attribute("data-view") == "ranks"
    # AND its table (bokeh's Div, in a shadow root that the locators pierce) names rank 1 the highest
    table_rows = view.locator(".mp-ranks-table tbody tr")
    table_rows.first.wait_for(timeout=30_000)
    assert "rank 1 peaks highest" in view.locator(".mp-ranks b").first.inner_text()
    ranks_column = [row.locator("td").first.inner_text().strip() for row in table_rows.all()]
    assert ranks_column == ["1", "0"], ranks_column  # highest first
    # AND the peaks by kind and the timelines are drawn by BokehJS
    view.locator("canvas").nth(1).wait_for(timeout=30_000)
    view.scroll_into_view_if_needed()
    screenshot(page, "panel_ranks")
    assert not extension_errors(page.console_errors), page.console_errors

    # AND a single rank's profile opens without a Ranks tab
    panel.locator(
        ".jp-memprofile-item", has=page.locator(".jp-memprofile-item-name", has_text=re.compile(r"^step$"))
    ).first.click()
    panel.locator(".jp-memprofile-view[data-view='timeline']").wait_for(timeout=30_000)
    assert panel.locator(".jp-memprofile-tab[data-view='ranks']").count() == 0
