"""TensorFlow/Keras capture against real tensorflow-cpu: exact peaks, layers, categories."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")
import numpy as np  # noqa: E402

import memprofile  # noqa: E402
from memprofile.analysis.replay import replay  # noqa: E402
from memprofile.capture.tensorflow import gpu_facts, oom_facts, raw_from_xspace  # noqa: E402
from memprofile.capture.tensorflow.xspace import parse_xspace, read_xspace_file  # noqa: E402
from tests.imports import XSPACE  # noqa: E402

MiB = 2**20
FIXTURE = XSPACE  # the recorded GPU XSpace, in the project (tests/fixtures/gpu/)


def _profile(fn, namespace=None, **options):
    namespace = {} if namespace is None else namespace
    with memprofile.profile(name="t", store=False, torch=False, namespace=namespace, **options) as p:
        fn()
    return p


def _named_model(name="mlp"):
    inp = keras.Input((32,), name="features")
    h = keras.layers.Dense(128, activation="relu", name="enc_a")(inp)
    block_in = keras.Input((128,))
    block = keras.Model(block_in, keras.layers.Dense(64, activation="tanh", name="inner")(block_in), name="block")
    h = block(h)
    out = keras.layers.Dense(4, name="head")(h)
    model = keras.Model(inp, out, name=name)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mse")
    return model


def _weights_bytes(variables):
    return sum(int(np.prod(v.shape)) * 4 for v in variables)


def test_known_tensors_peak_is_the_truth():
    # GIVEN eager tensors of chosen sizes, deleted in order
    def cell():
        a = tf.zeros((16 * MiB // 4,))  # 16
        b = tf.zeros((8 * MiB // 4,))  # 24
        del a  # 8
        c = tf.zeros((20 * MiB // 4,))  # 28: the peak
        del b, c

    p = _profile(cell)
    cpu = p.device("tf:CPU:0")
    # THEN the peak over the start is 28 MiB (the default CPU allocator reports requested
    # bytes), plus the few bytes of Fill's inputs (shape and value), alive while it runs
    assert 0 <= cpu.peak_bytes - cpu.baseline_bytes - 28 * MiB <= 16
    assert cpu.end_bytes == cpu.baseline_bytes
    assert p.peak.device == "tf:CPU:0" and p.peak.op == "Fill"
    assert sorted(t.bytes for t in p.peak.tensors)[-2:] == [8 * MiB, 20 * MiB]
    big = max(p.peak.tensors, key=lambda t: t.bytes)
    assert big.shape == [20 * MiB // 4] and big.dtype == "float32" and big.category == "temporary"
    # AND the allocator without statistics is said to be unsupported, not reported as zero
    assert p.capture["tf:CPU:0.memory_info"].startswith("unsupported")
    assert "tf:CPU:0.memory_info_peak" not in p.device("tf:CPU:0").allocator_stats


def test_keras_fit_layers_parameters_and_adam_slots():
    # GIVEN a built model with named layers (one nested model) and Adam, before the cell
    model = _named_model()
    x = np.random.rand(256, 32).astype("float32")
    y = np.random.rand(256, 4).astype("float32")
    model.fit(x[:32], y[:32], batch_size=32, epochs=1, verbose=0)  # builds the optimizer slots
    ns = {"model": model, "x": x, "y": y}

    p = _profile(lambda: model.fit(x, y, batch_size=32, epochs=1, verbose=0), namespace=ns)

    weights = _weights_bytes(model.weights)
    trainable = _weights_bytes(model.trainable_weights)
    assert p.ops, "the op table is empty"
    names = {layer.name for layer in p.layers}
    # THEN every named layer is in the layer tree, the nested one by path
    for expected in ("model", "enc_a", "block", "block/inner", "head", "(optimizer)", "(loss)"):
        assert expected in names, (expected, sorted(names))
    by_name = {layer.name: layer for layer in p.layers}
    assert by_name["block/inner"].parent == "block" and by_name["block"].parent == "model"
    # AND the layer table's parameters are the model's weights, the slots twice the trainable ones
    assert sum(layer.parameter_bytes for layer in p.layers) == pytest.approx(weights, rel=0.01)
    assert sum(layer.optimizer_state_bytes for layer in p.layers) == pytest.approx(2 * trainable, rel=0.01)
    assert by_name["enc_a"].parameter_bytes == (32 * 128 + 128) * 4
    # AND at the peak, the same by category: the variables from before the cell were found
    cpu = p.device("tf:CPU:0")
    assert cpu.baseline_by_category["parameter"] == pytest.approx(weights, rel=0.01)
    assert cpu.baseline_by_category["optimizer_state"] == pytest.approx(2 * trainable, rel=0.01)
    end = p.timeline("tf:CPU:0").by_category
    assert end["parameter"][-1] == pytest.approx(weights, rel=0.01)
    assert end["optimizer_state"][-1] == pytest.approx(2 * trainable, rel=0.01)
    # (at the peak, a variable TF is copying before writing it can be there twice)
    largest = max(_weights_bytes([v]) for v in model.weights)
    assert weights <= p.peak.by_category["parameter"] <= weights + largest
    assert 2 * trainable <= p.peak.by_category["optimizer_state"] <= 2 * trainable + 2 * largest + 64
    # AND backward allocations shaped like a layer's kernel are its gradients; forward
    # outputs kept for backward are activations, in the layer that made them
    assert by_name["enc_a"].gradient_bytes == (32 * 128 + 128) * 4
    assert by_name["enc_a"].activation_bytes > 0 and by_name["enc_a"].backward_bytes > 0
    assert by_name["(optimizer)"].temporary_bytes > 0
    tl = p.timeline("tf:CPU:0")
    assert {"parameter", "optimizer_state", "activation"} <= set(tl.by_category)
    assert any(label.startswith("gradient_tape/") for label in tl.labels)


def test_model_built_inside_the_cell_is_found_at_the_end():
    # GIVEN a cell that builds, compiles and fits a model (nothing exists before)
    ns: dict = {}

    def cell():
        ns["model"] = model = _named_model("fresh")
        x = np.random.rand(128, 32).astype("float32")
        model.fit(x, x[:, :4], batch_size=32, epochs=1, verbose=0)

    p = _profile(cell, namespace=ns)
    model = ns["model"]
    names = {layer.name for layer in p.layers}
    assert {"model", "enc_a", "block/inner", "head"} <= names
    cpu = p.device("tf:CPU:0")
    assert cpu.baseline_bytes == 0
    # THEN the variables made in the cell are parameters and slots, by the end's addresses
    end = p.timeline("tf:CPU:0")
    assert end.by_category["parameter"][-1] == pytest.approx(_weights_bytes(model.weights), rel=0.01)
    assert end.by_category["optimizer_state"][-1] == pytest.approx(
        2 * _weights_bytes(model.trainable_weights), rel=0.01
    )


def test_eager_layer_calls_are_attributed_to_their_layers():
    # GIVEN a model called eagerly (no tf.function: no name scopes in the op names)
    model = _named_model()
    x = tf.random.normal((512, 32))
    ns = {"model": model, "x": x}
    p = _profile(lambda: model(x, training=False), namespace=ns)
    by_name = {layer.name: layer for layer in p.layers}
    # THEN each layer's outputs are its own (512 x 128 floats for enc_a)
    assert by_name["enc_a"].forward_bytes >= 512 * 128 * 4
    assert by_name["block/inner"].forward_bytes >= 512 * 64 * 4
    assert by_name["head"].forward_bytes >= 512 * 4 * 4
    # AND the wrapper is gone afterwards (the autouse fixture checks too)
    assert not hasattr(keras.layers.Layer.__call__, "__memprofile_original__")


def test_layers_of_models_the_cell_did_not_run_are_left_out():
    # GIVEN two Keras models in the namespace, of which the cell calls one
    used, idle = _named_model("used"), _named_model("idle")
    x = tf.random.normal((256, 32))
    p = _profile(lambda: used(x, training=False), namespace={"used": used, "idle": idle, "x": x})
    names = {layer.name for layer in p.layers}
    # THEN the called model's layers are listed and the idle one's are not
    assert {"enc_a", "block/inner", "head"} <= names
    assert not any(n == "idle" or n.startswith("idle/") for n in names), names


def test_a_cell_that_raises_keeps_its_profile_and_names_the_op(fresh_store):
    # GIVEN a cell that asks TF for more memory than exists
    def cell():
        keep = tf.zeros((4 * MiB // 4,))  # noqa: F841
        tf.zeros((2**42,))

    with pytest.raises(tf.errors.ResourceExhaustedError):
        with memprofile.profile(name="oom", torch=False, namespace={}) as p:
            cell()
    # THEN the profile is stored, with the error, the op and the requested size
    assert memprofile.last() is p
    assert p.error is not None and p.error.type == "ResourceExhaustedError"
    assert p.error.op == "Fill"
    assert p.error.requested_bytes == 2**42 * 4
    assert p.device("tf:CPU:0").peak_bytes >= 4 * MiB


def test_tf_logs_stay_out_of_the_cell(capfd):
    _profile(lambda: tf.zeros((1000,)))
    err = capfd.readouterr().err
    assert "Profiler session" not in err and "xplane" not in err


def test_large_runs_keep_the_timeline_and_drop_detail():
    def cell():
        for _ in range(200):
            tf.zeros((1000,)) + 1.0

    p = _profile(cell, tf_max_events=50)
    assert any(w.code == "tf_detail_dropped" for w in p.warnings)
    tl = p.timeline("tf:CPU:0")
    assert tl.recorded_points > 400 and max(tl.live_bytes) >= 8000
    assert any(o.name == "AddV2" and o.calls == 200 for o in p.ops)


def test_magic_options_for_tensorflow():
    from IPython.core.error import UsageError

    from memprofile.jupyter.magic import MemprofileMagics

    with pytest.raises(UsageError, match="tf-max-events"):
        MemprofileMagics._parse(type("M", (), {"memprofile": MemprofileMagics.memprofile})(), "--tf-max-events -1")


def test_oom_messages():
    msg = (
        "OOM when allocating tensor with shape[1024,1024,512] and type float on "
        "/job:localhost/replica:0/task:0/device:GPU:0 by allocator GPU_0_bfc [Op:MatMul]"
    )
    assert oom_facts(msg) == ("MatMul", 1024 * 1024 * 512 * 4)
    graph = "OOM when allocating tensor with shape[64,4096] and type half ...\n\t [[{{node model/dense/MatMul}}]]"
    assert oom_facts(graph) == ("model/dense/MatMul", 64 * 4096 * 2)
    assert oom_facts("something else") == (None, None)


class _FakeDevice:
    def __init__(self, name, memory_limit=None):
        self.name, self.memory_limit = name, memory_limit


class _FakeConfig:
    """tf.config's GPU surface, as documented; no GPU has run this code."""

    def __init__(self, growth):
        self._gpus = [_FakeDevice(f"/physical_device:GPU:{i}") for i in range(len(growth))]
        self._growth = growth
        config = self

        class experimental:
            @staticmethod
            def get_memory_growth(device):
                return config._growth[config._gpus.index(device)]

        self.experimental = experimental

    def list_physical_devices(self, kind):
        return self._gpus if kind == "GPU" else []

    def get_visible_devices(self, kind):
        return self._gpus[:1]

    def get_logical_device_configuration(self, device):
        return [_FakeDevice("", 8192)] if device is self._gpus[1] else None


