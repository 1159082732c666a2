"""TF's profiler as memprofile runs it: one session into a trace folder of its
own, the default CPU allocator's statistics on while it records (else that
allocator makes no MemoryAllocation event), and the trace's times put on the
wall clock."""

from __future__ import annotations

import glob
import os
import shutil
import tempfile
import time
from typing import Any

from memprofile.capture.base import RawNote
from memprofile.capture.tensorflow import compat
from memprofile.capture.tensorflow.counters import CpuAllocatorStats
from memprofile.capture.tensorflow.xspace import XSpaceMemory, read_xspace_file

TRACE_DIR_PREFIX = "memprofile-tf-"
#: The TraceMe that ties a trace's relative clock to the wall clock (not a scope: no SCOPE_PREFIX).
ANCHOR = "memprofile-clock-anchor"


def trace_parent() -> str | None:
    """Where TF writes the trace it hands over: memory (/dev/shm) where there
    is some, so the write and read back cost no disk."""
    shm = "/dev/shm"
    return shm if os.path.isdir(shm) and os.access(shm, os.W_OK) else None


def anchor() -> int | None:
    """A TraceMe at a known wall-clock time: where a trace counts its times
    from the session's start and does not say when that was (TF 2.16), the
    anchor's place in it says."""
    trace_me = compat.traceme()
    if trace_me is None:
        return None
    wall = time.time_ns()
    trace_me(ANCHOR).Stop()
    return wall


class ProfilerSession:
    """TF's profiler for one run: started at the cell's start or at the
    detail window's first step, stopped when the detail ends. `notes` is the
    run's list: what this TF lacks is said there."""

    def __init__(self, tf: Any, notes: list[RawNote]) -> None:
        self.tf = tf
        self.notes = notes
        self.logdir = ""
        self.anchor_wall_ns: int | None = None  # see anchor()
        self.session_wall_ns: int | None = None  # when the last session's start returned
        self._session: Any = None
        self._stats: CpuAllocatorStats | None = None
        self._stats_switched = False

    def switch_stats_on(self, users: bool) -> None:
        """The default CPU allocator's statistics on for the run, unless the
        user's profiler runs (`users`): theirs records as it would bare."""
        self._stats = CpuAllocatorStats(self.tf)
        self._stats_switched = False if users else self._stats.turn_on()
        if not self._stats.available:
            self.notes.append(
                (
                    "tf_compat_cpu_allocator_stats",
                    f"TF {self.tf.__version__}: the CPU allocator "
                    f"statistics (tsl::EnableCPUAllocatorStats) could not be switched on: with TF's "
                    f"default CPU allocator no CPU allocation is seen",
                )
            )

    def switch_stats_off(self) -> None:
        if self._stats_switched and self._stats is not None:
            self._stats.turn_off()
            self._stats_switched = False

    def make_logdir(self) -> None:
        # The pid in the name tells whose a left directory is (a killed kernel's, say).
        self.logdir = tempfile.mkdtemp(prefix=f"{TRACE_DIR_PREFIX}{os.getpid()}-", dir=trace_parent())

    def cleanup(self) -> None:
        self.switch_stats_off()
        shutil.rmtree(self.logdir, ignore_errors=True)

    def start(self) -> None:
        """The class behind tf.profiler.experimental (no global state of its
        own to clear if the cell fails); the public API where it is missing.
        Then the session's clock anchor (see anchor_times)."""
        tf = self.tf
        cls = compat.profiler_session()
        if cls is None:
            self._note_once(
                "tf_compat_profiler_session",
                f"TF {tf.__version__} has no _pywrap_profiler."
                f"ProfilerSession: TF's profiler runs through tf.profiler.experimental",
            )
            start = tf.profiler.experimental.start
            getattr(start, "__memprofile_original__", start)(self.logdir)  # not as the user's (users_profiler.py)
            session = None
        else:
            session = cls()
            session.start(self.logdir, {})
        self.session_wall_ns = time.time_ns()
        self.anchor_wall_ns = anchor()
        self._session = session

    def stop(self, keep: bool = True) -> bytes:
        """Stop TF's profiler; its XSpace, or nothing when not `keep`. The
        file is removed once read: a later session writes to the same folder."""
        if self._session is not None:
            session, self._session = self._session, None
            if not keep:
                session.stop()  # TF's own serialisation, never read
                return b""
            session.export_to_tb()  # stops the session and writes the XSpace
        else:
            self.tf.profiler.experimental.stop(save=keep)
        files = glob.glob(os.path.join(self.logdir, "**", "*.xplane.pb"), recursive=True)
        data = read_xspace_file(max(files, key=os.path.getmtime)) if files and keep else b""
        for f in files:
            os.remove(f)
        return data

    def anchor_times(self, parsed: XSpaceMemory, data: bytes, wall0: int) -> None:
        """Make a trace's relative times wall-clock ns (compat.relative_times),
        by the anchor; a trace without one is placed by when the session's
        start returned (else `wall0`), and says so."""
        ev = parsed.events
        if not compat.relative_times(ev.t_ns, parsed.start_ns):
            return
        wall = self.anchor_wall_ns
        at = compat.anchor_time_ns(data, ANCHOR) if wall else None
        if wall is None or at is None:  # when the session's start returned: later than its clock's start
            self.notes.append(
                (
                    "tf_compat_trace_clock",
                    f"TF {self.tf.__version__}'s trace counts its times "
                    f"from its own start and says not when that was: TensorFlow's allocations are "
                    f"placed by when the profiler's start returned (up to its start-up time late)",
                )
            )
            shift = self.session_wall_ns or wall0
        else:
            shift = wall - at
        ev.t_ns = [t + shift for t in ev.t_ns]
        parsed.start_ns = shift

    def _note_once(self, code: str, message: str) -> None:
        if all(note[0] != code for note in self.notes):
            self.notes.append((code, message))
