"""Keras's copy of the training arrays inside `fit` is input memory (issue
31): fit converts its NumPy x into a tensor made by no op, which the profile
called "other, (no op)". Now a block made by no op whose size is an array's
that fit was given (or the namespace holds, 1 MiB or more) is an input.
(Measured here: a model's first fit copied its 8 MiB x; its later fits of the
same array made no such block: the test profiles a first fit.)"""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
pytest.importorskip("tensorflow")
pytest.importorskip("keras")

import memprofile  # noqa: E402

SETUP = """\
import numpy as np, tensorflow as tf, keras
from keras import layers
keras.utils.set_random_seed(3)
inputs_x = np.random.rand(8192, 256).astype("float32")
inputs_y = np.random.randint(0, 10, 8192)
inputs_net = keras.Sequential([keras.Input((256,)), layers.Dense(64, activation="relu"), layers.Dense(10)])
inputs_net.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
"""


def _run(ip, code: str) -> None:
    result = ip.run_cell(code)
    assert result.error_before_exec is None and result.error_in_exec is None, result


def test_fit_copy_of_arrays_is_input(ip):
    cell, array_bytes = "inputs_net.fit(inputs_x, inputs_y, batch_size=256, verbose=0)\n", 8192 * 256 * 4
    # GIVEN a model fitted on a NumPy array (its first fit)
    _run(ip, SETUP)
    # WHEN the fit is profiled
    _run(ip, f"%%memprofile -q -n inputs\n{cell}")
    p = memprofile.last()
    # THEN TF's copy of x (made by no op) is input memory, not "other"
    copies = [t for t in p.peak.tensors if (t.requested_bytes or t.bytes) == array_bytes]
    assert copies, [(t.bytes, t.category, t.op) for t in p.peak.tensors[:5]]
    assert all(t.category == "input" and not t.op for t in copies), [(t.category, t.op, t.layer) for t in copies]
    assert p.peak.by_category.get("input", 0) >= sum(t.bytes for t in copies), p.peak.by_category
