"""Regenerate the gallery's pictures (docs/images/gallery/*.png).

Each notebook of demo_notebooks/gallery/ is executed top to bottom by a real
kernel (as tests/gallery/test_gallery.py executes it: in a copy of its folder
beside a link to tests/, so the recorded GPU traces are found and what it writes
stays out of the repository), rendered to HTML by nbconvert (JupyterLab's
template: the cells and their static HTML output, as GitHub or nbviewer show
them), opened in Debian's chromium through Playwright, and the cells tagged
`gallery-picture` are photographed together.

    .venv/bin/python scripts/gallery_pictures.py              # every notebook
    .venv/bin/python scripts/gallery_pictures.py 06_will_it_fit  # one (the file's stem)
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbconvert import HTMLExporter

ROOT = Path(__file__).resolve().parents[1]
GALLERY = ROOT / "demo_notebooks" / "gallery"
PICTURES = ROOT / "docs" / "images" / "gallery"
TAG = "gallery-picture"
#: The picture's width and its highest height, in pixels.
WIDTH, MAX_HEIGHT = 1100, 1400


def chromium() -> str:
    path = os.environ.get("MEMPROFILE_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(path).exists():
        raise SystemExit("Debian's chromium is missing: scripts/setup.sh installs it with apt-get")
    return path


def execute(path: Path, folder: Path) -> nbformat.NotebookNode:
    """Run the notebook with a real kernel in folder/demo_notebooks/gallery (folder/tests links to tests/)."""
    work = folder / "demo_notebooks" / "gallery"
    work.mkdir(parents=True)
    (folder / "tests").symlink_to(ROOT / "tests")
    nb = nbformat.read(path, as_version=4)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTEST_CURRENT_TEST", "MEMPROFILE_WHATIF_BUDGET_S")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    env.setdefault("OMP_NUM_THREADS", "1")  # as the tests run them: small ops on a busy machine wait on threads
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(work)}}).execute(env=env)
    return nb


def picture(nb: nbformat.NotebookNode, out: Path, browser) -> None:
    """The tagged cells of an executed notebook, rendered by nbconvert, as one PNG."""
    if not any(TAG in c.metadata.get("tags", []) for c in nb.cells):
        raise SystemExit(f"{out.stem}: no cell is tagged {TAG!r}")
    html, _ = HTMLExporter(template_name="lab").from_notebook_node(nb)
    with tempfile.TemporaryDirectory() as tmp:
        page_path = Path(tmp) / "notebook.html"
        page_path.write_text(html)
        page = browser.new_page(viewport={"width": WIDTH, "height": 900}, device_scale_factor=1)
        page.goto(page_path.as_uri())
        page.wait_for_load_state("load")
        boxes = [
            page.locator(f".celltag_{TAG}").nth(i).bounding_box()
            for i in range(page.locator(f".celltag_{TAG}").count())
        ]
        top = min(b["y"] for b in boxes) - 8
        bottom = min(max(b["y"] + b["height"] for b in boxes) + 8, top + MAX_HEIGHT)
        page.screenshot(path=str(out), clip={"x": 0, "y": top, "width": WIDTH, "height": bottom - top}, full_page=True)
        page.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", help="notebooks by stem (default: all of demo_notebooks/gallery/)")
    args = parser.parse_args(argv)
    paths = sorted(GALLERY.glob("*.ipynb"))
    if args.names:
        paths = [p for p in paths if p.stem in args.names]
        missing = set(args.names) - {p.stem for p in paths}
        if missing:
            raise SystemExit(f"no such notebook in {GALLERY}: {', '.join(sorted(missing))}")
    from playwright.sync_api import sync_playwright

    PICTURES.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium(), headless=True)
        for path in paths:
            started = time.monotonic()
            with tempfile.TemporaryDirectory() as folder:
                nb = execute(path, Path(folder))
            ran = time.monotonic() - started
            out = PICTURES / f"{path.stem}.png"
            picture(nb, out, browser)
            print(f"{path.name}: ran in {ran:.1f} s; {out.relative_to(ROOT)}")
        browser.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
