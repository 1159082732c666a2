"""Suggestion rules on real Keras training (tensorflow-cpu)."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")
import numpy as np  # noqa: E402

import memprofile  # noqa: E402


def _fit(model, x, y):
    model.fit(x[:512], y[:512], batch_size=512, verbose=0)  # optimizer slots exist before the profile
    with memprofile.profile(name="fit", store=False, torch=False, namespace={"model": model}) as p:
        model.fit(x, y, batch_size=512, verbose=0)
    return {s.id: s for s in p.suggestions}, p


def _blocks_model(nested: bool):
    inp = keras.Input((256,))
    h = inp
    for i in range(3):
        if nested:
            h = keras.Sequential(
                [keras.layers.Dense(1024, activation="gelu"), keras.layers.Dense(256, activation="gelu")],
                name=f"block{i}",
            )(h)
        else:
            h = keras.layers.Dense(1024, activation="gelu", name=f"up{i}")(h)
            h = keras.layers.Dense(256, activation="gelu", name=f"down{i}")(h)
    model = keras.Model(inp, keras.layers.Dense(1, name="head")(h))
    model.compile("adam", "mse")
    return model


def test_keras_blocks_get_no_checkpointing_and_no_optimizer_state_advice():
    x = np.random.rand(2048, 256).astype("float32")
    found, p = _fit(_blocks_model(nested=True), x, x[:, :1])
    # no checkpointing advice on Keras: its estimate was half what its code saves
    # (tests/fixes/test_rule_failures_keras.py)
    assert "gradient_checkpointing" not in found
    # no mixed precision advice on a CPU (analysis/rules/amp_keras.py says why; tests/tensorflow/test_advice.py)
    assert "amp" not in found
    # no optimizer advice on Keras: a traced fit keeps the old slots alive after a recompile, and
    # SGD compiled before the first fit saved nothing (analysis/rules/optimizer_state.py; its code
    # measured in tests/tensorflow/test_advice_measured.py)
    assert "optimizer_state" not in found


def test_flat_keras_layers_get_no_checkpointing_advice():
    # single Dense layers: their activations are their outputs, which the next layer keeps anyway
    x = np.random.rand(2048, 256).astype("float32")
    found, _ = _fit(_blocks_model(nested=False), x, x[:, :1])
    assert "gradient_checkpointing" not in found and "inference_mode" not in found
