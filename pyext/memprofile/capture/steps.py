"""The training-step clock both framework collectors keep, and the record of each step's end.

A collector says when a step ends (torch: an optimizer step; TensorFlow: a fit batch or an
eager `apply`) and whether its events were recorded; the clock counts the steps, says which
are in the detail window, when the detail may open and when the window is over, and keeps
each step's end as a StepRecord (RawCapture.steps). How a step is seen and how a profiler
starts and stops stay with the collector.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # base.py imports StepRecord from here
    from memprofile.capture.base import DetailWindow


@dataclass
class StepRecord:
    """One training step's end, as its collector read it."""

    t_end: float  # seconds since the run's origin
    detailed: bool  # the step's allocations were recorded in detail
    #: The allocator's own counters, read and reset at the step's end (CUDA, TF), by device name:
    #: its peak in the step and its bytes in use at the end.
    peaks: dict[str, int] = field(default_factory=dict)
    ends: dict[str, int] = field(default_factory=dict)
    #: The process's exact peak in the step (the OS high-water mark), its resident memory and the
    #: heap's bytes in use at the end; None where this step's reading was left to a later step.
    rss_peak: int | None = None
    rss_end: int | None = None
    heap_end: int | None = None
    #: How many steps the reading covers: short steps are read in groups (capture/host.py
    #: StepFigures), the figures then stand for the group ending here.
    steps: int = 1


#: What reads the process's figures at a step's end: `force` reads now, else the reading may
#: be left to a later step ({}): capture/host.py StepFigures.at_step_end.
FigureReader = Callable[[bool], dict[str, int]]


def _no_figures(force: bool) -> dict[str, int]:
    return {}


class StepClock:
    """Training steps of one run and the detail window over them (1-based steps)."""

    def __init__(self, window: DetailWindow, figures: FigureReader = _no_figures, origin: float = 0.0) -> None:
        self.window = window
        self.records: list[StepRecord] = []
        #: (seconds since the origin, why) when the detail ended ("steps", "budget", "user_profiler", ...);
        #: None while it records or has not begun. Once it ended, it never opens again.
        self.detail_end: tuple[float, str] | None = None
        #: When the detail opened, where the collector says so.
        self.detail_start: float | None = None
        self._figures = figures
        self._origin = origin
        self._source: int | None = None  # what ticks the clock: id() of the first optimizer stepped

    def now(self) -> float:
        return time.perf_counter() - self._origin

    @property
    def steps(self) -> int:
        """Training steps ended so far."""
        return len(self.records)

    def ticks(self, source: int) -> bool:
        """Whether a step of `source` (an optimizer's id()) ends a training step: the first
        seen is the clock, so a GAN's second optimizer, stepping in the same step, does not."""
        if self._source is None:
            self._source = source
        return self._source == source

    def covers(self, step: int) -> bool:
        """Step `step` is in the detail window."""
        return self.window.covers(step)

    def may_open(self, step: int) -> bool:
        """The detail may record step `step`: it is in the window and no detail ended before."""
        return self.detail_end is None and self.window.covers(step)

    def window_over(self) -> bool:
        """The window's last step has ended: the detail ends ("steps")."""
        return self.window.last is not None and self.steps >= self.window.last

    def end_step(self, detailed: bool) -> StepRecord:
        """The next step ended now: `detailed`, its events were recorded. The process's figures
        are read at once for a detailed step and for the step after which the detail may open
        (it resets the OS mark), else perhaps with a later step's. The collector adds the
        allocator's counters (peaks, ends) to the record it gets back."""
        t_end = self.now()
        figures = self._figures(detailed or self.may_open(self.steps + 2))
        record = StepRecord(
            t_end=t_end,
            detailed=detailed,
            rss_peak=figures.get("rss_peak"),
            rss_end=figures.get("rss_end"),
            heap_end=figures.get("heap_end"),
            steps=figures.get("steps", 1),
        )
        self.records.append(record)
        return record

    def started(self) -> None:
        """The detail opened now."""
        self.detail_start = self.now()

    def end_detail(self, why: str, at: float | None = None) -> None:
        """The detail ended now (or `at`), for `why`."""
        self.detail_end = (self.now() if at is None else at, why)

    def facts(self, prefix: str) -> dict[str, str]:
        """When the detail started and ended, and why, as a capture's facts."""
        facts = {}
        if self.detail_start is not None:
            facts[f"{prefix}_detail_start_s"] = f"{self.detail_start:.3f}"
        if self.detail_end is not None:
            when, why = self.detail_end
            facts.update({f"{prefix}_detail_end_s": f"{when:.3f}", f"{prefix}_detail_why": why})
        return facts


# The clocks of the collectors running now, for the live feed (capture/live.py) to read.
_running: list[StepClock] = []


def register_clock(clock: StepClock) -> None:
    _running.append(clock)


def unregister_clock(clock: StepClock) -> None:
    if clock in _running:
        _running.remove(clock)


def running_clocks() -> list[StepClock]:
    return list(_running)
