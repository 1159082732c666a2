"""Every private TensorFlow and Keras API the capture touches, in one place,
each with the versions it was checked on (scripts/compat.sh runs the capture
tests on each; README "Tested versions"). A missing or changed one gives the
collector a fallback and a named note for the profile (`tf_compat_*`), never
an exception in the user's cell.

What stays outside: the XSpace's event and stat names (MemoryAllocation,
allocator_name, ...) are TF's trace format, read in xspace.py where
an unknown file is already said in one line; `tf.config.experimental`'s
memory info is public API that older TF releases do not support on CPU
(the collector says "unsupported" for a device where it fails).
"""

from __future__ import annotations

import ctypes
import glob
import os
from collections.abc import Callable
from typing import Any

#: The TensorFlow releases the entries below were checked on (scripts/compat.sh).
CHECKED_ON = "2.16.2, 2.21.0"
#: The Keras releases the Keras entries were checked on.
KERAS_CHECKED_ON = "3.12.4, 3.15.1"

#: Wall-clock ns before this are not a date: a trace's times relative to its start.
_YEAR_2001_NS = 978_307_200 * 10**9


def profiler_session() -> type | None:
    """`tensorflow.python.profiler.internal._pywrap_profiler.ProfilerSession`:
    the class behind tf.profiler.experimental, without its global state (a
    cell that fails leaves nothing to clear). Used as `s = cls(); s.start(logdir,
    {})`, then `s.export_to_tb()` (stops and writes the XSpace) or `s.stop()`.
    TF 2.2 and later; checked on CHECKED_ON. None when gone (the caller uses
    the public tf.profiler.experimental.start/stop)."""
    try:
        from tensorflow.python.profiler.internal import _pywrap_profiler

        cls = _pywrap_profiler.ProfilerSession
    except (ImportError, AttributeError):
        return None
    return cls if all(hasattr(cls, m) for m in ("start", "stop", "export_to_tb")) else None


def traceme() -> type | None:
    """`tensorflow.python.profiler.internal._pywrap_traceme.TraceMe(name)`,
    ended by `.Stop()`: a named interval on the calling thread in the XSpace
    (eager Keras layer calls and GradientTape.gradient are made scopes with
    it; a session's clock anchor is one). TF 2.2 and later; checked on
    CHECKED_ON. None when gone."""
    try:
        from tensorflow.python.profiler.internal._pywrap_traceme import TraceMe
    except ImportError:
        return None
    return TraceMe if hasattr(TraceMe, "Stop") else None


def cpu_allocator_stats(tf: Any) -> tuple[Callable, Callable, Callable[[], bool]] | None:
    """(enable, disable, enabled) of TF's default CPU allocator statistics,
    and with them its MemoryAllocation events: the C++ symbols
    `tsl::EnableCPUAllocatorStats`, `tsl::DisableCPUAllocatorStats` and
    `tsl::CPUAllocatorStatsEnabled` of libtensorflow_framework.so (not in TF's
    Python API). tsl namespace: TF 2.13 and later; checked on CHECKED_ON.
    None when the library or a symbol is missing."""
    here = os.path.dirname(getattr(tf, "__file__", "") or "")
    for path in sorted(glob.glob(os.path.join(here, "libtensorflow_framework.so*"))):
        try:
            lib = ctypes.CDLL(path)
            enable = lib._ZN3tsl23EnableCPUAllocatorStatsEv
            disable = lib._ZN3tsl24DisableCPUAllocatorStatsEv
            enabled = lib._ZN3tsl24CPUAllocatorStatsEnabledEv
        except (OSError, AttributeError):
            continue
        enabled.restype = ctypes.c_bool
        return enable, disable, enabled
    return None


def onednn_enabled() -> bool | None:
    """Whether TF was built and started with oneDNN's ops (its CPU allocator
    then leaves small blocks out of the trace):
    `tensorflow.python.util._pywrap_util_port.IsMklEnabled()`. TF 2.4 and
    later; checked on CHECKED_ON. None when gone (not known)."""
    try:
        from tensorflow.python.util import _pywrap_util_port

        return bool(_pywrap_util_port.IsMklEnabled())
    except (ImportError, AttributeError):
        return None


def xplane_pb2() -> Any:
    """TF's protobuf classes for an XSpace: `tensorflow.tsl.profiler.protobuf.
    xplane_pb2` (TF 2.12 and later; checked on CHECKED_ON), or where older or
    newer releases put it (`tsl.profiler.protobuf`,
    `tensorflow.core.profiler.protobuf`). Raises ImportError (the last one's)
    when none is there."""
    error: ImportError | None = None
    for name in (
        "tensorflow.tsl.profiler.protobuf.xplane_pb2",
        "tsl.profiler.protobuf.xplane_pb2",
        "tensorflow.core.profiler.protobuf.xplane_pb2",
    ):
        try:
            module = __import__(name, fromlist=["XSpace"])
        except ImportError as exc:
            error = exc
            continue
        if hasattr(module, "XSpace"):
            return module
    raise error or ImportError("no xplane_pb2 with an XSpace")


