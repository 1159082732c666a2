"""Training steps in every view: a point per step on the timeline (exact
peaks on the allocator's plot, resident memory on the process's), where the
detail began and ended marked, and a steps line in the text report, the HTML
and the card. Real torch loops under the Profiler, and profiles built from
model objects for thousands of steps."""

from __future__ import annotations

import json
import re

import pytest

from memprofile.model.profile import Device, Profile, StepStat, Timeline
from memprofile.render.html import render_fragment
from memprofile.render.interactive import timeline_view, views
from memprofile.render.lines import StepsBrief, steps_brief, steps_text
from memprofile.render.report import render_report
from memprofile.render.text import render_text
from memprofile.render.timeline_data import STEP_POINTS
from memprofile.units import fmt_bytes

MiB = 2**20
STEPS = 30


def _loop(detail_steps=3) -> Profile:
    """A small MLP trained for STEPS Adam steps, profiled."""
    torch = pytest.importorskip("torch")
    from memprofile.profiler import Profiler

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(32, 128), torch.nn.ReLU(), torch.nn.Linear(128, 32))
    opt = torch.optim.Adam(model.parameters())
    x = torch.randn(16, 32)
    with Profiler(
        name="loop",
        store=False,
        tensorflow=False,
        detail_steps=detail_steps,
        namespace={"model": model, "opt": opt, "x": x},
    ) as p:
        for _ in range(STEPS):
            opt.zero_grad()
            model(x).square().mean().backward()
            opt.step()
    return p


@pytest.fixture(scope="module")
def loop() -> Profile:
    return _loop()


@pytest.fixture(scope="module")
def late_loop() -> Profile:
    return _loop(detail_steps=(10, 12))


def _plots(profile: Profile) -> dict[str, object]:
    """Each drawn timeline's bokeh figure, by device."""
    from bokeh.models import Plot

    devices = {d.name: d for d in profile.devices}
    plots = {}
    for tl in profile.timelines:
        if tl.t:
            view = timeline_view(profile, tl, devices[tl.device])
            plots[tl.device] = next(m for m in view.references() if isinstance(m, Plot))
    return plots


def _step_glyphs(plot) -> list:
    """The plot's step-point renderers (their source has a `step` column)."""
    return [r for r in plot.renderers if "step" in getattr(r.data_source, "data", {})]


def _steps_on(plot) -> list[int]:
    return sorted(k for r in _step_glyphs(plot) for k in r.data_source.data["step"])


def _labels(plot) -> dict[int, str]:
    return {
        k: label
        for r in _step_glyphs(plot)
        for k, label in zip(r.data_source.data["step"], r.data_source.data["label"])
    }


def _line_times(plot) -> list[float]:
    """The times of the live-memory line's points."""
    from bokeh.models import Step

    line = next(r for r in plot.renderers if isinstance(r.glyph, Step))
    return list(line.data_source.data["t"])


def _boxes(plot) -> list[tuple[float, float]]:
    from bokeh.models import BoxAnnotation

    return sorted((b.left, b.right) for b in plot.center if isinstance(b, BoxAnnotation) and b.hatch_pattern)


# -- a real loop -------------------------------------------------------------


def test_every_step_is_one_point_exact_on_the_allocator_resident_on_the_process(loop):
    # GIVEN 30 Adam steps, the first 3 recorded in detail (the default)
    assert len(loop.steps) == STEPS and [s.index for s in loop.steps if s.detailed] == [1, 2, 3]
    plots = _plots(loop)
    # THEN the allocator's plot has the detailed steps at their exact peaks, the
    # process's plot every other step at its resident memory: each step once
    assert _steps_on(plots["cpu"]) == [1, 2, 3]
    assert _steps_on(plots["host"]) == list(range(4, STEPS + 1))
    on_cpu = {
        k: v for r in _step_glyphs(plots["cpu"]) for k, v in zip(r.data_source.data["step"], r.data_source.data["peak"])
    }
    assert on_cpu == {s.index: s.peak_bytes for s in loop.steps[:3]}
    # AND detailed and boundary-only steps are drawn differently
    (detailed,), (boundary,) = _step_glyphs(plots["cpu"]), _step_glyphs(plots["host"])
    assert (detailed.glyph.marker, detailed.glyph.fill_color) != (boundary.glyph.marker, boundary.glyph.fill_color)
    # AND a step's tooltip says which, how it was measured, its peak and its end
    first, fourth = loop.steps[0], loop.steps[3]
    assert _labels(plots["cpu"])[1] == (
        f"step 1: peak {fmt_bytes(first.peak_bytes)} (exact), end {fmt_bytes(first.end_bytes)}, in detail"
    )
    assert _labels(plots["host"])[4] == (
        f"step 4: peak {fmt_bytes(fourth.rss_peak_bytes)} (resident memory), end {fmt_bytes(fourth.rss_end_bytes)}"
    )
    # AND a point sits in its step: at the instant of its peak, or at the step's end
    for r in _step_glyphs(plots["cpu"]) + _step_glyphs(plots["host"]):
        for k, t in zip(r.data_source.data["step"], r.data_source.data["t"]):
            step = loop.steps[k - 1]
            assert step.t_start - 1e-6 <= t <= step.t_end + 1e-6


