"""The step clock on its own (capture/steps.py): the detail window over training steps, as both
collectors drive it, without a framework."""

from __future__ import annotations

import pytest

from memprofile.capture.base import DetailWindow
from memprofile.capture.steps import StepClock, StepRecord


class Figures:
    """A stand-in for host.StepFigures.at_step_end: records each step's `force`, reads on force."""

    def __init__(self) -> None:
        self.forced: list[bool] = []

    def __call__(self, force: bool) -> dict[str, int]:
        self.forced.append(force)
        return {"rss_peak": 200, "rss_end": 100, "heap_end": 50} if force else {}


def run(window, steps: int, budget_at: int | None = None) -> tuple[StepClock, list[int], Figures]:
    """A collector's loop: the detail opens where the clock says (at the start for step 1, else
    after the step before the window), ends where the window is over, or by the budget after
    step `budget_at`. Returns the clock, the detailed steps and the figures' reader."""
    figures = Figures()
    clock = StepClock(DetailWindow.of(window), figures)
    recording = clock.may_open(1)
    for step in range(1, steps + 1):
        assert clock.steps == step - 1
        clock.end_step(recording)
        if recording and step == budget_at:
            recording = False
            clock.end_detail("budget")
        elif recording and clock.window_over():
            recording = False
            clock.end_detail("steps")
        elif not recording and clock.may_open(clock.steps + 1):
            recording = True
            clock.started()
    return clock, [k for k, r in enumerate(clock.records, 1) if r.detailed], figures


def test_a_window_from_step_1_records_its_steps_and_ends_after_its_last():
    clock, detailed, figures = run(3, 8)
    assert detailed == [1, 2, 3]
    assert clock.detail_end is not None and clock.detail_end[1] == "steps"
    assert clock.detail_start is None  # open from the start: no window opened later
    assert figures.forced == [True, True, True, False, False, False, False, False]
    assert clock.records[0] == StepRecord(
        t_end=clock.records[0].t_end, detailed=True, rss_peak=200, rss_end=100, heap_end=50
    )
    assert clock.records[4].rss_peak is None and clock.records[4].steps == 1


def test_a_later_window_opens_after_the_step_before_it():
    clock, detailed, figures = run((10, 12), 20)
    assert detailed == [10, 11, 12]
    assert not clock.may_open(13)
    # read at once: the step after which the detail opens (it resets the OS mark) and the detailed ones
    assert [k for k, forced in enumerate(figures.forced, 1) if forced] == [9, 10, 11, 12]
    assert clock.detail_start is not None and clock.detail_end is not None
    assert clock.detail_start <= clock.detail_end[0]


def test_the_window_ends_by_steps_only_after_its_last_step():
    clock = StepClock(DetailWindow(2, 4))
    seen = []
    for _ in range(6):
        clock.end_step(True)
        seen.append(clock.window_over())
    assert seen == [False, False, False, True, True, True]


def test_a_budget_end_closes_the_window_for_good():
    clock, detailed, figures = run(5, 10, budget_at=2)
    assert detailed == [1, 2]
    assert clock.detail_end is not None and clock.detail_end[1] == "budget"
    assert not any(clock.may_open(k) for k in range(1, 12))
    assert figures.forced[2:] == [False] * 8
    assert clock.facts("torch")["torch_detail_why"] == "budget"


@pytest.mark.parametrize("window", [None, "all", (1, None)])
def test_all_steps_are_detailed_and_the_window_never_ends(window):
    clock, detailed, _ = run(window, 30)
    assert detailed == list(range(1, 31))
    assert clock.detail_end is None and not clock.window_over()
    assert clock.facts("tf") == {}


def test_an_open_window_from_a_later_step_runs_to_the_end():
    clock, detailed, _ = run("5-", 12)
    assert detailed == list(range(5, 13)) and clock.detail_end is None


def test_the_first_optimizer_is_the_clock():
    clock = StepClock(DetailWindow())
    assert [clock.ticks(s) for s in (7, 8, 7, 8)] == [True, False, True, False]


def test_facts_say_when_the_detail_started_and_ended():
    clock = StepClock(DetailWindow(), origin=0.0)
    clock.detail_start = 1.25
    clock.end_detail("user_profiler", at=2.5)
    assert clock.facts("tf") == {
        "tf_detail_start_s": "1.250",
        "tf_detail_end_s": "2.500",
        "tf_detail_why": "user_profiler",
    }


def test_a_grouped_reading_says_how_many_steps_it_covers():
    clock = StepClock(DetailWindow(), lambda force: {"rss_peak": 9, "rss_end": 8, "steps": 4})
    record = clock.end_step(False)
    assert (record.rss_peak, record.rss_end, record.heap_end, record.steps) == (9, 8, None, 4)
    assert record.peaks == {} and record.ends == {}
