"""Issue 14: the kernel's resident memory climbed from 0.97 to 4.18 GiB over
six profiled training cells and stayed there (malloc_trim(0) gave it back),
and a later cell's headline was the host's swollen peak.

A real IPython kernel (jupyter_client), real torch and Keras: six profiled
cells, each a torch training loop and a Keras fit; the kernel's resident
memory after the sixth must be within 100 MB of what it was after the first."""

from __future__ import annotations

import json

import pytest
from jupyter_client.manager import start_new_kernel

from tests.kernels import kernel_env

pytestmark = pytest.mark.kernel
pytest.importorskip("torch")
pytest.importorskip("tensorflow")

TOLERANCE_BYTES = 100 * 2**20
RUNS = 6

SETUP = """\
%load_ext memprofile
import numpy as np, torch, keras
from torch import nn
torch.manual_seed(0)
net = nn.Sequential(nn.Linear(512, 1024), nn.ReLU(), nn.Linear(1024, 10))
opt = torch.optim.Adam(net.parameters())
tx, ty = torch.randn(256, 512), torch.randint(0, 10, (256,))
clf = keras.Sequential([keras.Input((512,)), keras.layers.Dense(1024, activation="relu"), keras.layers.Dense(10)])
clf.compile("adam", "mse")
kx, ky = np.random.rand(2048, 512).astype("float32"), np.random.rand(2048, 10).astype("float32")
"""

TRAIN = """\
%%memprofile
for _ in range(20):
    opt.zero_grad(set_to_none=True)
    nn.functional.cross_entropy(net(tx), ty).backward()
    opt.step()
clf.fit(kx, ky, batch_size=128, epochs=2, verbose=0)
"""

RSS = """\
import json
print(json.dumps({"rss": int(open('/proc/self/statm').read().split()[1]) * __import__('os').sysconf('SC_PAGE_SIZE')}))
"""


def _execute(client, code: str) -> str:
    """Run code in the kernel; its stdout, or the error it raised as a failure."""
    out: list[str] = []
    errors: list[str] = []

    def hook(msg):
        if msg["msg_type"] == "stream" and msg["content"]["name"] == "stdout":
            out.append(msg["content"]["text"])
        elif msg["msg_type"] == "error":
            errors.append(f"{msg['content']['ename']}: {msg['content']['evalue']}")

    reply = client.execute_interactive(code, output_hook=hook, timeout=600)
    assert reply["content"]["status"] == "ok", errors
    return "".join(out)


def _rss(client) -> int:
    return json.loads(_execute(client, RSS).strip().splitlines()[-1])["rss"]


@pytest.fixture
def kernel_client(tmp_path):
    manager, client = start_new_kernel(kernel_name="python3", cwd=str(tmp_path), env=kernel_env())
    try:
        yield client
    finally:
        client.stop_channels()
        manager.shutdown_kernel(now=True)


def test_rss_after_six_profiled_training_cells_stays_put(kernel_client):
    _execute(kernel_client, SETUP)
    after = []
    for _ in range(RUNS):
        _execute(kernel_client, TRAIN)
        after.append(_rss(kernel_client))
    growth = after[-1] - after[0]
    assert growth <= TOLERANCE_BYTES, f"RSS after each run (MiB): {[round(r / 2**20) for r in after]}"
