"""Parameters at the peak exact in `fit` and a `tf.function` train step
(issue 31): the same fit gave different parameter bytes at its peak run to
run. Two causes, measured on this model (152,296 B of weights, 151,144
trainable): a kernel Adam wrote while a reader held it got a new buffer and
both counted as parameters (188,008 B at one peak), and BatchNormalization's
moving statistics, assigned computed values, were not followed (151,144 B).
Now a replaced buffer is the variable's only until its copy is made, and an
assigned value's block is the variable's from the assignment on. Measured:
152,296 B at 7 of 7 peaks, run alone; 152,680 (+384 B, a statistic counted
twice at the instant of its assignment) in one of 7 under load."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
pytest.importorskip("tensorflow")
pytest.importorskip("keras")

import numpy as np  # noqa: E402

import memprofile  # noqa: E402

SETUP = """\
import numpy as np, tensorflow as tf, keras
from keras import layers
keras.utils.set_random_seed(3)
px = np.random.rand(512, 16, 16, 3).astype("float32")
py = np.random.randint(0, 10, 512)
inp = keras.Input((16, 16, 3))
h = inp
for f in (16, 32, 32, 64):
    h = layers.Conv2D(f, 3, padding="same", use_bias=False)(h)
    h = layers.ReLU()(layers.BatchNormalization()(h))
h = layers.Dense(64, activation="relu")(layers.GlobalAveragePooling2D()(h))
pnet = keras.Model(inp, layers.Dense(10)(h), name="pnet")
pnet.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
popt = keras.optimizers.Adam(1e-3)
ploss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
@tf.function
def pstep(xb, yb):
    with tf.GradientTape() as tape:
        loss = ploss(yb, pnet(xb, training=True))
    grads = tape.gradient(loss, pnet.trainable_variables)
    popt.apply_gradients(zip(grads, pnet.trainable_variables))
    return loss
"""
FIT = "pnet.fit(px, py, batch_size=64, verbose=0)\n"
STEP = "for i in range(4):\n    pstep(px[i * 64:(i + 1) * 64], py[i * 64:(i + 1) * 64])\n"


def _run(ip, code: str) -> None:
    result = ip.run_cell(code)
    assert result.error_before_exec is None and result.error_in_exec is None, result


def test_parameters_and_gradients_exact_run_after_run(ip):
    # GIVEN a small CNN with BatchNormalization, trained by fit and by a tf.function step
    ip.run_line_magic("reset", "-f")  # the shell is shared: no other test's models or arrays
    _run(ip, SETUP)
    net = ip.user_ns["pnet"]
    weights = sum(int(np.prod(w.shape)) * 4 for w in net.weights)
    trainable = sum(int(np.prod(w.shape)) * 4 for w in net.trainable_weights)
    seen = []
    # WHEN the same cells are profiled again and again
    for name, cell in (("fit", FIT),) * 4 + (("step", STEP),) * 3:
        _run(ip, f"%%memprofile -q -n {name}\n{cell}")
        p = memprofile.last()
        seen.append((name, p.peak.by_category.get("parameter"), sum(layer.gradient_bytes for layer in p.layers)))
    # THEN every peak holds all the weights, once (a moving statistic assigned at the peak's
    # instant may be off by a few hundred bytes: +384 B, 0.25 %, here; before, -0.76 % and +23 %),
    # and the layers' gradients are exactly the trainable weights
    assert all(abs(param - weights) <= weights // 200 for _, param, _ in seen), (weights, seen)
    assert all(grads == trainable for _, _, grads in seen), (trainable, seen)
