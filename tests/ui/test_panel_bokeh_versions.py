"""The panel draws a kernel's views with the BokehJS of that kernel's bokeh
minor: a kernel with the oldest supported bokeh (3.4) beside the newest the
development environment has. A real JupyterLab, a real kernel whose bokeh is
3.4.3 (installed with --no-deps into a folder put first on its sys.path) and
Debian's chromium."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.ui.conftest import screenshot
from tests.ui.test_lab import _run_all_cells, _write_notebook

pytestmark = pytest.mark.ui

OLDEST_BOKEH = "3.4.3"


@pytest.fixture(scope="session")
def oldest_bokeh(tmp_path_factory):
    target = tmp_path_factory.mktemp("bokeh-oldest")
    pip = [sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    # what the kernel's environment lacks for that bokeh (pandas for 3.4), the rest is the kernel's own
    report = subprocess.run([*pip, "--dry-run", "--report", "-", f"bokeh=={OLDEST_BOKEH}"], capture_output=True,
                            text=True)
    assert report.returncode == 0, report.stderr[-2000:]
    needed = [f"{i['metadata']['name']}=={i['metadata']['version']}" for i in json.loads(report.stdout)["install"]]
    done = subprocess.run([*pip, "--no-deps", "--target", str(target), *needed], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    return target


def test_a_kernel_with_bokeh_3_4_has_its_views_drawn_by_bokehjs_3_4(lab_server, page, oldest_bokeh):
    # GIVEN a kernel whose bokeh is 3.4.3, profiling a small torch step
    cells = [
        f"import sys\nsys.path.insert(0, {str(oldest_bokeh)!r})\nimport bokeh\nprint('bokeh', bokeh.__version__)",
        "%load_ext memprofile",
        "import torch\nnet = torch.nn.Sequential(torch.nn.Linear(128, 512), torch.nn.ReLU(), torch.nn.Linear(512, 8))",
        "%%memprofile --name old-bokeh\nnet(torch.randn(256, 128)).sum().backward()",
    ]
    _write_notebook(lab_server["root"], "old_bokeh.ipynb", cells)
    page.goto(f"{lab_server['base']}/lab/workspaces/oldbokeh/tree/old_bokeh.ipynb?reset&token={lab_server['token']}")
    page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=60_000)
    page.wait_for_selector("#jp-main-statusbar >> text=Idle", timeout=60_000)
    _run_all_cells(page)
    card = page.locator(".jp-memprofile-card", has_text="old-bokeh")
    card.wait_for(timeout=120_000)
    assert f"bokeh {OLDEST_BOKEH}" in page.locator(".jp-Notebook .jp-Cell").first.inner_text()

    # WHEN its card opens the panel
    card.locator(".jp-memprofile-open").click()
    panel = page.locator("#memprofile-panel")
    panel.wait_for(state="visible", timeout=30_000)
    view = panel.locator(".jp-memprofile-view[data-view='timeline']")
    # THEN the timeline is drawn, by BokehJS 3.4.3, and the view says nothing about versions
    view.locator("canvas").first.wait_for(timeout=30_000)
    box = view.locator("canvas").first.bounding_box()
    assert box and box["width"] > 100 and box["height"] > 50, box
    assert "not drawn" not in view.inner_text()
    loaded = page.evaluate("() => Object.keys(window.Bokeh || {}).filter(k => /^\\d+\\.\\d+\\.\\d+$/.test(k))")
    assert OLDEST_BOKEH in loaded, loaded
    # AND the Ops table (bokeh-tables of the same version) is drawn too
    panel.locator(".jp-memprofile-tab[data-view='ops']").click()
    panel.locator(".jp-memprofile-view[data-view='ops'] .slick-cell").first.wait_for(timeout=30_000)
    screenshot(page, "panel_bokeh_3_4")
    assert not [e for e in page.console_errors if "Bokeh" in e or "bokeh" in e], page.console_errors
