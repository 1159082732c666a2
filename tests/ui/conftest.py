"""Real `jupyter lab` and `jupyter notebook` (7) servers and Debian's chromium driven by Playwright.

Playwright never downloads a browser here: it launches /usr/bin/chromium
(override with MEMPROFILE_CHROMIUM). Screenshots go to artifacts/ui/.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = ROOT / "artifacts" / "ui"
#: Console errors JupyterLab itself logs, whatever the extension does: its debugger
#: asks a kernel for its state on every session change and logs this when a restart
#: or a reload cancels the request (seen once in CI, during the panel's restart phase).
LAB_OWN_ERRORS = ("Could not restore the debugger state",)


def extension_errors(errors: list[str]) -> list[str]:
    """The console errors that are not JupyterLab's own (LAB_OWN_ERRORS)."""
    return [e for e in errors if not any(known in e for known in LAB_OWN_ERRORS)]


CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def chromium_path() -> str:
    path = os.environ.get("MEMPROFILE_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(path).exists():
        pytest.fail("Debian's chromium is missing: scripts/setup.sh installs it with apt-get")
    return path


def _jupyter_server(tmp_path_factory, app: str, module: str, app_class: str):
    """Start `python -m <module>` (a JupyterLab-based app) on a free port, isolated
    from the user's settings; yield how to reach it, then stop it."""
    root = tmp_path_factory.mktemp(f"{app}-root")
    home = tmp_path_factory.mktemp(f"{app}-home")
    port = _free_port()
    token = "memprofile-ui-test"
    # The news prompt would cover part of every screenshot.
    (home / "config" / "labconfig").mkdir(parents=True)
    (home / "config" / "labconfig" / "page_config.json").write_text(
        json.dumps({"disabledExtensions": {"@jupyterlab/apputils-extension:announcements": True}})
    )
    env = {
        **os.environ,
        "JUPYTER_CONFIG_DIR": str(home / "config"),
        "JUPYTER_RUNTIME_DIR": str(home / "runtime"),
        "IPYTHONDIR": str(home / "ipython"),
        # kernels a test adds (data/kernels/NAME/kernel.json) are found there
        "JUPYTER_PATH": str(home / "data"),
    }
    # its kernels forward C++'s fd output into cells, as a user's do (tests/kernels.py)
    env.pop("PYTEST_CURRENT_TEST", None)
    log_path = home / f"{app}.log"
    log = open(log_path, "w")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            module,
            "--no-browser",
            "--allow-root",
            f"--port={port}",
            "--ip=127.0.0.1",
            f"--IdentityProvider.token={token}",
            f"--ServerApp.root_dir={root}",
            f"--{app_class}.user_settings_dir={home / 'settings'}",
            f"--{app_class}.workspaces_dir={home / 'workspaces'}",
            "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
        ],
        cwd=root,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while True:
        try:
            urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=2)
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail(f"jupyter {app} did not start:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.3)
    yield {"base": base, "token": token, "root": root, "log": log_path, "kernels": home / "data" / "kernels"}
    proc.terminate()
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()


@pytest.fixture(scope="session")
def lab_server(tmp_path_factory):
    """A JupyterLab server on a free port, isolated from the user's settings."""
    yield from _jupyter_server(tmp_path_factory, "lab", "jupyterlab", "LabApp")


@pytest.fixture(scope="session")
def notebook_server(tmp_path_factory):
    """A Jupyter Notebook 7 server (`jupyter notebook`), isolated the same way."""
    try:
        from notebook import __version__ as version
    except ImportError:
        version = "none"
    if not version.startswith("7."):
        pytest.fail(f"Notebook 7 is missing (found {version}): it is in memprofile's test extra")
    yield from _jupyter_server(tmp_path_factory, "notebook", "notebook", "JupyterNotebookApp")


@pytest.fixture(scope="session")
def browser(chromium_path):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=chromium_path, headless=True, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    page = context.new_page()
    page.console_errors = []  # type: ignore[attr-defined]
    page.on("console", lambda m: m.type == "error" and page.console_errors.append(m.text))
    page.on("pageerror", lambda e: page.console_errors.append(f"pageerror: {e}"))
    # a console "404" names no URL: keep the failed responses' URLs for the message
    page.on("response", lambda r: r.status >= 400 and page.console_errors.append(f"HTTP {r.status} {r.url}"))
    yield page
    context.close()
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    with open(SCREENSHOTS / "console_errors.txt", "a") as f:
        f.writelines(f"{e}\n" for e in page.console_errors)


def screenshot(page, name: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=False)
    return path
