"""Each allocator as the profile's device: its name, its capacity, the exact
baseline where TF's own counters give it, and the counters' figures (the run's
and each step's peak) in the profile's terms, with what they say about the
cell's memory outside the events."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from memprofile.capture.base import BEFORE_CELL, AllocationLog, RawCapture
from memprofile.capture.steps import StepClock
from memprofile.capture.tensorflow.counters import ONEDNN_NOTE, MemoryInfo, onednn_unseen_note
from memprofile.capture.tensorflow.xspace import MemoryEvents, XSpaceMemory
from memprofile.units import fmt_bytes

if TYPE_CHECKING:  # events.py imports this module
    from memprofile.capture.tensorflow.events import RunStart

#: Work after the last training step peaking this much above every step is said.
AFTER_STEPS_BYTES = 16 << 20
_GPU_ALLOCATOR = re.compile(r"^GPU_(\d+)_bfc$")
#: The allocator's own {"current", "peak"} at the start, the detail's start and the end.
Counts = tuple[dict[str, int], dict[str, int], dict[str, int]]


def device_of(allocator: str) -> str:
    """TF's device of an allocator: GPU_0_bfc -> GPU:0; the CPU ones -> CPU:0."""
    m = _GPU_ALLOCATOR.match(allocator)
    if m:
        return f"GPU:{m.group(1)}"
    if allocator.startswith("gpu_host"):
        return "gpu_host"
    return "CPU:0"


def describe_devices(
    logs: dict[str, AllocationLog],
    parsed: XSpaceMemory,
    memory_end: MemoryInfo,
    raw: RawCapture,
    start: RunStart,
    clock: StepClock,
) -> None:
    """Device names, capacities, the exact baseline and the allocators' own counters."""
    counters, before = _allocator_counters(parsed.events)
    taken: set[str] = set()
    for allocator, log in logs.items():
        dev = device_of(allocator)
        name = f"tf:{dev}"
        if name in taken:
            name = f"tf:{dev}/{allocator}"
        taken.add(name)
        log.device = name
        in_use, peak_counter, cap = counters.get(allocator, (0, 0, 0))
        if dev.startswith("GPU"):
            log.capacity_bytes = parsed.device_memory.get(dev) or cap or None
        _counted_baseline(allocator, dev, name, log, in_use, before, memory_end, raw, start, clock)
        if allocator == "mklcpu":
            message = onednn_unseen_note(name, start.world_start.buffers)
            raw.facts[f"{name}.unseen_blocks"] = message
            raw.notes.append((ONEDNN_NOTE, message))
        if peak_counter:
            raw.facts[f"{name}.allocator_peak_in_use"] = peak_counter
        raw.facts[f"{name}.allocator"] = allocator


def _allocator_counters(ev: MemoryEvents) -> tuple[dict[str, tuple[int, int, int]], dict[str, int]]:
    """Per allocator, from its events' own counters: (max in use, max peak,
    capacity), and its bytes in use before its first event."""
    counters: dict[str, tuple[int, int, int]] = {}  # allocator -> (max in use, max peak, capacity)
    before: dict[str, int] = {}  # allocator -> its bytes in use before its first event
    rows_of: dict[str, list[int]] = {}
    for i, a in enumerate(ev.allocator):
        rows_of.setdefault(a or "cpu", []).append(i)
    for a, rows in rows_of.items():
        first = rows[0]
        size = ev.allocation[first] or ev.requested[first]
        before[a] = ev.in_use[first] - size if ev.is_alloc[first] else ev.in_use[first] + size
        in_use, available = ev.in_use, ev.available
        caps = [in_use[i] + available[i] for i in rows if available[i]]
        counters[a] = (max(in_use[i] for i in rows), max(ev.peak_in_use[i] for i in rows), max(caps, default=0))
    return counters, before


