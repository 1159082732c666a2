"""Keep the frameworks' own log lines about starting and stopping their
profilers out of the user's cell.

torch's "Memory block of unknown size was allocated before the profiling
started" is dropped too: the torch collector frees a block of its own while
quiet (capture/torch/collector.py `_start_detail`) to spend the first of those lines,
which torch prints once and then every 1000th time.

TF's C++ logs a few lines per profiler session and kineto prints "USDT ...
profiler_start" on fd 2, which the kernel forwards into the cell; on a CUDA
build of torch without a GPU, kineto's first stop logs "ERROR:...
DeviceProperties.cpp:56] gpuGetDeviceCount failed with code 35". Only
memprofile's own start and stop run quiet, so any line in a framework's
native log format written meanwhile is the profiler's doing and is dropped
(to the "memprofile" logger at debug level), whatever it says, also lines of
framework releases not seen yet. Anything else written meanwhile (a thread of
the user's printing) is passed through, after the start or stop; a framework
line another thread of the user's writes in those milliseconds is dropped too.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import tempfile
import threading
from collections.abc import Iterator
from typing import IO

#: A line of a framework's native logging: its "file.cc:LINE]" after the formats' prefixes.
FRAMEWORK_LOG = re.compile(
    r"^\s*(?:"
    r"[A-Z]+:\d{4}-\d\d-\d\d \d\d:\d\d:\d\d \d+:\d+ "  # kineto: ERROR:2026-12-06 01:42:22 4289:4289 File.cpp:56]
    r"|[IWEF]\d{4} \d\d:\d\d:[\d.]+\s+\d+ "  # glog / absl (TF): I0000 00:00:1733.123  123 file.cc:104]
    r"|\d{4}-\d\d-\d\d \d\d:\d\d:[\d.]+: [IWEF] "  # TF before 2.16: 2023-01-01 12:00:00.123: I tensorflow/x.cc:1]
    r"|\[[IWEF]\d{4} \d\d:\d\d:[\d.]+ (?:\d+ )?"  # c10 (TORCH_WARN outside Python): [W1206 01:59:02.620 File.cpp:245]
    r"|\[[IWEF] "  # c10, older torch: [W File.cpp:245]
    r")[\w./-]+\.(?:cc|cpp|cxx|c|h|hpp):\d+\]"
)
#: Other lines the frameworks print about their profilers, without a native log prefix.
NOISE = re.compile(
    r"profiler_session\.cc|save_profile\.cc|Profiler session|Collecting XSpace|"
    r"absl::InitializeLog|SyncActivityProfilerHandler|Memory block of unknown size was allocated before|^\s*$"
)
LOG = logging.getLogger("memprofile")


def is_noise(line: str) -> bool:
    """A line a framework printed about its profiler, which memprofile started."""
    return bool(FRAMEWORK_LOG.search(line) or NOISE.search(line))


#: fd 2 is the process's: two threads swapping it at once (the cell's stopping
#: torch's profiler, TF's budget watcher stopping TF's) would leave it on a sink.
_FD2 = threading.RLock()


@contextlib.contextmanager
def quiet_stderr() -> Iterator[None]:
    with _FD2:
        yield from _quiet_stderr()


def _quiet_stderr() -> Iterator[None]:
    try:
        saved = os.dup(2)
    except OSError:  # no fd 2 at all: nothing to keep quiet
        yield
        return
    with tempfile.TemporaryFile() as sink:
        try:
            sys.stderr.flush()
        except Exception:
            pass
        os.dup2(sink.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            text = sink.read().decode(errors="replace")
            kept = []
            for line in text.splitlines(keepends=True):
                if is_noise(line):
                    if line.strip():
                        LOG.debug("framework log while memprofile started or stopped a profiler: %s", line.rstrip())
                else:
                    kept.append(line)
            if kept:
                os.write(2, "".join(kept).encode())


#: torch's line at each 1000th free of a CPU block its profiler did not see
#: made (c10/core/CPUAllocator.cpp, ProfiledCPUMemoryReporter::Delete): what a
#: cell that frees tensors from before it prints while torch's profiler records.
UNKNOWN_BLOCK = re.compile(r"Memory block of unknown size was allocated before the profiling started")
#: How often the filter forwards what the process wrote to fd 2. Each look
#: takes the GIL from the cell's thread (at 10 ms, a loop of plain Python
#: ran 9 % slower), and costs one fstat when nothing was written.
FILTER_POLL_S = 0.1


class StderrFilter:
    """fd 2 through a file while memprofile's torch profiler records: the
    lines `drop` matches are dropped, every other line (the user's, a
    library's) is written to the real fd 2 by a thread, within FILTER_POLL_S,
    and the rest at stop(). A file, not a pipe: a writer holding the GIL never
    blocks on a full pipe that only a Python thread could empty. A process
    killed meanwhile loses at most the last FILTER_POLL_S of stderr. A
    terminal's fd 2 is left alone: code that asks isatty(2) gets its answer
    (torch's lines then show, as they do under torch's profiler bare)."""

    def __init__(self, drop: re.Pattern = UNKNOWN_BLOCK) -> None:
        self.drop = drop
        self._saved: int | None = None
        self._sink: IO[bytes] | None = None
        self._read = 0  # bytes of the file forwarded or dropped
        self._partial = b""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()  # one forwarder at a time (the thread, or stop)

    def start(self) -> None:
        with _FD2:
            try:
                if os.isatty(2):  # a terminal: left as it is (code asks isatty(2): colours, progress bars)
                    return
            except OSError:
                return
            try:
                sys.stderr.flush()
            except Exception:
                pass
            try:
                saved = os.dup(2)
            except OSError:  # no fd 2: nothing to filter
                return
            sink = tempfile.TemporaryFile()
            os.dup2(sink.fileno(), 2)
            self._saved, self._sink = saved, sink
        self._thread = threading.Thread(target=self._poll, name="memprofile-stderr", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._saved is None or self._sink is None:
            return
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        with _FD2:
            try:
                sys.stderr.flush()
            except Exception:
                pass
            os.dup2(self._saved, 2)
            self._forward(final=True)
            os.close(self._saved)
            self._sink.close()
            self._saved = self._sink = None

    def _poll(self) -> None:
        while not self._stop.wait(FILTER_POLL_S):
            self._forward(final=False)

    def _forward(self, final: bool) -> None:
        with self._lock:
            sink, saved = self._sink, self._saved
            if sink is None or saved is None:
                return
            if not final and os.fstat(sink.fileno()).st_size == self._read:
                return  # nothing new: one system call
            while True:  # pread: the writers' file offset (shared with fd 2) stays theirs
                chunk = os.pread(sink.fileno(), 1 << 16, self._read)
                if not chunk:
                    break
                self._read += len(chunk)
                self._partial += chunk
            if final:
                whole, self._partial = self._partial, b""
            else:  # complete lines only: a line written in two parts is judged whole
                cut = self._partial.rfind(b"\n") + 1
                if not cut:
                    return
                whole, self._partial = self._partial[:cut], self._partial[cut:]
            kept = [line for line in whole.splitlines(keepends=True) if not self._dropped(line)]
            if kept:
                os.write(saved, b"".join(kept))

    def _dropped(self, line: bytes) -> bool:
        text = line.decode(errors="replace")
        if not self.drop.search(text):
            return False
        LOG.debug("dropped a line of torch's profiler from stderr: %s", text.rstrip())
        return True
