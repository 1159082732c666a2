"""One moment per number: a cell that frees memory before it works keeps
its breakdown (its work's own peak, said next to the headline); the end of
a cell is its end even where the detail ended before it. Cells in a real
IPython shell."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from tests.cells import run_cell as _run  # noqa: E402

MiB = 2**20

SETUP = """
import torch
from torch import nn
torch.manual_seed(0)
big = torch.ones(64 * 2**20)  # 256 MiB from an earlier cell
model = nn.Sequential(nn.Linear(512, 2048), nn.ReLU(), nn.Linear(2048, 10))
opt = torch.optim.Adam(model.parameters())
x, y = torch.randn(256, 512), torch.randint(0, 10, (256,))
"""
TRAIN = """\
for step in range(5):
    opt.zero_grad()
    loss = nn.functional.cross_entropy(model(x), y)
    loss.backward()
    opt.step()
"""


def test_a_cell_that_frees_before_it_works_keeps_its_breakdown(ip, fresh_store):
    _run(ip, SETUP)
    p = _run(ip, "%%memprofile -q -n freefirst\ndel big\n" + TRAIN)
    _run(ip, "big = None")
    q = _run(ip, "%%memprofile -q -n plain\n" + TRAIN)
    # THEN the headline is on the framework's device, with the kinds, lines and steps of the work
    assert p.peak_device.name == "cpu" and p.peak.device == "cpu"
    assert p.peak.by_category.get("optimizer_state", 0) >= 8 * MiB and p.peak.by_category.get("gradient", 0) >= 4 * MiB
    assert set(p.peak.by_line) & {4, 5, 6} and len(p.steps) == 5 and p.layers
    # AND the breakdown is the work's own peak, as in a cell that freed nothing, and the card says so
    assert p.peak.bytes == pytest.approx(q.peak.bytes, rel=0.05)
    assert p.peak_scope and "freed memory before it worked" in p.peak_scope and "256.0 MiB" not in p.peak_scope
    assert p.device("cpu").peak_bytes >= 256 * MiB  # the most live was at the start: the 256 MiB tensor


def test_a_cell_that_frees_and_makes_almost_nothing_has_no_working_peak(ip, fresh_store):
    _run(ip, SETUP)
    # GIVEN a cell that frees 256 MiB and makes 16 bytes on torch, and 64 MiB elsewhere (numpy)
    p = _run(ip, "%%memprofile -q -n tiny\ndel big\ny = torch.zeros(4)\nimport numpy as np\narr = np.ones(8 * 2**20)\n")
    # THEN torch's 16 B are no breakdown to show: the process is the headline, as for any cell
    # whose framework device did not grow
    assert "working_peak_bytes" not in p.device("cpu").allocator_stats
    assert p.peak_device.name == "host"
