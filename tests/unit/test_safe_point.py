"""capture/safe_point.py: work asked for from another thread runs on the
profiling thread in whatever code it is running (the main thread through a
borrowed signal, given back; another thread through sys.monitoring, or a
trace function before 3.12), and nothing is left installed."""

from __future__ import annotations

import signal
import sys
import threading
import time

import pytest

from memprofile.capture import safe_point
from memprofile.capture.safe_point import SafePoint, _candidates


def _spin_until(done: list, seconds: float = 5.0) -> None:
    deadline = time.monotonic() + seconds
    while not done and time.monotonic() < deadline:  # a loop of the user's: no call into memprofile
        sum(range(100))


def test_work_asked_from_a_thread_runs_on_the_main_thread_in_the_users_loop():
    ran: list[int] = []
    point = SafePoint(lambda: ran.append(threading.get_ident()))
    assert point.install() and point.available
    try:
        asker = threading.Thread(target=point.request)
        asker.start()
        asker.join()
        _spin_until(ran)
    finally:
        point.close()
    assert ran == [threading.main_thread().ident]


def test_the_signal_is_given_back_and_a_users_handler_is_left_alone():
    first = _candidates()[0]
    mine = signal.signal(first, lambda *_: None)  # the user's own handler on the first candidate
    try:
        point = SafePoint(lambda: None)
        assert point.install()
        assert signal.getsignal(first) is not point._handle  # it took another signal
        taken = point._signum
        assert taken != first and signal.getsignal(taken) == point._handle
        point.close()
        assert signal.getsignal(taken) is signal.SIG_DFL and not point.available
    finally:
        signal.signal(first, mine)


def test_nothing_runs_while_memprofile_code_is_running_and_it_runs_once_asked_again():
    ran: list[int] = []
    point = SafePoint(lambda: ran.append(1))
    point.install()
    try:
        # a request that lands in a frame of memprofile's code does nothing
        point._handle(point._signum, _frame_of(safe_point.__file__))
        assert ran == []
        # the watcher asks again each poll: it runs once the main thread is in other code
        asker = threading.Thread(target=lambda: [point.request() or time.sleep(0.02) for _ in range(50) if not ran])
        asker.start()
        _spin_until(ran)
        asker.join()
    finally:
        point.close()
    assert ran == [1]


def _frame_of(filename: str):
    """A frame whose code is in `filename`."""
    captured: list = []
    exec(compile("captured.append(sys._getframe(0))", filename, "exec"), {"captured": captured, "sys": sys})
    return captured[0]


def test_off_the_main_thread_the_work_runs_on_that_thread_at_a_line_of_its_loop():
    # GIVEN a worker thread looping in its own function (no memprofile frame in it)
    ran_on: list[int] = []
    state: dict = {}

    def worker():
        point = SafePoint(lambda: ran_on.append(threading.get_ident()))
        state["installed"] = point.install()
        state["point"] = point
        state["ident"] = threading.get_ident()
        deadline = time.monotonic() + 10
        while not ran_on and time.monotonic() < deadline:
            x = sum(range(100))  # noqa: F841  a line, again and again
        point.close()
        state["trace_after"] = sys.gettrace()

    t = threading.Thread(target=worker)
    t.start()
    while "point" not in state:
        time.sleep(0.001)
    # WHEN another thread asks, until it ran
    while t.is_alive() and not ran_on:
        state["point"].request()
        time.sleep(0.005)
    t.join()
    # THEN it ran once, on the worker's thread, and nothing is left traced or monitored
    assert state["installed"] and ran_on == [state["ident"]]
    assert state["trace_after"] is None
    if hasattr(sys, "monitoring"):
        assert all(sys.monitoring.get_tool(tool) != "memprofile" for tool in range(6))


def test_a_worker_thread_a_debugger_traces_is_left_alone():
    if hasattr(sys, "monitoring"):
        pytest.skip("3.12+: sys.monitoring tools sit beside a debugger's trace")
    result: list = []

    def tracer(frame, event, arg):
        return None

    def worker():
        sys.settrace(tracer)
        result.append(SafePoint(lambda: None).install())
        result.append(sys.gettrace() is tracer)
        sys.settrace(None)

    t = threading.Thread(target=worker)
    t.start()
    t.join()
    assert result == [False, True]


DEADLOCK = """
import gc, sys, threading
from memprofile.capture.safe_point import thread_frame
frame_of = thread_frame if sys.argv[1] == "ours" else (lambda ident: sys._current_frames().get(ident))
stop = False
def spin():
    def deeper(n):
        return deeper(n - 1) if n else sum(range(50))
    while not stop:
        deeper(5)
worker = threading.Thread(target=spin)
worker.start()
gc.set_threshold(int(sys.argv[2]))
for _ in range(2000):  # a collection inside sys._current_frames() that frees a threading.local
    class Cycle:
        pass
    c = Cycle(); c.me = c; c.local = threading.local(); c.local.x = 1
    del c
    frame_of(worker.ident)
stop = True
worker.join()
print("done")
"""


@pytest.mark.parametrize("threshold", [3, 5, 7])
def test_reading_another_threads_frame_never_deadlocks_in_a_collection(threshold):
    import subprocess

    # (bare sys._current_frames() hangs this script for good on Python 3.11: CPython gh-106883)
    done = subprocess.run(
        [sys.executable, "-c", DEADLOCK, "ours", str(threshold)], capture_output=True, text=True, timeout=120
    )
    assert done.stdout.strip() == "done", done.stderr[-2000:]