def test_the_allocator_line_stops_where_the_detail_ended_and_the_rest_is_hatched(loop):
    end = float(loop.capture["torch_detail_end_s"])
    plots = _plots(loop)
    # THEN the cpu line has no point after the detail (its facts are rounded to ms)
    assert max(_line_times(plots["cpu"])) <= end + 0.0005
    # AND the time after it is hatched up to the end of the cell, where the process's plot ends too
    ((left, right),) = _boxes(plots["cpu"])
    assert left == end and right == pytest.approx(plots["host"].x_range.end)
    assert plots["cpu"].x_range.end == plots["host"].x_range.end and plots["cpu"].x_range.start == 0
    # AND the process's plot marks where the detail ended
    from bokeh.models import Span

    assert end in [s.location for s in plots["host"].center if isinstance(s, Span) and s.line_dash == [6]]  # dashed


def test_a_detail_window_starting_later_draws_no_allocator_line_before_it(late_loop):
    p = late_loop
    assert [s.index for s in p.steps if s.detailed] == [10, 11, 12]
    start, end = float(p.capture["torch_detail_start_s"]), float(p.capture["torch_detail_end_s"])
    plots = _plots(p)
    # THEN the cpu line lies within the detail, not drawn from the cell's start across steps 1-9
    times = _line_times(plots["cpu"])
    assert start - 0.0005 <= min(times) and max(times) <= end + 0.0005
    assert [round(x, 3) for x in _boxes(plots["cpu"])[0]] == [0.0, round(start, 3)]
    assert _boxes(plots["cpu"])[1][0] == end
    # AND steps 1-9 and 13-30 are on the process's plot, 10-12 on the allocator's
    assert _steps_on(plots["cpu"]) == [10, 11, 12]
    assert _steps_on(plots["host"]) == [*range(1, 10), *range(13, STEPS + 1)]
    assert "30 training steps · steps 10-12 in detail" in render_text(p)


def test_the_text_the_html_and_the_report_sum_up_the_steps(loop):
    brief = steps_brief(loop)
    assert (brief.count, brief.detail_first, brief.detail_last, brief.peaks_exact) == (STEPS, 1, 3, False)
    # on CPU only the detailed steps have exact peaks: the others' are estimated from the C heap
    # (analysis/step_table.py), and the highest of them all is named
    assert brief.peaks_estimated
    top = max(s.peak_bytes if s.detailed else s.peak_estimate_bytes for s in loop.steps)
    assert brief.highest_bytes == top
    line = steps_text(brief)
    assert line.startswith("30 training steps · steps 1-3 in detail · highest step: ")
    # short steps may be read in groups (then not every step has its own end, and ends are
    # resident memory's), or each on its own (ends estimated from the heap): it depends on the
    # machine's speed and load, so both are right
    assert ", estimated) · end of step: " in line and line.endswith((" (resident)", " (estimated)")), line
    assert f"  {line}\n" in render_text(loop)
    fragment = render_fragment(loop)
    assert f"<div class='mp-steps'>{line}</div>" in fragment
    report = render_report(loop)
    assert line in report and "hatched: not recorded in detail (steps 4-30: their resident memory" in report


