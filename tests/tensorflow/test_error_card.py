"""A Keras cell that runs out of memory: the card leads with the failing op, its layer and the
bytes asked for, then TF's own words; the ~40 stack frames TF puts in its message are folded
(kept whole in `p.error.message`). Real Keras, TF's CPU allocator refusing 16 TiB."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
pytest.importorskip("tensorflow")
pytest.importorskip("keras")

import memprofile  # noqa: E402
from memprofile.render.html import render_fragment  # noqa: E402
from memprofile.render.text import render_text  # noqa: E402
from tests.cells import run_cell  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("names_back")]

# A model whose Dense "big" makes a 2**20 x 2**22 float activation (16 TiB) from a 32 MiB input.
MODEL = """
import numpy as np, keras
keras.utils.set_random_seed(0)
inp = keras.Input((8,))
h = keras.layers.Dense(8, name="small")(inp)
h = keras.layers.Dense(2**22, activation="relu", name="big")(h)
mlp = keras.Model(inp, keras.layers.Dense(1)(h), name="mlp")
mlp.compile("adam", "mse")
xs = np.zeros((2**20, 8), "float32")
"""
CELLS = {
    "predict": "mlp.predict(xs, batch_size=2**20, verbose=0)\n",
    "fit": "mlp.fit(xs, xs[:, :1], batch_size=2**20, epochs=1, verbose=0)\n",
    "function": "import tensorflow as tf\nforward = tf.function(lambda x: mlp(x))\nforward(xs)\n",
}


@pytest.mark.parametrize("shape", sorted(CELLS))
def test_an_out_of_memory_keras_cell_leads_with_op_layer_and_bytes(ip, fresh_store, shape):
    # GIVEN a Keras model whose layer "big" asks for 16 TiB
    run_cell(ip, MODEL)
    # WHEN a cell runs it (predict, fit, a tf.function) under %%memprofile and TF raises
    result = ip.run_cell(f"%%memprofile -q -n oom-{shape}\n" + CELLS[shape])
    assert type(result.error_in_exec).__name__ == "ResourceExhaustedError"
    profile = memprofile.last()
    error = profile.error
    # THEN the error names the op, the layer its scope names, and the bytes
    assert error.type == "ResourceExhaustedError"
    assert error.op and error.op.split("/")[-2:] in (["big_1", "Relu"], ["big", "Relu"]), error.op
    assert error.layer == "big", (error.op, error.layer)
    assert error.requested_bytes == 2**20 * 2**22 * 4
    # the message's own words without TF's frames, hint or device path
    assert error.headline.startswith("OOM when allocating tensor with shape[1048576,4194304]"), error.headline
    assert 'File "' not in error.headline and "Hint:" not in error.headline and "/job:" not in error.headline
    # the message itself is kept whole, and its frames counted (Keras's steps: the frames that
    # defined the node; a plain tf.function's message carries none)
    assert error.message_frames == error.message.count('File "')
    assert error.message_frames > 10 if shape != "function" else error.message_frames == 0
    text = render_text(profile)
    raised = text[text.index("  the run raised") :].splitlines()
    assert raised[0] == (
        f"  the run raised ResourceExhaustedError: it failed in op {error.op}, layer big, line "
        f"{error.line}, asking for 16.0 TiB"
    )
    assert raised[1].strip() == error.headline
    assert 'File "' not in text
    html = render_fragment(profile)
    assert html.index("It failed in op") < html.index("OOM when allocating") < html.index("<details>")
    frames = f" ({error.message_frames} stack frames)" if error.message_frames else ""
    assert f"the message in full{frames}</summary>" in html
