"""The live feed against a real kernel (jupyter_client), read as the panel reads it: the
comm's live pushes on iopub, and the card's display updates under the running cell."""

from __future__ import annotations

import json
import queue
import time
import uuid

import pytest
from jupyter_client.manager import start_new_kernel

from tests.kernels import kernel_env

pytestmark = pytest.mark.kernel

TRAIN = """\
import time, torch
torch.manual_seed(0)
model = torch.nn.Linear(256, 256)
opt = torch.optim.SGD(model.parameters(), lr=0.01)
kept = []
t0 = time.time()
while time.time() - t0 < {seconds}:
    loss = model(torch.randn(64, 256)).sum()
    loss.backward()
    opt.step()
    opt.zero_grad()
    {keep}
    time.sleep({pause})
"""


def train(seconds: float, keep: str = "pass", pause: float = 0.005) -> str:
    return TRAIN.format(seconds=seconds, keep=keep, pause=pause)


class Client:
    """A frontend: it runs cells, talks to the memprofile comm, and keeps every iopub message."""

    def __init__(self, kc):
        self.kc = kc
        self.comm_id: str | None = None
        self.iopub: list[tuple[float, dict]] = []  # (when it arrived, the message)

    def _read(self, timeout: float) -> dict | None:
        try:
            msg = self.kc.get_iopub_msg(timeout=timeout)
        except queue.Empty:
            return None
        self.iopub.append((time.monotonic(), msg))
        content = msg["content"]
        if msg["header"]["msg_type"] == "comm_open" and content.get("target_name") == "memprofile":
            self.comm_id = content["comm_id"]
        return msg

    def execute(self, code: str, timeout: float = 180) -> dict:
        msg_id = self.kc.execute(code)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:  # until the cell's idle status: every output read
            msg = self._read(0.5)
            if (
                msg is not None
                and msg["header"]["msg_type"] == "status"
                and msg["parent_header"].get("msg_id") == msg_id
                and msg["content"]["execution_state"] == "idle"
            ):
                reply = self.kc.get_shell_msg(timeout=timeout)
                assert reply["content"]["status"] == "ok", reply["content"]
                return reply["content"]
        raise TimeoutError(code)

    def request(self, data: dict) -> dict:
        request_id = uuid.uuid4().hex
        self.kc.shell_channel.send(
            self.kc.session.msg("comm_msg", {"comm_id": self.comm_id, "data": {**data, "request_id": request_id}})
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            msg = self._read(0.5)
            if msg is not None and msg["header"]["msg_type"] == "comm_msg":
                if msg["content"]["data"].get("request_id") == request_id:
                    return msg["content"]["data"]
        raise TimeoutError(data)

    def pushed(self, since: int = 0) -> list[tuple[float, dict]]:
        """The comm's pushes of the live feed, with when each arrived."""
        out = []
        for when, msg in self.iopub[since:]:
            if msg["header"]["msg_type"] == "comm_msg" and msg["content"].get("comm_id") == self.comm_id:
                data = msg["content"]["data"]
                if data.get("type", "").startswith("live") and "request_id" not in data:
                    out.append((when, data))
        return out

    def value(self, expression: str):
        """A JSON value computed in the kernel."""
        start = len(self.iopub)
        self.execute(f"import json as _j\nprint(_j.dumps({expression}))")
        text = "".join(m["content"]["text"] for _, m in self.iopub[start:] if m["header"]["msg_type"] == "stream")
        return json.loads(text.strip().splitlines()[-1])


@pytest.fixture
def client(tmp_path):
    km, kc = start_new_kernel(kernel_name="python3", cwd=str(tmp_path), env=kernel_env())
    try:
        c = Client(kc)
        c.execute("%load_ext memprofile")
        assert c.comm_id, "no memprofile comm was opened"
        yield c
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)


PROFILE_FIGURES = (
    "{'devices': {d.name: d.peak_bytes for d in memprofile.last().devices}, "
    "'steps': len(memprofile.last().steps), 'id': memprofile.last().id}"
)


