"""Keras advice that holds: the mixed precision code, applied in a real IPython
shell, saves what the rule estimated; the oneDNN allocator's blind spot is a
warning the user sees. The CNN is written for these tests (no other test or
rule was tuned on it)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")

import memprofile  # noqa: E402
from memprofile.analysis.rules import amp_keras  # noqa: E402
from memprofile.analysis.rules.facts import Facts  # noqa: E402

# A tf.data pipeline without prefetch: Keras's own pipeline for NumPy arrays
# prefetches a varying number of batches, which moved the peak by up to 6 MiB.
DATA = """\
import numpy as np, tensorflow as tf, keras
from keras import layers
rng = np.random.default_rng(7)
images = rng.random((256, 28, 28, 1), dtype="float32")
labels = rng.integers(0, 10, 256)
batches = tf.data.Dataset.from_tensor_slices((images, labels)).batch(64)

def make_cnn():
    return keras.Sequential([
        keras.Input((28, 28, 1)),
        layers.Conv2D(24, 3, padding="same", activation="relu"),
        layers.Conv2D(24, 3, padding="same", activation="relu"),
        layers.BatchNormalization(),
        layers.MaxPooling2D(),
        layers.Conv2D(48, 3, padding="same", activation="relu"),
        layers.GlobalAveragePooling2D(),
        layers.Dense(10, activation="softmax"),
    ])
"""

BUILD = """\
net = make_cnn()
net.compile("adam", "sparse_categorical_crossentropy")
net.fit(batches.take(1), verbose=0);  # optimizer slots exist before the profiled cell
"""

TRAIN = "%%memprofile -q --name {name}\nnet.fit(batches, verbose=0);\n"

BUILT_IN_CELL = """\
%%memprofile -q --name {name}
clf = make_cnn()
clf.compile("adam", "sparse_categorical_crossentropy")
clf.fit(batches, verbose=0)
"""


def _run(ip, cell: str) -> None:
    result = ip.run_cell(cell)
    assert result.success, result.error_in_exec or result.error_before_exec


@pytest.fixture
def float32_policy():
    keras.mixed_precision.set_global_policy("float32")
    yield
    keras.mixed_precision.set_global_policy("float32")


def _amp(profile):
    return next((s for s in profile.suggestions if s.id == "amp"), None)


MLP = """\
import numpy as np, tensorflow as tf, keras
from keras import layers
rng = np.random.default_rng(11)
rows = rng.random((2048, 256), dtype="float32")
targets = rng.integers(0, 20, 2048)
rows_ds = tf.data.Dataset.from_tensor_slices((rows, targets)).batch(512)

def make_mlp():
    return keras.Sequential([keras.Input((256,)), layers.Dense(2048, activation="gelu"),
                             layers.Dense(2048, activation="gelu"), layers.Dense(20)])
