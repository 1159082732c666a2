"""Keep the frameworks' own log lines about starting and stopping their
profilers out of the user's cell.

torch's "Memory block of unknown size was allocated before the profiling
started" is dropped too: the torch collector frees a block of its own while
quiet (capture/torch.py `_start_detail`) to spend the first of those lines,
which torch prints once and then every 1000th time.

TF's C++ logs a few lines per profiler session and kineto prints "USDT ...
profiler_start" on fd 2, which the kernel forwards into the cell. Only these
known lines are dropped; anything else written meanwhile is passed through.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile
from collections.abc import Iterator

NOISE = re.compile(
    r"profiler_session\.cc|save_profile\.cc|Profiler session|Collecting XSpace|"
    r"absl::InitializeLog|SyncActivityProfilerHandler|Memory block of unknown size was allocated before|^\s*$"
)


@contextlib.contextmanager
def quiet_stderr() -> Iterator[None]:
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
            kept = [line for line in text.splitlines(keepends=True) if not NOISE.search(line)]
            if kept:
                os.write(2, "".join(kept).encode())
