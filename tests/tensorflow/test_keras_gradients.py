"""Gradients exact in an eager GradientTape loop (issue 31): an eager backward
names no layer, and a gradient was placed by its shape only where one layer
alone has that shape: with 7 Dense(64) and 7 LayerNormalization layers 2 of
15 layers showed a gradient (68,392 of 171,816 bytes). Now the tape's own
gradients are found by address and placed on their variables' layers."""

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
grad_x = np.random.rand(1000, 96).astype("float32")
grad_y = np.random.randint(0, 10, 1000)
inp = keras.Input((96,))
h = inp
for i in range(7):
    h = layers.LayerNormalization()(layers.Dense(64, activation="relu")(h))
grad_net = keras.Model(inp, layers.Dense(10)(h), name="grad_net")
grad_opt = keras.optimizers.Adam(1e-3)
grad_loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
"""
LOOP = """\
for i in range(4):
    xb, yb = grad_x[i * 100:(i + 1) * 100], grad_y[i * 100:(i + 1) * 100]
    with tf.GradientTape() as tape:
        loss = grad_loss(yb, grad_net(xb, training=True))
    grads = tape.gradient(loss, grad_net.trainable_variables)
    grad_opt.apply_gradients(zip(grads, grad_net.trainable_variables))
"""


def _run(ip, code: str) -> None:
    result = ip.run_cell(code)
    assert result.error_before_exec is None and result.error_in_exec is None, result


def test_eager_tape_gradients_on_every_layer(ip):
    # GIVEN a 15-layer model whose layers share their weights' shapes, trained by an eager tape loop
    _run(ip, SETUP)
    _run(ip, LOOP)
    expected = {
        layer.name: sum(int(np.prod(w.shape)) * 4 for w in layer.trainable_weights)
        for layer in ip.user_ns["grad_net"].layers
        if layer.trainable_weights
    }
    # WHEN the loop is profiled
    _run(ip, f"%%memprofile -q -n tape\n{LOOP}")
    p = memprofile.last()
    # THEN every layer with weights has its gradient, and they sum to model.trainable_weights' bytes
    got = {layer.name: layer.gradient_bytes for layer in p.layers if layer.gradient_bytes}
    assert got == expected, (got, expected)
    assert sum(got.values()) == sum(expected.values())


def test_another_models_layer_gets_no_gradient_from_the_tapes_shape_ops(ip):
    # GIVEN the same loop, and another model in the namespace whose only [1]-shaped
    # variable (a Dense(1)'s bias) has the shape of the tape's own int32 shape
    # computations (BroadcastGradientArgs, Shape: [1]), a CI run's case: the error
    # card's model was left in the shared shell and got 16 MiB of "gradients"
    _run(ip, SETUP)
    _run(ip, "bystander = keras.Sequential([keras.Input((3,)), layers.Dense(1, name='bystander_out')])\n")
    _run(ip, LOOP)
    # WHEN the loop is profiled
    _run(ip, f"%%memprofile -q -n tape-bystander\n{LOOP}")
    p = memprofile.last()
    # THEN only the trained model's layers have gradients
    got = {layer.name for layer in p.layers if layer.gradient_bytes}
    assert "bystander_out" not in got, got
    assert got == {layer.name for layer in ip.user_ns["grad_net"].layers if layer.trainable_weights}
