"""A forked child of a process whose profile ran torch's profiler ends as it would bare.

torch's profiler (kineto) starts a thread the first time it runs
(libkineto::ConfigLoader's). A child made by os.fork() has no such thread,
but inherits the C++ object that waits for it: at the child's exit(), after
Python has finished, that object's static destructor waits forever on a
condition variable the parent's thread was waiting on (seen with torch 2.13:
`pthread_cond_destroy` in `ConfigLoader::~ConfigLoader`; or it aborts with
std::system_error), so the child never ends and a parent waiting on it hangs
too. Bare, the script never started torch's profiler, and the child exits.

So in a child forked after that, the process ends with `_exit(status)` once
Python's own finalization is done (its threads joined, atexit handlers run,
files flushed and closed), before the C++ destructors: a C `on_exit` handler
registered in the child runs before the ones registered earlier (they run in
reverse order). C stdio's buffers, which exit() would flush after the
handlers, are flushed by a Python atexit handler instead.
"""

from __future__ import annotations

import atexit
import ctypes
import os

_guarded = False


def guard_forked_exits() -> None:
    """From now on, every child this process forks ends as described above
    (glibc's on_exit; elsewhere nothing is done). Idempotent."""
    global _guarded
    if _guarded or not hasattr(os, "register_at_fork"):
        return
    try:
        libc = ctypes.CDLL(None)
        on_exit, fflush = libc.on_exit, libc.fflush
        exit_now = ctypes.cast(libc._exit, ctypes.c_void_p).value
    except (OSError, AttributeError):  # not glibc
        return
    on_exit.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
    fflush.argtypes = [ctypes.c_void_p]

    def in_child() -> None:
        atexit.register(fflush, None)
        # on_exit calls _exit(status, NULL): _exit takes the status and ignores the second argument.
        on_exit(exit_now, None)

    os.register_at_fork(after_in_child=in_child)
    _guarded = True
