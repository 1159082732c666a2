"""The Keras advice run (tests/frameworks/test_keras_advice.py runs it in a fresh
process): an MLP trained by `model.fit(x, y, batch_size=...)`; the batch advice's code
applied as Insert fix would and the cell profiled again."""

from __future__ import annotations

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, sys.argv[1])  # the repository: tests.frameworks

from IPython.testing.globalipapp import start_ipython  # noqa: E402

from memprofile.analysis.rules import suggest  # noqa: E402
from tests.frameworks.advice_run import apply_and_measure, emit, near_capacity, profiled, report  # noqa: E402

ip = start_ipython()
ip.run_line_magic("load_ext", "memprofile")
ip.run_cell("""
import numpy as np, keras
keras.utils.set_random_seed(0)
x = np.random.rand(8192, 256).astype("float32")
y = x[:, :1].copy()
inp = keras.Input((256,))
h = inp
for i in range(3):
    h = keras.layers.Dense(2048, activation="gelu", name=f"up{i}")(h)
    h = keras.layers.Dense(256, activation="gelu", name=f"down{i}")(h)
model = keras.Model(inp, keras.layers.Dense(1, name="head")(h))
model.compile("adam", "mse")
model.fit(x[:1024], y[:1024], batch_size=1024, verbose=0)  # the optimizer's slots exist before
""")
CELL = "model.fit(x, y, batch_size=1024, epochs=1, verbose=0)"
ip.run_cell(CELL)  # warm: TF's traced step and its pools
out: dict = {"results": []}
before = profiled(ip, CELL, "k_before")
out["suggestions"] = {s.id: s.code for s in before.suggestions}
out["far_from_full"] = [s.id for s in before.suggestions]
near_capacity(before)
s = next((s for s in suggest(before) if s.id == "batch_size"), None)
if s is not None:
    out["results"].append(report(before, s, apply_and_measure(ip, CELL, s, "k_batch")))
emit(out)
