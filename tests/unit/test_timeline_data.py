"""What a timeline view draws, as plain data (render/timeline_data.py), on
profiles built in the test: no bokeh, no framework."""

from __future__ import annotations

import subprocess
import sys

from memprofile.model.profile import CATEGORIES, Device, Profile, StepStat, Timeline
from memprofile.render.palette import PHASE_SHADES
from memprofile.render.timeline_data import (
    DISPLAY_POINTS,
    MAX_PHASE_BANDS,
    STEP_POINTS,
    cell_end,
    detail_marks,
    detail_span,
    peak_label,
    phase_bands,
    shaded_phases,
    shown_capacity,
    shown_timelines,
    step_points,
    step_series,
    steps_note,
    timeline_note,
    timeline_points,
    x_range,
)
from memprofile.units import fmt_bytes
from tests.builders import make_profile, make_rich_profile

MiB = 2**20


def test_the_data_modules_import_no_bokeh():
    code = (
        "import sys, memprofile.render.timeline_data, memprofile.render.breakdown_data; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('bokeh', 'numpy')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_a_long_timeline_is_decimated_and_keeps_its_peak():
    # GIVEN a host timeline of 30,000 points, the peak at point 12,345
    profile = make_profile(n_points=30_000, peak_at=12_345)
    timeline = profile.timelines[0]
    # WHEN its points are prepared
    points = timeline_points(timeline, None)
    # THEN at most the display cap reach the page, the peak among them, exact
    assert len(points.t) <= DISPLAY_POINTS + 1
    assert points.live[points.top] == max(timeline.live_bytes)
    assert points.t[points.top] == round(timeline.t[12_345], 6)
    # AND every column of the line has a row per point; no labels: every index is -1
    assert {len(v) for v in points.line.values()} == {len(points.t)}
    assert set(points.line["op"]) == set(points.line["layer"]) == set(points.line["phase"]) == {-1}
    # AND a process timeline has no kinds to stack
    assert points.kinds == [] and points.areas == []


def test_the_kinds_are_stacked_as_steps_in_the_palettes_order():
    profile = make_rich_profile(n_points=100)
    timeline = profile.timeline("cpu")
    points = timeline_points(timeline, None)
    assert points.kinds == [c for c in CATEGORIES if c in timeline.by_category]
    # each value holds until the next point: 2n - 1 steps
    n = len(points.t)
    assert len(points.area_t) == 2 * n - 1 and all(len(a) == 2 * n - 1 for a in points.areas)
    assert points.area_t[1:3] == [points.t[1], points.t[1]]
    first = points.kinds.index("activation")
    assert points.areas[first][1:3] == [timeline.by_category["activation"][0], timeline.by_category["activation"][1]]
    # the labels travel once; the points carry indices into them
    assert set(points.line["op"]) == {0, 1, 2} and set(points.line["layer"]) == {1}


def _detail_ended(at: str = "0.01") -> Profile:
    """A rich profile whose torch allocator (`cpu`) was recorded in detail until `at`."""
    profile = make_rich_profile(n_points=100)
    profile.capture["torch_detail_end_s"] = at
    return profile


def test_an_allocator_recorded_in_part_draws_only_its_detail_and_hatches_the_rest():
    profile = _detail_ended()
    cpu = profile.device("cpu")
    end = cell_end(profile)
    # WHEN the detail ended at 0.01 s
    recorded = detail_span(profile, cpu)
    assert recorded == (0.0, 0.01)
    # THEN no point past it is drawn (a millisecond's rounding aside)
    points = timeline_points(profile.timeline("cpu"), recorded)
    assert points.t and max(points.t) <= 0.01 + 0.0005
    # AND the rest of the cell is hatched, and the plot spans the whole cell
    marks = detail_marks(profile, cpu, recorded)
    assert marks.hatched == [(0.01, end)] and marks.edges == []
    assert marks.note == "hatched: not recorded in detail"
    assert x_range(profile, recorded) == (0.0, end)
    # AND the process's timeline marks where the detail ended
    host = detail_marks(profile, profile.device("host"), None)
    assert host.hatched == [] and host.edges == [0.01]
    assert host.note == "dashed: where the allocator's detail began or ended"


def test_a_whole_cell_in_detail_has_no_span_and_no_marks():
    profile = make_rich_profile(n_points=100)
    for device in profile.devices:
        assert detail_span(profile, device) is None
        marks = detail_marks(profile, device, None)
        assert (marks.hatched, marks.edges, marks.note) == ([], [], "")
    assert x_range(profile, None) is None
    # TF's allocator reads TF's facts, not torch's
    assert detail_span(_detail_ended(), profile.device("tf:CPU:0")) is None


def test_the_peak_is_named_in_detail_when_the_counters_know_a_higher_one():
    profile = _detail_ended()
    cpu = profile.device("cpu")
    recorded = detail_span(profile, cpu)
    points = timeline_points(profile.timeline("cpu"), recorded)
    top = points.live[points.top]
    assert top < cpu.peak_bytes  # the highest points came after the detail
    assert peak_label(points, cpu, recorded) == f"peak in detail {fmt_bytes(top)}"
    whole = timeline_points(profile.timeline("cpu"), None)
    assert peak_label(whole, cpu, None) == f"peak {fmt_bytes(cpu.peak_bytes)}"


def test_the_capacity_is_drawn_only_near_the_line():
    device = Device("cuda:0", "allocator", "c10", 300 * MiB, 0, 0, capacity_bytes=1024 * MiB)
    assert shown_capacity(device, [100 * MiB, 300 * MiB]) == 1024 * MiB  # within 4x the highest point
    assert shown_capacity(device, [100 * MiB]) is None
    device.capacity_bytes = None
    assert shown_capacity(device, [100 * MiB]) is None


def _steps_profile(n: int, detailed: int = 3) -> Profile:
    """n steps on an allocator (`cuda:0`), each with its exact peak; the
    first `detailed` in detail; resident memory sampled on `host`."""
    dt = 0.01
    steps = [
        StepStat(
            k,
            (k - 1) * dt,
            k * dt,
            k <= detailed,
            peak_bytes=(300 + k % 7) * MiB,
            end_bytes=100 * MiB,
            device="cuda:0",
            rss_peak_bytes=2000 * MiB + k,
            rss_end_bytes=2000 * MiB + k,
        )
        for k in range(1, n + 1)
    ]
    t = [i * n * dt / 99 for i in range(100)]
    return Profile(
        id="5" * 32,
        name="steps",
        started_at="2026-11-23T15:00:00.000+00:00",
        duration_s=n * dt,
        devices=[
            Device("cuda:0", "allocator", "c10", 306 * MiB, 100 * MiB, 100 * MiB),
            Device("host", "process", "rss", 2100 * MiB, 2000 * MiB, 2000 * MiB),
        ],
        timelines=[Timeline("cuda:0", t, [100 * MiB] * 100), Timeline("host", t, [2000 * MiB] * 100)],
        steps=steps,
    )


def test_steps_are_points_on_their_allocator_the_detailed_ones_first_and_capped():
    profile = _steps_profile(1_000)
    cuda, host = profile.device("cuda:0"), profile.device("host")
    # THEN exact peaks go on the allocator's timeline, none on the process's
    points = step_points(profile, profile.timeline("cuda:0"), cuda)
    assert len(points) == 1_000 and all(pt.exact for pt in points)
    assert step_points(profile, profile.timeline("host"), host) == []
    # AND the detailed steps keep all their points; the others share the rest of the cap
    series = step_series(points)
    assert [s.detailed for s in series] == [True, False]
    assert series[0].data["step"] == [1, 2, 3] and len(series[1].data["step"]) == STEP_POINTS - 3
    assert series[0].data["label"][0] == (
        f"step 1: peak {fmt_bytes(301 * MiB)} (exact), end {fmt_bytes(100 * MiB)}, in detail"
    )
    assert "; the highest of steps " in series[1].data["label"][0]
    assert steps_note(points, series) == "500 step points for 1,000 steps (the highest of each run)"


def test_steps_without_an_exact_peak_are_drawn_on_the_process_timeline():
    profile = _steps_profile(5)
    for s in profile.steps:
        s.peak_bytes = None
    points = step_points(profile, profile.timeline("host"), profile.device("host"))
    assert [pt.exact for pt in points] == [False] * 5 and [pt.peak for pt in points][0] == 2000 * MiB + 1
    # no sample holds the step's peak: the point is at the step's end
    assert points[0].t == profile.steps[0].t_end
    series = step_series(points)
    assert (
        series[1].data["label"][0] == f"step 4: peak {fmt_bytes(2000 * MiB + 4)} (resident memory), end "
        f"{fmt_bytes(2000 * MiB + 4)}"
    )
    assert steps_note(points, series) == "5 step points"
    assert steps_note([], []) == ""


def test_backward_and_optimizer_phases_become_bands_forward_stays_plain():
    # forward 0, backward 1, optimizer 2
    timeline = Timeline("cpu", [0.0, 1.0, 2.0, 3.0, 4.0, 5.0], [1] * 6, phase=[0, 1, 1, 2, 0, 1])
    bands = phase_bands(timeline)
    assert bands == [("backward", 1.0, 3.0), ("optimizer", 3.0, 4.0), ("backward", 5.0, 5.0)]
    assert shaded_phases(bands) == list(PHASE_SHADES) == ["backward", "optimizer"]
    # phases that do not match the points, or too many bands to draw: none
    assert phase_bands(Timeline("cpu", [0.0, 1.0], [1, 1], phase=[1])) == []
    many = [i % 2 for i in range(2 * MAX_PHASE_BANDS + 4)]
    assert phase_bands(Timeline("cpu", [float(i) for i in range(len(many))], [1] * len(many), phase=many)) == []


def test_the_note_counts_the_points_and_escapes_what_it_quotes():
    points = timeline_points(make_profile(n_points=50).timelines[0], None)
    note = timeline_note(points, 5_000, ["backward"], "3 step points", "", "<b>")
    assert note.startswith("<span class='mp-muted'>50 of 5,000 recorded points; drag to pan")
    assert f"shaded: <span style='background:{PHASE_SHADES['backward']}55;padding:0 4px'>backward</span>" in note
    assert note.endswith("; 3 step points; &lt;b&gt;</span>")
    assert timeline_note(points, 50, []).startswith("<span class='mp-muted'>50 points;")


def test_the_peak_devices_timeline_comes_first_and_empty_ones_are_left_out():
    profile = make_rich_profile(n_points=100)  # the peak on `cpu`
    profile.timelines.append(Timeline("nowhere", [0.0], [1]))  # no such device
    profile.timeline("tf:CPU:0").t = []
    assert [(tl.device, d.name) for tl, d in shown_timelines(profile)] == [("cpu", "cpu"), ("host", "host")]