"""
BUILD_MLP = """\
mlp = make_mlp()
mlp.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
mlp.fit(rows_ds.take(1), verbose=0);
"""
TRAIN_MLP = "%%memprofile -q --name {name}\nmlp.fit(rows_ds, verbose=0);\n"


def _added(p) -> int:
    # the peak over the cell's start: the notebook's state before each run differs by the first model
    return p.peak_bytes - p.peak_device.baseline_bytes


def test_keras_amp_is_quiet_on_cpu_where_bfloat16_does_not_save_predictably(ip, fresh_store, float32_policy):
    # GIVEN a Dense MLP built in one cell and trained (profiled) in the next, on this CPU
    _run(ip, MLP)
    _run(ip, BUILD_MLP)
    _run(ip, TRAIN_MLP.format(name="fp32"))
    before = memprofile.last()
    # THEN no mixed-precision advice (the replay says ~10 MiB would be saved)...
    assert _amp(before) is None
    assert amp_keras.estimate_saving(Facts(before)) > 0
    # ...and rightly: under mixed_bfloat16 the same training cell peaks higher
    _run(ip, "keras.mixed_precision.set_global_policy('mixed_bfloat16')")
    _run(ip, BUILD_MLP)
    _run(ip, TRAIN_MLP.format(name="mixed"))
    assert _added(before) - _added(memprofile.last()) < 0


def test_keras_policy_code_names_the_cell_model_and_says_to_rebuild_it(ip, fresh_store, float32_policy):
    # GIVEN a CNN built in one cell and trained (profiled) in the next
    _run(ip, DATA)
    _run(ip, BUILD)
    _run(ip, TRAIN.format(name="fp32"))
    f = Facts(memprofile.last())
    # THEN the policy code names the cell's model and says to build it again
    code = amp_keras.keras_code(f, amp_keras.policy_name(f))
    assert 'set_global_policy("mixed_bfloat16")' in code and "mixed_float16" not in code
    assert "`net`" in code and "again" in code
    # AND running it, then the cell that builds the model, gives a model under the policy
    _run(ip, code)
    _run(ip, BUILD)
    assert ip.user_ns["net"].layers[0].dtype_policy.name == "mixed_bfloat16"


def test_keras_amp_code_for_a_cell_that_builds_its_model_is_the_policy_then_the_cell(ip, fresh_store, float32_policy):
    # GIVEN a cell that builds, compiles and fits its own model
    _run(ip, DATA)
    _run(ip, BUILT_IN_CELL.format(name="built"))
    f = Facts(memprofile.last())
    code = amp_keras.keras_code(f, amp_keras.policy_name(f))
    # THEN the code is the policy line followed by the cell, with the cell's names
    policy, _, rest = code.partition("\n\n")
    assert policy == "import keras"
    assert rest.startswith('keras.mixed_precision.set_global_policy("mixed_bfloat16")\n\nclf = make_cnn()')
    assert rest.rstrip().endswith("clf.fit(batches, verbose=0)") and "%%" not in code
    # AND it runs, and builds the model under the policy
    _run(ip, code)
    assert ip.user_ns["clf"].layers[0].dtype_policy.name == "mixed_bfloat16"


ONEDNN_SCRIPT = textwrap.dedent("""
    import json
    import numpy as np, tensorflow as tf, keras, memprofile
    from memprofile.render.text import render_text
    model = keras.Sequential([keras.Input((32,)), keras.layers.Dense(64, activation="relu"), keras.layers.Dense(4)])
    model.compile("sgd", "mse")
    x = np.random.rand(256, 32).astype("float32")
    with memprofile.profile(torch=False, store=False, namespace={"model": model, "x": x}) as p:
        model.fit(x, x[:, :4], batch_size=32, verbose=0)
    print(json.dumps({"warnings": [[w.code, w.message, w.fix] for w in p.warnings], "text": render_text(p),
                      "html": p._repr_mimebundle_().get("text/html", ""),
                      "small": sum(1 for o in p.ops if 0 < o.max_alloc_bytes < 256 << 10)}))
""")


def _onednn_run(prefix: str = "") -> dict:
    out = subprocess.run(
        [sys.executable, "-c", prefix + "\n" + ONEDNN_SCRIPT],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "TF_ENABLE_ONEDNN_OPTS": "1"},
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_onednn_allocator_blind_spot_is_a_warning_that_says_what_to_do():
    # GIVEN TensorFlow with oneDNN's CPU allocator (set before TF is imported)
    result = _onednn_run()
    notes = [message for code, message, _ in result["warnings"] if code == "tf_onednn_small_blocks"]
    # THEN the profile warns: what is not seen, how much of it is known, and what to do
    assert len(notes) == 1, result["warnings"]
    note = notes[0]
    assert "under 256 KiB" in note and "missing from the peak" in note
    assert re.search(
        r"The [1-9]\d* variables and tensors under 256 KiB that the notebook held before the cell "
        r"\(\d+(\.\d+)? [KM]?i?B\)",
        note,
    ), note  # the model's kernels and biases
    assert "TF_ENABLE_ONEDNN_OPTS=0" in note and "TF_CPU_ALLOCATOR_USE_BFC=true" in note
    assert "before TensorFlow is imported" in note
    # AND the text report and the card show it
    assert "TF_ENABLE_ONEDNN_OPTS=0" in result["text"]
    assert "TF_ENABLE_ONEDNN_OPTS=0" in result["html"]
    # AND the note carries its fix as code, which the report shows
    fix = next(f for code, _, f in result["warnings"] if code == "tf_onednn_small_blocks")
    assert 'os.environ["TF_ENABLE_ONEDNN_OPTS"] = "0"' in fix
    # WHEN the fix runs first (the process still starts with TF_ENABLE_ONEDNN_OPTS=1)
    fixed = _onednn_run(prefix=fix)
    # THEN the note is gone and the blocks it named are seen: ops whose blocks are all under 256 KiB
    assert not [w for w in fixed["warnings"] if w[0] == "tf_onednn_small_blocks"], fixed["warnings"]
    assert result["small"] == 0 and fixed["small"] > 0, (result["small"], fixed["small"])


def test_plain_cpu_allocator_gets_no_onednn_warning():
    # GIVEN the tests' TF (oneDNN off, conftest.py): every block is seen
    model = keras.Sequential([keras.Input((32,)), keras.layers.Dense(64), keras.layers.Dense(4)])
    model.compile("sgd", "mse")
    x = tf.random.uniform((256, 32))
    with memprofile.profile(torch=False, store=False, namespace={"model": model}) as p:
        model.fit(x, x[:, :4], batch_size=32, verbose=0)
    assert p.device("tf:CPU:0")
    assert not [w for w in p.warnings if w.code == "tf_onednn_small_blocks"]
