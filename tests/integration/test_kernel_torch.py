"""%%memprofile on PyTorch cells in a real kernel: categories, layers, no noise."""

from __future__ import annotations

import pytest

from memprofile.render.bundle import MIME_TYPE
from tests.integration.test_kernel import _bundles, _run

pytestmark = pytest.mark.integration
pytest.importorskip("torch")

SETUP = """\
import torch
from torch import nn
torch.manual_seed(0)
model = nn.Sequential(nn.Linear(256, 512), nn.ReLU(), nn.Linear(512, 10))
opt = torch.optim.Adam(model.parameters())
x, y = torch.randn(64, 256), torch.randint(0, 10, (64,))
old = torch.empty(2**20)
PARAMS = sum(p.numel() * p.element_size() for p in model.parameters())
"""

TRAIN = """\
%%memprofile --name train
for _ in range(2):
    opt.zero_grad(set_to_none=True)
    nn.functional.cross_entropy(model(x), y).backward()
    opt.step()
del old  # a tensor from before the cell, freed in it (at its end: the peak is the training's)
"""

CHECK = """\
import memprofile
p = memprofile.last()
c = p.peak.by_category
(c["parameter"] == PARAMS, c["gradient"] == PARAMS, abs(c["optimizer_state"] - 2 * PARAMS) < 0.01 * PARAMS,
 p.device("cpu").baseline_by_category.get("parameter") == PARAMS, sorted(l.name for l in p.layers))
"""


def test_training_cell_in_a_kernel(tmp_path):
    nb = _run(["%load_ext memprofile", SETUP, TRAIN, CHECK], tmp_path)
    train = nb.cells[2]
    # no C++ or Python noise from the profiler in the cell's output
    streams = "".join(o.get("text", "") for o in train.outputs if o["output_type"] == "stream")
    assert "Memory block of unknown size" not in streams and "USDT" not in streams, streams
    assert not [o for o in train.outputs if o["output_type"] == "error"]
    summary = next(b[MIME_TYPE] for b in _bundles(train) if MIME_TYPE in b)
    assert summary["peak_device"] == "cpu"
    assert summary["by_category"]["parameter"] > 0 and summary["by_category"]["optimizer_state"] > 0
    assert _bundles(nb.cells[3])[-1]["text/plain"] == "(True, True, True, True, ['0', '1', '2', 'model'])"
