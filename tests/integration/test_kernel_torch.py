"""%%memprofile on PyTorch cells in a real kernel: categories, layers, no noise."""

from __future__ import annotations

import pytest

from memprofile.render.bundle import MIME_TYPE
from tests.integration.test_kernel import _bundles, _run
from tests.kernels import framework_messages, unprofiled

pytestmark = pytest.mark.kernel
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
    # no C++ or Python noise from the profiler in the cell's output: no line of a framework's log
    # (kineto's USDT lines; on a CUDA build without a GPU its gpuGetDeviceCount ERROR, which
    # scripts/compat.sh's CUDA rows run), no "Memory block of unknown size"
    assert framework_messages(train) == []
    assert not [o for o in train.outputs if o["output_type"] == "error"]
    summary = next(b[MIME_TYPE] for b in _bundles(train) if MIME_TYPE in b)
    assert summary["peak_device"] == "cpu"
    assert summary["by_category"]["parameter"] > 0 and summary["by_category"]["optimizer_state"] > 0
    assert _bundles(nb.cells[3])[-1]["text/plain"] == "(True, True, True, True, ['0', '1', '2', 'model'])"


USERS_OWN = """\
%%memprofile --name own-log
import os
os.write(2, b"E0000 00:00:1765000000.000000 1 my_loader.cc:7] the user's own native log line\\n")
model(x).sum().backward()
print("done", flush=True)
"""


def test_the_frameworks_print_in_a_profiled_cell_what_they_print_bare(tmp_path):
    # GIVEN fresh kernels (the first profiler start and stop of a process: kineto logs the most then),
    # the same cells run bare and profiled
    cells = [SETUP, USERS_OWN, TRAIN]
    bare = _run([unprofiled(c) for c in cells], tmp_path)
    profiled = _run(["%load_ext memprofile", *cells], tmp_path)
    # THEN each cell's framework lines are the same: the line the user's own code wrote, once, and
    # nothing of the profiler (kineto's; on a CUDA build without a GPU its gpuGetDeviceCount ERROR,
    # which scripts/compat.sh's CUDA rows run; c10's "Memory block of unknown size")
    own = "my_loader.cc:7] the user's own native log line"
    assert framework_messages(bare.cells[1]) == [own]
    for i, cell in enumerate(cells):
        assert framework_messages(profiled.cells[i + 1]) == framework_messages(bare.cells[i]), cell
    assert "done" in "".join(o.get("text", "") for o in profiled.cells[2].outputs if o["output_type"] == "stream")
    for cell in profiled.cells[2:]:  # and each profiled cell has its card
        assert any(MIME_TYPE in b for b in _bundles(cell))