def relative_times(events_t_ns: list[int], start_ns: int | None) -> bool:
    """Whether a parsed trace's times are relative to the session's start
    with nothing in the trace to say when that was: TF 2.16 writes line
    timestamps from the session's start and no "Task Environment" plane
    (its `profile_start_time` came in TF 2.17; checked on CHECKED_ON)."""
    return not start_ns and bool(events_t_ns) and max(events_t_ns) < _YEAR_2001_NS


def anchor_time_ns(data: bytes, name: str) -> int | None:
    """The trace time (ns, as the trace counts them) of the first event named
    `name` (a TraceMe the collector made at a wall-clock time it knows), or
    None. Reads the XSpace once more: only for a trace with relative times."""
    try:
        space = xplane_pb2().XSpace()
        space.ParseFromString(data)
    except Exception:
        return None
    for plane in space.planes:
        ids = {k for k, m in plane.event_metadata.items() if m.name == name}
        if not ids:
            continue
        for line in plane.lines:
            for e in line.events:
                if e.metadata_id in ids:
                    return line.timestamp_ns + e.offset_ps // 1000
    return None


def keras_children(layer: Any) -> list[Any] | None:
    """A Keras layer's direct sub-layers, tracked ones in order:
    `layer._flatten_layers(include_self=False, recursive=False)` (Keras 3;
    checked on KERAS_CHECKED_ON). None when it is missing or fails (the
    caller uses the public `layer.layers`)."""
    flatten = getattr(layer, "_flatten_layers", None)
    if flatten is None:
        return None
    try:
        return list(flatten(include_self=False, recursive=False))
    except Exception:
        return None


def keras_backing_variable(v: Any) -> Any:
    """The tf.Variable behind a Keras 3 variable on the TensorFlow backend
    (`variable._value`; checked on KERAS_CHECKED_ON), or `v` itself when it
    has none (a tf.Variable, or a Keras that keeps it elsewhere)."""
    inner = getattr(v, "_value", None)
    return inner if inner is not None and hasattr(inner, "read_value") else v


#: Where Python code starts a TF profiler session, by module and name:
#: `profiler_v2.start` (tf.profiler.experimental.start and its `Profile`
#: context manager, which calls the module's `start`; Keras's
#: TensorBoard(profile_batch=...), which calls tf.profiler.experimental.start;
#: tf.summary.trace_on(profiler=True)) and `profiler_client.trace` (a profiler
#: server's capture asked for from this process), with the public API modules
#: that export them. Checked on CHECKED_ON.
_PROFILER_STARTS = (
    ("tensorflow.python.profiler.profiler_v2", "start"),
    ("tensorflow._api.v2.profiler.experimental", "start"),
    ("tensorflow._api.v2.compat.v2.profiler.experimental", "start"),
    ("tensorflow.python.profiler.profiler_client", "trace"),
    ("tensorflow._api.v2.profiler.experimental.client", "trace"),
    ("tensorflow._api.v2.compat.v2.profiler.experimental.client", "trace"),
)


def profiler_starts() -> list[tuple[Any, str, Callable]]:
    """(module, name, function) for each loaded module above that holds the
    function TF defined there (a module of them TF has not imported is not
    imported here). TF allows one profiler session at a time: memprofile's
    detail ends before one of these runs. Empty when TF moved them."""
    import sys

    found: list[tuple[Any, str, Callable]] = []
    originals: dict[str, Callable] = {}
    for module_name, attr in _PROFILER_STARTS:
        module = sys.modules.get(module_name)
        function: Any = getattr(module, attr, None)
        if module is None or not callable(function):
            continue
        if module_name.startswith("tensorflow.python."):
            originals[attr] = function
        elif function is not originals.get(attr):  # an API module that exports something else now
            continue
        found.append((module, attr, function))
    return found


def users_profiler_running() -> bool:
    """Whether tf.profiler.experimental's session is running:
    `profiler_v2._profiler` is set from its start to its stop (TF 2.2 and
    later; checked on CHECKED_ON). False when gone (memprofile's own start
    then finds out: AlreadyExistsError)."""
    import sys

    module = sys.modules.get("tensorflow.python.profiler.profiler_v2")
    return getattr(module, "_profiler", None) is not None
