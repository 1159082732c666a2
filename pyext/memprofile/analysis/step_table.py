"""Training steps from the collectors' step boundaries and the timelines:
each step's peak and end bytes, exact where the allocator's events or
counters cover it, and the process's resident memory for every step."""

from __future__ import annotations

import bisect

from memprofile.capture.base import RawCapture
from memprofile.capture.steps import StepRecord
from memprofile.model.profile import Profile, StepStat, Timeline


def _window(tl: Timeline | None, start: float, end: float) -> tuple[int | None, int | None]:
    """(highest point in (start, end], last point at or before end) of a timeline."""
    if tl is None or not tl.t:
        return None, None
    lo = bisect.bisect_right(tl.t, start)
    hi = bisect.bisect_right(tl.t, end)
    at_end = tl.live_bytes[hi - 1] if hi > 0 else None
    inside = tl.live_bytes[lo:hi]
    return (max(inside) if inside else at_end), at_end


def step_table(captures: list[RawCapture], profile: Profile) -> list[StepStat]:
    raw = next((c.steps for c in captures if c.steps), [])
    _counted_peaks(raw, profile)  # also without steps: a detail the budget ended in a loop without steps
    if not raw:
        return []
    device = profile.peak_device
    allocator = device.name if device is not None and device.kind == "allocator" else None
    tl = profile.timeline(allocator) if allocator else None
    host = profile.process_device
    host_tl = profile.timeline(host.name) if host else None
    steps = []
    start = 0.0
    for k, r in enumerate(raw, 1):
        end = float(r.t_end)
        step = StepStat(index=k, t_start=start, t_end=end, detailed=bool(r.detailed), device=allocator)
        if step.detailed:
            step.peak_bytes, step.end_bytes = _window(tl, start, end)
        counted = r.peaks.get(allocator or "")
        if counted is not None:  # the allocator's counters (CUDA, TF), reset each step: exact for every step
            step.peak_bytes = int(counted)
        counted_end = r.ends.get(allocator or "")
        if counted_end is not None:
            step.end_bytes = int(counted_end)
        step.rss_peak_bytes, step.rss_end_bytes = _window(host_tl, start, end)
        if r.rss_peak is not None:  # the OS high-water mark, read and reset at the step's end: exact
            step.rss_peak_bytes = int(r.rss_peak)
            if r.steps > 1:  # the mark covers this step and the ones since the last reading
                step.rss_peak_first = k - r.steps + 1
        if r.rss_end is not None:
            step.rss_end_bytes = int(r.rss_end)
        if r.heap_end is not None:
            step.heap_end_bytes = int(r.heap_end)
        steps.append(step)
        start = end
    _estimate_from_heap(steps, profile)
    return steps


def _estimate_from_heap(steps: list[StepStat], profile: Profile) -> None:
    """Torch on CPU keeps no counter: after the detail, the heap's growth
    since it ended (capture/torch/collector.py) tells each step's and the cell's end,
    and each step's peak by the highest detailed step's rise over its start."""
    device = profile.peak_device
    stats = device.allocator_stats if device is not None and device.kind == "allocator" else {}
    after, at_end = stats.get("heap_after_detail_bytes"), stats.get("heap_at_end_bytes")
    detailed = [s for s in steps if s.detailed and s.peak_bytes is not None and s.end_bytes is not None]
    if device is None or after is None or not detailed:
        return
    last_live = device.end_bytes  # the detail's last live bytes (its timeline ends with the detail)
    if at_end is not None:
        device.allocator_stats["end_at_detail_bytes"] = last_live
        device.end_bytes = max(0, last_live + at_end - after)
    starts = {s.index: s.end_bytes for s in steps}

    def rise_of(s: StepStat) -> int:
        """What the step held above its start. The first step of a run starts from the
        cell's baseline and makes what every later step keeps (the gradients, the
        optimizer's state): above the higher of its start and end, what was its own."""
        start = starts.get(s.index - 1)
        if start is not None:
            return max(0, (s.peak_bytes or 0) - start)
        return max(0, (s.peak_bytes or 0) - max(device.baseline_bytes, s.end_bytes or 0))

    # Steps that follow a detailed step are like the later ones; the first step of the
    # detail only where it is alone (its rise over the baseline counted a fresh optimizer's
    # state twice, in the end it left and in the rise: ~4.2 MiB estimated for 2.54 MiB).
    followers = [s for s in detailed if starts.get(s.index - 1) is not None]
    rise = max(rise_of(s) for s in (followers or detailed))
    previous = None
    last_detailed = max(s.index for s in detailed)
    for s in steps:
        # Only after the detail: the heap before it ended does not hold the logs it holds after
        if s.index > last_detailed and not s.detailed and s.peak_bytes is None:
            if s.heap_end_bytes is not None:
                s.end_estimate_bytes = max(0, last_live + s.heap_end_bytes - after)
            base = previous if previous is not None else last_live
            s.peak_estimate_bytes = base + rise
        previous = (
            s.end_bytes
            if s.end_bytes is not None
            else s.end_estimate_bytes
            if s.end_estimate_bytes is not None
            else previous
        )


#: The allocator's own peak over the whole run, steps and the work after them,
#: in the profile's terms (TF: get_memory_info, read and reset at each step's end).
RUN_PEAK_STAT = "counted_peak_bytes"


def _counted_peaks(raw: list[StepRecord], profile: Profile) -> None:
    """The events cover the detailed steps only; the allocator's counters,
    reset each step, cover every step and the work after the last: an
    allocator's peak is the highest of them all. First, since this can make
    an allocator the peak device (one that did not grow during the detail)."""
    for device in profile.devices:
        if device.kind != "allocator":
            continue
        counted = [int(r.peaks[device.name]) for r in raw if device.name in r.peaks]
        run_peak = device.allocator_stats.get(RUN_PEAK_STAT)
        if isinstance(run_peak, int):
            counted.append(run_peak)
        device.peak_bytes = max([device.peak_bytes, *counted])
        end = device.allocator_stats.get("counted_end_bytes")
        if isinstance(end, int):  # the events ended with the detail; the counter with the cell
            device.allocator_stats["end_at_detail_bytes"] = device.end_bytes
            device.end_bytes = end
