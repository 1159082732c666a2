"""Keras `fit` given an input whose containers misbehave raises what it raises bare: the hook
that notes the arrays fit copies (their blocks are input) never fails the user's fit itself."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
pytest.importorskip("tensorflow")
pytest.importorskip("keras")

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("names_back")]

SETUP = """
import numpy as np, keras
class Odd(dict):
    def values(self):
        raise RuntimeError("values() of a user's mapping")
net = keras.Sequential([keras.Input((4,), name="a"), keras.layers.Dense(1)])
net.compile("sgd", "mse")
odd = Odd(a=np.zeros((8, 4), "float32"))
"""
CELL = "net.fit(odd, np.zeros((8, 1), 'float32'), epochs=1, verbose=0)\n"


def test_fit_with_an_odd_mapping_fails_as_it_does_bare(ip, fresh_store):
    # GIVEN a mapping whose values() raises, as fit's x
    ip.run_cell(SETUP)
    # WHEN fit runs bare and profiled
    bare = ip.run_cell(CELL).error_in_exec
    profiled = ip.run_cell("%%memprofile -q\n" + CELL).error_in_exec
    # THEN the outcome is the same: Keras's own, not the profiler's
    assert type(profiled) is type(bare) and str(profiled) == str(bare), (bare, profiled)
