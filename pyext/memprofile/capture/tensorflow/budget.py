"""The profiler's memory budget while TF's profiler records: a thread that ends
the detail before TF's event buffers take more than their share of it."""

from __future__ import annotations

import threading
from collections.abc import Callable

from memprofile.capture.host import heap_figures

#: TF's profiler keeps its events in the C heap until it stops (~2.4 KB per
#: eager op), and stopping, exporting and reading them back took 3-5x that
#: growth again (TF 2.21, 120,000 tiny eager ops, the detail ended at 120 MiB
#: of growth: 457 MiB over the start with oneDNN's ops, 628 MiB with
#: TF_ENABLE_ONEDNN_OPTS=0). The detail ends when the heap has grown by
#: (budget - floor) / factor.
TF_RECORDING_FACTOR = 6
TF_PROFILER_FLOOR_BYTES = 32 << 20
TF_BUDGET_POLL_S = 0.02
#: Polls in a row of growth by small blocks only (events, tiny tensors; not
#: a model's weights or a dataset, which take blocks of their own).
TF_STEADY_POLLS = 4


class BudgetWatcher:
    """Watches the C heap while `recording()` (from the cell's start, or from a
    later window's first step) and calls `end_detail()` once, from its own
    thread, when the events' share of `budget_bytes` is reached: whatever runs
    the loop (a function, a library, a custom loop without steps). No budget,
    or no heap figures (off glibc): no thread."""

    def __init__(self, budget_bytes: int | None, recording: Callable[[], bool], end_detail: Callable[[], None]) -> None:
        self._recording = recording
        self._end_detail = end_detail
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if budget_bytes is not None and heap_figures() is not None:
            self._thread = threading.Thread(
                target=self._watch, args=(budget_bytes,), name="memprofile-tf-budget", daemon=True
            )
            self._thread.start()

    def stop_soon(self) -> None:
        """The detail is over: the thread ends at its next poll."""
        self._stop.set()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _watch(self, budget_bytes: int) -> None:
        """Ends the detail when the heap has grown by the share of the budget
        that TF's event buffers may take, by small blocks poll after poll
        (events; not a model's weights or a dataset, which take blocks of
        their own)."""
        figures = heap_figures()
        if figures is None:
            return
        start, blocks = figures
        last, steady = start, 0
        limit = max(1 << 20, (budget_bytes - TF_PROFILER_FLOOR_BYTES) // TF_RECORDING_FACTOR)
        while not self._stop.wait(TF_BUDGET_POLL_S):
            now_figures = heap_figures()
            if now_figures is None:
                return
            now, now_blocks = now_figures
            if not self._recording():  # a window that starts at a later step: its growth counts from its start
                start, last, blocks, steady = now, now, now_blocks, 0
                continue
            steady = steady + 1 if now_blocks == blocks and now > last else 0
            last, blocks = now, now_blocks
            if steady >= TF_STEADY_POLLS and now - start > limit:
                try:
                    self._end_detail()
                except Exception:  # never into the user's process
                    pass
                return