def test_gpu_facts_from_a_fake_config():
    facts = gpu_facts(_FakeConfig([False, True]), environ={"TF_FORCE_GPU_ALLOW_GROWTH": "true"})
    assert facts["tf.gpus"] == "2"
    assert facts["tf.visible_gpus"] == "GPU:0"
    assert facts["tf.memory_growth"] == "GPU:0=off,GPU:1=on"
    assert facts["tf.memory_limit"] == "GPU:1=8192MB"
    assert facts["env.TF_FORCE_GPU_ALLOW_GROWTH"] == "true"
    assert gpu_facts(tf.config, environ={})["tf.gpus"] == "0"


def test_recorded_gpu_xspace_replays_to_the_allocator_counters():
    # GIVEN the TF profiler's XSpace of a BERT fine-tune on 8 V100s (see PROVENANCE.md)
    data = read_xspace_file(FIXTURE)
    ev = parse_xspace(data).events
    counts = {}
    for a, alloc in zip(ev.allocator, ev.is_alloc):
        counts[(a, alloc)] = counts.get((a, alloc), 0) + 1
    assert counts[("GPU_4_bfc", True)] == 761 and counts[("GPU_4_bfc", False)] == 208
    assert counts[("gpu_host_bfc", True)] == 318 and counts[("GPU_1_bfc", True)] == 19
    raw = raw_from_xspace(data)
    logs = {log.device: log for log in raw.allocations}
    assert set(logs) == {"tf:GPU:1", "tf:GPU:4", "tf:GPU:6", "tf:gpu_host"}
    # THEN replaying the events from the allocator's baseline gives its own peak counter
    for device, peak in (("tf:GPU:4", 6_208_853_760), ("tf:GPU:6", 6_210_111_488)):
        assert replay(logs[device]).peak_bytes == peak
        assert logs[device].capacity_bytes == 16_945_512_448
        assert logs[device].baseline_exact
    assert raw.ops and all(log.requested for log in raw.allocations)


