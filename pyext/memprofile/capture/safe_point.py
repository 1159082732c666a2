"""Run a collector's work on the main thread soon, whatever code it runs.

torch's profiler must be stopped by the thread that started it, and the
budget's watcher is another thread. The cell's own statements (capture/lines
marks) and model calls (module hooks) are places to do it, but a loop of
tiny ops in a function from another cell, a module, a library or a script
passes through neither. On the main thread (where a notebook cell, a script
and `memprofile run` run) CPython has one more: a Python signal handler runs
between two bytecodes of whatever is running. `_thread.interrupt_main(signum)`
(Python 3.10+) trips that handler from another thread without sending any OS
signal, so the handler of an otherwise unused signal is borrowed while a
profile runs and given back after.

The handler runs at a bytecode boundary of arbitrary code: memprofile's own
(a hook half done), torch's module machinery, the user's. It does the work
only where the innermost frames, up to the first frame of neither torch nor
memprofile (the user's or a library's code), hold no memprofile frame and
no torch module call machinery; otherwise it does nothing and the caller
asks again (`request` once per watcher poll until the work is done).

Off the main thread (a profile in a worker thread) no signal handler runs
there. On Python 3.12+ `sys.monitoring` does it instead: a request turns on
LINE events for every thread, the callback does the work on the profiling
thread at its next line outside memprofile's and torch's hook code, then
turns them off: nothing costs anything until a request. Before 3.12 a trace
function is set on the profiling thread (when it has none: not under a
debugger or coverage) that returns at once, and a request sets the local
trace of that thread's running frames, whose next line does the work (the
trace costs a Python call per Python function call of that thread while the
detail records).
"""

from __future__ import annotations

import _thread
import gc
import os
import signal
import sys
import threading
from collections.abc import Callable
from types import FrameType

#: Where memprofile's own code and torch's live (capture/torch/budget.py's watcher reads them too).
OWN_CODE = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep
TORCH_CODE = os.sep + "torch" + os.sep
#: torch's module call machinery, which iterates the hooks memprofile changes.
_MODULE_CALLS = os.path.join("torch", "nn", "modules", "module.py")


def _candidates() -> list[int]:
    """Signals nobody sends: the real-time ones from the top, then SIGUSR2 (Linux, macOS)."""
    found = []
    rt_max = getattr(signal, "SIGRTMAX", None)
    rt_min = getattr(signal, "SIGRTMIN", None)
    if rt_max is not None and rt_min is not None:
        found += list(range(int(rt_max), int(rt_max) - 4, -1))
    usr2 = getattr(signal, "SIGUSR2", None)
    if usr2 is not None:
        found.append(int(usr2))
    return found


def _busy(frame: FrameType | None) -> bool:
    """In memprofile's code or torch's module calls, from the innermost frame
    out to the first frame of other code."""
    while frame is not None:
        name = frame.f_code.co_filename
        if name.startswith(OWN_CODE) or name.endswith(_MODULE_CALLS):
            return True
        if TORCH_CODE not in name:
            return False
        frame = frame.f_back
    return False


#: sys.monitoring tool ids tried, in order (2 is PROFILER_ID; 3 and 4 are unnamed).
_TOOL_IDS = (4, 3, 2)


def thread_frame(ident: int) -> FrameType | None:
    """The running frame of thread `ident`, from another thread. With the
    garbage collector off meanwhile: on Python 3.11 a collection inside
    sys._current_frames() that frees a threading.local deadlocks the process
    (both take the interpreter's head lock; CPython gh-106883, fixed in 3.12
    the same way). Seen here: a benchmark's kernel hung for good."""
    enabled = gc.isenabled()
    if enabled:
        gc.disable()
    try:
        return sys._current_frames().get(ident)
    finally:
        if enabled:
            gc.enable()


class _LineMonitor:
    """sys.monitoring (3.12+): `work()` on the thread `thread` at its next
    line outside memprofile's and torch's hook code, once requested."""

    def __init__(self, work: Callable[[], None], thread: int) -> None:
        self._work = work
        self._thread = thread
        self._tool: int | None = None
        self._on = False

    def install(self) -> bool:
        monitoring = getattr(sys, "monitoring", None)
        if monitoring is None:
            return False
        for tool in _TOOL_IDS:
            try:
                monitoring.use_tool_id(tool, "memprofile")
            except ValueError:  # another tool's (a debugger, coverage)
                continue
            monitoring.register_callback(tool, monitoring.events.LINE, self._line)
            self._tool = tool
            return True
        return False

    def request(self) -> None:
        if self._tool is not None and not self._on:
            self._on = True
            sys.monitoring.set_events(self._tool, sys.monitoring.events.LINE)  # type: ignore[attr-defined]

    def close(self) -> None:
        tool, self._tool = self._tool, None
        if tool is None:
            return
        monitoring = sys.monitoring  # type: ignore[attr-defined]
        monitoring.set_events(tool, 0)
        monitoring.register_callback(tool, monitoring.events.LINE, None)
        monitoring.free_tool_id(tool)

    def _line(self, code: object, line: int) -> object:
        if threading.get_ident() != self._thread or self._tool is None or _busy(sys._getframe(1)):
            return None  # another thread, or hook code: the next line asks again
        sys.monitoring.set_events(self._tool, 0)  # type: ignore[attr-defined]
        self._on = False
        try:
            self._work()
        except Exception:  # never into the user's code
            pass
        return None


