"""The profiler's own memory budget while torch's profiler records: a thread that watches the heap
and has the detail end on the cell's thread before torch's event buffers outgrow the budget."""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable
from typing import Any

from memprofile.capture import safe_point
from memprofile.capture.host import RssReader, heap_figures
from memprofile.capture.safe_point import SafePoint

#: What the heap grows by while torch records is a small part of what the
#: profile costs: torch's profiler takes ~160 MB to start, stop and read back
#: whatever it recorded, and stopping it took ~16x the heap's growth while
#: recording (~2.6 KB per event node; measured on loops of tiny ops, 10,000
#: and 40,000 iterations). Detail ends when the growth reaches
#: (budget - PROFILER_FLOOR_BYTES) / 20.
PROFILER_FLOOR_BYTES = 160 << 20
RECORDING_FACTOR = 20
#: The smallest budget that can be kept.
MIN_BUDGET_BYTES = 256 << 20
#: In a loop of many statements, detail ends once the process has grown by
#: this (~25,000 small ops): reading events back costs ~25 µs each, and a loop
#: of millions of tiny ops would spend more time there than running.
MAX_RECORDING_BYTES = 12 << 20
#: The watcher's poll while the detail records. A loop of tiny ops grows the
#: buffers ~0.4 MiB a ms here, and ending takes 20x what they hold: at 20 ms
#: (80 ms of evidence) the heap had grown 32-36 MiB when the detail ended and
#: the process peaked 610-670 MiB for a 512 MiB budget; at 10 ms, 18-19 MiB
#: and 450 MiB (2,000,000 `torch.empty(64) + 1` in a function).
BUDGET_POLL_S = 0.01
#: Cells that run this many statements (line changes) or model calls are the
#: ones whose event buffers can outgrow the budget.
MANY_STATEMENTS = 20_000
MANY_CALLS = 200
#: Polls in a row in which the heap grew by small blocks only, with no model call, import or model
#: built: a loop of small ops outside the cell's lines (40 ms).
STEADY_POLLS = 4


def _users_code(frame: Any) -> Any:
    """The code object a thread runs now, where it is neither torch's nor
    memprofile's (a loop of the user's, whose ops are C calls), else None."""
    if frame is None:
        return None
    name = frame.f_code.co_filename
    return None if safe_point.TORCH_CODE in name or name.startswith(safe_point.OWN_CODE) else frame.f_code


