"""The environment for the real kernels the tests start.

ipykernel forwards what C and C++ write to fd 1 and 2 into the cell, except
when PYTEST_CURRENT_TEST is in its environment (ipykernel/iostream.py), and
a kernel started from a test inherits it. Without it, a kernel's output is
what a user's is: a framework's native log line shows in the cell."""

from __future__ import annotations

import os


def kernel_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "PYTEST_CURRENT_TEST"}


def framework_messages(cell) -> list[str]:
    """The framework log lines (capture/quiet.py's formats) a notebook cell's streams hold, as
    `file:line] message`: without the time and process ids, which differ between runs."""
    from memprofile.capture.quiet import FRAMEWORK_LOG

    streams = "".join(o.get("text", "") for o in cell.outputs if o.get("output_type") == "stream")
    found = []
    for line in streams.splitlines():
        match = FRAMEWORK_LOG.search(line)
        if match:
            found.append(match.group(0).rsplit(" ", 1)[-1] + line[match.end() :])
        elif "gpuGetDeviceCount" in line or "Memory block of unknown size" in line:
            found.append(line)
    return found


def unprofiled(cell: str) -> str:
    """The cell without its %%memprofile line: what it runs bare."""
    return cell.split("\n", 1)[1] if cell.startswith("%%memprofile") else cell
