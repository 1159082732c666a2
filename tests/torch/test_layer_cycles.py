"""A model bound to a name one of its own children has (`classifier = BertForSequenceClassification(...)`,
whose head is `.classifier`) made its child its root's parent: every walk up the tree looped, and the
profile hung after the cell (autocast_model._ancestors) or raised RecursionError (checkpointing)."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from tests.cells import run_cell as _run  # noqa: E402

# the shell is the session's: the names these cells bind are put back after each test
pytestmark = pytest.mark.usefixtures("names_back")


SETUP = """
import torch
from torch import nn
class Wrapper(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(64, 64), nn.ReLU())
        self.classifier = nn.Linear(64, 2)
    def forward(self, x):
        return self.classifier(self.body(x))
x = torch.randn(8, 64)
"""
CELL = """\
classifier = Wrapper()
adam = torch.optim.Adam(classifier.parameters())
classifier(x).sum().backward()
adam.step()
"""


@pytest.mark.parametrize("built_before", [False, True])
def test_a_model_named_like_its_own_child_is_a_tree(ip, fresh_store, built_before):
    _run(ip, SETUP)
    if built_before:
        _run(ip, CELL)
    p = _run(ip, "%%memprofile -q -n named\n" + CELL)
    parents = {layer.name: layer.parent for layer in p.layers}
    assert all(parent != name for name, parent in parents.items()), parents
    for name in parents:  # every walk up ends at a root
        seen = set()
        while name is not None:
            assert name not in seen, parents
            seen.add(name)
            name = parents.get(name)
