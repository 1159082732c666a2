"""The panel's comm against a real kernel (jupyter_client), as JupyterLab talks to it."""

from __future__ import annotations

import json
import queue
import re
import time
import uuid
from pathlib import Path

import pytest
from jupyter_client.manager import start_new_kernel

from tests.kernels import kernel_env

pytestmark = pytest.mark.kernel


class Panel:
    """The frontend's half of the comm: the messages a JupyterLab panel sends and gets."""

    def __init__(self, kc):
        self.kc = kc
        self.comm_id = None
        self.pushed: list[dict] = []

    def execute(self, code: str, timeout: float = 120) -> dict:
        msg_id = self.kc.execute(code)
        reply = self.kc.get_shell_msg(timeout=timeout)
        while reply["parent_header"].get("msg_id") != msg_id:
            reply = self.kc.get_shell_msg(timeout=timeout)
        self.drain()
        return reply["content"]

    def drain(self, until=None, timeout: float = 60) -> dict | None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                msg = self.kc.get_iopub_msg(timeout=0.2)
            except queue.Empty:
                if until is None:
                    return None
                continue
            kind, content = msg["header"]["msg_type"], msg["content"]
            if kind == "comm_open" and content.get("target_name") == "memprofile":
                self.comm_id = content["comm_id"]
            elif kind == "comm_msg" and content.get("comm_id") == self.comm_id:
                data = content["data"]
                if until is not None and until(data):
                    return data
                self.pushed.append(data)
        if until is not None:
            raise TimeoutError("no reply from the kernel's memprofile comm")
        return None

    def request(self, data: dict, timeout: float = 120) -> dict:
        request_id = uuid.uuid4().hex
        self.kc.shell_channel.send(
            self.kc.session.msg("comm_msg", {"comm_id": self.comm_id, "data": {**data, "request_id": request_id}})
        )
        return self.drain(until=lambda d: d.get("request_id") == request_id, timeout=timeout)


@pytest.fixture
def panel(tmp_path):
    km, kc = start_new_kernel(kernel_name="python3", cwd=str(tmp_path), env=kernel_env())
    try:
        yield Panel(kc)
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)


def test_the_panel_gets_profiles_as_they_come_and_on_request(panel, tmp_path):
    panel.execute("%load_ext memprofile")
    assert panel.comm_id, "no memprofile comm was opened"
    panel.execute("%%memprofile --name first\nimport numpy as np\nkeep = np.ones(2**22)")
    added = [m for m in panel.pushed if m["type"] == "added"]
    assert [m["summary"]["name"] for m in added] == ["first"]
    panel.execute("%%memprofile -q --name second\nmore = np.ones(2**21)")
    # a panel that attaches late (a page reload) asks for the list
    listing = panel.request({"type": "sync"})
    assert [s["name"] for s in listing["items"]] == ["first", "second"] and listing["capacity"] == 50
    first = listing["items"][0]
    full = panel.request({"type": "get_profile", "id": first["id"]})
    assert set(full["views"]) == {"timeline", "peak", "layers", "ops"}
    assert full["views"]["timeline"]["doc"]["roots"] and full["summary"]["name"] == "first"
    import bokeh

    assert full["bokeh_version"] == bokeh.__version__
    # the BokehJS that draws them is the kernel's own: bokeh, widgets, tables, registering as that version
    bokehjs = panel.request({"type": "bokehjs"})
    assert bokehjs["type"] == "bokehjs_scripts" and bokehjs["version"] == bokeh.__version__
    core, widgets, tables = bokehjs["scripts"]
    assert f'"{bokeh.__version__}"' in core and "register_plugin" in widgets and "register_plugin" in tables
    comparison = panel.request({"type": "compare", "a": first["id"], "b": listing["items"][1]["id"]})
    assert comparison["a_name"] == "first" and comparison["headline"].startswith("peak ")
    exported = panel.request({"type": "export", "id": first["id"], "path": "first.html"})
    assert Path(exported["path"]) == tmp_path / "first.html" and (tmp_path / "first.html").stat().st_size > 100_000
    # errors come back as messages; the kernel carries on
    assert panel.request({"type": "get_profile", "id": "nope"})["type"] == "error"
    assert "unknown request" in panel.request({"type": "frobnicate"})["message"]
    panel.execute("%memprofile clear")
    assert panel.pushed[-1]["type"] == "cleared"


def test_try_from_the_panel_runs_the_cell_and_reports_the_measurement(panel):
    panel.execute("%load_ext memprofile")
    panel.execute(
        "import torch\nfrom torch import nn\ntorch.manual_seed(0)\nruns = 0\n"
        "net = nn.Sequential(*[nn.Sequential(nn.LayerNorm(256), nn.Linear(256, 1024), nn.GELU(), "
        "nn.Linear(1024, 256)) for _ in range(3)])\nxs = torch.randn(2048, 256)"
    )
    panel.execute("%%memprofile -q --name blocks\nruns += 1\nnet(xs).square().mean().backward()")
    (summary,) = panel.request({"type": "sync"})["items"]
    full = panel.request({"type": "get_profile", "id": summary["id"]})
    ckpt = next(s for s in full["suggestions"] if s["id"] == "gradient_checkpointing")
    assert ckpt["can_try"] and ckpt["try_change"].startswith("checkpoint=")
    tried = panel.request({"type": "try", "id": summary["id"], "suggestion": "gradient_checkpointing"})
    assert tried["type"] == "tried" and tried["saving_bytes"] > 0 and tried["headline"].startswith("peak -")
    runs = panel.execute("print(runs)")
    assert runs["status"] == "ok"
    again = panel.request({"type": "get_profile", "id": summary["id"]})
    measured = next(s for s in again["suggestions"] if s["id"] == "gradient_checkpointing")
    assert measured["measured_saving_bytes"] == tried["saving_bytes"]
    assert measured["saving_text"].startswith("measured:")
    assert json.dumps(again)  # plain data all the way
    # The profiled run made the gradients (a cold run), the trial's runs found them: their peaks differ,
    # and the heading the panel shows and the card below it give the one percentage, the comparison's.
    items = {s["name"]: s for s in panel.request({"type": "sync"})["items"]}
    assert items["blocks (as is)"]["peak_bytes"] != summary["peak_bytes"]
    percent = re.compile(r"\(([+-]\d+ %)\)")
    assert (
        percent.findall(tried["headline"])
        == percent.findall(measured["saving_text"])
        == [f"{tried['peak_change_percent']:+.0f} %"]
    )
    assert tried["first"] is None and tried["notes"] == []  # the trial's first run created nothing
    # trying again from a trial's own profile: named after the cell, apart from the first trial
    panel.request({"type": "try", "id": items["blocks (as is)"]["id"], "suggestion": "gradient_checkpointing"})
    names = [s["name"] for s in panel.request({"type": "sync"})["items"]]
    assert names == [
        "blocks",
        "blocks (as is)",
        "blocks (--try checkpoint=0,1,2)",
        "blocks #2 (as is)",
        "blocks #2 (--try checkpoint=0,1,2)",
    ], names
