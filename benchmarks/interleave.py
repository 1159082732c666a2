"""The benchmarks' shared round loop: the bare run and each tool, interleaved
round by round (the machine is noisy), each tool's time as a ratio to the
same round's bare run, medians over the rounds. And memray, where installed."""

from __future__ import annotations

import gc
import os
import statistics
import tempfile
import time
from collections.abc import Callable

from memprofile.capture.host import release_free_memory

Tool = Callable[[Callable[[], object], dict], object]


def memray_tracker(run, ns):
    import memray

    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "out.bin")
        with memray.Tracker(path):
            run()
        assert memray.FileReader(path).metadata.peak_memory  # until the peak is known


def with_memray(tools: list[tuple[str, Tool]]) -> list[tuple[str, Tool]]:
    try:
        import memray  # noqa: F401
    except ImportError:
        return tools
    return [*tools, ("memray Tracker", memray_tracker)]


def interleaved_ratios(
    run, ns: dict, tools: list[tuple[str, Tool]], rounds: int, warm: bool = False
) -> tuple[float, dict[str, float]]:
    """The median bare time and each tool's median ratio to it. `warm`: run
    each tool once first (its first start in the process is not timed)."""
    if warm:
        for _, tool in tools:
            tool(run, ns)
    bare_times, per = [], {name: [] for name, _ in tools}
    for _ in range(rounds):
        _settle()
        t = time.perf_counter()
        run()
        b = time.perf_counter() - t
        bare_times.append(b)
        for name, tool in tools:
            _settle()
            t = time.perf_counter()
            tool(run, ns)
            per[name].append((time.perf_counter() - t) / b)
    return statistics.median(bare_times), {k: statistics.median(v) for k, v in per.items()}


def _settle() -> None:
    # Untimed, before every run alike: a tool's garbage (torch.profiler's event
    # tree is cyclic) must not slow the next run.
    gc.collect()
    release_free_memory()
