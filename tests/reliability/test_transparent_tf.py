"""Issue 27, row 6: TensorFlow's own profiler comes first.

Row 6: `tf.profiler.experimental.start` in a `%%memprofile` cell raised
"AlreadyExistsError: Another profiler is running" (memprofile's detail is
TF's profiler, and TF allows one session), and TF's Python state was left
set, so the profiler stayed stuck until `stop()` even in plain cells.

Each case runs in a fresh process (TF's profiler is process state), bare and
profiled, and compares the user's trace: the same planes and events as bare
(their code's ops; none of memprofile's scopes or allocation events), read
with TF's own xplane_pb2. Cases: start/stop in the cell, the
`tf.profiler.experimental.Profile` context manager, a profiler started
before the cell and stopped after it, Keras's `TensorBoard(profile_batch=...)`
in `fit`, a profiler server's capture asked for in the cell
(`tf.profiler.experimental.client.trace`), and a script that starts TF's
profiler under `memprofile run`.
After each, a plain cell starts and stops TF's profiler again.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("tensorflow")

#: What a child prints on its last line: each cell's error, the profile's
#: notes and each trace's {plane: {event name: count}} (xplane_pb2), by path
#: under the log folder.
SUMMARY = """
import glob, json, os
from memprofile.capture.tensorflow.compat import xplane_pb2

def traces(logdir):
    out = {}
    for path in sorted(glob.glob(os.path.join(logdir, "**", "*.xplane.pb"), recursive=True)):
        space = xplane_pb2().XSpace()
        with open(path, "rb") as f:
            space.ParseFromString(f.read())
        planes = {}
        for plane in space.planes:
            names = planes.setdefault(plane.name, {})
            for line in plane.lines:
                for event in line.events:
                    name = plane.event_metadata[event.metadata_id].name
                    names[name] = names.get(name, 0) + 1
        # The dated folder TF writes under differs run to run: keep what is above it.
        out[os.path.relpath(path, logdir).split("plugins" + os.sep)[0].rstrip(os.sep) or "."] = planes
    return out
"""

#: Runs CELLS in an IPython shell, each bare or under `%%memprofile -q`.
SHELL = (
    SUMMARY
    + """
import sys
from IPython.testing.globalipapp import start_ipython
import memprofile

ip = start_ipython()
ip.run_line_magic("load_ext", "memprofile")
profiled = sys.argv[1] == "profiled"
ip.user_ns["logdir"] = LOGDIR
errors = []
for cell, in_profile in CELLS:
    out = ip.run_cell(("%%memprofile -q\\n" if profiled and in_profile else "") + cell)
    error = out.error_in_exec or out.error_before_exec
    errors.append(None if error is None else f"{type(error).__name__}: {error}")
notes = {w.code: w.message for w in memprofile.last().warnings} if profiled else {}
# TF's profiler entries are TF's own again after the cells.
experimental = sys.modules["tensorflow"].profiler.experimental
entries = [sys.modules["tensorflow.python.profiler.profiler_v2"].start, experimental.start, experimental.client.trace]
patched = [f.__name__ for f in entries if hasattr(f, "__memprofile_original__")]
print(json.dumps({"errors": errors, "notes": notes, "traces": traces(LOGDIR), "patched": patched}))
"""
)

SETUP = """
import tensorflow as tf
x = tf.random.normal([64, 64])
"""
WORK = "y = tf.matmul(x, x)\nz = tf.reduce_sum(tf.nn.relu(y))\n"
#: A plain cell after the profiled one: TF's profiler is not left running or stuck.
AGAIN = "tf.profiler.experimental.start(logdir + '/again')\nw = tf.matmul(x, x)\ntf.profiler.experimental.stop()\n"

KERAS = """
import numpy as np
import keras
model = keras.Sequential([keras.Input((16,)), keras.layers.Dense(32, activation="relu"), keras.layers.Dense(1)])
model.compile(optimizer="adam", loss="mse")
data = np.random.default_rng(0).normal(size=(64, 16)).astype("float32")
target = data.sum(axis=1, keepdims=True)
"""
#: Keras's TensorBoard(profile_batch=2) starts TF's profiler inside fit, at
#: the second batch (and warms it up, start and stop, when fit starts).
TENSORBOARD = (
    "board = keras.callbacks.TensorBoard(log_dir=logdir, profile_batch=2, write_graph=False)\n"
    "history = model.fit(data, target, batch_size=8, epochs=1, verbose=0, callbacks=[board])\n"
)
#: The calls TensorBoard makes to start and stop TF's profiler (keras's
#: backend.tensorboard), from a callback of the user's: the same path in fit
#: without the tensorboard package, which TensorBoard's summaries need.
BACKEND_TRACE = """
from keras.src import backend

