"""%%memprofile in a real IPython kernel, driven by nbclient as JupyterLab would."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

from memprofile.render.bundle import MIME_TYPE
from tests.kernels import kernel_env

pytestmark = pytest.mark.kernel
ROOT = Path(__file__).resolve().parents[2]


def _run(cells: list[str], tmp_path: Path, allow_errors: bool = False):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(c) for c in cells]
    client = NotebookClient(
        nb,
        timeout=300,
        kernel_name="python3",
        allow_errors=allow_errors,
        resources={"metadata": {"path": str(tmp_path)}},
    )
    client.execute(env=kernel_env())
    return nb


def _bundles(cell) -> list[dict]:
    return [o["data"] for o in cell.outputs if o.get("output_type") in ("display_data", "execute_result")]


class Kernel:
    """One kernel the tests in this module share (a plain one: no VSCODE_PID in its environment): each
    test runs its cells after the others' as in one notebook, and checks only what its own cells did."""

    def __init__(self, client: NotebookClient):
        self.client = client

    def run(self, source: str):
        """Run one cell; a cell that raises raises CellExecutionError, as nbclient's execute() does."""
        cell = nbformat.v4.new_code_cell(source)
        self.client.nb.cells.append(cell)
        try:
            self.client.execute_cell(cell, len(self.client.nb.cells) - 1)
        finally:
            self.client.set_widgets_metadata()
        return cell


@pytest.fixture(scope="module")
def kernel(tmp_path_factory):
    # the tests sharing it stay on one xdist worker (xdist_group below): one kernel start, not three
    client = NotebookClient(
        nbformat.v4.new_notebook(),
        timeout=300,
        kernel_name="python3",
        resources={"metadata": {"path": str(tmp_path_factory.mktemp("kernel"))}},
    )
    env = {k: v for k, v in kernel_env().items() if k != "VSCODE_PID"}
    with client.setup_kernel(env=env):
        Kernel(client).run("%load_ext memprofile")
        yield Kernel(client)


@pytest.mark.xdist_group("integration-kernel")
def test_profiled_cell_in_a_kernel(kernel):
    profiled = kernel.run("%%memprofile --name grow\nimport numpy as np\nkeep = np.ones(32 * 2**20 // 8)\nkeep.nbytes")
    after = kernel.run(
        "import memprofile\np = memprofile.last()\n"
        "(p.name, keep.nbytes, p.device('host').end_bytes - p.device('host').baseline_bytes >= 30 * 2**20)"
    )
    summary = next(b[MIME_TYPE] for b in _bundles(profiled) if MIME_TYPE in b)
    assert summary["name"] == "grow" and summary["peak_bytes"] > 32 * 2**20
    assert {"text/html", "text/plain"} <= set(next(b for b in _bundles(profiled) if MIME_TYPE in b))
    # the cell's own value is its Out[] after the profile
    assert _bundles(profiled)[-1]["text/plain"] == str(32 * 2**20)
    assert _bundles(after)[-1]["text/plain"] == f"('grow', {32 * 2**20}, True)"


@pytest.mark.xdist_group("integration-kernel")
def test_raising_cell_stores_profile_then_fails_the_cell(kernel):
    # GIVEN a profiled cell that raises: THEN the cell fails (nbclient raises, as a notebook run stops there)
    with pytest.raises(CellExecutionError, match="ZeroDivisionError"):
        kernel.run("%%memprofile\nx = 1\n1 / 0")
    failed = kernel.client.nb.cells[-1]
    # AND its outputs are the error and the card of the stored profile, and the kernel goes on with x bound
    after = kernel.run("import memprofile\nmemprofile.last().error['type'], x")
    assert any(o["output_type"] == "error" and o["ename"] == "ZeroDivisionError" for o in failed.outputs)
    summary = next(b[MIME_TYPE] for b in _bundles(failed) if MIME_TYPE in b)
    assert summary["error"]["type"] == "ZeroDivisionError"
    assert _bundles(after)[-1]["text/plain"] == "('ZeroDivisionError', 1)"


def test_demo_notebook_runs_and_writes_its_report(tmp_path):
    source = ROOT / "demo_notebooks" / "quickstart.ipynb"
    nb = nbformat.read(source, as_version=4)
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute(
        env=kernel_env()
    )
    report = tmp_path / "quickstart_report.html"
    html = report.read_text()
    assert "memprofile · spike" in html and "Peak" in html
    train = next(c for c in nb.cells if c.source.startswith("%%memprofile --name train"))
    summary = next(b[MIME_TYPE] for b in _bundles(train) if MIME_TYPE in b)
    assert summary["peak_bytes"] > 0 and summary["error"] is None
    tried = next(c for c in nb.cells if c.source.startswith("%%memprofile --name blocks --try checkpoint"))
    html = "".join(b.get("text/html", "") for b in _bundles(tried))
    # the demo's optimizer makes its state in the first run: the second, warm run is compared
    assert "blocks (as is, warm) → blocks (--try checkpoint)" in html and "peak -" in html
    assert "compared the second, warm run as is" in html
    fit = next(c for c in nb.cells if c.source.startswith("%%memprofile --name keras-fit"))
    summary = next(b[MIME_TYPE] for b in _bundles(fit) if MIME_TYPE in b)
    assert summary["peak_device"] == "tf:CPU:0" and summary["by_category"]["optimizer_state"] > 0


def test_vscode_like_frontends_get_the_widget_view_beside_the_card(tmp_path, monkeypatch):
    from memprofile.jupyter.display import WIDGET_MIME_TYPE

    # GIVEN a kernel started the way VS Code starts one (VSCODE_PID in its environment)
    monkeypatch.setenv("VSCODE_PID", "4242")
    nb = _run(["%load_ext memprofile", "%%memprofile --name vs\nimport numpy as np\nkeep = np.ones(2**20)"], tmp_path)
    (bundle,) = [b for b in _bundles(nb.cells[1]) if MIME_TYPE in b]
    # THEN the output carries the widget (for VS Code), the card and the static HTML (for the rest)
    assert {WIDGET_MIME_TYPE, "text/html", "text/plain"} <= set(bundle)
    model_id = bundle[WIDGET_MIME_TYPE]["model_id"]
    state = nb.metadata["widgets"]["application/vnd.jupyter.widget-state+json"]["state"]
    assert state[model_id]["model_name"] == "TabModel"
    assert any("Peak" in str(m["state"].get("value", "")) for m in state.values())


@pytest.mark.xdist_group("integration-kernel")
def test_plain_kernels_get_no_widget(kernel):
    from memprofile.jupyter.display import WIDGET_MIME_TYPE

    profiled = kernel.run("%%memprofile\nx = 1")
    (bundle,) = [b for b in _bundles(profiled) if MIME_TYPE in b]
    assert WIDGET_MIME_TYPE not in bundle and "widgets" not in kernel.client.nb.metadata