BFC_SCRIPT = textwrap.dedent("""
    import json, os
    import numpy as np, tensorflow as tf, keras, memprofile
    inp = keras.Input((64,))
    h = keras.layers.Dense(256, activation="relu", name="dense_a")(inp)
    model = keras.Model(inp, keras.layers.Dense(8, name="dense_b")(h))
    model.compile("adam", "mse")
    x = np.random.rand(512, 64).astype("float32")
    model.fit(x, x[:, :8], batch_size=64, epochs=1, verbose=0)
    with memprofile.profile(torch=False, store=False, detail_steps=None) as p:
        model.fit(x, x[:, :8], batch_size=64, epochs=2, verbose=0)
        a = tf.zeros((3 * 2**20,))  # 12 MiB asked, more after BFC's rounding
    dev = p.device("tf:CPU:0")
    from memprofile.render.text import render_text
    zeros = [[t.bytes, t.requested_bytes] for t in p.peak.tensors if t.shape == [3 * 2**20]]
    print(json.dumps({"peak": dev.peak_bytes, "baseline": dev.baseline_bytes, "stats": dev.allocator_stats,
                      "capture": p.capture, "zeros": zeros, "text": render_text(p)}))
""")


@pytest.mark.parametrize(
    "env", [{"TF_CPU_ALLOCATOR_USE_BFC": "true"}, {"TF_ENABLE_ONEDNN_OPTS": "1"}], ids=["bfc", "onednn"]
)
def test_peak_matches_get_memory_info_on_allocators_with_statistics(env):
    # GIVEN TF's CPU allocators that keep statistics (set before TF is imported)
    out = subprocess.run(
        [sys.executable, "-c", BFC_SCRIPT],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **env},
    )
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    stats = result["stats"]
    # THEN the cell's peak over its start is get_memory_info's within 1 %
    assert result["peak"] - result["baseline"] == pytest.approx(
        stats["memory_info_peak"] - stats["memory_info_start"], rel=0.01
    ), result
    if "TF_CPU_ALLOCATOR_USE_BFC" in env:
        # AND with BFC, which counts every block, the absolute figures too
        assert result["peak"] == pytest.approx(stats["memory_info_peak"], rel=0.01), result
        assert result["baseline"] == pytest.approx(stats["memory_info_start"], rel=0.01), result
        # AND BFC's rounding of the 12 MiB tensor is shown: asked for vs given
        assert stats["rounding_bytes_at_peak"] > 0
        assert stats["requested_bytes_at_peak"] + stats["rounding_bytes_at_peak"] == result["peak"]
        # AND the tensor is listed at its own size, in a larger allocator block, never as the block
        [[block, asked]] = result["zeros"]
        assert asked == 12 * 2**20 and block > asked, result["zeros"]
        assert "12.0 MiB tensor in a " in result["text"] and " allocator block" in result["text"]
    else:
        # oneDNN's allocator leaves its small blocks (here every weight) out of
        # get_memory_info; the profile counts them from the namespace
        assert result["baseline"] > stats["memory_info_start"]
        # AND the report says which blocks it cannot see
        assert "256 KiB" in result["capture"]["tf:CPU:0.unseen_blocks"]
    exact = "TF_CPU_ALLOCATOR_USE_BFC" in env
    assert (result["capture"]["tf:CPU:0_baseline"] == "the allocator's own counters") == exact


