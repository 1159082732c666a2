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
"""

from __future__ import annotations

import _thread
import os
import signal
import threading
from collections.abc import Callable
from types import FrameType

_PACKAGE = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep
_TORCH = os.sep + "torch" + os.sep
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
        if name.startswith(_PACKAGE) or name.endswith(_MODULE_CALLS):
            return True
        if _TORCH not in name:
            return False
        frame = frame.f_back
    return False


class SafePoint:
    """`request()` from any thread: `work()` runs on the main thread at its
    next bytecode boundary outside memprofile's and torch's hook machinery.
    `install()` and `close()` on the main thread; elsewhere (a profile in a
    worker thread) `available` is False and `request()` does nothing."""

    def __init__(self, work: Callable[[], None]) -> None:
        self._work = work
        self._signum: int | None = None  # the signal borrowed: one whose handler was SIG_DFL

    @property
    def available(self) -> bool:
        return self._signum is not None

    def install(self) -> bool:
        if threading.current_thread() is not threading.main_thread() or not hasattr(_thread, "interrupt_main"):
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
        if self._signum is not None:
            try:
                _thread.interrupt_main(self._signum)  # type: ignore[arg-type]  # any signal number, not only the enum's
            except (ValueError, RuntimeError):
                pass

    def close(self) -> None:
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
