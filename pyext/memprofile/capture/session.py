"""Which profile owns the framework capture of this process.

torch's profiler keeps one session per process (two at once segfault, and a
nested one ends the outer's), TensorFlow's likewise, and the cell-line marks
go to one recorder. So one profile at a time, the owner, starts the
framework collectors (torch, tensorflow, lines). A profile that starts while
another owns them, nested in it or in another thread, records process memory
only (the host collector may nest) and says so; the owner is told when and
where it ran, and says that in turn.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field

_lock = threading.Lock()


@dataclass
class Inner:
    """A profile that ran while the owner held the capture."""

    name: str
    thread: str
    start: float  # time.perf_counter()
    end: float | None = None  # None while it runs


@dataclass
class Owner:
    """The profile holding the framework capture."""

    name: str
    thread: str
    origin: float  # time.perf_counter() at its start
    inner: list[Inner] = field(default_factory=list)

    def describe(self) -> str:
        """How a note names it: "profile 'train' (thread MainThread)"."""
        return f"profile {self.name!r} (thread {self.thread})"


_owner: Owner | None = None


def claim(name: str) -> tuple[bool, Owner]:
    """(True, a new owner) when no profile owns the capture, else (False, the owner)."""
    global _owner
    with _lock:
        if _owner is not None:
            return False, _owner
        _owner = Owner(name, threading.current_thread().name, time.perf_counter())
        return True, _owner


def release(owner: Owner) -> None:
    global _owner
    with _lock:
        if _owner is owner:
            _owner = None


def current() -> Owner | None:
    return _owner


def enter_inner(owner: Owner, name: str) -> Inner:
    """Tell `owner` a profile started inside it; finish it with leave_inner."""
    inner = Inner(name, threading.current_thread().name, time.perf_counter())
    with _lock:
        owner.inner.append(inner)
    return inner


def leave_inner(inner: Inner) -> None:
    with _lock:
        inner.end = time.perf_counter()


def inner_runs(owner: Owner) -> list[str]:
    """One sentence per profile that ran inside `owner`, times from its start."""
    with _lock:
        runs = list(owner.inner)
    lines = []
    for run in runs:
        where = "" if run.thread == owner.thread else f" in thread {run.thread}"
        start = run.start - owner.origin
        if run.end is None:
            lines.append(
                f"profile {run.name!r} started at {start:.3f} s inside this one{where} and was "
                f"still running when this one stopped"
            )
        else:
            lines.append(
                f"profile {run.name!r} ran from {start:.3f} s to {run.end - owner.origin:.3f} s inside this one{where}"
            )
    return lines


def _forget_in_child() -> None:
    """A forked child owns no capture: the parent's profile stays the
    parent's (its collectors' threads and torch's profiler session are not
    the child's to stop), and a profile the child starts is its own."""
    global _owner, _lock
    _owner = None
    _lock = threading.Lock()  # another thread of the parent may have held it at the fork


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_in_child)
