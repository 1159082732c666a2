"""%%memprofile on TensorFlow/Keras cells in a real kernel: layers, errors, no log noise,
and a cell that uses both frameworks."""

from __future__ import annotations

import pytest

from memprofile.render.bundle import MIME_TYPE
from tests.integration.test_kernel import _bundles, _run
from tests.kernels import framework_messages, unprofiled

pytestmark = pytest.mark.kernel
pytest.importorskip("tensorflow")

SETUP = """\
import numpy as np, tensorflow as tf, keras
inp = keras.Input((64,))
h = keras.layers.Dense(256, activation="relu", name="dense_in")(inp)
out = keras.layers.Dense(10, name="logits")(h)
model = keras.Model(inp, out, name="clf")
model.compile("adam", "mse")
x = np.random.rand(512, 64).astype("float32"); y = np.random.rand(512, 10).astype("float32")
WEIGHTS = sum(int(np.prod(w.shape)) * 4 for w in model.weights)
"""

FIT = """\
%%memprofile --name fit
model.fit(x, y, batch_size=64, epochs=1, verbose=0)
"""

CHECK = """\
import memprofile
p = memprofile.last()
names = sorted(l.name for l in p.layers)
(p.name, p.device("tf:CPU:0").baseline_by_category.get("parameter") == WEIGHTS,
 {"dense_in", "logits", "model"} <= set(names), bool(p.ops))
"""

OOM = """\
%%memprofile --name oom
big = tf.zeros((2**42,))
"""

CHECK_OOM = """\
p = memprofile.last()
(p.name, p.error.type, p.error.op, p.error.requested_bytes == 2**44)
"""


def _streams(cell) -> str:
    return "".join(o.get("text", "") for o in cell.outputs if o["output_type"] == "stream")


def test_keras_cells_in_a_kernel(tmp_path):
    nb = _run(["%load_ext memprofile", SETUP, FIT, CHECK, OOM, CHECK_OOM], tmp_path, allow_errors=True)
    fit = nb.cells[2]
    # TF's profiler logs stay out of the cell
    streams = _streams(fit)
    assert "Profiler session" not in streams and "xplane" not in streams, streams
    assert not [o for o in fit.outputs if o["output_type"] == "error"]
    summary = next(b[MIME_TYPE] for b in _bundles(fit) if MIME_TYPE in b)
    assert "tf:CPU:0" in [d["name"] for d in summary["devices"]]
    assert _bundles(nb.cells[3])[-1]["text/plain"] == "('fit', True, True, True)"
    # a cell that runs out of memory shows its profile and the error, and keeps the profile
    oom = nb.cells[4]
    errors = [o for o in oom.outputs if o["output_type"] == "error"]
    assert errors and errors[0]["ename"] == "ResourceExhaustedError"
    assert any(MIME_TYPE in b for b in _bundles(oom))
    assert _bundles(nb.cells[5])[-1]["text/plain"] == "('oom', 'ResourceExhaustedError', 'Fill', True)"


BOTH = """\
%%memprofile --name both
import torch, tensorflow as tf
a = torch.empty(2**22, dtype=torch.uint8)
b = tf.zeros((2**20,))
del a, b
"""

CHECK_BOTH = """\
import memprofile
p = memprofile.last()
sorted(d.name for d in p.devices if d.kind == "allocator"), sorted(f.name for f in p.frameworks)
"""


def test_a_cell_with_both_frameworks_gets_both_allocators(tmp_path):
    pytest.importorskip("torch")
    nb = _run(["%load_ext memprofile", BOTH, CHECK_BOTH], tmp_path)
    assert "USDT" not in _streams(nb.cells[1]) and "Profiler session" not in _streams(nb.cells[1])
    # the frameworks log what they log bare (TF's import: its CPU instructions line), nothing of the profilers
    bare = _run([unprofiled(BOTH)], tmp_path)
    assert framework_messages(nb.cells[1]) == framework_messages(bare.cells[0])
    text = _bundles(nb.cells[2])[-1]["text/plain"]
    assert text.startswith("(['cpu', 'tf:CPU:0'], "), text
    assert "'tensorflow'" in text and "'torch'" in text