def test_a_training_cell_is_fed_live_and_agrees_with_its_profile(client):
    assert client.request({"type": "live", "on": True})["type"] == "live_state"
    client.execute("import memprofile, torch")
    start = len(client.iopub)
    client.execute("%%memprofile -q --name live3\n" + train(3.0))
    figures = client.value(PROFILE_FIGURES)
    pushed = [m for _, m in client.pushed(start)]
    kinds = [m["type"] for m in pushed]
    assert kinds[0] == "live_start" and kinds[-1] == "live_end" and set(kinds[1:-1]) == {"live"}
    assert pushed[-1]["profile_id"] == figures["id"]
    samples = [s for m in pushed if m["type"] == "live" for s in m["samples"]]
    seconds = samples[-1]["t"]
    assert seconds >= 3.0 and len(samples) >= 8 * seconds, (len(samples), seconds)
    for s in samples:
        for d in s["devices"]:
            assert d["max_in_use_bytes"] <= figures["devices"][d["name"]], (d, figures)
        for name, peak in s["step_peak_bytes"].items():
            assert peak <= figures["devices"][name]
    assert samples[-1]["step"] == figures["steps"] > 50
    steps = [s["step"] for s in samples]
    assert steps == sorted(steps) and steps[len(steps) // 2] > 0  # it counts while the cell runs


def test_steady_growth_warns_of_the_step_it_fills_before_the_cell_ends(client):
    client.request({"type": "live", "on": True})
    rss = client.value("__import__('psutil').Process().memory_info().rss")
    capacity = rss + (400 << 20)  # ~150 steps of 2 MiB away, past the torch profiler's own
    start = len(client.iopub)
    client.execute(
        f"%%memprofile -q --capacity {capacity}\n" + train(3.0, keep="kept.append(torch.ones(512 * 1024))", pause=0.03)
    )
    pushed = [m for _, m in client.pushed(start)]
    end = next(i for i, m in enumerate(pushed) if m["type"] == "live_end")
    warned = [w for m in pushed[:end] if m["type"] == "live" for w in m["warnings"] if "per step" in w]
    assert warned, [m.get("warnings") for m in pushed]
    last = warned[-1]
    assert last.startswith("at +2.") and "MiB per step, host is full in about" in last and "(step " in last, last


def test_nothing_is_fed_without_a_live_request_nor_after_it_is_turned_off(client):
    client.execute("import memprofile, torch")
    start = len(client.iopub)
    client.execute("%%memprofile -q\n" + train(1.5))
    assert client.pushed(start) == []
    client.request({"type": "live", "on": True})
    start = len(client.iopub)
    client.execute("%%memprofile -q\n" + train(1.5))
    assert len(client.pushed(start)) > 10  # the same cell is fed once asked
    assert client.request({"type": "live", "on": False}) == {
        "type": "live_state",
        "start": None,
        "samples": [],
        "warnings": [],
        "request_id": client.iopub[-1][1]["content"]["data"]["request_id"],
    }
    start = len(client.iopub)
    client.execute("%%memprofile -q\n" + train(1.5))
    assert client.pushed(start) == []


def _card_lines(client: Client, start: int) -> tuple[list[str], list[str]]:
    """(the card's displays, its updates): the text of each under the cell."""
    shown, updated = [], []
    for _, m in client.iopub[start:]:
        kind, content = m["header"]["msg_type"], m["content"]
        if kind in ("display_data", "update_display_data") and "memprofile-live" in str(
            content.get("transient", {}).get("display_id", "")
        ):
            (shown if kind == "display_data" else updated).append(content["data"]["text/plain"])
    return shown, updated


def test_the_card_under_a_long_cell_is_updated_and_a_short_cell_shows_none(client):
    client.execute("import memprofile, torch")
    start = len(client.iopub)
    client.execute("%%memprofile\n" + train(2.5))
    shown, updated = _card_lines(client, start)
    assert len(shown) == 1 and shown[0].startswith("memprofile · running 1.") and "host " in shown[0]
    running = [u for u in updated if u.startswith("memprofile · running")]
    assert len(running) >= 2 and "step " in running[-1], updated
    assert updated[-1].startswith("memprofile · ran "), updated[-1]  # the quiet line at the end
    start = len(client.iopub)
    client.execute("%%memprofile\n" + train(0.2))
    assert _card_lines(client, start) == ([], [])
    # -q ("store the profile without displaying it"): no line under a long cell either
    start = len(client.iopub)
    client.execute("%%memprofile -q\n" + train(1.5))
    assert _card_lines(client, start) == ([], [])
