"""capture/safe_point.py: work asked for from another thread runs on the main
thread in whatever code it is running, and the signal it borrows is given back."""

from __future__ import annotations

import signal
import sys
import threading
import time

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


def test_off_the_main_thread_nothing_is_installed():
    result: list[bool] = []
    worker = threading.Thread(target=lambda: result.append(SafePoint(lambda: None).install()))
    worker.start()
    worker.join()
    assert result == [False]
