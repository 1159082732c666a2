"""A private TensorFlow/Keras API that a release removed or changed degrades
to a named note in the profile, never an exception in the user's cell: the
entries of capture/tensorflow/compat.py, each there on this TF, and each taken away
in turn under a real TF run. And TF 2.16's trace clock (times from the
session's start, no start time in the trace), made from this TF's trace."""

from __future__ import annotations

import glob
import os
import tempfile

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")

import memprofile  # noqa: E402
from memprofile.capture.tensorflow import ANCHOR  # noqa: E402
from memprofile.capture.tensorflow import compat as tf_compat  # noqa: E402
from memprofile.capture.tensorflow.session import ProfilerSession, anchor  # noqa: E402
from memprofile.capture.tensorflow.xspace import parse_xspace, read_xspace_file  # noqa: E402

MiB = 2**20


def _version(module) -> str:
    return module.__version__.split("+")[0]


def _profile(fn, namespace=None):
    with memprofile.profile(name="compat", store=False, torch=False, namespace=namespace or {}) as p:
        fn()
    return p


def _codes(p) -> set[str]:
    return {w.code for w in p.warnings}


@pytest.fixture
def mlp():
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((64,)),
            keras.layers.Dense(256, activation="relu", name="wide"),
            keras.layers.Dense(8, name="head"),
        ],
        name="mlp",
    )
    x = tf.random.normal((512, 64))
    model(x)  # built: its variables exist before the run
    return model, x


def test_every_entry_is_there_on_this_tensorflow_and_keras():
    assert _version(tf) in tf_compat.CHECKED_ON and _version(keras) in tf_compat.KERAS_CHECKED_ON
    assert tf_compat.profiler_session() is not None
    assert tf_compat.traceme() is not None
    enable, disable, enabled = tf_compat.cpu_allocator_stats(tf)
    assert enabled() in (True, False)
    assert tf_compat.onednn_enabled() in (True, False)
    assert hasattr(tf_compat.xplane_pb2(), "XSpace")


def test_the_keras_entries_read_a_real_model(mlp):
    model, _ = mlp
    children = tf_compat.keras_children(model)  # Keras's InputLayer first, named uniquely per process
    assert [type(c).__name__ for c in children][0] == "InputLayer"
    assert [c.name for c in children][1:] == ["wide", "head"]
    kernel = model.get_layer("wide").kernel
    assert isinstance(tf_compat.keras_backing_variable(kernel), tf.Variable)
    plain = tf.Variable(1.0)
    assert tf_compat.keras_backing_variable(plain) is plain
    assert tf_compat.keras_children(object()) is None


def test_without_the_traceme_eager_layers_lose_their_names_and_the_profile_says_so(mlp, monkeypatch):
    model, x = mlp
    with_scopes = _profile(lambda: model(x), {"model": model, "x": x})
    assert "wide" in {row.name for row in with_scopes.layers if row.forward_bytes}
    monkeypatch.setattr(tf_compat, "traceme", lambda: None)
    p = _profile(lambda: model(x), {"model": model, "x": x})
    assert "tf_compat_traceme" in _codes(p) and p.error is None
    assert not any(row.forward_bytes for row in p.layers if row.name == "wide")
    assert p.peak_bytes >= 512 * 256 * 4  # the activations are still counted, on no layer


def test_without_the_profiler_session_the_public_profiler_records_the_run(mlp, monkeypatch):
    model, x = mlp
    monkeypatch.setattr(tf_compat, "profiler_session", lambda: None)
    p = _profile(lambda: model(x), {"model": model, "x": x})
    assert "tf_compat_profiler_session" in _codes(p) and p.error is None
    assert any(op.allocated_bytes >= 512 * 256 * 4 for op in p.ops)  # TF's events came through


def test_without_the_cpu_allocator_switch_the_profile_says_what_it_cannot_see(mlp, monkeypatch):
    model, x = mlp
    monkeypatch.setattr(tf_compat, "cpu_allocator_stats", lambda tf: None)
    p = _profile(lambda: model(x), {"model": model, "x": x})
    note = next(w.message for w in p.warnings if w.code == "tf_compat_cpu_allocator_stats")
    assert "no CPU allocation is seen" in note and p.error is None


def test_without_the_protobuf_classes_an_xspace_is_refused_in_one_line(monkeypatch, tmp_path):
    def gone():
        raise ImportError("no module named xplane_pb2")

    monkeypatch.setattr(tf_compat, "xplane_pb2", gone)
    path = tmp_path / "run.xplane.pb"
    path.write_bytes(b"\x0a\x00")
    with pytest.raises(memprofile.errors.ProfileFormatError, match="needs TensorFlow installed"):
        memprofile.import_trace(str(path))


def _recorded_trace() -> tuple[bytes, int]:
    """A real trace of a 4 MiB tensor, with the collector's clock anchor, and
    the anchor's wall-clock time."""
    logdir = tempfile.mkdtemp(prefix="memprofile-compat-test-")
    enable, disable, enabled = tf_compat.cpu_allocator_stats(tf)
    switched = not enabled()
    enable()  # TF's default CPU allocator records nothing without its statistics
    try:
        session = tf_compat.profiler_session()()
        session.start(logdir, {})
        wall = anchor()
        tf.zeros((MiB,))
        session.export_to_tb()
        files = glob.glob(os.path.join(logdir, "**", "*.xplane.pb"), recursive=True)
        return read_xspace_file(files[0]), wall
    finally:
        if switched:
            disable()
        for f in glob.glob(os.path.join(logdir, "**", "*"), recursive=True)[::-1]:
            os.remove(f) if os.path.isfile(f) else os.rmdir(f)
        os.rmdir(logdir)


def _as_tf_2_16(parsed) -> None:
    """What TF 2.16 writes: times from the session's start, and no start time."""
    start = parsed.start_ns
    parsed.events.t_ns = [t - start for t in parsed.events.t_ns]
    parsed.start_ns = None


def test_a_trace_that_counts_from_its_own_start_is_put_on_the_wall_clock_by_the_anchor():
    data, wall = _recorded_trace()
    parsed = parse_xspace(data)
    if parsed.start_ns is None:
        pytest.skip("this TF writes relative times itself (TF 2.16): the compat run checks it there")
    truth = list(parsed.events.t_ns)
    assert truth and not tf_compat.relative_times(truth, parsed.start_ns)
    _as_tf_2_16(parsed)
    assert tf_compat.relative_times(parsed.events.t_ns, parsed.start_ns)
    # the anchor is found in the trace, at its time from the session's start
    at = tf_compat.anchor_time_ns(data, ANCHOR)
    assert at is not None and 0 <= at < 10**10
    session = ProfilerSession(tf, notes=[])
    session.anchor_wall_ns = wall
    session.anchor_times(parsed, data, wall0=0)
    assert not session.notes
    assert max(abs(a - b) for a, b in zip(parsed.events.t_ns, truth)) < 1_000_000  # within 1 ms


def test_without_an_anchor_the_times_count_from_the_session_start_and_the_profile_says_so():
    data, _ = _recorded_trace()
    parsed = parse_xspace(data)
    if parsed.start_ns is None:
        pytest.skip("this TF writes relative times itself (TF 2.16)")
    _as_tf_2_16(parsed)
    relative = list(parsed.events.t_ns)
    session = ProfilerSession(tf, notes=[])
    session.anchor_wall_ns, session.session_wall_ns = None, 123 * 10**18
    session.anchor_times(parsed, data, wall0=0)
    assert [code for code, _ in session.notes] == ["tf_compat_trace_clock"]
    assert parsed.events.t_ns == [t + 123 * 10**18 for t in relative]
