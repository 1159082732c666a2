"""JupyterLab renders a %%memprofile cell with the extension's MIME renderer."""

from __future__ import annotations

import re

import nbformat
import pytest

from tests.ui.conftest import extension_errors, screenshot

pytestmark = pytest.mark.ui


def _write_notebook(root, name: str, cells: list[str], kernel: str = "python3") -> None:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(c) for c in cells]
    nb.metadata["kernelspec"] = {"name": kernel, "display_name": "Python 3 (ipykernel)", "language": "python"}
    nbformat.write(nb, root / name)


# A code cell's prompt once its execution is scheduled ("[*]:") or done ("[3]:").
_STARTED = "() => [...document.querySelectorAll('.jp-InputPrompt')].some(p => /\\[(\\*|\\d+)\\]/.test(p.textContent))"


def _run_all_cells(page) -> None:
    """Run every cell and make sure they started. Cells run before the page's
    session has its kernel are dropped without a word (JupyterLab clears their
    prompts), and the toolbar's execution indicator says "idle" before any
    kernel is there, so a run that did not start is pressed again."""
    for _ in range(3):
        page.locator(".jp-Notebook .jp-Cell").first.click()
        page.keyboard.press("Escape")  # command mode
        page.keyboard.press("Control+a")
        page.keyboard.press("Shift+Enter")
        try:
            page.wait_for_function(_STARTED, timeout=20_000)
            return
        except Exception:  # playwright's TimeoutError: nothing was scheduled
            continue
    raise AssertionError("the notebook's cells never started running (no kernel?)")


def _check_card(page, name: str, device: str, kinds: tuple[str, ...], shot: str, timeout_ms: int) -> None:
    """The card of the profile `name` shows its peak on `device`, split into `kinds`."""
    card = page.locator(".jp-memprofile-card", has_text=name)
    card.wait_for(timeout=timeout_ms)
    card.scroll_into_view_if_needed()
    screenshot(page, shot)
    legend = card.locator(".jp-memprofile-legend").inner_text()
    for kind in kinds:
        assert kind in legend, legend
    assert f"on {device}" in card.inner_text()


def test_profiled_cell_shows_the_card_with_the_peak(lab_server, page):
    # GIVEN a notebook that loads the extension and profiles a cell keeping 64 MiB
    _write_notebook(
        lab_server["root"],
        "ui.ipynb",
        [
            "%load_ext memprofile",
            "%%memprofile --name ui-cell\nimport numpy as np\nkeep = np.ones(64 * 2**20 // 8)\n"
            "spike = np.ones(128 * 2**20 // 8); del spike",
            "import memprofile\nprint('PEAK', memprofile.last().peak_bytes)",
            "import torch\nfrom torch import nn\n"
            "model = nn.Sequential(nn.Linear(512, 1024), nn.ReLU(), nn.Linear(1024, 10))\n"
            "opt = torch.optim.Adam(model.parameters())\nx = torch.randn(256, 512)",
            "%%memprofile --name torch-train\nfor _ in range(2):\n    opt.zero_grad()\n"
            "    model(x).square().mean().backward()\n    opt.step()",
            "import numpy as np, keras\nclf = keras.Sequential([keras.Input((256,)), keras.layers.Dense(1024, "
            "activation='relu', name='wide'), keras.layers.Dense(10, name='logits')])\nclf.compile('adam', 'mse')\n"
            "xs, ys = np.random.rand(512, 256).astype('float32'), np.random.rand(512, 10).astype('float32')",
            "%%memprofile --name keras-fit\nclf.fit(xs, ys, batch_size=128, epochs=1, verbose=0)",
            "%memprofile display widget",
            "%memprofile show keras-fit",
        ],
    )
    page.goto(f"{lab_server['base']}/lab/workspaces/card/tree/ui.ipynb?reset&token={lab_server['token']}")
    page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=60_000)
    page.wait_for_selector("#jp-main-statusbar >> text=Idle", timeout=60_000)
    # WHEN every cell runs
    _run_all_cells(page)
    card = page.locator(".jp-memprofile-card").first
    card.wait_for(timeout=60_000)
    printed = page.locator(".jp-OutputArea-output", has_text=re.compile(r"PEAK \d+")).first
    printed.wait_for(timeout=60_000)
    peak_bytes = int(re.search(r"PEAK (\d+)", printed.inner_text()).group(1))
    card.scroll_into_view_if_needed()
    path = screenshot(page, "lab_profile_card")
    # THEN the card shows the same peak the kernel stored, formatted, with its parts
    text = card.inner_text()
    assert "Peak" in text and "ui-cell" in text
    shown = re.search(r"([\d.]+) (MiB|GiB)", text)
    assert shown, text
    value = float(shown.group(1)) * (2**20 if shown.group(2) == "MiB" else 2**30)
    assert abs(value - peak_bytes) / peak_bytes < 0.01, (text, peak_bytes)
    assert card.locator("svg").count() >= 1  # the sparkline
    # the extension's renderer won over the static HTML fallback
    assert page.locator(".memprofile-report").count() == 0
    assert path.stat().st_size > 10_000
    # the PyTorch cell's card splits the peak by kind of memory
    _check_card(page, "torch-train", "cpu", ("parameters", "gradients", "optimizer state"), "lab_torch_card", 120_000)
    # the PyTorch card names the peak: the op and line running then, the largest tensors, the lines holding most
    torch_card = page.locator(".jp-memprofile-card", has_text="torch-train")
    assert "At the peak: op " in torch_card.locator(".jp-memprofile-peak-place").inner_text()
    assert torch_card.locator(".jp-memprofile-tensors tr").count() == 3
    held = torch_card.locator(".jp-memprofile-lines").inner_text()
    assert "before the cell" in held and "opt.step()" in held, held
    assert torch_card.locator(".jp-memprofile-line-bar .jp-memprofile-cat-optimizer-state").count() >= 1
    # the Keras cell's card: the TF allocator's peak, split the same way
    _check_card(
        page, "keras-fit", "tf:CPU:0", ("parameters", "optimizer state", "activations"), "lab_keras_card", 180_000
    )
    # the ipywidgets view of the same profile (display mode "widget", as frontends
    # without the extension get it): tabs, and a table behind each
    tabs = page.locator(".jupyter-widgets.widget-tab, .lm-TabBar", has_text="Suggestions").last
    tabs.wait_for(timeout=60_000)
    page.locator(".lm-TabBar-tab", has_text="Layers").last.click()
    page.wait_for_timeout(500)
    layers = page.locator(".widget-html-content", has_text="wide").filter(visible=True)
    assert layers.count() >= 1
    layers.first.scroll_into_view_if_needed()
    screenshot(page, "lab_widget_layers")
    # the notebook toolbar's memprofile button opens the panel
    page.locator(".jp-NotebookPanel-toolbar .jp-memprofile-toolbar-button").click()
    page.locator("#memprofile-panel").wait_for(state="visible", timeout=10_000)
    assert not extension_errors(page.console_errors), page.console_errors