def test_a_cell_without_steps_has_no_steps_line_and_no_step_points():
    from tests.builders import make_rich_profile

    profile = make_rich_profile()
    assert steps_brief(profile) is None and steps_text(None) == ""
    assert "training step" not in render_text(profile) and "mp-steps" not in render_fragment(profile)
    plots = _plots(profile)
    assert not any(_step_glyphs(plot) for plot in plots.values())
    assert not any(_boxes(plot) for plot in plots.values())


# -- thousands of steps, built from model objects ----------------------------


def _many_steps(n: int, spike: int) -> Profile:
    """A CUDA-like loop of n steps: every step's exact peak from the allocator's
    counters, steps 1-3 also event by event (the allocator's timeline covers
    them), resident memory sampled 2,000 times over the cell; step `spike`
    peaks highest."""
    dt = 0.01
    steps = []
    for k in range(1, n + 1):
        peak = (300 + k % 7) * MiB + (512 * MiB if k == spike else 0)
        steps.append(
            StepStat(
                k,
                (k - 1) * dt,
                k * dt,
                k <= 3,
                peak_bytes=peak,
                end_bytes=100 * MiB if k <= 3 else None,
                device="cuda:0",
                rss_peak_bytes=2000 * MiB + k,
                rss_end_bytes=2000 * MiB + k,
            )
        )
    t_cuda = [i * 3 * dt / 300 for i in range(301)]
    live = [100 * MiB + (i % 100) * 2 * MiB for i in range(301)]
    end = n * dt
    t_host = [i * end / 1999 for i in range(2000)]
    rss = [2000 * MiB + i for i in range(2000)]
    profile = Profile(
        id="5" * 32,
        name="many steps",
        started_at="2026-11-23T15:00:00.000+00:00",
        duration_s=end,
        devices=[
            Device("cuda:0", "allocator", "c10", max(s.peak_bytes for s in steps), 100 * MiB, 100 * MiB, 80 * 2**30),
            Device("host", "process", "rss", max(rss), rss[0], rss[-1]),
        ],
        timelines=[
            Timeline(
                "cuda:0",
                t_cuda,
                live,
                {"activation": [v - 100 * MiB for v in live], "parameter": [100 * MiB] * 301},
                recorded_points=301,
            ),
            Timeline("host", t_host, rss, recorded_points=2000),
        ],
        capture={"torch_detail_end_s": f"{3 * dt:.3f}", "torch_detail_why": "steps"},
        steps=steps,
    )
    return profile


def test_thousands_of_steps_are_drawn_with_at_most_the_cap_keeping_the_highest():
    profile = _many_steps(5_000, spike=3_777)
    plots = _plots(profile)
    # THEN every step has an exact peak, so they are all on the allocator's plot, capped
    assert not _step_glyphs(plots["host"])
    shown = _steps_on(plots["cuda:0"])
    assert len(shown) <= STEP_POINTS and len(shown) >= STEP_POINTS - 5
    # AND the detailed steps are all there, and the highest step, its run named
    assert {1, 2, 3} <= set(shown) and 3_777 in shown
    top = profile.steps[3_777 - 1].peak_bytes
    label = _labels(plots["cuda:0"])[3_777]
    first, last = map(int, re.search(r"the highest of steps (\d+)-(\d+)", label).groups())
    assert label.startswith(f"step 3777: peak {fmt_bytes(top)} (exact)")
    assert first <= 3_777 <= last and last - first + 1 in (10, 11)  # 4,997 boundary-only steps in 497 runs
    # AND the summary names it, exactly
    assert steps_text(steps_brief(profile)).startswith(
        f"5,000 training steps · steps 1-3 in detail · highest step: 3777 ({fmt_bytes(top)})"
    )


