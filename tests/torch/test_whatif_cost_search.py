"""The prediction's cost: the largest-batch search makes few fake runs and still finds the
boundary (the largest batch that fits, one more does not)."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

import memprofile.whatif.predict as predict_module  # noqa: E402
from tests.cells import run_cell as _run  # noqa: E402

# the shell is the session's: the names these cells bind are put back after each test
pytestmark = pytest.mark.usefixtures("names_back")

SETUP = """
import torch
from torch import nn
torch.manual_seed(0)
cost_net = nn.Sequential(nn.Linear(256, 512), nn.ReLU(), nn.Linear(512, 10))
cost_opt = torch.optim.Adam(cost_net.parameters())
cost_x, cost_y = torch.randn(8, 256), torch.randint(0, 10, (8,))
"""
CELL = """
cost_opt.zero_grad()
torch.nn.functional.cross_entropy(cost_net(cost_x), cost_y).backward()
cost_opt.step()
"""


@pytest.mark.parametrize("device", ["T4", 2 << 30])
def test_the_largest_batch_takes_a_few_fake_runs_and_is_the_boundary(ip, fresh_store, monkeypatch, device):
    # GIVEN an MLP's training step profiled at batch 8, the fake runs a prediction makes counted
    _run(ip, SETUP)
    _run(ip, CELL)
    small = _run(ip, "%%memprofile -q -n cost\n" + CELL)
    runs: list[float] = []
    real_run = predict_module.fake_run

    def counted(*args, **kwargs):
        runs.append(kwargs.get("batch", 1.0))
        return real_run(*args, **kwargs)

    monkeypatch.setattr(predict_module, "fake_run", counted)
    # WHEN the largest batch that fits the device is searched
    pred = small.predict(device, batch="4x")
    # THEN it took the asked size's run and at most 4 more (memory is affine in the batch
    # between the allocator's steps: a secant's guess and its neighbour; it took 7-15)
    assert pred.largest_batch and pred.largest_batch > 32
    assert len(runs) <= 5, str([round(r * 8) for r in runs])
    # AND it is the boundary: that batch fits, one more does not
    assert small.predict(device, batch=pred.largest_batch, largest_batch=False).fits
    assert not small.predict(device, batch=pred.largest_batch + 1, largest_batch=False).fits