class _LineTrace:
    """sys.settrace (before 3.12): `work()` on the thread that installed it,
    at the next line of one of its running frames, once requested."""

    def __init__(self, work: Callable[[], None], thread: int) -> None:
        self._work = work
        self._thread = thread
        self._requested = False
        self._installed = False

    def install(self) -> bool:
        if sys.gettrace() is not None:  # a debugger's or coverage's: theirs
            return False
        sys.settrace(self._call)  # type: ignore[arg-type]  # a trace function: (frame, event, arg)
        self._installed = True
        return True

    def _call(self, frame: FrameType, event: str, arg: object) -> object:
        return self._line if self._requested else None  # new frames trace lines only once requested

    def request(self) -> None:
        if not self._installed or self._requested:
            return
        self._requested = True
        frame = thread_frame(self._thread)
        while frame is not None:  # the running frames: the loop is in one of them
            frame.f_trace_lines = True
            frame.f_trace = self._line
            frame = frame.f_back

    def _line(self, frame: FrameType, event: str, arg: object) -> object:
        if not self._installed or not self._requested or threading.get_ident() != self._thread:
            return None  # done (or not ours): None stops tracing that frame
        if event != "line" or _busy(frame):
            return self._line
        self._requested = False  # once per request
        try:
            self._work()
        except Exception:  # never into the user's code
            pass
        return None

    def close(self) -> None:
        """On the thread that installed it."""
        if not self._installed:
            return
        self._installed = False
        if sys.gettrace() == self._call:
            sys.settrace(None)
        frame: FrameType | None = sys._getframe()
        while frame is not None:
            if frame.f_trace == self._line:
                frame.f_trace = None
            frame = frame.f_back


class SafePoint:
    """`request()` from any thread: `work()` runs on the profiling thread at
    its next bytecode boundary (main thread) or line (other threads) outside
    memprofile's and torch's hook machinery. `install()` and `close()` on the
    profiling thread; where no way exists (a worker thread already traced by
    a debugger before 3.12) `available` is False and `request()` does nothing."""

    def __init__(self, work: Callable[[], None]) -> None:
        self._work = work
        self._signum: int | None = None  # the signal borrowed: one whose handler was SIG_DFL
        self._monitor: _LineMonitor | _LineTrace | None = None

    @property
    def available(self) -> bool:
        return self._signum is not None or self._monitor is not None

    def install(self) -> bool:
        if threading.current_thread() is not threading.main_thread():
            kind = _LineMonitor if hasattr(sys, "monitoring") else _LineTrace
            monitor = kind(self._work, threading.get_ident())
            if not monitor.install():
                return False
            self._monitor = monitor
            return True
        if not hasattr(_thread, "interrupt_main"):
            return False
        for signum in _candidates():
            try:
                if signal.getsignal(signum) is not signal.SIG_DFL:  # the user's or a library's: leave it alone
                    continue
                signal.signal(signum, self._handle)
            except (ValueError, OSError):
                continue
            self._signum = signum
            return True
        return False

    def request(self) -> None:
        if self._monitor is not None:
            self._monitor.request()
            return
        if self._signum is not None:
            try:
                _thread.interrupt_main(self._signum)  # type: ignore[arg-type]  # any signal number, not only the enum's
            except (ValueError, RuntimeError):
                pass

    def close(self) -> None:
        monitor, self._monitor = self._monitor, None
        if monitor is not None:
            try:
                monitor.close()
            except (ValueError, RuntimeError):
                pass
        signum, self._signum = self._signum, None
        if signum is None:
            return
        try:
            if signal.getsignal(signum) == self._handle:  # not if the user took it meanwhile
                signal.signal(signum, signal.SIG_DFL)
        except (ValueError, OSError):  # not the main thread any more (interpreter shutting down)
            pass

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self._signum is None or _busy(frame):
            return  # asked again at the watcher's next poll
        try:
            self._work()
        except Exception:  # never into the user's code
            pass