class Trace(keras.callbacks.Callback):
    def on_train_batch_begin(self, batch, logs=None):
        if batch == 2:
            backend.tensorboard.start_trace(logdir + "/train")

    def on_train_batch_end(self, batch, logs=None):
        if batch == 2:
            backend.tensorboard.stop_trace(save=True)

history = model.fit(data, target, batch_size=8, epochs=1, verbose=0, callbacks=[Trace()])
"""


def _env() -> dict[str, str]:
    return {**os.environ, "TF_ENABLE_ONEDNN_OPTS": "0", "TF_CPP_MIN_LOG_LEVEL": "2"}


def _summary(done: subprocess.CompletedProcess) -> dict:
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def _shell(tmp_path: Path, cells: list[tuple[str, bool]], profiled: bool) -> tuple[dict, str]:
    """Runs the cells in a fresh process: its summary and its stderr."""
    kind = "profiled" if profiled else "bare"
    logdir = tmp_path / kind
    script = tmp_path / f"shell_{kind}.py"
    script.write_text(f"CELLS = {cells!r}\nLOGDIR = {str(logdir)!r}\n" + SHELL)
    done = subprocess.run(
        [sys.executable, str(script), kind], capture_output=True, text=True, timeout=600, cwd=tmp_path, env=_env()
    )
    return _summary(done), done.stderr


def _ops(planes: dict[str, dict[str, int]]) -> dict[str, set[str]]:
    """Each plane's ops that the user's code ran (EagerLocalExecute: the op or
    traced function), without the uid TF numbers a traced function by
    (`__inference_multi_step_on_iterator_859`: a process-wide counter)."""
    return {
        plane: {re.sub(r"_\d+$", "", name) for name in names if name.startswith("EagerLocalExecute")}
        for plane, names in planes.items()
    }


def _assert_like_bare(bare: dict, profiled: dict, exact: bool = True) -> None:
    """The user's traces: the same files, planes and events as bare (with
    their counts, for eager cells, which run the same ops each time; fit's
    input pipeline threads record more or fewer events run to run, so there
    the same ops); nothing of memprofile's (its scopes, its clock anchor, the
    CPU allocator's events that memprofile switches on for its own detail)."""
    assert bare["traces"] and set(profiled["traces"]) == set(bare["traces"])
    assert profiled.get("patched", []) == []
    for path, planes in bare["traces"].items():
        theirs = profiled["traces"][path]
        if exact:
            assert theirs == planes, path
        else:
            assert _ops(theirs) == _ops(planes), path
        names = {name for events in theirs.values() for name in events}
        assert not any("memprofile" in name or name.startswith("MemoryAllocation") for name in names), path


@pytest.mark.parametrize(
    "cell",
    [
        f"tf.profiler.experimental.start(logdir)\n{WORK}tf.profiler.experimental.stop()\n",
        "with tf.profiler.experimental.Profile(logdir):\n" + "".join(f"    {line}\n" for line in WORK.splitlines()),
    ],
    ids=["start-stop", "Profile"],
)
def test_the_users_tf_profiler_in_the_cell_is_complete(tmp_path, cell):
    cells = [(SETUP, False), (WORK + cell, True), (AGAIN, False)]
    bare, _ = _shell(tmp_path, cells, profiled=False)
    profiled, _ = _shell(tmp_path, cells, profiled=True)
    assert bare["errors"] == [None, None, None]
    assert profiled["errors"] == bare["errors"]
    assert "EagerLocalExecute: MatMul" in bare["traces"]["."]["/host:CPU"]
    _assert_like_bare(bare, profiled)
    # memprofile recorded up to the user's start, and says so.
    assert "your TensorFlow profiler started" in profiled["notes"]["tf_user_profiler"]
    assert "tf_no_trace" not in profiled["notes"]


