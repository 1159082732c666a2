"""The panel draws a kernel's views with that kernel's own BokehJS, whatever
its bokeh: the oldest supported (3.4, installed with --no-deps into a folder
put first on the kernel's sys.path) and the newest on the package index (a
kernel of its own on Python 3.12 or newer, which bokeh 3.10 needs; the
development environment's Python may be older). A real JupyterLab, real
kernels and Debian's chromium."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.ui.conftest import ROOT, extension_errors, screenshot
from tests.ui.test_lab import _run_all_cells, _write_notebook

pytestmark = pytest.mark.ui

OLDEST_BOKEH = "3.4.3"
#: The newest bokeh the index has within memprofile's range, at least the first minor no BokehJS was shipped for.
NEWEST_BOKEH = "bokeh>=3.10,<4"


@pytest.fixture(scope="session")
def oldest_bokeh(tmp_path_factory):
    target = tmp_path_factory.mktemp("bokeh-oldest")
    pip = [sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    # what the kernel's environment lacks for that bokeh (pandas for 3.4), the rest is the kernel's own
    report = subprocess.run(
        [*pip, "--dry-run", "--report", "-", f"bokeh=={OLDEST_BOKEH}"], capture_output=True, text=True
    )
    assert report.returncode == 0, report.stderr[-2000:]
    needed = [f"{i['metadata']['name']}=={i['metadata']['version']}" for i in json.loads(report.stdout)["install"]]
    done = subprocess.run([*pip, "--no-deps", "--target", str(target), *needed], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    return target


def _run_notebook(
    lab_server,
    page,
    name: str,
    cells: list[str],
    workspace: str,
    card: str,
    kernel: str = "python3",
    idle_ms: int = 60_000,
):
    """Write the notebook, open it in Lab, run every cell; the card named `card`, once shown."""
    _write_notebook(lab_server["root"], name, cells, kernel)
    page.goto(f"{lab_server['base']}/lab/workspaces/{workspace}/tree/{name}?reset&token={lab_server['token']}")
    page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=60_000)
    page.wait_for_selector("#jp-main-statusbar >> text=Idle", timeout=idle_ms)
    _run_all_cells(page)
    shown = page.locator(".jp-memprofile-card", has_text=card)
    shown.wait_for(timeout=120_000)
    return shown


def test_a_kernel_with_bokeh_3_4_has_its_views_drawn_by_bokehjs_3_4(lab_server, page, oldest_bokeh):
    # GIVEN a kernel whose bokeh is 3.4.3, profiling a small torch step
    cells = [
        f"import sys\nsys.path.insert(0, {str(oldest_bokeh)!r})\nimport bokeh\nprint('bokeh', bokeh.__version__)",
        "%load_ext memprofile",
        "import torch\nnet = torch.nn.Sequential(torch.nn.Linear(128, 512), torch.nn.ReLU(), torch.nn.Linear(512, 8))",
        "%%memprofile --name old-bokeh\nnet(torch.randn(256, 128)).sum().backward()",
    ]
    card = _run_notebook(lab_server, page, "old_bokeh.ipynb", cells, "oldbokeh", card="old-bokeh")
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


def _python_at_least(minor: tuple[int, int]) -> str | None:
    """An interpreter of that minor or newer on this machine (pyenv's, then the PATH's)."""
    candidates = sorted(
        Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")).glob("versions/3.*/bin/python"), reverse=True
    )
    candidates += [Path(p) / f"python3.{m}" for m in (14, 13, 12) for p in os.environ.get("PATH", "").split(":")]
    for exe in candidates:
        try:
            out = subprocess.run(
                [str(exe), "-c", "import sys, venv; print(*sys.version_info[:2])"],
                capture_output=True,
                text=True,
                timeout=30,
            )
        except (OSError, subprocess.TimeoutExpired):
            continue
        if out.returncode == 0 and tuple(int(n) for n in out.stdout.split()) >= minor:
            return str(exe)
    return None


@pytest.fixture(scope="session")
def newest_bokeh_kernel(tmp_path_factory, lab_server):
    """A kernel whose bokeh is 3.10 or newer: this environment's own where it has one (scripts/compat.sh's
    newest row), else one in a venv of its own with the index's newest bokeh and ipykernel (bokeh 3.10
    needs Python 3.12), memprofile from this checkout, added to the lab server's kernels."""
    import bokeh

    if tuple(int(n) for n in bokeh.__version__.split(".")[:2]) >= (3, 10):
        return {"name": "python3", "bokeh": bokeh.__version__}
    python = _python_at_least((3, 12))
    if python is None:
        pytest.skip("no Python 3.12 or newer here: the newest bokeh (3.10) needs one")
    venv = tmp_path_factory.mktemp("kernel-newest-bokeh") / "venv"
    made = subprocess.run([python, "-m", "venv", str(venv)], capture_output=True, text=True)
    assert made.returncode == 0, made.stderr[-2000:]
    exe = venv / "bin" / "python"
    # memprofile's own dependencies, unpinned as a new user gets them
    done = subprocess.run(
        [
            str(exe),
            "-m",
            "pip",
            "install",
            "-q",
            "--disable-pip-version-check",
            NEWEST_BOKEH,
            "ipykernel",
            "psutil>=6,<8",
            "ipython>=8.20",
            "comm>=0.2,<0.3",
        ],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    version = subprocess.run(
        [str(exe), "-c", "import bokeh; print(bokeh.__version__)"], capture_output=True, text=True
    ).stdout.strip()
    spec = lab_server["kernels"] / "newest-bokeh"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(
        json.dumps(
            {
                "argv": [str(exe), "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                "display_name": f"bokeh {version}",
                "language": "python",
                "env": {"PYTHONPATH": str(ROOT / "pyext")},
            }
        )
    )
    return {"name": "newest-bokeh", "bokeh": version}


@pytest.fixture(scope="session")
def torch_profile_file(tmp_path_factory):
    """A real torch profile (made here, where torch is) for a kernel without torch to show."""
    torch = pytest.importorskip("torch")
    import memprofile

    net = torch.nn.Sequential(torch.nn.Linear(128, 512), torch.nn.ReLU(), torch.nn.Linear(512, 8))
    opt = torch.optim.Adam(net.parameters())
    with memprofile.profile(name="torch-step"):
        net(torch.randn(256, 128)).sum().backward()
        opt.step()
    return memprofile.last().save(tmp_path_factory.mktemp("profiles") / "torch-step.memprofile.json.gz")


def test_a_kernel_with_the_newest_bokeh_has_every_view_drawn_by_its_own_bokehjs(
    lab_server, page, newest_bokeh_kernel, torch_profile_file
):
    messages: list[str] = []  # every console message, not only errors
    page.on("console", lambda m: messages.append(f"{m.type}: {m.text}"))
    # GIVEN a kernel whose bokeh is 3.10 or newer: a profile it records, and a torch profile it loads
    cells = [
        "import bokeh\nprint('bokeh', bokeh.__version__)",
        "%load_ext memprofile",
        "%%memprofile --name host-here\nkeep = bytearray(64 * 2**20)",
        f"import memprofile\nfrom memprofile.store import STORE\np = memprofile.load({str(torch_profile_file)!r})\n"
        "STORE.add(p)\np",
    ]
    card = _run_notebook(
        lab_server,
        page,
        "newest_bokeh.ipynb",
        cells,
        "newest",
        card="torch-step",
        kernel=newest_bokeh_kernel["name"],
        idle_ms=90_000,
    )
    version = newest_bokeh_kernel["bokeh"]
    assert tuple(int(n) for n in version.split(".")[:2]) >= (3, 10), version
    assert f"bokeh {version}" in page.locator(".jp-Notebook .jp-Cell").first.inner_text()

    # WHEN the torch profile's card opens the panel
    card.locator(".jp-memprofile-open").click()
    panel = page.locator("#memprofile-panel")
    panel.wait_for(state="visible", timeout=30_000)
    # THEN its Timeline, Peak, Layers and Ops are drawn, by the kernel's BokehJS (its exact version)
    for tab, drawn in (("timeline", "canvas"), ("peak", "canvas"), ("layers", "canvas"), ("ops", ".slick-cell")):
        panel.locator(f".jp-memprofile-tab[data-view='{tab}']").click()
        view = panel.locator(f".jp-memprofile-view[data-view='{tab}']")
        view.locator(drawn).first.wait_for(timeout=30_000)
        if tab == "ops":  # a table: its cells, the ops in rows
            assert view.locator(drawn).count() > 10, view.inner_text()
        else:
            box = view.locator(drawn).first.bounding_box()
            assert box and box["width"] > 100 and box["height"] > 50, (tab, box)
        assert "not drawn" not in view.inner_text() and "Cannot draw" not in view.inner_text()
        if tab == "timeline":
            screenshot(page, "panel_newest_bokeh_timeline")
    screenshot(page, "panel_newest_bokeh_ops")
    loaded = page.evaluate("() => Object.keys(window.Bokeh || {}).filter(k => /^\\d+\\.\\d+\\.\\d+$/.test(k))")
    assert version in loaded, loaded
    # AND the profile this kernel recorded itself is drawn the same way
    panel.locator(
        ".jp-memprofile-item", has=page.locator(".jp-memprofile-item-name", has_text=re.compile(r"^host-here$"))
    ).click()
    panel.locator(".jp-memprofile-tab[data-view='timeline']").click()
    panel.locator(".jp-memprofile-view[data-view='timeline'] canvas").first.wait_for(timeout=30_000)
    # AND nothing is in the console: no error, no version mismatch, no warning from BokehJS
    assert not extension_errors(page.console_errors), page.console_errors
    assert not [m for m in messages if m.startswith(("error", "warning")) or "bokeh" in m.lower()], messages
