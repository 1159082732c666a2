"""Issue 14: a model created inside the profiled cell had its layers named by
class or index (`Sequential`, `Linear`, `1`) instead of the variable (`lin`,
`model.1`); the next cell, with the model already built, named them right.

Real kernels (nbclient), real torch and Keras: the names a model built in the
profiled cell gets must be the names the same model gets when it was built
in the cell before."""

from __future__ import annotations

import ast

import pytest

from tests.integration.test_kernel import _bundles, _run

pytestmark = pytest.mark.kernel

TORCH_BUILD = """\
import torch
from torch import nn
torch.manual_seed(0)
lin = nn.Linear(64, 64)
model = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))
"""

TORCH_TRAIN = """\
x = torch.randn(32, 64)
loss = model(lin(x)).sum()
loss.backward()
"""

KERAS_BUILD = """\
import keras
import numpy as np
model = keras.Sequential([keras.Input((32,)), keras.layers.Dense(64, activation="relu"), keras.layers.Dense(4)])
model.compile("adam", "mse")
x, y = np.random.rand(256, 32).astype("float32"), np.random.rand(256, 4).astype("float32")
"""

KERAS_TRAIN = "model.fit(x, y, batch_size=64, epochs=1, verbose=0)\n"

# Each layer by its qualified name: its parent's, a dot, its own (torch's `model.0`; Keras's scopes).
NAMES = """\
import memprofile
_layers = {l.name: l for l in memprofile.last().layers}
def _qualified(layer):
    parent = _layers.get(layer.parent) if layer.parent else None
    return f"{_qualified(parent)}.{layer.name}" if parent else layer.name
sorted(_qualified(l) for l in _layers.values())
"""


def _layer_names(cells: list[str], tmp_path) -> list[str]:
    """The qualified layer names of the profile the cells made, in a fresh kernel."""
    nb = _run(["%load_ext memprofile", *cells, NAMES], tmp_path)
    return ast.literal_eval(_bundles(nb.cells[-1])[-1]["text/plain"])


@pytest.fixture(scope="module")
def torch_inside(tmp_path_factory) -> list[str]:
    """The names of a torch model built in the profiled cell, in a fresh kernel: both torch tests read
    this one run (it was run twice, the same cells in two fresh kernels)."""
    return _layer_names(["%%memprofile\n" + TORCH_BUILD + TORCH_TRAIN], tmp_path_factory.mktemp("inside"))


@pytest.mark.xdist_group("model-names-torch")  # the two torch tests on one worker: one run for both
def test_torch_model_built_in_the_cell_is_named_by_its_variables(torch_inside):
    names = torch_inside
    assert {"lin", "model", "model.0", "model.1", "model.2"} <= set(names), names
    assert not [n for n in names if n.split(".")[0] in ("Sequential", "Linear", "0", "1", "2")], names


@pytest.mark.xdist_group("model-names-torch")
def test_torch_names_in_the_cell_equal_names_after_it(torch_inside, tmp_path):
    after = _layer_names([TORCH_BUILD, "%%memprofile\n" + TORCH_TRAIN], tmp_path)
    assert torch_inside == after


def test_keras_names_in_the_cell_equal_names_after_it(tmp_path):
    pytest.importorskip("tensorflow")
    inside = _layer_names(["%%memprofile\n" + KERAS_BUILD + KERAS_TRAIN], tmp_path)
    after = _layer_names([KERAS_BUILD, "%%memprofile\n" + KERAS_TRAIN], tmp_path)
    assert inside == after
    # the model by its variable (as torch's), its layers by Keras's own names
    assert {"model", "dense", "dense_1"} <= {n.split(".")[-1] for n in inside}, inside