def test_a_nested_profile_leaves_tf_to_the_outer_one_and_says_so():
    # GIVEN a profile around another one (TF allows one profiler session at a time)
    with memprofile.profile(name="outer", store=False, torch=False, namespace={}) as outer:
        with memprofile.profile(name="inner", store=False, torch=False, namespace={}) as inner:
            tf.zeros((MiB // 4,))
        tf.zeros((2 * MiB // 4,))
    # THEN the inner one says the outer one holds the framework capture, and keeps the host figures
    assert any(w.code == "nested_profile" and "'outer'" in w.message for w in inner.warnings)
    assert [d.name for d in inner.devices] == ["host"]
    # AND the outer one saw both allocations
    assert outer.device("tf:CPU:0").peak_bytes >= 2 * MiB


def test_user_profiler_afterwards_still_works(tmp_path):
    _profile(lambda: tf.zeros((1000,)))
    tf.profiler.experimental.start(str(tmp_path))
    tf.zeros((1000,))
    tf.profiler.experimental.stop()
    assert list(tmp_path.rglob("*.xplane.pb"))


def test_default_layer_names_are_told_apart_from_tf_uniquified_scopes():
    # GIVEN Keras's default names (dense, dense_1, dense_2), whose scopes TF
    # renames in the traced function (dense -> dense_1, dense_1 -> dense_1_2, ...)
    model = keras.Sequential(
        [keras.Input((16,)), keras.layers.Dense(32), keras.layers.Dense(64), keras.layers.Dense(8)]
    )
    model.compile("adam", "mse")
    x = np.random.rand(64, 16).astype("float32")
    names = [layer.name for layer in model.layers]
    p = _profile(lambda: model.predict(x, batch_size=64, verbose=0), namespace={"model": model, "x": x})
    by_name = {layer.name: layer for layer in p.layers}
    # THEN each layer's forward output (64 rows of its units, float32) is its own
    for name, units in zip(names, (32, 64, 8)):
        assert by_name[name].forward_bytes == 64 * units * 4, (name, by_name[name])


def test_scope_assignment_settles_ambiguous_names():
    from memprofile.capture.tensorflow.keras_model import _assign

    names = {"dense": "dense", "dense_1": "dense_1", "dense_2": "dense_2"}
    assert _assign(["dense_1", "dense_1_2", "dense_2_1"], names) == {
        "dense_1_2": "dense_1",
        "dense_2_1": "dense_2",
        "dense_1": "dense",
    }
    assert _assign(["dense", "dense_1"], names) == {"dense": "dense", "dense_1": "dense_1"}
    assert _assign(["MatMul"], names) == {}


def test_an_eager_training_step_has_layers_and_gradients():
    # GIVEN a custom training step run eagerly (no tf.function, no name scopes)
    model = _named_model()
    x, y = tf.random.normal((256, 32)), tf.random.normal((256, 4))
    opt = keras.optimizers.Adam()
    model(x)

    def cell():
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean((model(x, training=True) - y) ** 2)
        grads = tape.gradient(loss, model.trainable_variables)
        opt.apply_gradients(zip(grads, model.trainable_variables))

    p = _profile(cell, namespace={"model": model, "opt": opt, "x": x, "y": y})
    by_name = {layer.name: layer for layer in p.layers}
    # THEN forward outputs are in their layers, and the backward's outputs shaped like
    # a layer's kernel are that layer's gradients
    assert by_name["enc_a"].forward_bytes >= 256 * 128 * 4
    assert by_name["enc_a"].gradient_bytes == (32 * 128 + 128) * 4
    assert by_name["head"].gradient_bytes == (64 * 4 + 4) * 4
    assert by_name["enc_a"].backward_bytes >= 32 * 128 * 4
    assert tf.GradientTape.gradient.__name__ == "gradient"
