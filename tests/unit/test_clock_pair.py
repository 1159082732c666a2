"""The wall clock paired with perf_counter (capture/base.py wall_and_perf):
the profilers' events (wall-clock ns) are placed on the cell's lines (marks in
perf_counter seconds) through this one pair, so a pair read across a pause
moves every event's line by the pause."""

from __future__ import annotations

import time

from memprofile.capture import base


def test_a_pause_between_the_reads_does_not_move_the_pair(monkeypatch):
    # GIVEN a thread held 50 ms between its first perf_counter and wall-clock reads
    real_ns, calls = time.time_ns, []

    def held_time_ns() -> int:
        calls.append(1)
        if len(calls) == 1:
            time.sleep(0.05)
        return real_ns()

    monkeypatch.setattr(base.time, "time_ns", held_time_ns)
    # WHEN the two clocks are paired
    wall, perf = base.wall_and_perf()
    # THEN the pair agrees with the clocks read now to well under the pause
    monkeypatch.setattr(base.time, "time_ns", real_ns)
    now_wall, now_perf = real_ns(), time.perf_counter()
    skew = (now_wall - wall) / 1e9 - (now_perf - perf)
    assert abs(skew) < 0.005, skew
    assert len(calls) == base.CLOCK_PAIR_TRIES


def test_the_pair_is_one_instant_of_both_clocks():
    wall, perf = base.wall_and_perf()
    skew = (time.time_ns() - wall) / 1e9 - (time.perf_counter() - perf)
    assert abs(skew) < 0.005, skew
