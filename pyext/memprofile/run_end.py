"""How `memprofile run`'s process ends: as the script's would bare, with its
profile written or a line saying why not.

SIGTERM (a launcher, `kill`, a scheduler's stop) ends the script like an
exception, so the profile of how far it got is written; then the process
ends by SIGTERM itself, as the script bare would have: a supervisor sees
"killed by signal 15" (subprocess: -15; a shell: 143), not an exit status
that says the script chose to exit. A script's own SIGTERM handler (or one
ignored by the launcher) is left alone. A second SIGTERM ends it at once.

`os._exit()`, SIGKILL (the kernel's out-of-memory killer sends it) and a
crash end the process with no code of its own running: no profile can be
written. A watcher process, started before the script, sees the run's
process end without having said "done", and says in one line that no
profile was written.
"""

from __future__ import annotations

import os
import signal
import sys

#: The process `memprofile run` runs in (a forked child of the script is not it).
_pid = os.getpid()
#: The write end of the pipe to the watcher; None: no watcher.
_to_watcher: int | None = None
#: True once SIGTERM came while the script ran (or while its profile was written).
_terminated = False


# -- SIGTERM ---------------------------------------------------------------


def catch_sigterm() -> bool:
    """Turn SIGTERM into SystemExit(128 + 15) for the run, where SIGTERM has
    the OS's default action (the script's own handler, installed later,
    replaces this one). False where it was left alone."""
    global _pid
    _pid = os.getpid()
    try:
        if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
            return False
        signal.signal(signal.SIGTERM, _sigterm_as_exit)
    except (ValueError, AttributeError):  # not the main thread; no SIGTERM here
        return False
    return True


def _sigterm_as_exit(signum: int, frame: object) -> None:
    global _terminated
    if os.getpid() != _pid:  # a child the script forked: it dies of it, as bare
        die_of(signum)
    _terminated = True
    signal.signal(signum, signal.SIG_DFL)  # a second SIGTERM ends the process at once
    raise SystemExit(128 + signum)


def _hold_sigterm(signum: int, frame: object) -> None:
    global _terminated
    if os.getpid() != _pid:
        die_of(signum)
    _terminated = True
    signal.signal(signum, signal.SIG_DFL)


def hold_sigterm_while_writing() -> None:
    """From the script's end until end_run: a SIGTERM (the first) waits
    until the profile is written, then ends the process."""
    if signal.getsignal(signal.SIGTERM) is _sigterm_as_exit:
        signal.signal(signal.SIGTERM, _hold_sigterm)


def terminated() -> bool:
    return _terminated


def die_of(signum: int) -> None:
    """End this process by `signum`, as if no handler had caught it."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError, AttributeError):
            pass
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)
    os._exit(128 + signum)  # only if the signal did not end it


# -- the watcher -------------------------------------------------------------


def watch() -> None:
    """Start the watcher: a process outside this one's children (a
    double fork: the script's os.wait() never sees it) that waits for this
    process to end. Where there is no fork, nothing is watched."""
    global _to_watcher
    if not hasattr(os, "fork") or _to_watcher is not None:
        return
    read_end, write_end = os.pipe()  # not inheritable: a program the script execs does not hold it
    run_pid = os.getpid()
    middle = os.fork()
    if middle == 0:
        try:
            if os.fork() == 0:
                _watcher(read_end, write_end, run_pid)
        finally:
            os._exit(0)
    os.close(read_end)
    os.waitpid(middle, 0)
    _to_watcher = write_end
    os.register_at_fork(after_in_child=_forget_watcher)


def _forget_watcher() -> None:
    """A child the script forks does not keep the watcher waiting."""
    global _to_watcher
    if _to_watcher is not None:
        try:
            os.close(_to_watcher)
        except OSError:
            pass
        _to_watcher = None


def done() -> None:
    """Tell the watcher the run ended on its own terms (its profile written,
    or a line said why not)."""
    global _to_watcher
    if _to_watcher is None:
        return
    try:
        os.write(_to_watcher, b"done")
        os.close(_to_watcher)
    except OSError:
        pass
    _to_watcher = None


def _watcher(read_end: int, write_end: int, run_pid: int) -> None:
    """In the watcher: wait for the run's process to close the pipe; say
    so if it never said done. Never returns."""
    try:
        os.close(write_end)
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT):
            signal.signal(signum, signal.SIG_IGN)  # a signal to the run's process group is the run's
        null = os.open(os.devnull, os.O_RDWR)
        os.dup2(null, 0)
        os.dup2(null, 1)  # a reader of the run's stdout sees its end when the run ends
        keep = sorted({0, 1, 2, read_end})
        for low, high in zip(keep, keep[1:] + [os.sysconf("SC_OPEN_MAX") if hasattr(os, "sysconf") else 4096]):
            os.closerange(low + 1, high)
        said = b""
        while True:
            chunk = os.read(read_end, 64)
            if not chunk:
                break
            said += chunk
        if not said:
            os.write(
                2,
                (
                    f"memprofile: the script's process (pid {run_pid}) ended before its profile could be "
                    f"written (os._exit(), SIGKILL as the out-of-memory killer sends, or a crash: no "
                    f"code runs after those): no profile was written\n"
                ).encode(),
            )
    except BaseException:
        pass
    finally:
        os._exit(0)