def test_the_views_cost_does_not_grow_with_the_number_of_steps():
    from bokeh.embed import json_item

    sizes, points = [], []
    for n in (5_000, 50_000):
        profile = _many_steps(n, spike=n // 2)
        points.append(len(_steps_on(_plots(profile)["cuda:0"])))
        sizes.append(len(json.dumps(json_item(views(profile)))))
    assert points[0] == points[1] <= STEP_POINTS
    assert sizes[1] < 1.05 * sizes[0], sizes


def test_detailed_and_boundary_steps_share_the_cap():
    from memprofile.render.timeline_data import _step_budget, highest_per_run

    assert _step_budget(3, 4_997) == (3, 497)
    assert _step_budget(5_000, 0) == (500, 0)
    assert _step_budget(1_000, 1_000) == (250, 250)
    assert _step_budget(100, 900) == (100, 400)
    assert _step_budget(3, 27) == (3, 27)
    # (kept, first, last) per run: the highest, the first of equals
    assert highest_per_run([1, 5, 2, 2, 9, 9, 0], 3) == [(1, 0, 1), (2, 2, 3), (4, 4, 6)]
    assert highest_per_run([3, 1], 3) == [(0, 0, 0), (1, 1, 1)]


# -- the steps line: the same words as the card (labextension/__tests__/fixtures.ts STEPS_BRIEFS) ----

STEPS_BRIEFS = [
    (
        dict(
            count=200,
            detail_first=1,
            detail_last=3,
            highest_step=7,
            highest_bytes=12897484,
            peaks_exact=True,
            end_first_bytes=4299161,
            end_last_bytes=4404019,
            ends_exact=True,
        ),
        "200 training steps · steps 1-3 in detail · highest step: 7 (12.3 MiB) · end of step: 4.10 MiB → 4.20 MiB",
    ),
    (
        dict(
            count=5000,
            detail_first=10,
            detail_last=12,
            highest_step=4,
            highest_bytes=331075584,
            peaks_exact=False,
            end_first_bytes=314056704,
            end_last_bytes=331411456,
            ends_exact=False,
        ),
        "5,000 training steps · steps 10-12 in detail · highest step: 4 (315.7 MiB resident) · "
        "end of step: 299.5 MiB → 316.1 MiB (resident)",
    ),
    (
        dict(
            count=1,
            detail_first=1,
            detail_last=1,
            highest_step=1,
            highest_bytes=1000,
            peaks_exact=True,
            end_first_bytes=None,
            end_last_bytes=None,
            ends_exact=False,
        ),
        "1 training step · step 1 in detail · highest step: 1 (1000 B)",
    ),
    (
        dict(
            count=30,
            detail_first=1,
            detail_last=30,
            highest_step=2,
            highest_bytes=2048,
            peaks_exact=True,
            end_first_bytes=1024,
            end_last_bytes=1024,
            ends_exact=True,
        ),
        "30 training steps · every step in detail · highest step: 2 (2.00 KiB) · end of step: 1.00 KiB → 1.00 KiB",
    ),
    (
        dict(
            count=50,
            detail_first=None,
            detail_last=None,
            highest_step=None,
            highest_bytes=None,
            end_first_bytes=None,
            end_last_bytes=None,
        ),
        "50 training steps · no step in detail",
    ),
    (
        dict(
            count=50,
            detail_first=1,
            detail_last=3,
            highest_step=50,
            highest_bytes=230058880,
            peaks_exact=False,
            end_first_bytes=3455420,
            end_last_bytes=209060764,
            ends_exact=False,
            peaks_estimated=True,
            ends_estimated=True,
        ),
        "50 training steps · steps 1-3 in detail · highest step: 50 (219.4 MiB, estimated) · "
        "end of step: 3.30 MiB → 199.4 MiB (estimated)",
    ),
]


@pytest.mark.parametrize("brief,line", STEPS_BRIEFS, ids=[line[:24] for _, line in STEPS_BRIEFS])
def test_the_steps_line_reads_as_the_card_writes_it(brief, line):
    assert steps_text(StepsBrief(**brief)) == line


def test_resident_memory_names_the_first_step_that_reached_the_top():
    # the process keeps what a step freed: the steps after the highest look as high
    steps = [
        StepStat(k, k - 1.0, float(k), k == 1, rss_peak_bytes=v, rss_end_bytes=v)
        for k, v in enumerate([100 * MiB, 150 * MiB, 400 * MiB, 400 * MiB + 4096, 401 * MiB], 1)
    ]
    profile = Profile(id="1" * 32, name="x", started_at="", duration_s=5.0, steps=steps)
    brief = steps_brief(profile)
    assert (brief.highest_step, brief.highest_bytes, brief.peaks_exact) == (3, 400 * MiB, False)
    assert (brief.end_first_bytes, brief.end_last_bytes, brief.ends_exact) == (100 * MiB, 401 * MiB, False)