def test_the_users_tf_profiler_started_before_the_cell_is_left_alone(tmp_path):
    cells = [
        (SETUP + "tf.profiler.experimental.start(logdir)\n", False),
        (WORK, True),
        ("tf.profiler.experimental.stop()\n", False),
        (AGAIN, False),
    ]
    bare, _ = _shell(tmp_path, cells, profiled=False)
    profiled, _ = _shell(tmp_path, cells, profiled=True)
    assert bare["errors"] == [None] * 4
    assert profiled["errors"] == bare["errors"]
    _assert_like_bare(bare, profiled)
    notes = profiled["notes"]
    assert "already running" in notes["tf_user_profiler"] and "tf_no_trace" not in notes


@pytest.mark.parametrize("fit", [TENSORBOARD, BACKEND_TRACE], ids=["TensorBoard", "backend-trace"])
def test_keras_profiling_in_fit_is_complete(tmp_path, fit):
    if fit is TENSORBOARD and importlib.util.find_spec("tensorboard") is None:
        pytest.skip("TensorBoard's summaries need the tensorboard package")
    cells = [(SETUP + KERAS, False), (fit, True), (AGAIN, False)]
    bare, bare_err = _shell(tmp_path, cells, profiled=False)
    profiled, profiled_err = _shell(tmp_path, cells, profiled=True)
    assert bare["errors"] == [None] * 3
    assert profiled["errors"] == bare["errors"]
    # Keras logs a failed start and trains on, unprofiled.
    assert "Failed to start profiler" not in bare_err + profiled_err
    assert "EagerLocalExecute: __inference_multi_step_on_iterator" in _ops(bare["traces"]["train"])["/host:CPU"]
    _assert_like_bare(bare, profiled, exact=False)
    assert "tf_user_profiler" in profiled["notes"]


#: A profiler server, and a capture asked of it from the same process while
#: a thread works: the server starts TF's profiler session for the capture.
SERVER = """
import socket, threading
with socket.socket() as free:
    free.bind(("localhost", 0))
    port = free.getsockname()[1]
tf.profiler.experimental.server.start(port)
"""
CAPTURE = """
done = threading.Event()

def work():
    while not done.is_set():
        y = tf.matmul(x, x)

worker = threading.Thread(target=work)
worker.start()
try:
    tf.profiler.experimental.client.trace(f"grpc://localhost:{port}", logdir, 300)
finally:
    done.set()
    worker.join()
"""


def test_a_profiler_servers_capture_in_the_cell_is_complete(tmp_path):
    cells = [(SETUP + SERVER, False), (CAPTURE, True), (AGAIN, False)]
    bare, _ = _shell(tmp_path, cells, profiled=False)
    profiled, _ = _shell(tmp_path, cells, profiled=True)
    assert bare["errors"] == [None] * 3
    assert profiled["errors"] == bare["errors"]
    assert "EagerLocalExecute: MatMul" in _ops(bare["traces"]["."])["/host:CPU"]
    _assert_like_bare(bare, profiled, exact=False)  # the worker's loop runs as often as the capture lasts
    assert "tf_user_profiler" in profiled["notes"]


SCRIPT = (
    SETUP
    + f"""
import sys
logdir = sys.argv[1]
tf.profiler.experimental.start(logdir)
{WORK}tf.profiler.experimental.stop()
{AGAIN}"""
)


def test_a_script_that_starts_tf_profiler_runs_as_bare_under_run(tmp_path):
    script = tmp_path / "traced.py"
    script.write_text(SCRIPT + SUMMARY + "print(json.dumps({'traces': traces(logdir)}))\n")
    bare = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "bare")],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
        env=_env(),
    )
    profiled = subprocess.run(
        [
            sys.executable,
            "-m",
            "memprofile",
            "run",
            "-o",
            str(tmp_path / "p.json"),
            str(script),
            str(tmp_path / "profiled"),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
        env=_env(),
    )
    _assert_like_bare(_summary(bare), _summary(profiled))
    profile = json.loads((tmp_path / "p.json").read_text())
    assert "tf_user_profiler" in json.dumps(profile)