class BudgetWatch:
    """When the heap has grown by the share of the budget that torch's event
    buffers may take while recording, the detail ends on the cell's thread: at
    its next statement (lines' marks), model call (module hooks: `over`), or,
    on the main thread, at its next bytecode outside memprofile's and torch's
    hook code (capture/safe_point.py), which is what reaches a loop in a
    function from another cell, a module, a library or a script. The heap's
    bytes in use, not resident memory: a heap reusing pages that an earlier
    run freed (and glibc kept) grows without the process growing, and stopping
    torch's profiler then costs ~16x what the buffers grew by.

    `detailed` says whether the detail still records, `root_calls` how many
    model calls it saw; `end_detail(why, in_module_hook=...)` ends it."""

    def __init__(
        self,
        budget_bytes: int | None,
        thread: int,
        detailed: Callable[[], bool],
        root_calls: Callable[[], int],
        end_detail: Callable[..., None],
    ) -> None:
        self.budget_bytes = budget_bytes
        #: Set by the watcher: the detail ends at the cell thread's next chance.
        self.over = False
        #: Modules, parameters and buffers registered while the budget is watched.
        self.modules_built = 0
        self.safe_point = SafePoint(self._end_at_safe_point)
        self._thread = thread
        self._detailed = detailed
        self._root_calls = root_calls
        self._end_detail = end_detail
        self._stop = threading.Event()
        self._watcher: threading.Thread | None = None
        self._build_handles: list[Any] = []

    def start(self) -> None:
        """The detail records from now: watch it (where there is a budget)."""
        if not self.budget_bytes:
            return
        self.safe_point.install()
        self._watch_building()
        self._watcher = threading.Thread(
            target=self._watch, args=(self.budget_bytes,), name="memprofile-torch-budget", daemon=True
        )
        self._watcher.start()

    def detail_ended(self) -> None:
        """The detail ended: nothing more to watch (the thread sees it and returns)."""
        self.safe_point.close()
        self._stop_watching_building()
        self._stop.set()

    def stop(self) -> None:
        """The run ends: the watcher is gone when this returns."""
        self._stop.set()
        if self._watcher is not None:
            self._watcher.join()
        self.safe_point.close()
        self._stop_watching_building()

    def _end_at_safe_point(self) -> None:
        if self.over and self._detailed():
            self._end_detail("budget", in_module_hook=True)

    def _watch(self, budget_bytes: int) -> None:
        """The watcher thread."""
        reader = RssReader()
        try:
            if self._wait_until_over(budget_bytes, reader):
                self._ask_until_ended()
        finally:
            reader.close()

    def _wait_until_over(self, budget_bytes: int, reader: RssReader) -> bool:
        """Poll the heap while the detail records; True once it is over the budget's share."""
        from memprofile.capture import lines

        def measure() -> tuple[int, int | None]:  # bytes, and the heap's own mapped blocks where known
            figures = heap_figures()
            return figures if figures is not None else (reader.read(), None)

        start, mapped = measure()
        last = start
        steady = 0  # polls in a row of small allocations only, with no model call, import or model built
        imported, built = len(sys.modules), self.modules_built
        limit = max(1 << 20, (budget_bytes - PROFILER_FLOOR_BYTES) // RECORDING_FACTOR)
        looping = None  # the code the cell's thread ran at the last poll, where it is the user's own
        while not self._stop.wait(BUDGET_POLL_S) and self._detailed():
            now, blocks = measure()
            state = blocks, len(sys.modules), self.modules_built
            # A loop of small ops sits in the user's code poll after poll (its ops are C calls);
            # a library setting up (DDP's constructor broadcasting, gloo's buffers) runs its own.
            here = _users_code(safe_point.thread_frame(self._thread))
            small_only = (
                blocks is not None
                and state == (mapped, imported, built)
                and self._root_calls() == 0
                and here is not None
                and here is looping
            )
            steady = steady + 1 if small_only and now > last else 0
            last, (mapped, imported, built), looping = now, state, here
            # The growth is the buffers' only where the code runs many
            # small ops: many statements of the cell, many model calls, or,
            # where no model is called (a loop in a function from another
            # cell, a module, a script), a heap that grows poll after poll
            # by small blocks only, while no module is imported and no model
            # built. A model whose activations take gigabytes in a few
            # calls, or weights loaded or built, have few events.
            tight = lines.recorded_marks() > MANY_STATEMENTS or steady >= STEADY_POLLS
            many = tight or self._root_calls() > MANY_CALLS
            if many and now - start > (min(limit, MAX_RECORDING_BYTES) if tight else limit):
                self.over = True
                lines.set_pending(lambda: self._end_detail("budget"))
                return True
        return False

    def _ask_until_ended(self) -> None:
        """Ask the cell's thread until it has ended the detail (a request that
        lands in memprofile's or torch's hook code does nothing)."""
        while self.over and self._detailed() and not self._stop.is_set():
            self.safe_point.request()
            self._stop.wait(BUDGET_POLL_S)

    def _watch_building(self) -> None:
        """Count modules, parameters and buffers registered while the detail
        records (a model being built, its weights loaded into it): the watcher
        does not take that growth for a loop of small ops. torch 2.0+; without
        these hooks the count never moves and only the heap's own signs remain."""
        import torch.nn.modules.module as hooks

        def built(*_args: Any) -> None:
            self.modules_built += 1

        for name in (
            "register_module_module_registration_hook",
            "register_module_parameter_registration_hook",
            "register_module_buffer_registration_hook",
        ):
            register = getattr(hooks, name, None)
            if register is not None:
                self._build_handles.append(register(built))

    def _stop_watching_building(self) -> None:
        handles, self._build_handles = self._build_handles, []
        for handle in handles:
            handle.remove()
