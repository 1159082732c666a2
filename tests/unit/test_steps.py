"""Per-step findings on steps built by hand: the CUDA case (exact peaks for
every step, from the allocator's counters reset each step), which no machine
here can record, and the step table from recorded step boundaries."""

from __future__ import annotations

from memprofile.analysis.step_table import step_table
from memprofile.analysis.steps import step_notes
from memprofile.capture.base import RawCapture
from memprofile.capture.steps import StepRecord
from memprofile.model.profile import Device, Profile, StepStat, Timeline

MiB = 2**20


def _profile(steps, source=""):
    p = Profile(id="x", name="loop", started_at="2026-12-01T00:00:00Z", duration_s=1.0, source=source)
    p.steps = steps
    return p


def _cuda_steps(peaks, ends, detailed=3):
    return [
        StepStat(
            index=k + 1,
            t_start=k * 0.1,
            t_end=(k + 1) * 0.1,
            detailed=k < detailed,
            peak_bytes=p,
            end_bytes=e,
            device="cuda:0",
        )
        for k, (p, e) in enumerate(zip(peaks, ends))
    ]


def test_cuda_steps_name_the_step_above_the_detailed_ones_from_exact_peaks():
    peaks = [900 * MiB] * 10
    peaks[6] = 1400 * MiB
    notes = {n.code: n.message for n in step_notes(_profile(_cuda_steps(peaks, [500 * MiB] * 10)))}
    assert notes["step_above_detail"].startswith("step 7 peaked above every detailed step (peak 1.37 GiB")
    assert "from the allocator's own counters" in notes["detail_steps"]
    assert "step_growth" not in notes


def test_steady_growth_per_step_is_found_and_named_by_the_line_that_keeps_it():
    ends = [500 * MiB + k * 4 * MiB for k in range(12)]
    source = "for batch in loader:\n    out = model(batch)\n    history.append(out)\n    opt.step()\n"
    notes = {n.code: n.message for n in step_notes(_profile(_cuda_steps([900 * MiB] * 12, ends), source))}
    assert notes["step_growth"].startswith("+4.00 MiB per step since step 2")
    assert "line 3: history.append(out) keeps each step's out" in notes["step_growth"]


def test_a_warm_up_then_flat_is_not_growth():
    ends = [500 * MiB, 540 * MiB] + [560 * MiB] * 10
    assert not [n for n in step_notes(_profile(_cuda_steps([900 * MiB] * 12, ends))) if n.code == "step_growth"]


def test_step_table_takes_exact_peaks_where_the_events_or_counters_cover_a_step():
    p = Profile(id="x", name="loop", started_at="2026-12-01T00:00:00Z", duration_s=1.0)
    p.devices = [Device("cuda:0", "allocator", "c10", 300, 100, 150), Device("host", "process", "rss", 900, 800, 880)]
    p.timelines = [
        Timeline("cuda:0", [0.0, 0.05, 0.1, 0.15], [100, 300, 150, 160]),
        Timeline("host", [0.0, 0.06, 0.12, 0.18], [800, 900, 850, 880]),
    ]
    raw = RawCapture(
        "torch",
        steps=[
            StepRecord(t_end=0.1, detailed=True, peaks={"cuda:0": 300}),
            StepRecord(t_end=0.2, detailed=False, peaks={"cuda:0": 170}),
        ],
    )
    first, second = step_table([raw], p)
    assert (first.peak_bytes, first.end_bytes, first.rss_peak_bytes) == (300, 150, 900)
    assert (second.detailed, second.peak_bytes, second.end_bytes, second.rss_end_bytes) == (False, 170, None, 880)