def _counted_baseline(
    allocator: str,
    dev: str,
    name: str,
    log: AllocationLog,
    in_use: int,
    before: dict[str, int],
    memory_end: MemoryInfo,
    raw: RawCapture,
    start: RunStart,
    clock: StepClock,
) -> None:
    """The device's get_memory_info figures where they count, the exact baseline
    (from them, else from the allocator's events), or why they are unsupported."""
    prefix = f"{name}."
    first, end = start.memory_start.get(dev), memory_end.get(dev)
    detail_start = start.memory_detail_start.get(dev)
    peak = 0
    # None unless the allocator counts at all three.
    counts: Counts | None = None
    if not start.memory_start:  # read from a file: there was no one to ask
        raw.facts[prefix + "memory_info"] = "not recorded"
    elif isinstance(first, dict) and isinstance(detail_start, dict) and isinstance(end, dict):
        peak = _run_peak(dev, end, clock)
        if peak > 0 or in_use > 0:
            counts = (first, detail_start, end)
    if counts is not None:
        raw.facts[prefix + "memory_info_start"] = counts[0]["current"]
        raw.facts[prefix + "memory_info_end"] = counts[2]["current"]
        raw.facts[prefix + "memory_info_peak"] = peak
    # The allocator's own bytes in use when the detail started are exact:
    # what no known buffer accounts for is memory from before it.
    baseline = counts[1]["current"] if counts is not None else before.get(allocator, 0) if in_use else None
    if baseline is not None:
        known = sum(log.size[r] for r in range(len(log)) if log.pre_existing[r])
        if baseline > known:
            log.add(baseline - known, 0.0, -1, op=BEFORE_CELL, pre_existing=True)
        # oneDNN's allocator leaves its small blocks out of its counters.
        log.baseline_exact = allocator != "mklcpu"
        if counts is not None:
            _counted_figures(name, max(known - baseline, 0), counts[2]["peak"], peak, raw, clock)
            if clock.detail_end is not None:
                # The events end with the detail: the cell's end is the counter's
                raw.facts[f"{name}.counted_end_bytes"] = counts[2]["current"] + max(known - baseline, 0)
    if counts is None and start.memory_start:
        why = (
            first
            if isinstance(first, str)
            else end
            if isinstance(end, str)
            else ("the allocator counts 0 bytes in use")
        )
        # Said where the device's figures are listed, not as a warning
        # on every cell: on TF's default CPU allocator it is the rule.
        raw.facts[prefix + "memory_info"] = (
            f"unsupported for allocator {allocator!r} ({why}): the figures come from the profiler's "
            f"events alone, and memory from before the cell is what the namespace's tensors and "
            f"variables account for"
        )


def _counted_figures(
    name: str, unseen: int, after_steps: int, run_peak: int, raw: RawCapture, clock: StepClock
) -> None:
    """The counters' figures in the profile's terms: plus the blocks from
    before the detail that the allocator does not count (oneDNN's small
    ones) and the profile does. The device's peak is at least the run's
    (analysis/step_table.py); work after the last step above every step is said."""
    peaks = []
    for s in clock.records:
        if name in s.peaks:
            s.peaks[name] += unseen
            s.ends[name] += unseen
            peaks.append(s.peaks[name])
    raw.facts[f"{name}.counted_peak_bytes"] = run_peak + unseen
    after_steps += unseen
    if peaks and after_steps > max(peaks) + max(AFTER_STEPS_BYTES, max(peaks) // 20):
        raw.notes.append(
            (
                "tf_after_steps",
                f"{name}: after the last training step (step {clock.steps}) the cell peaked at "
                f"{fmt_bytes(after_steps)} (TF's counter), above every step ({fmt_bytes(max(peaks))}); "
                f"that work is outside the detail: --detail-steps all records it",
            )
        )


def _run_peak(dev: str, end: dict[str, int], clock: StepClock) -> int:
    """The device's peak over the run: its counter was reset at each step's end."""
    name = f"tf:{dev}"
    return max([end["peak"], *(s.peaks[name] for s in clock.records if name in s.peaks)])
